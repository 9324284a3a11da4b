"""bench_auth: what bad handshakes cost a real gravd, and whether a good client still gets in.

A gravd runs in its own process with an auth file listing one key. A client then makes, for each
of three attacks, N attempts on 127.0.0.1 (20 at a time), over WebSocket or, with ``--transport
tcp``, over gravd's TCP listener; each is a full handshake driven by gravpy's own ``PeerProtocol``
over gravpy's own transport:

- unknown key: a fresh Ed25519 key that the auth file does not list (refused ``unknown_key``);
- wrong signature: the listed public key, signed with another private key (``bad_signature``);
- replayed handshake: the HELLO and AUTH of one genuine handshake, sent again on new links
  (refused ``bad_signature``: the signature covered the nonce of the node's first HELLO).

Before the first attack, ``WARM_UP`` unknown-key attempts warm the fresh gravd up (not measured;
/metrics counts them too). Checks: every attempt is refused with the expected reason, and gravd's
/metrics counts them.
Figures: gravd's CPU time per attempt (its utime+stime from /proc, so the loop time it spent),
attempts per second, and how long a legitimate app takes to attach while each attack runs.

``--against DIR`` compares two source trees on a shared, noisy machine: a gravd from this tree and
one from DIR (a checkout of the code before a change, run with ``PYTHONPATH=DIR``) take the
attacks in alternating batches of 100, so both see the same load; it reports gravd CPU per
attempt for each (``--rounds`` batches per attack and tree).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import Machine, finish, options, say, sizes_for, table
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gravpy
from gravpy.errors import LinkClosedError
from gravpy.identity import keygen, load_credentials
from gravpy.plugins import Link
from gravpy.proto import NodeInfo, PeerProtocol, Rejected, decode_frame
from gravpy.proto.frames import Reject
from gravpy.proto.handshake import Credentials
from transports.tcp import TcpTransport
from transports.websocket import WebSocketTransport

CONCURRENCY = 20
# attempts made (and refused) before the first measured attack, as --against's round 0: a fresh
# gravd's first connections pay one-off costs (lazy imports, caches), not a per-attempt cost
WARM_UP = 50
SCHEMES = {"websocket": "ws", "tcp": "tcp"}  # --transport: the scheme of gravd's endpoint dialled


@dataclass(frozen=True)
class Sizes:
    attempts: int


@dataclass
class Report:
    machine: dict[str, object]
    attempts: int
    cases: list[dict[str, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def dialled(url: str) -> AsyncIterator[Link]:
    """A link to ``url`` by gravpy's own transport for its scheme (ws:// or tcp://)."""
    transport = TcpTransport() if url.startswith("tcp:") else WebSocketTransport()
    link = await transport.dial(url, timeout=10)
    try:
        yield link
    finally:
        await link.close()


async def attempt(url: str, creds: Credentials | None, replay: list[bytes] | None) -> str:
    """One handshake; the reason the node gave for refusing it ("" if it was not refused)."""
    loop = asyncio.get_running_loop()
    proto = PeerProtocol(
        NodeInfo(os.urandom(8).hex(), role="leaf"),
        initiator=True,
        now=loop.time(),
        nonce=os.urandom(16),
        credentials=creds,
    )
    async with dialled(url) as link:
        outgoing = replay if replay is not None else proto.data_to_send()
        for frame in outgoing:
            await link.send(frame)
        with contextlib.suppress(LinkClosedError):
            while True:
                raw = await link.recv()
                if replay is not None:  # our protocol object did not send these frames: read
                    answer = decode_frame(raw)
                    if isinstance(answer, Reject):
                        return answer.reason
                    continue
                for event in proto.receive_frame(raw, loop.time()):
                    if isinstance(event, Rejected) and event.by_remote:
                        return event.reason
                # a node that refuses at HELLO closes before our AUTH: its REJECT is still read
                with contextlib.suppress(LinkClosedError):
                    for frame in proto.data_to_send():
                        await link.send(frame)
    return ""


async def capture(url: str, creds: Credentials) -> list[bytes]:
    """The HELLO and AUTH a genuine app sends in one handshake (to replay them later)."""
    loop = asyncio.get_running_loop()
    proto = PeerProtocol(
        NodeInfo("replayed-app", role="leaf"),
        initiator=True,
        now=loop.time(),
        nonce=os.urandom(16),
        credentials=creds,
    )
    sent = proto.data_to_send()
    async with dialled(url) as link:
        await link.send(sent[0])
        while len(sent) < 2:
            proto.receive_frame(await link.recv(), loop.time())
            sent += proto.data_to_send()
    return sent[:2]


