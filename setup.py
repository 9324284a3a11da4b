"""Build glue: with ``GRAVPY_COMPILE=1`` the hot modules are compiled with mypyc; otherwise none.

Everything else about the package lives in ``pyproject.toml``. The compiled modules are ordinary
typed Python: the ``.py`` files ship too, and an extension module, when built, is imported first.
"""

import os

from setuptools import setup

# The hot path: the in-process bus and pods, the wire codec and link protocol, mesh routing and
# the path of a message through a node (traffic).
COMPILED_MODULES = [
    "gravpy/_mailbox.py",
    "gravpy/buffer.py",
    "gravpy/bus.py",
    "gravpy/congestion.py",
    "gravpy/consumer.py",
    "gravpy/counters.py",
    "gravpy/pod.py",
    "gravpy/receipt.py",
    "gravpy/replies.py",
    "gravpy/filter.py",
    "gravpy/recent.py",
    "gravpy/proto/codec.py",
    "gravpy/proto/link_core.py",
    "gravpy/proto/peer.py",
    "gravpy/mesh/routing.py",
    "gravpy/mesh/peer_link.py",
    "gravpy/mesh/link_reader.py",
    "gravpy/mesh/link_writer.py",
    "gravpy/mesh/traffic.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("GRAVPY_COMPILE", "") != "1":
        return []
    from mypyc.build import mypycify  # only the compiled build needs mypy installed

    # group_name: mypyc's shared runtime library goes inside the package (gravpy/_core__mypyc),
    # where every way of importing gravpy finds it, not at the top level of site-packages
    modules = mypycify(COMPILED_MODULES, opt_level="3", multi_file=False, group_name="gravpy._core")
    return list(modules)


setup(ext_modules=ext_modules())
