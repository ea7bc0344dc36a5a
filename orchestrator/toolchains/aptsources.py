"""The host's own apt sources: the enabled ``deb`` entries of ``/etc/apt/sources.list``
and ``/etc/apt/sources.list.d/*.list|*.sources`` (one-line and deb822), and the
host's release codename. Read by the Debian CUDA toolchain provider (which builds a
private sources list for the same mirrors) and by the docker backend's base image
(debootstrap from the same mirror). Nothing here writes apt's configuration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APT_ROOT = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")


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
            continue  # (unreadable_sources() names them)
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        found.extend(parse(text, path))
    return found


def unreadable_sources(root: Path = APT_ROOT) -> list[str]:
    """The source files of ``root`` that exist but cannot be read, each with why
    (``/etc/apt/sources.list: Permission denied``)."""
    files = [root / "sources.list"]
    listed = root / "sources.list.d"
    if listed.is_dir():
        files += sorted(p for p in listed.iterdir() if p.suffix in (".list", ".sources"))
    problems = []
    for path in files:
        if not path.exists() and not path.is_symlink():
            continue
        try:
            path.read_bytes()
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    return problems


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


def host_os_id(os_release: Path = OS_RELEASE) -> str | None:
    """``ID`` of this host (``debian``, ``ubuntu``), if it says."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    match = re.search(r"^ID=\"?([A-Za-z0-9._-]+)\"?\s*$", text, re.MULTILINE)
    return match[1] if match else None