async def flood(n: int, one: Callable[[], Awaitable[str]]) -> list[str]:
    """``n`` attempts, ``CONCURRENCY`` at a time; their refusal reasons."""
    reasons: list[str] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run() -> None:
        async with gate:
            reasons.append(await one())

    await asyncio.gather(*(run() for _ in range(n)))
    return reasons


async def good_attach(url: str, key: Path) -> float:
    """Seconds a listed app takes to attach."""
    started = time.perf_counter()
    async with gravpy.connect(url, identity_file=key, timeout=10):
        return time.perf_counter() - started


async def start_gravd(
    auth: Path, data: Path, tree: str | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    """A gravd; from the source tree ``tree`` (first on its path) when given."""
    argv = [sys.executable, "-m", "gravpy.daemon.main", "--listen", "127.0.0.1:0"]
    argv += ["--monitor", "127.0.0.1:0", "--log-format", "json", "--discovery", "none"]
    argv += ["--auth-file", str(auth), "--data-dir", str(data), "--log-level", "info"]
    env = None if tree is None else {**os.environ, "PYTHONPATH": tree}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tree
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise RuntimeError("gravd exited before it listened")
                if line.startswith(b"{") and json.loads(line).get("event") == "listening":
                    return proc, json.loads(line)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def refusal_metrics(monitor: str) -> dict[str, float]:
    reader, writer = await asyncio.open_connection(*monitor.rsplit(":", 1))
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("gravd_handshakes_rejected_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def endpoint(listening: dict[str, object], scheme: str) -> str:
    """gravd's first endpoint of ``scheme`` (``ws`` or ``tcp``)."""
    endpoints = listening["endpoints"]
    assert isinstance(endpoints, list)
    found = [str(e) for e in endpoints if str(e).startswith(f"{scheme}://")]
    if not found:
        raise RuntimeError(f"gravd listens on no {scheme}:// endpoint: {endpoints}")
    return found[0]


def _listed_app() -> tuple[Path, Credentials, Path]:
    """A temp dir with an app key pair and an auth file listing it: (dir, credentials, file)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_auth-"))
    key = tmp / "app.key"
    keygen(key)
    auth = tmp / "auth.toml"
    auth.write_text(
        f'[[identities]]\nname = "app"\npublic_key = "{(tmp / "app.key.pub").read_text().strip()}"\n'
    )
    return tmp, load_credentials(key), auth


async def measure(sizes: Sizes, report: Report, scheme: str) -> None:
    tmp, listed, auth = _listed_app()
    proc, listening = await start_gravd(auth, tmp / "data")
    assert proc.stdout is not None
    logs = asyncio.ensure_future(proc.stdout.read())  # keep reading gravd's log: never let it block
    try:
        url = endpoint(listening, scheme)
        replayed = await capture(url, listed)
        await flood(WARM_UP, lambda: attempt(url, unknown(), None))  # not measured: see WARM_UP
        forger = Ed25519PrivateKey.generate()
        cases: list[tuple[str, str, Callable[[], Awaitable[str]]]] = [
            ("unknown key", "unknown_key", lambda: attempt(url, unknown(), None)),
            (
                "wrong signature",
                "bad_signature",
                lambda: attempt(url, Credentials(listed.public_key, forger.sign), None),
            ),
            ("replayed handshake", "bad_signature", lambda: attempt(url, None, replayed)),
        ]
        rows = []
        for name, reason, one in cases:
            before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            attach = asyncio.ensure_future(flood(sizes.attempts, one))
            await asyncio.sleep(0.2)  # the flood is under way: a good app attaches meanwhile
            good = await good_attach(url, tmp / "app.key")
            reasons = await attach
            wall = time.perf_counter() - started
            cpu = cpu_seconds(proc.pid) - before
            refused = sum(r == reason for r in reasons)
            if refused != sizes.attempts:
                report.failures.append(f"{name}: {refused}/{sizes.attempts} refused as {reason}")
            case = {
                "case": name,
                "refused": refused,
                "gravd_cpu_ms_per_attempt": 1000 * cpu / sizes.attempts,
                "attempts_per_s": sizes.attempts / wall,
                "good_attach_ms": 1000 * good,
            }
            report.cases.append(case)
            rows.append(
                [
                    name,
                    f"{refused}/{sizes.attempts}",
                    f"{case['gravd_cpu_ms_per_attempt']:.2f}",
                    f"{case['attempts_per_s']:.0f}",
                    f"{case['good_attach_ms']:.0f}",
                ]
            )
        headers = ["attack", "refused", "gravd CPU ms/attempt", "attempts/s", "good attach ms"]
        say(table(headers, rows))
        counted = await refusal_metrics(str(listening["monitor"]))
        say(f"  /metrics gravd_handshakes_rejected_total: {counted}")
        expected = {"unknown_key": WARM_UP + sizes.attempts, "bad_signature": 2 * sizes.attempts}
        for reason, n in expected.items():
            if counted.get(reason) != n:
                report.failures.append(f"/metrics counts {counted.get(reason)} {reason}, not {n}")
    finally:
        proc.terminate()
        await proc.wait()
        await logs


async def compare(against: str, rounds: int, scheme: str) -> None:
    """gravd CPU per refused attempt of this tree and of ``against``, in alternating batches."""
    tmp, listed, auth = _listed_app()
    trees = {"this tree": None, against: against}
    nodes: dict[str, tuple[asyncio.subprocess.Process, str, list[bytes], asyncio.Future[bytes]]]
    nodes = {}
    try:
        for name, tree in trees.items():
            proc, listening = await start_gravd(auth, tmp / f"data{len(nodes)}", tree)
            assert proc.stdout is not None
            url = endpoint(listening, scheme)
            logs = asyncio.ensure_future(proc.stdout.read())
            nodes[name] = (proc, url, await capture(url, listed), logs)
        forger = Ed25519PrivateKey.generate()
        cases: dict[str, Callable[[str, list[bytes]], Awaitable[str]]] = {
            "unknown key": lambda url, _: attempt(url, unknown(), None),
            "wrong signature": lambda url, _: attempt(
                url, Credentials(listed.public_key, forger.sign), None
            ),
            "replayed handshake": lambda url, replay: attempt(url, None, replay),
        }
        cpu = {(name, case): 0.0 for name in nodes for case in cases}
        for r in range(rounds + 1):  # round 0 warms both up and is not counted
            for case, one in cases.items():
                for name in list(nodes)[:: 1 if r % 2 else -1]:
                    proc, url, replay, _ = nodes[name]
                    before = cpu_seconds(proc.pid)
                    await flood(100, lambda: one(url, replay))  # noqa: B023  # awaited at once
                    cpu[(name, case)] += (cpu_seconds(proc.pid) - before) if r else 0.0
        rows = [
            [case, *(f"{10 * cpu[(name, case)] / rounds:.3f}" for name in nodes)] for case in cases
        ]
        say(table(["attack", *(f"{n}: gravd CPU ms/attempt" for n in nodes)], rows))
    finally:
        for proc, _, _, output in nodes.values():
            proc.terminate()
            await proc.wait()
            await output


def unknown() -> Credentials:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Credentials(raw, key.sign)


def main() -> int:
    parser = options(__doc__)
    parser.add_argument("--against", metavar="DIR", help="compare with the gravd of source DIR")
    parser.add_argument("--rounds", type=int, default=20, help="with --against: batches of 100")
    parser.add_argument(
        "--transport", choices=sorted(SCHEMES), default="websocket", help="how attempts dial"
    )
    args = parser.parse_args()
    scheme = SCHEMES[args.transport]
    if args.against:
        say(
            f"bench_auth: this tree against {args.against}, {args.rounds} x 100 attempts each, "
            f"over {args.transport}"
        )
        asyncio.run(compare(args.against, args.rounds, scheme))
        return 0
    sizes = sizes_for(args, Sizes(attempts=1000), Sizes(attempts=50))
    report = Report(machine=dataclasses.asdict(Machine.here()), attempts=sizes.attempts)
    say(
        f"bench_auth: {sizes.attempts} attempts per attack, {CONCURRENCY} at a time, "
        f"over {args.transport}"
    )
    asyncio.run(measure(sizes, report, scheme))
    return finish(report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
