"""Checking: each kernel family on each requested device, judged by the code the
driver would really load there.

For every kernel of a family (per library, by mangled name) the driver picks one
code object among those that contain it (``archs.select_image``). The family is

* **present** on a device when at least one of its kernels is served there by a
  code object whose kernel has a real body;
* **hollow** when kernels are served but every served one is hollow (body
  compiled out, or every path traps: a CUTLASS arch-guard stub); a present
  family whose loaded kernels are partly hollow says which in its reason;
* **missing** when none of its kernels can run there -- with the build-log line
  that explains it, when there is one;
* **not-matched** when the family's rule no longer fits the build: no kernel
  matches it, yet its kernel regexes match kernels whose sources its globs reject
  (or its sources hold kernels its regexes reject) -- typically a project that
  renamed its files. The tool can then prove neither presence nor absence; it
  fails the check like a missing family (exit 1), with a warning naming the
  mismatch instead of a bare "missing";
* **not-applicable** when the family is not meant for that device or CUDA version.

A present family whose served kernels are all PTX is present *through JIT*
(``Verdict.jit_only``): the driver compiles that PTX at the first launch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.archs import (
    ArchSpec,
    ComputeCapability,
    CudaVersion,
    Target,
    device_name,
    requested_devices,
    select_image,
)
from orchestrator.common.words import counted
from orchestrator.read.inventory import PREDICTED, Inventory, Kernel
from orchestrator.symbols import FamilyRule

PRESENT = "present"
HOLLOW = "hollow"
MISSING = "missing"
NOT_APPLICABLE = "not-applicable"
NOT_MATCHED = "not-matched"
FAILING = (MISSING, HOLLOW, NOT_MATCHED)


@dataclass(frozen=True)
class Verdict:
    family: str
    device: str
    status: str
    served_by: tuple[str, ...] = ()  # the code objects the driver loads, e.g. ("sm_120f",)
    libraries: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()  # demangled names served on this device
    built_for: tuple[str, ...] = ()  # every code object that holds the family
    reason: str = ""
    cause: str | None = None  # the build-log line that explains a missing family
    guard: str | None = None  # the CMake call (file:line, as it ran) that dropped it
    jit_kernels: int = 0  # served kernels the device JIT-compiles from PTX (present only)
    # The CMake guard call (or generator) that governs the family's sources for this
    # device, as it ran, whatever it decided: "" where the configure's trace shows
    # none, None where that is not known (no trace, not looked up, older results).
    governed_by: str | None = None

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def jit_only(self) -> bool:
        """Present only through PTX JIT: every code object served is PTX."""
        return (
            self.status == PRESENT
            and bool(self.served_by)
            and all(Target.parse(name).ptx for name in self.served_by)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "device": self.device,
            "status": self.status,
            "served_by": list(self.served_by),
            "libraries": list(self.libraries),
            "kernels": list(self.kernels),
            "built_for": list(self.built_for),
            "reason": self.reason,
            "cause": self.cause,
            "guard": self.guard,
            "jit_kernels": self.jit_kernels,
            "jit_only": self.jit_only,
            "governed_by": self.governed_by,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            family=data["family"],
            device=data["device"],
            status=data["status"],
            served_by=tuple(data.get("served_by", ())),
            libraries=tuple(data.get("libraries", ())),
            kernels=tuple(data.get("kernels", ())),
            built_for=tuple(data.get("built_for", ())),
            reason=data.get("reason", ""),
            cause=data.get("cause"),
            guard=data.get("guard"),
            jit_kernels=data.get("jit_kernels", 0),
            governed_by=data.get("governed_by"),
        )


@dataclass
class _FamilyKernel:
    """One kernel of a family in one library, and every code object holding it."""

    library: str
    mangled: str
    copies: dict[Target, Kernel] = field(default_factory=dict)


def family_kernels(inventory: Inventory, family: FamilyRule) -> list[_FamilyKernel]:
    found: dict[tuple[str, str], _FamilyKernel] = {}
    for library in inventory.libraries:
        if not family.matches_library(library.path):
            continue
        for code in library.code_objects():
            facts = family.source_facts(code.sources)
            if facts is None:
                continue
            for kernel in code.kernels:
                predicted = kernel.instructions == PREDICTED  # (configure tier)
                if not family.matches_kernel_from(facts, kernel.name, predicted):
                    continue
                key = (library.path, kernel.mangled)
                entry = found.setdefault(key, _FamilyKernel(library.path, kernel.mangled))
                previous = entry.copies.get(code.arch)
                # nvcc may embed the same cubin twice; a real body in either counts.
                if previous is None or (
                    is_hollow(previous, family) and not is_hollow(kernel, family)
                ):
                    entry.copies[code.arch] = kernel
    return list(found.values())


def rule_mismatch(inventory: Inventory, family: FamilyRule) -> str | None:
    """Why a family that matches no kernel may be a rule that stopped fitting, or None.

    Only for a family with both ``kernels`` and ``sources`` that matches nothing:
    kernels in its libraries match its name regexes but come from sources its globs
    reject (a project that renamed its files), or kernels from its sources match
    none of its regexes (renamed kernels). Excluded sources and kernels never count.
    """
    if not (family.kernels and family.sources):
        return None
    by_name: dict[tuple[str, str], set[str]] = {}
    by_source: dict[tuple[str, str], set[str]] = {}
    for library in inventory.libraries:
        if not family.matches_library(library.path):
            continue
        for code in library.code_objects():
            facts = family.source_facts(code.sources)
            if facts is None:
                continue
            source_ok, known = facts
            for kernel in code.kernels:
                if family.excludes_kernel(kernel.name):
                    continue
                name_ok = family.matches_name(kernel.name)
                if name_ok and known and not source_ok:
                    by_name.setdefault((library.path, kernel.mangled), set()).update(code.sources)
                elif source_ok and not name_ok:
                    by_source.setdefault((library.path, kernel.mangled), set()).add(kernel.name)
                elif name_ok:
                    return None  # the family matches after all
    if by_name:
        files = sorted({s for found in by_name.values() for s in found})
        match = "matches" if len(by_name) == 1 else "match"
        return (
            f"{counted(len(by_name), 'kernel')} {match} {_quoted(family.kernels)} by name but "
            "their "
            f"sources {_quoted(files, 3)} fit none of {_quoted(family.sources)}: the "
            f"profile's rule for {family.name} may not fit this version"
        )
    if by_source:
        names = sorted({n for found in by_source.values() for n in found})
        match = "matches" if len(by_source) == 1 else "match"
        return (
            f"{counted(len(by_source), 'kernel')} from {_quoted(family.sources)} {match} none of "
            f"{_quoted(family.kernels)} (e.g. {_quoted([n[:80] for n in names], 2)}): the "
            f"profile's rule for {family.name} may not fit this version"
        )
    return None


def _quoted(items: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(f"`{item}`" for item in items[:most])
    return shown + (f", … ({len(items)} in all)" if len(items) > most else "")


def code_objects_holding(
    kernels: Sequence[_FamilyKernel], family: FamilyRule
) -> tuple[set[Target], set[Target]]:
    """(every code object holding a kernel of the family, those holding a working
    one that does its work: ``core_kernels``): their difference is where the family
    is hollow throughout, as ``serve`` judges it."""
    copies = [(t, k) for entry in kernels for t, k in entry.copies.items()]
    return {t for t, _ in copies}, {
        t for t, k in copies if not is_hollow(k, family) and _does_its_work(k, family)
    }


Served = list[tuple["_FamilyKernel", Target, Kernel]]


def serve(
    kernels: Sequence[_FamilyKernel], family: FamilyRule, device: ComputeCapability
) -> tuple[str, Served]:
    """What the driver gives ``device`` for a family's kernels: PRESENT with the
    working (kernel, code object) pairs, HOLLOW with the served ones when none of
    them works (or, with ``core_kernels``, none of those that do the family's work),
    or MISSING."""
    served: Served = []
    for entry in kernels:
        chosen = select_image(entry.copies, device)
        if chosen is not None:
            served.append((entry, chosen, entry.copies[chosen]))
    if not served:
        return MISSING, []
    working = [(e, t, k) for e, t, k in served if not is_hollow(k, family)]
    if not any(_does_its_work(k, family) for _, _, k in working):
        return HOLLOW, served  # nothing works, or only helpers do (core_kernels)
    return PRESENT, working


def _does_its_work(kernel: Kernel, family: FamilyRule) -> bool:
    """One of the family's ``core_kernels`` (a predicted kernel, named after its
    source by the configure tier, may be any of them)."""
    return kernel.instructions == PREDICTED or family.is_core(kernel.name)


def is_hollow(kernel: Kernel, family: FamilyRule) -> bool:
    """Hollow by the family's own threshold (or as the probe judged it). A negative
    instruction count means unknown (PREDICTED, NOT_JUDGED): not hollow."""
    if kernel.instructions < 0:
        return kernel.hollow
    return kernel.hollow or kernel.instructions <= family.hollow_max_instructions


def judge(
    inventory: Inventory,
    family: FamilyRule,
    device: ComputeCapability,
    *,
    cuda: CudaVersion | None = None,
    skip_lines: Sequence[str] = (),
    kernels: Sequence[_FamilyKernel] | None = None,
    mismatch: str | None = None,
) -> Verdict:
    """The verdict for one family on one device. ``kernels`` and ``mismatch``: the
    family's kernels in ``inventory`` (``family_kernels``) and its ``rule_mismatch``,
    when the caller judges several devices (computed here when ``kernels`` is None)."""
    name = family.name
    if not family.applies_to(device, cuda):
        why = (
            f"{name} needs CUDA >= {family.min_cuda}"
            if device in family.devices
            else f"{name} is not meant for {device_name(device)}"
        )
        return Verdict(name, str(device), NOT_APPLICABLE, reason=why)

    if kernels is None:
        kernels = family_kernels(inventory, family)
        mismatch = rule_mismatch(inventory, family) if not kernels else None
    built_for = tuple(sorted({t.name for k in kernels for t in k.copies}, key=_target_order))
    status, chosen_set = serve(kernels, family, device)
    cause = next((line for line in skip_lines if family.explains(line)), None)

    if status == MISSING and not kernels and mismatch:
        return Verdict(name, str(device), NOT_MATCHED, reason=f"{name} not matched: {mismatch}")
    if status == MISSING:
        if built_for:
            reason = (
                f"{name} is built only for {', '.join(built_for)}, none of which runs on "
                f"{device_name(device)}"
            )
        else:
            reason = f"no kernel of {name} is in any library"
        if cause:
            reason += f"; the build log says: {cause}"
        return Verdict(name, str(device), MISSING, built_for=built_for, reason=reason, cause=cause)

    served_by = tuple(sorted({t.name for _, t, _ in chosen_set}, key=_target_order))
    libraries = tuple(sorted({e.library for e, _, _ in chosen_set}))
    names = tuple(sorted({k.name for _, _, k in chosen_set}))
    jit = sum(1 for _, target, _ in chosen_set if target.ptx)
    if status == PRESENT:
        reason = (
            f"{len(chosen_set)} of {counted(len(kernels), f'{name} kernel')} served on {device} "
            "by "
            f"{', '.join(served_by)}"
        )
        if jit:
            every = "all" if jit == len(chosen_set) else f"{jit} of them"
            reason += f" ({every} JIT-compiled from PTX at first launch)"
        stubs = _hollow_served(kernels, family, device)
        if stubs:
            reason += (
                f"; {len(chosen_set)} of {len(chosen_set) + len(stubs)} loaded there are "
                f"real, {_why_hollow(stubs)}"
            )
    else:
        reason = (
            f"{name} loads {', '.join(served_by)} on {device_name(device)}, but its kernels "
            f"there cannot work: {_why_hollow([k for _, _, k in chosen_set])}"
        )
    return Verdict(
        name,
        str(device),
        status,
        served_by,
        libraries,
        names,
        built_for,
        reason,
        cause=None,
        jit_kernels=jit if status == PRESENT else 0,
    )


def _hollow_served(
    kernels: Sequence[_FamilyKernel], family: FamilyRule, device: ComputeCapability
) -> list[Kernel]:
    """The hollow kernels among those the driver loads on ``device``."""
    found = []
    for entry in kernels:
        chosen = select_image(entry.copies, device)
        if chosen is not None and is_hollow(entry.copies[chosen], family):
            found.append(entry.copies[chosen])
    return found


def _why_hollow(hollow: Sequence[Kernel]) -> str:
    """``2 are CUTLASS-style arch-guard stubs (every path traps: 61 traps, ...)``
    and/or ``1 has no real body (working instructions: 0)``."""
    stubs = [k for k in hollow if k.traps]
    empty = sorted({k.instructions for k in hollow if not k.traps})
    parts = []
    if stubs:
        verb = "is an arch-guard stub" if len(stubs) == 1 else "are arch-guard stubs"
        why = sorted({k.traps.removeprefix("CUTLASS arch-guard stub: ") for k in stubs})
        parts.append(f"{len(stubs)} {verb} ({'; '.join(why)})")
    if empty:
        count = len(hollow) - len(stubs)
        verb = "has" if count == 1 else "have"
        parts.append(
            f"{count} {verb} no real body (working instructions: "
            f"{', '.join(str(c) for c in empty)}; compiled out by an arch guard, or a trap)"
        )
    return " and ".join(parts)


def _target_order(name: str) -> tuple[int, int, int]:
    return Target.parse(name).sort_key()


def check_cell(
    inventory: Inventory,
    families: Sequence[FamilyRule],
    archs: Sequence[ArchSpec],
    *,
    cuda: CudaVersion | None = None,
    skip_lines: Sequence[str] = (),
) -> list[Verdict]:
    """Verdicts for every family × every device the arch list asks for."""
    verdicts = []
    for family in families:
        kernels = family_kernels(inventory, family)
        mismatch = rule_mismatch(inventory, family) if not kernels else None
        verdicts += [
            judge(
                inventory,
                family,
                device,
                cuda=cuda,
                skip_lines=skip_lines,
                kernels=kernels,
                mismatch=mismatch,
            )
            for device in requested_devices(archs)
        ]
    return verdicts


def compare_with_prediction(predicted: Sequence[Verdict], built: Sequence[Verdict]) -> list[str]:
    """Where the configure tier's prediction and the probe of the real build disagree
    -- a bug of this tool, never of the project. Hollow counts as built: only the
    compiled code can show that a body is empty."""

    def built_there(status: str) -> bool:
        return status in (PRESENT, HOLLOW)

    expected = {(v.family, v.device): v for v in predicted}
    mismatches = []
    for verdict in built:
        guess = expected.get((verdict.family, verdict.device))
        if guess is None:
            continue
        if built_there(guess.status) != built_there(verdict.status) or (
            (guess.status == NOT_APPLICABLE) != (verdict.status == NOT_APPLICABLE)
        ):
            mismatches.append(
                f"{verdict.family} on {verdict.device}: configure predicted {guess.status}, "
                f"the build has {verdict.status}"
            )
    return mismatches


def archs_without_code(
    inventory: Inventory, archs: Sequence[ArchSpec]
) -> tuple[list[str], list[str]]:
    """Requested targets for which no library holds any code object at all: the
    build ignored (part of) the arch list. Returns (those whose device nothing else
    serves either -- a failure --, and cubin targets whose device another code
    object serves, e.g. vLLM mapping a requested 12.1a to 12.0f cubins -- a note).

    >>> from orchestrator.read.inventory import CodeObject, Library
    >>> inv = Inventory((Library("x.so", (CodeObject(Target.parse("sm_120f"), (), ()),), ()),))
    >>> archs_without_code(inv, [ArchSpec.parse("12.1a"), ArchSpec.parse("9.0a")])
    (['sm_90a'], ['sm_121a (12.1 is served by sm_120f)'])
    """
    present: set[Target] = set()
    for library in inventory.libraries:
        for code in library.code_objects():
            present.add(code.arch)
    failing: list[str] = []
    served: list[str] = []
    for spec in archs:
        for target in spec.targets:
            if target in present:
                continue
            instead = None if target.ptx else select_image(present, target.cc)
            if instead is not None and not instead.ptx:
                served.append(f"{target.name} ({target.cc} is served by {instead.name})")
            else:
                failing.append(target.name)
    return failing, served
