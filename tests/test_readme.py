"""The README cannot rot: every command in its code blocks is run here, and the docs list it all.

Shell blocks are run line by line against a gravd of our own on 127.0.0.1 port 0: the README's
gravd commands get their addresses from ``GRAVD_LISTEN``/``GRAVD_MONITOR`` (flags would win, and the
README gives none), gravctl gets the node from ``GRAVCTL_URL``/``GRAVCTL_MONITOR``, and the one LAN
address shown (``--peer 192.168.1.10:8080``) is replaced by the first gravd's endpoint. Commands a
person leaves running in a terminal (``sub``, ``reply``) run in the background until the end, then
get Ctrl-C. Python blocks run as scripts with the URL replaced; a text block after a Python
publisher is what the Python subscriber left running before it printed.

Two commands are checked rather than run: the test command is what ``.ci/run`` runs (so CI runs it,
byte for byte), and the install step of the install-and-run command is that same install without
the test extras; its ``.venv/bin/gravd`` part is run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from gravpy.cli.parser import EXIT_INTERRUPTED
from gravpy.daemon.config import SETTINGS
from gravpy.daemon.monitor import METRIC_NAMES
from gravpy.filter import Pattern
from gravpy.leaf import DEFAULT_URL
from gravpy.testing.gravd import ROOT, Gravd, Process, running_gravd

README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
API = ROOT / "docs" / "api.md"
INSTALL_AND_RUN = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/gravd"
LAN_PEER = "192.168.1.10:8080"
_MASKS = ("SigBlk", "SigIgn", "SigCgt")
STEP_TIMEOUT = 40.0  # seconds for one code block (under pytest's 120 s for the whole test)
LOCAL_ENV = {"GRAVD_LISTEN": "127.0.0.1:0", "GRAVD_MONITOR": "127.0.0.1:0"}


def _blocks(lang: str, text: str | None = None) -> list[str]:
    source = README.read_text() if text is None else text
    return [
        m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", source, re.S) if m.group(1) == lang
    ]


def _shell_commands() -> list[str]:
    return [
        line.strip()
        for block in _blocks("sh")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    # the other steps are scripts of their own (the system packages before, the compiled pass after)
    setup = ("#", "set ", "cd ", "bash .ci/")
    commands = [ln for ln in lines if ln and not ln.startswith(setup)]
    assert len(commands) == 1, commands
    return commands[0]


def _executable(argv0: str) -> str:
    """``.venv/bin/NAME`` as in the README, or NAME beside this interpreter if tests run elsewhere."""
    path = ROOT / argv0
    return str(path if path.exists() else Path(sys.executable).parent / Path(argv0).name)


def test_test_command_is_exactly_what_ci_runs() -> None:
    """The README's test command is byte-identical to the one command .ci/run runs."""
    assert _ci_command() in _shell_commands()


def test_install_step_is_cis_without_the_test_extras() -> None:
    """The README's install-and-run command installs as CI does (minus [test]), then runs gravd."""
    assert _shell_commands()[0] == INSTALL_AND_RUN
    venv, install, run = INSTALL_AND_RUN.split(" && ")
    ci_venv, ci_install, _ = _ci_command().split(" && ")
    assert venv == ci_venv
    assert ci_install == install.replace("-e .", "-e '.[test]'")
    assert run == ".venv/bin/gravd"


def test_docs_list_every_setting_and_metric() -> None:
    """README and docs/operations.md list every setting's flag and variable; the metrics too."""
    readme, operations = README.read_text(), OPERATIONS.read_text()
    for setting in SETTINGS:
        for doc in (readme, operations):
            assert f"`{setting.name}`" in doc, setting.name
            assert setting.flag in doc, setting.flag
            assert setting.env in doc, setting.env
    for name in METRIC_NAMES:
        assert f"`{name}`" in operations, name
    api = API.read_text()
    for name in ("Grav", "Pod", "Message", "MsgReceipt", "MsgBuffer", "Pattern", "gravpy.connect"):
        assert f"`{name}" in api, name


def _shows(printed: str, text: str) -> bool:
    """True if ``text``'s lines appear together, in order, among the ``printed`` lines."""
    lines, wanted = printed.splitlines(), text.strip().splitlines()
    return any(lines[i : i + len(wanted)] == wanted for i in range(len(lines)))


