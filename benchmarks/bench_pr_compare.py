"""Pull-request time on the real vLLM source: base and head of the configure-tier
matrix (matrices/vllm-configure.yaml, five cells each), compared.

    python benchmarks/bench_pr_compare.py [--base vllm==0.21.0] [--head vllm==0.33.0] [--append]

Times, from outside, ``kernel-matrix run matrices/vllm-configure.yaml --tier
configure --source HEAD --base-source BASE``: once with ``--no-cache`` (every cell of
both sides configured; the environments -- torch at each side's pin, the CMake-ready
toolkit, CUTLASS -- provisioned and cached before timing), once again as it is (each
side answered from the cell cache: what a re-run of an unchanged pull request costs),
and then a pull request that touches no configure input: the head as a directory
with one ``.cu`` file's body changed (CMake reads no ``.cu`` file), its cells answered
from the configure-input index (orchestrator/run/configinputs.py). That index is
written by a configure that ran with the cache in use, so a head with a changed
README is configured first (untimed) to record it; the base is answered from the cell
cache in both. Goals (issue 30): base + head in under 5 minutes on 2 cores; a pull
request that touches no configure input in under 10 seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, append_entry, load_average

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / "matrices" / "vllm-configure.yaml"
# Compiled sources of every vLLM release measured (the first that exists is changed).
KERNEL_SOURCES = (
    "csrc/activation_kernels.cu",
    "csrc/layernorm_kernels.cu",
    "csrc/cache_kernels.cu",
)


def changed_copy(tree: Path, target: Path, name: str) -> Path:
    """A copy of ``tree`` with a comment appended to ``name`` (no kernel renamed)."""
    shutil.copytree(tree, target, symlinks=True)
    with (target / name).open("a", encoding="utf-8") as handle:
        handle.write("\n// kernel-matrix benchmark: a change CMake does not read\n")
    return target


def run(base: str, head: str, out: Path, *extra: str) -> tuple[float, int, dict[str, object]]:
    command = [
        sys.executable, "-m", "orchestrator", "run", str(MATRIX), "--tier", "configure",
        "--source", head, "--base-source", base, "--out", str(out / "pr"),
        "--build-dir", str(out / "build"), *extra,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=3600)
    wall = time.monotonic() - started
    compared = out / "pr" / "compare.json"
    data = json.loads(compared.read_text()) if compared.is_file() else {}
    return wall, done.returncode, data


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="vllm==0.21.0")
    parser.add_argument("--head", default="vllm==0.33.0")
    add_output_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pr-compare-") as tmp:
        root = Path(tmp)
        run(args.base, args.head, root / "provision")  # environments, not timed
        load_cold = load_average()
        cold_s, cold_code, cold = run(args.base, args.head, root / "cold", "--no-cache")
        load_warm = load_average()
        warm_s, warm_code, warm = run(args.base, args.head, root / "warm")
        sys.path.insert(0, str(REPO))
        from orchestrator.building.sources import resolve_source

        head_tree = resolve_source(args.head, progress=False)
        source = next(s for s in KERNEL_SOURCES if (head_tree / s).is_file())
        recorded = changed_copy(head_tree, root / "head-readme", "README.md")
        run(args.base, str(recorded), root / "record")  # the head's configure, recorded
        touched = changed_copy(head_tree, root / "head-cu", source)
        load_cu = load_average()
        cu_s, cu_code, cu = run(args.base, str(touched), root / "cu")
        answered = sum(
            json.loads(p.read_text()).get("cached") is True
            for p in (root / "cu" / "pr" / "head" / "cells").glob("*.json")
        )
    regressions = [
        f"{r['cell']} {r['family']} on {r['device']}"
        for r in cold.get("regressions", [])  # type: ignore[union-attr]
    ]
    body = [
        "| what | wall s | exit | load before | goal |",
        "| --- | ---: | ---: | --- | --- |",
        f"| base + head, every cell configured (--no-cache) | {cold_s:.1f} | {cold_code} | {load_cold} | < 300 s |",
        f"| the same pair again (cell cache) | {warm_s:.1f} | {warm_code} | {load_warm} | < 10 s |",
        f"| a head with `{source}` changed ({answered} head cells from the configure-input index) "
        f"| {cu_s:.1f} | {cu_code} | {load_cu} | < 10 s |",
        "",
        f"{args.base} -> {args.head}: {len(regressions)} family × device regressions"
        + (f" ({'; '.join(regressions)})" if regressions else "")
        + f", {len(cold.get('fixed', []))} fixed, "  # type: ignore[arg-type]
        + f"{sum(cold.get('unchanged', {}).values())} unchanged; the second run's comparison "  # type: ignore[union-attr]
        + ("is the same" if warm.get("regressions") == cold.get("regressions") else "DIFFERS")
        + "; the changed head's "
        + ("is the same." if cu.get("regressions") == cold.get("regressions") else "DIFFERS."),
    ]
    print("\n".join(body))
    if args.append:
        append_entry(
            args,
            f"pull-request time on the real vLLM source ({args.base} -> {args.head})",
            ["- environments provisioned and cached before timing"],
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
