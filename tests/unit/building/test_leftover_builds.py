"""Nothing builds unseen: what Ctrl-C, a deadline or a killed run leave running.

* ``kill_tree`` stops a build and everything it started, also processes that left
  its process group (ninja runs each command in a group of its own), found by the
  environment mark every build process carries;
* after ``kill_all(close=True)`` a process that a build thread starts a moment
  later is stopped at once;
* a run that was SIGKILLed leaves its builds running: the next run in the same
  build directory stops them (local processes, docker containers) first, and
  refuses to share the directory with a live run.

Real processes (``sleep``), no compiler; the docker part against a fake engine.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.building.backends.container import Engine
from orchestrator.building.backends.docker import BUILD_DIR_LABEL, DockerBackend
from orchestrator.building.recipe import (
    BUILD_DIR_ENV,
    OWNER_ENV,
    ProcessRegistry,
    kill_tree,
    ownership_env,
    processes_building_in,
    stop_leftovers,
)
from orchestrator.common.errors import BuildError
from orchestrator.planning.matrix import load_matrix

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")


def spawn(script: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", script], env={**os.environ, **env}, start_new_session=True)


def wait_for(condition: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def build_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for pid in processes_building_in(tmp_path):  # never leave a sleeper behind
        os.kill(pid, signal.SIGKILL)


def test_kill_tree_stops_processes_outside_the_group(build_dir: Path) -> None:
    # `setsid` puts the inner sleep in a session (and group) of its own, as ninja
    # puts each command in a group of its own.
    proc = spawn("setsid sleep 60 & sleep 60", ownership_env(build_dir))
    assert wait_for(lambda: len(processes_building_in(build_dir)) >= 2)
    started = time.monotonic()
    kill_tree(proc, str(build_dir))
    assert time.monotonic() - started < 10
    assert proc.returncode is not None
    assert processes_building_in(build_dir) == {}


def test_kill_tree_without_a_mark_stops_the_group(build_dir: Path) -> None:
    proc = spawn("sleep 60 & sleep 60", ownership_env(build_dir))
    assert wait_for(lambda: len(processes_building_in(build_dir)) >= 2)
    kill_tree(proc)
    assert wait_for(lambda: processes_building_in(build_dir) == {}, timeout=2)


def test_a_closed_registry_stops_a_late_process(build_dir: Path) -> None:
    registry = ProcessRegistry()
    registry.kill_all(close=True)
    proc = spawn("sleep 60", ownership_env(build_dir))
    with registry.track(proc, str(build_dir)):
        assert proc.wait(timeout=10) < 0
    registry.reopen()
    proc = spawn("exit 3", ownership_env(build_dir))
    with registry.track(proc, str(build_dir)):
        assert proc.wait(timeout=10) == 3


def test_a_killed_runs_builds_are_stopped_by_the_next(build_dir: Path) -> None:
    orphan = spawn("sleep 60", {BUILD_DIR_ENV: str(build_dir), OWNER_ENV: str(dead_pid())})
    assert wait_for(lambda: processes_building_in(build_dir))
    log = io.BytesIO()
    stop_leftovers(build_dir, log)
    assert orphan.wait(timeout=10) == -signal.SIGKILL
    assert processes_building_in(build_dir) == {}
    # (1 or 2: sh may run the sleep in a child of its own)
    assert re.search(rb"stopping [12] processes that a killed run", log.getvalue())


def test_a_live_run_in_the_same_build_dir_is_refused(build_dir: Path) -> None:
    # A process whose command line says it is kernel-matrix ("orchestrator"), alive.
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "orchestrator"])
    try:
        other = spawn("sleep 60", {BUILD_DIR_ENV: str(build_dir), OWNER_ENV: str(owner.pid)})
        assert wait_for(lambda: processes_building_in(build_dir))
        with pytest.raises(
            BuildError, match=f"being built by another kernel-matrix run .pid {owner.pid}"
        ):
            stop_leftovers(build_dir, io.BytesIO())
        assert other.poll() is None  # not killed
        other.kill()
        other.wait()
    finally:
        owner.kill()
        owner.wait()


class LeftoverEngine(Engine):
    """Containers by labels, as the engine lists them."""

    def __init__(self, containers: dict[str, dict[str, str]]) -> None:
        self.present = containers
        self.discarded: list[str] = []

    def labelled(self, labels: Mapping[str, str]) -> dict[str, dict[str, str]]:
        return {
            ident: found
            for ident, found in self.present.items()
            if all(found.get(k) == v for k, v in labels.items())
        }

    def discard(self, ident: str) -> None:
        self.discarded.append(ident)
        self.present.pop(ident, None)


def docker_backend(tmp_path: Path, engine: Engine) -> DockerBackend:
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"project: {{source: {REPO / 'examples/sample_ext'}}}\ncuda: ['13.0']\n"
        f"archs: ['9.0a']\nfamilies: {REPO / 'examples/sample_ext/families.yaml'}\n"
    )
    return DockerBackend(load_matrix(matrix), engine=engine, user=(1000, 1000))


def test_docker_containers_left_by_a_killed_run_are_removed(tmp_path: Path) -> None:
    here, build = socket.gethostname(), str(tmp_path / "build" / "cu13.0-9.0a")
    engine = LeftoverEngine(
        {
            "dead-owner": {
                BUILD_DIR_LABEL: build,
                "kernel-matrix.pid": str(dead_pid()),
                "kernel-matrix.host": here,
            },
            "other-dir": {
                BUILD_DIR_LABEL: build + "x",
                "kernel-matrix.pid": str(dead_pid()),
                "kernel-matrix.host": here,
            },
            "other-host": {
                BUILD_DIR_LABEL: build,
                "kernel-matrix.pid": "1",
                "kernel-matrix.host": here + "-elsewhere",
            },
        }
    )
    log = io.BytesIO()
    docker_backend(tmp_path, engine)._stop_leftovers(Path(build), log)
    assert engine.discarded == ["dead-owner"]
    assert b"left building here by a killed run" in log.getvalue()


def test_docker_container_of_a_live_run_is_refused(tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "orchestrator"])
    try:
        build = str(tmp_path / "build")
        engine = LeftoverEngine(
            {
                "live": {
                    BUILD_DIR_LABEL: build,
                    "kernel-matrix.pid": str(owner.pid),
                    "kernel-matrix.host": socket.gethostname(),
                }
            }
        )
        with pytest.raises(BuildError, match="being built by another kernel-matrix run"):
            docker_backend(tmp_path, engine)._stop_leftovers(Path(build), io.BytesIO())
        assert engine.discarded == []
    finally:
        owner.kill()
        owner.wait()
