"""``kernel-matrix check`` on sgl-kernel's PyPI wheels, against the truth table that
was established by hand with cuobjdump (``matrices/sgl-kernel-truth.md``, written by
``matrices/truth/vllm_by_hand.py`` with ``TRUTH_LIBS='sgl_kernel/**/*.so'``).

The expectations are read from that file: for every family row of a wheel, per
device, the status, the code objects that serve it and the library they are in
(sgl-kernel ships ``common_ops`` twice, ``sgl_kernel/sm90/`` loaded on 9.0 only and
``sgl_kernel/sm100/`` everywhere else: the profile anchors each family on one of them).

Cost: one wheel per platform, each checked once per session by ``check_paths`` (the
lazy read ``kernel-matrix check`` does). The x86_64 wheel (536 MB, ``pip download``
into ``~/.cache/kernel-matrix/wheels/sgl-kernel``, kept between runs) runs by
default; the aarch64 one (627 MB) only when ``KERNEL_MATRIX_SGL_KERNEL_WHEELS``
names it (``=x86_64,aarch64``). A wheel that is not cached and cannot be downloaded
skips its tests with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from filelock import FileLock

from orchestrator.archs import ComputeCapability, Target
from orchestrator.judge.check import CheckResult, check_paths
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.symbols import FamilyRule
from orchestrator.toolchains.cuda import cache_root

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "matrices" / "sgl-kernel.yaml"
TRUTH = ROOT / "matrices" / "sgl-kernel-truth.md"
WHEEL_DIR = cache_root() / "wheels" / "sgl-kernel"
VERSION = "0.3.21"
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}
SELECTED = tuple(
    p for p in os.environ.get("KERNEL_MATRIX_SGL_KERNEL_WHEELS", "x86_64").split(",") if p
)
CC = ComputeCapability.parse


# --- the truth, read from sgl-kernel-truth.md ------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One device column of a truth row: ``present (1 hollow) 5 via sm_100a``."""

    status: str
    via: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    family: str
    library: str  # as the table names it: a file name, or the path inside the wheel
    built: tuple[str, ...]  # the code objects of the family, from "kernels per cubin arch"
    devices: dict[str, Cell]


CELL = re.compile(
    r"^(?:missing|\**(?P<status>present|hollow)\**(?: \(\d+ hollow\))? \d+ via (?P<via>.+))$"
)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _cell(text: str) -> Cell:
    match = CELL.match(text)
    assert match, f"sgl-kernel-truth.md: cannot read the cell {text!r}"
    if match["status"] is None:
        return Cell(MISSING)
    return Cell(
        match["status"], tuple(p.strip().removesuffix(" PTX") for p in match["via"].split("+"))
    )


def read_truth(path: Path = TRUTH) -> dict[str, dict[str, Row]]:
    """platform -> family -> row, from the tables under ``### sgl-kernel V — ... — P``."""
    truth: dict[str, dict[str, Row]] = {}
    platform: str | None = None
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(rf"^### sgl-kernel {re.escape(VERSION)} — .* — (\S+)$", line):
            platform, header = match[1], None
        elif platform and line.startswith("| family |"):
            header = _cells(line)
        elif header and line.startswith("| ---"):
            continue
        elif header and platform and line.startswith("| "):
            row = dict(zip(header, _cells(line), strict=True))
            arch = row["kernels per cubin arch (hollow)"]
            devices = header[header.index("kernels per cubin arch (hollow)") + 1 :]
            truth.setdefault(platform, {})[row["family"]] = Row(
                family=row["family"],
                library=row["library"].strip("`").replace("—", ""),
                built=tuple(
                    p.split(":")[0].removeprefix("PTX ") for p in arch.split(", ") if p != "—"
                ),
                devices={d: _cell(row[d]) for d in devices},
            )
        else:
            header = None
    return truth


TRUTH_TABLES = read_truth()


def test_the_truth_file_covers_every_family_of_the_profile_on_both_platforms() -> None:
    names = {rule.name for rule in load_families_or_matrix(PROFILE)}
    assert set(TRUTH_TABLES) == set(PLATFORMS)
    for platform, rows in TRUTH_TABLES.items():
        assert set(rows) == names, platform


# --- the wheels, checked once per session -----------------------------------------------------


