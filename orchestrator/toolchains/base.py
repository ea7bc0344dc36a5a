"""What every CUDA toolchain provider shares: the cache's root, the :class:`Toolchain`
they hand out, asking an nvcc its version, what this process did to provision a
toolchain (for the cell log), and pip's failures in one line."""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.archs import CudaVersion
from orchestrator.common.errors import ToolchainError
from orchestrator.common.fsutil import cache_root as cache_root

LOCK_TIMEOUT_S = 3600
_NVCC_RELEASE = re.compile(r"release (\d+)\.(\d+), V(\d+\.\d+\.\d+)")


@dataclass(frozen=True)
class Toolchain:
    """A usable CUDA toolkit: ``home`` is a CUDA_HOME with bin/nvcc."""

    cuda: CudaVersion
    home: Path
    full_version: str
    origin: str  # "pypi", "debian" or "system"

    @property
    def nvcc(self) -> Path:
        return self.home / "bin" / "nvcc"

    def describe(self) -> str:
        return f"CUDA {self.full_version} ({self.origin}, {self.home})"


def nvcc_version(nvcc: Path) -> tuple[CudaVersion, str]:
    """Ask a real nvcc for its version: ``(13.0, "13.0.88")``. Asked once per file
    and process (planning and every cell look at the same system toolkits); a
    replaced file (other inode, size or mtime) is asked again."""
    try:
        info = Path(nvcc).stat()
    except OSError as exc:
        raise ToolchainError(f"{nvcc}: cannot run nvcc --version: {exc}") from None
    return _nvcc_version(str(nvcc), info.st_ino, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _nvcc_version(nvcc: str, inode: int, size: int, mtime_ns: int) -> tuple[CudaVersion, str]:
    try:
        out = subprocess.run(
            [nvcc, "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"{nvcc}: cannot run nvcc --version: {exc}") from None
    match = _NVCC_RELEASE.search(out)
    if not match:
        raise ToolchainError(f"{nvcc}: unexpected nvcc --version output")
    return CudaVersion(int(match[1]), int(match[2])), match[3]


# What this process installed, per thing installed ("CUDA 13.0 toolchain"): pip's
# lines and a summary, for the log of the cell that waited for it.
PROVISIONING: dict[str, list[str]] = {}


def _toolchain_what(cuda: CudaVersion) -> str:
    return f"CUDA {cuda} toolchain"


# pip's words for a package index it could not reach (it then says only "No matching
# distribution found", as if the version did not exist).
_UNREACHABLE = (  # the most telling first
    re.compile(
        r"Connection refused|Temporary failure in name resolution|Name or service not known|"
        r"Network is unreachable|SSLError|ProxyError|timed out",
        re.IGNORECASE,
    ),
    re.compile(r"NewConnectionError|Max retries exceeded|Could not fetch URL", re.IGNORECASE),
)


def pip_failure(stderr: str) -> str:
    r"""The cause of a failed ``pip install``, in one line.

    >>> pip_failure("ERROR: Could not install packages due to an OSError: "
    ...             "[Errno 28] No space left on device")
    'no space left on device (free some, or set KERNEL_MATRIX_CACHE to a larger disk)'
    >>> pip_failure("WARNING: Retrying ... NewConnectionError(...: Failed to establish a "
    ...             "new connection: [Errno 111] Connection refused')': /simple/cuda-toolkit/\n"
    ...             "ERROR: No matching distribution found for cuda-toolkit==13.0.*")
    'the package index is unreachable (Connection refused); check the network, PIP_INDEX_URL or the proxy'
    """
    if "No space left" in stderr:
        return "no space left on device (free some, or set KERNEL_MATRIX_CACHE to a larger disk)"
    for pattern in _UNREACHABLE:
        unreachable = pattern.search(stderr)
        if unreachable:
            return (
                f"the package index is unreachable ({unreachable[0]}); check the network, "
                "PIP_INDEX_URL or the proxy"
            )
    return (stderr.strip().splitlines() or ["(no output)"])[-1]
