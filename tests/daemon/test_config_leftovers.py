"""gravd's configuration, what a QA pass found left: switches a flag cannot turn off, an empty
``--config``, mesh names that would show one name for another. Pure, but for a few runs of
``gravd --check-config`` as a user meets it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
import trustme

from discovery.mdns_record import advert_for
from gravpy.daemon.config import (
    SETTINGS,
    Address,
    ConfigError,
    DaemonConfig,
    load_config,
    load_config_with_sources,
)
from gravpy.daemon.healthcheck import monitor_url
from gravpy.daemon.main import build_parser
from gravpy.plugins import DiscoveryContext
from gravpy.proto import PROTOCOL_VERSION
from gravpy.testing.gravd import GRAVD, Result, run

BOOLEANS = [f.name for f in fields(DaemonConfig) if f.type == "bool"]
TLS_SETTINGS = ("tls_cert", "tls_key", "tls_ca")


def _tls_toml(root: Path) -> str:
    """TOML lines naming a certificate, its key and its CA, so that verifying clients is valid."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    names = dict(zip(TLS_SETTINGS, ("cert.pem", "key.pem", "ca.pem"), strict=True))
    return "".join(f'{name} = "{root / file}"\n' for name, file in names.items())


def _from_argv(argv: list[str], environ: dict[str, str]) -> tuple[DaemonConfig, dict[str, str]]:
    """The config gravd makes of ``argv`` (its own parser) and ``environ``, with the sources."""
    args = build_parser().parse_args(argv)
    flags: dict[str, object] = {s.name: getattr(args, s.name) for s in SETTINGS}
    return load_config_with_sources({**flags, "config": args.config}, environ)


async def _check_config(args: list[str], env: dict[str, str], tmp_path: Path) -> Result:
    return await run(
        [*GRAVD, "--check-config", *args], env={"XDG_STATE_HOME": str(tmp_path), **env}
    )


# -- a flag turns off every boolean setting the file or the environment turns on ---------------


def test_the_boolean_settings_are_the_ones_expected() -> None:
    """The settings below are exactly DaemonConfig's boolean ones, so a new one is tested too."""
    assert sorted(BOOLEANS) == sorted(
        ["tls_verify_clients", "buffer_durable", "dashboard", "dashboard_tail"]
    )


@pytest.mark.parametrize("name", BOOLEANS)
def test_a_flag_turns_off_a_boolean_setting_the_environment_and_the_file_turn_on(
    tmp_path: Path, name: str
) -> None:
    """Each boolean setting turned on by GRAVD_* and by the TOML file is turned off by a flag of
    gravd's command line, which the sources name."""
    setting = next(s for s in SETTINGS if s.name == name)
    toml = tmp_path / "gravd.toml"
    toml.write_text(_tls_toml(tmp_path) + f"{name} = true\n")
    on = {"GRAVD_CONFIG": str(toml), setting.env: "1"}
    config, sources = _from_argv([], on)
    assert (getattr(config, name), sources[name]) == (True, f"environment {setting.env}")
    off = ["--no-" + setting.flag[2:]] if setting.switch else [setting.flag, "off"]
    config, sources = _from_argv(off, on)
    assert (getattr(config, name), sources[name]) == (False, f"flag {off[0]}")


async def test_gravd_takes_no_tls_verify_clients_over_the_environment(tmp_path: Path) -> None:
    """gravd --no-tls-verify-clients runs with client verification off although
    GRAVD_TLS_VERIFY_CLIENTS=1 (without a CA, which it would otherwise need), and says why."""
    env = {"GRAVD_TLS_VERIFY_CLIENTS": "1", "GRAVD_MONITOR": "off"}
    with pytest.raises(ConfigError, match="needs tls_ca"):  # (on, it would be refused)
        load_config({}, env)
    result = await _check_config(["--no-tls-verify-clients"], env, tmp_path)
    assert result.code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["tls_verify_clients"] is False
    assert shown["sources"]["tls_verify_clients"] == "flag --no-tls-verify-clients"


def test_the_health_check_reads_gravds_switch_flags_as_gravd_does(tmp_path: Path) -> None:
    """The health check, given gravd's command line, takes --tls-verify-clients without a value
    and --no-tls-verify-clients over the environment (it stopped with a usage error, or ignored
    the flag and found the configuration invalid)."""
    toml = tmp_path / "gravd.toml"
    toml.write_text(_tls_toml(tmp_path))
    flags = ["--config", str(toml), "--tls-verify-clients", "--monitor", "127.0.0.1:7"]
    assert monitor_url({}, flags) == "http://127.0.0.1:7/healthz"
    environ = {"GRAVD_TLS_VERIFY_CLIENTS": "1"}
    flags = ["--no-tls-verify-clients", "--monitor", "127.0.0.1:8"]
    assert monitor_url(environ, flags) == "http://127.0.0.1:8/healthz"


