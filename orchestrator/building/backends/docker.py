"""The docker backend: run a cell's build commands in a container.

The commands are ``orchestrator.building.recipe.recipe``'s, the same as the local backend's;
only the paths differ, mapped into the container:

* the project source is mounted read-only and the cell's build directory
  read-write, both at their *host* paths (so CMake's cache, its File API reply and
  the log name paths that exist on the host; paths under system directories such
  as ``/usr`` go to ``/kernel-matrix/<role>`` instead);
* the build runs as the invoking user's uid:gid (files in the build directory are
  theirs), unprivileged, without capabilities, with the CPU/memory limits of the
  matrix's ``docker:`` section, and stops at the cell's deadline;
* ``docker.toolchain: image``: CUDA is the image's (``/usr/local/cuda`` of an
  ``nvidia/cuda:<ver>-devel-*`` image), CMake and ninja are installed in it;
  ``docker.toolchain: mount``: the host's PyPI (13.x) or Debian (12.4, 12.5) CUDA
  toolchain and the CMake and ninja of this Python environment are mounted
  read-only under ``/opt/kernel-matrix``, so the image needs only a C++ compiler.

The image (the ``Dockerfile`` of :data:`BUILD_IMAGE_DIR`, package data that ships
with kernel-matrix, on top of ``docker.base_image``) is built once per CUDA version
and tagged by a hash of its inputs; see :func:`image_tag`. Artifacts
stay in the build directory on the host, where probe and check read them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from filelock import FileLock, Timeout

from orchestrator.archs import CudaVersion
from orchestrator.building.backends.base import BuildJob, BuildOutcome
from orchestrator.building.backends.container import BuildContainer, ContainerSpec, Engine, Mount
from orchestrator.building.recipe import (
    TOOLCHAIN_STAMP,
    BuildPaths,
    empty_build_dir,
    file_api_query,
    is_kernel_matrix,
    recipe,
    run_recipe,
    toolchain_changed,
)
from orchestrator.common.errors import BuildError, ConfigError, DockerError, ToolchainError
from orchestrator.planning.matrix import DockerSettings, Matrix
from orchestrator.planning.plan import Cell
from orchestrator.toolchains import cuda as toolchain
from orchestrator.toolchains import debian

IMAGE_REPOSITORY = "kernel-matrix-build"
BUILD_DIR_LABEL = "kernel-matrix.build-dir"
TOOLCHAINS = ("image", "mount")
OFFLINE_ENV = "KERNEL_MATRIX_DOCKER_OFFLINE"
DOCKER_DIR_ENV = "KERNEL_MATRIX_DOCKER_DIR"
# The Dockerfile and its script: package data, next to this module in any install.
BUILD_IMAGE_DIR = Path(__file__).resolve().parent / "build_image"
IMAGE_LOCK_TIMEOUT_S = 3600
LIFETIME_GRACE_S = 120  # an orphaned container outlives its cell's deadline by this
MOUNT_ROOT = PurePosixPath("/opt/kernel-matrix")
IMAGE_CUDA_HOME = PurePosixPath("/usr/local/cuda")
CONTAINER_HOME = "/tmp"  # noqa: S108  (in the container: a writable HOME for any uid)
NVCC_RELEASE = re.compile(r"release (\d+)\.(\d+), V(\d+\.\d+\.\d+)")
# Host paths that cannot be mounted at the same path (they hold the image's system).
RESERVED = tuple(
    PurePosixPath(p)
    for p in (
        "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
        "/run", "/sbin", "/sys", "/usr", "/var", str(MOUNT_ROOT),
    )
)  # fmt: skip

# The newest patch release of each CUDA minor version that nvidia/cuda images carry
# (their tags spell the full version: nvidia/cuda:12.9.1-devel-ubuntu24.04). A
# version not listed maps to X.Y.0; write the full tag in docker.base_image to pin.
IMAGE_CUDA_TAGS = {
    "11.8": "11.8.0",
    "12.0": "12.0.1",
    "12.1": "12.1.1",
    "12.2": "12.2.2",
    "12.3": "12.3.2",
    "12.4": "12.4.1",
    "12.5": "12.5.1",
    "12.6": "12.6.3",
    "12.8": "12.8.1",
    "12.9": "12.9.1",
    "13.0": "13.0.2",
    "13.1": "13.1.2",
    "13.2": "13.2.1",
    "13.3": "13.3.1",
}


def image_cuda_tag(cuda: CudaVersion) -> str:
    """The version part of an nvidia/cuda image tag for ``cuda``.

    >>> image_cuda_tag(CudaVersion(12, 9))
    '12.9.1'
    >>> image_cuda_tag(CudaVersion(14, 2))
    '14.2.0'
    """
    return IMAGE_CUDA_TAGS.get(str(cuda), f"{cuda}.0")


def base_image_for(template: str, cuda: CudaVersion) -> str:
    """``docker.base_image`` with ``{cuda}`` replaced.

    >>> base_image_for("nvidia/cuda:{cuda}-devel-ubuntu24.04", CudaVersion(12, 8))
    'nvidia/cuda:12.8.1-devel-ubuntu24.04'
    >>> base_image_for("kernel-matrix-base:bookworm", CudaVersion(13, 0))
    'kernel-matrix-base:bookworm'
    """
    return template.replace("{cuda}", image_cuda_tag(cuda))


TORCH_INDEX_VARIABLE = "KERNEL_MATRIX_TORCH_INDEX"


def torch_index_for(template: str, environ: Mapping[str, str] = os.environ) -> str:
    """The PyTorch wheel index that ``{torch_index}`` in ``docker.pip_install`` stands
    for, from ``KERNEL_MATRIX_TORCH_INDEX`` (no index host is written into the tool or
    its matrices); empty when the template does not use it. Read once, when the backend
    is made, so that a missing variable stops the run before any cell starts.

    >>> torch_index_for("torch --extra-index-url {torch_index}/{cu}",
    ...                 {"KERNEL_MATRIX_TORCH_INDEX": "https://index.example/whl/"})
    'https://index.example/whl'
    >>> torch_index_for("torch --extra-index-url {torch_index}/{cu}", {})
    Traceback (most recent call last):
    ...
    orchestrator.common.errors.ConfigError: docker.pip_install uses {torch_index}: set KERNEL_MATRIX_TORCH_INDEX to the PyTorch wheel index whose cu<XY>/ directories hold torch
    """
    if "{torch_index}" not in template:
        return ""
    index = environ.get(TORCH_INDEX_VARIABLE, "").strip().rstrip("/")
    if not index:
        raise ConfigError(
            f"docker.pip_install uses {{torch_index}}: set {TORCH_INDEX_VARIABLE} to the "
            "PyTorch wheel index whose cu<XY>/ directories hold torch"
        )
    return index


def pip_install_for(template: str, cuda: CudaVersion, torch_index: str = "") -> str:
    """``docker.pip_install`` with ``{cu}`` replaced, as vLLM's Dockerfile names the
    PyTorch index of a CUDA version, and ``{torch_index}`` by ``torch_index``
    (:func:`torch_index_for`).

    >>> pip_install_for("torch==2.10.0 --extra-index-url {torch_index}/{cu}",
    ...                 CudaVersion(12, 9), "https://index.example/whl")
    'torch==2.10.0 --extra-index-url https://index.example/whl/cu129'
    """
    return template.replace("{torch_index}", torch_index).replace(
        "{cu}", f"cu{cuda.major}{cuda.minor}"
    )


def container_path(host: Path, role: str) -> PurePosixPath:
    """Where a host directory is mounted in the container: the same path, unless
    that path belongs to the image's system (then ``/kernel-matrix/<role>``).

    >>> container_path(Path("/home/me/ext"), "source")
    PurePosixPath('/home/me/ext')
    >>> container_path(Path("/usr/src/ext"), "source")
    PurePosixPath('/kernel-matrix/source')
    """
    path = PurePosixPath(os.path.abspath(host))
    if path == PurePosixPath("/") or any(r == path or r in path.parents for r in RESERVED):
        return PurePosixPath("/kernel-matrix") / role
    return path


def default_docker_dir() -> Path:
    """The build context of the build image: ``build_image/`` of this package (it
    ships in the wheel), or the directory ``KERNEL_MATRIX_DOCKER_DIR`` names."""
    override = os.environ.get(DOCKER_DIR_ENV)
    return Path(override) if override else BUILD_IMAGE_DIR


def image_tag(
    docker_dir: Path, buildargs: Mapping[str, str], base_id: str, cuda: CudaVersion
) -> str:
    """The image's tag: a hash of everything it is built from (the files of
    ``docker_dir``, the build arguments, the base image's id). Equal inputs, equal
    tag: an existing image is reused; any change gives a new tag, hence a rebuild."""
    digest = hashlib.sha256()
    for path in sorted(p for p in docker_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(docker_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for key in sorted(buildargs):
        digest.update(f"{key}={buildargs[key]}\0".encode())
    digest.update(base_id.encode())
    return f"{IMAGE_REPOSITORY}:cu{cuda}-{digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class HostTools:
    """The CMake and ninja binaries that the ``cmake`` and ``ninja`` PyPI packages of
    this Python environment ship (manylinux ELF executables, which run in any
    glibc-based image), to mount into the container. Never their console-script
    shims: those start with ``#!<this environment's python>``, a path that does not
    exist in the container."""

    cmake_root: Path  # has bin/cmake and share/cmake-X.Y
    ninja: Path

    @classmethod
    def find(cls) -> HostTools:
        cmake_root = _shipped_binary("cmake", "bin/cmake").parent.parent
        if not any(cmake_root.glob("share/cmake-*/Modules")):
            raise ToolchainError(
                f"docker.toolchain 'mount': the CMake of this Python environment has no "
                f"modules next to it ({cmake_root}/share/cmake-*/Modules): "
                f"pip install --force-reinstall cmake"
            )
        return cls(cmake_root, _shipped_binary("ninja", "bin/ninja"))


def _shipped_binary(package: str, suffix: str) -> Path:
    """The ELF executable named ``suffix`` among the files the installed ``package``
    distribution ships: ``cmake/data/bin/cmake``; ``ninja/data/bin/ninja`` (ninja <
    1.11.1.2), else the executable ninja installs as its script (``<scripts>/ninja``)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ToolchainError(
            f"docker.toolchain 'mount' mounts the {package} binary of this Python "
            f"environment, and the '{package}' package is not installed: pip install {package}"
        ) from None
    name = PurePosixPath(suffix).name
    candidates = [
        Path(str(dist.locate_file(f))).resolve()
        for f in dist.files or []
        if f.name == name and PurePosixPath(*f.parts).as_posix().endswith(suffix)
    ]
    # The package's own data directory first: its bin/ sits next to share/ (CMake's modules).
    binaries = sorted(
        {c for c in candidates if _is_elf(c)}, key=lambda c: ("data" not in c.parts, str(c))
    )
    if not binaries:
        shown = ", ".join(str(c) for c in candidates) or "none listed"
        raise ToolchainError(
            f"docker.toolchain 'mount' needs the {name} executable of the '{package}' "
            f"package {dist.version}, but it ships no ELF binary (found: {shown}); "
            f"pip install --force-reinstall {package}"
        )
    return binaries[0]


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


