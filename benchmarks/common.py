"""What every benchmark records with its figures: the machine, the date, the commit,
the load average (this machine may be shared: figures are ratios taken in one run,
medians of repeats), and how to append an entry to BENCHMARKS.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return (out or "?") + ("+local changes" if dirty else "")


def machine() -> str:
    return (
        f"{cpu_model()}, {usable_cpus()} CPUs, {memory_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return " ".join(["python", shown, *sys.argv[1:]])


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--append", action="store_true", help="append the figures to a file")
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS_MD, help="file to append to (BENCHMARKS.md)"
    )
    parser.add_argument("--note", default="", help="a line to add to the entry")


def append_entry(
    args: argparse.Namespace, title: str, header: Sequence[str], body: Sequence[str]
) -> None:
    """One dated section of BENCHMARKS.md (or ``--output``): machine, commit, load,
    command, then ``body`` (tables, notes)."""
    lines = [
        f"\n## {title} ({datetime.date.today()})\n",
        f"- machine: {machine()}",
        f"- commit `{commit()}`; load average (1, 5, 15 min) {load_average()} at the end",
        f"- command: `{command_line()}`",
        *([f"- {args.note}"] if args.note else []),
        *header,
        "",
        *body,
    ]
    with Path(args.output).open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
