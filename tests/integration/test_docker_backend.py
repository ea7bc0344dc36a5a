"""The docker backend against a real engine, without any image registry.

The base image is made here from the packages of the host's apt sources
(debootstrap, then imported through the SDK; ``orchestrator.building.backends.offline_base``,
the ``kernel-matrix docker base-image`` verb), the package's build-image Dockerfile
is built on top of it with the network disabled, and cells run with the host's cached
CUDA 13.0 toolchain, CMake and ninja mounted read-only (``docker.toolchain:
mount``). Nothing is downloaded inside a container. The base image and its
tarball (``~/.cache/kernel-matrix/docker/``) and the build image are reused by
later runs: warm, this module takes well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker_required import skip_unless_required

from orchestrator.archs import CudaVersion
from orchestrator.building.backends import BuildJob
from orchestrator.building.backends.container import Engine
from orchestrator.building.backends.docker import DockerBackend, HostTools
from orchestrator.building.backends.local import LocalBackend
from orchestrator.building.backends.offline_base import ensure_offline_base
from orchestrator.common.errors import DockerError, ToolchainError, ToolError
from orchestrator.judge.results import ERROR, NOT_RUN, CellResult
from orchestrator.planning.matrix import Matrix, load_matrix
from orchestrator.planning.plan import Cell, plan
from orchestrator.run.runner import RunInterrupted, RunOptions, run_cells
from orchestrator.toolchains import cuda as toolchain

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"
CUDA = CudaVersion(13, 0)
OURS = {"kernel-matrix.pid": str(os.getpid())}  # the containers this test process made


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        return Engine.connect()
    except DockerError as exc:
        skip_unless_required(f"no Docker engine: {exc}")


@pytest.fixture(scope="module")
def base_image(engine: Engine) -> str:
    try:
        return ensure_offline_base(engine)
    except ToolError as exc:
        skip_unless_required(f"cannot make the offline base image here: {exc}")


@pytest.fixture(scope="module")
def cuda13() -> toolchain.Toolchain:
    return toolchain.provision(CUDA)  # cached after the first run on a machine


@pytest.fixture(autouse=True)
def no_container_left(engine: Engine) -> Iterator[None]:
    """After every test: none of this process's containers still exists."""
    yield
    assert wait_until(lambda: not engine.containers(OURS)), engine.containers(OURS)


def wait_until(condition: object, timeout: float = 20.0) -> bool:
    assert callable(condition)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


def write_matrix(
    directory: Path,
    base_image: str,
    *,
    source: Path = SAMPLE,
    archs: str = "9.0a;12.1a",
    toolchain: str = "mount",
    cuda: str = str(CUDA),
) -> Matrix:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "matrix.yaml"
    path.write_text(
        f"project: {{source: {source}, artifacts: ['*.so']}}\n"
        f'cuda: ["{cuda}"]\n'
        f'archs: ["{archs}"]\n'
        f"families: {SAMPLE / 'families.yaml'}\n"
        "backend: docker\n"
        f"docker: {{base_image: '{base_image}', toolchain: {toolchain}, cpus: 2, memory: 4g}}\n"
    )
    return load_matrix(path)


def only_cell(matrix: Matrix, backend: str) -> Cell:
    (cell,) = plan(matrix, backend=backend)
    assert cell.runnable, cell.reason
    return cell


