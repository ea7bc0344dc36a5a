"""The vLLM wheels the integration tests read: kept in ``~/.cache/kernel-matrix/wheels``
between runs, downloaded with pip (from pip's configured index) the first time a
test needs one, whichever test that is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from orchestrator.toolchains.cuda import cache_root

WHEEL_DIR = cache_root() / "wheels"


# pip takes --platform literally: vLLM's aarch64 wheels carry one of these tags.
AARCH64_TAGS = (
    "manylinux_2_28_aarch64",
    "manylinux_2_31_aarch64",
    "manylinux_2_24_aarch64",
    "manylinux2014_aarch64",
)


def vllm_wheel(release: str, machine: str = "") -> tuple[Path | None, str]:
    """(the cached wheel of ``release``, "") or (None, why it could not be had);
    ``machine="aarch64"`` gets the aarch64 wheel (kept in a folder of its own),
    whatever this machine is."""
    folder = WHEEL_DIR / machine if machine else WHEEL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".vllm-{release}.lock")):
        found = sorted(folder.glob(f"vllm-{release}-*.whl"))
        if found:
            return found[-1], ""
        for platform in AARCH64_TAGS if machine == "aarch64" else ("",):
            result = subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
                    "--only-binary=:all:", "--quiet", "-d", str(folder),
                    *(["--platform", platform] if platform else []),
                ],
                capture_output=True,
                text=True,
                timeout=1800,
            )  # fmt: skip
            if result.returncode == 0:
                break
        found = sorted(folder.glob(f"vllm-{release}-*.whl"))
    if found:
        return found[-1], ""
    reason = (result.stderr or result.stdout).strip()[-300:]
    return None, f"vLLM {release} wheel not cached in {WHEEL_DIR} and not downloadable: {reason}"
