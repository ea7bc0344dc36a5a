"""Comparing two runs (a baseline and a run, a pull request's base and head).

Both sides are judged by what each requested device loads, cell by cell (cells
matched by id). A family (or a kernel) **regresses** on device D when the base
served D with working code and the head does not: missing, hollow, or reached only
by PTX JIT where the base had a cubin (a **downgrade**). A change of code object
that still serves D (``sm_120`` -> ``sm_120a`` for 12.0, ``sm_100`` -> ``sm_100f``
for 10.0) is not a regression; ``sm_120f`` -> ``sm_120a`` is one for 12.1, which
loads neither ``sm_120a`` nor anything else then. Family × device regressions
decide the exit code; kernel regressions are details, counted and listed, and
fail only when asked (``strict``). A kernel found at the same arch in *another
library of the same build* has **moved**, which is not a regression (vLLM moved
its FP4 kernels from ``_C`` to ``_C_stable_libtorch``). A family that the base
lacked on a device and the head serves is **fixed**. New kernels, size changes,
code no requested device loads and changes of the serving code object are
information. A baseline cell that the new run did not check (absent, crashed,
interrupted, skipped) is **unchecked**: no regression can be ruled out.

>>> old = CellSummary("c", "passed", kernels={"k": (KernelCopy("_C.so", "sm_120a", 100),)})
>>> new = CellSummary(
...     "c", "passed", kernels={"k": (KernelCopy("_C_stable.so", "sm_120a", 100),)}
... )
>>> [(f.kind, f.subject) for f in compare(Baseline({"c": old}), Baseline({"c": new})).findings]
[('kernel-moved', 'k')]
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.archs import (
    ComputeCapability,
    Target,
    parse_arch_list,
    requested_devices,
    select_image,
)
from orchestrator.common.errors import (
    EXIT_INFRA,
    EXIT_KERNEL_MISSING,
    EXIT_OK,
    InputFileError,
    KernelMatrixError,
    UsageError,
)
from orchestrator.common.words import counted
from orchestrator.judge.baseline import (
    BASELINE_KIND,
    Baseline,
    CellSummary,
    FamilyState,
    KernelCopy,
    load_baseline,
    summarize,
)
from orchestrator.judge.check import artifact_libraries, artifact_result, is_artifact
from orchestrator.judge.expect import NOT_APPLICABLE, PRESENT, Verdict
from orchestrator.judge.results import CellResult, load_results
from orchestrator.judge.sizes import NOT_IN_CONFIGURE_TIER, size_changes
from orchestrator.symbols import FamilyRule

FAMILY_LOST = "family-lost"
FAMILY_DOWNGRADED = "family-downgraded"
KERNEL_LOST = "kernel-lost"
KERNEL_HOLLOW = "kernel-hollow"
KERNEL_DOWNGRADED = "kernel-downgraded"
CELL_UNCHECKED = "cell-unchecked"
KERNEL_MOVED = "kernel-moved"
KERNEL_NEW = "kernel-new"
KERNEL_UNLOADED_DROPPED = "kernel-unloaded-dropped"
SIZE_CHANGED = "size-changed"
FAMILY_CHANGED = "family-changed"
FAMILY_FIXED = "family-fixed"
CELL_NEW = "cell-new"

FAMILY_REGRESSION_KINDS = (FAMILY_LOST, FAMILY_DOWNGRADED)
KERNEL_REGRESSION_KINDS = (KERNEL_LOST, KERNEL_HOLLOW, KERNEL_DOWNGRADED)
REGRESSION_KINDS = FAMILY_REGRESSION_KINDS + KERNEL_REGRESSION_KINDS
KIND_TITLES = {
    FAMILY_LOST: "family lost on a device",
    FAMILY_DOWNGRADED: "family reached only by PTX JIT where a cubin served it",
    FAMILY_FIXED: "family now served on a device",
    KERNEL_LOST: "kernel lost",
    KERNEL_HOLLOW: "kernel hollowed out",
    KERNEL_DOWNGRADED: "kernel reached only by PTX JIT where a cubin served it",
    KERNEL_UNLOADED_DROPPED: "code dropped that no requested device loads",
    CELL_UNCHECKED: "cell not checked in this run",
    KERNEL_MOVED: "kernel moved to another library",
    KERNEL_NEW: "new kernel",
    SIZE_CHANGED: "size changed",
    FAMILY_CHANGED: "family verdict changed",
    CELL_NEW: "new cell",
}


@dataclass(frozen=True)
class Finding:
    """One difference between a baseline and a run, in one cell."""

    kind: str
    cell: str
    subject: str  # "nvfp4 on 12.1", a kernel's name, or the cell id
    before: str = ""
    after: str = ""
    archs: tuple[str, ...] = ()
    delta: int = 0  # bytes, for size changes
    devices: tuple[str, ...] = ()  # the requested devices a kernel finding is about

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSION_KINDS

    def describe(self) -> str:
        """One line: ``cu13.0-12.1a: nvfp4 on 12.1: present (sm_121a) -> missing``."""
        at = f" [{', '.join(self.archs)}]" if self.archs else ""
        at += f" on {', '.join(self.devices)}" if self.devices else ""
        change = (
            f"{self.before} -> {self.after}"
            if self.before and self.after
            else self.before or self.after
        )
        # A finding about a whole cell (unchecked, new) has the cell as its subject.
        what = self.cell if self.subject == self.cell else f"{self.cell}: {self.subject}"
        return f"{what}{at}: {change}" if change else f"{what}{at}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cell": self.cell,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "archs": list(self.archs),
            "delta": self.delta,
            "devices": list(self.devices),
        }


@dataclass
class Diff:
    findings: list[Finding] = field(default_factory=list)
    strict: bool = False  # kernel regressions fail too, not only family × device ones

    def of(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind in kinds]

    @property
    def regressions(self) -> list[Finding]:
        return self.of(*REGRESSION_KINDS)

    @property
    def unchecked(self) -> list[Finding]:
        return self.of(CELL_UNCHECKED)

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.findings)

    @property
    def failing(self) -> list[Finding]:
        """The regressions that decide the exit code: family × device ones, and with
        ``strict`` the kernel ones too."""
        return self.regressions if self.strict else self.of(*FAMILY_REGRESSION_KINDS)

    @property
    def exit_code(self) -> int:
        """1 on a failing regression; 3 when a baseline cell went unchecked (a
        regression cannot be ruled out there); else 0."""
        if self.failing:
            return EXIT_KERNEL_MISSING
        if self.unchecked:
            return EXIT_INFRA
        return EXIT_OK

    def line(self) -> str:
        """``3 regressions (1 family × device, 2 kernels), 1 move, 4 new kernels, ...``"""
        families = len(self.of(*FAMILY_REGRESSION_KINDS))
        kernels = len(self.of(*KERNEL_REGRESSION_KINDS))
        parts = [
            f"{counted(len(self.regressions), 'regression')} ({families} family × device, "
            f"{counted(kernels, 'kernel')}"
            + (", which fail only with strict kernels" if kernels and not self.strict else "")
            + ")",
            f"{self.count(KERNEL_MOVED)} moved",
            counted(self.count(KERNEL_NEW), "new kernel"),
            counted(self.count(SIZE_CHANGED), "size change"),
        ]
        if self.count(FAMILY_FIXED):
            parts.insert(1, f"{self.count(FAMILY_FIXED)} family × device fixed")
        if self.unchecked:
            parts.append(f"{counted(len(self.unchecked), 'cell')} unchecked")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "regressions": len(self.regressions),
            "exit_code": self.exit_code,
            "findings": [f.to_json() for f in self.findings],
        }


def compare(old: Baseline, new: Baseline, *, strict: bool = False) -> Diff:
    """Everything ``new`` lost, moved, gained or resized relative to ``old``, judged
    by what each requested device loads; ``strict``: kernel regressions fail too."""
    same_tier(old, new)
    diff = Diff(strict=strict)
    for cell_id, before in old.cells.items():
        after = new.cells.get(cell_id)
        if after is None:
            if before.checked:
                diff.findings.append(
                    Finding(CELL_UNCHECKED, cell_id, cell_id, before.status, "absent from this run")
                )
            continue
        if before.checked and not after.checked:
            diff.findings.append(
                Finding(CELL_UNCHECKED, cell_id, cell_id, before.status, after.status)
            )
            continue
        diff.findings.extend(_compare_families(cell_id, before, after))
        if before.kernels is not None and after.kernels is not None:
            devices = cell_devices(before) or cell_devices(after)
            diff.findings.extend(_compare_kernels(cell_id, before.kernels, after.kernels, devices))
    diff.findings.extend(
        Finding(CELL_NEW, cell_id, cell_id, "", cell.status)
        for cell_id, cell in new.cells.items()
        if cell_id not in old.cells
    )
    return diff


def same_tier(old: Baseline, new: Baseline) -> None:
    """Refuse (exit 2) to compare a cell of one tier with the same cell of the other:
    the configure tier predicts each kernel by source file (no size, no library, no
    hollowness), the build tier reads what the libraries hold, so every kernel would
    look lost or new although nothing changed."""
    for cell_id, before in old.cells.items():
        after = new.cells.get(cell_id)
        if after is not None and after.tier != before.tier:
            raise UsageError(
                f"cannot compare a {before.tier}-tier run with a {after.tier}-tier one "
                f"(cell {cell_id} is {before.tier}-tier in the base, {after.tier}-tier in "
                "the head): the configure tier predicts kernels from CMake's source lists, "
                "the build tier reads them from the libraries; compare two runs of one tier"
            )


def diff_results(
    baseline: Baseline, results: Iterable[CellResult], *, strict: bool = False
) -> Diff:
    return compare(baseline, summarize(results), strict=strict)


def cell_devices(cell: CellSummary) -> tuple[ComputeCapability, ...]:
    """The devices a cell was asked to serve: those of its arch list, and those its
    family verdicts name.

    >>> cell_devices(CellSummary("c", "passed", archs="9.0a;12.1f"))
    (ComputeCapability(major=9, minor=0), ComputeCapability(major=12, minor=1))
    """
    found = {ComputeCapability.parse(device) for _, device in cell.families}
    # (an arch list this version cannot read leaves the verdicts' devices)
    with contextlib.suppress(KernelMatrixError):
        found.update(requested_devices(parse_arch_list(cell.archs or "")))
    return tuple(sorted(found))


def _jit_only(state: FamilyState) -> bool:
    return (
        state.status == PRESENT
        and bool(state.served_by)
        and all(Target.parse(name).ptx for name in state.served_by)
    )


def _compare_families(cell: str, before: CellSummary, after: CellSummary) -> list[Finding]:
    out: list[Finding] = []
    for (family, device), was in before.families.items():
        subject = f"{family} on {device}"
        now = after.families.get((family, device))
        if was.status == PRESENT:
            if now is None:
                out.append(Finding(FAMILY_LOST, cell, subject, was.describe(), "no longer checked"))
            elif now.status not in (PRESENT, NOT_APPLICABLE):
                out.append(Finding(FAMILY_LOST, cell, subject, was.describe(), now.describe()))
            elif _jit_only(now) and not _jit_only(was):
                out.append(
                    Finding(FAMILY_DOWNGRADED, cell, subject, was.describe(), now.describe())
                )
            elif now != was:
                out.append(Finding(FAMILY_CHANGED, cell, subject, was.describe(), now.describe()))
        elif now is not None and now.status == PRESENT:
            out.append(Finding(FAMILY_FIXED, cell, subject, was.describe(), now.describe()))
        elif now is not None and now != was:
            out.append(Finding(FAMILY_CHANGED, cell, subject, was.describe(), now.describe()))
    for key, now in after.families.items():
        if key not in before.families:
            out.append(Finding(FAMILY_CHANGED, cell, f"{key[0]} on {key[1]}", "", now.describe()))
    return out


def _loaded(
    by_arch: dict[str, list[KernelCopy]], device: ComputeCapability
) -> tuple[str, list[KernelCopy]] | None:
    """The code object of a kernel that ``device`` loads, and its copies."""
    chosen = select_image((Target.parse(arch) for arch in by_arch), device)
    return None if chosen is None else (chosen.name, by_arch[chosen.name])


def _device_changes(
    old_by_arch: dict[str, list[KernelCopy]],
    new_by_arch: dict[str, list[KernelCopy]],
    devices: Iterable[ComputeCapability],
) -> dict[tuple[str, str, str], list[str]]:
    """(kind, what the base loaded, what the head loads) -> devices, for the devices
    on which the base loaded working code of a kernel and the head does not."""
    changes: defaultdict[tuple[str, str, str], list[str]] = defaultdict(list)
    for device in devices:
        was = _loaded(old_by_arch, device)
        if was is None or not _has_body(was[1]):
            continue
        now = _loaded(new_by_arch, device)
        if now is None:
            changes[(KERNEL_LOST, was[0], "gone")].append(str(device))
        elif not _has_body(now[1]):
            changes[(KERNEL_HOLLOW, was[0], f"hollow {now[0]}")].append(str(device))
        elif Target.parse(now[0]).ptx and not Target.parse(was[0]).ptx:
            changes[(KERNEL_DOWNGRADED, was[0], f"{now[0]} (JIT)")].append(str(device))
    return changes


def _compare_kernels(
    cell: str,
    before: dict[str, tuple[KernelCopy, ...]],
    after: dict[str, tuple[KernelCopy, ...]],
    devices: tuple[ComputeCapability, ...],
) -> list[Finding]:
    out: list[Finding] = []
    for name, old_copies in before.items():
        old_by_arch = _by_arch(old_copies)
        new_by_arch = _by_arch(after.get(name, ()))
        for (kind, was, now), on in _device_changes(old_by_arch, new_by_arch, devices).items():
            libraries = _libraries(old_by_arch[was])
            out.append(
                Finding(kind, cell, name, f"{was} in {libraries}", now, (was,), 0, tuple(on))
            )
        dropped: list[str] = []
        moves: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
        for arch, old in old_by_arch.items():
            new = new_by_arch.get(arch)
            if not new:
                if not any(Target.parse(arch).runs_on(d) for d in devices):
                    dropped.append(arch)
                continue
            # Left a library but still built at this arch elsewhere: moved, not lost.
            if {c.library for c in old} - {c.library for c in new}:
                moves[(_libraries(old), _libraries(new))].append(arch)
            old_size, new_size = _size(old), _size(new)
            if old_size != new_size:
                out.append(
                    Finding(
                        SIZE_CHANGED,
                        cell,
                        name,
                        f"{old_size} B",
                        f"{new_size} B",
                        (arch,),
                        new_size - old_size,
                    )
                )
        if dropped:
            where = ", ".join(sorted({c.library for c in old_copies if c.arch in dropped}))
            out.append(
                Finding(KERNEL_UNLOADED_DROPPED, cell, name, f"in {where}", "gone", tuple(dropped))
            )
        for (old_libs, new_libs), archs in moves.items():
            out.append(Finding(KERNEL_MOVED, cell, name, old_libs, new_libs, tuple(archs)))
        gained = [arch for arch in new_by_arch if arch not in old_by_arch]
        if gained:
            out.append(Finding(KERNEL_NEW, cell, name, "", _libraries(after[name]), tuple(gained)))
    for name, copies in after.items():
        if name not in before:
            out.append(
                Finding(
                    KERNEL_NEW,
                    cell,
                    name,
                    "",
                    _libraries(copies),
                    tuple(_by_arch(copies)),
                )
            )
    return out


def _by_arch(copies: Iterable[KernelCopy]) -> dict[str, list[KernelCopy]]:
    out: dict[str, list[KernelCopy]] = {}
    for copy in copies:
        out.setdefault(copy.arch, []).append(copy)
    return out


def _libraries(copies: Iterable[KernelCopy]) -> str:
    return ", ".join(sorted({c.library for c in copies}))


def _has_body(copies: Iterable[KernelCopy]) -> bool:
    return any(not c.hollow for c in copies)


def _size(copies: Iterable[KernelCopy]) -> int:
    return max((c.size for c in copies), default=0)


def combined_exit_code(results_code: int, diff: Diff | None) -> int:
    """A run's exit code with its baseline comparison: a missing kernel or a
    regression (1) wins over an infrastructure failure or an unchecked cell (3),
    because it is a finding about the code."""
    codes = {results_code, diff.exit_code if diff else EXIT_OK}
    for code in (EXIT_KERNEL_MISSING, EXIT_INFRA):
        if code in codes:
            return code
    return max(codes)


# --- two runs side by side (kernel-matrix compare) --------------------------------------

COMPARE_SCHEMA_VERSION = 1
# A regression's cause where the head's configure trace names nothing for the family.
NO_GUARD = "no CMake guard or generator governs its sources on the head"
_BASELINE_KIND = re.compile(rb'"kind"\s*:\s*"' + BASELINE_KIND.encode() + rb'"')


@dataclass(frozen=True)
class Side:
    """One side of ``compare``: its summary, and its cell results where it has them
    (a baseline file keeps no causes)."""

    path: Path
    summary: Baseline
    results: dict[str, CellResult] = field(default_factory=dict)
    file_bytes: int | None = None  # a wheel's (or library's) own size on disk
    # its shared objects -> their bytes in it (a wheel's: compressed), every one
    library_bytes: dict[str, int] = field(default_factory=dict)

    def _verdict(self, cell: str, family: str, device: str) -> Verdict | None:
        result = self.results.get(cell)
        for verdict in result.verdicts if result else ():
            if (verdict.family, verdict.device) == (family, device):
                return verdict
        return None

    def cause(self, cell: str, family: str, device: str) -> str:
        """Why ``family`` fails on ``device`` here: the guard or generator line, else
        the build-log line, else the verdict's reason ("" from a baseline) -- saying
        so where the configure's trace shows no guard or generator for its sources at
        all (they, and their guard, were deleted). Asked of the head."""
        verdict = self._verdict(cell, family, device)
        if verdict is None:
            return ""
        if verdict.guard or verdict.cause:
            return verdict.guard or verdict.cause or ""
        if verdict.governed_by == "":
            return f"{verdict.reason}; {NO_GUARD}"
        if verdict.governed_by:  # still built, but no longer as before (a downgrade)
            return f"{verdict.reason}; on the head: {verdict.governed_by}"
        return verdict.reason

    def governing(self, cell: str, family: str, device: str) -> str:
        """The guard or generator line that governs ``family`` on ``device`` here, as
        it ran ("" from a baseline, a wheel, or results without it)."""
        verdict = self._verdict(cell, family, device)
        return (verdict.governed_by or "") if verdict else ""


def load_side(path: Path, rules: Sequence[FamilyRule] = ()) -> Side:
    """A run directory, a ``results.json`` (or cell files), a baseline file, or a
    wheel or shared object (probed and judged with ``rules``, as one cell named
    :data:`~orchestrator.judge.check.ARTIFACT_CELL`)."""
    if is_artifact(path):
        if not rules:
            raise UsageError(
                f"{path}: a wheel or library is compared by its families: "
                "pass --families FILE (or a shipped profile's name: vllm, sgl-kernel)"
            )
        result = artifact_result(path, rules)
        size = path.stat().st_size
        return Side(path, summarize([result]), {result.id: result}, size, artifact_libraries(path))
    if path.is_file():
        try:
            with path.open("rb") as stream:
                is_baseline = _BASELINE_KIND.search(stream.read(65536)) is not None
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
        if is_baseline:
            return Side(path, load_baseline(path))
    results = load_results([path])
    return Side(path, summarize(results), {r.id: r for r in results})


def unchanged_pairs(base: Side, head: Side) -> dict[str, int]:
    """Per cell in both: the family × device pairs whose verdict did not change."""
    return {
        cell_id: sum(head.summary.cells[cell_id].families.get(key) == state
                     for key, state in cell.families.items())
        for cell_id, cell in base.summary.cells.items()
        if cell_id in head.summary.cells
    }  # fmt: skip


def _unknown_sizes(side: Side, cell_id: str) -> str:
    """Why a cell of ``side`` has no sizes."""
    result = side.results.get(cell_id)
    if result is not None and result.tier == "configure":
        return NOT_IN_CONFIGURE_TIER
    cell = side.summary.cells[cell_id]
    if not cell.checked:
        return f"not known: the cell was not built ({cell.status})"
    if result is None:
        return "not in this baseline (a configure-tier run, or an older kernel-matrix)"
    return "not in these results (written by an older kernel-matrix)"


def size_comparison(base: Side, head: Side) -> list[dict[str, Any]]:
    """Per cell in both: the bytes per target and per family that changed, and the
    total (``orchestrator.judge.sizes``); or why they are not known."""
    out: list[dict[str, Any]] = []
    for cell_id, before in base.summary.cells.items():
        after = head.summary.cells.get(cell_id)
        if after is None:
            continue
        if before.sizes is not None and after.sizes is not None:
            changes = size_changes(before.sizes, after.sizes)
            out.append({"cell": cell_id, "known": True, "why": "", **changes})
            continue
        whys = {
            name: _unknown_sizes(side, cell_id)
            for name, side, cell in (("base", base, before), ("head", head, after))
            if cell.sizes is None
        }
        why = (
            next(iter(whys.values()))
            if len(set(whys.values())) == 1 and len(whys) == 2
            else "; ".join(f"{name}: {text}" for name, text in whys.items())
        )
        out.append({"cell": cell_id, "known": False, "why": why})
    return out


def compare_json(diff: Diff, base: Side, head: Side) -> dict[str, Any]:
    """The ``compare --json`` document (``orchestrator/schemas/compare.schema.json``)."""

    def pair(finding: Finding) -> dict[str, Any]:
        family, _, device = finding.subject.rpartition(" on ")
        regressed = finding.kind in FAMILY_REGRESSION_KINDS
        return {
            "kind": finding.kind,
            "cell": finding.cell,
            "family": family,
            "device": device,
            "base": finding.before,
            "head": finding.after,
            "cause": head.cause(finding.cell, family, device) if regressed else "",
            "base_cause": base.governing(finding.cell, family, device) if regressed else "",
        }

    return {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "base": str(base.path),
        "head": str(head.path),
        "exit_code": diff.exit_code,
        "strict_kernels": diff.strict,
        "regressions": [pair(f) for f in diff.of(*FAMILY_REGRESSION_KINDS)],
        "fixed": [pair(f) for f in diff.of(FAMILY_FIXED)],
        "unchecked": [f.to_json() for f in diff.unchecked],
        "unchanged": unchanged_pairs(base, head),
        "sizes": size_comparison(base, head),
        "files": None
        if base.file_bytes is None or head.file_bytes is None
        else {
            "base": base.file_bytes,
            "head": head.file_bytes,
            "delta": head.file_bytes - base.file_bytes,
            # the largest changes first
            "libraries": sorted(
                (
                    {"library": name, "base": was, "head": now, "delta": now - was}
                    for name in sorted(set(base.library_bytes) | set(head.library_bytes))
                    if (was := base.library_bytes.get(name, 0))
                    != (now := head.library_bytes.get(name, 0))
                ),
                key=lambda row: -abs(row["delta"]),
            ),
        },
        "kernel_changes": [
            f.to_json()
            for f in diff.findings
            if f.kind
            not in (*FAMILY_REGRESSION_KINDS, FAMILY_FIXED, FAMILY_CHANGED, CELL_UNCHECKED)
        ],
    }
