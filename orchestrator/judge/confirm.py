"""``check --confirm-with-driver``: every verdict on a local GPU, confirmed by the
CUDA driver itself, without launching anything.

For each family × local device, each kernel of the family gets a prediction from the
same rule table the check uses (``archs.select_image`` over the code objects that
hold it): the cubin the driver loads, the PTX it JIT-compiles, or nothing. The
driver then answers (``orchestrator.judge.driver.look_up`` semantics):

* a kernel predicted in cubin ``sm_XY*`` must be found with JIT off, with binary
  version XY (the driver does not report the ``a``/``f`` variant);
* a kernel predicted by PTX must be found only with JIT on (a JIT load);
* a kernel predicted missing must not be found at all.

Any other answer is a disagreement, printed, and fails the run. A load is not a
launch: hollow kernels load like working ones, and only ``--launch-stubs`` runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.archs import ComputeCapability, Target, select_image
from orchestrator.judge.check import library_filter
from orchestrator.judge.driver import (
    LAUNCH_TIMEOUT_S,
    LOOKUP_TIMEOUT_S,
    LocalDevice,
    run_child,
)
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    PRESENT,
    family_kernels,
    is_hollow,
    serve,
)
from orchestrator.probe import probe
from orchestrator.read.demand import Demand
from orchestrator.read.inventory import Inventory
from orchestrator.read.library import container_spans
from orchestrator.symbols import FamilyRule

CUBIN, JIT, NONE = "cubin", "jit", "none"
STUBS_PER_FAMILY = 4  # hollow kernels launched per family and device (--launch-stubs)
CONTAINERS_PER_CHILD = 16


@dataclass(frozen=True)
class KernelConfirmation:
    library: str
    kernel: str  # mangled: what cuModuleGetFunction takes
    predicted: str  # the code object the rules say the driver loads, or "" (none)
    loaded: str  # CUBIN, JIT or NONE: what the driver did
    binary_version: int = 0
    ptx_version: int = 0
    hollow: bool = False

    @property
    def agrees(self) -> bool:
        if not self.predicted:
            return self.loaded == NONE
        target = Target.parse(self.predicted)
        if target.ptx:
            return self.loaded == JIT
        return self.loaded == CUBIN and self.binary_version == target.cc.sm

    def describe(self) -> str:
        driver = {
            CUBIN: f"driver loaded a cubin (binary version {self.binary_version})",
            JIT: f"driver JIT-compiled PTX (PTX version {self.ptx_version})",
            NONE: "driver found no code for it",
        }[self.loaded]
        return f"predicted {self.predicted or 'no code'}, {driver}"

    def to_json(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "kernel": self.kernel,
            "predicted": self.predicted,
            "loaded": self.loaded,
            "binary_version": self.binary_version,
            "ptx_version": self.ptx_version,
            "hollow": self.hollow,
            "agrees": self.agrees,
        }


@dataclass(frozen=True)
class StubLaunch:
    kernel: str
    launch: str  # the error name cuLaunchKernel returned (CUDA_SUCCESS for none)
    sync: str  # what the synchronisation after it returned (the trap shows here)
    message: str  # what the kernel printed (a CUTLASS guard's "Arch conditional ..." line)

    @property
    def trapped(self) -> bool:
        return self.sync != "CUDA_SUCCESS" or self.launch != "CUDA_SUCCESS"

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "launch": self.launch,
            "sync": self.sync,
            "message": self.message,
            "trapped": self.trapped,
        }


@dataclass(frozen=True)
class FamilyConfirmation:
    family: str
    device: str
    gpu: str
    status: str  # the check's verdict
    kernels: tuple[KernelConfirmation, ...]
    errors: tuple[str, ...] = ()  # a driver process that died or timed out
    stubs: tuple[StubLaunch, ...] = ()

    @property
    def disagreements(self) -> list[KernelConfirmation]:
        return [k for k in self.kernels if not k.agrees]

    @property
    def agrees(self) -> bool:
        return not self.disagreements and not self.errors

    def counts(self) -> dict[str, int]:
        return {
            what: sum(1 for k in self.kernels if k.loaded == what) for what in (CUBIN, JIT, NONE)
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "device": self.device,
            "gpu": self.gpu,
            "status": self.status,
            "looked_up": len(self.kernels),
            "loaded": self.counts(),
            "agrees": self.agrees,
            "errors": list(self.errors),
            "disagreements": [k.to_json() for k in self.disagreements],
            "kernels": [k.to_json() for k in self.kernels],
            "stubs": [s.to_json() for s in self.stubs],
        }


@dataclass
class _Job:
    """The kernels to look up in one library on one GPU, and what the driver said."""

    library: str
    file: Path
    ordinal: int
    kernels: list[str]
    found: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def inventory_to_confirm(
    paths: Sequence[Path], rules: Sequence[FamilyRule], devices: Sequence[ComputeCapability]
) -> Inventory:
    """What ``check`` read of ``paths`` (the same lazy read, answered from the check
    cache when it ran just before), with the kernel names the driver is asked for."""
    return probe(
        paths,
        only=library_filter(rules),
        demand=Demand(tuple(rules), tuple(devices)),
        cache=True,
        jobs=1,
    )


def confirm(
    inventory: Inventory,
    rules: Sequence[FamilyRule],
    gpus: Sequence[LocalDevice],
    *,
    launch_stubs: bool = False,
    jobs: int | None = None,
) -> list[FamilyConfirmation]:
    """The driver's answer for every family kernel on every GPU in ``gpus`` (one per
    compute capability), compared with the rules' prediction."""
    with _library_files(inventory) as files:
        wanted: dict[tuple[str, int], _Job] = {}
        plans = []
        for gpu in gpus:
            for rule in rules:
                if not rule.applies_to(gpu.capability, None):
                    continue
                kernels = family_kernels(inventory, rule)
                status, _ = serve(kernels, rule, gpu.capability)
                plans.append((gpu, rule, status, kernels))
                for entry in kernels:
                    job = wanted.setdefault(
                        (entry.library, gpu.ordinal),
                        _Job(entry.library, files[entry.library], gpu.ordinal, []),
                    )
                    job.kernels.append(entry.mangled)
        spans = _look_up_all(list(wanted.values()), jobs or os.cpu_count() or 1)
        results = []
        for gpu, rule, status, kernels in plans:
            confirmations = []
            errors: set[str] = set()
            for entry in kernels:
                job = wanted[entry.library, gpu.ordinal]
                errors.update(job.errors)
                chosen = select_image(entry.copies, gpu.capability)
                loaded, _, binary, ptx = job.found.get(entry.mangled, (NONE, 0, 0, 0))
                hollow = chosen is not None and is_hollow(entry.copies[chosen], rule)
                confirmations.append(
                    KernelConfirmation(
                        entry.library,
                        entry.mangled,
                        chosen.name if chosen else "",
                        loaded,
                        binary,
                        ptx,
                        hollow,
                    )
                )
            stubs: tuple[StubLaunch, ...] = ()
            if launch_stubs and status in (PRESENT, HOLLOW):
                stubs = tuple(_launch_stubs(confirmations, files, spans, wanted, gpu.ordinal))
            results.append(
                FamilyConfirmation(
                    rule.name,
                    str(gpu.capability),
                    gpu.name,
                    status if kernels else MISSING,
                    tuple(confirmations),
                    tuple(sorted(errors)),
                    stubs,
                )
            )
        return results


