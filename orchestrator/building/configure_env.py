"""The environment a ``build: pip`` project's CMake imports, for the configure tier.

A project built through ``setup.py`` (vLLM) runs CMake with arguments of its own and
a CMake that imports things: ``import torch`` for its CMake config, a CUDA toolkit
that CMake's ``FindCUDAToolkit`` (and torch's) accepts -- ``libcudart.so``, nvrtc,
a ``libcuda.so`` stub --, CUTLASS headers, and sources of other projects that it
would fetch from GitHub at configure time. Everything here comes from the package
index pip is configured with, is installed once into the cache and reused:

* **Python packages** (``configure.python``): installed with ``pip --target`` into
  ``<cache>/python/<key>``, each pinned to the version the source tree's own
  requirements file names (vLLM: ``torch==2.14.0`` in
  ``requirements/build/cuda.txt``), so every ref is configured against its own pin.
* **CUDA toolkit completion**: a CUDA_HOME next to the PyPI toolchain
  (``<toolchain>-cmake``) that adds ``nvidia-cuda-nvrtc`` of the same version,
  unversioned ``.so`` links and a ``libcuda.so`` link stub under ``lib/stubs``
  (configure never runs the driver).
* **Stand-ins** (``configure.stand_ins``): non-empty directories for the projects a
  CMakeLists.txt fetches (``VLLM_FLASH_ATTN_SRC_DIR``, ...), holding the files its
  CMake reads. What those projects build is outside this tier, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from packaging.requirements import InvalidRequirement, Requirement

from orchestrator.common import stopping
from orchestrator.common.errors import ToolchainError
from orchestrator.common.fsutil import staged_directory
from orchestrator.planning.matrix import ConfigureSpec, PythonSpec, StandIn
from orchestrator.toolchains.cuda import (
    INSTALL_TIMEOUT_S,
    LOCK_TIMEOUT_S,
    Toolchain,
    cache_root,
    pip_failure,
)

Progress = Callable[[str], None]
COMPLETE_MARK = "kernel-matrix-complete.json"
# pip's own lines worth showing while a large environment downloads.
_PIP_PROGRESS = re.compile(r"^\s*(Collecting|Downloading|Using cached|Installing collected)\b")


@dataclass(frozen=True)
class ConfigureEnv:
    """What was provisioned for one cell: values for the ``{placeholders}`` of the
    matrix's ``configure`` options."""

    site: Path  # the Python packages (PYTHONPATH)
    cuda_home: Path
    stand_ins: Mapping[str, Path]
    requirements: tuple[str, ...]

    def placeholders(self, build: Path) -> dict[str, str]:
        return {
            "site": str(self.site),
            "python": sys.executable,
            "python_path": os.pathsep.join([str(self.site), *sys.path[1:]]),
            "cuda_home": str(self.cuda_home),
            "build": str(build),
            "cache": str(cache_root()),
            **{f"stand_in:{name}": str(path) for name, path in self.stand_ins.items()},
        }


def expand(value: str, placeholders: Mapping[str, str]) -> str:
    """``{site}/cutlass_library/source`` with the provisioned paths filled in.

    >>> expand("{site}/x:{build}", {"site": "/c/py", "build": "/b"})
    '/c/py/x:/b'
    """
    return re.sub(
        r"\{([a-z_]+(?::[A-Za-z0-9_]+)?)\}",
        lambda m: placeholders.get(m[1], m[0]),
        value,
    )


# --- Python packages ----------------------------------------------------------------


def pinned_requirements(source: Path, spec: PythonSpec) -> list[str]:
    """The requirements to install: each of ``spec.packages`` as the source tree's
    requirements file pins it (markers evaluated for this machine), else unpinned.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> _ = (d / "req.txt").write_text("-r common.txt\\ntorch==2.14.0  # pin\\n"
    ...     'torch==2.14.0+cpu; platform_system == "Nowhere"\\njinja2>=3.1.6\\n')
    >>> pinned_requirements(d, PythonSpec(("none.txt", "req.txt"), ("torch", "jinja2", "regex")))
    ['torch==2.14.0', 'jinja2>=3.1.6', 'regex']
    """
    pins: dict[str, str] = {}
    for name in spec.requirements:
        path = source / name
        if not path.is_file():
            continue
        for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith(("#", "-")):
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            key = requirement.name.lower()
            if key not in pins:
                requirement.marker = None
                pins[key] = str(requirement)
        break  # the first requirements file that exists is the one that counts
    return [pins.get(p.lower(), p) for p in spec.packages]


