"""What ``probe`` says of each kernel family: the code objects that hold it and the
devices on which a working one loads, judged kernel by kernel by ``expect.serve``.

``probe --json`` is the inventory plus this, per family (:func:`inventory_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.archs import DEVICES, ComputeCapability, Target
from orchestrator.judge.expect import (
    HOLLOW,
    PRESENT,
    code_objects_holding,
    family_kernels,
    rule_mismatch,
    serve,
)
from orchestrator.read.inventory import Inventory
from orchestrator.symbols import FamilyRule


@dataclass(frozen=True)
class FamilyPresence:
    """Where one kernel family really is, in an inventory."""

    family: str
    cubins: tuple[str, ...]  # targets with a working kernel of the family
    ptx: tuple[str, ...]
    hollow: tuple[str, ...]  # targets where all its kernels are hollow
    devices: tuple[ComputeCapability, ...]  # devices on which a working one loads
    hollow_devices: tuple[ComputeCapability, ...]  # devices that load only hollow ones
    libraries: tuple[str, ...]
    jit_devices: tuple[ComputeCapability, ...] = ()  # of ``devices``: served only by PTX
    mismatch: str | None = None  # why the family's rule may not fit (it matches nothing)

    def to_json(self) -> dict[str, Any]:
        return {
            "cubins": list(self.cubins),
            "ptx": list(self.ptx),
            "hollow": list(self.hollow),
            "devices": [str(d) for d in self.devices],
            "hollow_devices": [str(d) for d in self.hollow_devices],
            "libraries": list(self.libraries),
            "jit_devices": [str(d) for d in self.jit_devices],
            "mismatch": self.mismatch,
        }


def family_presence(
    inventory: Inventory,
    rules: Iterable[FamilyRule],
    devices: Sequence[ComputeCapability] | None = None,
) -> dict[str, FamilyPresence]:
    """Per family: the code objects that hold it and the devices it runs on, each
    kernel judged by the code object the driver would load for it
    (``expect.serve``), with the family's own hollowness threshold."""
    if devices is None:
        devices = tuple(device.cc for device in DEVICES)
    result = {}
    for rule in rules:
        kernels = family_kernels(inventory, rule)
        holding, working = code_objects_holding(kernels, rule)
        hollow = holding - working
        served = {device: serve(kernels, rule, device) for device in devices}
        statuses = {device: status for device, (status, _) in served.items()}
        result[rule.name] = FamilyPresence(
            family=rule.name,
            cubins=_names(t for t in working if not t.ptx),
            ptx=_names(t for t in working if t.ptx),
            hollow=_names(hollow),
            devices=tuple(d for d in devices if statuses[d] == PRESENT),
            hollow_devices=tuple(d for d in devices if statuses[d] == HOLLOW),
            libraries=tuple(dict.fromkeys(entry.library for entry in kernels)),
            jit_devices=tuple(
                d
                for d in devices
                if statuses[d] == PRESENT and all(t.ptx for _, t, _ in served[d][1])
            ),
            mismatch=rule_mismatch(inventory, rule) if not kernels else None,
        )
    return result


def _names(targets: Iterable[Target]) -> tuple[str, ...]:
    return tuple(t.name for t in sorted(set(targets), key=Target.sort_key))


def inventory_json(
    inventory: Inventory, presence: dict[str, FamilyPresence] | None = None
) -> dict[str, Any]:
    """The ``probe --json`` document: the inventory plus per-family presence."""
    data = inventory.to_json()
    data["families"] = {name: p.to_json() for name, p in (presence or {}).items()}
    return data
