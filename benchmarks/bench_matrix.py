"""Orchestration overhead, parallel scheduling and the result cache, on the default
matrix (the sample extension; its CUDA 13 cells build with the cached PyPI
toolchains, the CUDA 12 cells are skipped without a system toolkit).

    python benchmarks/bench_matrix.py [--jobs 1 --jobs 2] [--repeats N] [--append]

Every run is ``kernel-matrix run`` in a fresh process on a copy of the sample
extension whose tree carries a unique marker file, so a "cold" run never meets an
earlier run's cache entries (they are removed at the end); its wall time is taken
from outside, the rest from the cells' results:

- overhead: wall time minus the time spent inside the build tools
  (``CellResult.build_s``: configure + build commands), with J=1 (cells one after
  the other, so every second is either a build tool's or the orchestrator's);
  the orchestrator's own time is broken down by timing its stages in-process
  (``benchmarks/timed_run.py``);
- scheduling: with J workers, wall time against the ideal makespan
  ``max(longest cell, sum of cell durations / J)`` of the same run;
- cache: a second run with nothing changed (per-cell time when answered from the
  cache), then the cells rebuilt after ``touch`` of one source file (mtime only),
  after an edit of one source file, and after a change of one cell's CMake options.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_options, append_entry, median, usable_cpus

sys.path.insert(0, str(ROOT))
from orchestrator.run.cellcache import cache_path

TIMED_RUN = Path(__file__).resolve().parent / "timed_run.py"
EDITED_SOURCE = "csrc/scaled_mm_c3x_sm120.cu"


class Workspace:
    """A copy of the sample extension and of matrix.yaml pointing at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = root / "sample_ext"
        shutil.copytree(ROOT / "examples" / "sample_ext", self.source)
        self.mark()
        data = yaml.safe_load((ROOT / "matrix.yaml").read_text())
        data["project"]["source"] = str(self.source)
        data["families"] = str(self.source / "families.yaml")
        self.data = data
        self.matrix = root / "matrix.yaml"
        self.write_matrix()
        self.keys: set[str] = set()

    def mark(self) -> None:
        """A new unique marker: the tree's content hash changes, every cell is cold."""
        (self.source / "BENCH_MARKER").write_text(uuid.uuid4().hex + "\n")

    def write_matrix(self) -> None:
        self.matrix.write_text(yaml.safe_dump(self.data, sort_keys=False))

    def run(
        self, name: str, jobs: int, *, timed: bool = False, tier: str = "build"
    ) -> dict[str, Any]:
        """One ``kernel-matrix run``; its wall time and its cells' results."""
        out = self.root / f"out-{name}"
        build = self.root / f"build-{name}"
        argv = ["run", str(self.matrix), "--out", str(out), "--build-dir", str(build)]
        argv += ["--jobs", str(jobs), "--tier", tier]
        stages = self.root / f"stages-{name}.json"
        if timed:
            command = [sys.executable, str(TIMED_RUN), str(stages), *argv]
        else:
            command = [sys.executable, "-m", "orchestrator", *argv]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr}")
        cells = []
        for path in sorted((out / "cells").glob("*.json")):
            data = json.loads(path.read_text())
            if data["status"] == "skipped":
                continue
            cells.append(data)
            if data.get("cache_key"):
                self.keys.add(data["cache_key"])
        compiled = Path(EDITED_SOURCE).name + ".o"
        compiling = sum(
            1
            for c in cells
            if not c["cached"]
            and any(
                "Building" in line and compiled in line
                for line in (out / "logs" / f"{c['cell']['id']}.log").read_text().splitlines()
            )
        )
        shutil.rmtree(build, ignore_errors=True)
        result: dict[str, Any] = {
            "name": name,
            "jobs": jobs,
            "wall_s": wall,
            "cells": len(cells),
            "rebuilt": sum(not c["cached"] for c in cells),
            "compiling_edited": compiling,
            "build_s": sum(c["build_s"] for c in cells if not c["cached"]),
            "durations": [c["duration_s"] for c in cells],
            "verdicts": {
                c["cell"]["id"]: sorted(
                    (v["family"], v["device"], v["status"]) for v in c["verdicts"]
                )
                for c in cells
            },
            "load": (load_before, os.getloadavg()[0]),
        }
        if timed and stages.is_file():
            timed_stages = json.loads(stages.read_text())
            total = timed_stages.pop("timed process total (imports + main)")
            result["stages"] = {
                "interpreter start-up (wall time outside the timed process)": wall - total,
                **timed_stages,
                "total (the wall time)": wall,
            }
        return result

    def forget(self) -> None:
        """Remove the cache entries these runs wrote."""
        for key in self.keys:
            for tier in ("build", "configure"):
                shutil.rmtree(cache_path(key, tier), ignore_errors=True)


def cold(space: Workspace, jobs: int, repeat: int) -> dict[str, Any]:
    space.mark()
    run = space.run(f"cold-j{jobs}-{repeat}", jobs, timed=jobs == 1)
    durations = run["durations"]
    run["overhead_s"] = run["wall_s"] - run["build_s"]
    run["overhead_pct"] = 100 * run["overhead_s"] / run["wall_s"]
    run["ideal_s"] = max(max(durations), sum(durations) / jobs)
    run["makespan_ratio"] = run["wall_s"] / run["ideal_s"]
    return run


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, action="append", help="J values (default 1 and 2)")
    parser.add_argument("--repeats", type=int, default=1, help="cold runs per J")
    parser.add_argument("--no-cache-checks", action="store_true")
    add_output_options(parser)
    args = parser.parse_args()
    jobs_list = args.jobs or [1, 2]
    report: dict[str, Any] = {"cold": [], "cache": {}}
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        space = Workspace(Path(tmp))
        try:
            for repeat in range(args.repeats):
                for jobs in jobs_list:
                    run = cold(space, jobs, repeat)
                    report["cold"].append(run)
                    print(json.dumps({k: v for k, v in run.items() if k != "durations"}))
            if not args.no_cache_checks:
                report["cache"] = cache_checks(space, max(jobs_list))
                print(json.dumps(report["cache"]))
        finally:
            space.forget()
    if args.append:
        append(report, args)
    return 0


