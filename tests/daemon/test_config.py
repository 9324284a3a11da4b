"""Tests for gravpy.daemon.config: precedence of the four sources, and validation. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravpy.daemon.config import (
    DEFAULT_LISTEN,
    DEFAULT_MONITOR,
    SETTINGS,
    Address,
    ConfigError,
    DaemonConfig,
    load_config,
    load_config_with_sources,
    tcp_beside,
)
from gravpy.errors import UsageError
from gravpy.identity import keygen

NO_FLAGS: dict[str, object] = {}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gravd.toml"
    path.write_text(text)
    return path


def test_defaults_work_for_a_lan() -> None:
    """With nothing given: every interface on 8080, monitor on loopback 8222, static, any mesh."""
    config = load_config(NO_FLAGS, {})
    # TCP beside WebSocket (auto: 8082), unless that port is taken on this machine right now
    assert config == DaemonConfig(listen_tcp=tcp_beside(DEFAULT_LISTEN))
    assert config.listen == Address("0.0.0.0", 8080) == DEFAULT_LISTEN
    assert config.monitor == Address("127.0.0.1", 8222) == DEFAULT_MONITOR
    assert (config.path, config.discovery, config.mesh) == ("/meta/message", "static", "*")
    assert (config.peers, config.mesh_key, config.log_format) == ((), None, "auto")


def test_flags_beat_env_beat_toml_beat_defaults(tmp_path: Path) -> None:
    """Each source overrides the ones below it, setting by setting."""
    path = _toml(tmp_path, 'listen = ":7000"\nmesh = "toml"\nlog_level = "debug"\n')
    env = {"GRAVD_CONFIG": str(path), "GRAVD_MESH": "env", "GRAVD_LOG_LEVEL": "warning"}
    config = load_config({"log_level": "error"}, env)
    assert config.listen == Address("0.0.0.0", 7000)  # only the file sets it
    assert config.mesh == "env"  # the environment beats the file
    assert config.log_level == "error"  # the flag beats both
    assert config.monitor == DEFAULT_MONITOR  # nobody sets it


def test_config_flag_beats_gravd_config(tmp_path: Path) -> None:
    """--config picks the file even when GRAVD_CONFIG names another."""
    chosen = _toml(tmp_path, 'mesh = "chosen"\n')
    other = tmp_path / "other.toml"
    other.write_text('mesh = "other"\n')
    config = load_config({"config": str(chosen)}, {"GRAVD_CONFIG": str(other)})
    assert config.mesh == "chosen"


def test_gravd_table_in_toml(tmp_path: Path) -> None:
    """Settings may sit under a [gravd] table."""
    path = _toml(tmp_path, '[gravd]\npeers = ["10.0.0.5:8080", "ws://h:1/x"]\n')
    config = load_config({"config": str(path)}, {})
    assert config.peers == ("ws://10.0.0.5:8080/meta/message", "ws://h:1/x")


def test_repeated_peer_flags_and_comma_separated_env() -> None:
    """--peer repeats; GRAVD_PEERS separates with commas; both normalize to full URLs."""
    from_flags = load_config({"peers": ["a:1", "b:2"]}, {})
    from_env = load_config(NO_FLAGS, {"GRAVD_PEERS": "a:1, b:2"})
    assert from_flags.peers == from_env.peers == ("ws://a:1/meta/message", "ws://b:2/meta/message")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", Address("127.0.0.1", 0)),
        (":9000", Address("0.0.0.0", 9000)),
        ("[::1]:8080", Address("::1", 8080)),
        ("gravd.local:80", Address("gravd.local", 80)),
    ],
)
def test_listen_addresses(text: str, expected: Address) -> None:
    """HOST:PORT, :PORT (every interface) and [IPv6]:PORT are accepted."""
    assert load_config({"listen": text}, {}).listen == expected


def test_monitor_can_be_off() -> None:
    """GRAVD_MONITOR=off disables the monitoring server."""
    assert load_config(NO_FLAGS, {"GRAVD_MONITOR": "off"}).monitor is None


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"listen": "8080"}, {}, "invalid listen (from flag --listen): '8080' is not HOST:PORT"),
        ({}, {"GRAVD_LISTEN": "h:70000"}, "invalid listen (from environment GRAVD_LISTEN)"),
        ({"monitor": "h:x"}, {}, "invalid monitor (from flag --monitor): bad port 'x'"),
        ({}, {"GRAVD_DISCOVERY": "dht"}, "invalid discovery (from environment GRAVD_DISCOVERY)"),
        ({"log_format": "xml"}, {}, "invalid log_format (from flag --log-format)"),
        ({}, {"GRAVD_LOG_LEVEL": "loud"}, "invalid log_level (from environment GRAVD_LOG_LEVEL)"),
        ({"mesh": "two words"}, {}, "invalid mesh (from flag --mesh)"),
        ({"path": "meta"}, {}, "invalid path (from flag --path)"),
        ({"peers": ["ws://h"]}, {}, "invalid peers (from flag --peer): bad static endpoint"),
        ({}, {"GRAVD_DRAIN_TIMEOUT": "-1"}, "invalid drain_timeout (from environment"),
        ({"mdns_interfaces": ["lo"]}, {}, "invalid mdns_interfaces (from flag --mdns-interface)"),
        (
            {"peers": ["ftp://h:1"]},
            {},
            "invalid peers (from flag --peer): ftp://h:1/meta/message: ",
        ),
        (
            {"dashboard_token_file": "/nonexistent/token"},
            {},
            "invalid dashboard_token_file (from flag --dashboard-token-file): cannot read",
        ),
    ],
)
def test_bad_values_name_the_setting_and_the_source(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    """A bad value raises ConfigError naming the setting and where the value came from."""
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, UsageError)


def test_bad_toml_value_names_the_file_and_key(tmp_path: Path) -> None:
    """A bad value in the file names the file and the key."""
    path = _toml(tmp_path, "drain_timeout = true\n")
    with pytest.raises(
        ConfigError, match=rf"invalid drain_timeout \(from {path} key 'drain_timeout'\)"
    ):
        load_config({"config": str(path)}, {})


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key is an error, not silently ignored."""
    path = _toml(tmp_path, 'lisen = ":1"\n')
    with pytest.raises(ConfigError, match=r"invalid lisen .* unknown setting"):
        load_config({"config": str(path)}, {})


