"""``kernel-matrix check`` on a vLLM wheel against what a build engineer types instead.

    python benchmarks/bench_check.py [--wheel WHEEL] [--rounds N] [--append]

The pipeline (issue 20): extract ``vllm/_C*.so`` from the wheel with Python's
zipfile, ``cuobjdump --dump-elf-symbols`` on each, ``grep -c`` for the families'
names -- one shell, timed as a whole (wall; CPU of the whole process tree, from
``wait4``). Against it, in the same rounds (interleaved, medians of the per-round
ratios):

* check, first run, cold cache: a fresh ``KERNEL_MATRIX_CACHE`` per round, so
  nothing of an earlier read is there;
* check, repeated: the same command again, with the cache the first run left (its
  printed answer, ``orchestrator.cli.answers``);
* check, repeated as a table: the same check without ``--json``, answered from the
  whole result the first run kept (imports, the families' rules and the rendering:
  what a repeated check costs when its printed answer is not there);
* check, first run with ``--jobs 2`` (two reading processes; the default is one);
* the C work a cold check cannot skip, alone (``C_WORK``): inflating the members it
  reads, decompressing the entries it decompresses, one thread, nothing parsed, timed
  inside its process -- with two cores, half of it plus the check's own Python is
  the least a cold check can take.

Each is ``python -m orchestrator check WHEEL --families matrices/vllm.yaml
--devices 9.0,10.0,10.3,12.0,12.1 --json`` (the table without ``--json``) in a fresh interpreter (its start-up and
imports included), with the peak RSS of the process tree (workers included) sampled
every 10 ms. Once, in this process, the verdicts of the lazy read are compared with
a full read's (``check.lazy_read_differences``): a figure of a check that judges
differently would mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, PeakSampler, add_output_options, append_entry, median

sys.path.insert(0, str(ROOT))
from orchestrator.archs import ComputeCapability
from orchestrator.judge.check import CheckResult, check_paths, lazy_read_differences
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.toolchains.cuda import cache_root, cuobjdump

FAMILIES = ROOT / "matrices" / "vllm.yaml"
DEVICES = "9.0,10.0,10.3,12.0,12.1"
GREP = "nvfp4|scaled_mm|Marlin|mla|machete|grouped"

PIPELINE = """
set -e
out=$(mktemp -d)
python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith("vllm/_C") and n.endswith(".so"):
        z.extract(n, sys.argv[2])' "$1" "$out"
for f in "$out"/vllm/_C*.so; do "$2" --dump-elf-symbols "$f" | grep -Ec "$3" || true; done
rm -rf "$out"
"""

# The C work a cold check cannot skip, alone: inflating the members it reads and
# decompressing the entries its lazy read decompresses (every cubin, the PTX a
# requested device would JIT), in one thread, nothing parsed; timed inside the
# process (start-up and imports left out). What the check does beyond it is Python.
C_WORK = """
import json, resource, sys, time, zipfile
from orchestrator.archs import ComputeCapability
from orchestrator.judge.check import library_filter
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.probe import is_shared_object_name
from orchestrator.read.demand import SKIP, Demand
from orchestrator.read.elf import BytesBlob, sections_named
from orchestrator.read.fatbin import FATBIN_SECTION, iter_entries, payload
from orchestrator.read.library import fatbin_ranges
rules = load_families_or_matrix(sys.argv[2])
demand = Demand(tuple(rules), tuple(ComputeCapability.parse(d) for d in sys.argv[3].split(",")))
only = library_filter(rules)
start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
inflated = decompressed = 0
with zipfile.ZipFile(sys.argv[1]) as archive:
    for info in archive.infolist():
        if not is_shared_object_name(info.filename.rsplit("/", 1)[-1]):
            continue
        if only is not None and not only(info.filename):
            continue
        blob = BytesBlob(info.filename, archive.read(info))
        inflated += info.file_size
        for offset, size, align in fatbin_ranges(blob, sections_named(blob, FATBIN_SECTION)):
            entries = list(iter_entries(blob, offset, size, align))
            plan = demand.plan([(entry.target, entry.container) for entry in entries])
            for entry, action in zip(entries, plan):
                if action != SKIP:
                    decompressed += len(payload(blob, entry))
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": cpu,
                  "inflated": inflated, "decompressed": decompressed}))
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall, CPU (the whole tree: wait4 counts the waited-for descendants) and peak
    tree RSS of one command; its stdout."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    with PeakSampler(process.pid) as sampler:
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{argv[:4]} failed ({status})")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": sampler.peak_kib / 1024,
        "out": out,
    }


def check_argv(wheel: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "check", str(wheel), "--families",
            str(FAMILIES), "--devices", DEVICES, "--json", *more]  # fmt: skip


