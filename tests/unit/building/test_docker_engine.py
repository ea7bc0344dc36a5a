"""The docker backend without an engine: errors, tags, paths, and the container's
cleanup contract (against a fake engine)."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.archs import CudaVersion
from orchestrator.building.backends import make_backend
from orchestrator.building.backends.container import (
    BuildContainer,
    ContainerSpec,
    Engine,
    _split_ref,
)
from orchestrator.building.backends.docker import (
    BUILD_IMAGE_DIR,
    DockerBackend,
    base_image_for,
    container_path,
    default_docker_dir,
    image_cuda_tag,
    image_tag,
)
from orchestrator.building.recipe import PROCESSES, ProcessRegistry
from orchestrator.common.errors import EXIT_INFRA, DockerError, ToolchainError
from orchestrator.planning.matrix import load_matrix

REPO = Path(__file__).resolve().parents[3]


def write_matrix(tmp_path: Path, docker: str = "") -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(
        f"project: {{source: {REPO / 'examples/sample_ext'}}}\n"
        'cuda: ["13.0", "12.9"]\n'
        'archs: ["12.1a"]\n'
        f"families: {REPO / 'examples/sample_ext/families.yaml'}\n"
        "backend: docker\n" + docker
    )
    return path


# --- no engine ------------------------------------------------------------------------


def test_unreachable_engine_is_one_line_naming_docker_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(DockerError) as caught:
        make_backend("docker", load_matrix(write_matrix(tmp_path)), cuda_homes=[])
    message = str(caught.value)
    assert "DOCKER_HOST" in message
    assert f"unix://{tmp_path}/no-such.sock" in message
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_INFRA == 3


def test_cli_exits_3_without_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # discard port: refused
    matrix = write_matrix(tmp_path)
    code = cli.main(["run", str(matrix), "--backend", "docker", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1
    assert err[0].startswith(
        "kernel-matrix: error: no Docker engine reachable at tcp://127.0.0.1:9"
    )
    assert "DOCKER_HOST" in err[0]


# --- names, tags and paths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "tag"),
    [((12, 8), "12.8.1"), ((12, 9), "12.9.1"), ((13, 0), "13.0.2"), ((15, 1), "15.1.0")],
)
def test_image_cuda_tag(cuda: tuple[int, int], tag: str) -> None:
    assert image_cuda_tag(CudaVersion(*cuda)) == tag


def test_base_image_template() -> None:
    template = "nvidia/cuda:{cuda}-devel-ubuntu24.04"
    assert base_image_for(template, CudaVersion(12, 9)) == "nvidia/cuda:12.9.1-devel-ubuntu24.04"
    assert base_image_for("local/base:1", CudaVersion(12, 9)) == "local/base:1"


def test_image_tag_follows_every_input(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    args = {"BASE_IMAGE": "b", "CUDA_VERSION": "13.0"}
    cuda = CudaVersion(13, 0)
    tag = image_tag(tmp_path, args, "sha256:1", cuda)
    assert tag.startswith("kernel-matrix-build:cu13.0-")
    assert image_tag(tmp_path, dict(args), "sha256:1", cuda) == tag  # stable
    assert image_tag(tmp_path, {**args, "OFFLINE": "1"}, "sha256:1", cuda) != tag
    assert image_tag(tmp_path, args, "sha256:2", cuda) != tag  # base image changed
    (tmp_path / "install.sh").write_text("true\n")
    assert image_tag(tmp_path, args, "sha256:1", cuda) != tag  # context changed


@pytest.mark.parametrize(
    ("host", "inside"),
    [
        ("/work/ext", "/work/ext"),
        ("/tmp/b/cu13.0-12.1a", "/tmp/b/cu13.0-12.1a"),
        ("/home/me/src", "/home/me/src"),
        ("/usr/src/ext", "/kernel-matrix/source"),
        ("/usr", "/kernel-matrix/source"),
        ("/opt/kernel-matrix/x", "/kernel-matrix/source"),
        ("/", "/kernel-matrix/source"),
        ("/optimal/ext", "/optimal/ext"),
    ],
)
def test_container_path(host: str, inside: str) -> None:
    assert container_path(Path(host), "source") == PurePosixPath(inside)


@pytest.mark.parametrize(
    ("ref", "split"),
    [
        ("nvidia/cuda:12.9.1-devel-ubuntu24.04", ("nvidia/cuda", "12.9.1-devel-ubuntu24.04")),
        ("ubuntu", ("ubuntu", "latest")),
        ("host:5000/img", ("host:5000/img", "latest")),
        ("host:5000/img:1", ("host:5000/img", "1")),
        ("img@sha256:abc", ("img@sha256:abc", "")),
    ],
)
def test_split_ref(ref: str, split: tuple[str, str]) -> None:
    assert _split_ref(ref) == split


def test_mount_toolchain_refuses_cuda_12(tmp_path: Path) -> None:
    matrix = load_matrix(write_matrix(tmp_path, "docker: {toolchain: mount}\n"))
    backend = DockerBackend(matrix, engine=FakeEngine())
    with pytest.raises(ToolchainError, match=r"CUDA 12\.9 has neither.*'image'"):
        backend.prepare(CudaVersion(12, 9))


def test_install_script_is_valid_posix_sh() -> None:
    script = BUILD_IMAGE_DIR / "install-build-deps.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "ARG CUDA_VERSION" in (BUILD_IMAGE_DIR / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in (BUILD_IMAGE_DIR / "Dockerfile").read_text()


def test_build_context_is_package_data() -> None:
    """The Dockerfile and its script live in the package (they ship in the wheel, see
    tests/integration/test_docker_install.py), and pyproject.toml declares them."""
    import orchestrator

    package = Path(orchestrator.__file__).resolve().parent
    assert BUILD_IMAGE_DIR.parents[2] == package  # orchestrator/building/backends/build_image
    shipped = sorted(p.name for p in BUILD_IMAGE_DIR.iterdir())
    assert shipped == ["Dockerfile", "install-build-deps.sh"]
    assert '"building/backends/build_image/*"' in (REPO / "pyproject.toml").read_text()


def test_docker_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERNEL_MATRIX_DOCKER_DIR", str(tmp_path))
    assert default_docker_dir() == tmp_path
    matrix = load_matrix(write_matrix(tmp_path, "docker: {toolchain: mount}\n"))
    with pytest.raises(DockerError, match=r"KERNEL_MATRIX_DOCKER_DIR must name a directory"):
        DockerBackend(matrix, engine=FakeEngine())
    monkeypatch.delenv("KERNEL_MATRIX_DOCKER_DIR")
    assert default_docker_dir() == BUILD_IMAGE_DIR


# --- stoppers and the container's cleanup contract ------------------------------------


def test_kill_all_calls_registered_stoppers() -> None:
    registry = ProcessRegistry()
    calls: list[str] = []
    with registry.track_stopper(lambda: calls.append("a")):
        registry.kill_all()
    registry.kill_all()  # no longer registered
    assert calls == ["a"]


class FakeEngine(Engine):
    """Just enough of an engine: an exec's output blocks until the container is
    discarded (as a killed container's stream ends), or ends with ``exit_code``."""

    def __init__(self, *, block: bool = False, exit_code: int = 0) -> None:
        self.block = block
        self.exit_code = exit_code
        self.live: set[str] = set()
        self.killed = threading.Event()
        self.started: list[Mapping[str, Any]] = []

    def start(self, image: str, command: Sequence[str], options: Mapping[str, Any]) -> str:
        self.started.append(options)
        self.live.add("c1")
        return "c1"

    def exec_create(
        self, ident: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, user: str
    ) -> str:
        return "e1"

    def exec_output(self, exec_id: str) -> Iterator[bytes]:
        yield b"hello\n"
        if self.block:
            self.killed.wait(30)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"Running": False, "ExitCode": 137 if self.killed.is_set() else self.exit_code}

    def discard(self, ident: str) -> None:
        self.live.discard(ident)
        self.killed.set()


