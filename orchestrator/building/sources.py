"""The source tree a matrix builds: a directory, an sdist, or a release on the package
index (``vllm==0.33.0``), given by the matrix or by ``run --source``.

An sdist is unpacked once into the cache (member by member: only regular files and
directories, no absolute paths, no ``..``; never ``extractall``). A release is the
sdist of that version on the package index pip is configured with (``PIP_INDEX_URL``
or pip's configuration, else pip's own default), found through the index's JSON
simple API (PEP 691) or its HTML pages (PEP 503), and checked against the digest the
index publishes. Credentials in the index URL are sent to that host only, never shown.
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock
from packaging.version import InvalidVersion, Version

from orchestrator.common import stopping
from orchestrator.common.errors import InputFileError, ToolchainError, UsageError
from orchestrator.common.fsutil import cache_root, staged_directory
from orchestrator.toolchains.cuda import LOCK_TIMEOUT_S

_RELEASE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")
MAX_SDIST_BYTES = 2 * 1024**3  # unpacked: vLLM's is about 60 MB
DOWNLOAD_TIMEOUT_S = 600
MAX_INDEX_PAGE_BYTES = 64 * 1024**2  # vLLM's JSON page: about 1 MB


def resolve_source(
    spec: str, *, progress: bool = True, repository: Path | None = None, option: str = "--source"
) -> Path:
    """The directory to build for ``spec``: a directory as it is, an ``.tar.gz``
    sdist unpacked (cached), ``NAME==VERSION`` downloaded as an sdist (cached), or,
    with a git ``repository``, a ref of it (``origin/main``, a commit) exported with
    ``git archive`` and unpacked (cached; the repository's work tree is not touched)."""
    release = _RELEASE.match(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise UsageError(f"{option} {spec}: not a directory nor an sdist (.tar.gz)")
        return unpack_sdist(path)
    if release:
        return unpack_sdist(download_sdist(release[1], release[2], progress=progress))
    commit = _commit(repository, spec) if repository is not None else None
    if commit is not None and repository is not None:
        return source_at_commit(repository, commit)
    raise UsageError(
        f"{option} {spec}: no such directory or sdist, not a release like vllm==0.33.0"
        + (f", and not a git ref of {repository}" if repository is not None else "")
    )


def _commit(repository: Path, ref: str) -> str | None:
    """The commit ``ref`` names in ``repository``, or None (not a repository, no such ref)."""
    if ref.startswith("-"):  # never an option to git
        return None
    try:
        found = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def source_at_commit(repository: Path, commit: str) -> Path:
    """The tree of ``commit``, from ``git archive`` (unpacked once under the cache, as
    an sdist is; the repository's work tree and index are not touched)."""
    name = f"{repository.resolve().name}-{commit[:12]}"
    with tempfile.TemporaryDirectory(prefix="kernel-matrix-") as tmp:
        archive = Path(tmp) / f"{name}.tar.gz"
        done = subprocess.run(
            ["git", "-C", str(repository), "archive", "--format=tar.gz", f"--prefix={name}/",
             "-o", str(archive), commit],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if done.returncode != 0:
            raise ToolchainError(
                f"git archive {commit[:12]} of {repository} failed: "
                + (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            )
        return unpack_sdist(archive)


def unpack_sdist(sdist: Path) -> Path:
    """The sdist's top directory, unpacked once under ``<cache>/sources``."""
    digest = hashlib.sha256()
    with sdist.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = cache_root() / "sources" / f"{sdist.name.split('.tar')[0]}-{digest.hexdigest()[:12]}"
    done = target / ".kernel-matrix-unpacked"
    if done.is_file():
        return target / done.read_text().strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    with stopping.locked(
        FileLock(str(target) + ".lock"), f"unpacking {sdist.name}", LOCK_TIMEOUT_S
    ):
        if done.is_file():
            return target / done.read_text().strip()
        with staged_directory(target, ".unpack-") as staging:
            top = _unpack(sdist, staging)
            (staging / ".kernel-matrix-unpacked").write_text(top + "\n")
    return target / top


def _unpack(sdist: Path, into: Path) -> str:
    """Write the sdist's regular files and directories under ``into``; returns its
    single top-level directory. Anything else (links, devices, paths leaving the
    tree) is an input error."""
    tops: set[str] = set()
    total = 0
    try:
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or not name.parts:
                    raise InputFileError(f"{sdist}: member '{member.name}' leaves the tree")
                tops.add(name.parts[0])
                destination = into.joinpath(*name.parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    continue  # links and devices are never needed to configure
                total += member.size
                if total > MAX_SDIST_BYTES:
                    raise InputFileError(f"{sdist}: unpacks to more than {MAX_SDIST_BYTES} bytes")
                destination.parent.mkdir(parents=True, exist_ok=True)
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                with stream, destination.open("wb") as out:
                    shutil.copyfileobj(stream, out)
                if member.mode & 0o111:
                    destination.chmod(0o755)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError):
            raise
        raise InputFileError(f"{sdist}: not a readable sdist ({exc})") from None
    if len(tops) != 1:
        raise InputFileError(f"{sdist}: an sdist has one top-level directory, not {len(tops)}")
    return tops.pop()


# --- a release's sdist from the configured package index ------------------------------


def index_url() -> str:
    """The package index pip uses here: ``PIP_INDEX_URL``, pip's configuration, or
    pip's built-in default (asked from pip, never written here)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    configured = _pip_config("global.index-url")
    if configured:
        return configured
    try:
        from pip._internal.models.index import PyPI  # pip's own default index
    except ImportError:
        raise ToolchainError(
            "no package index configured (set PIP_INDEX_URL) and pip is not importable"
        ) from None
    return str(PyPI.simple_url)


def _pip_config(key: str) -> str | None:
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None


def _ssl_context() -> ssl.SSLContext:
    cafile = os.environ.get("PIP_CERT") or _pip_config("global.cert")
    return ssl.create_default_context(cafile=cafile if cafile else None)


def download_sdist(name: str, version: str, *, progress: bool = True) -> Path:
    """The sdist of ``name==version`` from the package index, cached under
    ``<cache>/sdists`` and checked against the index's sha256."""
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    target_dir = cache_root() / "sdists"
    cached = sorted(target_dir.glob(f"{normalized.replace('-', '[-_]')}-{version}.tar.gz"))
    if cached:
        return cached[0]
    base = index_url().rstrip("/") + "/"
    page = urllib.parse.urljoin(base, f"{normalized}/")
    context = _ssl_context()
    files = _project_files(name, version, page, context)
    sdists: dict[str, IndexFile] = {}
    for file in files:
        found = re.fullmatch(
            rf"{normalized.replace('-', '[-_.]')}-(.+)\.tar\.gz", file.filename, re.IGNORECASE
        )
        if found:
            sdists.setdefault(found[1], file)
    if version not in sdists:
        raise UsageError(
            f"{name}=={version}: the package index has no sdist of that version"
            + (f" (newest: {', '.join(_newest(sdists, 5))})" if sdists else " (nor of any)")
        )
    entry = sdists[version]
    request = _request(entry.url)
    target_dir.mkdir(parents=True, exist_ok=True)
    filename = entry.filename
    target: Path = target_dir / filename
    if progress:
        print(
            f"kernel-matrix: downloading {filename}"
            + (f" ({entry.size / 1e6:.0f} MB)" if entry.size is not None else ""),
            file=sys.stderr,
        )
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=target_dir)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S, context=context) as answer,  # noqa: S310
        ):
            for block in iter(lambda: answer.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
                if out.tell() > MAX_SDIST_BYTES:
                    raise ToolchainError(f"{filename}: larger than {MAX_SDIST_BYTES} bytes")
        if entry.sha256 and digest.hexdigest() != entry.sha256:
            raise ToolchainError(f"{filename}: sha256 differs from the index's")
        os.replace(tmp_name, target)
    except OSError as exc:
        raise ToolchainError(f"downloading {filename} failed ({exc})") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target


def _newest(versions: Iterable[str], count: int) -> list[str]:
    """The ``count`` newest of ``versions`` (PEP 440 order; others last).

    >>> _newest(["0.9.2", "y", "0.10.0", "0.33.0rc1", "0.33.0", "x"], 6)
    ['0.33.0', '0.33.0rc1', '0.10.0', '0.9.2', 'y', 'x']
    """

    def key(text: str) -> tuple[int, Version, str]:
        try:
            return (1, Version(text), "")
        except InvalidVersion:
            return (0, Version("0"), text)

    return sorted(versions, key=key, reverse=True)[:count]


@dataclass(frozen=True)
class IndexFile:
    """One file a package index lists for a project."""

    filename: str
    url: str  # absolute
    sha256: str  # "" where the index publishes none
    size: int | None = None  # bytes, where the index says


def _project_files(name: str, version: str, page: str, context: ssl.SSLContext) -> list[IndexFile]:
    """The files the index lists for a project. The JSON simple API (PEP 691) is asked
    for first; an index that answers only HTML (PEP 503) is read too."""
    shown = _without_credentials(page)
    request = _request(page, {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:  # noqa: S310
            kind = answer.headers.get_content_type()
            body = answer.read(MAX_INDEX_PAGE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise UsageError(
                f"{name}=={version}: the package index has no project '{name}' ({shown})"
            ) from None
        raise ToolchainError(f"cannot list {name} on the package index {shown} ({exc})") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolchainError(
            f"cannot reach the package index {shown} ({reason}); check the network, "
            "PIP_INDEX_URL or the proxy"
        ) from None
    if len(body) > MAX_INDEX_PAGE_BYTES:
        raise ToolchainError(f"{shown}: the index page is larger than {MAX_INDEX_PAGE_BYTES} bytes")
    try:
        if kind.endswith("json"):
            return _json_files(json.loads(body), page)
        return _html_files(body.decode("utf-8", errors="replace"), page)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ToolchainError(f"{shown}: not a package index page ({exc})") from None


def _json_files(listing: object, page: str) -> list[IndexFile]:
    if not isinstance(listing, dict) or not isinstance(listing.get("files"), list):
        raise ValueError("no 'files' list in the JSON answer")
    files = []
    for item in listing["files"]:
        if isinstance(item, dict) and isinstance(item.get("filename"), str) and item.get("url"):
            hashes = item.get("hashes")
            hashes = hashes if isinstance(hashes, dict) else {}
            size = item.get("size")
            files.append(
                IndexFile(
                    item["filename"],
                    urllib.parse.urljoin(page, str(item["url"])),
                    str(hashes.get("sha256", "")),
                    size if isinstance(size, int) and size >= 0 else None,
                )
            )
    return files


class _Anchors(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _html_files(text: str, page: str) -> list[IndexFile]:
    """PEP 503: one anchor a file, its digest in the URL's ``#sha256=`` fragment.

    >>> _html_files('<a href="../../f/v-1.0.tar.gz#sha256=ab">v-1.0.tar.gz</a>', "http://i/s/v/")
    [IndexFile(filename='v-1.0.tar.gz', url='http://i/f/v-1.0.tar.gz', sha256='ab', size=None)]
    """
    anchors = _Anchors()
    anchors.feed(text)
    files = []
    for href in anchors.hrefs:
        url, _, fragment = urllib.parse.urljoin(page, href).partition("#")
        digest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
        filename = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
        files.append(IndexFile(filename, url, digest))
    return files


def _request(url: str, headers: dict[str, str] | None = None) -> urllib.request.Request:
    """A request for ``url`` (http(s) only); credentials in it (an index URL like
    ``https://user:token@mirror/simple``, as pip takes them) go into a Basic
    ``Authorization`` header, which urllib does not do by itself."""
    _check_scheme(url)
    request = urllib.request.Request(_without_credentials(url), headers=headers or {})  # noqa: S310
    userinfo = urllib.parse.urlsplit(url).netloc.rpartition("@")[0]
    if userinfo:
        user, _, password = (urllib.parse.unquote(p) for p in userinfo.partition(":"))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        # unredirected: a redirect to another host (a CDN) does not get the credentials
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _without_credentials(url: str) -> str:
    """``url`` as an error may show it: a password in an index URL stays out of logs.

    >>> _without_credentials("https://me:secret@mirror.example/simple/vllm/")
    'https://mirror.example/simple/vllm/'
    """
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _check_scheme(url: str) -> None:
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ToolchainError(f"refusing to download from {_without_credentials(url)}: not http(s)")