def _look_up_all(jobs: list[_Job], workers: int) -> dict[str, list[tuple[int, int]]]:
    """Two passes per library, each spread over processes by chunks of containers:
    JIT off over every container, then JIT on over those the first pass could not
    load, for the kernels it did not find. Returns each library's containers."""
    spans = {job.library: container_spans(job.file) for job in jobs}

    def run(job: _Job, chunk: list[tuple[int, int]], kernels: list[str], jit: bool) -> Any:
        request = {
            "library": str(job.file),
            "ordinal": job.ordinal,
            "containers": chunk,
            "kernels": kernels,
        }
        answer, _ = run_child("look-up", request, jit=jit, timeout=LOOKUP_TIMEOUT_S)
        return job, answer, jit

    with ThreadPoolExecutor(max_workers=workers) as pool:
        first = [
            pool.submit(run, job, chunk, sorted(set(job.kernels)), False)
            for job in jobs
            for chunk in _chunks(spans[job.library])
        ]
        failed: dict[str, list[tuple[int, int]]] = {}
        for future in first:
            job, answer, _ = future.result()
            _record(job, answer, jit=False)
            lengths = dict(spans[job.library])
            failed.setdefault(job.library, []).extend(
                (int(offset), lengths[int(offset)]) for offset in answer.get("failed", {})
            )
        second = []
        for job in jobs:
            left = sorted(set(job.kernels) - set(job.found))
            if left and failed.get(job.library):
                second += [
                    pool.submit(run, job, chunk, left, True)
                    for chunk in _chunks(failed[job.library])
                ]
        for future in second:
            job, answer, _ = future.result()
            _record(job, answer, jit=True)
    return spans  # each library's containers, for the stubs to launch


