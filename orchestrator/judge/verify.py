"""Ground truth on a real GPU: does the probe's verdict hold when kernels launch?

For each family that names ``runners`` (extern "C" ``int fn(void)`` entry points
that launch one of its kernels), on the local GPU:

* the **prediction** is what the probe says the driver gives this device
  (``expect.serve``: present, hollow or missing, and which code object);
* the **observation** is what really happens when each runner is called, in a
  fresh process (a trapping kernel poisons its CUDA context): 0 = it ran and
  computed the right values (present), -1 = it launched and did nothing
  (hollow), a CUDA error = it could not run (no kernel image: missing; a trap or
  other launch failure: hollow), runner symbol absent = the family was not built.

Any disagreement is a bug of this tool. Families with an ``image_reporter`` also
have the driver's choice of code object checked against ``archs.select_image``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.archs import ComputeCapability, Target, Variant
from orchestrator.common.errors import InfraError
from orchestrator.judge.driver import local_devices
from orchestrator.judge.expect import HOLLOW, MISSING, PRESENT, family_kernels, serve
from orchestrator.read.inventory import Inventory
from orchestrator.symbols import FamilyRule

# CUDA runtime error codes that mean "this device has no code for the kernel".
NO_KERNEL_IMAGE = {209: "cudaErrorNoKernelImageForDevice", 98: "cudaErrorInvalidDeviceFunction"}
RUN_TIMEOUT_S = 120

# Runs in a child process: load every library (so a runner finds its kernels), call
# one symbol, print its result as JSON between markers. Symbol absent -> null. The
# markers matter: a kernel's device printf (a CUTLASS arch-guard stub prints
# "Attempting to use ..." from every thread) goes to the same stdout, unordered and
# without newlines, around the answer.
RESULT_START = "<<kernel-matrix-result>>"
RESULT_END = "<</kernel-matrix-result>>"
_CHILD = f"""
import ctypes, json, sys
symbol, paths = sys.argv[1], sys.argv[2:]
answer = None
for path in paths:
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    try:
        fn = getattr(lib, symbol)
    except AttributeError:
        continue
    fn.restype = ctypes.c_int
    answer = {{"library": path, "code": fn()}}
    break
print("\\n{RESULT_START}" + json.dumps(answer) + "{RESULT_END}", flush=True)
"""


def device_capability() -> ComputeCapability:
    """Compute capability of GPU 0, asked of the driver (libcuda) directly."""
    return local_devices()[0].capability


def call_entry(symbol: str, libraries: Sequence[Path]) -> tuple[str | None, int | None]:
    """Call ``symbol`` from the first library that has it, in a fresh process:
    (library, result) or (None, None) when no library exports it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, symbol, *[str(p.resolve()) for p in libraries]],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"{symbol}: no answer within {RUN_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InfraError(f"{symbol}: the process calling it died ({last})")
    start = done.stdout.rfind(RESULT_START)
    end = done.stdout.find(RESULT_END, start)
    if start < 0 or end < 0:
        raise InfraError(f"{symbol}: the process calling it gave no answer")
    answer: dict[str, Any] | None = json.loads(done.stdout[start + len(RESULT_START) : end])
    if answer is None:
        return None, None
    return str(answer["library"]), int(answer["code"])


def observed_status(code: int | None) -> str:
    if code is None:
        return MISSING  # not built: no library exports its runner
    if code == 0:
        return PRESENT
    if code == -1 or code not in NO_KERNEL_IMAGE:
        return HOLLOW  # launched and did nothing, or trapped
    return MISSING


def describe_code(code: int | None) -> str:
    if code is None:
        return "runner not in any library"
    if code == 0:
        return "ran, right values"
    if code == -1:
        return "ran, did no work"
    return f"CUDA error {code}" + (f" ({NO_KERNEL_IMAGE[code]})" if code in NO_KERNEL_IMAGE else "")


def decode_image(code: int) -> str:
    """901 -> ``sm_90a``-or-``compute_90a`` spelled as the arch it ran: ``90a``."""
    variant = {0: Variant.PLAIN, 1: Variant.ARCH_SPECIFIC, 2: Variant.FAMILY}.get(code % 10)
    if variant is None:
        return f"?{code}"
    return f"{code // 10}{variant.value}"


VERIFY_SCHEMA_VERSION = 1  # of ``verify-on-device --json`` (schemas/verify.schema.json)


@dataclass(frozen=True)
class Check:
    family: str
    device: str
    predicted: str
    predicted_image: str  # the code object the probe says the driver loads
    observed: str
    observed_detail: str
    observed_image: str = ""

    @property
    def agrees(self) -> bool:
        if self.predicted != self.observed:
            return False
        return not self.observed_image or self.observed_image == _arch_of(self.predicted_image)

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "device": self.device,
            "predicted": self.predicted,
            "predicted_image": self.predicted_image,
            "observed": self.observed,
            "observed_detail": self.observed_detail,
            "observed_image": self.observed_image,
            "agrees": self.agrees,
        }


def _arch_of(target_name: str) -> str:
    """``sm_90a`` / ``compute_90a`` -> ``90a``: what an image reporter can see."""
    if not target_name:
        return ""
    target = Target.parse(target_name)
    return f"{target.cc.sm}{target.variant.value}"


def verify(
    inventory: Inventory,
    families: Sequence[FamilyRule],
    libraries: Sequence[Path],
    device: ComputeCapability,
) -> list[Check]:
    """Predicted vs observed, for every family that has runners."""
    checks = []
    for family in families:
        if not family.runners:
            continue
        predicted, served = serve(family_kernels(inventory, family), family, device)
        image = sorted({t.name for _, t, _ in served}, key=lambda n: Target.parse(n).sort_key())
        results = [call_entry(symbol, libraries) for symbol in family.runners]
        statuses = [observed_status(code) for _, code in results]
        observed = PRESENT if PRESENT in statuses else HOLLOW if HOLLOW in statuses else MISSING
        detail = "; ".join(
            f"{symbol}: {describe_code(code)}"
            for symbol, (_, code) in zip(family.runners, results, strict=True)
        )
        observed_image = ""
        if family.image_reporter and observed != MISSING:
            _, code = call_entry(family.image_reporter, libraries)
            if code is not None and code > 0:
                observed_image = decode_image(code)
        checks.append(
            Check(
                family.name,
                str(device),
                predicted,
                image[-1] if image else "",
                observed,
                detail,
                observed_image,
            )
        )
    return checks
