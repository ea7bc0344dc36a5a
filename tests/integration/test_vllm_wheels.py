"""``kernel-matrix check`` on real vLLM releases, against the truth table that was
established by hand with cuobjdump (``matrices/vllm-truth.md``).

The expectations are read from that file, so the test and the document cannot
drift apart: for every family row of a release, the kernels per cubin arch (and
how many are hollow), the library, and per device the status, the code objects
that serve it and how many kernels they serve. Releases: 0.11.0 (CUDA 12.8),
0.14.0, 0.17.0, 0.19.0 (CUDA 12.9), 0.21.0, 0.25.0 and 0.33.0 (CUDA 13.0): the
Marlin file rename (0.11 -> 0.14), the CUDA 12 -> 13 switch (0.19 -> 0.21) and the
``_C`` -> ``_C_stable_libtorch`` move (0.21 -> 0.25). Each wheel is probed once per
session, by the same code path as ``kernel-matrix check``; a wheel that is not
cached and cannot be downloaded skips its tests with the reason.

Downloads: the seven wheels are 2.63 GB (``pip download`` into
``~/.cache/kernel-matrix/wheels``, kept between runs: a CI cache keyed on RELEASES);
check reads only the family libraries inside them (1.30 GB compressed, 31-63 % of
each wheel), streamed from the zip without unpacking.
``KERNEL_MATRIX_VLLM_RELEASES=0.11.0,0.33.0`` limits a run (and its downloads) to
some releases; the others then skip, saying so.

aarch64 (DGX Spark, GH200/GB200, Jetson Thor/Orin): ``<release>-aarch64`` names the
aarch64 wheel of a release, whose tables in vllm-truth.md add the columns 8.7 and 11.0
(``### vLLM 0.33.0 — CUDA 13.0 — aarch64``). Of those with tables, only 0.33.0's
runs by default (333 MB more to download once); the list above selects the others.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from vllm_wheel_cache import vllm_wheel

import orchestrator.probe as probe_module
from orchestrator.archs import ComputeCapability, Target
from orchestrator.cli import main
from orchestrator.common.errors import EXIT_KERNEL_MISSING, EXIT_OK
from orchestrator.judge.check import (
    CheckResult,
    check_inventory,
    check_paths,
    lazy_read_differences,
    library_filter,
)
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    NOT_APPLICABLE,
    NOT_MATCHED,
    PRESENT,
    family_kernels,
    is_hollow,
    serve,
)
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.read.inventory import Inventory
from orchestrator.reporting.check_view import verdict_mark
from orchestrator.symbols import FamilyRule, library_matches

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "matrices" / "vllm.yaml"
TRUTH = ROOT / "matrices" / "vllm-truth.md"
X86_RELEASES = ("0.11.0", "0.14.0", "0.17.0", "0.19.0", "0.21.0", "0.25.0", "0.33.0")
AARCH64_RELEASES = ("0.19.0-aarch64", "0.25.0-aarch64", "0.33.0-aarch64")
RELEASES = X86_RELEASES + AARCH64_RELEASES
CUDA = {  # from the binaries: PTX ISA version, libcudart.so.N (vllm-truth.md)
    "0.11.0": "12.8",
    "0.14.0": "12.9",
    "0.17.0": "12.9",
    "0.19.0": "12.9",
    "0.21.0": "13.0",
    "0.25.0": "13.0",
    "0.33.0": "13.0",
}
DEFAULT_SELECTION = (*X86_RELEASES, "0.33.0-aarch64")
SELECTED = tuple(
    r
    for r in os.environ.get("KERNEL_MATRIX_VLLM_RELEASES", ",".join(DEFAULT_SELECTION)).split(",")
    if r
)
DEVICES = ("9.0", "10.0", "10.3", "12.0", "12.1")  # the columns of the x86 truth tables
CC = ComputeCapability.parse


# --- the truth, read from vllm-truth.md ----------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One device column of a truth row: ``present (1 hollow) 5 via sm_100f``."""

    status: str
    count: int = 0  # family kernels in the code objects the device loads
    hollow: int = 0  # of which hollow
    via: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    family: str
    library: str
    per_arch: dict[str, tuple[int, int]]  # target -> (kernels, hollow kernels)
    devices: dict[str, Cell]


