"""The bridge's settings: what gravd and NatsBridgeConfig refuse, and say why (real gravd)."""

from __future__ import annotations

import pytest

from gravpy.bridge import NatsBridgeConfig
from gravpy.errors import UsageError
from gravpy.testing.gravd import GRAVD, run

NATS = ("--nats", "nats://127.0.0.1:4222")


@pytest.mark.parametrize(
    ("args", "env", "setting", "why"),
    [
        (("--nats-export", "a b"), {}, "nats_export (from flag --nats-export)", "whitespace"),
        (("--nats-export", ""), {}, "nats_export (from flag --nats-export)", "empty"),
        (("--nats-export", "x", "--nats-export", ""), {}, "nats_export", "empty"),
        (
            (),
            {"GRAVD_NATS_EXPORT": "a b"},
            "nats_export (from environment GRAVD_NATS_EXPORT)",
            "whitespace",
        ),
        (("--nats-prefix", "_INBOX"), {}, "nats_prefix (from flag --nats-prefix)", "reply"),
        (("--nats-prefix", "_GRAV_BRIDGE"), {}, "nats_prefix", "announcements"),
        (("--nats-prefix", "$SYS"), {}, "nats_prefix", "NATS's own"),
    ],
)
async def test_gravd_refuses_a_bridge_setting_that_would_be_misread(
    args: tuple[str, ...], env: dict[str, str], setting: str, why: str
) -> None:
    """--check-config exits 2 naming the setting: an export pattern with a space is not split
    into two, an empty one is not dropped, and a prefix that would put the bridge's subjects
    among nats-py's replies, the bridges' announcements or NATS's own is refused."""
    result = await run([*GRAVD, "--check-config", *NATS, *args], env=env)
    assert result.code == 2, result.stdout
    assert result.stderr.startswith(f"gravd: invalid {setting}"), result.stderr
    assert why in result.stderr


async def test_gravd_still_reads_export_patterns_separated_by_commas() -> None:
    """Patterns separated by commas (with spaces around them, or not) are several patterns."""
    args = ("--nats-export", "a.*, b.>", "--nats-export", "c")
    result = await run([*GRAVD, "--check-config", *NATS, *args])
    assert result.code == 0, result.stderr
    assert '"nats_export": [\n    "a.*",\n    "b.>",\n    "c"\n  ]' in result.stdout


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"prefix": "_INBOX"}, "prefix"),
        ({"prefix": "a..b"}, "prefix"),
        ({"prefix": "x" * 256}, "prefix"),
        ({"export": ("a b",)}, "export"),
        ({"export": ("",)}, "export"),
        ({"export": "sensor.>"}, "export"),
    ],
)
def test_an_embedded_bridge_refuses_the_same(options: dict[str, object], why: str) -> None:
    """NatsBridgeConfig refuses what gravd refuses, naming the field."""
    with pytest.raises(UsageError, match=f"NatsBridgeConfig.{why}"):
        NatsBridgeConfig(servers=("nats://127.0.0.1:4222",), **options)  # type: ignore[arg-type]
