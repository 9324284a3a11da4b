"""Which build of the hot modules the tests import: mypyc-compiled or pure Python.

CI runs the core tests twice: on the pure-Python install, then with the modules built in place by
``GRAVPY_COMPILE=1 python setup.py build_ext --inplace`` and ``GRAVPY_EXPECT_COMPILED=1``, where
this test proves the compiled modules are the ones imported.
"""

import ast
import importlib
import importlib.machinery
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gravpy.errors import UsageError


def _hot_modules() -> list[str]:
    """The dotted names of the modules ``setup.py`` compiles (read from its ``COMPILED_MODULES``)."""
    tree = ast.parse(Path(__file__).parent.parent.joinpath("setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED_MODULES":
            paths: list[str] = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED_MODULES")


@pytest.mark.skipif(
    os.environ.get("GRAVPY_EXPECT_COMPILED") != "1", reason="GRAVPY_EXPECT_COMPILED=1 not set"
)
@pytest.mark.parametrize("name", _hot_modules())
def test_hot_module_is_compiled(name: str) -> None:
    """With GRAVPY_EXPECT_COMPILED=1 each hot module is imported from its mypyc extension."""
    module = importlib.import_module(name)
    assert module.__spec__ is not None
    assert isinstance(module.__spec__.loader, importlib.machinery.ExtensionFileLoader)
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), module.__file__


def test_wrong_type_is_a_usage_error() -> None:
    """A wrong argument type at a validating entry point is a UsageError in either build."""
    from gravpy.buffer import MsgBuffer
    from gravpy.bus import Bus
    from gravpy.filter import Pattern
    from gravpy.recent import RecentMap

    wrong: list[Callable[[], object]] = [
        lambda: MsgBuffer("8"),
        lambda: Pattern(5),
        lambda: RecentMap(2.5),
        lambda: Bus(inbox_limit="10"),
        lambda: Bus(buffer_size=None),
    ]
    for make in wrong:
        with pytest.raises(UsageError):
            make()