CELL = re.compile(
    r"^(?:missing|\**(?P<status>present|hollow)\**(?: \((?P<hollow>\d+) hollow\))? "
    r"(?P<count>\d+) via (?P<via>.+))$"
)
ARCH = re.compile(
    r"^(?:PTX )?(?P<target>(?:sm|compute)_\d+[af]?): (?P<n>\d+)(?: \((?P<h>\d+) hollow\))?$"
)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _cell(text: str) -> Cell:
    match = CELL.match(text)
    assert match, f"vllm-truth.md: cannot read the cell {text!r}"
    if match["status"] is None:
        return Cell(MISSING)
    via = tuple(part.strip().removesuffix(" PTX") for part in match["via"].split("+"))
    count = int(match["count"])
    return Cell(
        match["status"],
        count,
        int(match["hollow"] or 0) or (count if match["status"] == HOLLOW else 0),
        via,
    )


def _per_arch(text: str) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    if text == "—":  # the family is not in this release at all
        return out
    for part in text.split(", "):
        match = ARCH.match(part.strip())
        assert match, f"vllm-truth.md: cannot read {part!r}"
        out[match["target"]] = (int(match["n"]), int(match["h"] or 0))
    return out


def read_truth(path: Path = TRUTH) -> dict[str, dict[str, Row]]:
    """release -> family -> row, from the "family | library | ..." tables (an aarch64
    table's release is ``<version>-aarch64``); its device columns are the table's."""
    truth: dict[str, dict[str, Row]] = {}
    release: str | None = None
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^### vLLM (\S+) — CUDA \S+(?: — (aarch64))?$", line):
            release, header = match[1] + (f"-{match[2]}" if match[2] else ""), None
        elif line.startswith("## "):  # a section after the tables (side by side, findings)
            release, header = None, None
        elif release and line.startswith("| family |"):
            header = _cells(line)
        elif header and line.startswith("| ---"):
            continue
        elif header and release and line.startswith("| "):
            row = dict(zip(header, _cells(line), strict=True))
            family = row["family"]
            devices = header[header.index("kernels per cubin arch (hollow)") + 1 :]
            truth.setdefault(release, {})[family] = Row(
                family=family,
                library=row["library"].strip("`").replace("—", ""),
                per_arch=_per_arch(row["kernels per cubin arch (hollow)"]),
                devices={d: _cell(row[d]) for d in devices},
            )
        else:
            header = None
    return truth


TRUTH_TABLES = read_truth()


def devices_of(release: str) -> tuple[str, ...]:
    """The device columns of a release's truth table."""
    return tuple(next(iter(TRUTH_TABLES[release].values())).devices)


def test_the_truth_file_covers_every_family_of_the_profile_for_each_release() -> None:
    names = {rule.name for rule in load_families_or_matrix(PROFILE)}
    for release in RELEASES:
        assert set(TRUTH_TABLES[release]) == names, release


# --- the wheels, probed once per session ----------------------------------------------------


def wheel_path(release: str) -> Path:
    if release not in SELECTED:
        pytest.skip(f"vLLM {release} not in KERNEL_MATRIX_VLLM_RELEASES={','.join(SELECTED)}")
    version, _, machine = release.partition("-")
    wheel, why = vllm_wheel(version, machine)
    if wheel is None:
        pytest.skip(why)
    return wheel


@dataclass(frozen=True)
class Probed:
    wheel: Path
    inventory: Inventory  # what check read in full (the libraries a family can be in)
    result: CheckResult  # check, full read, on the truth table's five devices
    lazy: CheckResult  # check as it runs: only what the verdicts need (orchestrator.read.demand)