def slow_project(directory: Path) -> Path:
    """A project whose build step takes five minutes (and needs no compiler)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.26)\n"
        "project(slow LANGUAGES NONE)\n"
        "add_custom_target(slow ALL COMMAND sleep 300)\n"
    )
    return directory


def docker_backend(
    matrix: Matrix, engine: Engine, user: tuple[int, int] | None = None
) -> DockerBackend:
    return DockerBackend(matrix, engine=engine, offline=True, user=user)


# --- a real cell, in a container and locally --------------------------------------------


@dataclass
class Built:
    build_dir: Path
    log: Path
    toolchain: str


def build_cell(backend: DockerBackend | LocalBackend, cell: Cell, root: Path) -> Built:
    build_dir, log_path = root / "build" / cell.id, root / f"{cell.id}.log"
    root.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        outcome = backend.build(
            BuildJob(cell, build_dir, log, deadline=time.monotonic() + 900, threads=2)
        )
    return Built(build_dir, log_path, outcome.toolchain)


@pytest.fixture(scope="module")
def both_builds(
    engine: Engine,
    base_image: str,
    cuda13: toolchain.Toolchain,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Built, Built]:
    root = tmp_path_factory.mktemp("docker-vs-local")
    matrix = write_matrix(root, base_image)
    in_docker = build_cell(docker_backend(matrix, engine), only_cell(matrix, "docker"), root / "d")
    local = build_cell(LocalBackend(matrix, cuda_homes=[]), only_cell(matrix, "local"), root / "l")
    return in_docker, local


def elf_summary(library: Path) -> list[str]:
    """The cubins of a library and the kernels in each (names, not addresses)."""
    out = subprocess.run(
        [str(toolchain.cuobjdump()), "--dump-elf-symbols", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(
        line.split()[-1] if "STO_ENTRY" in line else line.strip()
        for line in out.splitlines()
        if "STO_ENTRY" in line or line.startswith(("Fatbin", "arch =", "code version"))
    )


def test_cell_builds_in_a_container_like_locally(both_builds: tuple[Built, Built]) -> None:
    in_docker, local = both_builds
    assert "mounted in docker image kernel-matrix-build:cu13.0-" in in_docker.toolchain
    text = in_docker.log.read_text()
    assert f"$ cmake -S {SAMPLE} -B {in_docker.build_dir} -G Ninja" in text
    assert "-DCMAKE_CUDA_COMPILER=/opt/kernel-matrix/cuda-13.0/bin/nvcc" in text
    assert "Not building scaled_mm_c3x_sm100" in text  # skip lines reach the cell's log
    assert "Linking CUDA shared library _C.so" in text
    libraries = sorted(p.name for p in in_docker.build_dir.glob("*.so"))
    assert libraries == sorted(p.name for p in local.build_dir.glob("*.so")) == ["_C.so"]
    for name in libraries:
        summary = elf_summary(in_docker.build_dir / name)
        assert any("sm_121a" in line for line in summary), summary
        assert summary == elf_summary(local.build_dir / name)


def test_build_tree_belongs_to_the_invoking_user(both_builds: tuple[Built, Built]) -> None:
    in_docker, _ = both_builds
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in in_docker.build_dir.rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}


def test_run_inventory_equals_local(
    engine: Engine,
    base_image: str,
    cuda13: toolchain.Toolchain,
    tmp_path: Path,
) -> None:
    """The whole pipeline (build, probe, check) gives the same inventory and verdicts
    in a container as on the host, for the same cell."""
    pytest.importorskip("orchestrator.probe", reason="orchestrator.probe is not in this tree")
    matrix = write_matrix(tmp_path, base_image)
    results: dict[str, CellResult] = {}
    for name, backend in (
        ("docker", docker_backend(matrix, engine)),
        ("local", LocalBackend(matrix, cuda_homes=[])),
    ):
        options = RunOptions(
            out_dir=tmp_path / name / "out",
            build_root=tmp_path / name / "build",
            threads_per_job=2,
            use_cache=False,
        )
        (results[name],) = run_cells(matrix, plan(matrix, backend=name), backend, options)

    def comparable(result: CellResult, name: str) -> dict[str, object]:
        text = json.dumps(
            {
                "status": result.status,
                "inventory": result.inventory.to_json() if result.inventory else None,
                "verdicts": result.to_json()["verdicts"],
                "skip_lines": result.skip_lines,
            }
        )
        return dict(json.loads(text.replace(str(tmp_path / name / "build"), "<build>")))

    docker_view, local_view = (
        comparable(results["docker"], "docker"),
        comparable(results["local"], "local"),
    )
    assert docker_view["inventory"], results["docker"].reason
    assert docker_view == local_view


# --- docker.toolchain: image (CUDA inside the image, as in nvidia/cuda images) -----------


@pytest.fixture(scope="module")
def cuda_image(
    engine: Engine,
    base_image: str,
    cuda13: toolchain.Toolchain,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A stand-in for nvidia/cuda:13.0.x-devel, made offline: the offline base with
    the PyPI toolchain in /usr/local/cuda and CMake/ninja in /usr/local (cached)."""
    base_id = engine.image_id(base_image)
    cmake_root, ninja = HostTools.find().cmake_root, HostTools.find().ninja
    key = hashlib.sha256(
        f"{base_id}\0{cuda13.full_version}\0{cmake_root}\0{ninja}".encode()
    ).hexdigest()[:12]
    tag = f"kernel-matrix-test-cuda:{CUDA}-{key}"
    if engine.image_id(tag) is not None:
        return tag
    context = tmp_path_factory.mktemp("cuda-image")
    shutil.copytree(cuda13.home, context / "cuda", symlinks=True, copy_function=os.link)
    shutil.copytree(cmake_root, context / "cmake", symlinks=True, copy_function=os.link)
    shutil.copy2(ninja, context / "ninja")
    (context / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\n"
        "COPY cuda /usr/local/cuda\nCOPY cmake /usr/local\nCOPY ninja /usr/local/bin/ninja\n"
    )
    with (context.parent / "cuda-image.log").open("wb") as log:
        engine.build_image(
            context, tag=tag, buildargs={"BASE": base_image}, network="none", log=log
        )
    return tag


