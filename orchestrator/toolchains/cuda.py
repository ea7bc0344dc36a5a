"""CUDA toolchains: provisioned from PyPI (13.x) or Debian (12.4, 12.5: ``debian``),
or found on the system (any).

CUDA 13.x: NVIDIA's ``cuda-toolkit`` meta-package on PyPI pins a consistent set of
components (nvcc, nvvm, crt, cudart, cccl); we install ``cuda-toolkit[...]==13.X.*``
once per minor version into the cache, lay it out as a CUDA_HOME that nvcc and
CMake accept (the wheels ship ``lib`` where ``nvcc.profile`` looks for ``lib64``),
and reuse it. A file lock keeps parallel cells from racing.

CUDA 12.x has no compiler on PyPI (``nvidia-cuda-nvcc-cu12`` ships only ptxas,
nvvm and headers): 12.4 and 12.5 come from Debian's non-free archive
(:mod:`orchestrator.toolchains.debian`); the others need a system toolkit
(``--cuda-home``, ``CUDA_HOME``, ``nvcc`` on PATH, ``/usr/local/cuda-12.X``) or the
docker backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.archs import CudaVersion
from orchestrator.common import progress, stopping
from orchestrator.common.errors import ToolchainError, ToolError
from orchestrator.common.fsutil import staged_directory
from orchestrator.common.words import counted
from orchestrator.toolchains import debian
from orchestrator.toolchains.base import (  # re-exported: callers import them from here
    LOCK_TIMEOUT_S as LOCK_TIMEOUT_S,
)
from orchestrator.toolchains.base import PROVISIONING as PROVISIONING
from orchestrator.toolchains.base import Toolchain as Toolchain
from orchestrator.toolchains.base import _toolchain_what
from orchestrator.toolchains.base import cache_root as cache_root
from orchestrator.toolchains.base import nvcc_version as nvcc_version
from orchestrator.toolchains.base import pip_failure as pip_failure

# Components a build needs; the meta-package pins their versions to one release.
PYPI_COMPONENTS = ("nvcc", "nvvm", "crt", "cudart", "cccl")
PYPI_FIRST_MAJOR = 13
INSTALL_TIMEOUT_S = 1800


def system_candidates(cuda_homes: Sequence[Path] = ()) -> list[Path]:
    """CUDA_HOME directories to look at, most explicit first."""
    candidates = [Path(p) for p in cuda_homes]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(Path(on_path).resolve().parent.parent)
    candidates += [*sorted(Path("/usr/local").glob("cuda-*")), Path("/usr/local/cuda")]
    seen: list[Path] = []
    for c in candidates:
        if c not in seen and (c / "bin" / "nvcc").is_file():
            seen.append(c)
    return seen


def find_system(cuda: CudaVersion, cuda_homes: Sequence[Path] = ()) -> Toolchain | None:
    """A system toolkit whose nvcc is exactly ``cuda`` (major.minor), or None."""
    for home in system_candidates(cuda_homes):
        try:
            version, full = nvcc_version(home / "bin" / "nvcc")
        except ToolchainError:
            continue
        if version == cuda:
            return Toolchain(cuda, home, full, "system")
    return None


def pypi_available(cuda: CudaVersion) -> bool:
    """Whether PyPI carries a full compiler for this version."""
    return cuda.major >= PYPI_FIRST_MAJOR


def unavailable_remedy(cuda: CudaVersion) -> str:
    """The exact remedy for a version that has no toolchain here."""
    if debian.debian_available(cuda):
        return debian.availability(cuda) or debian.unavailable(cuda, "not provisioned")
    return (
        f"toolchain unavailable: CUDA {cuda} has no compiler on PyPI; pass "
        f"--cuda-home /usr/local/cuda-{cuda} (a CUDA {cuda} toolkit), set CUDA_HOME, "
        f"or use --backend docker (nvidia/cuda:{cuda}.x-devel images)"
    )


def pypi_home(cuda: CudaVersion) -> Path:
    return cache_root() / "toolchains" / f"cuda-{cuda}"


def cuda_home_in(install_dir: Path, cuda: CudaVersion) -> Path:
    return install_dir / "nvidia" / f"cu{cuda.major}"


def find_cached(cuda: CudaVersion) -> Toolchain | None:
    """An already-provisioned toolchain (PyPI's, or Debian's for 12.4/12.5), without
    installing anything."""
    if debian.debian_available(cuda):
        return debian.find_cached(cuda)
    marker = pypi_home(cuda) / "toolchain.json"
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    home = Path(info["home"])
    if not (home / "bin" / "nvcc").is_file():
        return None
    return Toolchain(cuda, home, info["full_version"], "pypi")


def provision(cuda: CudaVersion, *, log: Iterable[str] | None = None) -> Toolchain:
    """Install (once) and return the PyPI toolchain for ``cuda``."""
    if not pypi_available(cuda):
        raise ToolchainError(unavailable_remedy(cuda))
    cached = find_cached(cuda)
    if cached:
        return cached
    target = pypi_home(cuda)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(target) + ".lock")
        with stopping.locked(lock, f"installing the CUDA {cuda} toolchain", LOCK_TIMEOUT_S):
            cached = find_cached(cuda)  # another process may have finished meanwhile
            if cached:
                return cached
            return _install(cuda, target)
    except Timeout:
        raise ToolchainError(f"{target}.lock: timed out waiting for another install") from None


def provisioning_lines(cuda: CudaVersion) -> list[str]:
    """What this process did to install the toolchain of ``cuda`` (pip's lines and a
    summary), for the cell log; empty when it came from the cache."""
    return list(PROVISIONING.get(_toolchain_what(cuda), ()))


def _install(cuda: CudaVersion, target: Path) -> Toolchain:
    requirement = f"cuda-toolkit[{','.join(PYPI_COMPONENTS)}]=={cuda}.*"
    with staged_directory(target, f".cuda-{cuda}-") as staging:
        _pip_install(staging, [requirement], what=_toolchain_what(cuda))
        home = cuda_home_in(staging, cuda)
        if not (home / "bin" / "nvcc").is_file():
            raise ToolchainError(f"{requirement}: installed, but it has no bin/nvcc")
        lib64 = home / "lib64"
        if not lib64.exists():
            # nvcc.profile links with -L$(TOP)/lib64; the wheels ship lib/.
            lib64.symlink_to("lib")
    home = cuda_home_in(target, cuda)
    version, full = nvcc_version(home / "bin" / "nvcc")
    if version != cuda:
        raise ToolchainError(f"{requirement} installed nvcc {full}, not CUDA {cuda}")
    _write_json(target / "toolchain.json", {"home": str(home), "full_version": full})
    return Toolchain(cuda, home, full, "pypi")


def _pip_install(target: Path, requirements: list[str], *, what: str) -> None:
    """pip install into ``target``, reporting the download as it goes (files, size,
    rate: ``orchestrator.common.progress``) and keeping pip's own lines for the cell log
    (``PROVISIONING``)."""
    command = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
        "--no-warn-script-location", "--progress-bar", "off", "--target", str(target),
        *requirements,
    ]  # fmt: skip
    # pip's downloads land in its temporary directory: one we watch.
    scratch = Path(tempfile.mkdtemp(prefix=".pip-tmp-", dir=target.parent))
    watch = DownloadWatch(scratch, what)
    lines = [f"$ pip install {' '.join(requirements)}"]
    try:
        with tempfile.TemporaryFile(mode="w+") as errors:
            proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "TMPDIR": str(scratch)},
            )
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                proc.kill()

            timer = threading.Timer(INSTALL_TIMEOUT_S, kill)
            timer.start()
            watch.start()
            try:
                with stopping.killed_on_stop(proc):  # Ctrl-C of the run: pip stops now
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        lines.append(line.rstrip())
                        watch.saw(line)
                    status = proc.wait()
            finally:
                timer.cancel()
                watch.stop()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            errors.seek(0)
            stderr = errors.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines.append(watch.summary())
    PROVISIONING.setdefault(what, []).extend(lines)
    stopping.check(f"installing {what}")  # (killed by the stop, or by Ctrl-C itself)
    if timed_out.is_set():
        raise ToolchainError(f"installing {what} timed out after {INSTALL_TIMEOUT_S} s")
    if status != 0:
        raise ToolchainError(
            f"installing {what} ({' '.join(requirements)}) into {target.parent} failed: "
            f"{pip_failure(stderr)}"
        )


_ANNOUNCED = re.compile(r"^\s*Downloading \S+ \(([\d.]+) (kB|MB|GB)\)")
_INSTALLING = "Installing collected packages"  # pip's line once every download is done
_UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}


def _mb(size: float) -> str:
    """Megabytes, with a decimal below 10: ``0.3``, ``53.2``... ``271``."""
    return f"{size / 1e6:.1f}" if size < 10e6 else f"{size / 1e6:.0f}"


class DownloadWatch:
    """Watches pip's temporary directory while it downloads: what pip announced
    ("Downloading x.whl (53.2 MB)") and how much has arrived, reported every few
    seconds as ``downloading CUDA 13.0 toolchain: 3 files, 92 of 183 MB, 8.1 MB/s``.
    Once pip starts installing, the download's numbers are final: one line says so
    (``installing CUDA 13.0 toolchain: 3 files, 183 MB downloaded in 23 s, 8.0
    MB/s``), not again and again with a rate that falls as the install goes on."""

    def __init__(self, scratch: Path, what: str, interval: float = 2.0) -> None:
        self.scratch, self.what, self.interval = scratch, what, interval
        self.files = 0
        self.announced = 0.0
        self._sizes: dict[str, int] = {}
        self._started = time.monotonic()
        self._downloaded_at: float | None = None  # when pip began to install
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def saw(self, line: str) -> None:
        match = _ANNOUNCED.match(line)
        if match:
            self.files += 1
            self.announced += float(match[1]) * _UNITS[match[2]]
        elif line.startswith(_INSTALLING) and self._downloaded_at is None:
            self.received()  # the last sizes, before pip deletes what it installs
            self._downloaded_at = time.monotonic()

    def received(self) -> int:
        """Bytes of every download seen (pip writes each into a ``pip-unpack-*``
        folder of its temporary directory), each at its largest: pip deletes a
        download once it is installed. (Its install tree, ``pip-target-*``, is not
        a download.)"""
        with self._lock:  # pip's reader thread and the reporting thread both ask
            for path in self.scratch.glob("pip-unpack-*/*"):
                with contextlib.suppress(OSError):
                    if path.is_file():
                        size = path.stat().st_size
                        key = str(path)
                        self._sizes[key] = max(size, self._sizes.get(key, 0))
            return sum(self._sizes.values())

    def line(self) -> str:
        if self._downloaded_at is not None:
            with self._lock:
                got = sum(self._sizes.values())
            took = max(self._downloaded_at - self._started, 1e-6)
            return (
                f"installing {self.what}: {counted(self.files, 'file')}, {_mb(got)} MB "
                f"downloaded in {took:.0f} s, {got / 1e6 / took:.1f} MB/s"
            )
        took = max(time.monotonic() - self._started, 1e-6)
        got = self.received()
        of = f" of {_mb(self.announced)}" if self.announced else ""
        return (
            f"downloading {self.what}: {counted(self.files, 'file')}, {_mb(got)}{of} MB, "
            f"{got / 1e6 / took:.1f} MB/s, {took:.0f} s"
        )

    def summary(self) -> str:
        took = time.monotonic() - self._started
        return (
            f"kernel-matrix: {self.what}: {counted(self.files, 'file')} downloaded "
            f"({_mb(self.announced)} MB announced by pip) and installed in {took:.0f} s"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        said = ""
        while not self._stop.wait(self.interval):
            line = self.line()
            if line != said:  # the install line is said once
                progress.report(line)
                said = line


def _write_json(path: Path, data: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def resolve(
    cuda: CudaVersion, cuda_homes: Sequence[Path] = (), *, install: bool = True
) -> Toolchain | None:
    """The toolchain a local cell of ``cuda`` uses: an explicit/system toolkit of the
    exact version first, else PyPI (13.x), else Debian's packages (12.4, 12.5; a
    failure to fetch them is a ``ToolchainError`` naming why). None when none of them
    exists (and, with ``install=False``, when the PyPI/Debian one is not cached yet)."""
    system = find_system(cuda, cuda_homes)
    if system:
        return system
    if pypi_available(cuda):
        return provision(cuda) if install else find_cached(cuda)
    if debian.debian_available(cuda):
        return debian.provision(cuda) if install else debian.find_cached(cuda)
    return None


def local_availability(cuda: CudaVersion, cuda_homes: Sequence[Path] = ()) -> str | None:
    """None if a local build of ``cuda`` can get a toolchain, else the remedy (for
    Debian's versions: why this host cannot fetch them, read without the network)."""
    if pypi_available(cuda) or find_system(cuda, cuda_homes):
        return None
    if debian.debian_available(cuda):
        return debian.availability(cuda)
    return unavailable_remedy(cuda)


# --- binary tools (cuobjdump, cu++filt) ---------------------------------------------


def cuobjdump(explicit: Path | None = None) -> Path:
    """A real cuobjdump: ``explicit``, ``KERNEL_MATRIX_CUOBJDUMP``, a cached or
    system one, or the newest from PyPI (``nvidia-cuda-cuobjdump``; it reads 12.x
    binaries too)."""
    return _binary_tool("cuobjdump", "nvidia-cuda-cuobjdump", explicit)


def nvdisasm(explicit: Path | None = None) -> Path:
    """A real nvdisasm (``cuobjdump -sass`` runs it to disassemble cubins), found or
    installed like cuobjdump (``KERNEL_MATRIX_NVDISASM``, ``nvidia-cuda-nvdisasm``)."""
    return _binary_tool("nvdisasm", "nvidia-cuda-nvdisasm", explicit)


CUTLASS_PACKAGE = "nvidia-cutlass==4.2.0.0"
CUTLASS_INCLUDE = "cutlass_library/source/include"
CUTLASS_PLACEHOLDER = "{cutlass_include}"


def cutlass_headers() -> Path:
    """CUTLASS/CuTe headers (the include directory holding ``cute/`` and ``cutlass/``),
    from the PyPI package ``nvidia-cutlass``, installed once (under a lock) into the
    cache. A matrix's ``cmake_options`` say ``{cutlass_include}`` to get this path."""
    target = cache_root() / "tools" / "cutlass"
    include = target / CUTLASS_INCLUDE
    if (include / "cute").is_dir():
        return include
    target.parent.mkdir(parents=True, exist_ok=True)
    with stopping.locked(FileLock(str(target) + ".lock"), "CUTLASS headers", LOCK_TIMEOUT_S):
        if not (include / "cute").is_dir():
            with staged_directory(target, ".cutlass-") as staging:
                _pip_install(staging, [CUTLASS_PACKAGE], what="CUTLASS headers")
    if not (include / "cute").is_dir():
        raise ToolError(f"{CUTLASS_PACKAGE} installed into {target} has no {CUTLASS_INCLUDE}/cute")
    return include


def _binary_tool(name: str, package: str, explicit: Path | None) -> Path:
    """``explicit``, ``KERNEL_MATRIX_<NAME>``, the cached PyPI copy, one on PATH, or
    the newest from PyPI installed (once, under a lock) into the cache."""
    for candidate in (explicit, os.environ.get(f"KERNEL_MATRIX_{name.upper()}")):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise ToolError(f"{name} '{path}' does not exist")
            return path
    target = cache_root() / "tools" / name
    pattern = f"nvidia/cu*/bin/{name}"
    found = sorted(target.glob(pattern))
    if found:
        return found[-1]
    system = shutil.which(name)
    if system:
        return Path(system)
    target.parent.mkdir(parents=True, exist_ok=True)
    with stopping.locked(FileLock(str(target) + ".lock"), f"installing {name}", LOCK_TIMEOUT_S):
        found = sorted(target.glob(pattern))
        if not found:
            with staged_directory(target, f".{name}-") as staging:
                _pip_install(staging, [package], what=name)
            found = sorted(target.glob(pattern))
    if not found:
        raise ToolError(f"{package} installed into {target} has no bin/{name}")
    return found[-1]
