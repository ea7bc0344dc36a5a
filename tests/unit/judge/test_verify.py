"""verify-on-device: reading what the GPU reported (the launches themselves ran on
an H100; see docs/gpu-verification.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.judge.expect import HOLLOW, MISSING, PRESENT
from orchestrator.judge.verify import Check, decode_image, describe_code, observed_status

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, PRESENT), (-1, HOLLOW), (209, MISSING), (98, MISSING), (719, HOLLOW), (None, MISSING)],
)
def test_observed_status(code: int | None, status: str) -> None:
    assert observed_status(code) == status


def test_codes_are_described() -> None:
    assert describe_code(209) == "CUDA error 209 (cudaErrorNoKernelImageForDevice)"
    assert describe_code(None) == "runner not in any library"


@pytest.mark.parametrize(("code", "arch"), [(901, "90a"), (900, "90"), (800, "80"), (1002, "100f")])
def test_image_codes(code: int, arch: str) -> None:
    assert decode_image(code) == arch


def test_a_check_agrees_only_when_status_and_image_match() -> None:
    base = Check("dispatch", "9.0", PRESENT, "sm_90a", PRESENT, "ran", "90a")
    assert base.agrees
    assert not Check("dispatch", "9.0", PRESENT, "sm_90", PRESENT, "ran", "90a").agrees
    assert Check("dispatch", "9.0", PRESENT, "compute_80", PRESENT, "ran", "80").agrees
    assert not Check("nvfp4", "9.0", MISSING, "", PRESENT, "ran").agrees


def test_without_a_gpu_it_says_so_and_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("this machine has an NVIDIA driver")
    code = main(
        ["verify-on-device", str(REPO / "matrix.yaml"), "--families",
         str(REPO / "examples/sample_ext/families.yaml")]
    )  # fmt: skip
    assert code == 3
    assert "needs a GPU" in capsys.readouterr().err
