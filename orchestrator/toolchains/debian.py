"""CUDA 12.x compilers from Debian's non-free archive (``nvidia-cuda-toolkit``).

PyPI has no CUDA 12 nvcc; Debian packages one: ``nvidia-cuda-toolkit`` 12.4.131
(trixie, sid) and 12.5.40 (experimental), with ``nvidia-cuda-dev`` (headers and
the static runtime). They are fetched with ``apt-get download`` through the mirrors
that this host's own apt sources name, with a *private* apt state: a sources list
of ours (those mirror URIs, the suites above, the ``non-free`` component, each
source's own ``Signed-By`` keyring, else the system's trusted keys: apt verifies
the archive's signatures as it always does), private lists, cache and status. The
system's apt configuration is read, never changed.

Of the two packages (about 1 GB) only what a build needs is unpacked (about
215 MB) and laid out as a relocatable CUDA_HOME under
``cache_root()/toolchains/cuda-12.X-debian``: ``bin/`` (nvcc and its tools),
``nvvm/{bin,libdevice}``, ``include/``, ``lib64/`` (``libcudart_static.a``,
``libcudadevrt.a``, ``libculibos.a``, ``stubs/libcuda.so``) and a relative
``bin/nvcc.profile`` (the package's is an absolute link to ``/etc/nvcc.profile``).
The headers are completed with CCCL from PyPI (``nvidia-cuda-cccl-cu12``):
``cuda_fp16.h`` includes ``<nv/target>``, which Debian ships in another package.
Everything is staged in a temporary directory and renamed into place, under a lock.

A package that cannot be had (no Debian sources, not a Debian host, a version
withdrawn from the archive) is one :class:`ToolchainError` line (exit 3); a
withdrawn version is remembered for a day, so that planning marks the cells
*toolchain unavailable* with that line instead of failing each of them again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from filelock import FileLock, Timeout

from orchestrator.archs import CudaVersion
from orchestrator.common import progress, stopping
from orchestrator.common.errors import ToolchainError
from orchestrator.common.fsutil import staged_directory, write_json
from orchestrator.toolchains import aptsources
from orchestrator.toolchains.base import (
    LOCK_TIMEOUT_S,
    PROVISIONING,
    Toolchain,
    _toolchain_what,
    cache_root,
    nvcc_version,
    pip_failure,
)

ORIGIN = "debian"
COMPONENT = "non-free"
TOOLKIT = "nvidia-cuda-toolkit"
DEV = "nvidia-cuda-dev"
APT_TIMEOUT_S = 600
DOWNLOAD_TIMEOUT_S = 3600
WITHDRAWN_TTL_S = 24 * 3600
REPORT_EVERY_S = 2.0
TOOLS = ("apt-get", "apt-cache", "dpkg-deb")


@dataclass(frozen=True)
class DebianRelease:
    """Where one CUDA version lives in Debian's archive."""

    cuda: CudaVersion
    suites: tuple[str, ...]  # the suites that carry it, newest package first found
    cccl: str  # the PyPI CCCL headers of the same release

    @property
    def upstream(self) -> str:
        """The prefix of ``nvidia-cuda-toolkit``'s version: ``12.4.``."""
        return f"{self.cuda}."


RELEASES: dict[CudaVersion, DebianRelease] = {
    CudaVersion(12, 4): DebianRelease(
        CudaVersion(12, 4), ("trixie", "sid"), "nvidia-cuda-cccl-cu12==12.4.127.post1"
    ),
    CudaVersion(12, 5): DebianRelease(
        CudaVersion(12, 5), ("experimental",), "nvidia-cuda-cccl-cu12==12.5.39.post1"
    ),
}


def debian_available(cuda: CudaVersion) -> bool:
    """Whether Debian packages a compiler of this version."""
    return cuda in RELEASES


@dataclass(frozen=True)
class Mirror:
    """A Debian archive that the host's apt sources name, and the keyring they
    verify it with (None: apt's trusted keys)."""

    uri: str
    keyring: Path | None