class _Session:
    """The terminals of the README: gravd nodes, commands left running, what was printed last."""

    def __init__(self, stack: AsyncExitStack, first: Gravd) -> None:
        self.stack = stack
        self.nodes = [first]
        self.running: list[tuple[str, Process]] = []  # (what runs, its process)
        self.subscribers: list[tuple[str, Process]] = []  # (pattern, gravctl sub)
        self.last: tuple[str, str] | None = None  # (command, what it printed) for a text block
        self.current: Process | None = None  # a foreground command, while it runs

    async def state(self) -> str:
        """What every process of the session printed last, and where each command or program
        still running is stuck (its Python stacks, printed on SIGABRT): why a step hung."""
        nodes = [("gravd", node.process) for node in self.nodes]
        current = [("foreground", self.current)] if self.current is not None else []
        commands = [*self.running, *current]
        masks = [f"pytest: {_signal_masks(os.getpid())}"] + [
            f"{what} {p.proc.pid}: {_signal_masks(p.proc.pid)}"
            for what, p in commands
            if p.proc.returncode is None
        ]
        for _, process in commands:
            process.signal(signal.SIGABRT)
        for _, process in commands:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await process.wait()
        return "\n".join(
            [
                *masks,
                *(
                    f"{what} {p.name!r} (exit {p.proc.returncode}): stdout {p.stdout[-5:]!r}, "
                    f"stderr {p.stderr[-5 if what == 'gravd' else -60 :]!r}"
                    for what, p in [*nodes, *commands]
                ),
            ]
        )

    @property
    def first(self) -> Gravd:
        return self.nodes[0]

    def env(self) -> dict[str, str]:
        return {
            "GRAVCTL_URL": self.first.endpoint,
            "GRAVCTL_MONITOR": self.first.monitor,
            "PYTHONFAULTHANDLER": "1",  # (SIGABRT prints every thread's stack: ``state``)
        }

    async def block(self, lang: str, body: str) -> None:
        if lang == "sh":
            for line in body.splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    await self.command(line.strip())
        elif lang == "python":
            await self.python(body)
        elif lang == "text":
            await self.shown(body)
        else:
            raise AssertionError(f"a README code block this test cannot check: {lang!r}")

    async def command(self, line: str) -> None:
        if line in (_ci_command(), INSTALL_AND_RUN):
            return  # checked by the tests above; the install-and-run gravd is self.first
        argv = shlex.split(line)
        tool = Path(argv[0]).name
        argv[0] = _executable(argv[0])
        if tool == "gravd":
            await self._gravd(argv)
        elif tool == "gravctl" and argv[1] in ("sub", "reply"):
            await self._background(argv, argv[1], [argv[2]])
        elif tool == "gravctl" and argv[1] in ("pub", "req", "peers"):
            await self._foreground(argv, argv[1])
        else:
            raise AssertionError(f"the README shows a command this test cannot run: {line}")

    async def python(self, code: str) -> None:
        argv = [sys.executable, "-c", code.replace(DEFAULT_URL, self.first.endpoint)]
        if "KeyboardInterrupt" in code:  # a program left running until Ctrl-C
            patterns = re.findall(r'on_type\("([^"]+)"', code)
            assert patterns, "a long-running example subscribes to something"
            await self._background(argv, "python", patterns)
        else:
            await self._foreground(argv, "python")

    async def shown(self, text: str) -> None:
        """A text block: what the command just before it printed (a pub: what the sub printed)."""
        assert self.last is not None, f"a text block follows no command: {text!r}"
        command, printed = self.last
        if command == "pub":  # _foreground waited for the data line: the header came before it
            outputs = ["\n".join(p.stdout) for _, p in self.subscribers]
            assert any(text.strip() in out for out in outputs), (text, outputs)
        elif command == "python" and not _shows(printed, text):  # a publisher: its listener prints
            listener = next(p for what, p in reversed(self.running) if what == "python")
            for line in text.strip().splitlines():
                await listener.wait_line(lambda out, line=line: out == line, stream="stdout")
        else:  # structlog, unconfigured in the examples, may print log lines around the output
            assert _shows(printed, text), (command, printed, text)
        self.last = None

    async def _gravd(self, argv: list[str]) -> None:
        argv = [self.first.endpoint if arg == LAN_PEER else arg for arg in argv]
        assert self.first.endpoint in argv, "a second gravd joins the first with --peer"
        node = await self.stack.enter_async_context(
            running_gravd(*argv[1:], env=LOCAL_ENV, local=False, command=argv[:1])
        )
        self.nodes.append(node)
        await node.wait_peers(1)
        await self.first.wait_peers(len(self.nodes) - 1)

    async def _background(self, argv: list[str], what: str, patterns: list[str]) -> None:
        process = await Process.start(argv, env=self.env())
        self.stack.push_async_callback(process.close)
        if what in ("sub", "reply"):
            ready = "Subscribing on" if what == "sub" else "Listening on"
            await process.wait_line(lambda line: line.startswith(ready))
        await self.first.wait_http(  # the node knows everything it subscribed to (or grouped)
            lambda doc: all(any(p in _wanted(leaf) for leaf in doc["leaves"]) for p in patterns)
        )
        self.running.append((what, process))
        if what == "sub":
            self.subscribers.append((patterns[0], process))

    async def _foreground(self, argv: list[str], command: str) -> None:
        process = self.current = await Process.start(argv, env=self.env())
        try:
            result = await process.wait()
        finally:
            self.current = None
            await process.close()
        assert result.code == 0, (argv, result)
        if command == "pub":
            subs = [sub for pat, sub in self.subscribers if Pattern(pat).matches(argv[2])]
            assert subs, "the README publishes to a subscriber it started"
            for sub in subs:
                await sub.wait_line(lambda out: out == argv[3], stream="stdout")
        if command == "peers":
            for node in self.nodes:
                assert node.uuid in result.stdout
        self.last = (command, result.stdout)

    async def finish(self) -> None:
        """Ctrl-C every command and program left running: gravctl exits 130 as it documents, the
        README's programs (which catch KeyboardInterrupt) 0; then stop the nodes."""
        assert self.last is None or self.last[0] != "python", "python output not shown"
        for what, process in self.running:
            process.signal(signal.SIGINT)
            result = await process.wait()
            assert result.code == (0 if what == "python" else EXIT_INTERRUPTED), (what, result)
        for node in reversed(self.nodes):
            assert (await node.stop()).code == 0


