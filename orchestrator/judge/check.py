"""``kernel-matrix check``: the verdict of every kernel family on every requested
device for something already built -- a released wheel, a shared object or a
directory -- without installing or building it.

The verdicts are ``expect.judge``'s (the one place that knows which code object a
device loads and when a kernel is hollow); this module only chooses what to read
and how to show it:

* only the libraries some family can live in are read (every family names its
  ``libraries``: vLLM's flash-attention libraries, half of a wheel, are skipped);
* each family's kernels are found once (``family_kernels``) and judged on every
  device, instead of rescanning thousands of unrelated kernels per device.
"""

from __future__ import annotations

import contextlib
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.archs import ComputeCapability, CudaVersion, Target
from orchestrator.common.errors import EXIT_KERNEL_MISSING, EXIT_OK, KernelMatrixError, UsageError
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    NOT_APPLICABLE,
    NOT_MATCHED,
    PRESENT,
    Verdict,
    code_objects_holding,
    family_kernels,
    judge,
    rule_mismatch,
)
from orchestrator.judge.results import PASSED, CellResult
from orchestrator.read import checkcache
from orchestrator.read.demand import Demand
from orchestrator.read.engines import DEFAULT_ENGINE, Engine
from orchestrator.read.inventory import NOT_JUDGED, Inventory
from orchestrator.symbols import FamilyRule, library_matches

STATUSES = (PRESENT, MISSING, HOLLOW, NOT_MATCHED, NOT_APPLICABLE)
CHECK_SCHEMA_VERSION = 1  # of ``check --json`` (orchestrator/schemas/check.schema.json)
SECONDS_DIGITS = 2  # how precisely ``seconds`` is written


def default_devices(rules: Sequence[FamilyRule]) -> tuple[ComputeCapability, ...]:
    """Every device some family is meant for, sorted."""
    return tuple(sorted({device for rule in rules for device in rule.devices}))


def library_filter(rules: Sequence[FamilyRule]) -> Callable[[str], bool] | None:
    """Which library paths can hold a family's kernel: None (all of them) unless
    every family restricts its ``libraries``."""
    if not rules or any(not rule.libraries for rule in rules):
        return None
    globs = sorted({glob for rule in rules for glob in rule.libraries})
    return lambda path: library_matches(path, globs)


@dataclass(frozen=True)
class CheckResult:
    paths: tuple[str, ...]
    engine: str
    devices: tuple[ComputeCapability, ...]
    families: tuple[str, ...]
    built_for: dict[str, tuple[str, ...]]  # family -> every code object holding it
    hollow_in: dict[str, tuple[str, ...]]  # family -> those where all its kernels are hollow
    mismatch: dict[str, str]  # family -> why its rule may not fit (families matching nothing)
    verdicts: tuple[Verdict, ...]
    libraries_read: int
    seconds: float
    # family -> code objects holding it that were not analysed (lazy read; see demand)
    not_judged: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unread: tuple[str, ...] = ()  # PTX targets left undecoded: no requested device loads them
    # library files given by name that no family's ``libraries`` glob matches
    outside_libraries: tuple[str, ...] = ()
    unclaimed: tuple[str, ...] = ()  # libraries inside the wheels that no family claims

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        """The result ``to_json`` wrote (the check cache keeps whole results)."""
        families = data["families"]
        return cls(
            paths=tuple(data["paths"]),
            engine=data["engine"],
            devices=tuple(ComputeCapability.parse(d) for d in data["devices"]),
            families=tuple(families),
            built_for={name: tuple(f["built_for"]) for name, f in families.items()},
            hollow_in={name: tuple(f["hollow_in"]) for name, f in families.items()},
            mismatch={name: f["mismatch"] for name, f in families.items() if f.get("mismatch")},
            verdicts=tuple(Verdict.from_json(v) for v in data["verdicts"]),
            libraries_read=data["libraries_read"],
            seconds=data["seconds"],
            not_judged={name: tuple(f.get("not_judged", ())) for name, f in families.items()},
            unread=tuple(data.get("unread", ())),
            outside_libraries=tuple(data.get("outside_libraries", ())),
            unclaimed=tuple(data.get("unclaimed", ())),
        )

    @property
    def failing(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.failing]

    @property
    def exit_code(self) -> int:
        return EXIT_KERNEL_MISSING if self.failing else EXIT_OK

    def counts(self) -> dict[str, int]:
        found = Counter(v.status for v in self.verdicts)
        return {status: found[status] for status in STATUSES}

    def verdict(self, family: str, device: ComputeCapability | str) -> Verdict:
        for v in self.verdicts:
            if v.family == family and v.device == str(device):
                return v
        raise KeyError((family, str(device)))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": CHECK_SCHEMA_VERSION,
            "paths": list(self.paths),
            "engine": self.engine,
            "devices": [str(d) for d in self.devices],
            "families": {
                name: {
                    "built_for": list(self.built_for[name]),
                    "hollow_in": list(self.hollow_in[name]),
                    "not_judged": list(self.not_judged.get(name, ())),
                    "mismatch": self.mismatch.get(name),
                }
                for name in self.families
            },
            "verdicts": [v.to_json() for v in self.verdicts],
            "counts": self.counts(),
            "exit_code": self.exit_code,
            "libraries_read": self.libraries_read,
            "unread": list(self.unread),
            "outside_libraries": list(self.outside_libraries),
            "unclaimed": list(self.unclaimed),
            "seconds": round(self.seconds, SECONDS_DIGITS),
        }


