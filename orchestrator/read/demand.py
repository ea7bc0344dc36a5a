"""What a verdict needs from a library: the lazy reading of ``check``.

``probe`` reads everything (it is the reference). ``check`` judges given families on
given devices, and for that reads less:

* **PTX.** A PTX module is decompressed only when its fatbin container has no cubin
  for some requested device that the PTX can JIT for: the driver takes one image
  per fatbin, a cubin before PTX (``archs.select_image``), so otherwise that PTX is
  never loaded on a requested device. ``Library.unread`` names those left alone.
* **Kernels.** Of a decoded code object, only the kernels some family may count --
  in a library the family may live in, matching its name regexes or its source
  globs (exclusions aside, so this is a superset of what the families match) -- are
  kept.
* **Analysis.** Their code (working instructions, every path trapping) is analysed
  only in cubins that run on a requested device; a PTX body is counted only up to
  the families' largest hollowness threshold (a count above it is a lower bound). Every cubin is still read for its
  kernel names -- a missing family's reason names the code objects it was built for
  ("built only for sm_120a, none of which runs on 12.1") -- but the kernels of one
  that no requested device loads are listed as ``NOT_JUDGED``.

The verdicts are the same as on the full inventory (tests/integration compare both
on every vLLM wheel they use).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.archs import ComputeCapability, Target
from orchestrator.common.userregex import AnyOf

if TYPE_CHECKING:
    from orchestrator.symbols import FamilyRule

SKIP, LIST, JUDGE = "skip", "list", "judge"  # what a lazy read does with an entry
KernelFilter = Callable[[str, tuple[str, ...]], bool]  # (demangled name, sources) -> keep


@dataclass(frozen=True)
class Demand:
    """The families and devices a ``check`` asks about."""

    rules: tuple[FamilyRule, ...]
    devices: tuple[ComputeCapability, ...]
    _filters: dict[str, KernelFilter | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __reduce__(self) -> tuple[Any, ...]:
        # To a worker process: the families and devices (its filters are rebuilt there).
        return (Demand, (self.rules, self.devices))

    def digest(self) -> str:
        """What decides which kernels are kept: every rule's matching parts."""
        parts = [
            repr((r.sources, r.kernels, r.libraries, r.hollow_max_instructions))
            for r in sorted(self.rules, key=lambda r: r.name)
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    @property
    def hollow_limit(self) -> int:
        """The largest hollowness threshold of the families: a PTX body is counted up
        to it (past it, no family judges the kernel hollow)."""
        return max((rule.hollow_max_instructions for rule in self.rules), default=0)

    def plan(self, headers: Sequence[tuple[Target, int]]) -> list[str]:
        """For each entry (its target and container, in fatbin order): SKIP, LIST
        (kernel names, code not analysed) or JUDGE."""
        cubins: dict[int, list[Target]] = {}
        for target, container in headers:
            if not target.ptx:
                cubins.setdefault(container, []).append(target)
        return [
            (SKIP if not self.wanted_ptx(target, cubins.get(container, ())) else JUDGE)
            if target.ptx
            else (JUDGE if self.judges(target) else LIST)
            for target, container in headers
        ]

    def judges(self, target: Target) -> bool:
        """Whether the kernels of a cubin are analysed: it runs on a requested device."""
        return any(target.runs_on(device) for device in self.devices)

    def wanted_ptx(self, target: Target, container_cubins: Sequence[Target]) -> bool:
        """A PTX module is read when a requested device it can JIT for has no cubin
        in its container (the driver would load the PTX there)."""
        return any(
            target.runs_on(device) and not any(c.runs_on(device) for c in container_cubins)
            for device in self.devices
        )

    def kernel_filter(self, library: str) -> KernelFilter | None:
        """Which kernels of ``library`` to keep; None when no family may live in it."""
        if library not in self._filters:
            rules = [r for r in self.rules if r.matches_library(library)]
            self._filters[library] = _keep_for(tuple(rules)) if rules else None
        return self._filters[library]


def _keep_for(rules: tuple[FamilyRule, ...]) -> KernelFilter:
    # A kernel is met in every code object that holds it, a code object's sources
    # hold for all its kernels: each is decided once.
    by_sources: dict[tuple[str, ...], bool] = {}
    by_name: dict[str, bool] = {}
    # One search of every family's name patterns together, not one per pattern.
    names = AnyOf([pattern for rule in rules for pattern in rule.kernel_patterns])

    def keep(demangled: str, sources: tuple[str, ...]) -> bool:
        source_hit = by_sources.get(sources)
        if source_hit is None:
            source_hit = by_sources[sources] = any(
                rule.matches_source(s) for rule in rules for s in sources
            )
        if source_hit:
            return True
        name_hit = by_name.get(demangled)
        if name_hit is None:
            name_hit = by_name[demangled] = names.search(demangled)
        return name_hit

    return keep