def newest_wheel() -> Path:
    found = sorted((cache_root() / "wheels").glob("vllm-0.33.0-*.whl"))
    if not found:
        raise SystemExit(
            "no vLLM 0.33.0 wheel in ~/.cache/kernel-matrix/wheels: "
            "pip download vllm==0.33.0 --no-deps --only-binary=:all: -d there"
        )
    return found[-1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, help="a vLLM wheel (default: the cached 0.33.0)")
    parser.add_argument("--rounds", type=int, default=5)
    add_output_options(parser)
    args = parser.parse_args()
    wheel = args.wheel or newest_wheel()
    tool = cuobjdump()

    rules = load_families_or_matrix(FAMILIES)
    devices = tuple(ComputeCapability.parse(d) for d in DEVICES.split(","))
    full = check_paths([wheel], rules, devices, lazy=False)
    rows: list[dict[str, dict[str, Any]]] = []
    agree = True
    with tempfile.TemporaryDirectory(prefix="bench-check-") as scratch:
        for round_ in range(args.rounds):
            env = {**os.environ, "KERNEL_MATRIX_CACHE": f"{scratch}/cache-{round_}"}
            pipeline = timed(["bash", "-c", PIPELINE, "pipeline", str(wheel), str(tool), GREP])
            cold = timed(check_argv(wheel), env)
            warm = timed(check_argv(wheel), env)
            table = timed(check_argv(wheel)[:-1], env)
            env = {**os.environ, "KERNEL_MATRIX_CACHE": f"{scratch}/cache-{round_}-jobs"}
            parallel = timed(check_argv(wheel, "--jobs", "2"), env)
            floor = timed([sys.executable, "-c", C_WORK, str(wheel), str(FAMILIES), DEVICES])
            floor.update(json.loads(floor["out"]))  # (its own times: the work alone)
            for run in (cold, warm, parallel):
                lazy = CheckResult.from_json(json.loads(run["out"]))
                differences = lazy_read_differences(lazy, full)
                if differences:
                    agree = False
                    print("lazy and full reads disagree:", differences[:5], file=sys.stderr)
            rows.append(
                {
                    "pipeline": pipeline,
                    "cold": cold,
                    "warm": warm,
                    "table": table,
                    "jobs2": parallel,
                    "floor": floor,
                }
            )
            print(
                f"round {round_ + 1}: pipeline {pipeline['wall_s']:.2f} s "
                f"({pipeline['cpu_s']:.2f} CPU s), check cold {cold['wall_s']:.2f} s "
                f"({cold['cpu_s']:.2f} CPU s, {cold['rss_mb']:.0f} MB), repeated "
                f"{warm['wall_s']:.2f} s ({warm['cpu_s']:.2f} CPU s), as a table "
                f"{table['wall_s']:.2f} s",
                flush=True,
            )

    def ratio(kind: str, measure: str) -> float:
        return median([r["pipeline"][measure] / r[kind][measure] for r in rows])

    def mid(kind: str, measure: str) -> float:
        return median([r[kind][measure] for r in rows])

    body = [
        "| run | wall s | CPU s | peak RSS MB (tree) | pipeline ÷ run, wall | pipeline ÷ run, CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| unzip + cuobjdump --dump-elf-symbols + grep | {mid('pipeline', 'wall_s'):.2f} | "
        f"{mid('pipeline', 'cpu_s'):.2f} | {mid('pipeline', 'rss_mb'):.0f} | 1.0 | 1.0 |",
    ]
    for kind, label in (
        ("cold", "check, first run, cold cache"),
        ("warm", "check, repeated (its printed answer)"),
        ("table", "check, repeated as a table (the kept result)"),
        ("jobs2", "check, first run, cold cache, --jobs 2"),
        ("floor", "its C work alone: inflating, decompressing (one thread, no parsing)"),
    ):
        body.append(
            f"| {label} | {mid(kind, 'wall_s'):.2f} | {mid(kind, 'cpu_s'):.2f} | "
            f"{mid(kind, 'rss_mb'):.0f} | {ratio(kind, 'wall_s'):.2f}× | "
            f"{ratio(kind, 'cpu_s'):.2f}× |"
        )
    body += [
        "",
        f"The C work: {rows[0]['floor']['inflated'] / 1e6:.0f} MB inflated, "
        f"{rows[0]['floor']['decompressed'] / 1e6:.0f} MB decompressed.",
        f"Verdicts of every check run equal to a full read's: {'yes' if agree else 'NO'}.",
    ]
    print("\n".join(body))
    if args.append:
        append_entry(
            args,
            "check vs unzip + cuobjdump (issue 20)",
            [
                f"- wheel: {wheel.name}; families {FAMILIES.relative_to(ROOT)}, devices {DEVICES}",
                f"- {args.rounds} rounds, interleaved; medians (ratios: median of per-round ratios)",
            ],
            body,
        )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
