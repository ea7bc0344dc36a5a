"""What a build weighs: bytes per code object target and per kernel family.

vLLM drops architectures because its wheel has a size limit, so a comparison of two
builds says what each target and each family costs, base against head. Two numbers,
from the build tier's inventory (the configure tier compiles nothing: it has none):

* per **target** (``sm_120a``, ``compute_90``): the bytes of every fatbin entry of
  that target in every library of the cell -- ``size`` uncompressed, as
  ``cuobjdump -xelf`` / ``-xptx`` extracts it, and ``stored`` as the library holds it
  (compressed when the fatbin compresses it). Every entry counts: a cubin nvcc embeds
  twice in one library takes its bytes twice (:class:`~orchestrator.read.inventory.CodeBytes`).
* per **family** and cubin target: the bytes of the ``.text`` sections of the
  family's kernels (what its rule matches), every copy counted. Code the kernels
  share (device functions inlined, constant data, relocation and symbol tables)
  belongs to no family, so the families of a cubin add up to less than its size.
  A PTX kernel has no size of its own: families count cubins only.

>>> from orchestrator.read.inventory import CodeBytes, CodeObject, Inventory, Kernel, Library
>>> from orchestrator.archs import ComputeCapability, Target
>>> from orchestrator.symbols import FamilyRule
>>> quant = Kernel("quant_kernel(float*)", "_Z12quant_kernelPf", 640, 40, False)
>>> lib = Library("_C.so", (CodeObject(Target.parse("sm_120a"), (quant,)),),
...               sizes=(CodeBytes("sm_120a", 1, 4096, 4096),))
>>> rule = FamilyRule("nvfp4", (ComputeCapability(12, 0),), kernels=("quant_kernel",))
>>> sizes = cell_sizes(Inventory((lib,)), (rule,))
>>> sizes.targets["sm_120a"].size, sizes.families["nvfp4"]["sm_120a"]
(4096, 640)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.archs import Target
from orchestrator.read.inventory import PREDICTED, CodeBytes, Inventory
from orchestrator.symbols import FamilyRule


@dataclass
class Sizes:
    """One cell's bytes: per target (across its libraries) and per family and target."""

    targets: dict[str, CodeBytes] = field(default_factory=dict)
    families: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> CodeBytes:
        """Every entry of every target."""
        return CodeBytes(
            "total",
            sum(t.entries for t in self.targets.values()),
            sum(t.size for t in self.targets.values()),
            sum(t.stored for t in self.targets.values()),
        )

    def family_total(self, family: str) -> int:
        return sum(self.families.get(family, {}).values())

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": {name: entry.to_json() for name, entry in self.targets.items()},
            "families": {name: dict(by_target) for name, by_target in self.families.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sizes:
        return cls(
            targets={
                name: CodeBytes(name, int(t["entries"]), int(t["bytes"]), int(t["stored"]))
                for name, t in data.get("targets", {}).items()
            },
            families={
                name: {target: int(size) for target, size in by_target.items()}
                for name, by_target in data.get("families", {}).items()
            },
        )


def _order(names: Sequence[str] | Any) -> list[str]:
    return sorted(names, key=lambda name: Target.parse(name).sort_key())


def cell_sizes(inventory: Inventory, rules: Sequence[FamilyRule]) -> Sizes | None:
    """The bytes of a built cell, or None where its inventory does not know them (a
    configure-tier prediction, an inventory written by an older version)."""
    if any(library.sizes is None for library in inventory.libraries):
        return None
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for library in inventory.libraries:
        for entry in library.sizes or ():
            counts = tally[entry.target]
            counts[0] += entry.entries
            counts[1] += entry.size
            counts[2] += entry.stored
    targets = {name: CodeBytes(name, *tally[name]) for name in _order(tally)}
    families: dict[str, dict[str, int]] = {}
    for rule in rules:
        by_target: defaultdict[str, int] = defaultdict(int)
        for library in inventory.libraries:
            if not rule.matches_library(library.path):
                continue
            for code in library.cubins:
                facts = rule.source_facts(code.sources)
                if facts is None:
                    continue
                for kernel in code.kernels:
                    predicted = kernel.instructions == PREDICTED
                    if rule.matches_kernel_from(facts, kernel.name, predicted):
                        by_target[code.arch.name] += kernel.size
        families[rule.name] = {name: by_target[name] for name in _order(by_target)}
    return Sizes(targets, families)


# --- base against head (kernel-matrix compare) -----------------------------------------

NOT_IN_CONFIGURE_TIER = "not known in the configure tier (it compiles nothing)"
_NONE = CodeBytes("", 0, 0, 0)


def _counts(entry: CodeBytes) -> tuple[int, int, int]:
    return entry.entries, entry.size, entry.stored


def _bytes_row(name: str, key: str, base: CodeBytes, head: CodeBytes) -> dict[str, Any]:
    return {
        key: name,
        "base": base.size,
        "head": head.size,
        "delta": head.size - base.size,
        "base_stored": base.stored,
        "head_stored": head.stored,
        "stored_delta": head.stored - base.stored,
        "base_entries": base.entries,
        "head_entries": head.entries,
    }


def size_changes(base: Sizes, head: Sizes) -> dict[str, Any]:
    """What changed in bytes from ``base`` to ``head``: the targets whose entries
    changed (in bytes, stored bytes or number), the total (always), and the families
    whose bytes changed on some cubin target, with the change per target.

    >>> b = Sizes({"sm_90a": CodeBytes("sm_90a", 1, 100, 100)}, {"gemm": {"sm_90a": 40}})
    >>> h = Sizes({"sm_90a": CodeBytes("sm_90a", 1, 100, 100),
    ...            "sm_120a": CodeBytes("sm_120a", 1, 300, 120)},
    ...           {"gemm": {"sm_90a": 40, "sm_120a": 70}})
    >>> changes = size_changes(b, h)
    >>> [(t["target"], t["delta"], t["stored_delta"]) for t in changes["targets"]]
    [('sm_120a', 300, 120)]
    >>> changes["total"]["delta"], changes["families"]
    (300, [{'family': 'gemm', 'base': 40, 'head': 110, 'delta': 70, 'targets': {'sm_120a': 70}}])
    """
    targets = [
        _bytes_row(name, "target", was, now)
        for name in _order(set(base.targets) | set(head.targets))
        if _counts(was := base.targets.get(name, _NONE))
        != _counts(now := head.targets.get(name, _NONE))
    ]
    families = []
    for name in [*base.families, *(f for f in head.families if f not in base.families)]:
        was_by, now_by = base.families.get(name, {}), head.families.get(name, {})
        changed = {
            target: now_by.get(target, 0) - was_by.get(target, 0)
            for target in _order(set(was_by) | set(now_by))
            if now_by.get(target, 0) != was_by.get(target, 0)
        }
        if changed:
            before, after = sum(was_by.values()), sum(now_by.values())
            families.append(
                {
                    "family": name,
                    "base": before,
                    "head": after,
                    "delta": after - before,
                    "targets": changed,
                }
            )
    return {
        "targets": targets,
        "total": _bytes_row("total", "target", base.total, head.total),
        "families": families,
    }