def test_unreadable_or_invalid_toml_is_refused(tmp_path: Path) -> None:
    """A missing file or broken TOML is refused, naming where the file name came from."""
    with pytest.raises(ConfigError, match=r"invalid config \(from environment GRAVD_CONFIG\)"):
        load_config(NO_FLAGS, {"GRAVD_CONFIG": str(tmp_path / "absent.toml")})
    path = _toml(tmp_path, "listen = \n")
    with pytest.raises(ConfigError, match=r"invalid config \(from flag --config\).*not valid TOML"):
        load_config({"config": str(path)}, {})
    path.write_bytes(b'listen = "\xff"\n')  # not UTF-8: refused, not a traceback
    with pytest.raises(ConfigError, match=r"invalid config \(from flag --config\).*not valid TOML"):
        load_config({"config": str(path)}, {})


def test_mesh_key_file_relative_to_the_toml_file(tmp_path: Path) -> None:
    """A relative mesh_key_file in TOML is read next to the file; the key never shows in repr."""
    (tmp_path / "mesh.key").write_bytes(b"s3cret-s3cret-s3cret\n")
    path = _toml(tmp_path, 'mesh_key_file = "mesh.key"\n')
    config = load_config({"config": str(path)}, {})
    assert config.mesh_key == b"s3cret-s3cret-s3cret"
    assert config.mesh_key_file == tmp_path / "mesh.key"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.public())


