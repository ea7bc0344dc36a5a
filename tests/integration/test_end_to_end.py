"""End to end with real parts: CUDA 13.x nvcc from PyPI, CMake, ninja, the native
probe, on the sample extension. Each matrix is run once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from own_cache import cache_env, own_cache

from orchestrator.archs import ComputeCapability
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, PRESENT, judge
from orchestrator.judge.results import CellResult, load_results
from orchestrator.planning.matrix import load_matrix

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOT_BUILDING_NVFP4 = "Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a"


def kernel_matrix(
    *args: str, cwd: Path = REPO, cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (``cache``: a result cache of the test's own)."""
    env = cache_env(cache) if cache else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
    )


@pytest.fixture(scope="session")
def default_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("default-run")
    done = kernel_matrix(
        "run", "matrix.yaml", "--out", str(out / "results"), "--build-dir", str(out / "build"),
        "--no-cache",
    )  # fmt: skip
    return done, out


@pytest.fixture(scope="session")
def default_results(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> dict[str, CellResult]:
    _, out = default_run
    return {r.id: r for r in load_results([out / "results"])}


def verdicts(result: CellResult) -> dict[tuple[str, str], Any]:
    return {(v.family, v.device): v for v in result.verdicts}


def test_default_matrix_builds_every_cuda_13_cell_and_passes(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
    default_results: dict[str, CellResult],
) -> None:
    done, out = default_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "kernel-matrix: OK" in done.stdout
    built = [r for r in default_results.values() if r.cell["cuda"].startswith("13.")]
    assert len(built) == 12 and all(r.status == "passed" for r in built)
    for name in ("junit.xml", "summary.md", "results.json", "index.html"):
        assert (out / "results" / name).is_file()
    for result in default_results.values():
        if result.cell["cuda"].startswith("12.") and result.cell["status"] == "planned":
            # CUDA 12.4 from Debian's packages (tests/integration/test_debian_toolchain.py)
            assert (result.cell["cuda"], result.cell["archs"]) == ("12.4", "9.0a")
            assert result.status == "passed", result.reason
        elif result.cell["cuda"].startswith("12."):
            # No CUDA 12.8/12.9 toolkit here, 12.4 cannot compile sm_100+: listed as
            # skipped, with the reason.
            assert result.status == "skipped" and result.reason
            assert result.cell["status"] in ("unsupported", "toolchain-unavailable")
        assert result.prediction_mismatches == []
    # Each built cell's log names its toolchain first; the console showed progress.
    for result in built:
        assert result.log is not None
        first = (out / "results" / result.log).read_text().splitlines()[0]
        assert first.startswith(f"kernel-matrix: toolchain CUDA {result.cell['cuda']}."), first
    assert "cmake --build" in done.stdout or "cmake configure" in done.stdout


def test_every_requested_device_is_served_by_the_closest_cubin(
    default_results: dict[str, CellResult],
) -> None:
    combined = verdicts(default_results["cu13.0-9.0a_10.0f_12.0a_12.1a"])
    assert combined[("scaled_mm_sm90", "9.0")].served_by == ("sm_90a",)
    assert combined[("nvfp4", "10.0")].served_by == ("sm_100f",)
    assert combined[("nvfp4", "12.0")].served_by == ("sm_120a",)
    assert combined[("nvfp4", "12.1")].served_by == ("sm_121a",)
    assert combined[("mla_sm100", "10.0")].status == PRESENT
    assert combined[("nvfp4", "9.0")].status == NOT_APPLICABLE
    spark = verdicts(default_results["cu13.0-12.1f"])
    assert spark[("nvfp4", "12.1")].served_by == ("sm_121f",)


def test_12_0a_cubins_do_not_serve_12_1_but_12_0f_and_12_1f_do(
    default_results: dict[str, CellResult], tmp_path: Path
) -> None:
    families = load_matrix(REPO / "matrix.yaml").families
    nvfp4 = next(f for f in families if f.name == "nvfp4")
    spark = ComputeCapability(12, 1)
    only_120a = default_results["cu13.0-12.0a"].inventory
    assert only_120a is not None
    assert judge(only_120a, nvfp4, spark).status == MISSING
    only_121f = default_results["cu13.0-12.1f"].inventory
    assert only_121f is not None
    assert judge(only_121f, nvfp4, spark).status == PRESENT

    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"project: {{source: {REPO / 'examples/sample_ext'}, artifacts: ['*.so']}}\n"
        "cuda: ['13.0']\narchs: ['12.0f']\n"
        f"families: {REPO / 'examples/sample_ext/families.yaml'}\n"
    )
    done = kernel_matrix(
        "run", str(matrix), "--out", str(tmp_path / "r"), "--build-dir", str(tmp_path / "b")
    )
    assert done.returncode == 0, done.stdout[-2000:]
    (result,) = load_results([tmp_path / "r"])
    assert result.inventory is not None
    verdict = judge(result.inventory, nvfp4, spark)
    assert verdict.status == PRESENT and verdict.served_by == ("sm_120f",)


