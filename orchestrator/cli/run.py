"""``kernel-matrix run``: build (or configure), probe and check every cell of a matrix."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.judge.results import CellResult
    from orchestrator.planning.matrix import Matrix
    from orchestrator.planning.plan import Cell

from orchestrator.cli.arguments import (
    Parser,
    add_cell_selection,
    add_engine,
    add_strict,
    add_strict_kernels,
    matrix_of,
    with_error_line,
)
from orchestrator.common.errors import (
    KernelMatrixError,
    UsageError,
)
from orchestrator.common.words import counted
from orchestrator.planning.choices import TIERS
from orchestrator.read.engines import DEFAULT_ENGINE

MAX_TIMEOUT_S = 30 * 24 * 3600  # also the matrix schema's; inf would overflow int() later


def with_docker_overrides(matrix: Matrix, args: argparse.Namespace) -> Matrix:
    """The matrix's docker settings, with --docker-base-image / --docker-toolchain."""
    changes = {}
    if args.docker_base_image:
        changes["base_image"] = args.docker_base_image
    if args.docker_toolchain:
        changes["toolchain"] = args.docker_toolchain
    if not changes:
        return matrix
    return dataclasses.replace(matrix, docker=dataclasses.replace(matrix.docker, **changes))


def cmd_run(args: argparse.Namespace) -> int:
    if args.base_source:
        return _run_base_and_head(args)
    return _run_one(args)


def _run_base_and_head(args: argparse.Namespace) -> int:
    """The base and the head of a pull request, each run as ``run`` runs one (into
    OUT/base and OUT/head, build trees apart), then compared by what each device
    loads: the exit code says what the head lost, not what both lack."""
    from orchestrator.building.sources import resolve_source
    from orchestrator.common.errors import EXIT_INFRA
    from orchestrator.common.fsutil import write_atomic
    from orchestrator.judge.compare import compare, compare_json, load_side
    from orchestrator.planning.matrix import load_matrix
    from orchestrator.reporting.compare_view import compare_markdown, print_compare
    from orchestrator.reporting.console import console, say
    from orchestrator.run.runner import default_build_root, new_run_dir

    if args.resume:
        raise UsageError("--base-source cannot --resume: run the pair again (cells are cached)")
    out = args.out or new_run_dir(Path("reports"))
    # A git ref is looked up in the head's checkout: --source DIR, else the matrix's.
    repository = Path(args.source) if args.source and Path(args.source).is_dir() else None
    if repository is None and not args.source:
        repository = load_matrix(args.matrix).project.source
    base_source = resolve_source(args.base_source, repository=repository, option="--base-source")
    build_root = args.build_dir or default_build_root(args.matrix)
    broken = False  # a side ended in an infrastructure failure (exit 3)
    for side, source in (("base", str(base_source)), ("head", args.source)):
        say(console(), f"kernel-matrix: the {side} ({source or 'the matrix source'})")
        side_args = argparse.Namespace(**{**vars(args), "source": source, "base_source": None})
        side_args.out, side_args.build_dir = out / side, build_root / side
        try:
            broken |= _run_one(side_args) == EXIT_INFRA
        except KernelMatrixError as error:
            if error.exit_code != EXIT_INFRA:
                raise
            say(console(), f"kernel-matrix: {side}: {error}")
            broken = True
    base, head = load_side(out / "base"), load_side(out / "head")
    diff = compare(base.summary, head.summary, strict=args.strict_kernels)
    data = compare_json(diff, base, head)
    write_atomic(out / "compare.json", json.dumps(data, indent=2) + "\n")
    write_atomic(out / "compare.md", compare_markdown(diff, data) + "\n")
    print_compare(diff, data)
    return EXIT_INFRA if broken and not diff.failing else diff.exit_code