def test_every_relative_path_in_the_toml_file_is_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path setting given relative in the TOML file (identity, auth file, data dir, NATS
    files, token file) is taken next to the file, whatever the working directory; the same
    path from a flag stays relative to the working directory."""
    path = _toml(
        tmp_path,
        'identity = "keys/node.key"\nauth_file = "auth.toml"\ndata_dir = "state"\n'
        'nats_token_file = "nats.token"\n'
        f'dashboard_token_file = "{tmp_path / "dash.token"}"\n',
    )
    (tmp_path / "nats.token").write_text("t0ken\n")
    (tmp_path / "dash.token").write_text("d4shboard-t0ken-0123\n")
    (tmp_path / "keys").mkdir()
    line = keygen(tmp_path / "keys/node.key")
    (tmp_path / "auth.toml").write_text(
        f'[[identities]]\nname = "n"\npublic_key = "{line}"\n'
        'publish = { allow = [">"], deny = [] }\nsubscribe = { allow = [">"], deny = [] }\n'
    )
    config = load_config({"config": str(path)}, {})
    assert config.identity == tmp_path / "keys/node.key"
    assert config.auth_file == tmp_path / "auth.toml"
    assert config.data_dir == tmp_path / "state"
    assert config.nats_token_file == tmp_path / "nats.token"
    assert config.dashboard_token_file == tmp_path / "dash.token"  # (absolute: as given)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keys").mkdir(parents=True)
    keygen(elsewhere / "keys/node.key")
    monkeypatch.chdir(elsewhere)
    flagged = load_config({"config": str(path), "identity": "keys/node.key"}, {})
    assert flagged.identity == Path("keys/node.key")


def test_short_or_missing_mesh_key_is_refused(tmp_path: Path) -> None:
    """A key shorter than 16 bytes, or a missing key file, is refused naming mesh_key_file."""
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny")
    with pytest.raises(ConfigError, match=r"invalid mesh_key_file \(from flag .*4 bytes"):
        load_config({"mesh_key_file": str(short)}, {})
    with pytest.raises(
        ConfigError, match=r"invalid mesh_key_file \(from environment .*cannot read"
    ):
        load_config(NO_FLAGS, {"GRAVD_MESH_KEY_FILE": str(tmp_path / "absent")})


def test_peers_with_discovery_none_are_refused() -> None:
    """Listing peers while discovery is 'none' is a contradiction, refused naming both sources."""
    with pytest.raises(ConfigError, match=r"invalid peers \(from environment GRAVD_PEERS\).*flag"):
        load_config({"discovery": "none"}, {"GRAVD_PEERS": "a:1"})


def test_dataclass_validates_on_construction() -> None:
    """DaemonConfig built in code runs the same checks and normalizes its values."""
    config = DaemonConfig(listen=Address("127.0.0.1", 0), peers=("h:1",), log_level="INFO")
    assert config.peers == ("ws://h:1/meta/message",)
    assert config.log_level == "info"
    with pytest.raises(ConfigError, match=r"invalid listen \(from value\)"):
        DaemonConfig(listen=Address("h", 99999))
    with pytest.raises(ConfigError, match="mesh_key"):
        DaemonConfig(mesh_key=b"short")


def test_every_setting_has_flag_env_and_help() -> None:
    """Each setting has a --flag, a GRAVD_ variable named after it and a help text."""
    for setting in SETTINGS:
        assert setting.flag.startswith("--")
        assert setting.env == "GRAVD_" + setting.name.upper()
        assert setting.help


def test_http_listener_is_off_until_set_from_any_source(tmp_path: Path) -> None:
    """listen_http defaults to off; a flag, GRAVD_LISTEN_HTTP or the TOML key turns it on."""
    assert load_config(NO_FLAGS, {}).listen_http is None
    assert load_config(NO_FLAGS, {}).http_path == "/meta/http"
    path = _toml(tmp_path, 'listen_http = ":8081"\nhttp_path = "/grav"\n')
    from_toml = load_config({"config": str(path)}, {})
    assert (from_toml.listen_http, from_toml.http_path) == (Address("0.0.0.0", 8081), "/grav")
    from_env = load_config({"config": str(path)}, {"GRAVD_LISTEN_HTTP": "127.0.0.1:0"})
    assert from_env.listen_http == Address("127.0.0.1", 0)
    from_flag = load_config({"listen_http": "off"}, {"GRAVD_LISTEN_HTTP": "127.0.0.1:0"})
    assert from_flag.listen_http is None
    assert from_flag.public()["listen_http"] == "off"


def test_http_peers_are_normalized_to_the_http_path() -> None:
    """An http:// peer without a path dials the HTTP transport's default path, not the WebSocket's."""
    config = load_config({"listen_http": ":8081", "peers": ["http://10.0.0.5:8081", "h:1"]}, {})
    assert config.peers == ("http://10.0.0.5:8081/meta/http", "ws://h:1/meta/message")


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"listen_http": "8081"}, {}, "invalid listen_http (from flag --listen-http): '8081'"),
        ({}, {"GRAVD_HTTP_PATH": "/grav/"}, "invalid http_path (from environment GRAVD_HTTP_PATH)"),
        ({"http_path": "/a?b"}, {}, "invalid http_path (from flag --http-path)"),
        (
            {"peers": ["http://h:1"]},
            {},
            "invalid peers (from flag --peer): http://h:1/meta/http is an HTTP peer but "
            "listen_http is off (from default)",
        ),
        (
            {"listen_http": ":8080"},
            {},
            "invalid listen_http (from flag --listen-http): 0.0.0.0:8080 takes port 8080, "
            "which listen already binds (0.0.0.0:8080, from default)",
        ),
        (
            {"listen": "127.0.0.1:9000"},
            {"GRAVD_LISTEN_HTTP": "0.0.0.0:9000"},
            "invalid listen_http (from environment GRAVD_LISTEN_HTTP)",
        ),
    ],
)
def test_bad_http_settings_name_the_setting_and_the_source(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    """A bad HTTP listener setting, alone or with another, is refused naming it and its source."""
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env)
    assert str(caught.value).startswith(message)


