"""The container engine behind one small interface; nothing else speaks to Docker.

:class:`Engine` is a connection to a Docker engine (through the ``docker`` SDK):
images (look up, pull, build, import, remove) and the containers this tool labelled.
:class:`BuildContainer` is one running container used as a context manager::

    with BuildContainer(engine, ContainerSpec(image="kernel-matrix-build:...")) as box:
        status = box.call(["cmake", "--version"], cwd=PurePosixPath("/"), env={}, log=log)

Leaving the block (normally, on an exception, on KeyboardInterrupt) kills and
removes the container. While it runs, ``orchestrator.building.recipe.PROCESSES.kill_all()``
(what the runner calls on Ctrl-C) stops it too. Every container carries the label
``kernel-matrix=1`` and removes itself when its keep-alive process ends
(``ContainerSpec.lifetime_s``), so even a ``kill -9`` of this process leaves
nothing running for longer than one cell's timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from orchestrator.building.recipe import PROCESSES
from orchestrator.common.errors import DockerError

LABEL = "kernel-matrix"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
API_TIMEOUT_S = 60  # control calls (inspect, kill, remove)
# Output streams: a compile can be silent for long; the cell's deadline ends it.
STREAM_TIMEOUT_S = 7 * 24 * 3600
NOTE_PREFIX = "kernel-matrix: "  # build_image/install-build-deps.sh says so first
MAX_POOL = 32  # one streaming connection per parallel cell, plus control calls

# What the SDK raises when the engine or the connection to it fails.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)


def docker_host() -> str:
    """The engine this process talks to, as DOCKER_HOST names it."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


