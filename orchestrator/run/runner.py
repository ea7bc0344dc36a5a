"""Running a matrix: build each cell (in parallel), probe what it produced, check
the families, and write each cell's result atomically as soon as it is known.

Nothing is lost: a finished cell's result is on disk before the next one starts
writing; Ctrl-C (or SIGTERM, as CI timeouts send) stops every build process,
marks the cells that did not finish as *not-run*, and ``--resume`` continues
without rebuilding the finished ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator import __version__
from orchestrator.building.backends import Backend, BuildJob
from orchestrator.building.buildlog import scan_log
from orchestrator.building.recipe import PIP_SOURCE_COPY, PROCESSES, collect_artifacts
from orchestrator.common import stopping
from orchestrator.common.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    BuildError,
    Interrupted,
    KernelMatrixError,
)
from orchestrator.common.fsutil import write_json
from orchestrator.common.words import counted
from orchestrator.judge.expect import (
    MISSING,
    NOT_APPLICABLE,
    Verdict,
    archs_without_code,
    check_cell,
    compare_with_prediction,
)
from orchestrator.judge.results import (
    ERROR,
    FINAL_STATUSES,
    NOT_RUN,
    SKIPPED,
    CellResult,
    load_cell_result,
)
from orchestrator.judge.sizes import cell_sizes
from orchestrator.planning.matrix import Matrix
from orchestrator.planning.plan import Cell
from orchestrator.probe import probe
from orchestrator.read.engines import DEFAULT_ENGINE, Engine
from orchestrator.read.inventory import Inventory
from orchestrator.run import cellcache, configinputs
from orchestrator.run.cellcache import cell_cache_key, source_digest

RUNS_DIR = Path("reports")
BUILDS_DIR = Path("build")
# What setuptools writes under build/ (`pip install .`: build/lib, build/bdist.linux-x86_64,
# build/temp.linux-x86_64-cpython-311, build/scripts-3.11): a matrix's folder never is one.
_SETUPTOOLS_BUILD = re.compile(r"(lib|temp|bdist|scripts)([.-].*)?")


@dataclass
class RunOptions:
    out_dir: Path
    build_root: Path
    jobs: int = 1
    threads_per_job: int = 1
    timeout: float = 3600.0
    engine: Engine = DEFAULT_ENGINE
    resume: bool = False
    # False (--no-cache): nothing answered from the result cache or the configure-input
    # index, nothing stored in them, and each cell built from an empty build folder.
    use_cache: bool = True
    cache_limit: int = field(default_factory=cellcache.cache_limit)
    configure_only: bool = False
    progress: Callable[[str], None] | None = None  # provisioning lines for the console

    def __post_init__(self) -> None:
        # Builds run *in* their directory: a relative one would nest inside itself.
        # (abspath, not Path.absolute: results name ../build as /x/build, not /x/y/../build)
        self.out_dir = Path(os.path.abspath(self.out_dir))
        self.build_root = Path(os.path.abspath(self.build_root))


def default_jobs(cells: int) -> tuple[int, int]:
    """(parallel cells, build threads per cell): all cores used, none oversubscribed."""
    cores = os.cpu_count() or 1
    jobs = max(1, min(cells, cores))
    return jobs, max(1, cores // jobs)


def default_build_root(matrix_path: Path) -> Path:
    """Where a matrix's cells build without ``--build-dir``: ``build/<matrix file's
    stem>/``, one folder per matrix, so that two matrices with a cell id in common (the
    sample extension's and vLLM's ``cu13.0-12.1a``) never build in, or probe, each
    other's trees; a stem that setuptools also writes under build/ gets ``matrix-``.

    >>> default_build_root(Path("matrices/vllm-configure.yaml")).as_posix()
    'build/vllm-configure'
    >>> default_build_root(Path("lib.yaml")).as_posix()
    'build/matrix-lib'
    """
    stem = Path(matrix_path).stem
    return BUILDS_DIR / (f"matrix-{stem}" if _SETUPTOOLS_BUILD.fullmatch(stem) else stem)


def new_run_dir(root: Path) -> Path:
    """A fresh run directory under ``root``, created here: named by the UTC time, with
    ``-2``, ``-3`` ... when another run took that second (two runs never share one).

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> first, second = new_run_dir(root), new_run_dir(root)
    >>> first != second and second.name.startswith(first.name[:15])
    True
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        candidate = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def latest_run_dir(root: Path = RUNS_DIR) -> Path | None:
    runs = sorted(p.parent for p in root.glob("*/run.json"))
    return runs[-1] if runs else None