def test_two_listeners_may_share_port_zero_or_a_port_on_other_hosts() -> None:
    """Port 0 twice, or one port on two specific addresses, binds twice without conflict."""
    both_zero = DaemonConfig(listen=Address("127.0.0.1", 0), listen_http=Address("127.0.0.1", 0))
    assert both_zero.listen_http == Address("127.0.0.1", 0)
    hosts = load_config({"listen": "127.0.0.1:9000", "listen_http": "127.0.0.2:9000"}, {})
    assert hosts.listen_http == Address("127.0.0.2", 9000)
    with pytest.raises(ConfigError, match=r"invalid peers \(from value\).*listen_http is off"):
        DaemonConfig(peers=("https://h:443",))


def test_liveness_settings_are_read_and_checked() -> None:
    """ping_interval and dead_after come from flags; dead_after not above ping_interval is refused."""
    config = load_config({"ping_interval": "0.5"}, {"GRAVD_DEAD_AFTER": "3"})
    assert (config.ping_interval, config.dead_after) == (0.5, 3.0)
    with pytest.raises(ConfigError, match="dead_after"):
        load_config({"ping_interval": "2", "dead_after": "1"}, {})


def test_max_upgrading_comes_from_flag_env_and_toml_and_must_be_positive(tmp_path: Path) -> None:
    """max_upgrading defaults to 128, is read from each source, and 0 or a word is refused."""
    assert load_config(NO_FLAGS, {}).max_upgrading == 128
    assert load_config({"max_upgrading": "16"}, {}).max_upgrading == 16
    assert load_config(NO_FLAGS, {"GRAVD_MAX_UPGRADING": "32"}).max_upgrading == 32
    path = _toml(tmp_path, "max_upgrading = 64\n")
    assert load_config({"config": str(path)}, {}).max_upgrading == 64
    with pytest.raises(ConfigError, match=r"invalid max_upgrading \(from flag --max-upgrading\)"):
        load_config({"max_upgrading": "0"}, {})
    with pytest.raises(ConfigError, match=r"invalid max_upgrading \(from environment"):
        load_config(NO_FLAGS, {"GRAVD_MAX_UPGRADING": "many"})


