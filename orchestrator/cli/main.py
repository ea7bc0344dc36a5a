"""The ``kernel-matrix`` command line. Each pipeline stage is a verb, so that a CI
system can run stages on different machines (plan -> cells -> report)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from orchestrator.archs import ComputeCapability
    from orchestrator.judge.results import CellResult
    from orchestrator.planning.plan import Cell
    from orchestrator.probe import FamilyPresence

from orchestrator import __version__
from orchestrator.cli.options import check_cuobjdump_option, check_plan_format, check_probe_jobs
from orchestrator.common.errors import (
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CellErrors,
    KernelMatrixError,
    UsageError,
)
from orchestrator.planning.matrix import BACKENDS, Matrix, load_matrix
from orchestrator.planning.plan import github_matrix, plan, plan_json, used_cuda_versions
from orchestrator.probe import DEFAULT_ENGINE, ENGINES
from orchestrator.reporting.console import console

Handler = Callable[[argparse.Namespace], int]
MAX_TIMEOUT_S = 30 * 24 * 3600  # also the matrix schema's; inf would overflow int() later


class _Parser(argparse.ArgumentParser):
    """argparse that raises (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self._verb_prefix() + message)

    def _verb_prefix(self) -> str:
        # main() prints "kernel-matrix: error: "; add only the verb ("run: "), if any.
        verb = self.prog.removeprefix("kernel-matrix").strip()
        return f"{verb}: " if verb else ""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # A mistyped verb or choice: say which one was meant.
        choices = action.choices
        if choices is not None and isinstance(value, str) and value not in choices:
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            if close:
                name = action.metavar if isinstance(action.metavar, str) else action.dest
                name = "verb" if name == "VERB" else (action.option_strings or [name])[0]
                raise UsageError(
                    f"{self._verb_prefix()}{name}: invalid choice '{value}' "
                    f"(did you mean '{close[0]}'?)"
                )
        super()._check_value(action, value)


def _add_cell_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, help="override the matrix's backend")
    parser.add_argument(
        "--cuda-home",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a system CUDA toolkit to use for its version (repeatable); needed for 12.x locally",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="ID", help="only this cell (repeatable)"
    )
    parser.add_argument(
        "--source",
        metavar="DIR|SDIST|NAME==VERSION",
        help="the source tree instead of the matrix's: a directory (a git checkout), an sdist "
        "(.tar.gz), or a release on the package index, e.g. vllm==0.33.0 (downloaded, cached)",
    )


def _load(args: argparse.Namespace) -> Matrix:
    """The matrix of ``args``, with ``--source`` resolved (an sdist is unpacked, a
    release downloaded: once, cached)."""
    source = None
    if args.source:
        from orchestrator.build.sources import resolve_source

        source = resolve_source(args.source)
    return load_matrix(args.matrix, source=source)


def _add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="a cell skipped for lack of a toolchain is an infrastructure failure (exit 3)",
    )


