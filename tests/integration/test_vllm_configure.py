"""The configure tier on the real vLLM source, against vLLM's released wheels.

Each release's sdist (from the package index pip uses) is configured by
``kernel-matrix run matrices/vllm-configure.yaml --tier configure --source vllm==X``
with the arch list its CUDA 13.0 wheel was built with (read off the wheel's cubins
with cuobjdump: plain 7.5 8.0 8.6 8.9 9.0 10.0 12.0, CMake adding the a/f variants its
guards ask for; docs/vllm.md). Every predicted family x device must agree with
``kernel-matrix check`` of the released wheel: present (or hollow: only compiled code
shows that) where the wheel has the family, missing where it does not.

Then a pull request that narrows one guard (the vLLM 37725 class of bug, replayed on
the 0.33.0 tree: the SM12x NVFP4 GEMM guard back to "12.0a" only) must fail for DGX
Spark (12.1a) with that family missing and the guard's CMakeLists.txt line named.

Cost (docs/vllm.md, BENCHMARKS.md): once per machine, torch at each tree's pin with
its nvidia-* libraries, nvidia-cutlass and ziglang (about 6 GB per torch version, 5-8
minutes; then zig's first build of its libc++, minutes), nvrtc and the two sdists;
then about a minute per configure on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from orchestrator.archs import ComputeCapability
from orchestrator.building.sources import resolve_source
from orchestrator.judge.check import check_paths
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, PRESENT
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.toolchains.cuda import cache_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MATRIX = REPO / "matrices" / "vllm-configure.yaml"
PROFILE = REPO / "matrices" / "vllm.yaml"
RELEASE_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0"
RELEASE_CELL = "cu13.0-7.5_8.0_8.6_8.9_9.0_10.0_12.0"
# vLLM releases whose wheels are CUDA 13.0 builds of RELEASE_ARCHS; more by hand with
# KERNEL_MATRIX_VLLM_RELEASES=0.25.0,0.30.0 (docs/vllm.md: each costs a sdist, a wheel
# and, for a new torch pin, its environment)
RELEASES = tuple(os.environ.get("KERNEL_MATRIX_VLLM_RELEASES", "0.21.0,0.33.0").split(","))
WHEEL_DIR = cache_root() / "wheels"


def wheel(release: str) -> Path:
    found = sorted(WHEEL_DIR.glob(f"vllm-{release}-*.whl"))
    if not found:
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
                "--only-binary=:all:", "--quiet", "-d", str(WHEEL_DIR),
            ],
            capture_output=True,
            timeout=1800,
        )  # fmt: skip
        found = sorted(WHEEL_DIR.glob(f"vllm-{release}-*.whl"))
    assert found, f"vLLM {release} wheel could not be downloaded into {WHEEL_DIR}"
    return found[-1]


def configure(
    tmp_path: Path, source: str, cell: str, name: str
) -> tuple[int, dict[str, object], str]:
    """Run the CLI as a user would; returns (exit code, the cell's result, stdout)."""
    out, build = tmp_path / f"out-{name}", tmp_path / f"build-{name}"
    command = [
        sys.executable, "-m", "orchestrator", "run", str(MATRIX), "--tier", "configure",
        "--source", source, "--only", cell, "--out", str(out), "--build-dir", str(build),
        "--no-cache",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=REPO)
    cell_file = out / "cells" / f"{cell}.json"
    assert cell_file.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(cell_file.read_text()), done.stdout + done.stderr


def built(status: str) -> str:
    return {PRESENT: "built", HOLLOW: "built", MISSING: "missing"}.get(status, status)


@pytest.mark.parametrize("release", RELEASES)
def test_configure_predicts_what_the_released_wheel_contains(tmp_path: Path, release: str) -> None:
    code, result, output = configure(tmp_path, f"vllm=={release}", RELEASE_CELL, release)
    assert result["status"] in ("passed", "failed"), (result.get("reason"), output[-2000:])
    assert result["tier"] == "configure"
    predicted = {(v["family"], v["device"]): v for v in result["verdicts"]}
    devices = sorted({ComputeCapability.parse(d) for _, d in predicted})
    assert [str(d) for d in devices] == RELEASE_ARCHS.split(";")

    rules = load_families_or_matrix(PROFILE)
    shipped = check_paths([wheel(release)], rules, tuple(devices))
    disagreements = []
    for verdict in shipped.verdicts:
        guess = predicted[(verdict.family, verdict.device)]
        if built(guess["status"]) != built(verdict.status):
            disagreements.append(
                f"{verdict.family} on {verdict.device}: configure predicted {guess['status']}"
                f" ({guess['reason']}), the wheel has {verdict.status} ({verdict.reason})"
            )
    assert disagreements == []
    # not a vacuous agreement: the release list serves most families somewhere
    assert sum(v.status == PRESENT for v in shipped.verdicts) >= 20
    assert code == (1 if any(v["status"] == MISSING for v in result["verdicts"]) else 0)


def test_a_narrowed_guard_fails_and_names_its_cmake_line(tmp_path: Path) -> None:
    """vLLM 0.33.0 with the SM12x NVFP4 GEMM guard narrowed to 12.0a (what PR 37725's
    guards amounted to for DGX Spark): 12.1a must fail with the guard's line."""
    tree = tmp_path / "vllm-pr"
    shutil.copytree(resolve_source("vllm==0.33.0"), tree, symlinks=True)
    lists = tree / "CMakeLists.txt"
    text = lists.read_text()
    guard = re.compile(r'cuda_archs_loose_intersection\(FP4_SM120_ARCHS "12\.0f"')
    assert guard.search(text), "the 0.33.0 guard this test narrows is not where it was"
    lists.write_text(guard.sub('cuda_archs_loose_intersection(FP4_SM120_ARCHS "12.0a"', text))
    line = 1 + text[: guard.search(text).start()].count("\n")  # type: ignore[union-attr]

    code, result, output = configure(tmp_path, str(tree), "cu13.0-12.1a", "pr")
    assert code == 1, output[-3000:]
    verdicts = {(v["family"], v["device"]): v for v in result["verdicts"]}
    # The SM12x block adds every NVFP4 source: quantization, GEMM and MoE all go.
    dropped = {"nvfp4_quant", "nvfp4_scaled_mm_sm120", "nvfp4_moe"}
    for family in dropped:
        missing = verdicts[(family, "12.1")]
        assert missing["status"] == MISSING, (family, missing)
        assert missing["guard"].startswith(
            # (the requested list as vLLM's CMake made it: CUDA 13.0 vLLM maps 12.1a to 12.0)
            f"CMakeLists.txt:{line}: cuda_archs_loose_intersection(FP4_SM120_ARCHS 12.0a "
        ), (family, missing["guard"])
    assert f"CMakeLists.txt:{line}" in output  # the console names it too
    # what that guard does not decide stays as it was (scaled_mm SM12x: its own guard)
    others = {k: v["status"] for k, v in verdicts.items() if k[0] not in dropped}
    assert others[("scaled_mm_sm120", "12.1")] == PRESENT
    assert set(others.values()) <= {PRESENT, NOT_APPLICABLE}, others


def test_a_generator_that_writes_no_source_for_the_arch_is_named(tmp_path: Path) -> None:
    """vLLM 0.33.0 with its Marlin generator's FP8 condition narrowed to 8.9 while the
    CMake guards still let 12.0a through: the FP8 Marlin families must fail on 12.0 and
    name the generator as it ran, as the one that wrote none of their sources, and
    only it: the guard's result ("8.9;12.0f" with 12.0a requested keeps 12.0a, read
    from the trace) did not exclude 12.0."""
    tree = tmp_path / "vllm-gen"
    shutil.copytree(resolve_source("vllm==0.33.0"), tree, symlinks=True)
    script = tree / "csrc" / "quantization" / "marlin" / "generate_kernels.py"
    text = script.read_text()
    condition = "if arch == 89 or arch // 10 == 12:"
    assert condition in text, "the 0.33.0 generator condition this test narrows is not there"
    script.write_text(text.replace(condition, "if arch == 89:"))

    code, result, output = configure(tmp_path, str(tree), "cu13.0-12.0a", "gen")
    assert code == 1, output[-3000:]
    verdicts = {(v["family"], v["device"]): v for v in result["verdicts"]}
    # 0.33.0 runs that script for the dense and (with an output directory) the MoE kernels
    for family, out in (("marlin_fp8", ""), ("marlin_moe_fp8", " csrc/moe/marlin_moe_wna16")):
        missing = verdicts[(family, "12.0")]
        assert missing["status"] == MISSING, missing
        assert re.search(
            r"^the generator CMakeLists\.txt:\d+: execute_process\(… "
            rf"csrc/quantization/marlin/generate_kernels\.py 12\.0a{out}\), "
            r"which wrote none of its sources$",
            missing["guard"],
        ), missing["guard"]
    # what the same script still wrote stays; nothing else goes
    assert verdicts[("marlin", "12.0")]["status"] == PRESENT
    assert verdicts[("marlin_moe", "12.0")]["status"] == PRESENT
    assert sorted(k[0] for k, v in verdicts.items() if v["status"] == MISSING) == [
        "marlin_fp8",
        "marlin_moe_fp8",
    ]


def test_a_release_the_index_does_not_have_is_named_with_the_ones_it_has(tmp_path: Path) -> None:
    """The real index (the one pip uses): a version that never existed is the user's
    error (exit 2), one line naming the newest versions there are."""
    command = [
        sys.executable, "-m", "orchestrator", "plan", str(MATRIX), "--source", "vllm==0.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    newest = re.search(r"no sdist of that version \(newest: (.+)\)$", lines[0])
    assert newest, lines
    versions = [Version(v) for v in newest[1].split(", ")]
    assert len(versions) == 5 and versions == sorted(versions, reverse=True), lines
    assert versions[0] >= max(map(Version, RELEASES)), lines  # the newest, not any five


# --- pull-request time on two real releases (issue 30) ------------------------------------


def pull_request(
    tmp_path: Path, base: str, head: str, *only: str
) -> tuple[int, dict[str, Any], str]:
    """``run --source HEAD --base-source BASE`` as a user types it: exit code, the
    compare.json document, the console output."""
    out = tmp_path / "pr"
    command = [
        sys.executable, "-m", "orchestrator", "run", str(MATRIX), "--tier", "configure",
        "--source", head, "--base-source", base, "--out", str(out),
        "--build-dir", str(tmp_path / "build"), *(a for cell in only for a in ("--only", cell)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=REPO)
    report = out / "compare.json"
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(report.read_text()), done.stdout + done.stderr


def line_of(tree: Path, text: str) -> int:
    """The line of CMakeLists.txt where ``text`` starts (exactly once)."""
    lists = (tree / "CMakeLists.txt").read_text()
    assert lists.count(text) == 1, text
    return 1 + lists[: lists.index(text)].count("\n")


def test_a_release_that_drops_marlin_for_12x_regresses_exactly_there(tmp_path: Path) -> None:
    """vLLM 0.33.0 -> 0.34.0 (both pin torch 2.14.0), every cell of the PR matrix.

    Established by hand from the two sdists (CMakeLists.txt and the Marlin generator):
    0.34.0 removes FP8-activation Marlin -- the MARLIN_FP8_ARCHS / MARLIN_MOE_FP8_ARCHS
    guards ("8.9;12.0f", 0.33.0 lines 675 and 1399), their sm89_kernel_* globs, and the
    generator's FP8 path (0.33.0 generate_kernels.py: `arch == 89 or arch // 10 == 12`)
    -- and narrows MARLIN_ARCHS and MARLIN_MOE_ARCHS from "8.0+PTX;12.0f" to "8.0+PTX"
    (MARLIN_BF16_ARCHS keeps "9.0+PTX"). So on every requested 12.x device the FP8
    families are lost, and dense and MoE Marlin are reached only through PTX JIT where
    0.33.0 had an sm_120a/sm_120f cubin (a downgrade); 8.9 loses the FP8 families
    (sm_89); nothing else changes (9.0, 10.x keep what they had; 10.3a requests no 12.x
    and no 8.9). vLLM's CMake maps 12.1a to 12.0 under CUDA 13.0, so the 12.1a cell's
    12.1 is served by sm_120f on the base."""
    code, data, output = pull_request(tmp_path, "vllm==0.33.0", "vllm==0.34.0")
    assert code == 1, output[-3000:]
    lost, downgraded = "family-lost", "family-downgraded"
    expected = {
        ("cu13.0-7.5_8.0_8.6_8.9_9.0_10.0_12.0", "marlin_fp8", "8.9"): lost,
        ("cu13.0-7.5_8.0_8.6_8.9_9.0_10.0_12.0", "marlin_moe_fp8", "8.9"): lost,
    }
    for cell, devices in (
        ("cu13.0-7.5_8.0_8.6_8.9_9.0_10.0_12.0", ("12.0",)),
        ("cu13.0-9.0a_10.0f_12.0f_12.1f", ("12.0", "12.1")),
        ("cu13.0-12.1a", ("12.1",)),
        ("cu13.0-12.0a", ("12.0",)),
    ):
        for device in devices:
            expected |= {
                (cell, "marlin_fp8", device): lost,
                (cell, "marlin_moe_fp8", device): lost,
                (cell, "marlin", device): downgraded,
                (cell, "marlin_moe", device): downgraded,
            }
    got = {(r["cell"], r["family"], r["device"]): r["kind"] for r in data["regressions"]}
    assert got == expected
    assert data["fixed"] == []
    assert data["unchanged"]["cu13.0-10.3a"] == 10  # every family there, as it was

    base, head = resolve_source("vllm==0.33.0"), resolve_source("vllm==0.34.0")
    fp8 = line_of(base, 'cuda_archs_loose_intersection(MARLIN_FP8_ARCHS "8.9;12.0f"')
    marlin = line_of(head, 'cuda_archs_loose_intersection(MARLIN_ARCHS "8.0+PTX" ')
    by_key = {(r["cell"], r["family"], r["device"]): r for r in data["regressions"]}
    gone = by_key[("cu13.0-12.0a", "marlin_fp8", "12.0")]
    assert (gone["base"], gone["head"]) == ("present (sm_120a)", "missing")
    # the head has no guard for it any more, and says so; the base's guard as it ran
    assert gone["cause"].endswith("no CMake guard or generator governs its sources on the head")
    assert gone["base_cause"].startswith(
        f'CMakeLists.txt:{fp8}: cuda_archs_loose_intersection(MARLIN_FP8_ARCHS "8.9;12.0f" 12.0a)'
    )
    jit = by_key[("cu13.0-9.0a_10.0f_12.0f_12.1f", "marlin", "12.1")]
    assert (jit["base"], jit["head"]) == ("present (sm_120f)", "present (compute_80)")
    assert (
        f"on the head: CMakeLists.txt:{marlin}: cuda_archs_loose_intersection(MARLIN_ARCHS 8.0+PTX "
        in jit["cause"]
    )
    assert "downgrade" in output and f"CMakeLists.txt:{fp8}" in output


def test_a_code_object_relabel_between_releases_is_no_regression(tmp_path: Path) -> None:
    """vLLM 0.23.0 -> 0.24.0 (both pin torch 2.11.0), the release arch list.

    By hand: 0.23.0 guards FP8 MoE Marlin with `MARLIN_MOE_FP8_ARCHS "8.9;12.0;12.1"`,
    0.24.0 with "8.9;12.0f" (CUDA >= 13.0 branch); with 12.0 requested that is sm_120
    on the base and sm_120f on the head, and 12.0 loads either: the family is served
    on 12.0 by another code object, which is no regression. No other guard, source
    list or generator of a family differs between the two for this list (mla_sm100
    loses its 12.x targets, but 12.x is not one of its devices)."""
    code, data, output = pull_request(tmp_path, "vllm==0.23.0", "vllm==0.24.0", RELEASE_CELL)
    assert code == 0, output[-3000:]
    assert data["regressions"] == [] and data["fixed"] == []
    cells = {
        side: json.loads((tmp_path / "pr" / side / "cells" / f"{RELEASE_CELL}.json").read_text())
        for side in ("base", "head")
    }
    served = {
        side: next(
            v["served_by"]
            for v in cell["verdicts"]
            if (v["family"], v["device"]) == ("marlin_moe_fp8", "12.0")
        )
        for side, cell in cells.items()
    }
    assert served == {"base": ["sm_120"], "head": ["sm_120f"]}