def test_nats_shadow_comes_from_each_source_and_sizes_the_bridges_shadow(tmp_path: Path) -> None:
    """nats_shadow defaults to 131072, is read from each source, must be positive, and is the
    limit of the shadow gravd's bridge keeps."""
    from gravpy.bridge.nats import NatsBridge
    from gravpy.daemon.bridging import bridges_for

    assert load_config(NO_FLAGS, {}).nats_shadow == 131_072
    assert load_config({"nats_shadow": "1000"}, {}).nats_shadow == 1000
    assert load_config(NO_FLAGS, {"GRAVD_NATS_SHADOW": "2000"}).nats_shadow == 2000
    path = _toml(tmp_path, "nats_shadow = 3000\n")
    assert load_config({"config": str(path)}, {}).nats_shadow == 3000
    with pytest.raises(ConfigError, match=r"invalid nats_shadow \(from flag --nats-shadow\)"):
        load_config({"nats_shadow": "0"}, {})
    config = load_config({"nats": ["nats://127.0.0.1:4222"], "nats_shadow": "7"}, {})
    (bridge,) = bridges_for(config)
    assert isinstance(bridge, NatsBridge)
    assert bridge.config.shadow_limit == 7
    assert bridge._importer.shadow.limit == 7


@pytest.mark.parametrize("source", ["flag", "env", "toml"])
def test_a_ping_interval_of_zero_is_refused_from_every_source(tmp_path: Path, source: str) -> None:
    """ping_interval 0 is refused naming its source (a node cannot ping every 0 s; it crashed)."""
    flags: dict[str, object] = {"ping_interval": "0"} if source == "flag" else {}
    env = {"GRAVD_PING_INTERVAL": "0"} if source == "env" else {}
    if source == "toml":
        flags = {"config": str(_toml(tmp_path, "ping_interval = 0\n"))}
    where = {"flag": "flag --ping-interval", "env": "environment GRAVD_PING_INTERVAL"}
    expected = where.get(source, f"{tmp_path / 'gravd.toml'} key 'ping_interval'")
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env)
    assert str(caught.value).startswith(f"invalid ping_interval (from {expected}): ")
    assert "above 0" in str(caught.value)


@pytest.mark.parametrize("name", ["buffer_size", "buffer_bytes", "max_connections", "nats_shadow"])
def test_a_count_past_64_bits_is_refused(name: str) -> None:
    """A count too large for a 64-bit integer is refused naming the setting, not accepted (gravd
    then crashed at start, storing its configuration as an event)."""
    flag = next(s.flag for s in SETTINGS if s.name == name)
    with pytest.raises(ConfigError, match=rf"invalid {name} \(from flag {flag}\): .*largest"):
        load_config({name: str(2**63)}, {})
    assert getattr(load_config({name: str(2**63 - 1)}, {}), name) == 2**63 - 1