def debian_mirrors(apt_root: Path | None = None, os_release: Path | None = None) -> list[Mirror]:
    """The archives of the host's own Debian release: the URIs of its enabled
    ``deb`` sources that list the host's codename (``bookworm``) or one of its
    ``-updates``/``-backports`` suites; security archives and third-party
    repositories (other suite names) are not Debian's main archive."""
    codename = aptsources.host_codename(os_release or aptsources.OS_RELEASE)
    if not codename:
        return []
    found: list[Mirror] = []
    for source in aptsources.apt_sources(apt_root or aptsources.APT_ROOT):
        if not any(s in (codename, f"{codename}-updates") for s in source.suites):
            continue
        mirror = Mirror(source.uri.rstrip("/"), source.keyring)
        if mirror not in found:
            found.append(mirror)
    return found


def sources_list(release: DebianRelease, mirrors: Sequence[Mirror]) -> str:
    """The private sources list: each mirror × each suite of ``release``, non-free.

    >>> print(sources_list(RELEASES[CudaVersion(12, 4)],
    ...                    [Mirror("http://mirror.example/debian", Path("/k.gpg"))]), end="")
    deb [signed-by=/k.gpg] http://mirror.example/debian trixie non-free
    deb [signed-by=/k.gpg] http://mirror.example/debian sid non-free
    """
    lines = []
    for mirror in mirrors:
        options = f"[signed-by={mirror.keyring}] " if mirror.keyring else ""
        for suite in release.suites:
            lines.append(f"deb {options}{mirror.uri} {suite} {COMPONENT}")
    return "".join(line + "\n" for line in lines)


def debian_home(cuda: CudaVersion) -> Path:
    return cache_root() / "toolchains" / f"cuda-{cuda}-debian"


def _withdrawn_marker(cuda: CudaVersion) -> Path:
    return cache_root() / "toolchains" / f"cuda-{cuda}-debian.unavailable.json"


def find_cached(cuda: CudaVersion) -> Toolchain | None:
    """The already-provisioned Debian toolchain of ``cuda``, without installing."""
    marker = debian_home(cuda) / "toolchain.json"
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    home = debian_home(cuda)
    if not (home / "bin" / "nvcc").is_file():
        return None
    return Toolchain(cuda, home, info["full_version"], ORIGIN)


def unavailable(cuda: CudaVersion, reason: str) -> str:
    """The one line of a Debian toolchain that cannot be had, with the remedy."""
    return (
        f"toolchain unavailable: CUDA {cuda} from Debian's {COMPONENT} archive: {reason}; "
        f"pass --cuda-home /usr/local/cuda-{cuda} (a CUDA {cuda} toolkit), set CUDA_HOME, "
        f"or use --backend docker (nvidia/cuda:{cuda}.x-devel images)"
    )


def host_problem(
    cuda: CudaVersion, apt_root: Path | None = None, os_release: Path | None = None
) -> str | None:
    """Why this host cannot fetch ``cuda`` from Debian, known without the network
    (None: it can try)."""
    if cuda not in RELEASES:
        known = ", ".join(str(c) for c in RELEASES)
        return f"Debian packages no CUDA {cuda} compiler (it has {known})"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"this host has no {', '.join(missing)} (not a Debian host?)"
    release_file = os_release or aptsources.OS_RELEASE
    os_id = aptsources.host_os_id(release_file)
    if os_id != "debian":
        # (Ubuntu is ID_LIKE=debian, but its mirrors carry no Debian suite.)
        return f"this host is not Debian ({release_file} says ID={os_id or '(none)'})"
    root = apt_root or aptsources.APT_ROOT
    if not (root / "sources.list").exists() and not (root / "sources.list.d").is_dir():
        return f"{root} has no sources.list or sources.list.d"
    if not debian_mirrors(root, release_file):
        codename = aptsources.host_codename(release_file) or "(no VERSION_CODENAME)"
        unreadable = aptsources.unreadable_sources(root)
        why = f"; cannot read {'; '.join(unreadable)}" if unreadable else ""
        return (
            f"no enabled apt source of this host lists its Debian release '{codename}' "
            f"(looked in {root / 'sources.list'} and {root / 'sources.list.d'}{why}), so "
            f"no Debian mirror to fetch {TOOLKIT} from"
        )
    return None


