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


def vllm_wheel(release: str) -> tuple[Path | None, str]:
    """(the cached wheel of ``release``, "") or (None, why it could not be had)."""
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(str(WHEEL_DIR / f".vllm-{release}.lock")):
        found = sorted(WHEEL_DIR.glob(f"vllm-{release}-*.whl"))
        if found:
            return found[-1], ""
        result = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", f"vllm=={release}", "--no-deps",
                "--only-binary=:all:", "--quiet", "-d", str(WHEEL_DIR),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )  # fmt: skip
        found = sorted(WHEEL_DIR.glob(f"vllm-{release}-*.whl"))
    if found:
        return found[-1], ""
    reason = (result.stderr or result.stdout).strip()[-300:]
    return None, f"vLLM {release} wheel not cached in {WHEEL_DIR} and not downloadable: {reason}"