@pytest.fixture(scope="session")
def rules() -> tuple[FamilyRule, ...]:
    return load_families_or_matrix(PROFILE)


@pytest.fixture(scope="session")
def probed(rules: tuple[FamilyRule, ...]) -> Iterator[Callable[[str], Probed]]:
    """release -> the wheel checked by check_paths (full and lazy), and the full
    inventory it probed."""
    cache: dict[str, Probed] = {}

    def get(release: str) -> Probed:
        if release not in cache:
            wheel = wheel_path(release)
            seen: list[Inventory] = []
            real = probe_module.probe

            def spy(*args: Any, **kwargs: Any) -> Inventory:
                seen.append(real(*args, **kwargs))
                return seen[-1]

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(probe_module, "probe", spy)
                devices = tuple(CC(d) for d in devices_of(release))
                result = check_paths([wheel], rules, devices, lazy=False)
            (inventory,) = seen
            lazy = check_paths([wheel], rules, devices)
            cache[release] = Probed(wheel, inventory, result, lazy)
        return cache[release]

    yield get


@pytest.fixture
def cached_probe(
    probed: Callable[[str], Probed], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Path]:
    """For CLI tests: ``kernel-matrix check`` runs for real, except that the probe
    returns the session's inventory of that wheel instead of reading it again."""
    by_wheel: dict[str, Inventory] = {}

    def fake(paths: Any, **kwargs: Any) -> Inventory:
        (path,) = paths
        assert kwargs.get("only") is not None  # check reads only the family libraries
        return by_wheel[str(path)]

    monkeypatch.setattr(probe_module, "probe", fake)

    def wheel(release: str) -> Path:
        found = probed(release)
        by_wheel[str(found.wheel)] = found.inventory
        return found.wheel

    return wheel


# --- verdicts against the truth table -------------------------------------------------------


def _basename(library: str) -> str:
    return PurePosixPath(library.split("!")[-1]).name


@pytest.mark.parametrize("release", RELEASES)
def test_kernels_per_code_object_and_library_match_the_truth(
    release: str, probed: Callable[[str], Probed], rules: tuple[FamilyRule, ...]
) -> None:
    inventory = probed(release).inventory
    for rule in rules:
        row = TRUTH_TABLES[release][rule.name]
        kernels = family_kernels(inventory, rule)
        per_arch: dict[str, tuple[int, int]] = {}
        for entry in kernels:
            for target, kernel in entry.copies.items():
                n, h = per_arch.get(target.name, (0, 0))
                per_arch[target.name] = (n + 1, h + is_hollow(kernel, rule))
        assert per_arch == row.per_arch, f"{release} {rule.name}"
        libraries = {_basename(e.library) for e in kernels}
        assert libraries == ({row.library} if row.library else set()), f"{release} {rule.name}"


@pytest.mark.parametrize("release", RELEASES)
def test_what_each_device_loads_matches_the_truth(
    release: str, probed: Callable[[str], Probed], rules: tuple[FamilyRule, ...]
) -> None:
    """Every cell of the truth table, applicable to the device or not: the status,
    the code objects the driver loads, and how many family kernels they serve."""
    inventory = probed(release).inventory
    for rule in rules:
        kernels = family_kernels(inventory, rule)
        for device, cell in TRUTH_TABLES[release][rule.name].devices.items():
            where = f"{release} {rule.name} on {device}"
            status, served = serve(kernels, rule, CC(device))
            assert status == cell.status, where
            if status == MISSING:
                continue
            via = sorted({t.name for _, t, _ in served}, key=lambda n: Target.parse(n).sort_key())
            assert tuple(via) == cell.via, where
            # PRESENT lists the working kernels, HOLLOW the (all hollow) served ones
            assert len(served) == (cell.count - cell.hollow if status == PRESENT else cell.count), (
                where
            )


