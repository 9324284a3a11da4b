"""gravctl's command line: the global options, one sub-parser per command, the exit codes.

Global options (``--url``, ``--monitor``, ``--mesh-key-file``, ``-v``, ``--connect-timeout``) are
declared twice: on the top parser with their real defaults, and on every sub-parser with
``argparse.SUPPRESS`` defaults, so they work before or after the command (``gravctl pub --url U
a.b hi``) and a sub-parser that did not see one leaves the top parser's value alone.

Every sub-parser's help ends with the words it uses (TYPE, DATA, PATTERN, the wildcards), its
examples, if it has some, and its exit codes, one per line, from the one table ``EXIT_CODES``
(worded for the command where it means something else there: ``peers`` reads no node link).
A command whose one-line help says too little has a description of its own (``DESCRIPTIONS``):
what it reads, what it prints.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Final

__all__ = [
    "DEFAULT_MONITOR",
    "EXIT_CONNECT",
    "EXIT_INTERRUPTED",
    "EXIT_NO_RESPONDERS",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
]

EXIT_OK: Final = 0
EXIT_TIMEOUT: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_RESPONDERS: Final = 3
EXIT_CONNECT: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report Ctrl-C
DEFAULT_URL: Final = "ws://127.0.0.1:8080/meta/message"
DEFAULT_MONITOR: Final = "127.0.0.1:8222"

EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_TIMEOUT: "no reply (req): timed out, or the link that could answer closed; bench: "
    "messages or replies missing",
    EXIT_USAGE: "bad usage: arguments, type, pattern, header, mesh key file, data too large",
    EXIT_NO_RESPONDERS: "no responders: no pod on the mesh wants the type (pub: none delivered)",
    EXIT_CONNECT: "cannot connect: refused, unreachable, rejected by the node, or the link "
    "was lost; or the node's rules deny the publish or subscribe (permission denied)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT); SIGTERM stops sub and reply with 0",
}

WORDS: Final = {
    "TYPE": "a message type: dot-separated tokens, e.g. demo.hello (no spaces, no * or >)",
    "PATTERN": "a type pattern: a TYPE whose tokens may be '*' (exactly one token) or, last, "
    "'>' (one or more tokens): 'demo.*' matches demo.a, 'demo.>' matches demo.a.b",
    "DATA": "the message data, as text; '-' reads it from standard input",
}

_COMMAND_WORDS: Final = {
    "peers": (),
    "keygen": (),
    "pub": ("TYPE", "DATA"),
    "sub": ("PATTERN",),
    "req": ("TYPE", "DATA"),
    "reply": ("PATTERN", "DATA"),
    "bench": ("TYPE",),
}
_COMMAND_CODES: Final = {
    "pub": (EXIT_OK, EXIT_USAGE, EXIT_NO_RESPONDERS, EXIT_CONNECT, EXIT_INTERRUPTED),
    "sub": (EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_INTERRUPTED),
    "req": (EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, EXIT_NO_RESPONDERS, EXIT_CONNECT, EXIT_INTERRUPTED),
    "reply": (EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_INTERRUPTED),
    "peers": (EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_INTERRUPTED),
    "keygen": (EXIT_OK, EXIT_USAGE),
    "bench": (
        EXIT_OK,
        EXIT_TIMEOUT,
        EXIT_USAGE,
        EXIT_NO_RESPONDERS,
        EXIT_CONNECT,
        EXIT_INTERRUPTED,
    ),
}
# what a code means for a command where the general words would mislead
_COMMAND_CODE_WORDS: Final = {
    "peers": {
        EXIT_USAGE: "bad usage: an unknown option or a bad value",
        EXIT_CONNECT: "cannot read the monitor: refused, unreachable, timed out "
        "(--connect-timeout), or it answered but not with gravd's node document",
    },
    "keygen": {
        EXIT_OK: "success: the key pair is written, the public key line printed",
        EXIT_USAGE: "PATH or PATH.pub exists (neither is overwritten: nothing is written), PATH is "
        "a directory, or cannot be written (no such directory, no permission)",
    },
}
DESCRIPTIONS: Final = {
    "peers": """\