@asynccontextmanager
async def _readme_gravd() -> AsyncIterator[Gravd]:
    """The install-and-run command's gravd, on 127.0.0.1 port 0 through the environment."""
    run_part = INSTALL_AND_RUN.split(" && ")[-1]
    async with running_gravd(env=LOCAL_ENV, local=False, command=[_executable(run_part)]) as node:
        yield node


def _all_blocks() -> list[tuple[str, str]]:
    return [
        (m.group(1), m.group(2))
        for m in re.finditer(r"```(\w*)\n(.*?)```", README.read_text(), re.S)
    ]


def _signal_masks(pid: int) -> str:
    """The signals process ``pid`` blocks, ignores and catches (``/proc``; SIGINT is 0x2)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return " ".join(line.replace("\t", "") for line in status if line.startswith(_MASKS))


def _wanted(link: dict[str, Any]) -> list[str]:
    """The patterns a link's pods want: ungrouped, and those of its groups (gravctl reply)."""
    return [*link["interests"], *(entry[1] for entry in link.get("groups", ()))]


@contextlib.contextmanager
def _ctrl_c_reaches_programs() -> Iterator[None]:
    """While inside, the programs started get SIGINT's default action, as in a terminal.

    A shell that runs the tests in the background (``cmd &`` with no job control) ignores
    SIGINT in them, children inherit that, and a Python program started with SIGINT ignored
    keeps ignoring it (``asyncio.run`` then installs no handler): the README's Ctrl-C would do
    nothing and its programs would run until killed."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


async def test_readme_runs_top_to_bottom() -> None:
    """Every command and program in the README runs, in order, and prints what the README shows."""
    with _ctrl_c_reaches_programs():
        await _run_readme()


async def _run_readme() -> None:
    async with AsyncExitStack() as stack:
        session = _Session(stack, await stack.enter_async_context(_readme_gravd()))
        for lang, body in [*_all_blocks(), ("finish", "")]:
            try:  # (a whole run takes seconds; a step that hangs says where, and what ran)
                async with asyncio.timeout(STEP_TIMEOUT):
                    await (session.finish() if lang == "finish" else session.block(lang, body))
            except TimeoutError:
                raise AssertionError(
                    f"the README's {lang} step did not finish in {STEP_TIMEOUT} s:\n{body}\n"
                    f"{await session.state()}"
                ) from None