def test_regression_37725_fails_naming_the_cmake_line(tmp_path: Path) -> None:
    cache = own_cache(tmp_path)  # built here, then answered from what this build stored
    done = kernel_matrix(
        "run", "examples/regression-37725.yaml", "--out", str(tmp_path / "r"),
        "--build-dir", str(tmp_path / "b"), cache=cache,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    results = {r.id: r for r in load_results([tmp_path / "r"])}
    assert not any(r.cached for r in results.values())
    bug = verdicts(results["cu13.0-12.1a-bug"])
    for family in ("nvfp4", "scaled_mm_sm120"):
        assert bug[(family, "12.1")].status == MISSING
    assert bug[("nvfp4", "12.1")].cause is not None
    assert bug[("nvfp4", "12.1")].cause.startswith(NOT_BUILDING_NVFP4)
    assert "Not building scaled_mm_c3x_sm120" in (bug[("scaled_mm_sm120", "12.1")].cause or "")
    assert NOT_BUILDING_NVFP4 in done.stdout
    fixed = verdicts(results["cu13.0-12.1a-fixed"])
    assert fixed[("nvfp4", "12.1")].status == PRESENT
    assert fixed[("nvfp4", "12.1")].served_by == ("sm_121a",)
    junit = (tmp_path / "r" / "junit.xml").read_text()
    assert "nvfp4" in junit and "Not building NVFP4" in junit
    # Answered from the cell cache (another build directory, no configure trace in
    # it): the same verdicts, the guard line included.
    again = kernel_matrix(
        "run", "examples/regression-37725.yaml", "--out", str(tmp_path / "r2"),
        "--build-dir", str(tmp_path / "b2"), cache=cache,
    )  # fmt: skip
    assert again.returncode == 1, again.stdout[-3000:]
    cached = {r.id: r for r in load_results([tmp_path / "r2"])}
    assert cached["cu13.0-12.1a-bug"].cached
    assert bug[("nvfp4", "12.1")].guard is not None
    assert verdicts(cached["cu13.0-12.1a-bug"]) == bug
    assert f"dropped by {bug[('nvfp4', '12.1')].guard}" in again.stdout


def test_exact_arch_guard_makes_the_sm120_family_hollow_on_12_1(tmp_path: Path) -> None:
    done = kernel_matrix(
        "run", "examples/hollow-sm121.yaml", "--out", str(tmp_path / "r"),
        "--build-dir", str(tmp_path / "b"),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    (result,) = load_results([tmp_path / "r"])
    found = verdicts(result)
    assert found[("scaled_mm_sm120", "12.1")].status == HOLLOW
    assert found[("scaled_mm_sm120", "12.1")].served_by == ("sm_121f",)
    assert found[("scaled_mm_sm120", "12.0")].status == PRESENT
    assert found[("nvfp4", "12.1")].status == PRESENT


def test_configure_tier_predicts_what_the_build_finds(
    default_results: dict[str, CellResult], tmp_path: Path
) -> None:
    done = kernel_matrix(
        "run", "matrix.yaml", "--tier", "configure", "--out", str(tmp_path / "r"),
        "--build-dir", str(tmp_path / "b"), "--no-cache",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    predicted = {r.id: r for r in load_results([tmp_path / "r"])}
    compared = 0
    for cell_id, built in default_results.items():
        guess = predicted[cell_id]
        assert guess.status == built.status
        if built.status != "passed":
            continue
        assert guess.tier == "configure"
        assert {k: v.status for k, v in verdicts(guess).items()} == {
            k: v.status for k, v in verdicts(built).items()
        }
        compared += 1
    assert compared == 13  # the 12 CUDA 13.x cells and cu12.4-9.0a (Debian's toolkit)


def test_configure_tier_predicts_the_37725_skip(tmp_path: Path) -> None:
    done = kernel_matrix(
        "run", "examples/regression-37725.yaml", "--tier", "configure",
        "--out", str(tmp_path / "r"), "--build-dir", str(tmp_path / "b"), "--no-cache",
    )  # fmt: skip
    assert done.returncode == 1
    results = {r.id: r for r in load_results([tmp_path / "r"])}
    missing = verdicts(results["cu13.0-12.1a-bug"])[("nvfp4", "12.1")]
    assert missing.status == MISSING
    assert verdicts(results["cu13.0-12.1a-fixed"])[("nvfp4", "12.1")].status == PRESENT
    # The guard, as it ran, inside the macro call that names the family's sources
    # (read by hand: examples/sample_ext/CMakeLists.txt, cmake/archs.cmake).
    lists = (REPO / "examples" / "sample_ext" / "CMakeLists.txt").read_text().splitlines()
    call = 1 + next(i for i, line in enumerate(lists) if "sample_guarded_family(NAME NVFP4" in line)
    archs = (REPO / "examples" / "sample_ext" / "cmake" / "archs.cmake").read_text().splitlines()
    guard = 1 + next(
        i
        for i, line in enumerate(archs)
        if line.strip().startswith("cuda_archs_loose_intersection(")
    )
    assert missing.guard == (
        f"cmake/archs.cmake:{guard}: cuda_archs_loose_intersection(_GF_ARCHS "
        f'"10.0a;10.0f;12.0a;12.0f" 12.1a) (in sample_guarded_family() at CMakeLists.txt:{call})'
    )


def test_plan_json_names_every_cell_with_skip_reasons() -> None:
    done = kernel_matrix("plan", "matrix.yaml", "--format", "json")
    cells = json.loads(done.stdout)["cells"]
    assert {"planned", "unsupported"} <= {c["status"] for c in cells}
    assert all(c["reason"] for c in cells if c["status"] != "planned")


def test_cutlass_arch_guard_stub_is_hollow_and_the_a_guard_fixes_it(tmp_path: Path) -> None:
    """A real CuTe wgmma kernel (headers from PyPI nvidia-cutlass, provisioned by the
    tool) guarded by "9.0" instead of "9.0a": the plain sm_90 cubin holds a printf +
    trap stub of 80+ instructions (read by hand with cuobjdump -sass: BPT.TRAP after
    each CALL.ABS.NOINC to vprintf, no WARPGROUP instruction), hollow on 9.0."""
    done = kernel_matrix(
        "run", "examples/cutlass-stub.yaml", "--out", str(tmp_path / "r"),
        "--build-dir", str(tmp_path / "b"), "--no-cache",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    results = {r.id: r for r in load_results([tmp_path / "r"])}
    stub = verdicts(results["cu13.0-9.0-plain-guard"])[("cutlass_wgmma_sm90", "9.0")]
    assert stub.status == HOLLOW and stub.served_by == ("sm_90",)
    assert "arch-guard stub (every path traps: 3 traps" in stub.reason
    inventory = results["cu13.0-9.0-plain-guard"].inventory
    assert inventory is not None
    (kernel,) = [
        k for lib in inventory.libraries for c in lib.cubins for k in c.kernels
        if "cutlass_wgmma_sm90_kernel" in k.name
    ]  # fmt: skip
    assert kernel.instructions > 8 and kernel.hollow  # the old count alone said present
    fixed = verdicts(results["cu13.0-9.0-fixed"])[("cutlass_wgmma_sm90", "9.0")]
    assert fixed.status == PRESENT and fixed.served_by == ("sm_90a",)
    assert "hollow on 9.0" in done.stdout
    # Its warp-specialized twin: one warpgroup exits without trapping, so "every path
    # traps" does not hold (by hand, cuobjdump -sass: an EXIT reached by the branch at
    # 0x30 before any BPT.TRAP); the arch-guard message it loads (ULDC c[0x4][0x8] ->
    # "Attempting to use wgmma.fence without CUTE_ARCH_MMA_SM90A_ENABLED") and its
    # missing tensor-core instructions make it hollow.
    twin = verdicts(results["cu13.0-9.0-plain-guard"])[("cutlass_ws_sm90", "9.0")]
    assert twin.status == HOLLOW and twin.served_by == ("sm_90",)
    assert "0 tensor-core instructions of" in twin.reason
    assert "without CUTE_ARCH_MMA_SM90A_ENABLED" in twin.reason
    assert "every path traps" not in twin.reason
    fixed = verdicts(results["cu13.0-9.0-fixed"])[("cutlass_ws_sm90", "9.0")]
    assert fixed.status == PRESENT and fixed.served_by == ("sm_90a",)