# --- one cell -----------------------------------------------------------------------


STOP = stopping.STOP  # set on Ctrl-C: provisioning and lock waits stop too
NOT_STARTED = "the run stopped before this cell ran"


def run_cell(
    matrix: Matrix,
    cell: Cell,
    backend: Backend,
    options: RunOptions,
    source_hash: str,
    on_source: Callable[[Cell, bool], None] = lambda cell, cached: None,
) -> CellResult:
    """Build, probe and check one cell; never raises for the cell's own failures.
    ``on_source(cell, cached)`` hears, before the work, whether the result cache
    answers it (True) or it is built (False)."""
    tier = "configure" if options.configure_only else "build"
    result = CellResult(cell=cell.to_json(), status=ERROR, tier=tier)
    if not cell.runnable:
        result.status, result.reason = SKIPPED, cell.reason
        return result
    started = time.monotonic()
    log_path = options.out_dir / "logs" / f"{cell.id}.log"
    build_dir = options.build_root / cell.id
    result.log, result.build_dir = str(log_path.relative_to(options.out_dir)), str(build_dir)
    try:
        toolchain = backend.toolchain_key(cell)
        key = cell_cache_key(matrix, cell, toolchain, source_hash)
        cached = _from_cache(key, tier, build_dir, log_path) if options.use_cache else None
        on_source(cell, cached is not None)
        if cached is not None:
            # This run's cell, log and build directory (the artifacts are back in it).
            cellcache.rebase(cached, build_dir)
        elif by_inputs := _inputs_key(matrix, cell, options, toolchain):
            # Another tree's configure, whose inputs this tree has unchanged.
            answered = configinputs.answer(by_inputs, matrix.project, build_dir, log_path)
            if answered is not None:
                cached, key = answered
        if cached is not None:
            cached.cell, cached.cached, cached.log = cell.to_json(), True, result.log
            result = cached
        else:
            _build_and_probe(matrix, cell, backend, options, result, log_path)
        result.cache_key = key
    except (KernelMatrixError, OSError) as exc:
        # OSError: this machine (a full disk, a directory we may not write), not a bug.
        reason = str(exc) if isinstance(exc, KernelMatrixError) else _os_error(exc)
        findings = scan_log(log_path)
        if isinstance(exc, BuildError) and findings.first_error:
            reason += f": {findings.first_error}"  # the compiler's own words
        result.status, result.reason = ERROR, reason
        result.log_tail = findings.last_lines
        if STOP.is_set():
            result.status, result.reason = NOT_RUN, "interrupted before the cell finished"
    else:
        inventory = result.inventory or Inventory()
        # (a cached result's guards come from the build that found them)
        guards = {(v.family, v.device): v.guard for v in result.verdicts if v.guard}
        # (and what governs each family: a cached result's trace is not its own)
        governed = (
            {(v.family, v.device): v.governed_by for v in result.verdicts}
            if result.cached
            else None
        )
        result.verdicts = check_cell(
            inventory, matrix.families, cell.archs, cuda=cell.cuda, skip_lines=result.skip_lines
        )
        result.verdicts = explain_verdicts(
            result.verdicts, matrix, build_dir, tier=tier, guards=guards, governed=governed
        )
        # Bytes per target and family: only a build has them (a prediction has none).
        result.sizes = cell_sizes(inventory, matrix.families) if tier == "build" else None
        result.archs_without_code, served = archs_without_code(inventory, cell.archs)
        notes = [f"kernel-matrix: no code object for requested {note}" for note in served]
        result.warnings += [note for note in notes if note not in result.warnings]
        result.settle()
        if not result.cached and options.use_cache:
            # Stored with its guards (those that dropped a family, those that govern
            # each): the configure trace is not among the artifacts a cached cell gets back.
            _store_in_cache(key, tier, result, build_dir, log_path, options)
            if inputs_key := _inputs_key(matrix, cell, options, toolchain):
                note = configinputs.record(inputs_key, key, matrix.project, build_dir)
                result.warnings += [note] if note else []
        if not result.cached and tier == "build":
            result.prediction_mismatches = _check_prediction(matrix, cell, options, result)
    result.duration_s = time.monotonic() - started
    return result