def _run_one(args: argparse.Namespace) -> int:
    from orchestrator.cli.options import resume_settings
    from orchestrator.common.fsutil import sole_writer
    from orchestrator.run.runner import latest_run_dir

    with contextlib.ExitStack() as holding:
        recorded = True
        if args.resume:
            if args.out is None:
                args.out = latest_run_dir()
                if args.out is None:
                    raise UsageError("--resume: no earlier run under reports/ (give --out DIR)")
            # (the run being resumed may still be writing: refused before its settings
            # are read or compared)
            holding.enter_context(sole_writer(args.out))
            recorded = resume_settings(args, args.out)
        return _prepared_run(args, holding, recorded=recorded)


def _prepared_run(
    args: argparse.Namespace, holding: contextlib.ExitStack, *, recorded: bool
) -> int:
    from orchestrator.cli.options import check_cuda_homes, check_docker_options
    from orchestrator.common.fsutil import sole_writer
    from orchestrator.planning.plan import plan, used_cuda_versions
    from orchestrator.run.runner import default_build_root, default_jobs, new_run_dir

    args.build_dir = args.build_dir or default_build_root(args.matrix)
    args.engine = args.engine or DEFAULT_ENGINE
    args.no_cache, args.strict = bool(args.no_cache), bool(args.strict)
    matrix = with_docker_overrides(matrix_of(args), args)
    args.tier = args.tier or matrix.tier  # the matrix's own tier, unless --tier says
    backend_name = args.backend or matrix.backend
    check_docker_options(backend_name, args.docker_base_image, args.docker_toolchain)
    if args.tier == "configure" and args.engine != DEFAULT_ENGINE:
        raise UsageError(
            f"--engine {args.engine} has nothing to read: the configure tier builds no library"
        )
    cells = plan(matrix, backend=args.backend, cuda_homes=args.cuda_home, only=args.only)
    notes = check_cuda_homes(args.cuda_home, backend_name, used_cuda_versions(cells))
    runnable = sum(c.runnable for c in cells)
    jobs, threads = default_jobs(runnable or 1)
    if args.timeout is not None and not 0 < args.timeout <= MAX_TIMEOUT_S:
        raise UsageError(
            f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT_S} "
            f"(30 days), not {args.timeout}"
        )
    if args.jobs is not None:
        if args.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
        jobs = args.jobs
        threads = max(1, (os.cpu_count() or 1) // jobs)
    args.jobs, args.timeout = jobs, args.timeout or matrix.timeout
    out_dir = args.out or new_run_dir(Path("reports"))
    if not args.resume:
        holding.enter_context(sole_writer(out_dir))
        _refuse_finished_results(out_dir)
    return _run(args, matrix, cells, out_dir, (jobs, threads), notes, recorded=recorded)


def _refuse_finished_results(out_dir: Path) -> None:
    """A run never overwrites results that another run finished: without --resume,
    a directory that already holds a run is refused (exit 2)."""
    finished = sorted(out_dir.glob("cells/*.json"))
    if finished or (out_dir / "run.json").exists():
        raise UsageError(
            f"--out {out_dir} already holds the results of another run ({len(finished)} "
            "cells); continue that run with --resume, or give a new --out directory"
        )


def _run(
    args: argparse.Namespace,
    matrix: Matrix,
    cells: list[Cell],
    out_dir: Path,
    parallel: tuple[int, int],
    notes: list[str],
    *,
    recorded: bool,
) -> int:
    from orchestrator.building.backends import make_backend
    from orchestrator.cli.options import run_settings
    from orchestrator.judge.results import exit_code
    from orchestrator.reporting.console import console, say
    from orchestrator.reporting.summary import cell_line, print_summary, verdict_line
    from orchestrator.run.runner import RunOptions, kept_on_resume

    jobs, threads = parallel
    runnable = sum(c.runnable for c in cells)
    options = RunOptions(
        out_dir=out_dir,
        build_root=args.build_dir,
        jobs=jobs,
        threads_per_job=threads,
        timeout=args.timeout,
        engine=args.engine,
        resume=args.resume,
        use_cache=not args.no_cache,
        configure_only=args.tier == "configure",
        progress=lambda line: say(console(), f"  {line}"),
    )
    # The backend first: a configuration it rejects is one line, before anything is said.
    backend = make_backend(args.backend or matrix.backend, matrix, cuda_homes=args.cuda_home)
    out = console()
    for note in notes:
        say(out, note)
    if args.resume and not recorded:
        say(
            out,
            f"note: {out_dir}/run.json records no options (an older run): this command's "
            "options are used",
        )
    kept = len(kept_on_resume(options, [c for c in cells if c.runnable]))
    say(
        out,
        f"kernel-matrix: {counted(len(cells), 'cell')} ({runnable - kept} to run, "
        + (f"{kept} finished earlier and kept, " if args.resume else "")
        + f"{len(cells) - runnable} skipped), "
        f"{jobs} in parallel × {counted(threads, 'build thread')}; results in {out_dir}",
    )
    doing = (
        "predicting from CMake configure (configure tier, nothing compiled)"
        if options.configure_only
        else "building"
    )
    from orchestrator.reporting.progress_view import RunProgress
    from orchestrator.reporting.writers import write_reports
    from orchestrator.run.runner import RunInterrupted, run_cells

    watching = RunProgress(out, options.out_dir / "logs")

    def on_source(cell: Cell, cached: bool) -> None:
        if cached:
            say(out, f"▶ {cell.id}: from the result cache (not rebuilt) …")
        else:
            say(out, f"▶ {cell.id}: {doing} with CUDA {cell.cuda} …")

    def on_done(result: CellResult) -> None:
        watching.finished(result.id)
        say(out, cell_line(result))  # a log line, never wrapped

    try:
        with watching:
            results = run_cells(
                matrix,
                cells,
                backend,
                options,
                on_start=lambda cell: watching.started(cell.id),
                on_source=on_source,
                on_done=on_done,
                settings=run_settings(args),
            )
    except RunInterrupted as stopped:
        # The reports show what finished and what did not; the exit code stays 130/143.
        with contextlib.suppress(KernelMatrixError, OSError):
            write_reports(stopped.results, out_dir, strict=args.strict)
        raise
    write_reports(results, out_dir, strict=args.strict)
    print_summary(results)
    code = exit_code(results, strict=args.strict)
    say(out, verdict_line(results, code))
    return with_error_line(code, results, strict=args.strict)


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser("run", help="build, probe and check every cell of a matrix")
    p.add_argument("matrix", type=Path, help="matrix file, e.g. matrix.yaml")
    add_cell_selection(p)
    p.add_argument("--jobs", "-j", type=int, help="cells built in parallel (default: by cores)")
    p.add_argument("--out", type=Path, help="results directory (default: reports/<run-id>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (or the latest one): its finished cells are kept and "
        "the options it was started with are reused",
    )
    p.add_argument(
        "--build-dir",
        type=Path,
        help="folder of this run's cell build trees, DIR/<cell-id> "
        "(default: build/<matrix file's stem>)",
    )
    p.add_argument("--timeout", type=float, help="per-cell timeout in seconds (default: matrix's)")
    add_engine(p, default=None)
    p.add_argument(
        "--no-cache",
        action="store_true",
        default=None,
        help="build every cell from an empty build folder; neither use nor write the result "
        "cache and the configure-input index",
    )
    p.add_argument(
        "--docker-base-image",
        metavar="IMAGE",
        help="docker backend: base image instead of the matrix's ({cuda} = full CUDA tag)",
    )
    p.add_argument(
        "--docker-toolchain",
        choices=("image", "mount"),
        help="docker backend: CUDA from the image, or the host's PyPI toolchain mounted",
    )
    p.add_argument(
        "--tier",
        choices=TIERS,
        help="configure: predict from CMake configure alone (seconds); default: the "
        "matrix's `tier`, else build",
    )
    p.add_argument(
        "--base-source",
        metavar="DIR|SDIST|NAME==VERSION|GIT-REF",
        help="also run the pull request's base (a source as for --source, or a git ref of the "
        "head's checkout such as origin/main) and compare: exit 1 only on what the head lost "
        "(reports in OUT/base, OUT/head, OUT/compare.json, OUT/compare.md)",
    )
    add_strict_kernels(p)
    add_strict(p)
    p.set_defaults(handler=cmd_run)