@pytest.mark.parametrize("release", RELEASES)
def test_check_verdicts_match_the_truth(release: str, probed: Callable[[str], Probed]) -> None:
    """check's verdicts: the truth where the family is meant for the device,
    not-applicable elsewhere (hollow Machete on 10.x/12.x included)."""
    found = probed(release)
    rules = {rule.name: rule for rule in load_families_or_matrix(PROFILE)}
    for family, row in TRUTH_TABLES[release].items():
        for device, cell in row.devices.items():
            verdict = found.result.verdict(family, device)
            where = f"{release} {family} on {device}"
            if CC(device) not in rules[family].devices:
                assert verdict.status == NOT_APPLICABLE, where
                continue
            assert verdict.status == cell.status, where
            if cell.status == MISSING and not row.per_arch:
                assert verdict.reason == f"no kernel of {family} is in any library", where
            elif cell.status == MISSING:
                built = ", ".join(sorted(row.per_arch, key=lambda n: Target.parse(n).sort_key()))
                assert (
                    f"{family} is built only for {built}, none of which runs on {device}"
                    in verdict.reason
                ), where
            else:
                assert verdict.served_by == cell.via, where
                assert {_basename(lib) for lib in verdict.libraries} == {row.library}, where
                # present only through PTX JIT exactly where the truth serves PTX only
                jit_only = cell.status == PRESENT and all(
                    v.startswith("compute_") for v in cell.via
                )
                assert verdict.jit_only == jit_only, where
                assert verdict_mark(verdict).endswith(("ᴶ", "(jit)")) == jit_only, where


@pytest.mark.parametrize("release", RELEASES)
def test_the_lazy_check_gives_the_full_reads_verdicts(
    release: str, probed: Callable[[str], Probed]
) -> None:
    """check reads only what its verdicts need; they are the full read's, and so is
    every family's list of code objects (less the PTX modules it did not need), its
    hollow ones among those a requested device loads."""
    found = probed(release)
    full, lazy = found.result, found.lazy
    assert lazy_read_differences(lazy, full) == []
    assert lazy.mismatch == full.mismatch
    for family in full.families:
        skipped_ptx = {t for t in full.built_for[family] if t.startswith("compute_")} - set(
            lazy.built_for[family]
        )
        assert set(lazy.built_for[family]) == set(full.built_for[family]) - skipped_ptx
        unjudged = set(lazy.not_judged[family])
        assert set(lazy.hollow_in[family]) == set(full.hollow_in[family]) - unjudged, family
        # not judged: exactly the cubins no requested device loads
        assert unjudged == {
            t
            for t in lazy.built_for[family]
            if not any(Target.parse(t).runs_on(CC(d)) for d in devices_of(release))
        }, family
    assert full.not_judged == {family: () for family in full.families}


def test_0_19_lacks_the_guarded_families_on_b300_and_dgx_spark(
    probed: Callable[[str], Probed],
) -> None:
    """The headline finding, spelled out (also implied by the table tests)."""
    result = probed("0.19.0").result
    for family in ("nvfp4_quant", "nvfp4_moe"):
        for device, built in (("10.3", "sm_100a, sm_120a"), ("12.1", "sm_100a, sm_120a")):
            verdict = result.verdict(family, device)
            assert verdict.status == MISSING
            assert f"built only for {built}, none of which runs on {device}" in verdict.reason
    assert result.verdict("nvfp4_scaled_mm_sm120", "12.1").reason.startswith(
        "nvfp4_scaled_mm_sm120 is built only for sm_120a, none of which runs on 12.1"
    )
    for device in ("10.0", "12.0"):
        assert result.verdict("nvfp4_quant", device).status == PRESENT
    assert result.verdict("marlin_fp8", "12.1").served_by == ("sm_120",)