def availability(cuda: CudaVersion) -> str | None:
    """None when a local build of ``cuda`` can get the Debian toolchain (cached, or
    this host can fetch it), else the line saying why not, with the remedy. Reads no
    network: a version found withdrawn by an earlier attempt is remembered a day."""
    if find_cached(cuda) is not None:
        return None
    problem = host_problem(cuda)
    if problem:
        return unavailable(cuda, problem)
    marker = _withdrawn_marker(cuda)
    try:
        info = json.loads(marker.read_text())
        if time.time() - float(info["at"]) < WITHDRAWN_TTL_S:
            return str(info["reason"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def provision(
    cuda: CudaVersion, *, apt_root: Path | None = None, os_release: Path | None = None
) -> Toolchain:
    """Fetch (once), unpack and lay out the Debian toolchain of ``cuda``."""
    cached = find_cached(cuda)
    if cached:
        return cached
    problem = host_problem(cuda, apt_root, os_release)
    if problem:
        raise ToolchainError(unavailable(cuda, problem))
    target = debian_home(cuda)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(target) + ".lock")
        with stopping.locked(lock, f"installing the CUDA {cuda} toolchain", LOCK_TIMEOUT_S):
            cached = find_cached(cuda)
            if cached:
                return cached
            mirrors = debian_mirrors(apt_root, os_release)
            return _install(RELEASES[cuda], mirrors, target)
    except Timeout:
        raise ToolchainError(f"{target}.lock: timed out waiting for another install") from None


class Withdrawn(ToolchainError):
    """The archive answered, but does not carry the package (any more)."""


def _install(release: DebianRelease, mirrors: Sequence[Mirror], target: Path) -> Toolchain:
    what = _toolchain_what(release.cuda)
    log = PROVISIONING.setdefault(what, [])
    started = time.monotonic()
    try:
        with staged_directory(target, f".cuda-{release.cuda}-debian-") as staging:
            apt = PrivateApt(staging / ".apt", sources_list(release, mirrors), log)
            apt.update()
            toolkit, dev = apt.versions(release)
            debs = staging / ".debs"
            debs.mkdir()
            apt.download(debs, [(TOOLKIT, toolkit), (DEV, dev)], what)
            for package, rules in ((TOOLKIT, toolkit_member), (DEV, dev_member)):
                (deb,) = debs.glob(f"{package}_*.deb")
                unpack(deb, staging, rules, f"{package} {apt.found[package]}", log)
            shutil.rmtree(debs)
            shutil.rmtree(staging / ".apt")
            add_cccl(staging, release.cccl, log)
            write_profile(staging)
            version, full = nvcc_version(staging / "bin" / "nvcc")
            if version != release.cuda:
                raise ToolchainError(
                    f"{TOOLKIT} {toolkit} has nvcc {full}, not CUDA {release.cuda}"
                )
    except Withdrawn as exc:
        write_json(_withdrawn_marker(release.cuda), {"reason": str(exc), "at": time.time()})
        raise
    _withdrawn_marker(release.cuda).unlink(missing_ok=True)
    write_json(
        target / "toolchain.json",
        {"full_version": full, TOOLKIT: toolkit, DEV: dev, "cccl": release.cccl},
    )
    log.append(
        f"kernel-matrix: {what}: {TOOLKIT} {toolkit} and {DEV} {dev} from Debian, "
        f"installed in {time.monotonic() - started:.0f} s"
    )
    return Toolchain(release.cuda, target, full, ORIGIN)


# --- apt, private -----------------------------------------------------------------


class PrivateApt:
    """apt-get/apt-cache with a state, cache, status and sources list of their own
    (under ``root``); the system's keyrings, proxies and other settings apply."""

    def __init__(self, root: Path, sources: str, log: list[str]) -> None:
        self.root, self.log = root, log
        self.found: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        for sub in ("lists/partial", "cache/archives/partial", "preferences.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text("")
        (root / "sources.list").write_text(sources)
        self.sources = sources

    def options(self) -> list[str]:
        settings = {
            "Dir::State": self.root,
            "Dir::State::Lists": self.root / "lists",
            "Dir::State::status": self.root / "status",
            "Dir::Cache": self.root / "cache",
            "Dir::Etc::SourceList": self.root / "sources.list",
            "Dir::Etc::SourceParts": "-",
            "Dir::Etc::PreferencesParts": self.root / "preferences.d",
            "Dir::Etc::Preferences": self.root / "preferences",
            "Acquire::Languages": "none",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def run(self, tool: str, args: list[str], *, cwd: Path | None = None) -> str:
        argv = [tool, *self.options(), *args]
        self.log.append(f"$ {tool} {' '.join(args)}")
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT_S if args[0] != "download" else DOWNLOAD_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolchainError(f"{tool} {args[0]} failed: {exc}") from None
        self.log.extend(line for line in (done.stdout + done.stderr).splitlines() if line)
        errors = apt_errors(done.stderr)
        if done.returncode != 0 or errors:
            said = errors[0] if errors else _last_line(done.stderr or done.stdout)
            raise ToolchainError(f"{tool} {args[0]} (private apt state {self.root}): {said}")
        return done.stdout

    def update(self) -> None:
        self.run("apt-get", ["update"])

    def versions(self, release: DebianRelease) -> tuple[str, str]:
        """The newest ``nvidia-cuda-toolkit`` of ``release`` and the ``nvidia-cuda-dev``
        it depends on."""
        listed = self.run("apt-cache", ["madison", TOOLKIT])
        toolkit = next(
            (v for v in madison_versions(listed) if v.startswith(release.upstream)), None
        )
        where = self.where(release)
        if toolkit is None:
            raise Withdrawn(
                unavailable(
                    release.cuda,
                    f"no {TOOLKIT} {release.upstream}* in the archive ({where}): "
                    "withdrawn from these suites?",
                )
            )
        shown = self.run("apt-cache", ["show", f"{TOOLKIT}={toolkit}"])
        dev = depended_version(shown, DEV)
        if dev is None:
            raise Withdrawn(unavailable(release.cuda, f"{TOOLKIT} {toolkit} names no {DEV} (= …)"))
        listed_dev = self.run("apt-cache", ["madison", DEV])
        if dev not in madison_versions(listed_dev):
            raise Withdrawn(
                unavailable(
                    release.cuda,
                    f"{DEV} {dev} (for {TOOLKIT} {toolkit}) is not in the archive ({where})",
                )
            )
        self.found = {TOOLKIT: toolkit, DEV: dev}
        self.sizes = {TOOLKIT: package_size(shown)}
        self.sizes[DEV] = package_size(self.run("apt-cache", ["show", f"{DEV}={dev}"]))
        return toolkit, dev

    def where(self, release: DebianRelease) -> str:
        uris = sorted({line.split()[-3] for line in self.sources.splitlines() if line})
        return f"suites {', '.join(release.suites)}, {COMPONENT}, of {', '.join(uris)}"

    def download(self, into: Path, packages: list[tuple[str, str]], what: str) -> None:
        total = sum(self.sizes.values())
        started = time.monotonic()

        def line() -> str:
            got = sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
            took = max(time.monotonic() - started, 1e-6)
            return (
                f"downloading {what} (Debian): {got / 1e6:.0f} of {total / 1e6:.0f} MB, "
                f"{got / 1e6 / took:.1f} MB/s, {took:.0f} s"
            )

        with ticking(line):
            self.run("apt-get", ["download", *(f"{p}={v}" for p, v in packages)], cwd=into)
        self.log.append(
            f"kernel-matrix: {what}: {total / 1e6:.0f} MB downloaded in "
            f"{time.monotonic() - started:.0f} s"
        )


def apt_errors(stderr: str) -> list[str]:
    """apt's lines that mean the archive could not be read as asked (``E:``, and the
    ``W:`` of a failed fetch or a bad signature; apt-get update exits 0 on some).

    >>> apt_errors("W: Download is performed unsandboxed as root\\n"
    ...            "E: The repository 'file:/r nosuch Release' does not have a Release file.")
    ["The repository 'file:/r nosuch Release' does not have a Release file."]
    """
    found = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith("E: ") or (
            line.startswith("W: ")
            and re.search(
                r"Failed to fetch|NO_PUBKEY|not signed|signature|doesn't have the component", line
            )
        ):
            found.append(line[3:])
    return found


def madison_versions(text: str) -> list[str]:
    """The versions ``apt-cache madison`` lists, in its order (newest first).

    >>> madison_versions(" nvidia-cuda-toolkit | 12.4.131~12.4.1-2 | http://m/debian "
    ...                  "trixie/non-free amd64 Packages\\n")
    ['12.4.131~12.4.1-2']
    """
    out: list[str] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[1] not in out:
            out.append(parts[1])
    return out


def depended_version(control: str, package: str) -> str | None:
    """The exact version ``package`` is depended on with (``pkg (= V)``)."""
    match = re.search(rf"^Depends:.*?\b{re.escape(package)} \(= ([^)\s]+)\)", control, re.M)
    return match[1] if match else None


def package_size(control: str) -> int:
    match = re.search(r"^Size: (\d+)", control, re.M)
    return int(match[1]) if match else 0


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["(no output)"])[-1]


@contextmanager
def ticking(line: Callable[[], str]) -> Iterator[None]:
    """Report ``line()`` every few seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(REPORT_EVERY_S):
            with suppress(OSError):
                progress.report(line())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --- the CUDA_HOME layout -----------------------------------------------------------

_TOOLKIT_BIN = ("bin2c", "cu++filt", "cudafe++", "cuobjdump", "fatbinary", "nvdisasm",
                "nvlink", "nvprune", "ptxas", "__nvcc_device_query")  # fmt: skip
_DEV_LIBS = ("libcudart_static.a", "libcudadevrt.a", "libculibos.a")
_MULTIARCH = r"usr/lib/[a-z0-9_]+-linux-gnu[a-z0-9_]*"


def toolkit_member(name: str) -> str | None:
    """Where a file of ``nvidia-cuda-toolkit`` goes in the CUDA_HOME (None: not needed).

    >>> [toolkit_member(n) for n in ("./usr/bin/ptxas", "./usr/bin/nvcc",
    ...     "./usr/lib/nvidia-cuda-toolkit/bin/nvcc", "./usr/lib/nvidia-cuda-toolkit/bin/cicc",
    ...     "./usr/lib/nvidia-cuda-toolkit/bin/crt/link.stub",
    ...     "./usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc",
    ...     "./usr/lib/nvidia-cuda-toolkit/bin/g++", "./etc/nvcc.profile")]
    ['bin/ptxas', None, 'bin/nvcc', 'nvvm/bin/cicc', 'bin/crt/link.stub', 'nvvm/libdevice/libdevice.10.bc', None, None]
    """
    name = name.removeprefix("./")
    tool = re.fullmatch(r"usr/bin/([^/]+)", name)
    if tool:
        return f"bin/{tool[1]}" if tool[1] in _TOOLKIT_BIN else None
    rules = (
        (r"usr/lib/nvidia-cuda-toolkit/bin/(nvcc)", "bin/{}"),
        (r"usr/lib/nvidia-cuda-toolkit/bin/(cicc)", "nvvm/bin/{}"),
        (r"usr/lib/nvidia-cuda-toolkit/bin/crt/([^/]+)", "bin/crt/{}"),
        (r"usr/lib/nvidia-cuda-toolkit/libdevice/([^/]+)", "nvvm/libdevice/{}"),
        (r"usr/include/(.+)", "include/{}"),
        (r"usr/share/doc/nvidia-cuda-toolkit/(copyright)", "doc/{}"),
    )
    for pattern, place in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return place.format(match[1])
    return None


def dev_member(name: str) -> str | None:
    """Where a file of ``nvidia-cuda-dev`` goes (headers, the static runtime, the
    driver stub); its 2.5 GB of static math libraries are not needed.

    >>> [dev_member(n) for n in ("./usr/include/cuda_fp8.h",
    ...     "./usr/lib/x86_64-linux-gnu/libcudadevrt.a",
    ...     "./usr/lib/aarch64-linux-gnu/stubs/libcuda.so",
    ...     "./usr/lib/x86_64-linux-gnu/libcublasLt_static.a")]
    ['include/cuda_fp8.h', 'lib64/libcudadevrt.a', 'lib64/stubs/libcuda.so', None]
    """
    name = name.removeprefix("./")
    header = re.fullmatch(r"usr/include/(.+)", name)
    if header:
        return f"include/{header[1]}"
    lib = re.fullmatch(rf"{_MULTIARCH}/([^/]+)", name)
    if lib and lib[1] in _DEV_LIBS:
        return f"lib64/{lib[1]}"
    if re.fullmatch(rf"{_MULTIARCH}/stubs/libcuda\.so", name):
        return "lib64/stubs/libcuda.so"
    return None


class _Counting:
    """A readable stream that counts what was read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


def unpack(
    deb: Path,
    home: Path,
    place: Callable[[str], str | None],
    what: str,
    log: list[str] | None = None,
) -> list[str]:
    """Extract the files of ``deb`` that ``place`` maps into ``home`` (regular files
    only, written by us at the mapped path: no link or path of the archive is
    followed), reporting progress; returns the paths written."""
    try:
        installed_kb = int(
            subprocess.run(
                ["dpkg-deb", "-f", str(deb), "Installed-Size"],
                capture_output=True, text=True, check=True, timeout=120,
            ).stdout.strip() or 0
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ToolchainError(f"{deb.name}: not a readable Debian package: {exc}") from None
    total = installed_kb * 1024
    started = time.monotonic()
    written: list[str] = []
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        counting = _Counting(proc.stdout)

        def line() -> str:
            took = time.monotonic() - started
            return (
                f"unpacking {what}: {counting.count / 1e9:.2f} of {total / 1e9:.2f} GB, "
                f"{took:.0f} s"
            )

        try:
            with ticking(line), tarfile.open(fileobj=counting, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    dest = place(member.name)
                    if dest is None or not member.isfile():
                        continue
                    path = home / dest
                    path.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None
                    with source, path.open("wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    path.chmod(0o755 if member.mode & 0o111 else 0o644)
                    written.append(dest)
        except tarfile.TarError as exc:
            proc.kill()
            raise ToolchainError(f"{deb.name}: unreadable data archive: {exc}") from None
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise ToolchainError(f"dpkg-deb --fsys-tarfile {deb.name}: {_last_line(stderr)}")
    if not written:
        raise ToolchainError(f"{deb.name}: none of the files a CUDA_HOME needs is in it")
    if log is not None:
        log.append(
            f"kernel-matrix: unpacked {len(written)} files of {what} in "
            f"{time.monotonic() - started:.0f} s"
        )
    return written


NVCC_PROFILE = """\
# Written by kernel-matrix: every path relative to this file, so the CUDA_HOME
# works wherever it is (moved, mounted read-only into a container).
TOP                = $(_HERE_)/..
CICC_PATH          = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH   += $(TOP)/lib64:
PATH              += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES          +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES          =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
CUDAFE_FLAGS      +=
PTXAS_FLAGS       +=
"""

REQUIRED = (
    "bin/nvcc", "bin/ptxas", "bin/fatbinary", "bin/nvlink", "bin/cudafe++",
    "bin/crt/link.stub", "nvvm/bin/cicc", "nvvm/libdevice/libdevice.10.bc",
    "include/cuda_runtime.h", "include/nv/target", "lib64/libcudart_static.a",
    "lib64/libcudadevrt.a", "lib64/stubs/libcuda.so",
)  # fmt: skip


def write_profile(home: Path) -> None:
    """The relative ``bin/nvcc.profile``; and check that the layout is complete."""
    missing = [p for p in REQUIRED if not (home / p).is_file()]
    if missing:
        raise ToolchainError(f"the unpacked Debian CUDA toolchain lacks {', '.join(missing)}")
    profile = home / "bin" / "nvcc.profile"
    tmp = profile.with_suffix(".tmp")
    tmp.write_text(NVCC_PROFILE)
    tmp.replace(profile)


def add_cccl(home: Path, requirement: str, log: list[str]) -> None:
    """CCCL's headers (``cuda/``, ``nv/``, ``cub/``, ``thrust/``) from PyPI into
    ``include/``, beside Debian's (which win where both have a file)."""
    scratch = Path(tempfile.mkdtemp(prefix=".cccl-", dir=home))
    try:
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                   "--no-deps", "--quiet", "--target", str(scratch), requirement]  # fmt: skip
        log.append(f"$ pip install --no-deps {requirement}")
        progress.report(f"installing {requirement}")
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise ToolchainError(f"installing {requirement} failed: {exc}") from None
        if done.returncode != 0:
            raise ToolchainError(f"installing {requirement} failed: {pip_failure(done.stderr)}")
        include = next(scratch.glob("nvidia/*/include"), None)
        if include is None or not (include / "nv").is_dir():
            raise ToolchainError(f"{requirement} has no include/nv (the headers cuda_fp16.h needs)")
        for source in sorted(include.rglob("*")):
            relative = source.relative_to(include)
            if "__pycache__" in relative.parts or source.suffix == ".py":
                continue  # the wheel's Python package files, not headers
            dest = home / "include" / relative
            if source.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif source.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
