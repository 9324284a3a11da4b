"""The user-facing docs tell the truth: what they name exists and does what they say.

Each test reads the docs (README.md and docs/*.md, except the pages other tests own) for one kind
of name (gravd's flags, variables, settings and their defaults, metric names, monitoring
endpoints, gravctl commands and options) and checks every one it finds against the code: the
parsers, the settings, the metric list, a real gravd. Nothing here lists what the docs should say;
a name added to a page is checked the day it is written. The Python examples of the API pages run
as written, against a real gravd where they attach to one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gravpy.bridge.config import NatsBridgeStatistics
from gravpy.cli.parser import build_parser as gravctl_parser
from gravpy.daemon.bridge_metrics import bridge_metrics
from gravpy.daemon.config import SETTINGS, ConfigError, load_config
from gravpy.daemon.main import build_parser as gravd_parser
from gravpy.daemon.monitor import METRIC_NAMES
from gravpy.leaf import DEFAULT_URL
from gravpy.testing.gravd import GRAVD, ROOT, Process, Result, run, running_gravd
from tests.daemon.test_config import flag_values, sample_values, toml_text

DOCS = [
    ROOT / "README.md",
    *(
        ROOT / "docs" / f"{page}.md"
        for page in (
            "api",
            "architecture",
            "coming-from-nats",
            "dashboard",
            "events",
            "messenger",
            "operations",
            "protocol",
            "troubleshooting",
        )
    ),
]
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
CONFIG_ENV = "GRAVD_CONFIG"  # the TOML file's variable, the one GRAVD_* that is no setting
EXAMPLE_TIMEOUT = 60.0  # seconds for one example program (a hang guard, not a measure)


def _text() -> str:
    return "\n".join(page.read_text() for page in DOCS)


def _code_spans(text: str) -> list[str]:
    """Every `inline code` span of ``text`` (code blocks excluded)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", prose)


# -- gravd's settings ------------------------------------------------------------------------------