def cache_checks(space: Workspace, jobs: int) -> dict[str, Any]:
    """Warm run, then one change at a time; how many cells each one rebuilt."""
    space.mark()
    base = space.run("cache-cold", jobs)
    warm = space.run("cache-warm", jobs)
    edited = space.source / EDITED_SOURCE
    os.utime(edited)  # touch: mtime only, same bytes
    touched = space.run("cache-touch", jobs)
    with edited.open("a") as f:
        f.write("// edited by benchmarks/bench_matrix.py\n")
    edit = space.run("cache-edit", jobs)
    # One cell's options: take cu13.0-12.1a out of the product, put it back as an
    # include entry (same id) with one more CMake option.
    space.data.setdefault("exclude", []).append({"cuda": "13.0", "archs": "12.1a"})
    space.data.setdefault("include", []).append(
        {"cuda": "13.0", "archs": "12.1a", "cmake_options": {"SAMPLE_EXT_BENCH_OPTION": "ON"}}
    )
    space.write_matrix()
    option = space.run("cache-option", jobs)
    return {
        "cells": base["cells"],
        "cold_rebuilt": base["rebuilt"],
        "warm_wall_s": warm["wall_s"],
        "warm_rebuilt": warm["rebuilt"],
        "warm_cell_s_median": median(warm["durations"]),
        "warm_cell_s_max": max(warm["durations"]),
        "touch_rebuilt": touched["rebuilt"],
        "edit_rebuilt": edit["rebuilt"],
        "edit_compiling": edit["compiling_edited"],
        "edit_wall_s": edit["wall_s"],
        "option_rebuilt": option["rebuilt"],
        "option_wall_s": option["wall_s"],
    }


def append(report: dict[str, Any], args: argparse.Namespace) -> None:
    body = [
        "| J | cells | wall s | Σ build-tool s | overhead s | overhead % "
        "| ideal makespan s | wall / ideal | load before, after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in report["cold"]:
        # With J > 1 builds overlap: wall - build time says nothing; see wall / ideal.
        overhead = (
            f"{run['overhead_s']:.2f} | {run['overhead_pct']:.2f} %"
            if run["jobs"] == 1
            else "n/a | n/a"
        )
        body.append(
            f"| {run['jobs']} | {run['cells']} | {run['wall_s']:.1f} | {run['build_s']:.1f} "
            f"| {overhead} | {run['ideal_s']:.1f} "
            f"| {run['makespan_ratio']:.3f} | {run['load'][0]:.1f}, {run['load'][1]:.1f} |"
        )
    by_jobs: dict[int, list[dict[str, Any]]] = {}
    for run in report["cold"]:
        by_jobs.setdefault(run["jobs"], []).append(run)
    if args.repeats > 1:
        body += ["", "Medians:", ""]
        for jobs, runs in sorted(by_jobs.items()):
            overhead = (
                f"overhead {median([r['overhead_pct'] for r in runs]):.2f} %, " if jobs == 1 else ""
            )
            body.append(
                f"- J={jobs}: {overhead}wall / ideal makespan "
                f"{median([r['makespan_ratio'] for r in runs]):.3f}"
            )
    timed = [r for r in report["cold"] if "stages" in r]
    if timed:
        stages = timed[-1]["stages"]
        body += [
            "",
            "Where the orchestrator's own time goes (J=1, last cold run; seconds, stages "
            "timed in-process, so the wall time here is the timed process's):",
            "",
            "| stage | s |",
            "| --- | ---: |",
        ]
        body += [f"| {name} | {seconds:.3f} |" for name, seconds in stages.items()]
    cache = report["cache"]
    if cache:
        body += [
            "",
            f"Cache ({cache['cells']} cells, J={max(args.jobs or [1, 2])}): second run with "
            f"nothing changed: {cache['warm_rebuilt']} rebuilt, {cache['warm_wall_s']:.2f} s "
            f"in all, per cell median {cache['warm_cell_s_median']:.3f} s, max "
            f"{cache['warm_cell_s_max']:.3f} s; `touch` of `{EDITED_SOURCE}` (same bytes): "
            f"{cache['touch_rebuilt']} rebuilt; one line appended to it: "
            f"{cache['edit_rebuilt']} rebuilt ({cache['edit_wall_s']:.1f} s), of which "
            f"{cache['edit_compiling']} compile that file; one cell's "
            f"cmake_options changed: {cache['option_rebuilt']} rebuilt "
            f"({cache['option_wall_s']:.1f} s).",
        ]
    append_entry(
        args,
        "matrix: orchestration overhead, scheduling, cache",
        [
            f"- default matrix (`matrix.yaml`, sample extension) on a copy of the source; "
            f"{usable_cpus()} usable CPUs; cold runs (unique source tree), "
            f"{args.repeats} per J",
        ],
        body,
    )


if __name__ == "__main__":
    raise SystemExit(main())