def sgl_kernel_wheel(platform: str) -> tuple[Path | None, str]:
    """(the cached wheel, "") or (None, why it could not be had)."""
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    pattern = f"sgl_kernel-{VERSION}-*{platform}.whl"
    with FileLock(str(WHEEL_DIR / f".sgl-kernel-{VERSION}-{platform}.lock")):
        found = sorted(WHEEL_DIR.glob(pattern))
        if not found:
            result = subprocess.run(
                [
                    sys.executable, "-m", "pip", "download", f"sgl-kernel=={VERSION}",
                    "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(WHEEL_DIR),
                    "--platform", PLATFORMS[platform],
                ],
                capture_output=True,
                text=True,
                timeout=1800,
            )  # fmt: skip
            found = sorted(WHEEL_DIR.glob(pattern))
            if not found:
                reason = (result.stderr or result.stdout).strip()[-300:]
                return None, f"sgl-kernel {VERSION} {platform} wheel not downloadable: {reason}"
    return found[-1], ""


@pytest.fixture(scope="session")
def rules() -> tuple[FamilyRule, ...]:
    return load_families_or_matrix(PROFILE)


def devices_of(platform: str) -> tuple[str, ...]:
    return tuple(next(iter(TRUTH_TABLES[platform].values())).devices)


@pytest.fixture(scope="session")
def checked(rules: tuple[FamilyRule, ...]) -> Iterator[Callable[[str], CheckResult]]:
    cache: dict[str, CheckResult] = {}

    def get(platform: str) -> CheckResult:
        if platform not in SELECTED:
            pytest.skip(
                f"sgl-kernel {platform} wheel not in KERNEL_MATRIX_SGL_KERNEL_WHEELS="
                f"{','.join(SELECTED)}"
            )
        if platform not in cache:
            wheel, why = sgl_kernel_wheel(platform)
            if wheel is None:
                pytest.skip(why)
            devices = tuple(CC(d) for d in devices_of(platform))
            cache[platform] = check_paths([wheel], rules, devices)
        return cache[platform]

    yield get


def _library(path: str, shown: str) -> bool:
    """``shown`` (the truth's library column) names ``path`` (a library inside the wheel)."""
    inside = PurePosixPath(path.split("!")[-1])
    return str(inside).endswith(shown) if "/" in shown else inside.name == shown


# --- verdicts against the truth table ---------------------------------------------------------


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_check_verdicts_match_the_truth(
    platform: str, checked: Callable[[str], CheckResult], rules: tuple[FamilyRule, ...]
) -> None:
    """Every family x device: the truth where the family is meant for the device (the
    status, the code objects that serve it, their library), not-applicable elsewhere."""
    result = checked(platform)
    by_name = {rule.name: rule for rule in rules}
    for family, row in TRUTH_TABLES[platform].items():
        for device, cell in row.devices.items():
            verdict = result.verdict(family, device)
            where = f"{platform} {family} on {device}"
            if CC(device) not in by_name[family].devices:
                assert verdict.status == NOT_APPLICABLE, where
                continue
            assert verdict.status == cell.status, (where, verdict.reason)
            if cell.status == MISSING:
                built = ", ".join(sorted(row.built, key=lambda n: Target.parse(n).sort_key()))
                assert f"built only for {built}, none of which runs on {device}" in (
                    verdict.reason
                ), (where, verdict.reason)
                continue
            assert verdict.served_by == cell.via, where
            assert all(_library(lib, row.library) for lib in verdict.libraries), (
                where,
                verdict.libraries,
            )


@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_hopper_reads_sm90_and_everything_else_sm100(
    platform: str, checked: Callable[[str], CheckResult]
) -> None:
    """load_utils.py loads sgl_kernel/sm90/common_ops on 9.0 only: what 9.0 is judged
    on comes from there, what 10.0 is judged on from sgl_kernel/sm100/."""
    result = checked(platform)
    hopper = result.verdict("fp8_blockwise_sm90", "9.0")
    assert hopper.libraries and all("sgl_kernel/sm90/" in lib for lib in hopper.libraries)
    blackwell = result.verdict("fp8_blockwise_sm100", "10.0")
    assert blackwell.libraries and all("sgl_kernel/sm100/" in lib for lib in blackwell.libraries)
    assert result.verdict("nvfp4_quant", "9.0").status == NOT_APPLICABLE
    assert HOLLOW not in {result.verdict("marlin_moe", d).status for d in ("8.0", "10.0")}
