"""The figures README.md and docs/vllm.md quote, measured the way a reader runs them.

    python benchmarks/bench_docs.py [--repeats N] [--append]

Each documented command is run N times from outside (wall clock, as a user's
``time`` shows it), with the load average before and after each run:

* ``kernel-matrix run matrix.yaml --tier configure --no-cache`` (README: the
  configure tier; cold: --no-cache, the PyPI toolchain already installed);
* ``kernel-matrix run examples/regression-37725.yaml --no-cache`` (README: the
  incident, two cells built);
* ``kernel-matrix check <wheel> --families matrices/vllm.yaml --devices
  9.0,10.0,10.3,12.0,12.1`` for each vLLM wheel in the cache (README, docs/vllm.md;
  the page cache is warm after the first run): a first check (an empty check
  cache, ``KERNEL_MATRIX_CACHE`` of its own), then the same command again.

Every figure is a range (fastest to slowest run) with its conditions, the form in
which the docs quote it. Takes about 2-5 minutes per repeat on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_options, append_entry, load_average, usable_cpus

WHEELS = Path.home() / ".cache" / "kernel-matrix" / "wheels"
DEVICES = "9.0,10.0,10.3,12.0,12.1"


def commands(scratch: Path, caches: Path) -> list[tuple[str, list[str], Path | None]]:
    """(what, argv, the KERNEL_MATRIX_CACHE it runs with: None for the user's); results
    under ``scratch``, check caches under ``caches``."""
    out = ["--out", str(scratch / "reports"), "--build-dir", str(scratch / "build")]
    found: list[tuple[str, list[str], Path | None]] = [
        ("configure tier, default matrix (12 cells, J=auto), cold",
         ["run", "matrix.yaml", "--tier", "configure", "--no-cache", *out], None),
        ("examples/regression-37725.yaml (2 cells built), cold",
         ["run", "examples/regression-37725.yaml", "--no-cache", *out], None),
    ]  # fmt: skip
    for version in ("0.19.0", "0.21.0", "0.33.0"):
        wheel = next(iter(sorted(WHEELS.glob(f"vllm-{version}-*.whl"))), None)
        if wheel is not None:
            argv = ["check", str(wheel), "--families", "matrices/vllm.yaml", "--devices", DEVICES]
            cache = caches / f"check-cache-{version}"
            size = f"{wheel.stat().st_size / 1e6:.0f} MB wheel"
            found.append((f"check vLLM {version} ({size}), first run", argv, cache))
            found.append((f"check vLLM {version}, the same command again", argv, cache))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-docs-") as tmp:
        for index, (what, _, _) in enumerate(commands(Path(tmp), Path(tmp))):
            times, loads = [], []
            for repeat in range(args.repeats):
                # A run directory and build tree of its own per command and repeat; a
                # check cache per repeat (its second check reuses the first's).
                scratch, caches = Path(tmp) / f"{index}-{repeat}", Path(tmp) / f"caches-{repeat}"
                _, argv, cache = commands(scratch, caches)[index]
                env = {**os.environ, "NO_COLOR": "1"}
                if cache is not None:
                    env["KERNEL_MATRIX_CACHE"] = str(cache)
                loads.append(load_average().split()[0])
                started = time.monotonic()
                done = subprocess.run(
                    [sys.executable, "-m", "orchestrator", *argv],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                times.append(time.monotonic() - started)
                loads.append(load_average().split()[0])
                if done.returncode not in (0, 1):
                    raise SystemExit(f"{what}: exit {done.returncode}\n{done.stderr[-2000:]}")
            low, high = min(times), max(times)
            rows.append(
                f"| {what} | {low:.1f}–{high:.1f} s | {len(times)} | {min(loads)}–{max(loads)} |"
            )
            print(rows[-1], flush=True)
    body = [
        "| documented command | wall time (fastest–slowest) | runs | load average (1 min) |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    header = [f"- {usable_cpus()} usable CPUs; toolchains already in the cache"]
    if args.append:
        append_entry(args, "documented figures", header, body)
    else:
        print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
