"""What ``check`` tells a person about to launch: one sentence per family a GPU lacks,
naming a release whose truth table serves it, or the arch list to build it for."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.archs import ComputeCapability
from orchestrator.read.installed import InstalledDistribution
from orchestrator.reporting import device_view
from orchestrator.reporting.device_view import what_to_do

SPARK, B300 = ComputeCapability(12, 1), ComputeCapability(10, 3)


def installed(version: str) -> InstalledDistribution:
    return InstalledDistribution("vllm", version, "/usr/bin/python3", (Path("_C.so"),))


@pytest.fixture(autouse=True)
def x86_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_view.platform, "machine", lambda: "x86_64")


def test_an_older_release_is_told_the_newest_that_serves_every_device() -> None:
    """vllm-truth.md: 0.19.0 (CUDA 12.9) has NVFP4 only as sm_100a/sm_120a, which 10.3
    and 12.1 cannot load; 0.21.0, 0.25.0 and 0.33.0 serve both."""
    line = what_to_do("vllm", "nvfp4_quant", [B300, SPARK], installed("0.19.0"))
    assert line == (
        "nvfp4_quant on 10.3, 12.1: vllm 0.33.0 (x86_64 wheel) has it "
        "(pip install 'vllm==0.33.0'), or build from source with "
        'TORCH_CUDA_ARCH_LIST="10.3a;12.1a"'
    )


def test_a_release_the_truth_says_has_it_is_a_broken_install() -> None:
    line = what_to_do("vllm", "marlin", [SPARK], installed("0.33.0"))
    assert "the truth table says vllm 0.33.0 (x86_64) has it, but this install does not" in line


def test_no_release_serves_it_then_only_the_build_is_suggested() -> None:
    """Machete is hollow on 12.x in every vLLM table (its kernels are sm_90a only)."""
    line = what_to_do("vllm", "machete", [SPARK], installed("0.33.0"))
    assert line == (
        "machete on 12.1: no release known to this tool has it; "
        'build from source with TORCH_CUDA_ARCH_LIST="12.1a"'
    )