Show the node and its links. Reads the node document (GET /v1/node) from the node's monitoring
port, --monitor (not --url: nothing attaches to the node, so no mesh key or identity is needed),
and prints it as a table: this node first, then its peers (other gravd), then its leaves (the
programs attached to it, oldest first, every one of them):

  NODE       the node's uuid ("(this node)" on the first row)
  ROLE       peer (another gravd) or leaf (a program attached to this node)
  NAME       the name a program gave when it attached (a gravd peer says gravd); - if none
  STATE      this node's: starting, serving or draining; a link's: open once its handshake is
             done
  ENDPOINT   the URL the remote states in its handshake, else the address it connects from
             (this node: the URLs it listens at)
  IN, OUT    messages received and sent on the link since it opened (this node: since start)
  BYTES_IN, BYTES_OUT
             bytes of the frames received and written (K, M, G: powers of 1024)
  DROPPED    messages that could not be sent on the link (this node: every message it dropped)
  QUEUED     messages waiting in the link's send queue

then one line: the mesh, how many peers and leaves, the node's uptime and gravpy version. Every
field, in JSON: curl http://127.0.0.1:8222/v1/node (docs/operations.md).""",
    "keygen": """\
Write a new Ed25519 identity key pair and print its public key. The private key goes to PATH
(PEM, unencrypted, mode 0600), the public key line to PATH.pub, and that line,
ed25519:<base64>, to standard output. keygen never overwrites either file: if one exists it
writes nothing and exits 2. Nothing is sent anywhere: keygen needs no node.

The private key signs the handshakes of the program or node that holds it: give PATH to gravctl
--identity, gravd --identity, or gravpy.connect(url, identity_file=PATH). The public key line is
what an auth file (gravd --auth-file) lists as an identity's public_key, to admit it and say what
it may publish and subscribe to (docs/security.md).""",
}
EXAMPLES: Final = {
    "peers": """\
  gravctl peers                                the node on this machine (127.0.0.1:8222)
  gravctl peers --monitor 10.0.0.5:8222        another node, by its monitoring address
  GRAVCTL_MONITOR=10.0.0.5:8222 gravctl peers  the same, from the environment""",
    "keygen": """\
  gravctl keygen /etc/gravd/node-a.key         prints ed25519:...; node-a.key.pub holds it too
  gravctl keygen ~/.config/sensors.key         a key for the sensors app, used as:
  gravctl --identity ~/.config/sensors.key pub sensor.temp 21.5""",
}
EVENTS_HELP: Final = "list, follow or mark the events gravd keeps"
CHECK_EPILOG: Final = """\
exit codes (Nagios plugin convention):
  0  OK: serving, and within the thresholds given
  1  WARNING: fewer open peers than --warn-peers, --warn-drops drops or more, or a
     NATS bridge not connected (--bridge-down)
  2  CRITICAL: not serving (down or draining), fewer peers than --crit-peers, or
     --crit-drops drops or more (bad usage also exits 2, as argparse does)
  3  UNKNOWN: the monitor cannot be read
"""
ENVIRONMENT: Final = """\
The node comes from --url, else GRAVCTL_URL, else ws://127.0.0.1:8080/meta/message; the
monitor (peers, check) from --monitor HOST:PORT or URL, else GRAVCTL_MONITOR, else
127.0.0.1:8222. Global options may come before or after the command.
"""


