"""The profiles this tool ships (``orchestrator/profiles/``): families files of real
projects, and the truth tables established by hand for their released wheels.

``--families vllm`` names the shipped ``vllm.yaml``; the truth tables answer "which
release serves this family on this device", which ``check`` suggests when a family
is missing on the user's GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from orchestrator.archs import ComputeCapability

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
_SECTION = re.compile(
    r"^### (?P<project>\S+) (?P<release>\S+) — CUDA (?P<cuda>[^—]+?)(?: — (?P<platform>\S+))?\s*$"
)


def shipped_profiles() -> list[str]:
    """The names ``--families`` accepts for a shipped profile."""
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def resolve_families(value: Path) -> Path:
    """``--families``: a file as given, or the shipped profile of that name
    (``vllm`` -> ``orchestrator/profiles/vllm.yaml``) when no such file exists."""
    if value.exists() or len(value.parts) != 1 or value.suffix:
        return value
    shipped = PROFILES / f"{value.name}.yaml"
    return shipped if shipped.is_file() else value


@dataclass(frozen=True)
class TruthRow:
    release: str
    cuda: str
    platform: str  # x86_64 or aarch64
    family: str
    device: str
    status: str  # the first word of the cell: present, missing, hollow, n/a


def truth_rows(profile: str) -> tuple[TruthRow, ...]:
    """Every family × device cell of the profile's truth tables (``<profile>-truth.md``)."""
    return _truth_rows(PROFILES / f"{profile}-truth.md")


@cache
def _truth_rows(path: Path) -> tuple[TruthRow, ...]:
    if not path.is_file():
        return ()
    rows: list[TruthRow] = []
    section: re.Match[str] | None = None
    devices: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## ") or line.startswith("### "):
            section, devices = _SECTION.match(line), []
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "family" and "kernels per cubin arch (hollow)" in cells:
            devices = cells[cells.index("kernels per cubin arch (hollow)") + 1 :]
            continue
        if not devices or len(cells) < len(devices) + 1 or set(cells[0]) <= {"-", " ", ":"}:
            continue
        for device, cell in zip(devices, cells[-len(devices) :], strict=True):
            words = cell.replace("*", "").split()
            rows.append(
                TruthRow(
                    section["release"],
                    section["cuda"].strip(),
                    section["platform"] or "x86_64",
                    cells[0],
                    device,
                    words[0] if words else "",
                )
            )
    return tuple(rows)


def releases_serving(
    profile: str, family: str, device: ComputeCapability, platform: str
) -> list[str]:
    """The releases whose truth table has ``family`` present on ``device`` for this
    platform, newest first."""
    found = {
        row.release
        for row in truth_rows(profile)
        if row.family == family
        and row.device == str(device)
        and row.platform == platform
        and row.status == "present"
    }
    return sorted(found, key=release_key, reverse=True)


def release_key(release: str) -> tuple[int, ...]:
    """``0.33.0`` -> (0, 33, 0): releases in numeric order."""
    return tuple(int(part) for part in re.findall(r"\d+", release))