def test_0_33_serves_every_family_through_f_cubins(probed: Callable[[str], Probed]) -> None:
    """Every family on every device but 11.0: the x86 wheel builds no sm_110 code (Jetson
    Thor runs the aarch64 wheel), so the families vLLM means for Thor are missing there."""
    result = probed("0.33.0").result
    assert {v.device for v in result.failing} == {"11.0"}
    assert {v.status for v in result.failing} == {MISSING}
    for family in ("nvfp4_quant", "nvfp4_moe", "moe_data"):
        assert result.verdict(family, "10.3").served_by == ("sm_100f",)
        assert result.verdict(family, "12.1").served_by == ("sm_120f",)
    assert result.verdict("machete", "9.0").served_by == ("sm_90a",)  # not the sm_90 stub


def test_a_rule_that_stopped_fitting_is_not_matched_with_a_warning(
    probed: Callable[[str], Probed], rules: tuple[FamilyRule, ...]
) -> None:
    """The Marlin rule as it was before issue 18 (sources ``sm75_kernel_*.cu`` /
    ``sm80_kernel_*.cu`` only) on 0.11.0, whose Marlin units are
    ``kernel_<act>_<weight>.cu``: the name regex finds the 540 Marlin and 350 Marlin
    MoE kernels (counted by hand in vllm-truth.md), the source globs reject them all.
    That is "not matched", with the mismatch named, never a bare "missing"."""
    inventory = probed("0.11.0").inventory
    old = tuple(
        replace(rule, sources=("sm75_kernel_*.cu", "sm80_kernel_*.cu"))
        if rule.name in ("marlin", "marlin_moe")
        else rule
        for rule in rules
    )
    judged = check_inventory(inventory, old, tuple(CC(d) for d in DEVICES))
    for family, count in (("marlin", 540), ("marlin_moe", 350)):
        warning = judged.mismatch[family]
        assert warning.startswith(f"{count} kernels match `marlin"), warning
        assert "`kernel_bf16_kfe2m1f.cu`" in warning, warning
        assert "fit none of `sm75_kernel_*.cu`, `sm80_kernel_*.cu`" in warning, warning
        for device in DEVICES:
            verdict = next(v for v in judged.verdicts if (v.family, v.device) == (family, device))
            assert verdict.status == NOT_MATCHED and verdict.failing, (family, device)
            assert warning in verdict.reason
    # the fitting families keep their verdicts, and nothing else is "not matched"
    assert set(judged.mismatch) == {"marlin", "marlin_moe"}
    # with the profile's rule (both namings) the same kernels are present
    result = probed("0.11.0").result
    assert result.mismatch == {}
    for device in DEVICES:
        assert result.verdict("marlin", device).status == PRESENT


def test_marlin_reaches_blackwell_only_through_jit(probed: Callable[[str], Probed]) -> None:
    """0.19.0: Marlin on 10.x is compute_80/compute_90 PTX only (JIT at first launch);
    on 9.0 the bf16 kernels have an sm_90 cubin, the fp16 ones only PTX."""
    result = probed("0.19.0").result
    blackwell = result.verdict("marlin", "10.0")
    assert blackwell.jit_only and blackwell.served_by == ("compute_80", "compute_90")
    assert blackwell.jit_kernels == 717
    assert "(all JIT-compiled from PTX at first launch)" in blackwell.reason
    hopper = result.verdict("marlin", "9.0")
    assert not hopper.jit_only and 0 < hopper.jit_kernels < 717


@pytest.mark.parametrize("release", ["0.21.0", "0.25.0"])
def test_library_globs_are_anchored_inside_the_wheel(
    release: str, probed: Callable[[str], Probed], rules: tuple[FamilyRule, ...]
) -> None:
    """DeepGEMM's ``vllm/third_party/deep_gemm/_C.cpython-*.so`` matches a bare ``_C.*``;
    the profile's ``vllm/_C.*`` does not, so check never reads it."""
    found = probed(release)
    with zipfile.ZipFile(found.wheel) as wheel:
        foreign = [m for m in wheel.namelist() if "/third_party/deep_gemm/_C." in m]
    assert len(foreign) == 5  # cpython 3.10 ... 3.14
    assert all(library_matches(m, ["_C.*"]) for m in foreign)
    assert not any(rule.matches_library(m) for rule in rules for m in foreign)
    assert not any("third_party" in lib.path for lib in found.inventory.libraries)


