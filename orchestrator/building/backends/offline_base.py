"""A base image for the docker backend made without any image registry.

``debootstrap`` builds a minimal Debian (or Ubuntu) root file system from the
package mirror that this host's own apt configuration names (``/etc/apt/sources.list``
and ``/etc/apt/sources.list.d/*.list|*.sources``; ``--mirror`` overrides it), with a
C++ compiler, which is all a ``docker.toolchain: mount`` build needs in the image;
``tar`` packs it, and the engine imports it as an image (``docker import``, through
the SDK). The tarball is kept under ``~/.cache/kernel-matrix/docker/`` and the image
is tagged by a hash of its recipe, so both are made once per machine::

    sudo "$(command -v kernel-matrix)" docker base-image    # prints the image's tag
    kernel-matrix docker base-image                         # the same, already root

Only making it needs root (debootstrap); once the image is on the engine, the same
command, as any user, prints its tag. When debootstrap is not installed, its package
is fetched with ``apt-get download`` and unpacked into the cache (``dpkg -x``):
nothing is installed on the system.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from orchestrator.building.backends.container import Engine
from orchestrator.common.errors import DockerError, ToolError, UsageError
from orchestrator.common.fsutil import cache_root
from orchestrator.toolchains.aptsources import (
    APT_ROOT,
    OS_RELEASE,
    apt_sources,
    host_codename,
)
from orchestrator.toolchains.aptsources import (
    AptSource as AptSource,  # (re-exported: the parser moved down)
)

REPOSITORY = "kernel-matrix-base"
DEBOOTSTRAP_TIMEOUT_S = 1800
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


DEFAULT_PACKAGES = ("g++",)  # nvcc's host compiler and CMake's CXX; the rest is mounted
# Debian policy's package names (lower case, digits, + - .): anything else would only
# fail minutes later, inside debootstrap.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# URI schemes debootstrap can fetch from.
DEBOOTSTRAP_SCHEMES = ("http://", "https://", "ftp://", "file:/")


@dataclass(frozen=True)
class BaseRecipe:
    """What goes into the root file system."""

    suite: str  # bookworm, noble, ...
    mirror: str  # the archive's URI, as the host's apt sources write it
    variant: str = "minbase"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    keyring: Path | None = None  # the source's Signed-By file (checks, not content)

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


def base_packages(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The packages of the base image: the defaults, then ``extra`` (``--include``),
    each once. ``--include`` adds: an image without g++ could not build anything.

    >>> base_packages(["less", "g++", "make"])
    ('g++', 'less', 'make')
    >>> base_packages(["Less"])
    Traceback (most recent call last):
    ...
    orchestrator.common.errors.UsageError: --include: 'Less' is not a Debian package name
    """
    for name in extra:
        if not PACKAGE_NAME.fullmatch(name):
            raise UsageError(f"--include: {name!r} is not a Debian package name")
    return tuple(dict.fromkeys([*DEFAULT_PACKAGES, *extra]))


def host_recipe(
    suite: str | None = None,
    mirror: str | None = None,
    packages: tuple[str, ...] = DEFAULT_PACKAGES,
    *,
    apt_root: Path = APT_ROOT,
    os_release: Path = OS_RELEASE,
) -> BaseRecipe:
    """The recipe whose mirror (and suite) come from this host's apt configuration:
    the first enabled ``deb`` source that lists ``suite`` (by default the host's own
    release). ``mirror`` given, no source is needed."""
    suite = suite or host_codename(os_release)
    if mirror:
        if not suite:
            raise ToolError(f"{os_release} names no release codename: pass --suite (e.g. bookworm)")
        return BaseRecipe(suite=suite, mirror=mirror.rstrip("/"), packages=packages)
    sources = [s for s in apt_sources(apt_root) if s.uri.startswith(DEBOOTSTRAP_SCHEMES)]
    chosen = next((s for s in sources if suite in s.suites), None) if suite else None
    if chosen is None or not suite:
        looked = f"{apt_root / 'sources.list'} and {apt_root / 'sources.list.d'}"
        what = f"suite '{suite}'" if suite else "a suite (and /etc/os-release no codename)"
        raise ToolError(
            f"no enabled apt source of this host lists {what} (looked in {looked}): "
            f"pass --mirror URI (and --suite) to name a Debian or Ubuntu archive"
        )
    return BaseRecipe(
        suite=suite, mirror=chosen.uri.rstrip("/"), packages=packages, keyring=chosen.keyring
    )