# -- --config '' ---------------------------------------------------------------------------------


def test_an_empty_config_flag_reads_no_file_even_if_gravd_config_names_one(tmp_path: Path) -> None:
    """--config '' loads no TOML file at all, not the one GRAVD_CONFIG names."""
    toml = tmp_path / "gravd.toml"
    toml.write_text('mesh = "from-the-file"\nmonitor = "off"\n')
    config, sources = load_config_with_sources({"config": ""}, {"GRAVD_CONFIG": str(toml)})
    assert (config.mesh, sources["mesh"]) == ("*", "default")
    assert set(sources.values()) == {"default"}
    assert load_config({"config": str(toml)}, {}).mesh == "from-the-file"  # (the file is valid)


async def test_gravd_with_an_empty_config_flag_ignores_gravd_config(tmp_path: Path) -> None:
    """gravd --config '' starts from the defaults even when GRAVD_CONFIG names a file it would
    refuse."""
    toml = tmp_path / "gravd.toml"
    toml.write_text('colour = "blue"\n')
    env = {"GRAVD_CONFIG": str(toml), "GRAVD_MONITOR": "off"}
    with pytest.raises(ConfigError, match="unknown setting"):  # (read, it would be refused)
        load_config({}, env)
    result = await _check_config(["--config", ""], env, tmp_path)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["sources"]["mesh"] == "default"


# -- mesh names ----------------------------------------------------------------------------------

BAD_CHARACTERS = {
    "nul": "\x00",
    "escape": "\x1b",
    "delete": "\x7f",
    "c1-csi": "\x9b",
    "rtl-override": "\u202e",
    "zero-width-space": "\u200b",
    "lone-surrogate": "\udcff",  # (undecodable bytes in the environment or argv)
}


@pytest.mark.parametrize(
    ("source", "char"),
    [
        pytest.param(source, char, id=f"{source}-{what}")
        for source in ("flag", "environment", "file")
        for what, char in BAD_CHARACTERS.items()
        if (source, what) != ("file", "lone-surrogate")  # (TOML is UTF-8: it cannot hold one)
    ],
)
def test_a_mesh_name_with_a_control_or_invisible_character_is_refused(
    tmp_path: Path, source: str, char: str
) -> None:
    """A mesh name holding a control, invisible or undecodable character is refused naming the
    setting, its source and the character's code point, never showing the character itself."""
    name = f"lab{char}1"
    flags: dict[str, object] = {"mesh": name} if source == "flag" else {}
    environ = {"GRAVD_MESH": name} if source == "environment" else {}
    where = {"flag": "flag --mesh", "environment": "environment GRAVD_MESH"}.get(source, "")
    if source == "file":
        toml = tmp_path / "gravd.toml"
        toml.write_text(f'mesh = "lab\\u{ord(char):04x}1"\n')
        flags, where = {"config": str(toml)}, f"{toml} key 'mesh'"
    with pytest.raises(ConfigError) as caught:
        load_config(flags, environ)
    message = str(caught.value)
    assert message.startswith(f"invalid mesh (from {where}): "), message
    assert f"U+{ord(char):04X}" in message
    assert char not in message


def test_a_mesh_name_built_in_code_is_checked_too() -> None:
    """DaemonConfig refuses a mesh name holding NUL as the loader does."""
    with pytest.raises(ConfigError, match=r"invalid mesh \(from value\): .*U\+0000"):
        DaemonConfig(mesh="lab\x00")


def test_printable_mesh_names_are_still_taken() -> None:
    """Names of printable text, in any script and with punctuation, are taken as they are."""
    for name in ("lab", "étage-2", "研究室", "a.b_c:d/e", "*"):
        assert load_config({"mesh": name}, {}).mesh == name


async def test_gravd_refuses_an_escape_sequence_in_the_mesh_name_with_exit_2(
    tmp_path: Path,
) -> None:
    """GRAVD_MESH holding a terminal escape sequence stops gravd with exit 2 and one line naming
    the variable, the sequence escaped."""
    env = {"GRAVD_MESH": "lab\x1b[2J", "GRAVD_MONITOR": "off"}
    result = await _check_config([], env, tmp_path)
    assert (result.code, result.stdout) == (2, ""), result.stdout
    assert result.stderr.startswith("gravd: invalid mesh (from environment GRAVD_MESH): ")
    assert "\x1b" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_with_mdns_a_mesh_name_must_fit_a_txt_string() -> None:
    """With mDNS discovery a mesh name over 250 bytes of UTF-8 (mesh=NAME in a 255-byte TXT
    string) is refused naming both settings' sources; other discovery takes up to 255
    characters."""
    with pytest.raises(ConfigError) as caught:
        load_config({"discovery": "mdns"}, {"GRAVD_MESH": "é" * 126})
    assert str(caught.value).startswith(
        "invalid mesh (from environment GRAVD_MESH): 252 bytes in UTF-8; with discovery mdns "
        "(from flag --discovery)"
    )
    assert load_config({"discovery": "mdns", "mesh": "é" * 125}, {}).mesh == "é" * 125
    assert load_config({"mesh": "é" * 255}, {}).mesh == "é" * 255
    with pytest.raises(ConfigError, match=r"invalid mesh \(from value\): 251 bytes"):
        DaemonConfig(mesh="a" * 251, discovery="mdns")