def _settings_rows(page: Path) -> dict[str, list[str]]:
    """The rows of ``page``'s settings table (header ``| Setting (TOML key) | Flag | ...``), by
    setting name: the cells after the name."""
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in page.read_text().splitlines():
        if line.startswith("| Setting (TOML key) |"):
            in_table = True
        elif in_table and not line.startswith("|"):
            break
        elif in_table and not line.startswith("|---"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            name = cells[0].strip("`")
            assert name not in rows, f"{page.name}: two rows for {name}"
            rows[name] = cells[1:]
    return rows


@pytest.mark.parametrize("page", [README, OPERATIONS], ids=lambda p: p.name)
def test_settings_tables_match_the_settings(
    page: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each settings table has one row per setting, and each row's flag, variable, default and
    repeatability are the setting's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    rows = _settings_rows(page)
    assert sorted(rows) == sorted(s.name for s in SETTINGS)
    defaults = load_config({}, {}).public()
    for setting in SETTINGS:
        flag, env, default, *_ = rows[setting.name]
        flag_code, env_code = re.findall(r"`([^`]+)`", flag), re.findall(r"`([^`]+)`", env)
        assert flag_code[0].split()[0] == setting.flag, setting.name
        assert env_code[0] == setting.env, setting.name
        said_repeatable = "repeat" in flag
        assert said_repeatable == setting.repeatable, f"{setting.name}: {flag}"
        if setting.repeatable and page == OPERATIONS:
            assert "comma-separated" in env, f"{setting.name}: {env}"
        literals = re.findall(r"`([^`]+)`", default)
        if not literals:  # "none", "every interface", "system CAs": the setting is unset
            assert defaults[setting.name] in ("off", "system", []), setting.name
            continue
        literal = literals[0].replace("$XDG_STATE_HOME", str(tmp_path / "state"))
        given = load_config({setting.name: [literal] if setting.repeatable else literal}, {})
        assert given.public()[setting.name] == defaults[setting.name], (setting.name, literal)


def test_the_gravd_synopsis_lists_every_flag_gravd_takes() -> None:
    """The usage block of docs/operations.md names exactly gravd's flags."""
    text = OPERATIONS.read_text()
    synopsis = next(b for b in re.findall(r"```\n(.*?)```", text, re.S) if b.startswith("gravd ["))
    shown = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", synopsis))
    flags = {
        option
        for action in gravd_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert shown == flags


def test_every_gravd_flag_in_the_docs_exists() -> None:
    """Each ``gravd ... --flag`` the docs show is one of gravd's flags."""
    flags = {o for action in gravd_parser()._actions for o in action.option_strings}
    for span in [*_code_spans(_text()), *re.findall(r"^\s*(gravd .*)$", _text(), re.M)]:
        if re.match(r"(\.venv/bin/)?gravd\b", span):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", span):
                assert flag in flags, span


def test_every_gravd_variable_in_the_docs_is_read_or_refused() -> None:
    """Each GRAVD_* variable the docs name is GRAVD_CONFIG or a setting's variable, or one the
    docs show refused, which gravd refuses."""
    known = {CONFIG_ENV, *(s.env for s in SETTINGS)}
    named = set(re.findall(r"\bGRAVD_[A-Z_]*[A-Z]\b", _text()))
    assert named & known, "the docs name gravd's variables"
    for name in named - known:
        assert f"gravd: invalid {name} (from environment)" in _text(), f"{name} is not gravd's"
        with pytest.raises(ConfigError, match=f"invalid {name} "):
            load_config({}, {name: "x"})


def test_every_gravctl_variable_in_the_docs_sets_its_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each GRAVCTL_* variable the docs name sets the gravctl option of the same name."""
    named = set(re.findall(r"\bGRAVCTL_[A-Z_]*[A-Z]\b", _text()))
    assert named, "the docs name gravctl's variables"
    for name in named:
        monkeypatch.setenv(name, f"/from/{name}")
    options = vars(gravctl_parser(["peers"]).parse_args(["peers"]))
    for name in named:
        assert options[name.removeprefix("GRAVCTL_").lower()] == f"/from/{name}", name


def test_unknown_variables_and_keys_are_documented_as_refused() -> None:
    """docs/operations.md says what gravd does with a GRAVD_* variable or TOML key it does not know."""
    text = " ".join(OPERATIONS.read_text().split()).lower()
    assert "a key gravd does not know is an error" in text
    assert "a `gravd_*` variable gravd does not read is an error" in text


# -- metrics and endpoints -------------------------------------------------------------------------


def _bridge_metric_names() -> set[str]:
    stats = NatsBridgeStatistics("connected", ("nats://h:4222",), True, 0, 0, 0, 0, {}, (), (), (), "")  # fmt: skip
    return {
        m.name + ("_total" if m.type == "counter" else "")
        for m in bridge_metrics([stats])
        if m.name.startswith("gravd_")
    }


def test_every_metric_in_the_docs_exists() -> None:
    """Each gravd_* metric the docs name is one gravd exposes."""
    known = set(METRIC_NAMES) | _bridge_metric_names()
    named = set(re.findall(r"\b(gravd_[a-z_]*[a-z])\b(?!\*|_\*)", _text()))
    assert named, "the docs name gravd's metrics"
    assert named <= known, sorted(named - known)


def _documented_gets() -> set[str]:
    """The paths the docs say the monitor answers with GET, without placeholders."""
    text = _text()
    paths = set(re.findall(r"GET (/[^\s`?]*)", text))
    for span in _code_spans(text):
        if re.fullmatch(r"/(v1/[\w/]+|healthz|readyz|metrics)(\?.*)?", span):
            paths.add(span.split("?")[0])
    return {p for p in paths if "{" not in p and "*" not in p}


_QUERIES = {  # a valid value for each parameter the docs give an endpoint
    "user": str(uuid.uuid4()),
    "severity": "error",
    "category": "peer",
    "action": "linked",
    "status": "read",
    "since": "0",
    "until": "4102444800",
    "search": "a",
    "order": "oldest",
    "page": "1",
    "page_size": "5",
    "leaves_offset": "0",
    "leaves_limit": "5",
    "last": "5",
    "pattern": "demo.>",
}
_STREAMS = ("/v1/tail", "/v1/events/stream")  # they answer with headers, then keep streaming


async def test_every_documented_endpoint_answers_with_its_documented_parameters() -> None:
    """Each GET endpoint the docs name answers 200 on a running gravd, also with every query
    parameter the docs give it."""
    gets = _documented_gets()
    assert {"/healthz", "/readyz", "/metrics", "/v1/node", "/v1/events"} <= gets
    queries: dict[str, set[str]] = {}
    for path, query in re.findall(r"(/v1/[\w/]+)\?([\w=&.,-]+)", _text()):
        queries.setdefault(path, set()).update(k for k in re.findall(r"(\w+)=", query))
    async with running_gravd() as node:
        for path in sorted(gets):
            params = {k: _QUERIES[k] for k in queries.get(path, ())}
            async with node.session.get(node.monitor + path, params=params) as response:
                body = "" if path in _STREAMS else await response.text()
                assert response.status == 200, (path, params, body)
        assert (await node.stop()).code == 0


def test_every_log_event_in_the_operations_table_is_logged() -> None:
    """Each event of the Logs table in docs/operations.md is an event name gravd's code logs."""
    text = OPERATIONS.read_text()
    table = text[text.index("| Event | When |") :].split("\n\n")[0]
    names = {n for row in table.splitlines()[2:] for n in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert "listening" in names
    source = "\n".join(
        path.read_text() for d in ("gravpy", "transports") for path in (ROOT / d).rglob("*.py")
    )
    for name in names:
        assert re.search(rf'(log\w*|warning|info|error|debug)\(\s*"{name}"', source), name


# -- gravctl ---------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("gravctl has no commands")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def _gravctl_lines() -> Iterator[list[str]]:
    """Every gravctl command line the docs show (in code spans and blocks), as words."""
    text = _text()
    for line in [*_code_spans(text), *re.findall(r"^\s*((?:\.venv/bin/)?gravctl .*)$", text, re.M)]:
        if re.match(r"(\.venv/bin/)?gravctl\b", line):
            yield shlex.split(line.replace("[", " ").replace("]", " "))[1:]


def test_every_gravctl_command_and_option_in_the_docs_exists() -> None:
    """Each gravctl command the docs show exists and takes each option shown with it; so do the
    options the README names after a command (``sub --json``)."""
    parser = gravctl_parser()
    commands, top = _subparsers(parser), _options(parser)
    seen = 0
    lines = list(_gravctl_lines())
    lines += [
        span.split() for span in _code_spans(_text()) if re.match(r"(sub|pub|req|reply) -", span)
    ]
    for words in lines:
        command = next((w for w in words if w in commands), None)
        allowed = top | (_options(commands[command]) if command else set())
        for word in words:
            if word.startswith("-") and word != "-":
                assert word.split("=")[0] in allowed, (words, word)
                seen += 1
    assert seen > 10, "the docs show gravctl options"


# -- gravd's configuration, as a user meets it --------------------------------------------------------


async def _check_config(args: list[str], env: dict[str, str]) -> Result:
    return await run([*GRAVD, "--check-config", *args], env=env)


async def test_gravd_takes_every_setting_from_the_flag_then_the_environment_then_the_file(
    tmp_path: Path,
) -> None:
    """gravd --check-config reports, for every setting, the file's value under GRAVD_*'s under
    the flag's, as the docs order them, and the value the loader makes of it."""
    samples = sample_values(tmp_path)
    toml = tmp_path / "gravd.toml"
    toml.write_text(toml_text({n: v for n, (v, _, _) in samples.items()}))
    env = {s.env: samples[s.name][1] for s in SETTINGS}
    args: list[str] = []
    for setting in SETTINGS:
        args += [setting.flag] + ([samples[setting.name][2]] if not setting.switch else [])
    for layer_args, layer_env, source in (
        ([], {CONFIG_ENV: str(toml)}, "file"),
        ([], {CONFIG_ENV: str(toml), **env}, "environment"),
        (args, {CONFIG_ENV: str(toml), **env}, "flag"),
    ):
        result = await _check_config(layer_args, layer_env)
        assert result.code == 0, result.stderr
        shown = json.loads(result.stdout)
        expected = load_config(flag_values(samples) if layer_args else {}, layer_env)
        for setting in SETTINGS:
            where = shown["sources"][setting.name]
            assert where.startswith(str(toml) if source == "file" else source), (
                setting.name,
                where,
            )
            assert shown[setting.name] == json.loads(json.dumps(expected.public()[setting.name]))


@pytest.mark.parametrize(
    ("args", "env", "toml", "expected"),
    [
        (["--ping-interval", "0"], {}, "", "invalid ping_interval (from flag --ping-interval)"),
        ([], {"GRAVD_PEER": "10.0.0.1:8080"}, "", "invalid GRAVD_PEER (from environment)"),
        ([], {}, f"max_connections = {2**64}\n", "invalid max_connections (from {toml} key"),
        ([], {}, 'tls_ca = "ca\\u0000.pem"\n', "invalid tls_ca (from {toml} key 'tls_ca')"),
        ([], {}, 'peer = ["10.0.0.1:8080"]\n', "invalid peer (from {toml}): unknown setting"),
    ],
    ids=["zero-ping", "unknown-variable", "huge-count", "nul-path", "unknown-key"],
)
async def test_gravd_refuses_a_bad_value_from_any_source_with_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str, expected: str
) -> None:
    """A bad value from a flag, the environment or the file makes gravd --check-config exit 2 with
    one line naming the setting and its source, never a traceback."""
    path = tmp_path / "gravd.toml"
    path.write_text(toml)
    result = await _check_config([*args, "--config", str(path)], env)
    assert (result.code, result.stdout) == (2, "")
    assert result.stderr.startswith("gravd: " + expected.format(toml=path)), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


async def test_gravd_refuses_a_zero_ping_interval_at_start_with_exit_2(tmp_path: Path) -> None:
    """gravd started with ping_interval 0 exits 2 naming the setting (it crashed with a
    traceback and exit 1 once it had passed --check-config)."""
    result = await run(
        [*GRAVD, "--listen", "127.0.0.1:0", "--monitor", "off", "--ping-interval", "0"],
        env={"XDG_STATE_HOME": str(tmp_path)},
    )
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("gravd: invalid ping_interval (from flag --ping-interval)")
    assert "Traceback" not in result.stderr


# -- Python examples -------------------------------------------------------------------------------


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


async def _run_example(code: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    process = await Process.start([sys.executable, "-c", code], env=env, cwd=cwd)
    try:
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            return await process.wait()
    finally:
        await process.close()


def _check_printed(code: str, result: Result) -> None:
    """The program exited 0 and printed what each ``print(...)  # shown`` comment says (the
    comment whole, or what comes before its first ': ')."""
    assert result.code == 0, (code, result.stderr)
    lines = [line.strip() for line in result.stdout.splitlines()]
    for shown in re.findall(r"^\s*print\(.*\)  # (.+)$", code, re.M):
        assert shown in lines or shown.split(": ")[0] in lines, (shown, result.stdout)


def _tls_files(root: Path) -> None:
    """ca.pem, node.pem/node.key for 127.0.0.1 and app.pem/app.key, as the TLS example names."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    for name, host in (("node", "127.0.0.1"), ("app", "app.lan")):
        cert = ca.issue_cert(host)
        cert.cert_chain_pems[0].write_to_path(str(root / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(root / f"{name}.key"))


@pytest.mark.parametrize("index", range(len(_python_blocks(ROOT / "docs" / "api.md"))))
async def test_api_examples_run_as_written(tmp_path: Path, index: int) -> None:
    """Each Python example of docs/api.md runs (against a real gravd if it attaches to one, over
    mTLS if it dials tls://) and prints what its comments say."""
    code = _python_blocks(ROOT / "docs" / "api.md")[index]
    if "tls://" in code:
        _tls_files(tmp_path)
        args = ["--tls-cert", "node.pem", "--tls-key", "node.key", "--tls-ca", "ca.pem"]
        args = [str(tmp_path / a) if a.endswith((".pem", ".key")) else a for a in args]
        args += ["--tls-verify-clients", "--listen-tcp", "127.0.0.1:0"]
        async with running_gravd(*args) as node:
            (endpoint,) = [e for e in node.listening["endpoints"] if e.startswith("tls://")]
            code = re.sub(r"tls://[\w.]+:\d+", endpoint, code)
            _check_printed(code, await _run_example(code, tmp_path))
            assert (await node.stop()).code == 0
    elif DEFAULT_URL in code:
        async with running_gravd() as node:
            code = code.replace(DEFAULT_URL, node.endpoint)
            _check_printed(code, await _run_example(code, tmp_path))
            assert (await node.stop()).code == 0
    else:
        _check_printed(code, await _run_example(code, tmp_path))


async def test_the_events_example_runs_as_written(tmp_path: Path) -> None:
    """The example of docs/events.md stores an event in a real gravd and finds it again."""
    (code,) = _python_blocks(ROOT / "docs" / "events.md")
    async with running_gravd() as node:
        code = code.replace(DEFAULT_URL, node.endpoint)
        _check_printed(code, await _run_example(code, tmp_path))
        assert (await node.stop()).code == 0


@pytest.mark.parametrize("backend", ["memory", "ws", "sqlite", "nats"])
async def test_the_messenger_example_runs_on_every_backend(tmp_path: Path, backend: str) -> None:
    """The first example of docs/messenger.md runs as written with each URL it offers."""
    code = _python_blocks(ROOT / "docs" / "messenger.md")[0]
    urls = dict(re.findall(r'^#? ?URL = "((\w+):[^"]*)"', code, re.M)[i][::-1] for i in range(4))
    assert sorted(urls) == ["memory", "nats", "sqlite", "ws"]

    async def with_url(url: str) -> None:
        program = re.sub(r'^URL = ".*$', f'URL = "{url}"', code, count=1, flags=re.M)
        _check_printed(program, await _run_example(program, tmp_path))

    if backend == "memory":
        await with_url(urls["memory"])
    elif backend == "sqlite":
        await with_url(f"sqlite:///{tmp_path / 'bus.db'}")
    elif backend == "ws":
        async with running_gravd() as node:
            await with_url(node.endpoint)
            assert (await node.stop()).code == 0
    else:
        from gravpy.testing.nats import nats_server

        async with nats_server() as server:
            await with_url(server.url)


async def test_the_nats_fixture_example_runs_under_pytest(tmp_path: Path) -> None:
    """The conftest.py and test_x.py of docs/messenger.md pass under pytest (asyncio auto mode)."""
    blocks = [b for b in _python_blocks(ROOT / "docs" / "messenger.md") if b.startswith("# ")]
    assert [b.splitlines()[0] for b in blocks] == ["# conftest.py", "# test_x.py"]
    for block in blocks:
        (tmp_path / block.splitlines()[0][2:]).write_text(block)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o"]
    argv += ["asyncio_mode=auto", "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)]
    process = await Process.start(argv, cwd=tmp_path)
    try:
        async with asyncio.timeout(EXAMPLE_TIMEOUT):
            result = await process.wait()
    finally:
        await process.close()
    assert result.code == 0, result.stdout
    assert "1 passed" in result.stdout