def explain_verdicts(
    verdicts: list[Verdict],
    matrix: Matrix,
    build_dir: Path,
    *,
    tier: str,
    guards: dict[tuple[str, str], str] | None = None,
    governed: dict[tuple[str, str], str | None] | None = None,
) -> list[Verdict]:
    """Verdicts with what only this build directory knows: the CMake guard that dropped
    each missing family and the one that governs every family judged on a device
    (``governed_by``; both from the configure's trace), and -- in the configure tier
    of a `build: pip` project -- the families that live in a project the configure did
    not fetch (a stand-in), which this tier cannot judge. ``guards``: what a cached
    result's verdicts already say; ``governed``: a cached result's ``governed_by``,
    taken as they are (the trace in ``build_dir`` may be another configure's)."""
    from orchestrator.predict.guards import TRACE_FILE, GuardFinder, read_trace

    project = matrix.project
    source = build_dir / PIP_SOURCE_COPY if project.build == "pip" else project.source
    stand_ins = project.configure.stand_ins if project.configure else {}
    finder: GuardFinder | None = None

    def lookups() -> GuardFinder:
        nonlocal finder
        if finder is None:  # the trace is read once, and only where a look-up is needed
            finder = GuardFinder(source, read_trace(build_dir / TRACE_FILE))
        return finder

    out = []
    for verdict in verdicts:
        family = next(f for f in matrix.families if f.name == verdict.family)
        outside = [
            name
            for name, stand_in in stand_ins.items()
            if family.libraries
            and any(fnmatch.fnmatch(lib, g) for lib in stand_in.libraries for g in family.libraries)
        ]
        if tier == "configure" and outside and verdict.status != NOT_APPLICABLE:
            verdict = dataclasses.replace(
                verdict,
                status=NOT_APPLICABLE,
                reason=f"{family.name} lives in a library of {', '.join(outside)}, which the "
                "configure tier does not fetch (a stand-in): only the build tier can judge it",
            )
        elif verdict.status == MISSING:
            guard = (guards or {}).get((verdict.family, verdict.device))
            if guard is None:
                guard = lookups().dropped_by(family, verdict.device)
            if guard:
                verdict = dataclasses.replace(
                    verdict, guard=guard, reason=f"{verdict.reason}; dropped by {guard}"
                )
        if verdict.status != NOT_APPLICABLE:
            # What governs the family there, whatever it decided: compare shows it for
            # the base of a regression, where the family was present.
            governing = (
                lookups().governed_by(family, verdict.device)
                if governed is None
                else governed.get((verdict.family, verdict.device))
            )
            verdict = dataclasses.replace(verdict, governed_by=governing)
        out.append(verdict)
    return out


def _check_prediction(
    matrix: Matrix, cell: Cell, options: RunOptions, result: CellResult
) -> list[str]:
    """Compare the build with what its own configure step predicted (CMake builds)."""
    if matrix.project.build != "cmake":
        return []
    from orchestrator.predict.codemodel import predict_inventory

    try:
        predicted = predict_inventory(options.build_root / cell.id, matrix.project)
    except KernelMatrixError as exc:
        return [f"no prediction: {exc}"]
    verdicts = check_cell(
        predicted, matrix.families, cell.archs, cuda=cell.cuda, skip_lines=result.skip_lines
    )
    return compare_with_prediction(verdicts, result.verdicts)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _store_in_cache(
    key: str, tier: str, result: CellResult, build_dir: Path, log_path: Path, options: RunOptions
) -> None:
    """Keep a finished result and its artifacts for later runs. The cache is an
    optimisation: when it cannot be written (its disk is full, the artifacts exceed
    its limit), the cell's own result still stands, with a warning, and the run
    goes on."""
    try:
        cellcache.store(key, tier, result, build_dir, log_path, options.cache_limit)
    except (KernelMatrixError, OSError) as exc:
        reason = str(exc) if isinstance(exc, KernelMatrixError) else _os_error(exc)
        result.warnings.append(f"kernel-matrix: result cache not written: {reason}")


def _inputs_key(matrix: Matrix, cell: Cell, options: RunOptions, toolchain: str) -> str | None:
    """The configure-input index key of a cell that another tree's configure may
    answer (configure tier, local backend, cache in use); None for any other."""
    if not (options.configure_only and options.use_cache and cell.backend == "local"):
        return None
    return cellcache.cell_inputs_key(matrix, cell, toolchain)


