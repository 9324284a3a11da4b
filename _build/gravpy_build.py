"""The build backend: ``setuptools.build_meta``, plus mypy when a compiled build is asked for.

Theory of operation: ``GRAVPY_COMPILE=1 pip install .`` compiles gravpy's hot modules with mypyc
(see ``setup.py``); without it the package builds as pure Python and needs no compiler. Static
``[build-system] requires`` cannot depend on an environment variable, so this in-tree backend
(``backend-path``) adds the compiled build's requirements at ``get_requires_for_build_*`` time:
mypy (which brings mypyc) and the project's runtime dependencies (and the ``otel`` extra), so that
mypyc type-checks the hot modules against their libraries' real types in pip's isolated build
environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from setuptools import build_meta as _meta
from setuptools.build_meta import *  # noqa: F403 - every other hook is setuptools' own

COMPILE_VARIABLE = "GRAVPY_COMPILE"
MYPY_REQUIREMENT = "mypy>=1.10"
Settings = dict[str, Any] | None


def compile_requested() -> bool:
    """True when the environment asks for the mypyc-compiled build."""
    return os.environ.get(COMPILE_VARIABLE, "") == "1"


def _requires(hook: Callable[[Settings], list[str]], config_settings: Settings) -> list[str]:
    """setuptools' requirements (``hook``), plus the compiled build's when it is asked for."""
    if not compile_requested():
        return hook(config_settings)
    # setuptools runs setup.py to list them, and setup.py needs mypy for the extensions: the very
    # requirement this adds. So ask setuptools as for a pure build, then add ours.
    os.environ[COMPILE_VARIABLE] = "0"
    try:
        requires = hook(config_settings)
    finally:
        os.environ[COMPILE_VARIABLE] = "1"
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    # mypyc type-checks what the hot modules import, tracing's optional OpenTelemetry API included
    typed = [*project["dependencies"], *project["optional-dependencies"]["otel"]]
    return [*requires, MYPY_REQUIREMENT, *typed]


def get_requires_for_build_wheel(config_settings: Settings = None) -> list[str]:
    return _requires(_meta.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings: Settings = None) -> list[str]:
    return _requires(_meta.get_requires_for_build_editable, config_settings)