class Engine:
    """A reachable Docker engine. ``connect()`` fails with one clear line."""

    def __init__(self, control: docker.DockerClient, stream: docker.DockerClient) -> None:
        self._control = control  # API_TIMEOUT_S per call
        self._stream = stream  # STREAM_TIMEOUT_S: build output, image transfers

    @classmethod
    def connect(cls) -> Engine:
        try:
            control = docker.from_env(timeout=API_TIMEOUT_S, max_pool_size=MAX_POOL)
            control.ping()
            stream = docker.from_env(timeout=STREAM_TIMEOUT_S, max_pool_size=MAX_POOL)
        except ENGINE_ERRORS as exc:
            raise DockerError(
                f"no Docker engine reachable at {docker_host()} ({exc}); start one, "
                f"or set DOCKER_HOST to an engine this user may use"
            ) from None
        return cls(control, stream)

    # --- images ----------------------------------------------------------------------

    def image_id(self, ref: str) -> str | None:
        """The id (``sha256:…``) of a local image, or None when the engine lacks it."""
        try:
            return str(self._control.images.get(ref).id)
        except docker.errors.ImageNotFound:
            return None
        except ENGINE_ERRORS as exc:
            raise DockerError(f"cannot inspect image {ref}: {exc}") from None

    def image_env(self, ref: str) -> dict[str, str]:
        """The environment an image sets (its ``ENV`` lines)."""
        try:
            raw = self._control.images.get(ref).attrs["Config"].get("Env") or []
        except ENGINE_ERRORS as exc:
            raise DockerError(f"cannot inspect image {ref}: {exc}") from None
        return dict(item.split("=", 1) for item in raw if "=" in item)

    def pull(self, ref: str, log: IO[bytes]) -> None:
        repository, tag = _split_ref(ref)
        try:
            _follow(
                self._stream.api.pull(repository, tag=tag or None, stream=True, decode=True),
                log,
                what=f"pulling {ref}",
            )
        except ENGINE_ERRORS as exc:
            raise DockerError(
                f"base image {ref} is not on the engine at {docker_host()} and pulling it "
                f"failed ({exc}); pull or load it first, or set docker.base_image"
            ) from None

    def build_image(
        self,
        context: Path,
        *,
        tag: str,
        buildargs: Mapping[str, str],
        network: str | None,
        log: IO[bytes],
    ) -> str:
        """Build ``context``/Dockerfile as ``tag``, its output in ``log``; return its id.
        (Labels belong in the Dockerfile: the classic builder turns labels given here
        into one more step, hence one more container to commit.)"""
        try:
            stream = self._stream.api.build(
                path=str(context),
                tag=tag,
                buildargs=dict(buildargs),
                network_mode=network,
                rm=True,
                forcerm=True,  # intermediate containers go, even when a step fails
                pull=False,
                decode=True,
            )
            _follow(stream, log, what=f"building image {tag}")
        except ENGINE_ERRORS as exc:
            raise DockerError(f"building image {tag} failed: {exc}") from None
        built = self.image_id(tag)
        if built is None:
            raise DockerError(f"building image {tag} reported success but the image is missing")
        return built

    def import_rootfs(self, tarball: Path, *, tag: str, changes: Sequence[str] = ()) -> str:
        """Import a root file system tarball as image ``tag`` (``docker import``). An
        import that fails leaves no image: the engine answers a failed tagging with
        success and an untagged image, which would dangle, so that one is removed."""
        repository, version = _split_ref(tag)
        try:
            answer = self._stream.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=list(changes)
            )
        except ENGINE_ERRORS as exc:
            raise DockerError(f"importing {tarball} as {tag} failed: {exc}") from None
        imported = self.image_id(tag)
        if imported is None:
            made = imported_image_id(str(answer))
            if made:
                self.remove_image(made)
            raise DockerError(f"importing {tarball} as {tag} left no image")
        return imported

    def remove_image(self, ref: str) -> None:
        """Remove an image (by tag or id); one that is not there is no error."""
        try:
            self._control.api.remove_image(ref, force=True)
        except docker.errors.ImageNotFound:
            pass
        except ENGINE_ERRORS as exc:
            raise DockerError(f"cannot remove image {ref}: {exc}") from None

    # --- containers ------------------------------------------------------------------

    def containers(self, labels: Mapping[str, str] | None = None) -> list[str]:
        """Ids of this tool's containers (any state) that carry all of ``labels``."""
        return list(self.labelled(labels or {}))

    def labelled(self, labels: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """``{id: its labels}`` of this tool's containers (any state) carrying ``labels``."""
        wanted = [LABEL, *(f"{k}={v}" for k, v in labels.items())]
        try:
            found = self._control.containers.list(all=True, filters={"label": wanted})
        except ENGINE_ERRORS as exc:
            raise DockerError(f"cannot list containers: {exc}") from None
        return {str(c.id): dict(c.labels or {}) for c in found}

    def remove_containers(self, labels: Mapping[str, str] | None = None) -> int:
        """Kill and remove this tool's containers carrying ``labels``; how many."""
        ids = self.containers(labels)
        for ident in ids:
            self.discard(ident)
        return len(ids)

    def start(self, image: str, command: Sequence[str], options: Mapping[str, Any]) -> str:
        """Create and start a detached container (never pulls); its id."""
        container = self._control.containers.create(image, list(command), **options)
        try:
            container.start()
        except BaseException:
            self.discard(str(container.id))
            raise
        return str(container.id)

    def exec_create(
        self, ident: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, user: str
    ) -> str:
        created = self._control.api.exec_create(
            ident, list(argv), environment=dict(env), workdir=cwd, user=user
        )
        return str(created["Id"])

    def exec_output(self, exec_id: str) -> Iterator[bytes]:
        """Start an exec; its output (stdout and stderr, interleaved) as it comes."""
        yield from self._stream.api.exec_start(exec_id, stream=True)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return dict(self._control.api.exec_inspect(exec_id))

    def discard(self, ident: str) -> None:
        """Kill and remove one container; never raises (it may be gone already)."""
        with contextlib.suppress(*ENGINE_ERRORS):
            self._control.api.remove_container(ident, force=True)


def imported_image_id(answer: str) -> str:
    """The id of the image an import made, from the engine's answer (JSON messages, one
    a line, the last ``status`` the id); empty when it names none.

    >>> imported_image_id('{"status":"sha256:ab12"}\\r\\n')
    'sha256:ab12'
    >>> imported_image_id('{"errorDetail":{"message":"x"},"error":"x"}')
    ''
    """
    found = ""
    for line in answer.splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            status = str(json.loads(line).get("status", ""))
            found = status if status.startswith("sha256:") else found
    return found


def _split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag`` → (repo, tag); a digest reference stays whole, with no tag."""
    if "@" in ref:
        return ref, ""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:  # "host:5000/image" has no tag
        return ref, "latest"
    return repository, tag


def _follow(stream: Iterator[Mapping[str, Any]], log: IO[bytes], *, what: str) -> None:
    """Copy a build/pull progress stream into ``log``; raise on its error, or when
    ``PROCESSES.kill_all()`` (Ctrl-C) asks to stop (at the next message: leaving
    the stream drops the connection, and the engine cancels the job)."""
    interrupted = threading.Event()
    note = ""  # the last line our Dockerfile's script said about itself
    with PROCESSES.track_stopper(interrupted.set):
        for item in stream:
            if interrupted.is_set():
                raise DockerError(f"{what} was interrupted")
            _log_progress(item, log)
            for line in str(item.get("stream", "")).splitlines():
                if NOTE_PREFIX in line:
                    note = line[line.index(NOTE_PREFIX) :].strip()
            if "error" in item:
                raise DockerError(f"{what} failed: {note or item['error']}")


def _log_progress(item: Mapping[str, Any], log: IO[bytes]) -> None:
    """One item of a build/pull stream, as text, into the log."""
    text = item.get("stream") or item.get("error")
    if text is None and "status" in item:
        text = f"{item['status']} {item.get('progress', '')}".rstrip() + "\n"
    if text:
        log.write(str(text).encode("utf-8", "replace"))
        log.flush()


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container (read-only unless said)."""

    host: Path
    container: PurePosixPath
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    mounts: tuple[Mount, ...] = ()
    user: str = ""  # "uid:gid"; "" runs as the image's user
    cpus: float | None = None
    memory: str | None = None  # "8g"
    network: str | None = None  # None: the engine's default; "none": no network
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = "kernel-matrix"  # a prefix: a random suffix keeps names unique
    lifetime_s: float = 3600.0  # the container ends (and removes itself) after this


class BuildContainer:
    """One running container: enter to start it, ``call`` commands in it, leave to
    kill and remove it (always). Thread-safe to ``stop`` from another thread."""

    def __init__(self, engine: Engine, spec: ContainerSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.id: str | None = None
        self._stopped = threading.Event()
        self._expired = threading.Event()
        self._registration: contextlib.ExitStack | None = None

    def __enter__(self) -> BuildContainer:
        spec = self.spec
        mounts = [
            docker.types.Mount(
                target=str(m.container), source=str(m.host), type="bind", read_only=m.read_only
            )
            for m in spec.mounts
        ]
        missing = [m.host for m in spec.mounts if not m.host.exists()]
        if missing:
            raise DockerError(f"cannot mount {missing[0]} into a container: it does not exist")
        options: dict[str, Any] = {
            "init": True,  # a real PID 1 that reaps the build's processes
            "auto_remove": True,  # an orphan removes itself when its keep-alive ends
            "mounts": mounts,
            "labels": {LABEL: "1", **spec.labels},
            "name": f"{spec.name}-{uuid.uuid4().hex[:8]}",
            "network_mode": spec.network,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "stdin_open": False,
        }
        if spec.user:
            options["user"] = spec.user
        if spec.cpus:
            options["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory:
            options["mem_limit"] = spec.memory
        keep_alive = ["sleep", str(max(1, int(spec.lifetime_s)))]
        stack = contextlib.ExitStack()
        # Registered before the container exists, so a Ctrl-C between "run" and
        # the end of this method still removes it.
        stack.enter_context(PROCESSES.track_stopper(self.stop))
        self._registration = stack
        try:
            self.id = self.engine.start(spec.image, keep_alive, options)
        except BaseException as exc:
            self.stop()
            stack.close()
            if isinstance(exc, ENGINE_ERRORS):
                raise DockerError(f"cannot start a container of {spec.image}: {exc}") from None
            raise
        if self._stopped.is_set():  # stopped while it was being created
            self.stop()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._registration is not None:
            self._registration.close()
            self._registration = None

    def stop(self) -> None:
        """Kill and remove the container (idempotent, never raises)."""
        self._stopped.set()
        if self.id is not None:  # else __enter__ removes it once it exists
            self.engine.discard(self.id)

    def _expire(self) -> None:
        self._expired.set()
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def call(
        self,
        argv: Sequence[str],
        *,
        cwd: PurePosixPath,
        env: Mapping[str, str],
        log: IO[bytes],
        deadline: float | None = None,
    ) -> int:
        """Run ``argv`` in the container as ``spec.user``, its output (stdout and
        stderr) appended to ``log``; return its exit status. At ``deadline``
        (``time.monotonic()`` seconds) the container is killed and
        ``subprocess.TimeoutExpired`` raised, as ``build.run_logged`` does."""
        if self.id is None or self.stopped:
            raise DockerError("the build container is not running (stopped or interrupted)")
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise subprocess.TimeoutExpired(list(argv), 0)
        try:
            exec_id = self.engine.exec_create(
                self.id, argv, env=env, cwd=str(cwd), user=self.spec.user
            )
        except ENGINE_ERRORS as exc:
            raise self._failure(f"cannot run {argv[0]} in the container: {exc}") from None
        timer = None if remaining is None else threading.Timer(remaining, self._expire)
        try:
            if timer is not None:
                timer.daemon = True
                timer.start()
            for chunk in self.engine.exec_output(exec_id):
                log.write(chunk)
                log.flush()
        except ENGINE_ERRORS as exc:
            if not self.stopped:
                raise DockerError(f"lost the output of {argv[0]}: {exc}") from None
        finally:
            if timer is not None:
                timer.cancel()
        if self._expired.is_set():
            raise subprocess.TimeoutExpired(list(argv), remaining or 0)
        return self._exit_code(exec_id, argv[0])

    def _exit_code(self, exec_id: str, program: str) -> int:
        for _ in range(50):  # the stream can end a moment before the exec is reaped
            if self.stopped:
                break
            try:
                info = self.engine.exec_inspect(exec_id)
            except ENGINE_ERRORS as exc:
                raise self._failure(f"cannot read the exit status of {program}: {exc}") from None
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            time.sleep(0.1)
        raise self._failure(f"{program} did not finish in the container")

    def _failure(self, message: str) -> DockerError:
        if self.stopped:
            return DockerError("the build container was stopped (interrupted)")
        return DockerError(message)