# --- the profile's rules on both CUDA majors --------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_each_family_matches_kernels_and_no_kernel_matches_two(
    release: str, probed: Callable[[str], Probed], rules: tuple[FamilyRule, ...]
) -> None:
    inventory = probed(release).inventory
    assert library_filter(rules) is not None  # so the libraries check skips hold no family
    for rule in rules:
        # every family the truth finds in this release (FP8-activation Marlin is
        # younger than 0.11.0)
        expected = bool(TRUTH_TABLES[release][rule.name].per_arch)
        assert bool(family_kernels(inventory, rule)) == expected, f"{release}: {rule.name}"
    overlaps = []
    for library in inventory.libraries:
        for code in library.code_objects():
            for kernel in code.kernels:
                owners = [
                    r.name
                    for r in rules
                    if r.matches_kernel(kernel.name, code.sources, library.path)
                ]
                if len(owners) > 1:
                    overlaps.append(f"{code.arch.name} {kernel.mangled[:80]}: {owners}")
    assert overlaps == [], f"{release}: {len(overlaps)} kernels in two families: {overlaps[:5]}"


# --- the verb, end to end -------------------------------------------------------------------


def test_check_exits_1_for_0_19_on_b300_and_dgx_spark(
    cached_probe: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = cached_probe("0.19.0")
    assert (
        main(["check", str(wheel), "--families", str(PROFILE), "--devices", "10.3,12.1"])
        == EXIT_KERNEL_MISSING
    )
    out = capsys.readouterr().out
    # one line for the family, naming both devices
    assert (
        "❌ nvfp4_quant missing on 10.3 (B300, GB300), 12.1 (DGX Spark (GB10)): built only "
        "for sm_100a, sm_120a, none of which runs on these devices\n"
    ) in out
    assert out.strip().splitlines()[-1].startswith("kernel-matrix: FAILED")

    assert (
        main(["check", str(wheel), "--families", str(PROFILE), "--devices", "10.3,12.1", "--json"])
        == 1
    )
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    by_pair = {(v["family"], v["device"]): v for v in data["verdicts"]}
    quant = by_pair["nvfp4_quant", "12.1"]
    assert quant["status"] == MISSING and quant["served_by"] == []
    assert by_pair["marlin_fp8", "12.1"]["status"] == PRESENT
    assert by_pair["marlin_fp8", "12.1"]["served_by"] == ["sm_120"]
    assert by_pair["marlin_fp8", "12.1"]["libraries"] == [f"{wheel}!vllm/_C.abi3.so"]
    assert by_pair["machete", "10.3"]["status"] == NOT_APPLICABLE
    assert by_pair["marlin", "10.3"]["jit_only"] is True
    assert by_pair["marlin", "10.3"]["jit_kernels"] == 717
    assert data["counts"][MISSING] == 14


def test_check_exits_0_where_everything_is_present(
    cached_probe: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old = cached_probe("0.19.0")
    assert (
        main(["check", str(old), "--families", str(PROFILE), "--devices", "9.0,10.0,12.0"])
        == EXIT_OK
    )
    new = cached_probe("0.33.0")
    assert (
        main(["check", str(new), "--families", str(PROFILE), "--devices", ",".join(DEVICES)])
        == EXIT_OK
    )
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("kernel-matrix: OK")
    # by default every device a family lists, Jetson Thor (11.0) included: no wheel
    # has sm_110 code, so the datacenter-Blackwell families are missing there
    assert main(["check", str(new), "--families", str(PROFILE), "--json"]) == EXIT_KERNEL_MISSING
    data = json.loads(capsys.readouterr().out)
    failing = {
        (v["family"], v["device"]) for v in data["verdicts"] if v["status"] in (MISSING, HOLLOW)
    }
    assert {device for _, device in failing} == {"11.0"}
