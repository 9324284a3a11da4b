"""What every benchmark script shares: its options, the machine it ran on, tables, and the ending.

A script measures and checks; this module only parses, formats and reports. The flow is the same
in each: ``options()`` builds the parser (``--quick`` and ``--json`` always; ``--messages``,
``--runs`` and ``--logs`` for the scripts that start processes), ``sizes_for()`` turns the options
into the script's frozen ``Sizes``, each section prints a ``table()`` as soon as it is measured,
and ``finish()`` writes the JSON, lists the failed checks and gives the exit status: 0, or 1 when a
check failed (a figure from a run that lost a message is not valid). A missed performance target is
shown in the tables and is not a failure.

Import it as ``from _common import ...``: the scripts run as ``python benchmarks/<script>.py``, so
``benchmarks/`` is the first entry of ``sys.path``. Nothing here imports from ``tests/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar


def say(*lines: str) -> None:
    """Print ``lines`` and flush (the output of a long run shows as it goes)."""
    print(*lines, sep="\n", flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return indent + "   ".join(parts).rstrip()

    rule = indent + "   ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def count(value: float) -> str:
    """A rate or a size as a whole number with thousands separators."""
    return f"{value:,.0f}"


def median(values: Iterable[float]) -> float:
    """The median, or NaN when there is no value (no valid run)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def best_rate(op: Callable[[], object], ops: int, runs: int) -> float:
    """Calls of ``op`` per second: the best of ``runs`` timed loops of ``ops`` calls."""
    best = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(ops):
            op()
        best = max(best, ops / (time.perf_counter() - start))
    return best


@dataclasses.dataclass(frozen=True)
class Machine:
    """Where a benchmark ran; every report records it."""

    python: str
    implementation: str
    platform: str
    cpus: int | None

    @classmethod
    def here(cls) -> Machine:
        return cls(
            python=platform.python_version(),
            implementation=platform.python_implementation(),
            platform=platform.platform(),
            cpus=os.cpu_count(),
        )

    def describe(self) -> str:
        return f"Python {self.python} ({self.implementation}), {self.platform}, {self.cpus} CPUs"


# -- options -------------------------------------------------------------------------------------


def options(
    doc: str | None, *, quick: bool = True, processes: bool = False
) -> argparse.ArgumentParser:
    """The parser every script starts from: ``--json``, ``--quick`` unless the script has no smaller
    sizes, and with ``processes`` the options of the scripts that start process pairs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    if quick:
        parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    if processes:
        parser.add_argument("--messages", type=int, help="messages per throughput run")
        parser.add_argument("--runs", type=int, help="throughput runs per system")
        parser.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    return parser


S = TypeVar("S")  # a script's frozen Sizes dataclass


def sizes_for(args: argparse.Namespace, full: S, quick: S) -> S:
    """``quick`` or ``full`` by ``--quick``, with ``--messages`` and ``--runs`` (if given) applied."""
    sizes = quick if args.quick else full
    changes = {
        name: getattr(args, name, None)
        for name in ("messages", "runs")
        if getattr(args, name, None) is not None
    }
    return dataclasses.replace(sizes, **changes)  # type: ignore[type-var]


def finish(report: Any, json_path: str | None) -> int:
    """Write ``report`` (a dataclass with ``failures``) as JSON if asked; list the failures.

    The exit status: 1 if a check failed (its figures are not valid), else 0.
    """
    if json_path:
        Path(json_path).write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
        say("", f"results written to {json_path}")
    if report.failures:
        say(
            "",
            "CHECKS FAILED (these figures are not valid):",
            *(f"  - {f}" for f in report.failures),
        )
        return 1
    return 0