def test_container_options_and_cleanup_on_success() -> None:
    engine = FakeEngine(exit_code=2)
    spec = ContainerSpec(image="i", user="1000:1000", cpus=1.5, memory="2g", network="none")
    log = io.BytesIO()
    with BuildContainer(engine, spec) as box:
        assert box.call(["make", "x y"], cwd=PurePosixPath("/b"), env={}, log=log) == 2
        assert engine.live == {"c1"}
    assert engine.live == set()
    assert log.getvalue() == b"$ make 'x y'\nhello\n"
    options = engine.started[0]
    assert options["user"] == "1000:1000"
    assert options["nano_cpus"] == 1_500_000_000
    assert options["mem_limit"] == "2g"
    assert options["privileged"] is False
    assert options["cap_drop"] == ["ALL"]
    assert options["auto_remove"] is True
    assert options["labels"]["kernel-matrix"] == "1"


def test_container_deadline_kills_and_raises() -> None:
    engine = FakeEngine(block=True)
    started = time.monotonic()
    with (
        pytest.raises(subprocess.TimeoutExpired),
        BuildContainer(engine, ContainerSpec("i")) as box,
    ):
        box.call(
            ["sleep"], cwd=PurePosixPath("/"), env={}, log=io.BytesIO(), deadline=started + 0.3
        )
    assert time.monotonic() - started < 10
    assert engine.live == set()


def test_kill_all_stops_a_running_container() -> None:
    """What the runner does on Ctrl-C: PROCESSES.kill_all() from the main thread."""
    engine = FakeEngine(block=True)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with BuildContainer(engine, ContainerSpec("i")) as box:
                box.call(["sleep"], cwd=PurePosixPath("/"), env={}, log=io.BytesIO())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=build)
    worker.start()
    for _ in range(100):
        if engine.live:
            break
        time.sleep(0.01)
    PROCESSES.kill_all()
    worker.join(10)
    assert not worker.is_alive()
    assert engine.live == set()
    assert len(errors) == 1 and isinstance(errors[0], DockerError)
    assert "stopped" in str(errors[0])


def test_container_removed_on_exception() -> None:
    engine = FakeEngine()
    with pytest.raises(KeyboardInterrupt), BuildContainer(engine, ContainerSpec("i")):
        raise KeyboardInterrupt
    assert engine.live == set()