def epilog(command: str | None = None) -> str:
    """The help text after the options: the words used, examples, the exit codes one per line,
    and where the node comes from (not for ``keygen``, which needs none)."""
    lines: list[str] = []
    for word in _COMMAND_WORDS.get(command or "", ("TYPE", "PATTERN", "DATA")):
        lines.append(f"  {word:8} {WORDS[word]}")
    codes = _COMMAND_CODES.get(command or "", tuple(EXIT_CODES))
    words = {**EXIT_CODES, **_COMMAND_CODE_WORDS.get(command or "", {})}
    parts = ["arguments:\n" + "\n".join(lines)] if lines else []
    if command in EXAMPLES:
        parts.append("examples:\n" + EXAMPLES[command])
    parts.append("exit codes:\n" + "\n".join(f"  {c:<3} {words[c]}" for c in codes))
    if command != "keygen":
        parts.append(ENVIRONMENT)
    return "\n\n".join(parts)


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes; on sub-parsers their defaults are SUPPRESS."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    env = os.environ
    parser.add_argument(
        "--url", default=default(env.get("GRAVCTL_URL", DEFAULT_URL)), help="the node to attach to"
    )
    parser.add_argument(
        "--monitor",
        default=default(env.get("GRAVCTL_MONITOR", DEFAULT_MONITOR)),
        metavar="HOST:PORT",
        help="the node's monitoring address (peers, check); a URL works too",
    )
    parser.add_argument(
        "--mesh-key-file",
        default=default(env.get("GRAVCTL_MESH_KEY_FILE")),
        metavar="PATH",
        help="the mesh key, when the node uses one (env GRAVCTL_MESH_KEY_FILE)",
    )
    parser.add_argument(
        "--identity",
        default=default(env.get("GRAVCTL_IDENTITY")),
        metavar="PATH",
        help="an Ed25519 key from 'gravctl keygen' to sign the handshake with (env GRAVCTL_IDENTITY)",
    )
    for name, what in (
        ("ca", "PEM CA certificates the node's TLS certificate must be signed by (wss://, "
         "https://, tls://; default: the system's trust store)"),
        ("cert", "a PEM client certificate to show a node that requires one (mTLS)"),
        ("key", "the PEM private key of --tls-cert"),
    ):  # fmt: skip
        parser.add_argument(
            f"--tls-{name}",
            default=default(env.get(f"GRAVCTL_TLS_{name.upper()}")),
            metavar="FILE",
            help=f"{what} (env GRAVCTL_TLS_{name.upper()})",
        )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log link events (connects, drops) to stderr",
    )
    parser.add_argument(
        "--connect-timeout", type=seconds, default=default(5.0), metavar="S", help="default 5"
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """gravctl's parser; given the command line, it skips what that line cannot use."""
    parser = argparse.ArgumentParser(
        prog="gravctl",
        description="Talk to a running gravd: pub, sub, req, reply, peers, bench, check, events.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gravctl {_version()}")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _pub(_command(commands, "pub", "publish a message"))
    _sub(_command(commands, "sub", "print the messages matching a pattern"))
    _req(_command(commands, "req", "send a request, print the reply (or several)"))
    _reply(_command(commands, "reply", "answer every request with DATA or a command's output"))
    _command(commands, "peers", "show the node and its links (reads --monitor)")
    _bench(_command(commands, "bench", "measure pub/sub throughput and req/reply latency"))
    _check(commands)
    keys = commands.add_parser(
        "keygen",
        help="write a new Ed25519 identity key pair",
        description=DESCRIPTIONS["keygen"],
        epilog=epilog("keygen"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument(
        "path",
        metavar="PATH",
        help="where to write the private key (mode 0600; ~ is expanded); the public key goes to "
        "PATH.pub",
    )
    _events(commands, full=argv is None or "events" in argv)
    return parser


def _events(commands: argparse._SubParsersAction[argparse.ArgumentParser], full: bool) -> None:
    """``gravctl events`` (gravpy.cli.events), with the global options after it too.

    Its options need ``gravpy.events`` (about 0.1 s to import), so unless the command line may
    be an ``events`` one (``full``), only its name and help line are added.
    """
    if not full:
        commands.add_parser("events", help=EVENTS_HELP)
        return
    from gravpy.cli.events import add_events_command

    add_events_command(commands)
    _global_options(commands.choices["events"], top=False)


def _command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str) -> argparse.ArgumentParser:  # fmt: skip
    sub = commands.add_parser(
        name,
        help=help,
        description=DESCRIPTIONS.get(name, help[0].upper() + help[1:] + "."),
        epilog=epilog(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(sub, top=False)
    return sub


def _header_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=header,
        default=[],
        metavar="K:V",
        help=f"a header on {what}; repeat for several",
    )


def _pub(pub: argparse.ArgumentParser) -> None:
    pub.add_argument("type", metavar="TYPE", type=msg_type)
    pub.add_argument("data", metavar="DATA")
    pub.add_argument("--count", type=positive, default=1, metavar="N", help="send it N times")
    pub.add_argument(
        "--sleep", type=seconds, metavar="S", help="wait S seconds between messages (with --count)"
    )
    _header_option(pub, "the message")


def _sub(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("pattern", metavar="PATTERN", type=pattern)
    sub.add_argument("--count", type=positive, metavar="N", help="exit after N messages")
    shape = sub.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print one JSON object per message")
    shape.add_argument("--raw", action="store_true", help="print only the data of each message")
    sub.add_argument("--headers", action="store_true", help="print each message's headers too")
    share = sub.add_mutually_exclusive_group()  # (replaying what the group already shared)
    share.add_argument(
        "--group", type=group, metavar="NAME", help="share messages with the group (one each)"
    )
    share.add_argument(
        "--replay",
        action="store_true",
        help="first print the matching messages in the node's replay buffer (oldest first), "
        "then the live ones",
    )


def _req(req: argparse.ArgumentParser) -> None:
    req.add_argument("type", metavar="TYPE", type=msg_type)
    req.add_argument("data", metavar="DATA")
    req.add_argument(
        "--timeout", type=seconds, default=5.0, metavar="S", help="wait at most S s (default 5)"
    )
    many = req.add_mutually_exclusive_group()
    many.add_argument(
        "--replies", type=positive, default=1, metavar="N", help="print up to N replies"
    )
    many.add_argument(
        "--replies-all",
        action="store_true",
        help="print every reply until none comes for --reply-timeout s (or --timeout ends)",
    )
    req.add_argument(
        "--reply-timeout",
        type=seconds,
        default=0.3,
        metavar="S",
        help="with several replies: stop after S s without a new one (default 0.3)",
    )
    _header_option(req, "the request")


def _reply(reply: argparse.ArgumentParser) -> None:
    reply.add_argument("pattern", metavar="PATTERN", type=pattern)
    reply.add_argument("data", metavar="DATA", nargs="?", help="the reply (or use --command)")
    reply.add_argument(
        "--command",
        dest="shell_command",
        metavar="CMD",
        help="answer with CMD's standard output; the request's data is its standard input and "
        "{{N}} is the N-th token of the request's type, e.g. 'echo {{2}}'",
    )
    reply.add_argument("--count", type=positive, metavar="N", help="exit after N requests")
    reply.add_argument(
        "--group",
        type=group,
        default="gravctl.reply",
        metavar="NAME",
        help="responders in one group share requests, one answer each (default gravctl.reply, "
        "like nats reply's queue)",
    )
    _header_option(reply, "each reply")


def _bench(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("type", metavar="TYPE", type=msg_type, nargs="?", default="bench.gravctl")
    bench.add_argument("--msgs", type=positive, default=10_000, metavar="N", help="default 10000")
    bench.add_argument(
        "--size", type=whole, default=128, metavar="BYTES", help="data per message (default 128)"
    )
    bench.add_argument("--requests", type=positive, default=1_000, metavar="N", help="default 1000")


def _check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="Nagios-style check of a node's health, peers and drops (reads --monitor)",
        description="Check a node through its monitor: health, peer count, dropped messages.",
        epilog=CHECK_EPILOG + "\n" + ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(check, top=False)
    for level in ("warn", "crit"):
        check.add_argument(
            f"--{level}-peers",
            type=whole,
            default=0,
            metavar="N",
            help=f"{'WARNING' if level == 'warn' else 'CRITICAL'} below N open peers (default 0)",
        )
        check.add_argument(
            f"--{level}-drops",
            type=whole,
            metavar="N",
            help=f"{'WARNING' if level == 'warn' else 'CRITICAL'} at N or more messages dropped "
            "since the node started, its bridges' losses included (default: drops are not "
            "checked)",
        )
    check.add_argument(
        "--bridge-down",
        choices=("ok", "warning", "critical"),
        default="warning",
        help="the status when a NATS bridge of the node is not connected (default warning)",
    )


# -- argument types --------------------------------------------------------------------------------


def msg_type(text: str) -> str:
    from gravpy.errors import UsageError
    from gravpy.message import validate_type

    try:
        return validate_type(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pattern(text: str) -> str:
    from gravpy.errors import UsageError
    from gravpy.filter import Pattern

    try:
        return Pattern(text).text
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def group(text: str) -> str:
    from gravpy.errors import UsageError
    from gravpy.groups import check_group

    try:
        return check_group(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header KEY:VALUE")
    return key.strip(), value.strip()


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gravpy")
    except PackageNotFoundError:
        return "unknown"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; argparse exits 2 with usage on an error, 0 after --help."""
    return build_parser(argv).parse_args(argv)
