"""Speed and memory of the native probe against cuobjdump, on real vLLM libraries.

    python benchmarks/bench_probe.py [--lib WHEEL:MEMBER ...] [--runs N] [--check] [--append]

Libraries come from the wheel cache (``~/.cache/kernel-matrix/wheels``; ``pip
download vllm==X --no-deps -d`` there); each is extracted once to a temp dir so that
both tools read the same file. Default: the largest library of the newest cached
wheel, vLLM 0.19.0's ``_C.abi3.so`` (462 MB, the memory figure) and 0.33.0's
``_C_stable_libtorch.abi3.so`` (the earlier entry of BENCHMARKS.md).

Per library, ``--runs`` rounds, each running both tools back to back (ratios are
taken within a round, then the median): the native probe's full inventory in a
fresh interpreter, its heap set as the probe verb sets it (``probe()`` time and the
whole process's wall time, CPU time of it and its worker processes, peak RSS of the
process tree sampled every 10 ms), and
``cuobjdump --dump-elf-symbols`` (its cheapest complete listing: symbols only, no
instruction counts, no PTX). ``--check`` also times the cuobjdump *engine*, which
yields the same inventory (``-elf`` and ``-ptx`` dumps parsed), once, and says
whether both inventories are identical. ``--cubloaty PATH`` also times the FlashInfer
team's ``cubloaty`` (a Python tool on PyPI that lists kernels per arch from the same
fatbins; installed by hand, e.g. ``python -m venv /tmp/cub && /tmp/cub/bin/pip install
--pre cubloaty``) with ``--format json`` in the same rounds, and compares the two
inventories: distinct kernel names per code-object arch, SASS and PTX, must be equal
(cubloaty counts a name once per arch; the inventory lists each copy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, PeakSampler, add_output_options, append_entry, median, usable_cpus

sys.path.insert(0, str(ROOT))
from orchestrator.toolchains.cuda import cache_root, cuobjdump

NATIVE = """
import json, resource, sys, time
start = time.perf_counter()
from orchestrator.probe import probe
from orchestrator.common.heap import keep_freed_memory
imported = time.perf_counter()
keep_freed_memory()  # (as the probe verb does)
options = {} if sys.argv[2] == "default" else {"jobs": int(sys.argv[2])}
inventory = probe([sys.argv[1]], **options)
done = time.perf_counter()
digest = ""
per_arch = {}
for library in inventory.libraries:
    for kind, objects in (("sass", library.cubins), ("ptx", library.ptx)):
        for code in objects:
            per_arch.setdefault(f"{kind} {code.arch.name}", set()).update(k.mangled for k in code.kernels)
if sys.argv[3] == "hash":
    import hashlib
    text = json.dumps(inventory.to_json(), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "probe_s": done - imported, "import_s": imported - start, "digest": digest,
    "per_arch": {arch: len(names) for arch, names in sorted(per_arch.items())},
    "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    "main_rss_mb": me.ru_maxrss / 1024, "worker_rss_mb": kids.ru_maxrss / 1024,
}))
"""

ENGINE = """
import hashlib, json, sys, time
from orchestrator.probe import probe
start = time.perf_counter()
inventory = probe([sys.argv[1]], engine="cuobjdump")
seconds = time.perf_counter() - start
text = json.dumps(inventory.to_json(), sort_keys=True)
print(json.dumps({"seconds": seconds, "digest": hashlib.sha256(text.encode()).hexdigest()}))
"""


def native_run(path: Path, jobs: str, digest: bool = False) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", NATIVE, str(path), jobs, "hash" if digest else "-"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    with PeakSampler(process.pid) as sampler:
        out, _ = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"native probe of {path} failed ({process.returncode})")
    result: dict[str, Any] = json.loads(out)
    result["process_s"] = wall
    result["tree_rss_mb"] = sampler.peak_kib / 1024
    return result


def cuobjdump_run(tool: Path, path: Path) -> dict[str, Any]:
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(tool), "--dump-elf-symbols", str(path)], stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def cubloaty_run(tool: Path, path: Path) -> dict[str, Any]:
    """``cubloaty LIB --format json`` with every kernel listed: wall, CPU, and its
    distinct kernel names per arch (as the native run's ``per_arch``)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(tool), str(path), "--format", "json", "--top", "1000000000", "--no-color"],
        stdout=subprocess.PIPE,
    )
    out = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"cubloaty on {path} failed ({status})")
    report = json.loads(out)
    per_arch = {f"{c['kind']} {c['arch']}": c["kernels"] for c in report["components"]}
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "per_arch": dict(sorted(per_arch.items())),
    }