def test_image_toolchain_builds_like_locally(
    engine: Engine,
    cuda_image: str,
    both_builds: tuple[Built, Built],
    tmp_path: Path,
) -> None:
    _, local = both_builds
    matrix = write_matrix(tmp_path, cuda_image, toolchain="image")
    built = build_cell(docker_backend(matrix, engine), only_cell(matrix, "docker"), tmp_path)
    assert built.toolchain.startswith("CUDA 13.0.88 (docker image kernel-matrix-build:cu13.0-")
    assert "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc" in built.log.read_text()
    assert elf_summary(built.build_dir / "_C.so") == elf_summary(local.build_dir / "_C.so")


def test_image_with_another_cuda_is_refused(
    engine: Engine, cuda_image: str, tmp_path: Path
) -> None:
    matrix = write_matrix(tmp_path, cuda_image, toolchain="image", cuda="13.1")
    backend = docker_backend(matrix, engine)
    with pytest.raises(ToolchainError, match=r"has CUDA 13\.0\.88, not 13\.1"):
        backend.toolchain_key(only_cell(matrix, "docker"))


def test_offline_image_build_names_what_the_base_lacks(
    engine: Engine, base_image: str, tmp_path: Path
) -> None:
    """toolchain 'image' on a base without CUDA/CMake: offline, the Dockerfile
    installs nothing and says what is missing (the engine's error, one line)."""
    matrix = write_matrix(tmp_path, base_image, toolchain="image")
    backend = docker_backend(matrix, engine)
    with pytest.raises(DockerError) as caught:
        backend.prepare(CUDA)
    message = str(caught.value)
    assert message.startswith("building image kernel-matrix-build:cu13.0-")
    assert "failed: kernel-matrix: OFFLINE=1 but the base image lacks:" in message
    assert "cmake>=3.26 ninja" in message
    log = Path(message.rsplit("(build log: ", 1)[1].rstrip(")"))
    assert "Step 1/" in log.read_text()


# --- uid, Ctrl-C, timeout -----------------------------------------------------------------


