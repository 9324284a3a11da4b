"""gravd's --advertise, --check-config's sources, and errors that span two settings (real gravd)."""

from __future__ import annotations

import json
from pathlib import Path

from gravpy.testing.gravd import GRAVD, run, running_gravd


async def test_peers_learn_the_advertised_endpoint() -> None:
    """A node started with --advertise states that address: its peer lists it as the endpoint."""
    async with running_gravd("--advertise", "localhost:0") as a:
        port = a.listening["listen"].rsplit(":", 1)[1]
        assert a.endpoint == f"ws://localhost:{port}/meta/message"
        async with running_gravd("--peer", a.endpoint) as b:
            doc = await b.wait_peers(1)
    assert doc["peers"][0]["uuid"] == a.uuid
    assert doc["peers"][0]["endpoint"] == f"ws://localhost:{port}/meta/message"


async def test_advertise_refuses_a_wildcard_host() -> None:
    """--advertise 0.0.0.0:8080 is refused with exit 2, naming the flag."""
    result = await run([*GRAVD, "--check-config", "--advertise", "0.0.0.0:8080"])
    assert result.code == 2
    assert result.stderr.startswith("gravd: invalid advertise (from flag --advertise): ")


async def test_check_config_prints_defaults_and_where_each_value_came_from(
    tmp_path: Path,
) -> None:
    """--check-config shows no null for unset settings and a source for every setting."""
    config = tmp_path / "gravd.toml"
    config.write_text("drain_timeout = 1.5\n")
    env = {"GRAVD_CONFIG": str(config), "GRAVD_MESH": "lab"}
    result = await run([*GRAVD, "--check-config", "--log-level", "debug"], env=env)
    assert result.code == 0, result.stderr
    effective = json.loads(result.stdout)
    sources = effective.pop("sources")
    assert None not in effective.values()
    assert effective["mdns_service"] == "_grav._tcp.local."
    assert sources["log_level"] == "flag --log-level"
    assert sources["mesh"] == "environment GRAVD_MESH"
    assert sources["drain_timeout"] == f"{config} key 'drain_timeout'"
    assert sources["listen"] == "default"
    assert set(sources) == set(effective)


async def test_dead_after_not_above_ping_interval_names_both_flags() -> None:
    """dead_after <= ping_interval is refused naming each setting's flag, not "from value"."""
    result = await run([*GRAVD, "--check-config", "--ping-interval", "3", "--dead-after", "2"])
    assert result.code == 2
    assert result.stderr.splitlines() == [
        "gravd: invalid dead_after (from flag --dead-after): 2 s must be longer than "
        "ping_interval, 3 s (from flag --ping-interval); a quiet but live peer would be "
        "declared dead"
    ]


async def test_check_config_refuses_a_misspelt_permission_key(tmp_path: Path) -> None:
    """An identity with 'publsh' would publish everything if the key were ignored: refused."""
    auth = tmp_path / "auth.toml"
    auth.write_text(
        '[[identities]]\nname = "app"\ntoken = "t"\npublsh = { allow = ["a.*"], deny = [] }\n'
    )
    result = await run([*GRAVD, "--check-config", "--auth-file", str(auth)])
    assert result.code == 2
    assert "identities[0]: unknown keys ['publsh']" in result.stderr


async def test_check_config_refuses_an_auth_file_that_is_not_utf8(tmp_path: Path) -> None:
    """An auth file in Latin-1 is refused with exit 2 and one line naming auth_file, not a
    traceback."""
    auth = tmp_path / "auth.toml"
    auth.write_bytes(b'[[identities]]\nname = "caf\xe9"\ntoken = "t"\n')
    result = await run([*GRAVD, "--check-config", "--auth-file", str(auth)])
    assert result.code == 2
    assert result.stderr.splitlines() == [
        f"gravd: invalid auth_file (from flag --auth-file): {auth} is not UTF-8 text: 'utf-8' "
        "codec can't decode byte 0xe9 in position 26: invalid continuation byte"
    ]