def engine_run(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", ENGINE, str(path)], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise SystemExit(f"cuobjdump engine on {path} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def default_libraries(wheels: Path) -> list[tuple[Path, str]]:
    found = sorted(wheels.glob("vllm-*.whl"), key=lambda p: _version(p.name))
    chosen: list[tuple[Path, str]] = []
    if found:
        newest = found[-1]
        with zipfile.ZipFile(newest) as zf:
            largest = max(
                (i for i in zf.infolist() if i.filename.endswith(".so")), key=lambda i: i.file_size
            )
        chosen.append((newest, largest.filename))
    for wheel in found:
        if wheel.name.startswith("vllm-0.19.0-"):
            chosen.append((wheel, "vllm/_C.abi3.so"))
        if wheel.name.startswith("vllm-0.33.0-"):
            chosen.append((wheel, "vllm/_C_stable_libtorch.abi3.so"))
    return list(dict.fromkeys(chosen))


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split("-")[1].split(".") if p.isdigit())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lib", action="append", default=[], metavar="WHEEL:MEMBER")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cubloaty", type=Path, help="also time this cubloaty executable")
    parser.add_argument("--jobs", default="default", help="probe jobs (default: all CPUs)")
    parser.add_argument(
        "--check",
        action="append",
        nargs="?",
        const="*",
        default=[],
        metavar="MEMBER",
        help="also time the cuobjdump engine (slow) on this library's member name "
        "(repeatable; without a name: on every library)",
    )
    add_output_options(parser)
    args = parser.parse_args()
    wheels = cache_root() / "wheels"
    libraries = [
        (Path(spec.split(":", 1)[0]).expanduser(), spec.split(":", 1)[1]) for spec in args.lib
    ] or default_libraries(wheels)
    if not libraries:
        raise SystemExit(f"no vLLM wheel in {wheels}: pip download vllm --no-deps -d {wheels}")
    tool = cuobjdump()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        for wheel, member in libraries:
            with zipfile.ZipFile(wheel) as zf:
                path = Path(zf.extract(member, tmp))
            native_runs, tool_runs, ratios, peer_runs = [], [], [], []
            for _ in range(args.runs):
                native = native_run(path, args.jobs)
                symbols = cuobjdump_run(tool, path)
                native_runs.append(native)
                tool_runs.append(symbols)
                ratios.append(symbols["wall_s"] / float(native["probe_s"]))
                if args.cubloaty:
                    peer_runs.append(cubloaty_run(args.cubloaty, path))

            def med(key: str, runs: list[dict[str, Any]]) -> float:
                return median([float(r[key]) for r in runs])

            row: dict[str, object] = {
                "wheel": wheel.name,
                "library": member,
                "size_mb": round(path.stat().st_size / 1e6, 1),
                "native_s": round(med("probe_s", native_runs), 3),
                "native_process_s": round(med("process_s", native_runs), 3),
                "native_cpu_s": round(med("cpu_s", native_runs), 2),
                "symbols_s": round(med("wall_s", tool_runs), 3),
                "symbols_cpu_s": round(med("cpu_s", tool_runs), 2),
                "speedup": round(median(ratios), 2),
                "speedup_process": round(
                    median(
                        [
                            t["wall_s"] / float(n["process_s"])
                            for n, t in zip(native_runs, tool_runs, strict=True)
                        ]
                    ),
                    2,
                ),
                "tree_rss_mb": round(max(float(r["tree_rss_mb"]) for r in native_runs)),
                "main_rss_mb": round(max(float(r["main_rss_mb"]) for r in native_runs)),
                "worker_rss_mb": round(max(float(r["worker_rss_mb"]) for r in native_runs)),
                "symbols_rss_mb": round(max(t["rss_mb"] for t in tool_runs)),
            }
            if peer_runs:
                row["cubloaty_s"] = round(med("wall_s", peer_runs), 3)
                row["cubloaty_cpu_s"] = round(med("cpu_s", peer_runs), 2)
                row["vs_cubloaty"] = round(
                    median(
                        [
                            c["wall_s"] / float(n["process_s"])
                            for n, c in zip(native_runs, peer_runs, strict=True)
                        ]
                    ),
                    2,
                )
                row["same_as_cubloaty"] = peer_runs[0]["per_arch"] == native_runs[0]["per_arch"]
                row["kernels_per_arch"] = native_runs[0]["per_arch"]
            if "*" in args.check or member in args.check or Path(member).name in args.check:
                engine = engine_run(path)
                native = native_run(path, args.jobs, digest=True)
                row["engine_s"] = round(float(engine["seconds"]), 1)
                row["engine_ratio"] = round(float(engine["seconds"]) / float(native["probe_s"]), 1)
                row["identical"] = engine["digest"] == native["digest"]
                row["digest"] = str(native["digest"])[:16]
            rows.append(row)
            print(json.dumps(row), flush=True)
            path.unlink()
    if args.append:
        append(rows, args)
    return 0