@pytest.mark.parametrize("name", ["tls_ca", "mesh_key_file", "auth_file", "data_dir"])
def test_a_path_holding_nul_in_the_toml_file_is_refused(tmp_path: Path, name: str) -> None:
    """A TOML path holding a NUL character is refused naming the key, not raised from inside."""
    path = _toml(tmp_path, f'{name} = "a\\u0000b"\n')
    with pytest.raises(ConfigError, match=rf"invalid {name} \(from {path} key '{name}'\): .*NUL"):
        load_config({"config": str(path)}, {})


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("GRAVD_PEER", "; did you mean GRAVD_PEERS?"),
        ("GRAVD_MDNS_INTERFACE", "; did you mean GRAVD_MDNS_INTERFACES?"),
        ("GRAVD_COLOUR", " (it reads GRAVD_CONFIG"),
    ],
)
def test_an_unknown_gravd_variable_is_refused(variable: str, hint: str) -> None:
    """A GRAVD_* variable gravd does not read is refused naming it, not silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load_config(NO_FLAGS, {variable: "127.0.0.1:9", "OTHER": "x"})
    assert str(caught.value).startswith(
        f"invalid {variable} (from environment): not a variable gravd reads{hint}"
    )
    assert load_config(NO_FLAGS, {"OTHER_GRAVD_PEER": "x", "GRAVD_CONFIG": ""}).peers == ()


def test_an_unknown_toml_key_close_to_a_setting_is_named(tmp_path: Path) -> None:
    """A TOML key written as the flag is (dashes) is refused, naming the setting meant."""
    path = _toml(tmp_path, 'mesh-key-file = "mesh.key"\n')
    with pytest.raises(ConfigError, match=r"unknown setting; did you mean mesh_key_file\?"):
        load_config({"config": str(path)}, {})


# -- every setting, from every source ----------------------------------------------------------


def sample_values(root: Path) -> dict[str, tuple[object, str, str]]:
    """Three valid values of every setting, together a valid configuration: the TOML value, the
    environment's text and the flag's text (``""`` for a switch, which takes none). Files they
    name are made under ``root``."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files: dict[str, list[str]] = {}
    for name, write in (
        ("cert.pem", cert.private_key_and_cert_chain_pem.write_to_path),
        ("key.pem", cert.private_key_pem.write_to_path),
        ("ca.pem", ca.cert_pem.write_to_path),
    ):
        write(str(root / name))
        files[name] = [str(root / name)]
        for i in (2, 3):  # three names of one file: the sources' values differ, the files match
            (root / f"{i}-{name}").symlink_to(root / name)
            files[name].append(str(root / f"{i}-{name}"))
    made: dict[str, list[str]] = {k: [] for k in ("key", "token", "identity", "auth", "nats")}
    for i in (1, 2, 3):
        (root / f"mesh{i}.key").write_text(f"mesh-key-{i}-" + "k" * 20)
        (root / f"dash{i}.token").write_text(f"dashboard-token-{i}-0123456789")
        (root / f"nats{i}").write_text("t0ken")
        line = keygen(root / f"node{i}.key")
        (root / f"auth{i}.toml").write_text(
            f'[[identities]]\nname = "n"\npublic_key = "{line}"\n'
            'publish = { allow = [">"], deny = [] }\nsubscribe = { allow = [">"], deny = [] }\n'
        )
        for kind, path in (
            ("key", f"mesh{i}.key"),
            ("token", f"dash{i}.token"),
            ("identity", f"node{i}.key"),
            ("auth", f"auth{i}.toml"),
            ("nats", f"nats{i}"),
        ):
            made[kind].append(str(root / path))

    def three(kind: list[str]) -> tuple[object, str, str]:
        return kind[0], kind[1], kind[2]

    return {
        "listen": ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"),
        "advertise": ("h1.lan:1", "h2.lan:2", "h3.lan:3"),
        "path": ("/a", "/b", "/c"),
        "listen_http": ("127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"),
        "http_path": ("/ha", "/hb", "/hc"),
        "listen_tcp": ("127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"),
        "tls_cert": three(files["cert.pem"]),
        "tls_key": three(files["key.pem"]),
        "tls_ca": three(files["ca.pem"]),
        "tls_verify_clients": (True, "1", ""),
        "peers": (["10.0.0.1:1"], "10.0.0.2:2,10.0.0.4:4", "10.0.0.3:3"),
        "discovery": ("static", "static", "static"),
        "mdns_interfaces": (["127.0.0.1"], "127.0.0.2", "127.0.0.3"),
        "mdns_service": ("_a._tcp.local.", "_b._tcp.local.", "_c._tcp.local."),
        "monitor": ("127.0.0.1:7301", "off", "127.0.0.1:7303"),
        "mesh": ("m1", "m2", "m3"),
        "mesh_key_file": three(made["key"]),
        "data_dir": (str(root / "d1"), str(root / "d2"), str(root / "d3")),
        "buffer_size": (1, "2", "3"),
        "buffer_bytes": (1, "2", "3"),
        "buffer_age": (1.5, "2", "3"),
        "buffer_durable": (True, "off", "on"),
        "log_format": ("json", "console", "json"),
        "log_level": ("debug", "warning", "error"),
        "loop": ("asyncio", "asyncio", "asyncio"),
        "drain_timeout": (1, "2", "3"),
        "ping_interval": (1, "1.5", "0.5"),
        "dead_after": (10, "11", "12"),
        "max_connections": (5, "6", "7"),
        "max_upgrading": (5, "6", "7"),
        "dashboard": (True, "off", "on"),
        "dashboard_tail": (False, "on", "off"),
        "dashboard_token_file": three(made["token"]),
        "nats": (["nats://127.0.0.1:4001"], "nats://127.0.0.1:4002", "tls://127.0.0.1:4003"),
        "nats_prefix": ("p1", "p2", "p3"),
        "nats_creds": three(made["nats"]),
        "nats_token_file": three(made["nats"]),
        "nats_ca": three(files["ca.pem"]),
        "nats_export": (["a.>"], "b.>,b2.*", "c.>"),
        "nats_shadow": (1, "2", "3"),
        "identity": three(made["identity"]),
        "auth_file": three(made["auth"]),
    }


