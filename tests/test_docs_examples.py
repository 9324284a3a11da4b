"""What the docs show holds together, without a running node: it parses, it links, it is current.

Cheap checks over README.md and every docs/*.md page, in a fraction of a second. The examples
that need a gravd run in ``tests/test_readme.py`` and ``tests/test_docs_truth.py``; here every
Python block at least compiles (top-level ``await`` and ``async with`` allowed, as in ``python -m
asyncio``, since some pages show fragments), every TOML and JSON block parses, every link from
one page to another finds its file and its heading, the gravd and gravctl flags of the pages
``test_docs_truth`` does not read exist, and the wire-protocol reference names the version the
code speaks.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from gravpy.cli.parser import build_parser as gravctl_parser
from gravpy.daemon.main import build_parser as gravd_parser
from gravpy.proto import PROTOCOL_VERSION
from gravpy.testing.gravd import ROOT
from tests.test_docs_truth import DOCS as PAGES_WITH_CHECKED_COMMANDS

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROTOCOL = ROOT / "docs" / "protocol.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in _FENCE.findall(page.read_text()) if kind == lang]


def _prose(page: Path) -> str:
    """The page without its fenced code blocks (a ``# comment`` there is not a heading)."""
    return _FENCE.sub("", page.read_text())


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?)[ #]*$", _prose(page), re.M):
        slug = _slug(heading)
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


def _links(page: Path) -> Iterator[tuple[str, Path, str]]:
    """(as written, the file it names, its anchor or "") for each link to a page of the repo:
    Markdown links, and ``docs/NAME.md#anchor`` named in the text."""
    prose = _prose(page)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if not re.match(r"[a-z]+:", target):  # (not http:, https:, mailto:)
            path, _, anchor = target.partition("#")
            yield target, (page.parent / path) if path else page, anchor
    for target in re.findall(r"(?<![\w/(.-])(docs/[\w-]+\.md(?:#[\w-]+)?)", prose):
        path, _, anchor = target.partition("#")
        yield target, ROOT / path, anchor


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_python_block_compiles() -> None:
    """Each Python code block of the README and the docs compiles (fragments may await at top level)."""
    failures = []
    for page in PAGES:
        for index, code in enumerate(_blocks(page, "python")):
            name = f"{page.relative_to(ROOT)} python block {index + 1}"
            try:
                compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            except SyntaxError as exc:
                failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_scaling_pages_example_is_a_program_to_paste_and_run() -> None:
    """docs/scaling.md's Python example is a whole program: it compiles with no top-level
    ``await`` or ``async with``, runs ``main()`` with ``asyncio.run``, and every name it imports
    exists."""
    page = ROOT / "docs" / "scaling.md"
    blocks = _blocks(page, "python")
    assert blocks, "docs/scaling.md shows the bridge embedded in Python"
    for index, code in enumerate(blocks):
        name = f"docs/scaling.md python block {index + 1}"
        tree = compile(code, name, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, name, "exec", dont_inherit=True)  # (a fragment fails here)
        assert "asyncio.run(main())" in code
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_every_toml_and_json_block_parses() -> None:
    """Each TOML and JSON code block of the README and the docs is valid TOML or JSON."""
    failures = []
    for page in PAGES:
        for lang, load in (("toml", tomllib.loads), ("json", json.loads)):
            for index, text in enumerate(_blocks(page, lang)):
                try:
                    load(text)
                except ValueError as exc:  # (TOMLDecodeError and JSONDecodeError are ValueErrors)
                    failures.append(f"{page.relative_to(ROOT)} {lang} block {index + 1}: {exc}")
    assert not failures, "\n".join(failures)


def test_every_link_between_pages_finds_its_file_and_heading() -> None:
    """Each link from one page of the README and the docs to another (or to a file of the repo)
    names a file that exists and, with ``#anchor``, a heading of that page."""
    failures, seen = [], 0
    for page in PAGES:
        for target, path, anchor in _links(page):
            seen += 1
            where = f"{page.relative_to(ROOT)}: {target}"
            if not path.exists():
                failures.append(f"{where}: no such file")
            elif anchor and anchor not in _anchors(path):
                failures.append(f"{where}: no heading #{anchor} in {path.name}")
    assert seen > 20, "the pages link to each other"
    assert not failures, "\n".join(failures)


def test_every_flag_on_the_other_pages_exists() -> None:
    """Each gravd or gravctl flag shown on a page whose commands test_docs_truth does not read
    (security, scaling, guarantees) is a flag of that program or of that gravctl command."""
    gravd, gravctl = _options(gravd_parser()), gravctl_parser()
    commands = next(
        action.choices
        for action in gravctl._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    failures, seen = [], 0
    for page in sorted(set(PAGES) - set(PAGES_WITH_CHECKED_COMMANDS)):
        for line in re.findall(r"^\s*((?:\.venv/bin/)?grav(?:d|ctl) .*)$", page.read_text(), re.M):
            words = re.sub(r"[\[\]|]", " ", line.split(" #")[0]).split()
            if words[0].endswith("gravd"):
                allowed = gravd
            else:
                command = next((w for w in words if w in commands), None)
                allowed = _options(gravctl) | (_options(commands[command]) if command else set())
            for word in words[1:]:
                if word.startswith("--") or re.fullmatch(r"-[a-zA-Z]", word):
                    seen += 1
                    if word.split("=")[0] not in allowed:
                        failures.append(f"{page.relative_to(ROOT)}: {word} in {line.strip()}")
    assert seen > 5, "the other pages show gravd and gravctl commands"
    assert not failures, "\n".join(failures)


def test_the_protocol_reference_names_the_version_the_code_speaks() -> None:
    """docs/protocol.md gives gravpy.proto.PROTOCOL_VERSION as its version everywhere it says
    which version it describes (title, HELLO's version field, the version check, versioning)."""
    text = PROTOCOL.read_text()
    stated = {
        "title": re.search(r"^# .*, version (\d+)$", text, re.M),
        "HELLO version field": re.search(r"this document is version \*\*(\d+)\*\*", text),
        "HELLO check": re.search(r"`version` equals its own version \((\d+)\)", text),
        "versioning": re.search(r"Version (\d+) \(this document\)", text),
    }
    for where, match in stated.items():
        assert match, f"docs/protocol.md no longer says its version in the {where}"
        assert int(match.group(1)) == PROTOCOL_VERSION, (where, match.group(0), PROTOCOL_VERSION)