@dataclass(frozen=True)
class PreparedImage:
    """What every cell of one CUDA version runs with."""

    tag: str
    toolchain: str  # the description in results, also the result-cache key
    cuda_home: PurePosixPath
    path: str  # PATH in the container
    mounts: tuple[Mount, ...]


class DockerBackend:
    """Build cells in containers of a per-CUDA-version image (see module docs)."""

    name = "docker"

    def __init__(
        self,
        matrix: Matrix,
        *,
        engine: Engine | None = None,
        user: tuple[int, int] | None = None,
        offline: bool | None = None,
        docker_dir: Path | None = None,
    ) -> None:
        settings: DockerSettings = matrix.docker
        if settings.toolchain not in TOOLCHAINS:
            raise ConfigError(
                f"{matrix.path}: docker.toolchain must be one of {', '.join(TOOLCHAINS)}, "
                f"not '{settings.toolchain}'"
            )
        try:
            self.torch_index = torch_index_for(settings.pip_install)
        except ConfigError as exc:
            raise ConfigError(f"{matrix.path}: {exc}") from None
        self.matrix = matrix
        self.settings = settings
        self.engine = engine or Engine.connect()
        self.user = user if user is not None else (os.getuid(), os.getgid())
        self.offline = os.environ.get(OFFLINE_ENV) == "1" if offline is None else offline
        self.docker_dir = docker_dir or default_docker_dir()
        if not (self.docker_dir / "Dockerfile").is_file():
            raise DockerError(
                f"{self.docker_dir / 'Dockerfile'} does not exist ({DOCKER_DIR_ENV} must name "
                f"a directory holding a Dockerfile, or be unset)"
                if os.environ.get(DOCKER_DIR_ENV)
                else f"{self.docker_dir / 'Dockerfile'} does not exist: this installation of "
                f"kernel-matrix is incomplete (reinstall it)"
            )
        self._prepared: dict[CudaVersion, PreparedImage] = {}
        self._lock = threading.Lock()
        self._cuda_locks: dict[CudaVersion, threading.Lock] = {}

    @property
    def network(self) -> str | None:
        """Offline: images are built and cells run without any network."""
        return "none" if self.offline else None

    # --- the image -----------------------------------------------------------------

    def toolchain_key(self, cell: Cell) -> str:
        return self.prepare(cell.cuda).toolchain

    def prepare(self, cuda: CudaVersion) -> PreparedImage:
        """The image (built once) and toolchain of ``cuda``'s cells."""
        with self._lock:
            if cuda in self._prepared:
                return self._prepared[cuda]
            lock = self._cuda_locks.setdefault(cuda, threading.Lock())
        with lock:
            if cuda not in self._prepared:
                self._prepared[cuda] = self._prepare(cuda)
            return self._prepared[cuda]

    def _prepare(self, cuda: CudaVersion) -> PreparedImage:
        mounted = self._mounted_toolchain(cuda) if self.settings.toolchain == "mount" else None
        base = base_image_for(self.settings.base_image, cuda)
        buildargs = {
            "BASE_IMAGE": base,
            "CUDA_VERSION": str(cuda),
            "TOOLCHAIN": self.settings.toolchain,
            "PYTHON": "1" if self.matrix.project.build == "pip" else "0",
            "OFFLINE": "1" if self.offline else "0",
        }
        if self.settings.pip_install:  # (absent when unused: existing image tags stay)
            buildargs["PIP_INSTALL"] = pip_install_for(
                self.settings.pip_install, cuda, self.torch_index
            )
        tag = self._ensure_image(base, buildargs, cuda)
        image_path = self.engine.image_env(tag).get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
        if mounted is None:
            description = self._image_toolchain(tag, cuda, image_path)
            return PreparedImage(tag, description, IMAGE_CUDA_HOME, image_path, ())
        tc, tools = mounted
        cuda_home = MOUNT_ROOT / f"cuda-{cuda}"
        mounts = (
            Mount(tc.home, cuda_home),
            Mount(tools.cmake_root, MOUNT_ROOT / "cmake"),
            Mount(tools.ninja, MOUNT_ROOT / "ninja" / "ninja"),
        )
        path = ":".join(
            [
                str(MOUNT_ROOT / "cmake" / "bin"),
                str(MOUNT_ROOT / "ninja"),
                str(cuda_home / "bin"),
                image_path,
            ]
        )
        self._check_mounted_tools(tag, path, mounts, cuda_home)
        description = f"{tc.describe()} mounted in docker image {tag}"
        return PreparedImage(tag, description, cuda_home, path, mounts)

    def _check_mounted_tools(
        self, tag: str, path: str, mounts: tuple[Mount, ...], cuda_home: PurePosixPath
    ) -> None:
        """Run each mounted tool once in the image before any cell uses it, so an
        image that cannot run them (no glibc, another CPU architecture) fails here, in
        one line, instead of in the middle of every cell's CMake."""
        checks = (
            ("CMake", [str(MOUNT_ROOT / "cmake" / "bin" / "cmake"), "--version"]),
            ("ninja", [str(MOUNT_ROOT / "ninja" / "ninja"), "--version"]),
            ("nvcc", [str(cuda_home / "bin" / "nvcc"), "--version"]),
        )
        spec = ContainerSpec(
            image=tag,
            mounts=mounts,
            user=self._user_spec(),
            network="none",
            labels={"kernel-matrix.purpose": "tool-check", **self._labels()},
            name="kernel-matrix-tool-check",
            lifetime_s=300,
        )
        with BuildContainer(self.engine, spec) as box:
            for what, argv in checks:
                out = io.BytesIO()
                status = box.call(
                    argv,
                    cwd=PurePosixPath("/"),
                    env={"PATH": path, "HOME": CONTAINER_HOME},
                    log=out,
                    deadline=time.monotonic() + 120,
                )
                if status != 0:
                    lines = out.getvalue().decode("utf-8", "replace").strip().splitlines()
                    said = lines[-1] if len(lines) > 1 else "(no output)"
                    raise ToolchainError(
                        f"docker image {tag} cannot run the mounted {what} ({argv[0]}, from "
                        f"the host's Python environment): exit {status}: {said}"
                    )

    def _mounted_toolchain(self, cuda: CudaVersion) -> tuple[toolchain.Toolchain, HostTools]:
        """The host's provisioned toolchain of ``cuda``: PyPI's (13.x) or Debian's
        (12.4, 12.5; a relocatable CUDA_HOME with a relative ``nvcc.profile``)."""
        if toolchain.pypi_available(cuda):
            return toolchain.provision(cuda), HostTools.find()
        if debian.debian_available(cuda):
            return debian.provision(cuda), HostTools.find()
        raise ToolchainError(
            f"toolchain unavailable: docker.toolchain 'mount' mounts the host's PyPI (13.x) "
            f"or Debian (12.4, 12.5) CUDA toolchain, and CUDA {cuda} has neither; use "
            f"docker.toolchain 'image' (nvidia/cuda:{image_cuda_tag(cuda)}-devel images)"
        )

    def _ensure_image(self, base: str, buildargs: Mapping[str, str], cuda: CudaVersion) -> str:
        logs = toolchain.cache_root() / "docker"
        logs.mkdir(parents=True, exist_ok=True)
        base_id = self.engine.image_id(base)
        if base_id is None:
            if self.offline:
                raise DockerError(
                    f"base image {base} is not on the engine at this host, and offline "
                    f"({OFFLINE_ENV}=1) nothing is pulled: load or import it first (a base "
                    f"image made without a registry: kernel-matrix docker base-image)"
                )
            with (logs / "pull.log").open("ab") as log:
                self.engine.pull(base, log)
            base_id = self.engine.image_id(base)
            if base_id is None:
                raise DockerError(f"pulled {base}, but the engine does not list it")
        tag = image_tag(self.docker_dir, buildargs, base_id, cuda)
        if self.engine.image_id(tag) is not None:
            return tag
        name = tag.replace(":", "-")
        try:
            with FileLock(str(logs / f"{name}.lock"), timeout=IMAGE_LOCK_TIMEOUT_S):
                if self.engine.image_id(tag) is not None:  # another process built it
                    return tag
                log_path = logs / f"{name}.log"
                with log_path.open("wb") as log:
                    try:
                        self.engine.build_image(
                            self.docker_dir,
                            tag=tag,
                            buildargs=buildargs,
                            network=self.network,
                            log=log,
                        )
                    except DockerError as exc:
                        raise DockerError(f"{exc} (build log: {log_path})") from None
        except Timeout:
            raise DockerError(f"{logs / name}.lock: timed out waiting for another build") from None
        return tag

    def _image_toolchain(self, tag: str, cuda: CudaVersion, path: str) -> str:
        """Ask the image's nvcc for its version; it must be ``cuda``."""
        out = io.BytesIO()
        spec = ContainerSpec(
            image=tag,
            user=self._user_spec(),
            network="none",
            labels={"kernel-matrix.purpose": "nvcc-version", **self._labels()},
            name="kernel-matrix-nvcc",
            lifetime_s=300,
        )
        nvcc = str(IMAGE_CUDA_HOME / "bin" / "nvcc")
        with BuildContainer(self.engine, spec) as box:
            status = box.call(
                [nvcc, "--version"],
                cwd=PurePosixPath("/"),
                env={"PATH": path, "HOME": CONTAINER_HOME},
                log=out,
                deadline=time.monotonic() + 120,
            )
        text = out.getvalue().decode("utf-8", "replace")
        match = NVCC_RELEASE.search(text)
        if status != 0 or match is None:
            raise ToolchainError(f"docker image {tag}: {nvcc} --version failed (exit {status})")
        found, full = CudaVersion(int(match[1]), int(match[2])), match[3]
        if found != cuda:
            raise ToolchainError(
                f"docker image {tag} has CUDA {full}, not {cuda}: check docker.base_image "
                f"('{self.settings.base_image}')"
            )
        return f"CUDA {full} (docker image {tag})"

    def _user_spec(self) -> str:
        return f"{self.user[0]}:{self.user[1]}"

    @staticmethod
    def _labels() -> dict[str, str]:
        return {"kernel-matrix.pid": str(os.getpid()), "kernel-matrix.host": socket.gethostname()}

    def _stop_leftovers(self, build_dir: Path, log: IO[bytes]) -> None:
        """A run that was SIGKILLed cannot remove its build container, which goes on
        building (until its lifetime ends) in the directory a resumed run builds in
        again: remove it first. A container of a live run on this host is another run
        using the same build directory: refused, not removed."""
        here = socket.gethostname()
        for ident, labels in self.engine.labelled({BUILD_DIR_LABEL: str(build_dir)}).items():
            owner = labels.get("kernel-matrix.pid", "")
            if labels.get("kernel-matrix.host") != here or owner == str(os.getpid()):
                continue
            if owner.isdigit() and is_kernel_matrix(int(owner)):
                raise BuildError(
                    f"{build_dir} is being built by another kernel-matrix run (pid {owner}, "
                    f"container {ident[:12]}); give this run its own --build-dir"
                )
            log.write(
                f"# kernel-matrix docker: removing container {ident[:12]}, left building "
                f"here by a killed run (pid {owner})\n".encode()
            )
            self.engine.discard(ident)

    # --- one cell --------------------------------------------------------------------

    def _hand_over(self, build_dir: Path) -> None:
        """Root running builds as another uid (``user=``): what this process made in
        the build directory becomes that user's, so the container can write there
        and nothing root-owned is left behind."""
        uid, gid = self.user
        if os.geteuid() != 0 or (uid, gid) == (os.geteuid(), os.getegid()):
            return
        os.chown(build_dir, uid, gid)
        os.chown(build_dir / TOOLCHAIN_STAMP, uid, gid)
        api = build_dir / ".cmake"
        for path in [api, *api.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)

    def build(self, job: BuildJob) -> BuildOutcome:
        image = self.prepare(job.cell.cuda)
        project = self.matrix.project
        self._stop_leftovers(job.build_dir.resolve(), job.log)
        if job.from_scratch:
            empty_build_dir(job.build_dir, job.log)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        file_api_query(job.build_dir)
        fresh = toolchain_changed(job.build_dir, f"docker: {image.toolchain}")
        self._hand_over(job.build_dir)
        source = container_path(project.source, "source")
        build = container_path(job.build_dir, "build")
        # The recipe's paths are the container's (Path is PurePosixPath on Linux).
        paths = BuildPaths(
            Path(source), Path(build), Path(image.cuda_home / "bin" / "nvcc"), Path(image.cuda_home)
        )
        commands = recipe(
            project,
            job.cell,
            paths,
            threads=job.threads,
            configure_only=job.configure_only,
            fresh=fresh,
        )
        # Only the recipe's environment: the host's must not leak into the container.
        env = {**commands.env, "PATH": image.path, "HOME": CONTAINER_HOME}
        spec = ContainerSpec(
            image=image.tag,
            mounts=(
                Mount(project.source.resolve(), source),
                Mount(job.build_dir.resolve(), build, read_only=False),
                *image.mounts,
            ),
            user=self._user_spec(),
            cpus=self.settings.cpus,
            memory=self.settings.memory,
            network=self.network,
            labels={
                "kernel-matrix.cell": job.cell.id,
                BUILD_DIR_LABEL: str(job.build_dir.resolve()),
                **self._labels(),
            },
            name=re.sub(r"[^a-zA-Z0-9_.-]", "_", f"kernel-matrix-{job.cell.id}"),
            lifetime_s=max(1.0, job.deadline - time.monotonic()) + LIFETIME_GRACE_S,
        )
        job.log.write(
            f"# kernel-matrix docker: image {image.tag}, user {spec.user}, "
            f"{image.toolchain}\n".encode()
        )
        with BuildContainer(self.engine, spec) as box:
            spent = run_recipe(
                commands,
                lambda step: box.call(
                    step.argv,
                    cwd=PurePosixPath(step.cwd),
                    env=env,
                    log=job.log,
                    deadline=job.deadline,
                ),
            )
        return BuildOutcome(image.toolchain, spent)
