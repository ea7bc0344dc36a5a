"""Speed and memory of the native probe against cuobjdump, on real vLLM libraries.

    python benchmarks/bench_probe.py [--wheel vllm-*.whl] [--member NAME ...] [--append]

The wheel (``pip download vllm --no-deps -d ~/.cache/kernel-matrix/wheels``) is read
from the cache; each library is extracted once to a temp dir so that both tools read
the same file from disk. For each library: wall time of ``cuobjdump
--dump-elf-symbols`` (cuobjdump's cheapest full listing; it prints no instruction
counts and does not decompress PTX), wall time and peak RSS of the native probe (a
fresh process, so RSS is its own), and a check that both engines' inventories are
equal (``--check``; slow: the cuobjdump engine dumps every section). ``--append``
adds the figures to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.toolchain import cache_root, cuobjdump  # noqa: E402

RUNS = 3


def native_run(path: Path) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of probing ``path`` in a fresh interpreter."""
    code = (
        "import sys, time, resource\n"
        "from orchestrator.probe import probe\n"
        "t = time.perf_counter(); probe([sys.argv[1]]); t = time.perf_counter() - t\n"
        "print(t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    return float(out[0]), int(out[1])


def cuobjdump_run(tool: Path, path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(tool), "--dump-elf-symbols", str(path)], stdout=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path)
    parser.add_argument("--member", action="append", default=[])
    parser.add_argument("--check", action="store_true", help="also compare both engines")
    parser.add_argument("--append", action="store_true", help="append to BENCHMARKS.md")
    args = parser.parse_args()
    wheel = args.wheel or sorted((cache_root() / "wheels").glob("vllm-*.whl"))[-1]
    tool = cuobjdump()
    rows = []
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        sos = sorted(
            (i for i in zf.infolist() if i.filename.endswith(".so")), key=lambda i: -i.file_size
        )
        chosen = (
            [i for i in sos if i.filename.split("/")[-1] in args.member] if args.member else sos[:2]
        )
        for info in chosen:
            path = Path(zf.extract(info, tmp))
            native = [native_run(path) for _ in range(RUNS)]
            tool_times = [cuobjdump_run(tool, path) for _ in range(RUNS)]
            n_time = statistics.median(t for t, _ in native)
            c_time = statistics.median(tool_times)
            row = {
                "library": info.filename,
                "size_mb": round(info.file_size / 1e6, 1),
                "native_s": round(n_time, 3),
                "cuobjdump_symbols_s": round(c_time, 3),
                "speedup": round(c_time / n_time, 2),
                "native_peak_rss_mb": round(max(r for _, r in native) / 1024),
            }
            if args.check:
                sys.path.insert(0, str(ROOT))
                from orchestrator.probe import probe

                start = time.perf_counter()
                same = probe([path]).to_json() == probe([path], engine="cuobjdump").to_json()
                row["engines_identical"] = same
                row["check_s"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.append:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        load = (
            Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        )
        lines = [
            f"\n## probe: native vs cuobjdump --dump-elf-symbols ({datetime.date.today()})\n",
            f"- wheel: `{wheel.name}`; commit `{commit}`; machine: {platform.machine()}, "
            f"{_cpus()} CPUs, Python {platform.python_version()}, load average {load} at the end",
            f"- command: `python benchmarks/bench_probe.py {' '.join(sys.argv[1:])}`",
            f"- median of {RUNS} runs; RSS is the native probe process's peak (ru_maxrss)\n",
            "| library | MB | native s | cuobjdump -symbols s | speed-up | native peak RSS MB | engines identical |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r['library']} | {r['size_mb']} | {r['native_s']} | {r['cuobjdump_symbols_s']} "
                f"| {r['speedup']}x | {r['native_peak_rss_mb']} | {r.get('engines_identical', 'not checked')} |"
            )
        with (ROOT / "BENCHMARKS.md").open("a") as f:
            f.write("\n".join(lines) + "\n")
    _ = resource  # peak RSS is measured in the child processes
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
