"""``probe`` and ``check`` on hostile inputs that are valid, only huge (issue 34).

    python benchmarks/bench_hostile.py [--rounds N] [--append]

Two inputs are made here, byte by byte (``tests/unit/synth.py``), in a temporary
directory:

* **PTX module of 300 000 entries**: one shared object whose fatbin holds a single
  zstd-compressed PTX module of 300 000 ``.entry`` functions with mangled names and
  bodies of three lines (12 MB of PTX text). Goal: under 3 s.
* **wheel of 100 000 members**: 100 000 small host-only shared objects (no
  ``.nv_fatbin``) and one with a cubin. Goal: under 10 s.

Each is timed as a user runs it: ``python -m orchestrator probe PATH`` (its table to
/dev/null), ``probe PATH --json`` and ``check PATH --families matrices/vllm.yaml
--devices 9.0 --json`` (a fresh ``KERNEL_MATRIX_CACHE`` per run), in a fresh
interpreter: wall time, CPU time of the process tree, peak RSS of the tree.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_check import timed
from common import ROOT, add_output_options, append_entry, median

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from synth import (
    KIND_ELF,
    KIND_PTX,
    EntrySpec,
    build_container,
    build_shared_object,
    two_kernel_cubin,
)

PTX_ENTRIES = 300_000
MEMBERS = 100_000
GOALS = {"ptx": 3.0, "wheel": 10.0}


def ptx_library(path: Path) -> int:
    """The 300 000-entry PTX module in a shared object; returns the PTX's size."""
    text = "".join(
        f".visible .entry _Z7k{index:06d}Pf()\n{{\nret;\n}}\n" for index in range(PTX_ENTRIES)
    )
    ptx = f"\n.version 9.0\n.target sm_90\n.address_size 64\n\n{text}".encode()
    entry = EntrySpec(KIND_PTX, 90, ptx, compression="zstd")
    path.write_bytes(build_shared_object([build_container([entry])]))
    return len(ptx)


def many_member_wheel(path: Path) -> None:
    host_only = build_shared_object([], with_fatbin=False)
    device = build_shared_object([build_container([EntrySpec(KIND_ELF, 90, two_kernel_cubin(90))])])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("pkg/_C.abi3.so", device)
        for index in range(MEMBERS):
            wheel.writestr(f"pkg/host/m{index}.so", host_only)
        wheel.writestr("pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")


def commands(path: Path) -> dict[str, list[str]]:
    python = [sys.executable, "-m", "orchestrator"]
    families = str(ROOT / "matrices" / "vllm.yaml")
    return {
        "probe": [*python, "probe", str(path)],
        "probe --json": [*python, "probe", str(path), "--json"],
        "check --json": [
            *python, "check", str(path), "--families", families, "--devices", "9.0", "--json",
        ],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as scratch:
        ptx = Path(scratch) / "ptx300k.so"
        ptx_bytes = ptx_library(ptx)
        wheel = Path(scratch) / "many.whl"
        many_member_wheel(wheel)
        inputs = {
            "ptx": (f"one PTX module of {PTX_ENTRIES:,} entries ({ptx_bytes / 1e6:.1f} MB)", ptx),
            "wheel": (f"a wheel of {MEMBERS + 1:,} shared objects", wheel),
        }
        for kind, (label, path) in inputs.items():
            for name, argv in commands(path).items():
                runs = []
                for round_ in range(args.rounds):
                    env = {**os.environ, "KERNEL_MATRIX_CACHE": f"{scratch}/cache-{round_}"}
                    runs.append(timed(argv, env))
                wall = median([r["wall_s"] for r in runs])
                row = (
                    f"| {label} | `{name}` | {wall:.2f} | "
                    f"{median([r['cpu_s'] for r in runs]):.2f} | "
                    f"{max(r['rss_mb'] for r in runs):.0f} | < {GOALS[kind]:.0f} s | "
                    f"{'yes' if wall < GOALS[kind] else '**no**'} |"
                )
                print(row, flush=True)
                rows.append(row)
    body = [
        "| input | command | wall s (median) | CPU s | peak RSS MB | goal | met |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
        *rows,
    ]
    if args.append:
        append_entry(
            args,
            "hostile inputs: a 300 000-entry PTX module, a 100 000-member wheel (issue 34)",
            [f"- {args.rounds} rounds each, a fresh cache per round; fresh interpreter per run"],
            body,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