def provision_python(requirements: Sequence[str], extra: Sequence[str], progress: Progress) -> Path:
    """A directory (for ``PYTHONPATH``) with ``requirements`` and their dependencies,
    and ``extra`` without theirs, installed for this Python once, shared by every
    cell and run that asks for the same. (``import torch`` loads its CUDA libraries,
    the ``nvidia-*`` wheels: about 4 of torch's 5.4 GB, needed all the same.)"""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    listed = [*sorted(requirements), "--no-deps", *sorted(extra)]
    key = hashlib.sha256("\n".join([tag, *listed]).encode()).hexdigest()[:16]
    target = cache_root() / "python" / f"{tag}-{key}"
    what = ", ".join([*requirements, *extra])

    def install(staging: Path) -> None:
        if requirements:
            _pip(["--target", str(staging), *requirements], what=what, progress=progress)
        if extra:
            _pip(["--target", str(staging), "--no-deps", *extra], what=what, progress=progress)
        (staging / "requirements.txt").write_text("\n".join(listed) + "\n")

    return _provisioned(target, install, f"Python packages {what}", progress)


def _pip(arguments: list[str], *, what: str, progress: Progress) -> None:
    """``pip install`` with pip's progress lines passed on (a large environment --
    torch and its CUDA libraries are about 4 GB -- takes minutes to download)."""
    command = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
        "--no-warn-script-location", "--progress-bar", "off", *arguments,
    ]  # fmt: skip
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, stdin=subprocess.DEVNULL
        )
        timer = threading.Timer(INSTALL_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            with stopping.killed_on_stop(proc):  # Ctrl-C of the run: pip stops now
                assert proc.stdout is not None
                for line in proc.stdout:
                    if _PIP_PROGRESS.match(line):
                        progress(line.strip())
                status = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        errors.seek(0)
        stderr = errors.read()
    stopping.check(f"installing {what}")  # (killed by the stop, or by Ctrl-C itself)
    if time.monotonic() > deadline:
        raise ToolchainError(f"installing {what} timed out after {INSTALL_TIMEOUT_S} s")
    if status != 0:
        raise ToolchainError(f"installing {what} failed: {pip_failure(stderr)}")


def _provisioned(
    target: Path, install: Callable[[Path], None], what: str, progress: Progress
) -> Path:
    """``target``, made once by ``install(staging)`` under a file lock and renamed
    into place whole (an interrupted install leaves nothing that looks complete).
    A run's Ctrl-C (:data:`stopping.STOP`) ends the install and the wait for the lock
    at once, with :class:`stopping.Stopped`: a cell that waited for another's install
    does not start one of its own after the stop."""
    if (target / COMPLETE_MARK).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        with stopping.locked(lock, f"provisioning {what}", LOCK_TIMEOUT_S):
            if (target / COMPLETE_MARK).is_file():
                return target
            progress(f"provisioning {what} into {target} (once; cached)")
            started = time.monotonic()
            with staged_directory(target, f".{target.name}-") as staging:
                install(staging)
            seconds = time.monotonic() - started
            size = _tree_size(target)
            _write_mark(target, {"what": what, "seconds": round(seconds, 1), "bytes": size})
            progress(f"provisioned {what}: {size / 1e9:.2f} GB in {seconds:.0f} s")
            return target
    except Timeout:
        raise ToolchainError(f"{target}.lock: timed out waiting for another install") from None


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def _write_mark(target: Path, data: dict[str, object]) -> None:
    tmp = target / (COMPLETE_MARK + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(target / COMPLETE_MARK)


# --- CUDA toolkit, completed for CMake's FindCUDAToolkit and torch ---------------------


def cmake_cuda_home(toolchain: Toolchain, progress: Progress) -> Path:
    """A CUDA_HOME that torch's and vLLM's CMake accept, next to ``toolchain``: its
    files (linked, not copied) plus nvrtc of the same version, unversioned ``.so``
    links, and a ``lib/stubs/libcuda.so`` link stub. A system toolkit is complete
    already and is returned as it is."""
    if toolchain.origin != "pypi":
        return toolchain.home
    base = toolchain.home
    target = cache_root() / "toolchains" / f"cuda-{toolchain.cuda}-cmake"

    def install(staging: Path) -> None:
        extra = staging / "pip"
        _pip(
            ["--target", str(extra), f"nvidia-cuda-nvrtc=={toolchain.cuda}.*"],
            what=f"nvrtc for CUDA {toolchain.cuda}",
            progress=progress,
        )
        nvrtc = next(extra.glob("nvidia/cu*"), None)
        if nvrtc is None:
            raise ToolchainError(f"nvidia-cuda-nvrtc=={toolchain.cuda}.* has no nvidia/cu*")
        home = staging / "home"
        home.mkdir()
        # bin/ holds real files (hard links): nvcc and CMake locate the toolkit from
        # nvcc's real path, which must be this home, not the one without the links.
        shutil.copytree(base / "bin", home / "bin", symlinks=True, copy_function=_link_or_copy)
        for entry in base.iterdir():
            if entry.name not in ("bin", "lib", "lib64", "include"):
                (home / entry.name).symlink_to(entry)
        for sub in ("lib", "include"):
            (home / sub).mkdir()
            for source_dir in (base / sub, nvrtc / sub):
                for entry in source_dir.iterdir() if source_dir.is_dir() else ():
                    link = home / sub / entry.name
                    if not link.exists():
                        link.symlink_to(_relocated(entry, target, staging))
        (home / "lib64").symlink_to("lib")
        _unversioned_links(home / "lib")
        stubs = home / "lib" / "stubs"
        stubs.mkdir()
        _link_stub(stubs / "libcuda.so", "libcuda.so.1")

    root = _provisioned(target, install, f"CMake-ready CUDA {toolchain.cuda} toolkit", progress)
    return root / "home"


def _relocated(entry: Path, target: Path, staging: Path) -> Path:
    """Where ``entry`` will be once the staging directory is renamed to ``target``
    (links are absolute: the toolchain and the completion live in one cache)."""
    if entry.is_relative_to(staging):
        return target / entry.relative_to(staging)
    return entry


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _unversioned_links(lib: Path) -> None:
    """``libcudart.so`` -> ``libcudart.so.13`` (the wheels ship only the SONAME)."""
    for entry in sorted(lib.iterdir()):
        match = re.match(r"^(lib\w+\.so)\.\d+$", entry.name)
        if match and not (lib / match[1]).exists():
            (lib / match[1]).symlink_to(entry.name)


def _link_stub(path: Path, soname: str) -> None:
    """An empty shared library to link against (CMake finds ``CUDA::cuda_driver``);
    made with the host C compiler a CUDA build needs anyway."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    if compiler is None:
        raise ToolchainError("no host C compiler (cc, gcc or g++) to make the libcuda.so stub")
    with tempfile.TemporaryDirectory() as scratch:
        empty = Path(scratch) / "stub.c"
        empty.write_text("void kernel_matrix_libcuda_stub(void) {}\n")
        result = subprocess.run(
            [compiler, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(path), str(empty)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode != 0:
        raise ToolchainError(f"making the libcuda.so stub failed: {result.stderr.strip()[:200]}")


# --- stand-ins ------------------------------------------------------------------------


def provision_stand_ins(
    stand_ins: Mapping[str, StandIn], build: Path, source: Path
) -> dict[str, Path]:
    """One directory per stand-in under the cell's build directory (CMake may write
    into them), holding the files their CMake reads: those named, and every literal
    ``${<fetch>_SOURCE_DIR}/path`` the project's CMake files name (a source list
    must exist for CMake to generate, whatever the version of the project)."""
    from orchestrator.predict.guards import project_cmake_files

    texts = [
        path.read_text(encoding="utf-8", errors="replace") for path in project_cmake_files(source)
    ]
    made: dict[str, Path] = {}
    for name, stand_in in stand_ins.items():
        root = build / "stand-ins" / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        (root / "kernel-matrix-stand-in.txt").write_text(
            f"An empty stand-in for {name}: the configure tier does not fetch it.\n"
        )
        named = list(stand_in.files)
        if stand_in.fetch:
            reference = re.compile(
                r"\$\{" + re.escape(stand_in.fetch) + r"_SOURCE_DIR\}/([A-Za-z0-9_./+-]+)"
            )
            named += [m for text in texts for m in reference.findall(text)]
        for relative in dict.fromkeys(named):
            if ".." in Path(relative).parts or not Path(relative).suffix:
                continue  # include directories need not exist; nothing leaves the stand-in
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        for relative, text in stand_in.contents.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        made[name] = root
    return made


def provision(
    spec: ConfigureSpec,
    source: Path,
    toolchain: Toolchain,
    build: Path,
    progress: Progress,
) -> ConfigureEnv:
    """Everything a configure of ``source`` needs, provisioned (or found cached)."""
    requirements = tuple(pinned_requirements(source, spec.python))
    if requirements or spec.python.extra:
        site = provision_python(requirements, spec.python.extra, progress)
    else:
        site = build / "no-python"
        site.mkdir(parents=True, exist_ok=True)
    home = cmake_cuda_home(toolchain, progress)
    stand_ins = provision_stand_ins(spec.stand_ins, build, source)
    return ConfigureEnv(site, home, stand_ins, requirements)