def toml_text(values: dict[str, object]) -> str:
    """``values`` as the lines of a TOML file (strings, numbers, bools, lists of strings)."""

    def literal(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        return repr(value) if isinstance(value, int | float) else f'"{value}"'

    return "".join(f"{name} = {literal(value)}\n" for name, value in values.items())


def flag_values(samples: dict[str, tuple[object, str, str]]) -> dict[str, object]:
    """The flags of ``samples`` as gravd's parser hands them to the loader."""
    by_name = {s.name: s for s in SETTINGS}
    return {
        name: "true" if by_name[name].switch else [text] if by_name[name].repeatable else text
        for name, (_, _, text) in samples.items()
    }


def test_every_setting_takes_the_flag_then_the_environment_then_the_file(tmp_path: Path) -> None:
    """For every setting at once: the TOML value alone wins over the default, GRAVD_* over the
    file, and the flag over both, each reported as the value's source."""
    samples = sample_values(tmp_path)
    assert sorted(samples) == sorted(s.name for s in SETTINGS)  # a new setting needs samples
    toml = _toml(tmp_path, toml_text({n: v for n, (v, _, _) in samples.items()}))
    env = {s.env: samples[s.name][1] for s in SETTINGS}
    flags = flag_values(samples)

    _, default_sources = load_config_with_sources(NO_FLAGS, {})
    assert {source.partition(" ")[0] for source in default_sources.values()} == {"default"}
    layers = [
        ({"config": str(toml)}, {}, 0, lambda s: f"{toml} key '{s.name}'"),
        ({"config": str(toml)}, env, 1, lambda s: f"environment {s.env}"),
        ({"config": str(toml), **flags}, env, 2, lambda s: f"flag {s.flag}"),
    ]
    for layer_flags, layer_env, index, source in layers:
        config, sources = load_config_with_sources(layer_flags, layer_env)
        for setting in SETTINGS:
            raw = samples[setting.name][index]
            expected = setting.parse("true" if setting.switch and index == 2 else raw)
            assert sources[setting.name] == source(setting), setting.name
            assert getattr(config, setting.name) == expected, setting.name


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://user:secret@host:4222", "is not a NATS URL"),
        ("nats://user:secret@host:99999", "has a port that is not one"),
        ("nats://user:secret@:4222", "names no host"),
    ],
)
def test_a_bad_nats_url_is_refused_naming_its_source_and_never_its_password(
    url: str, why: str
) -> None:
    """A NATS URL the bridge could never use is a config error from where it came, without the
    password it carries."""
    with pytest.raises(ConfigError) as caught:
        load_config({"nats": None}, {"GRAVD_NATS": url})
    text = str(caught.value)
    assert "environment GRAVD_NATS" in text
    assert why in text
    assert "secret" not in text
