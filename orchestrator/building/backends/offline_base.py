"""A base image for the docker backend made without any image registry.

``debootstrap`` builds a minimal Debian (or Ubuntu) root file system from the
package mirror that this host's own apt configuration names (``/etc/apt/sources.list``
and ``/etc/apt/sources.list.d/*.list|*.sources``; ``--mirror`` overrides it), with a
C++ compiler, which is all a ``docker.toolchain: mount`` build needs in the image;
``tar`` packs it, and the engine imports it as an image (``docker import``, through
the SDK). The tarball is kept under ``~/.cache/kernel-matrix/docker/`` and the image
is tagged by a hash of its recipe, so both are made once per machine::

    sudo "$(command -v kernel-matrix)" docker base-image    # prints the image's tag

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from orchestrator.building.backends.container import Engine
from orchestrator.common.errors import ToolError
from orchestrator.toolchains.cuda import cache_root

REPOSITORY = "kernel-matrix-base"
DEBOOTSTRAP_TIMEOUT_S = 1800
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


APT_ROOT = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
DEFAULT_PACKAGES = ("g++",)  # nvcc's host compiler and CMake's CXX; the rest is mounted
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


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of the host's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    keyring: Path | None
    origin: Path


def apt_sources(root: Path = APT_ROOT) -> list[AptSource]:
    """The enabled ``deb`` entries of ``root``'s sources, in the order apt reads them:
    ``sources.list``, then ``sources.list.d/`` by file name (``*.list`` one-line
    entries, ``*.sources`` deb822 paragraphs)."""
    files = [root / "sources.list"]
    listed = root / "sources.list.d"
    if listed.is_dir():
        files += sorted(p for p in listed.iterdir() if p.suffix in (".list", ".sources"))
    found: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        found.extend(parse(text, path))
    return found


def _one_line_entries(text: str, origin: Path) -> Iterator[AptSource]:
    """``deb [opt=value ...] uri suite [component ...]`` lines."""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        options: dict[str, str] = {}
        bracket = re.match(r"^deb\s+\[([^\]]*)\]\s*(.*)$", line)
        if bracket:
            for option in bracket[1].split():
                key, _, value = option.partition("=")
                options[key.lower()] = value
            words = bracket[2].split()
        elif line.startswith("deb ") or line.startswith("deb\t"):
            words = line.split()[1:]
        else:
            continue  # deb-src, blank, or not an entry
        if len(words) >= 2:
            yield AptSource(words[0], (words[1],), _keyring(options.get("signed-by")), origin)


def _deb822_entries(text: str, origin: Path) -> Iterator[AptSource]:
    """Paragraphs of ``Types:``, ``URIs:``, ``Suites:`` (and ``Enabled:``, ``Signed-By:``)."""
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:  # a continuation (an inline key block)
                fields[key] += "\n" + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        suites = tuple(fields.get("suites", "").split())
        for uri in fields.get("uris", "").split():
            if suites:
                yield AptSource(uri, suites, _keyring(fields.get("signed-by")), origin)


def _keyring(value: str | None) -> Path | None:
    """A Signed-By that names a key file (an inline key block is not one)."""
    if not value or "\n" in value or not value.startswith("/"):
        return None
    path = Path(value.split()[0])
    return path if path.is_file() else None


def host_codename(os_release: Path = OS_RELEASE) -> str | None:
    """``VERSION_CODENAME`` of this host (bookworm, noble), if it says."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([A-Za-z0-9.-]+)\"?\s*$", text, re.MULTILINE)
    return match[1] if match else None


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
        if not recipe.tarball.is_file():
            if say is not None:
                say(
                    f"making {recipe.tag}: debootstrap {recipe.suite} from {recipe.mirror} "
                    f"(a few minutes; log: {debootstrap_log(recipe)})"
                )
            make_rootfs_tarball(recipe)
        if say is not None:
            say(f"importing {recipe.tarball} as {recipe.tag}")
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
            f"making the base image {recipe.tag} needs root (debootstrap), once per "
            f'machine: sudo "$(command -v kernel-matrix)" docker base-image (with the same '
            f"options); afterwards it needs no root"
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
        'kernel-matrix: error: use: sudo "$(command -v kernel-matrix)" docker base-image',
        file=sys.stderr,
    )
    sys.exit(2)