def _from_cache(key: str, tier: str, build_dir: Path, log_path: Path) -> CellResult | None:
    """The cached result, its artifacts restored into this run's ``build_dir`` and its
    log into this run's logs; None (rebuild) when there is none or it cannot be
    restored whole."""
    stored = cellcache.load(key, tier)
    if stored is None:
        return None
    try:
        cellcache.restore(stored, build_dir, log_path)
    except OSError:
        return None  # evicted meanwhile by another run: build it
    return stored.result


def _build_and_probe(
    matrix: Matrix,
    cell: Cell,
    backend: Backend,
    options: RunOptions,
    result: CellResult,
    log_path: Path,
) -> None:
    build_dir = options.build_root / cell.id
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        outcome = backend.build(
            BuildJob(
                cell=cell,
                build_dir=build_dir,
                log=log,
                deadline=time.monotonic() + options.timeout,
                threads=options.threads_per_job,
                configure_only=options.configure_only,
                from_scratch=not options.use_cache,
                progress=options.progress,
            )
        )
    result.toolchain, result.build_s = outcome.toolchain, outcome.build_s
    findings = scan_log(log_path)
    result.skip_lines, result.warnings = findings.skip_lines, findings.warnings
    if options.configure_only:
        from orchestrator.predict.codemodel import predict_inventory

        result.inventory = predict_inventory(build_dir, matrix.project)
        return
    artifacts = collect_artifacts(build_dir, matrix.project.artifacts)
    if not artifacts:
        raise _NoArtifacts(
            "the build succeeded but no artifact matched "
            f"{', '.join(matrix.project.artifacts)} in {build_dir}"
        )
    # Paths relative to the build directory: a library is the same library whichever
    # directory (or runner) built it, and no result points into another run's files.
    result.artifacts = [a.relative_to(build_dir).as_posix() for a in artifacts]
    # The cell's share of the cores, as for its build: cells probe side by side.
    result.inventory = probe(
        artifacts, engine=options.engine, jobs=options.threads_per_job, root=build_dir
    )


class _NoArtifacts(KernelMatrixError):
    exit_code = 3


# --- the whole run -------------------------------------------------------------------

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
SIGNAL_EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}


class RunInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the run; ``results`` is every cell as left on disk
    (finished ones as they finished, the others not-run)."""

    def __init__(self, message: str, *, exit_code: int, results: list[CellResult]) -> None:
        super().__init__(message, exit_code=exit_code)
        self.results = results


class _Signals:
    """While a run is on (main thread only): SIGINT and SIGTERM (what CI systems send
    on a timeout) both stop it the same way, and which one came is remembered for
    the exit code. ``defer()`` then ignores further ones until the results are safe:
    a second Ctrl-C must not cut the clean-up short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        raise KeyboardInterrupt

    def defer(self) -> None:
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_cells(
    matrix: Matrix,
    cells: Sequence[Cell],
    backend: Backend,
    options: RunOptions,
    *,
    on_start: Callable[[Cell], None] = lambda cell: None,
    on_source: Callable[[Cell, bool], None] = lambda cell, cached: None,
    on_done: Callable[[CellResult], None] = lambda result: None,
    settings: dict[str, Any] | None = None,
) -> list[CellResult]:
    """Run every cell, writing each result as it finishes. ``on_start`` hears a cell
    start (its toolchain may take long to provision), ``on_source`` whether the result
    cache answers it or it is built (:func:`run_cell`), ``on_done`` its result.

    On Ctrl-C or SIGTERM every build is stopped, cells that did not finish are
    written as not-run, and :class:`RunInterrupted` (exit 130 / 143) carries all
    results. Any other exception stops the run the same way, then propagates.
    ``settings`` (the command line's, ``options.run_settings``) are recorded in
    run.json for ``--resume``."""
    options.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        options.out_dir / "run.json",
        {
            "matrix": str(matrix.path),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tool_version": __version__,
            "cells": [c.id for c in cells],
            **({"options": settings} if settings is not None else {}),
        },
    )
    STOP.clear()
    PROCESSES.reopen()
    results: dict[str, CellResult] = {}
    todo: list[Cell] = []
    for cell in cells:
        previous = _previous_result(options, cell)
        if previous is not None:
            results[cell.id] = previous
            on_done(previous)
        else:
            todo.append(cell)

    def work(cell: Cell, source_hash: str) -> CellResult:
        if STOP.is_set():  # a queued cell that a free thread picked up after the stop
            result = CellResult(cell=cell.to_json(), status=NOT_RUN, reason=NOT_STARTED)
        else:
            if cell.runnable:
                on_start(cell)
            result = run_cell(matrix, cell, backend, options, source_hash, on_source)
        result.write(options.out_dir)
        return result

    futures: dict[Future[CellResult], Cell] = {}
    executor = ThreadPoolExecutor(max_workers=max(1, options.jobs))
    with _Signals() as signals:
        try:
            source_hash = source_digest(matrix.project.source)
            futures = {executor.submit(work, c, source_hash): c for c in schedule(todo)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    results[result.id] = result
                    on_done(result)
        except BaseException as exc:
            signals.defer()
            _stop(executor, futures, todo, results, options)
            received = signals.received
            if received is None and isinstance(exc, KeyboardInterrupt):
                received = signal.SIGINT  # raised by someone else's handler
            if received is None:
                raise
            finished = sum(r.status != NOT_RUN for r in results.values())
            raise RunInterrupted(
                f"interrupted by {SIGNAL_NAMES[signal.Signals(received)]}: "
                f"{finished} of {counted(len(cells), 'cell')} finished and kept, "
                f"{len(cells) - finished} not run; results in {options.out_dir}; "
                f"continue with: kernel-matrix run {matrix.path} --resume --out {options.out_dir}",
                exit_code=SIGNAL_EXIT_CODES[signal.Signals(received)],
                results=[results[c.id] for c in cells],
            ) from None
        executor.shutdown(wait=True)
    return [results[c.id] for c in cells]


def schedule(cells: Sequence[Cell]) -> list[Cell]:
    """The order in which cells start: longest expected build first (the LPT rule:
    with J workers, no worker is left running one long cell alone at the end).
    A cell's expected cost is its number of compile targets; ties keep file order.

    >>> from orchestrator.archs import CudaVersion, parse_arch_list
    >>> from orchestrator.planning.matrix import CellSpec
    >>> cells = [Cell(CellSpec(CudaVersion(13, 0), parse_arch_list(a)), "local")
    ...          for a in ("9.0a", "9.0a;10.0f;12.1a", "12.0a", "10.0f;12.0f")]
    >>> [c.id for c in schedule(cells)]
    ['cu13.0-9.0a_10.0f_12.1a', 'cu13.0-10.0f_12.0f', 'cu13.0-9.0a', 'cu13.0-12.0a']
    """
    return sorted(cells, key=lambda cell: -expected_cost(cell))


def expected_cost(cell: Cell) -> int:
    """Compile targets of a runnable cell (0 for a cell that will not build)."""
    return sum(len(arch.targets) for arch in cell.archs) if cell.runnable else 0


def _stop(
    executor: ThreadPoolExecutor,
    futures: dict[Future[CellResult], Cell],
    todo: Sequence[Cell],
    results: dict[str, CellResult],
    options: RunOptions,
) -> None:
    """Stop every build, wait for the cell threads, and write each unfinished cell
    as not-run (a finished one keeps the result it wrote)."""
    STOP.set()
    PROCESSES.kill_all(close=True)
    executor.shutdown(wait=True, cancel_futures=True)
    PROCESSES.reopen()  # every cell thread has ended
    for future, cell in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            results[cell.id] = future.result()
    for cell in todo:
        if cell.id not in results:
            stub = CellResult(cell=cell.to_json(), status=NOT_RUN, reason=NOT_STARTED)
            with contextlib.suppress(KernelMatrixError):  # (a full disk: resume rebuilds it)
                stub.write(options.out_dir)
            results[cell.id] = stub


def _previous_result(options: RunOptions, cell: Cell) -> CellResult | None:
    """With --resume, a finished result of an earlier attempt of this run."""
    if not options.resume:
        return None
    path = options.out_dir / "cells" / f"{cell.id}.json"
    if not path.is_file():
        return None
    try:
        previous = load_cell_result(path)
    except KernelMatrixError:
        return None
    if previous.status in FINAL_STATUSES and _same_cell(previous.cell, cell.to_json()):
        return previous
    return None


def _same_cell(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """The same cell: CUDA, archs, backend, options and environment (a changed
    CMake option in the matrix means the earlier result no longer applies)."""
    keys = ("cuda", "archs", "backend", "cmake_options", "env")
    return all(before.get(key) == now.get(key) for key in keys)


def kept_on_resume(options: RunOptions, cells: Sequence[Cell]) -> list[str]:
    """The cells whose finished result ``--resume`` keeps (none without it)."""
    return [cell.id for cell in cells if _previous_result(options, cell) is not None]