def _label(row: dict[str, object]) -> str:
    """``0.33.0 vllm/_C.abi3.so``, with the platform when it is not x86_64."""
    wheel = str(row["wheel"])
    platform = " aarch64" if "aarch64" in wheel else ""
    return f"{wheel.split('-')[1]}{platform} {row['library']}"


def append(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    body = [
        "| library | MB | native probe s | cuobjdump -symbols s | speed-up | native process s "
        "| speed-up (process) | native CPU s | cuobjdump CPU s | peak RSS MB (tree / main / "
        "largest worker) | cuobjdump RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        body.append(
            f"| {_label(r)} | {r['size_mb']} | {r['native_s']} "
            f"| {r['symbols_s']} | {r['speedup']}x | {r['native_process_s']} "
            f"| {r['speedup_process']}x | {r['native_cpu_s']} | {r['symbols_cpu_s']} "
            f"| {r['tree_rss_mb']} / {r['main_rss_mb']} / {r['worker_rss_mb']} "
            f"| {r['symbols_rss_mb']} |"
        )
    peer = [r for r in rows if "cubloaty_s" in r]
    if peer:
        body += [
            "",
            "| library | cubloaty s (whole process) | cubloaty CPU s | native process s "
            "| native faster by (process) | distinct kernels per arch equal |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in peer:
            counts = ", ".join(f"{arch} {n}" for arch, n in dict(r["kernels_per_arch"]).items())  # type: ignore[call-overload]
            body.append(
                f"| {_label(r)} | {r['cubloaty_s']} "
                f"| {r['cubloaty_cpu_s']} | {r['native_process_s']} | {r['vs_cubloaty']}x "
                f"| {'yes' if r['same_as_cubloaty'] else '**no**'} ({counts}) |"
            )
    checked = [r for r in rows if "engine_s" in r]
    if checked:
        body += [
            "",
            "| library | cuobjdump engine s (same inventory) | native probe s "
            "| native faster by | inventories identical |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for r in checked:
            body.append(
                f"| {_label(r)} | {r['engine_s']} "
                f"| {r['native_s']} | {r['engine_ratio']}x | {r['identical']} "
                f"(sha256 {r['digest']}) |"
            )
    append_entry(
        args,
        "probe: native vs cuobjdump --dump-elf-symbols",
        [
            f"- median of {args.runs} rounds, each running both tools back to back; speed-up = "
            "median per-round ratio of cuobjdump's wall time to the native `probe()` time "
            "(process: to the native interpreter's whole wall time, start and imports included)",
            f"- native probe jobs: {args.jobs} ({usable_cpus()} usable CPUs); CPU s = user + "
            "system time of the process and its workers; peak RSS of the process tree sampled "
            "every 10 ms (main and largest worker: ru_maxrss)",
        ],
        body,
    )


if __name__ == "__main__":
    raise SystemExit(main())