def _add_engine(parser: argparse.ArgumentParser, default: str | None = DEFAULT_ENGINE) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=default,
        help=f"probe engine (default: {DEFAULT_ENGINE})",
    )


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.cli.options import check_cuda_homes

    check_plan_format(args.format, args.cuda_home)
    matrix = _load(args)
    cells = plan(matrix, backend=args.backend, cuda_homes=args.cuda_home, only=args.only)
    notes = check_cuda_homes(
        args.cuda_home, args.backend or matrix.backend, used_cuda_versions(cells)
    )
    for note in notes:
        print(f"kernel-matrix: {note}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(plan_json(matrix, cells), indent=2))
    elif args.format == "github":
        print(json.dumps(github_matrix(cells), separators=(",", ":")))
    elif args.format == "buildkite":
        from orchestrator.planning.ci import buildkite_pipeline

        print(
            buildkite_pipeline(matrix, cells, backend=args.backend, cuda_homes=args.cuda_home),
            end="",
        )
    else:
        from orchestrator.reporting.plan_view import print_plan

        print_plan(console(), matrix, cells)
    return EXIT_OK


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
    from orchestrator.run.runner import default_jobs, new_run_dir

    args.build_dir = args.build_dir or Path("build")
    args.tier, args.engine = args.tier or "build", args.engine or DEFAULT_ENGINE
    args.no_cache, args.strict = bool(args.no_cache), bool(args.strict)
    matrix = with_docker_overrides(_load(args), args)
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
    from orchestrator.build.backends import make_backend
    from orchestrator.cli.options import run_settings
    from orchestrator.judge.results import exit_code
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
        progress=lambda line: console().print(f"  {line}", markup=False, highlight=False),
    )
    out = console()
    for note in notes:
        out.print(note, markup=False, soft_wrap=True)
    if args.resume and not recorded:
        out.print(
            f"note: {out_dir}/run.json records no options (an older run): this command's "
            "options are used",
            markup=False,
            soft_wrap=True,
        )
    kept = len(kept_on_resume(options, [c for c in cells if c.runnable]))
    out.print(
        f"kernel-matrix: {len(cells)} cells ({runnable - kept} to run, "
        + (f"{kept} finished earlier and kept, " if args.resume else "")
        + f"{len(cells) - runnable} skipped), "
        f"{jobs} in parallel × {threads} build threads; results in {out_dir}"
    )
    backend = make_backend(args.backend or matrix.backend, matrix, cuda_homes=args.cuda_home)
    doing = (
        "predicting from CMake configure (configure tier, nothing compiled)"
        if options.configure_only
        else "building"
    )
    from orchestrator.reporting.progress_view import RunProgress
    from orchestrator.reporting.writers import write_reports
    from orchestrator.run.runner import RunInterrupted, run_cells

    watching = RunProgress(out, options.out_dir / "logs")

    def on_start(cell: Cell) -> None:
        out.print(f"▶ {cell.id}: {doing} with CUDA {cell.cuda} …")
        watching.started(cell.id)

    def on_done(result: CellResult) -> None:
        watching.finished(result.id)
        out.print(cell_line(result), markup=False, soft_wrap=True)  # a log line, never wrapped

    try:
        with watching:
            results = run_cells(
                matrix,
                cells,
                backend,
                options,
                on_start=on_start,
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
    out.print(verdict_line(results, code), markup=False, soft_wrap=True)
    return _with_error_line(code, results, strict=args.strict)


def _with_error_line(code: int, results: Sequence[CellResult], *, strict: bool) -> int:
    """Exit 3 from cell results comes with the one stderr error line every fatal error
    has (``kernel-matrix: error: ...``), naming the first broken cell and its cause."""
    if code == EXIT_INFRA:
        from orchestrator.judge.results import infra_summary

        raise CellErrors(infra_summary(results, strict=strict))
    return code


def _nightly_dir() -> Path:
    from datetime import datetime, timezone

    return Path("reports") / datetime.now(timezone.utc).strftime("%Y-%m-%d")


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.common.fsutil import sole_writer
    from orchestrator.judge.baseline import load_baseline
    from orchestrator.judge.results import load_results
    from orchestrator.reporting.summary import print_diff, print_summary, verdict_line
    from orchestrator.reporting.writers import write_all
    from orchestrator.run.runner import latest_run_dir

    if not args.results:
        latest = latest_run_dir()
        if latest is None:
            raise UsageError("report: no RESULTS given and no run under reports/")
        args.results, args.out = [latest], args.out or latest
        console().print(f"kernel-matrix: reporting the latest run, {latest}", markup=False)
    results = load_results(args.results)
    baseline = load_baseline(args.baseline) if args.baseline else None
    out_dir = args.out or _nightly_dir()
    with sole_writer(out_dir):
        reports = write_all(
            results,
            out_dir,
            baseline=baseline,
            history_file=args.history,
            strict=args.strict,
            title=args.title,
        )
    out = console()
    print_summary(results, title=args.title)
    if reports.diff is not None:
        print_diff(reports.diff, against=str(args.baseline))
    if reports.previous is not None:
        print_diff(reports.previous, against=f"the previous run {reports.previous_run}")
    for note in reports.notes:
        out.print(note, markup=False, soft_wrap=True)
    inside = [p.name for p in reports.paths if p.parent.resolve() == out_dir.resolve()]
    elsewhere = [str(p) for p in reports.paths if p.parent.resolve() != out_dir.resolve()]
    out.print(f"reports in {out_dir}: {', '.join(inside)}", markup=False, soft_wrap=True)
    for path in elsewhere:
        out.print(f"updated {path}", markup=False, soft_wrap=True)
    out.print(verdict_line(results, reports.exit_code, reports.diff), markup=False, soft_wrap=True)
    return _with_error_line(reports.exit_code, results, strict=args.strict)


def cmd_baseline_save(args: argparse.Namespace) -> int:
    from orchestrator.judge.baseline import save_baseline, summarize
    from orchestrator.judge.results import load_results

    results = load_results(args.results)
    baseline = summarize(results)
    save_baseline(baseline, args.out)
    out = console()
    # Skipped cells are expected to have no inventory; crashed or unrun ones are not.
    unchecked = [c.id for c in baseline.cells.values() if c.status in ("error", "not-run")]
    if unchecked:
        out.print(
            f"warning: {len(unchecked)} cells crashed or did not run, so they constrain "
            f"nothing in this baseline: {', '.join(unchecked[:10])}"
            + (" …" if len(unchecked) > 10 else ""),
            markup=False,
        )
    size = args.out.stat().st_size
    out.print(
        f"kernel-matrix: baseline {args.out}: {len(baseline.cells)} cells, "
        f"{baseline.kernel_count} kernels ({size / 1024:.1f} KiB)",
        markup=False,
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from orchestrator.judge.baseline import combined_exit_code, diff_results, load_baseline
    from orchestrator.judge.results import exit_code, load_results
    from orchestrator.reporting.summary import print_diff, verdict_line

    baseline = load_baseline(args.baseline)
    results = load_results(args.results)
    diff = diff_results(baseline, results)
    print_diff(diff, against=str(args.baseline))
    code = combined_exit_code(exit_code(results, strict=args.strict), diff)
    console().print(verdict_line(results, code, diff), markup=False, soft_wrap=True)
    return _with_error_line(code, results, strict=args.strict)


def _add_results_args(parser: argparse.ArgumentParser, *, latest: bool = False) -> None:
    """RESULTS...; with ``latest``, none means the latest run under reports/."""
    parser.add_argument(
        "results",
        nargs="*" if latest else "+",
        type=Path,
        metavar="RESULTS",
        help="cell result files, run directories (cells/*.json inside) or results.json files; "
        "a later one wins for the same cell" + ("; default: the latest run" if latest else ""),
    )


def cmd_probe(args: argparse.Namespace) -> int:
    """Inventory of shared objects/wheels/directories: rich summary or --json."""
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.probe import family_presence, inventory_json, probe

    check_cuobjdump_option(args.engine, args.cuobjdump)
    check_probe_jobs(args.engine, args.jobs)
    rules = load_families_or_matrix(args.families) if args.families else ()
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    inventory = probe(args.paths, engine=args.engine, cuobjdump=args.cuobjdump, jobs=args.jobs)
    presence = family_presence(inventory, rules)
    if args.json:
        print(json.dumps(inventory_json(inventory, presence), indent=2))
        return EXIT_OK
    out = console()
    for library in inventory.libraries:
        if not library.has_device_code:
            out.print(f"[bold]{library.path}[/bold]: no device code")
            continue
        table = Table(title=library.path, title_justify="left")
        for column in ("code object", "kernels", "hollow", "sources"):
            table.add_column(column, overflow="fold")
        for code in library.code_objects():
            hollow = sum(k.hollow for k in code.kernels)
            table.add_row(
                code.arch.name,
                str(len(code.kernels)),
                str(hollow) if hollow else "",
                ", ".join(code.sources[:6]) + (" ..." if len(code.sources) > 6 else ""),
            )
        out.print(table)
    if presence:
        from orchestrator.reporting.tables import FamilyRow, family_device_view

        meant = {rule.name: rule.devices for rule in rules}
        devices = sorted({device for rule in rules for device in rule.devices})
        rows = [
            FamilyRow(
                name,
                "(rule does not fit: see warning)"
                if found.mismatch
                else " ".join(found.cubins + found.ptx),
                tuple(_probe_status(d, found, meant.get(name, ())) for d in devices),
            )
            for name, found in presence.items()
        ]
        family_device_view(
            out,
            "kernel families × devices (cubin or PTX the driver loads)",
            rows,
            [str(d) for d in devices],
        )
        for name, found in presence.items():
            if found.mismatch:
                out.print(f"warning: {name} not matched: {found.mismatch}", markup=False)
    return EXIT_OK


def _probe_status(device: ComputeCapability, found: FamilyPresence, meant: Sequence[object]) -> str:
    """The check vocabulary for what probe found: present (present-jit: only through
    PTX JIT), hollow, missing (meant for the device, nothing loads there), not
    applicable, or not matched (the family's rule does not fit)."""
    if found.mismatch:
        return "not-matched"
    if device in found.devices:
        return "present-jit" if device in found.jit_devices else "present"
    if device in found.hollow_devices:
        return "hollow"
    return "missing" if device in meant else "not-applicable"


def cmd_verify_on_device(args: argparse.Namespace) -> int:
    from orchestrator.judge.verify import VERIFY_SCHEMA_VERSION, device_capability, verify
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.probe import probe
    from orchestrator.reporting.console import mark

    device = device_capability()
    families = load_families_or_matrix(args.families)
    inventory = probe(args.paths, engine=args.engine)
    libraries = [Path(lib.path) for lib in inventory.libraries if lib.has_device_code]
    checks = verify(inventory, families, libraries, device)
    disagreements = [c for c in checks if not c.agrees]
    if args.json:
        document = {
            "schema_version": VERIFY_SCHEMA_VERSION,
            "device": str(device),
            "checks": [c.to_json() for c in checks],
        }
        print(json.dumps(document, indent=2))
    else:
        table = Table(title=f"probe verdict vs GPU {device}: {', '.join(map(str, args.paths))}")
        for column in ("family", "predicted", "loads", "observed", "ran", "what happened", ""):
            table.add_column(column, overflow="fold")
        for c in checks:
            table.add_row(
                c.family, c.predicted, c.predicted_image or "-", c.observed,
                c.observed_image or "-", c.observed_detail, "ok" if c.agrees else "DISAGREE",
            )  # fmt: skip
        console().print(table)
        word = "agree" if not disagreements else f"{len(disagreements)} DISAGREE"
        console().print(
            f"{mark('passed' if not disagreements else 'failed')} verify-on-device: "
            f"{len(checks)} families on {device}, probe and hardware {word}"
        )
    return 1 if disagreements else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Family × device verdicts for built wheels/libraries/dirs: table or --json."""
    from orchestrator.archs import CudaVersion, check_cuda_version, parse_device_list
    from orchestrator.build.recipe import scan_log
    from orchestrator.common.fsutil import not_regular
    from orchestrator.judge.check import check_paths, print_check
    from orchestrator.planning.matrix import load_families_or_matrix

    check_cuobjdump_option(args.engine, args.cuobjdump)
    check_probe_jobs(args.engine, args.jobs)
    rules = load_families_or_matrix(args.families)
    devices = parse_device_list(args.devices) if args.devices is not None else None
    cuda = CudaVersion.parse(args.cuda) if args.cuda else None
    if cuda is not None:
        check_cuda_version(cuda)
    skip_lines: list[str] = []
    if args.log is not None:
        if not args.log.exists():
            raise UsageError(f"--log {args.log}: no such file")
        why = not_regular(args.log.stat().st_mode)
        if why is not None:  # a FIFO would block the reader
            raise UsageError(f"--log {args.log}: {why}")
        skip_lines = scan_log(args.log).skip_lines
    result = check_paths(
        args.paths,
        rules,
        devices,
        engine=args.engine,
        cuobjdump=args.cuobjdump,
        cuda=cuda,
        skip_lines=skip_lines,
        cache=not args.no_cache,
        jobs=args.jobs or 1,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_check(result)
    return result.exit_code


def cmd_docker_base_image(args: argparse.Namespace) -> int:
    from orchestrator.build.backends.container import Engine
    from orchestrator.build.backends.offline_base import ensure_offline_base, host_recipe

    packages = tuple(p for p in args.include.split(",") if p)
    if not packages:
        raise UsageError("--include: name at least one Debian package (e.g. g++)")
    recipe = host_recipe(suite=args.suite, mirror=args.mirror, packages=packages)

    def say(line: str) -> None:
        print(f"kernel-matrix: {line}", file=sys.stderr, flush=True)

    print(ensure_offline_base(Engine.connect(), recipe, say=say))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kernel-matrix",
        description="Build CUDA extensions across toolkits and arch lists, and prove every "
        "expected kernel family was compiled for every requested GPU.",
    )
    parser.add_argument("--version", action="version", version=f"kernel-matrix {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True

    p = verbs.add_parser("plan", help="expand a matrix into cells (table, json, github, buildkite)")
    p.add_argument("matrix", type=Path, help="matrix file, e.g. matrix.yaml")
    p.add_argument("--format", choices=("table", "json", "github", "buildkite"), default="table")
    _add_cell_selection(p)
    p.set_defaults(handler=cmd_plan)

    p = verbs.add_parser("run", help="build, probe and check every cell of a matrix")
    p.add_argument("matrix", type=Path, help="matrix file, e.g. matrix.yaml")
    _add_cell_selection(p)
    p.add_argument("--jobs", "-j", type=int, help="cells built in parallel (default: by cores)")
    p.add_argument("--out", type=Path, help="results directory (default: reports/<run-id>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (or the latest one): its finished cells are kept and "
        "the options it was started with are reused",
    )
    p.add_argument("--build-dir", type=Path, help="root of per-cell build trees (default: build)")
    p.add_argument("--timeout", type=float, help="per-cell timeout in seconds (default: matrix's)")
    _add_engine(p, default=None)
    p.add_argument(
        "--no-cache",
        action="store_true",
        default=None,
        help="rebuild even when a cached result matches",
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
        choices=("build", "configure"),
        help="configure: predict from CMake configure alone (seconds); default: build",
    )
    _add_strict(p)
    p.set_defaults(handler=cmd_run)

    p = verbs.add_parser(
        "report", help="write junit.xml, summary.md, results.json and index.html for results"
    )
    _add_results_args(p, latest=True)
    p.add_argument("--out", type=Path, help="report directory (default: reports/<UTC date>)")
    p.add_argument(
        "--baseline", type=Path, help="compare with this baseline (exit 1 on regression)"
    )
    p.add_argument(
        "--history",
        type=Path,
        help="append this run to a history file (e.g. reports/history.json) and compare "
        "with the previous run in it",
    )
    p.add_argument("--title", default="kernel-matrix", help="title of the reports")
    _add_strict(p)
    p.set_defaults(handler=cmd_report)

    p = verbs.add_parser("baseline", help="save a baseline (a small summary of a good run)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    q = actions.add_parser("save", help="summarize results into a baseline file")
    _add_results_args(q)
    q.add_argument("--out", type=Path, required=True, help="baseline file to write")
    q.set_defaults(handler=cmd_baseline_save)

    p = verbs.add_parser("diff", help="compare results with a baseline (exit 1 on regression)")
    p.add_argument("baseline", type=Path, help="baseline file (kernel-matrix baseline save)")
    _add_results_args(p)
    _add_strict(p)
    p.set_defaults(handler=cmd_diff)
    p = verbs.add_parser("probe", help="list the cubins, PTX and kernels really inside libraries")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".so, wheel or directory")
    p.add_argument("--families", type=Path, metavar="FILE", help="families file or matrix file")
    _add_engine(p)
    p.add_argument("--cuobjdump", type=Path, metavar="PATH", help="cuobjdump to use")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        help="processes that read a large library (native engine; default: all CPUs)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable inventory")
    p.set_defaults(handler=cmd_probe)

    p = verbs.add_parser(
        "verify-on-device",
        help="launch each family's kernels on the local GPU and compare with the probe's verdict",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="LIB", help="built libraries (.so)")
    p.add_argument("--families", type=Path, required=True, help="families file (with runners)")
    _add_engine(p)
    p.add_argument("--json", action="store_true", help="machine-readable checks")
    p.set_defaults(handler=cmd_verify_on_device)

    p = verbs.add_parser(
        "check",
        help="verdict per kernel family × device for a built wheel, .so or directory "
        "(exit 1 if one is missing or hollow)",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="wheel, .so or directory")
    p.add_argument(
        "--families", type=Path, metavar="FILE", required=True, help="families or matrix file"
    )
    p.add_argument(
        "--devices",
        metavar="LIST",
        help="compute capabilities to judge, e.g. 9.0,10.3,12.1 (default: every device "
        "some family lists)",
    )
    _add_engine(p)
    p.add_argument("--cuobjdump", type=Path, metavar="PATH", help="cuobjdump to use")
    p.add_argument(
        "--cuda",
        metavar="X.Y",
        help="CUDA version it was built with: families needing a newer one are not applicable",
    )
    p.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="its build log: a missing family gets the 'Not building ...' line that explains it",
    )
    p.add_argument("--json", action="store_true", help="machine-readable verdicts")
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        help="processes that read a large library (native engine; default 1: the lazy read "
        "is light, and on 2 cores a second process saved 15%% of the wall time for 34%% "
        "more CPU time, BENCHMARKS.md)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="read every library afresh, neither using nor writing the check cache "
        "(what a check read is kept by content under ~/.cache/kernel-matrix/check)",
    )
    p.set_defaults(handler=cmd_check)

    p = verbs.add_parser("docker", help="images of the docker backend")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    q = actions.add_parser(
        "base-image",
        help="make (once per machine; needs root, for debootstrap) a Debian/Ubuntu base "
        "image without any image registry, and print its tag (no root needed once made)",
        description="Print the tag of a minimal base image for docker.toolchain 'mount', "
        "made once with debootstrap from the package mirror of this host's apt sources. "
        'Making it needs root: sudo "$(command -v kernel-matrix)" docker base-image.',
    )
    q.add_argument(
        "--suite", help="Debian/Ubuntu release (default: this host's, from /etc/os-release)"
    )
    q.add_argument(
        "--mirror",
        metavar="URI",
        help="package archive (default: the apt source of this host that lists the suite)",
    )
    q.add_argument(
        "--include",
        default="g++",
        metavar="PKG,...",
        help="packages to install in it (default: %(default)s)",
    )
    q.set_defaults(handler=cmd_docker_base_image)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args)
    except KernelMatrixError as exc:
        print(f"kernel-matrix: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Outside a run (which turns it into errors.Interrupted): nothing was in flight.
        print("kernel-matrix: error: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:
        # The machine, not the input and not a bug: a disk that is full, a directory
        # that cannot be created or read. One line, like every other fatal error.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kernel-matrix: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_INFRA
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
