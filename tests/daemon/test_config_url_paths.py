"""gravd's URL path settings, ``path`` (WebSocket) and ``http_path`` (HTTP transport): a value no
peer could dial (a '?' or '#' that cuts the URL's path, no leading '/', whitespace or a control
character) is refused at config time, naming the setting and its source. Pure, but for one run of
``gravd --check-config`` as a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravpy.daemon.config import ConfigError, DaemonConfig, load_config
from gravpy.testing.gravd import GRAVD, run

FLAGS = {"path": "--path", "http_path": "--http-path"}
BAD_PATHS = {
    "query": ("/meta?v=1", "'?'"),
    "fragment": ("/meta#top", "'#'"),
    "relative": ("meta/message", "start with '/'"),
    "space": ("/meta message", "U+0020"),
    "tab": ("/meta\tmessage", "U+0009"),
    "escape": ("/meta\x1b[2J", "U+001B"),
    "delete": ("/meta\x7f", "U+007F"),
    "rtl-override": ("/meta\u202e", "U+202E"),
}


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every character TOML would refuse raw escaped."""
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04X}" for c in text)
    return f'"{escaped}"'


@pytest.mark.parametrize("setting", list(FLAGS))
@pytest.mark.parametrize("source", ["flag", "environment", "file"])
@pytest.mark.parametrize(("value", "why"), list(BAD_PATHS.values()), ids=list(BAD_PATHS))
def test_a_path_no_peer_could_dial_is_refused_naming_the_setting_and_its_source(
    tmp_path: Path, setting: str, source: str, value: str, why: str
) -> None:
    """A path or http_path from a flag, the environment or the TOML file that a peer's URL could
    not reach is a ConfigError naming the setting, where it came from and what is wrong."""
    env_name = f"GRAVD_{setting.upper()}"
    flags: dict[str, object] = {setting: value} if source == "flag" else {}
    environ = {env_name: value} if source == "environment" else {}
    where = {"flag": f"flag {FLAGS[setting]}", "environment": f"environment {env_name}"}
    if source == "file":
        toml = tmp_path / "gravd.toml"
        toml.write_text(f"{setting} = {_toml_string(value)}\n")
        flags, where["file"] = {"config": str(toml)}, f"{toml} key '{setting}'"
    with pytest.raises(ConfigError) as caught:
        load_config(flags, environ)
    message = str(caught.value)
    assert message.startswith(f"invalid {setting} (from {where[source]}): "), message
    assert why in message


@pytest.mark.parametrize("setting", list(FLAGS))
def test_a_path_built_in_code_is_checked_too(setting: str) -> None:
    """DaemonConfig refuses a path holding '?' as the loader does."""
    with pytest.raises(ConfigError, match=rf"invalid {setting} \(from value\): .*'\?'"):
        DaemonConfig(**{setting: "/meta?v=1"})  # type: ignore[arg-type]


def test_paths_a_peer_can_dial_are_still_taken() -> None:
    """Paths of printable text without '?' or '#', in any script, are taken as they are."""
    for path in ("/meta/message", "/", "/étage-2/grav", "/a%20b/c;d=1", "/~grav/x.y_z"):
        assert load_config({"path": path}, {}).path == path
    assert load_config({"http_path": "/étage-2/http"}, {}).http_path == "/étage-2/http"


async def test_gravd_refuses_a_path_with_a_query_with_exit_2(tmp_path: Path) -> None:
    """gravd --check-config with GRAVD_PATH holding '?' exits 2 with one line naming the
    variable, instead of starting a node every peer would get 404 from."""
    env = {"XDG_STATE_HOME": str(tmp_path), "GRAVD_PATH": "/meta?v=1", "GRAVD_MONITOR": "off"}
    result = await run([*GRAVD, "--check-config"], env=env)
    assert (result.code, result.stdout) == (2, ""), result.stdout
    assert result.stderr.startswith("gravd: invalid path (from environment GRAVD_PATH): ")
    assert len(result.stderr.strip().splitlines()) == 1