@dataclass(frozen=True)
class Judged:
    verdicts: tuple[Verdict, ...]  # family-major, devices in the order asked
    built_for: dict[str, tuple[str, ...]]
    hollow_in: dict[str, tuple[str, ...]]
    mismatch: dict[str, str]
    not_judged: dict[str, tuple[str, ...]]


def check_inventory(
    inventory: Inventory,
    rules: Sequence[FamilyRule],
    devices: Sequence[ComputeCapability],
    *,
    cuda: CudaVersion | None = None,
    skip_lines: Sequence[str] = (),
) -> Judged:
    """``judge`` for every family × device, and per family the code objects that
    hold it (and those in which every kernel of it is hollow)."""
    verdicts: list[Verdict] = []
    built_for: dict[str, tuple[str, ...]] = {}
    hollow_in: dict[str, tuple[str, ...]] = {}
    not_judged: dict[str, tuple[str, ...]] = {}
    mismatches: dict[str, str] = {}
    for rule in rules:
        kernels = family_kernels(inventory, rule)
        mismatch = rule_mismatch(inventory, rule) if not kernels else None
        if mismatch:
            mismatches[rule.name] = mismatch
        targets, working = code_objects_holding(kernels, rule)
        built_for[rule.name] = _names(targets)
        hollow_in[rule.name] = _names(targets - working)
        not_judged[rule.name] = _names(
            {
                t
                for k in kernels
                for t, kernel in k.copies.items()
                if kernel.instructions == NOT_JUDGED
            }
        )
        verdicts += [
            judge(
                inventory,
                rule,
                device,
                cuda=cuda,
                skip_lines=skip_lines,
                kernels=kernels,
                mismatch=mismatch,
            )
            for device in devices
        ]
    return Judged(tuple(verdicts), built_for, hollow_in, mismatches, not_judged)


def _names(targets: set[Target]) -> tuple[str, ...]:
    return tuple(t.name for t in sorted(targets, key=Target.sort_key))


def check_paths(
    paths: Sequence[Path],
    rules: Sequence[FamilyRule],
    devices: Sequence[ComputeCapability] | None = None,
    *,
    engine: Engine = DEFAULT_ENGINE,
    cuobjdump: Path | None = None,
    cuda: CudaVersion | None = None,
    skip_lines: Sequence[str] = (),
    lazy: bool = True,
    cache: bool = False,
    jobs: int | None = None,
) -> CheckResult:
    """Probe ``paths`` (only the libraries a family can be in) and judge them.
    ``lazy``: read only what the verdicts need (``orchestrator.read.demand``); False
    reads the full inventory, as ``probe`` does. ``cache``: keep the lazy reads and
    answer from them (``orchestrator.read.checkcache``). ``jobs``: processes that read a
    large library (default: this machine's CPUs)."""
    if not rules:
        raise UsageError("the families file defines no family to check")
    started = time.monotonic()
    wanted = tuple(devices) if devices else default_devices(rules)
    key = None
    if cache and lazy and engine == "native":
        key = checkcache.result_key(paths, rules, wanted, cuda, tuple(skip_lines))
        kept = checkcache.load_result(key) if key else None
        if kept is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError, KernelMatrixError):
                return replace(CheckResult.from_json(kept), seconds=time.monotonic() - started)
    from orchestrator.probe import probe  # (not needed by an answer from the cache)

    only = library_filter(rules)
    inventory = probe(
        paths,
        engine=engine,
        cuobjdump=cuobjdump,
        only=only,
        demand=Demand(tuple(rules), wanted) if lazy else None,
        cache=cache,
        jobs=jobs,
    )
    judged = check_inventory(inventory, rules, wanted, cuda=cuda, skip_lines=skip_lines)
    result = CheckResult(
        paths=tuple(str(p) for p in paths),
        engine=engine,
        devices=wanted,
        families=tuple(rule.name for rule in rules),
        built_for=judged.built_for,
        hollow_in=judged.hollow_in,
        mismatch=judged.mismatch,
        verdicts=judged.verdicts,
        libraries_read=len(inventory.libraries),
        seconds=time.monotonic() - started,
        not_judged=judged.not_judged,
        unread=_names({Target.parse(t) for lib in inventory.libraries for t in lib.unread}),
        outside_libraries=tuple(
            str(p)
            for p in paths
            if only is not None and p.suffix != ".whl" and p.is_file() and not only(str(p))
        ),
        unclaimed=unclaimed_libraries(paths, only),
    )
    if key is not None:
        checkcache.store_result(key, result.to_json())
    return result


