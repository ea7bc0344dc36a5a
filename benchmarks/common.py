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
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    """The model name, with its family and model numbers where the name alone is
    ambiguous (a VM's "AMD EPYC" is Zen 2 to Zen 5; their ratios to C tools differ)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


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


def tree_rss_kib(pid: int) -> int:
    """Resident KiB of a process and all its descendants (Linux /proc)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(c) for c in children.read().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class PeakSampler:
    """Samples a process tree's total RSS until stopped; keeps the peak."""

    pid: int
    peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