def _chunks(spans: list[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    for start in range(0, len(spans), CONTAINERS_PER_CHILD):
        yield spans[start : start + CONTAINERS_PER_CHILD]


def _record(job: _Job, answer: dict[str, Any], *, jit: bool) -> None:
    if "error" in answer:
        job.errors.append(f"{Path(job.library).name}: {answer['error']}")
        return
    for name, (offset, binary, ptx) in answer["found"].items():
        job.found.setdefault(name, (JIT if jit else CUBIN, offset, binary, ptx))


def _launch_stubs(
    confirmations: Sequence[KernelConfirmation],
    files: dict[str, Path],
    spans: dict[str, list[tuple[int, int]]],
    jobs: dict[tuple[str, int], _Job],
    ordinal: int,
) -> Iterator[StubLaunch]:
    """Launch, each in its own process, the first few kernels judged hollow that the
    driver found; never a kernel judged working."""
    stubs = [k for k in confirmations if k.hollow and k.loaded != NONE][:STUBS_PER_FAMILY]
    for kernel in stubs:
        offset = jobs[kernel.library, ordinal].found[kernel.kernel][1]
        request = {
            "library": str(files[kernel.library]),
            "ordinal": ordinal,
            "container": [offset, dict(spans[kernel.library])[offset]],
            "kernel": kernel.kernel,
        }
        answer, printed = run_child(
            "launch", request, jit=kernel.loaded == JIT, timeout=LAUNCH_TIMEOUT_S
        )
        if "error" in answer:
            yield StubLaunch(kernel.kernel, answer["error"], "", printed.strip()[:300])
        else:
            message = next((line for line in printed.splitlines() if line.strip()), "")
            yield StubLaunch(kernel.kernel, answer["launch"], answer["sync"], message[:300])


@contextmanager
def _library_files(inventory: Inventory) -> Iterator[dict[str, Path]]:
    """A file the driver can read for each library: itself, or, for a wheel's member
    (``WHEEL!MEMBER``), a copy extracted to a temporary folder."""
    folder: Path | None = None
    files: dict[str, Path] = {}
    try:
        for library in inventory.libraries:
            wheel, bang, member = library.path.partition("!")
            if not bang:
                files[library.path] = Path(library.path)
                continue
            folder = folder or Path(tempfile.mkdtemp(prefix="kernel-matrix-confirm-"))
            target = folder / str(len(files)) / Path(member).name
            target.parent.mkdir()
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(member) as src,
                target.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            files[library.path] = target
        yield files
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
