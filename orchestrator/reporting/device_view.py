"""What ``check`` adds for a person about to launch on this machine: the GPUs found,
what to do for each family a GPU lacks (a release whose truth table has it, or the
arch list to build it for), and, with ``--confirm-with-driver``, what the driver
itself said of each verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.judge.confirm import FamilyConfirmation, StubLaunch
    from orchestrator.judge.driver import LocalDevice
    from orchestrator.read.installed import InstalledDistribution

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.archs import ComputeCapability
from orchestrator.common.errors import EXIT_KERNEL_MISSING
from orchestrator.judge.check import CheckResult
from orchestrator.judge.expect import HOLLOW, MISSING


@dataclass(frozen=True)
class DeviceReport:
    check: CheckResult
    installed: InstalledDistribution | None
    gpus: tuple[LocalDevice, ...]
    confirmation: tuple[FamilyConfirmation, ...] | None
    advice: tuple[str, ...]

    @classmethod
    def make(
        cls,
        check: CheckResult,
        installed: InstalledDistribution | None,
        families: Path,
        gpus: Sequence[LocalDevice] | None,
        confirmation: Sequence[FamilyConfirmation] | None,
    ) -> DeviceReport:
        profile = _shipped_profile(families)
        lacking: dict[str, list[ComputeCapability]] = {}
        for v in check.failing:
            if v.status in (MISSING, HOLLOW):
                lacking.setdefault(v.family, []).append(ComputeCapability.parse(v.device))
        # For a person about to launch here (an install, or this machine's GPUs).
        advice = tuple(
            what_to_do(profile, family, devices, installed)
            for family, devices in lacking.items()
            if installed or gpus
        )
        return cls(
            check,
            installed,
            tuple(gpus or ()),
            tuple(confirmation) if confirmation is not None else None,
            advice,
        )

    @property
    def disagreements(self) -> int:
        return sum(not c.agrees for c in self.confirmation or ())

    @property
    def exit_code(self) -> int:
        return self.check.exit_code or (EXIT_KERNEL_MISSING if self.disagreements else 0)

    def to_json(self) -> dict[str, Any]:
        data = self.check.to_json()
        data["exit_code"] = self.exit_code
        data["installed"] = (
            {
                "name": self.installed.name,
                "version": self.installed.version,
                "python": self.installed.python,
            }
            if self.installed
            else None
        )
        data["local_gpus"] = [
            {"ordinal": g.ordinal, "name": g.name, "device": str(g.capability)} for g in self.gpus
        ]
        data["confirmation"] = (
            [c.to_json() for c in self.confirmation] if self.confirmation is not None else None
        )
        data["advice"] = list(self.advice)
        return data


def _shipped_profile(families: Path) -> str | None:
    from orchestrator.planning.profiles import PROFILES

    resolved = families.resolve()
    return resolved.stem if resolved.parent == PROFILES else None


def what_to_do(
    profile: str | None,
    family: str,
    devices: Sequence[ComputeCapability],
    installed: InstalledDistribution | None,
) -> str:
    """One sentence: a release whose truth table serves the family on all these
    devices (for this machine's platform), and the arch list to build it for.

    >>> what_to_do(None, "nvfp4", [ComputeCapability(12, 1)], None)
    'nvfp4 on 12.1: no release known to this tool has it; build from source with TORCH_CUDA_ARCH_LIST="12.1a"'
    """
    from orchestrator.planning.profiles import release_key, releases_serving

    where = ", ".join(str(d) for d in devices)
    archs = ";".join(f"{d}a" for d in devices)
    build = f'build from source with TORCH_CUDA_ARCH_LIST="{archs}"'
    machine = platform.machine()
    serving = (
        [set(releases_serving(profile, family, d, machine)) for d in devices] if profile else []
    )
    releases = sorted(set.intersection(*serving), key=release_key, reverse=True) if serving else []
    if installed and installed.version in releases:
        return (
            f"{family} on {where}: the truth table says {installed.name} {installed.version} "
            f"({machine}) has it, but this install does not: reinstall it, or {build}"
        )
    if releases and profile:
        name = installed.name if installed else profile
        return (
            f"{family} on {where}: {name} {releases[0]} ({machine} wheel) has it "
            f"(pip install '{name}=={releases[0]}'), or {build}"
        )
    return f"{family} on {where}: no release known to this tool has it; {build}"


def print_device_report(report: DeviceReport) -> None:
    from rich.text import Text

    from orchestrator.judge.confirm import CUBIN, JIT, NONE
    from orchestrator.reporting.console import console, mark, say
    from orchestrator.reporting.tables import grid

    out = console()
    for gpu in report.gpus:
        say(out, f"GPU {gpu.ordinal}: {gpu.name} (compute capability {gpu.capability})")
    if report.installed:
        i = report.installed
        say(
            out,
            f"installed: {i.name} {i.version} ({len(i.libraries)} shared objects, "
            f"found with {i.python})",
        )
    for line in report.advice:
        say(out, f"what to do: {line}")
    if report.confirmation is None:
        return
    table = grid("the CUDA driver's answer (kernels looked up on this GPU; nothing launched)")
    for header in ("family", "device", "check says", "cubin", "JIT", "no code", "agrees"):
        table.add_column(header, no_wrap=header != "family")
    for c in report.confirmation:
        counts = c.counts()
        table.add_row(
            Text(c.family),
            c.device,
            Text(mark(c.status)),
            str(counts[CUBIN]),
            str(counts[JIT]),
            str(counts[NONE]),
            Text(mark("passed" if c.agrees else "failed")),
        )
    out.print(table)
    for c in report.confirmation:
        for error in c.errors:
            say(out, f"error: {c.family} on {c.device}: {error}")
        for k in c.disagreements[:5]:
            say(
                out,
                f"disagreement: {c.family} on {c.device}: {k.kernel} in "
                f"{Path(k.library).name}: {k.describe()}",
            )
        if len(c.disagreements) > 5:
            say(out, f"  … and {len(c.disagreements) - 5} more (see --json)")
        for s in c.stubs:
            say(out, f"stub launched: {c.family} on {c.device}: {s.kernel}: {stub_outcome(s)}")
    looked = sum(len(c.kernels) for c in report.confirmation)
    say(
        out,
        f"driver: {looked} kernels looked up; it disagrees with the check on "
        f"{report.disagreements} family × device pairs (a load is not a launch)",
    )


def stub_outcome(stub: StubLaunch) -> str:
    """What a launched stub did, in words."""
    printed = f'; it printed "{stub.message}"' if stub.message else ""
    if not stub.trapped:
        return "ran and returned with no error" + (
            printed
            or " and printed nothing: with zeroed arguments it did no work (a body compiled "
            "out, or a path that returns before the guard)"
        )
    if stub.launch != "CUDA_SUCCESS":
        return f"the launch failed: {stub.launch}{printed}"
    return f"launched, then the GPU reported {stub.sync}{printed}"
