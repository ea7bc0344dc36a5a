"""The configure tier on the real vLLM source (matrices/vllm-configure.yaml).

    python benchmarks/bench_vllm_configure.py [--source vllm==0.33.0] [--jobs 2] [--append]

Times, from outside, ``kernel-matrix run matrices/vllm-configure.yaml --tier
configure --source SOURCE --no-cache``: one cell (the release wheels' arch list),
then the whole matrix. The environment (torch, the CMake-ready toolkit, CUTLASS) is
provisioned before the first timing (its one-time cost is in docs/vllm.md). Goals
(issue 16): one cell configured and judged in under 2 minutes on 2 cores, the whole
matrix in under 6. For comparison, what the build tier would compile for the same
cells: the nvcc compilations (source x gencode target) the File API lists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, append_entry, load_average

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / "matrices" / "vllm-configure.yaml"
ONE_CELL = "cu13.0-7.5_8.0_8.6_8.9_9.0_10.0_12.0"


def run(source: str, out: Path, *extra: str) -> tuple[float, list[dict[str, object]]]:
    command = [
        sys.executable, "-m", "orchestrator", "run", str(MATRIX), "--tier", "configure",
        "--source", source, "--out", str(out / "reports"), "--build-dir", str(out / "build"),
        "--no-cache", *extra,
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, capture_output=True, timeout=3600)
    wall = time.monotonic() - started
    cells = [json.loads(p.read_text()) for p in sorted((out / "reports" / "cells").glob("*.json"))]
    return wall, cells


def agreement(source: str, cell: dict[str, object]) -> list[str]:
    """The release cell's predictions next to ``check`` of that release's wheel
    (cached by tests/integration/test_vllm_configure.py), as a Markdown table."""
    from orchestrator.archs import ComputeCapability
    from orchestrator.judge.check import check_paths
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.toolchains.cuda import cache_root

    release = source.split("==")[-1]
    wheels = sorted((cache_root() / "wheels").glob(f"vllm-{release}-*.whl"))
    if not wheels:
        return [f"(no cached vLLM {release} wheel to compare with)"]
    verdicts = cell["verdicts"]  # type: ignore[index]
    predicted = {(v["family"], v["device"]): v["status"] for v in verdicts}  # type: ignore[union-attr]
    devices = sorted({ComputeCapability.parse(d) for _, d in predicted})
    shipped = check_paths(
        [wheels[-1]], load_families_or_matrix(REPO / "matrices" / "vllm.yaml"), tuple(devices)
    )
    mark = {"present": "✅", "hollow": "⚠️", "missing": "❌", "not-applicable": "➖"}
    rows = [
        "| family | " + " | ".join(str(d) for d in devices) + " |",
        "| --- |" + " :---: |" * len(devices),
    ]
    by_family: dict[str, list[str]] = {}
    agree = 0
    for v in shipped.verdicts:
        guess = predicted[(v.family, v.device)]
        same = (guess in ("present", "hollow")) == (v.status in ("present", "hollow"))
        agree += same
        cellmark = mark[guess] + ("" if guess == v.status else f"/{mark[v.status]}")
        by_family.setdefault(v.family, []).append(cellmark if same else f"**{cellmark}≠**")
    rows += [f"| {f} | " + " | ".join(m) + " |" for f, m in by_family.items()]
    rows.append("")
    rows.append(
        f"vLLM {release}: {agree} of {len(shipped.verdicts)} family × device verdicts agree "
        "(predicted/wheel where the wording differs: hollow counts as built)."
    )
    return rows


def compilations(cell: dict[str, object]) -> int:
    """nvcc compilations a build of the cell would run: CUDA sources x targets."""
    inventory = cell.get("inventory") or {}
    libraries = inventory.get("libraries", []) if isinstance(inventory, dict) else []
    return sum(len(lib.get("cubins", [])) + len(lib.get("ptx", [])) for lib in libraries)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="vllm==0.33.0")
    parser.add_argument("--jobs", default="2")
    add_output_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vllm-configure-") as tmp:
        root = Path(tmp)
        run(args.source, root / "warm", "--only", ONE_CELL)  # provisions what is not cached
        load_one = load_average()
        one_s, one = run(args.source, root / "one", "--only", ONE_CELL)
        load_all = load_average()
        all_s, cells = run(args.source, root / "all", "--jobs", args.jobs)
    statuses = {str(c["cell"]["id"]): str(c["status"]) for c in cells}  # type: ignore[index]
    body = [
        "| what | cells | wall s | load before | goal |",
        "| --- | ---: | ---: | --- | --- |",
        f"| one cell ({ONE_CELL}) | {len(one)} | {one_s:.1f} | {load_one} | < 120 s |",
        f"| whole matrix, --jobs {args.jobs} | {len(cells)} | {all_s:.1f} | {load_all} | < 360 s |",
        "",
        "Cells: " + ", ".join(f"{k} {v}" for k, v in statuses.items()) + ".",
        "The build tier would compile, per cell: "
        + ", ".join(f"{c['cell']['id']} {compilations(c)}" for c in cells)  # type: ignore[index]
        + " (CUDA source x target compilations, from the same File API codemodel).",
        "",
        *agreement(args.source, one[0]),
    ]
    print("\n".join(body))
    if args.append:
        append_entry(
            args,
            f"configure tier on the real vLLM source ({args.source})",
            ["- environment provisioned and cached before timing; --no-cache runs"],
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