def docker_cache() -> Path:
    return cache_root() / "docker"


def ensure_offline_base(
    engine: Engine,
    recipe: BaseRecipe | None = None,
    say: Callable[[str], None] | None = None,
) -> str:
    """The tag of the base image, imported (and its rootfs made) only when missing;
    ``say`` hears what is about to take minutes."""
    recipe = recipe or host_recipe()
    if engine.image_id(recipe.tag) is not None:
        return recipe.tag
    docker_cache().mkdir(parents=True, exist_ok=True)
    with FileLock(str(recipe.tarball) + ".lock"):
        if engine.image_id(recipe.tag) is not None:
            return recipe.tag
        made_tarball = False
        try:
            if not recipe.tarball.is_file():
                if say is not None:
                    say(
                        f"making {recipe.tag}: debootstrap {recipe.suite} from {recipe.mirror} "
                        f"(a few minutes; log: {debootstrap_log(recipe)})"
                    )
                make_rootfs_tarball(recipe)
                made_tarball = True
            if say is not None:
                say(f"importing {recipe.tarball} as {recipe.tag}")
            engine.import_rootfs(
                recipe.tarball,
                tag=recipe.tag,
                changes=[f"ENV PATH={DEFAULT_PATH}", "LABEL kernel-matrix=1"],
            )
        except BaseException:  # an error, or Ctrl-C: no half-made base stays behind
            discard_failed_base(engine, recipe, made_tarball, say)
            raise
    return recipe.tag


def discard_failed_base(
    engine: Engine, recipe: BaseRecipe, made_tarball: bool, say: Callable[[str], None] | None
) -> None:
    """After a failed attempt: remove the image if the engine tagged it anyway (an
    import cut off on our side may still finish there) and the tarball this attempt
    made, so the next attempt starts clean and nothing half-made is taken for the base.
    A tarball an earlier attempt made stays: it imported before, or will be retried.
    Never raises: the failure being reported matters more."""
    try:
        engine.remove_image(recipe.tag)
    except DockerError as exc:
        if say is not None:
            say(f"warning: {exc}")
    if made_tarball:
        try:
            recipe.tarball.unlink(missing_ok=True)
        except OSError as exc:
            if say is not None:
                say(f"warning: cannot remove {recipe.tarball}: {exc.strerror or exc}")


def make_rootfs_tarball(recipe: BaseRecipe) -> Path:
    """debootstrap ``recipe`` and pack it as ``recipe.tarball`` (atomically)."""
    if os.geteuid() != 0:
        raise ToolError(
            f"making the base image {recipe.tag} needs root (debootstrap), once per "
            f'machine: sudo "$(command -v kernel-matrix)" docker base-image (with the same '
            f"options), or that command without sudo as root; afterwards it needs no root"
        )
    command, env = debootstrap_command()
    if recipe.keyring is not None:
        command.append(f"--keyring={recipe.keyring}")
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
            log=debootstrap_log(recipe),
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


def debootstrap_log(recipe: BaseRecipe) -> Path:
    return docker_cache() / f"debootstrap-{recipe.digest}.log"


def debootstrap_command() -> tuple[list[str], dict[str, str]]:
    """A runnable debootstrap: the system's, or Debian's package unpacked in the cache;
    and its environment, with apt's HTTP proxy (debootstrap's wget reads only
    ``http_proxy``)."""
    env = dict(os.environ)
    if "http_proxy" not in env:
        proxy = apt_http_proxy()
        if proxy:
            env["http_proxy"] = proxy
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


def apt_http_proxy() -> str | None:
    """``Acquire::http::Proxy`` of the host's apt configuration, if set."""
    if not shutil.which("apt-config"):
        return None
    try:
        out = subprocess.run(
            ["apt-config", "shell", "PROXY", "Acquire::http::Proxy"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"^PROXY='([^']+)'", out.strip())
    return match[1] if match and match[1].lower() not in ("false", "direct") else None


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


if __name__ == "__main__":  # the old entry point, named by older docs: say where it went
    import sys

    print(
        "kernel-matrix: error: use: kernel-matrix docker base-image (as root: once per machine)",
        file=sys.stderr,
    )
    sys.exit(2)
