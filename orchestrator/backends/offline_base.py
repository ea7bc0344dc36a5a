"""A base image for the docker backend made without any image registry.

``debootstrap`` builds a minimal Debian root file system from Debian's package
mirror (with a C++ compiler, which is all a ``docker.toolchain: mount`` build needs
in the image), ``tar`` packs it, and the engine imports it as an image (``docker
import``, through the SDK). The tarball is kept under
``~/.cache/kernel-matrix/docker/`` and the image is tagged by a hash of its recipe,
so both are made once per machine::

    python -m orchestrator.backends.offline_base      # prints the image's tag

Then, in matrix.yaml::

    backend: docker
    docker: {base_image: "kernel-matrix-base:bookworm-<hash>", toolchain: mount}

debootstrap needs root. When it is not installed, its package is fetched with
``apt-get download`` and unpacked into the cache (``dpkg -x``): nothing is
installed on the system.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from orchestrator.backends.container import Engine
from orchestrator.errors import KernelMatrixError, ToolError
from orchestrator.toolchain import cache_root

REPOSITORY = "kernel-matrix-base"
DEBOOTSTRAP_TIMEOUT_S = 1800
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseRecipe:
    """What goes into the root file system."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    # g++ is the host compiler of nvcc and CMake's CXX; everything else (CUDA,
    # CMake, ninja) is mounted from the host at run time.
    packages: tuple[str, ...] = ("g++",)

    @property
    def digest(self) -> str:
        text = "\0".join([self.suite, self.mirror, self.variant, *sorted(self.packages)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}:{self.suite}-{self.digest}"

    @property
    def tarball(self) -> Path:
        return docker_cache() / f"rootfs-{self.suite}-{self.digest}.tar"


def docker_cache() -> Path:
    return cache_root() / "docker"


def ensure_offline_base(engine: Engine, recipe: BaseRecipe | None = None) -> str:
    """The tag of the base image, imported (and its rootfs made) only when missing."""
    recipe = recipe or BaseRecipe()
    if engine.image_id(recipe.tag) is not None:
        return recipe.tag
    docker_cache().mkdir(parents=True, exist_ok=True)
    with FileLock(str(recipe.tarball) + ".lock"):
        if engine.image_id(recipe.tag) is not None:
            return recipe.tag
        if not recipe.tarball.is_file():
            make_rootfs_tarball(recipe)
        engine.import_rootfs(
            recipe.tarball,
            tag=recipe.tag,
            changes=[f"ENV PATH={DEFAULT_PATH}", "LABEL kernel-matrix=1"],
        )
    return recipe.tag


def make_rootfs_tarball(recipe: BaseRecipe) -> Path:
    """debootstrap ``recipe`` and pack it as ``recipe.tarball`` (atomically)."""
    if os.geteuid() != 0:
        raise ToolError(
            f"making the offline base image needs root (debootstrap); run "
            f"'python -m orchestrator.backends.offline_base' once as root, or put a "
            f"tarball at {recipe.tarball}"
        )
    command, env = debootstrap_command()
    work = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=docker_cache()))
    rootfs = work / "rootfs"
    try:
        _run(
            [
                *command,
                f"--variant={recipe.variant}",
                f"--include={','.join(recipe.packages)}",
                recipe.suite,
                str(rootfs),
                recipe.mirror,
            ],
            env=env,
            what="debootstrap",
            log=work.parent / f"debootstrap-{recipe.digest}.log",
        )
        # Package caches are of no use in an image that never installs anything.
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = work / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            env=dict(os.environ),
            what="tar",
        )
        partial.replace(recipe.tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return recipe.tarball


def debootstrap_command() -> tuple[list[str], dict[str, str]]:
    """A runnable debootstrap: the system's, or Debian's package unpacked in the cache."""
    env = dict(os.environ)
    system = shutil.which("debootstrap")
    if system:
        return [system], env
    unpacked = docker_cache() / "debootstrap"
    script = unpacked / "usr" / "sbin" / "debootstrap"
    if not script.is_file():
        if not shutil.which("apt-get") or not shutil.which("dpkg"):
            raise ToolError("debootstrap is not installed (and no apt-get/dpkg to fetch it)")
        download = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=docker_cache()))
        try:
            _run(["apt-get", "download", "debootstrap"], env=env, what="apt-get", cwd=download)
            debs = sorted(download.glob("debootstrap_*.deb"))
            if not debs:
                raise ToolError("apt-get download debootstrap left no package")
            _run(["dpkg", "-x", str(debs[-1]), str(unpacked)], env=env, what="dpkg")
        finally:
            shutil.rmtree(download, ignore_errors=True)
    env["DEBOOTSTRAP_DIR"] = str(unpacked / "usr" / "share" / "debootstrap")
    return [str(script)], env


def _run(
    argv: list[str],
    *,
    env: dict[str, str],
    what: str,
    cwd: Path | None = None,
    log: Path | None = None,
) -> None:
    try:
        result = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=DEBOOTSTRAP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolError(f"{what} failed: {exc}") from None
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "(no output)").splitlines()[-1]
        where = f" (log: {log})" if log is not None else ""
        raise ToolError(f"{what} failed (exit {result.returncode}): {last}{where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.backends.offline_base",
        description="Make (once) a Debian base image for the docker backend without a "
        "registry, and print its tag.",
    )
    parser.add_argument("--suite", default=BaseRecipe.suite)
    parser.add_argument("--mirror", default=BaseRecipe.mirror)
    parser.add_argument(
        "--include",
        default=",".join(BaseRecipe.packages),
        help="comma-separated Debian packages (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    recipe = BaseRecipe(
        suite=args.suite, mirror=args.mirror, packages=tuple(args.include.split(","))
    )
    try:
        print(ensure_offline_base(Engine.connect(), recipe))
    except KernelMatrixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
