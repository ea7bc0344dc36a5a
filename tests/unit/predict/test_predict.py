"""Reading nvcc flags and source files for the configure-tier prediction (the File
API itself is exercised by tests/integration against real CMake)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.common.errors import BuildError
from orchestrator.predict.codemodel import declared_kernels, gencode_targets


@pytest.mark.parametrize(
    ("fragments", "expected"),
    [
        (["-gencode=arch=compute_90a,code=sm_90a"], ["sm_90a"]),
        (["-gencode arch=compute_100f,code=sm_100f"], ["sm_100f"]),
        (['"--generate-code=arch=compute_80,code=[compute_80,sm_80]"'], ["compute_80", "sm_80"]),
        (["--generate-code", "arch=compute_121a,code=[sm_121a]"], ["sm_121a"]),
        (["-arch=sm_120f"], ["sm_120f", "compute_120f"]),
        (["-arch=compute_90"], ["compute_90"]),
        (["-arch=compute_90 -code=sm_90,sm_90a"], ["sm_90", "sm_90a"]),
        (["-Xcompiler=-fPIC", "-O3"], []),
        (
            ["-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90a,code=sm_90a"],
            ["sm_90a"],
        ),
    ],
)
def test_gencode_targets(fragments: list[str], expected: list[str]) -> None:
    assert [t.name for t in gencode_targets(fragments)] == expected


@pytest.mark.parametrize("flag", ["-arch=native", "-arch=all-major", "-gencode=arch=compute_90"])
def test_unpredictable_flags_are_errors(flag: str) -> None:
    with pytest.raises(BuildError):
        gencode_targets([flag])


def test_declared_kernels_reads_global_functions(tmp_path: Path) -> None:
    source = tmp_path / "nvfp4_quant_kernels.cu"
    source.write_text(
        "template <typename T>\n__global__ void __launch_bounds__(256) quant(T* x) {}\n"
        "static __global__ void\nscale_kernel (float* y, int n) {}\n"
        "__device__ void helper() {}\n"
    )
    assert declared_kernels(source) == ["nvfp4_quant_kernels", "quant", "scale_kernel"]