# -- with mDNS, every setting that fills a TXT string fits it --------------------------------------

# a setting that fills a TXT entry: (its TOML and flag name, its variable, a value of N bytes in
# the TXT string, the flags that make it appear in the record)
TXT_SETTINGS = [
    ("path", "GRAVD_PATH", lambda n: "/" + "é" * ((n - 1) // 2) + "p" * ((n - 1) % 2), {}),
    (
        "http_path",
        "GRAVD_HTTP_PATH",
        lambda n: "/" + "h" * (n - 1),
        {"listen_http": "127.0.0.1:0"},
    ),
    ("advertise", "GRAVD_ADVERTISE", lambda n: "gravd." + "h" * (n - 6) + ":8080", {}),
]


@pytest.mark.parametrize(
    ("name", "env", "sized", "flags"), TXT_SETTINGS, ids=[s[0] for s in TXT_SETTINGS]
)
def test_with_mdns_a_path_or_advertised_host_must_fit_a_txt_string(
    name: str, env: str, sized: Callable[[int], str], flags: dict[str, str]
) -> None:
    """With mDNS discovery a path or advertised host name over 250 bytes (path=PATH or host=HOST
    in a 255-byte TXT string) is refused, naming the setting, its source and discovery's; 250
    bytes are taken, and so is a longer value with other discovery."""
    with pytest.raises(ConfigError) as caught:
        load_config({"discovery": "mdns", **flags}, {env: sized(251)})
    assert str(caught.value).startswith(
        f"invalid {name} (from environment {env}): 251 bytes in UTF-8; with discovery mdns "
        "(from flag --discovery)"
    )
    assert load_config({"discovery": "mdns", **flags}, {env: sized(250)})
    assert load_config(flags, {env: sized(300)})
    with pytest.raises(ConfigError, match=rf"invalid {name} \(from value\): 251 bytes"):
        DaemonConfig(**{**flags, name: sized(251)}, discovery="mdns")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [250, 251, 400])
@pytest.mark.parametrize(
    ("name", "env", "sized", "flags"), TXT_SETTINGS, ids=[s[0] for s in TXT_SETTINGS]
)
def test_a_config_taken_with_mdns_is_one_mdns_can_advertise(
    name: str, env: str, sized: Callable[[int], str], flags: dict[str, str], size: int
) -> None:
    """Every endpoint of a config gravd takes with mDNS discovery is advertised without error
    (the TXT check of discovery.mdns_record never fails after start)."""
    try:
        config = load_config({"discovery": "mdns", **flags}, {env: sized(size)})
    except ConfigError:
        return
    for endpoint in _advertised_endpoints(config):
        ctx = DiscoveryContext("node-uuid", config.mesh, (endpoint,), PROTOCOL_VERSION)
        assert advert_for(endpoint, ctx, "node-uuid")


def _advertised_endpoints(config: DaemonConfig) -> list[str]:
    """The endpoints gravd advertises with ``config``, as its transports state them (bound to
    10.0.0.1; the WebSocket one at ``advertise`` first, when set)."""
    first = config.advertise or Address("10.0.0.1", config.listen.port)
    endpoints = [f"ws://{first}{config.path}", f"ws://10.0.0.1:8080{config.path}"]
    if config.listen_http is not None:
        endpoints.append(f"http://10.0.0.1:8081{config.http_path}")
    return endpoints


async def test_gravd_refuses_an_advertised_host_too_long_for_mdns_with_exit_2(
    tmp_path: Path,
) -> None:
    """gravd --discovery mdns with a GRAVD_ADVERTISE host of 251 bytes stops with exit 2 and one
    line naming the variable, before anything starts."""
    env = {"GRAVD_ADVERTISE": "gravd." + "h" * 245 + ":8080", "GRAVD_MONITOR": "off"}
    result = await _check_config(["--discovery", "mdns"], env, tmp_path)
    assert (result.code, result.stdout) == (2, ""), result.stdout
    assert result.stderr.startswith(
        "gravd: invalid advertise (from environment GRAVD_ADVERTISE): 251 bytes in UTF-8; "
        "with discovery mdns (from flag --discovery)"
    )
    assert len(result.stderr.strip().splitlines()) == 1