def test_build_runs_as_the_requested_uid(
    engine: Engine, base_image: str, cuda13: toolchain.Toolchain, tmp_path: Path
) -> None:
    """Every file the build makes is the requested user's: 1000:1000 when this test
    runs as root (it can hand the build directory over), else the invoking user."""
    uid, gid = (1000, 1000) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    source = tmp_path / "src"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.26)\n"
        "project(owner LANGUAGES NONE)\n"
        'file(WRITE "${CMAKE_BINARY_DIR}/marker.txt" "made in the container\\n")\n'
    )
    matrix = write_matrix(tmp_path, base_image, source=source)
    backend = docker_backend(matrix, engine, user=(uid, gid))
    build_dir = tmp_path / "build"
    with (tmp_path / "log").open("wb") as log:
        backend.build(
            BuildJob(
                only_cell(matrix, "docker"),
                build_dir,
                log,
                deadline=time.monotonic() + 300,
                threads=1,
                configure_only=True,
            )
        )
    marker = build_dir / "marker.txt"
    assert marker.read_text() == "made in the container\n"
    assert (marker.stat().st_uid, marker.stat().st_gid) == (uid, gid)
    made = [build_dir, *build_dir.rglob("*")]
    assert any(p.name == "CMakeCache.txt" for p in made)
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in made} == {(uid, gid)}


@pytest.fixture
def probe_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner imports orchestrator.probe before it builds; these tests never get
    to probing, so a stand-in does where the real module is not in this tree."""
    try:
        __import__("orchestrator.probe")
    except ImportError:
        stand_in = types.ModuleType("orchestrator.probe")
        stand_in.probe_paths = lambda paths, engine="native": None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "orchestrator.probe", stand_in)


@pytest.mark.usefixtures("probe_importable")
def test_ctrl_c_kills_and_removes_the_container(
    engine: Engine, base_image: str, cuda13: toolchain.Toolchain, tmp_path: Path
) -> None:
    matrix = write_matrix(tmp_path, base_image, source=slow_project(tmp_path / "src"))
    cells = plan(matrix, backend="docker")
    backend = docker_backend(matrix, engine)
    backend.prepare(CUDA)  # the image exists before the clock starts
    options = RunOptions(
        out_dir=tmp_path / "out", build_root=tmp_path / "build", timeout=600, use_cache=False
    )
    log = options.out_dir / "logs" / f"{cells[0].id}.log"
    mine = {**OURS, "kernel-matrix.cell": cells[0].id}
    sent = threading.Event()

    def interrupt_once_building() -> None:
        def building() -> bool:
            return log.is_file() and b"$ cmake --build" in log.read_bytes()

        if wait_until(building, timeout=120) and engine.containers(mine):
            time.sleep(1)  # inside `sleep 300` by now
            sent.set()
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_building, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as stopped:
        run_cells(matrix, cells, backend, options)
        time.sleep(5)  # (only reached if the build ended first: the test fails)
    assert stopped.value.exit_code == 130
    assert sent.is_set()
    assert time.monotonic() - started < 100
    assert wait_until(lambda: not engine.containers(mine))
    result = json.loads((options.out_dir / "cells" / f"{cells[0].id}.json").read_text())
    assert result["status"] == NOT_RUN


@pytest.mark.usefixtures("probe_importable")
def test_timeout_kills_and_removes_the_container(
    engine: Engine, base_image: str, cuda13: toolchain.Toolchain, tmp_path: Path
) -> None:
    matrix = write_matrix(tmp_path, base_image, source=slow_project(tmp_path / "src"))
    cells = plan(matrix, backend="docker")
    backend = docker_backend(matrix, engine)
    backend.prepare(CUDA)
    options = RunOptions(
        out_dir=tmp_path / "out", build_root=tmp_path / "build", timeout=8, use_cache=False
    )
    started = time.monotonic()
    (result,) = run_cells(matrix, cells, backend, options)
    assert time.monotonic() - started < 60
    assert result.status == ERROR
    # (configure takes a second or two; on a very busy machine it may be the one cut)
    assert re.fullmatch(r"(build|configure) timed out", result.reason or "")
    assert wait_until(lambda: not engine.containers({**OURS, "kernel-matrix.cell": cells[0].id}))