ARTIFACT_CELL = "artifact"  # the one cell of a wheel or library compared (compare A.whl B.whl)


def is_artifact(path: Path) -> bool:
    """A wheel or a shared object (what ``compare`` probes itself), not results."""
    from orchestrator.probe import is_shared_object_name

    return path.is_file() and (path.suffix == ".whl" or is_shared_object_name(path.name))


def artifact_result(path: Path, rules: Sequence[FamilyRule]) -> CellResult:
    """A wheel or library as a cell of a run: probed (the libraries its families may
    live in, read as lazily as their verdicts on every device they name allow),
    judged, and weighed -- one cell, :data:`ARTIFACT_CELL`, whatever its file is
    called, so that two versions of a wheel compare cell to cell."""
    from orchestrator.judge.sizes import cell_sizes
    from orchestrator.probe import probe

    devices = default_devices(rules)
    inventory = probe([path], only=library_filter(rules), demand=Demand(tuple(rules), devices))
    judged = check_inventory(inventory, rules, devices)
    result = CellResult(
        cell={"id": ARTIFACT_CELL, "devices": [str(d) for d in devices]},
        status=PASSED,
        inventory=inventory,
        verdicts=list(judged.verdicts),
        artifacts=[str(path)],
        sizes=cell_sizes(inventory, rules),
    )
    result.settle()
    return result


def artifact_libraries(path: Path) -> dict[str, int]:
    """Every shared object of a wheel and its bytes in the wheel (compressed, from the
    zip directory alone: read or not, claimed by a family or not); a library file's
    own size under its name."""
    from orchestrator.probe import is_shared_object_name

    if path.suffix != ".whl":
        return {path.name: path.stat().st_size}
    with contextlib.suppress(OSError, zipfile.BadZipFile), zipfile.ZipFile(path) as wheel:
        return {
            info.filename: info.compress_size
            for info in wheel.infolist()
            if is_shared_object_name(PurePosixPath(info.filename).name)
        }
    return {}


def unclaimed_libraries(
    paths: Sequence[Path], only: Callable[[str], bool] | None
) -> tuple[str, ...]:
    """The shared objects inside the wheels among ``paths`` that no family's
    ``libraries`` glob claims (vLLM's flash-attention or DeepGEMM libraries for its
    profile): listed, never silently ignored. Read from the zip directory alone."""
    from orchestrator.probe import is_shared_object_name

    if only is None:
        return ()
    found: list[str] = []
    for path in paths:
        if path.suffix == ".whl" and path.is_file():
            with contextlib.suppress(OSError, zipfile.BadZipFile), zipfile.ZipFile(path) as wheel:
                found += sorted(
                    n for n in wheel.namelist() if is_shared_object_name(n) and not only(n)
                )
    return tuple(found)


def lazy_read_differences(lazy: CheckResult, full: CheckResult) -> list[str]:
    """Where a lazy check (``orchestrator.read.demand``) disagrees with a full read of the
    same paths: empty when its verdicts are the full read's, except that the code
    objects a family was built for (and a reason naming them) may lack the PTX
    modules it left unread. Used by the tests and the benchmark."""
    found = []
    pairs = list(zip(lazy.verdicts, full.verdicts, strict=False))
    if len(lazy.verdicts) != len(full.verdicts):
        found.append(f"{len(lazy.verdicts)} verdicts, the full read {len(full.verdicts)}")
    for mine, theirs in pairs:
        where = f"{theirs.family} on {theirs.device}"
        if replace(mine, built_for=(), reason="") != replace(theirs, built_for=(), reason=""):
            found.append(
                f"{where}: {mine.status} {mine.served_by}, full: {theirs.status} {theirs.served_by}"
            )
        extra = set(mine.built_for) - set(theirs.built_for)
        left = set(theirs.built_for) - set(mine.built_for) - set(lazy.unread)
        if extra or left:
            found.append(f"{where}: built for {mine.built_for}, full: {theirs.built_for}")
        elif mine.built_for == theirs.built_for and mine.reason != theirs.reason:
            found.append(f"{where}: {mine.reason!r}, full: {theirs.reason!r}")
    return found
