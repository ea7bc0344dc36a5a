"""``kernel-matrix check``: the verdict of every family on every requested device for a wheel, library or directory that is already built."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from orchestrator.cli.answers import Recording
from orchestrator.cli.arguments import (
    Parser,
    add_engine,
)
from orchestrator.cli.options import check_cuobjdump_option, check_probe_jobs
from orchestrator.common import jsontext
from orchestrator.common.errors import (
    InfraError,
    UsageError,
)


def cmd_check(args: argparse.Namespace) -> int:
    """Family × device verdicts for built wheels/libraries/dirs: table or --json."""
    from orchestrator.archs import (
        ComputeCapability,
        CudaVersion,
        check_cuda_version,
        parse_device_list,
    )
    from orchestrator.common.fsutil import not_regular
    from orchestrator.common.heap import keep_freed_memory
    from orchestrator.common.yamlfile import documents_read
    from orchestrator.judge.check import SECONDS_DIGITS, check_paths
    from orchestrator.planning.matrix import load_families_or_matrix

    check_cuobjdump_option(args.engine, args.cuobjdump)
    check_probe_jobs(args.engine, args.jobs)
    if args.launch_stubs and not args.confirm_with_driver:
        raise UsageError("--launch-stubs needs --confirm-with-driver")
    keep_freed_memory()
    installed = None
    if args.installed is not None:
        if args.paths:
            raise UsageError("give either PATH... or --installed, not both")
        from orchestrator.read.installed import find_installed

        installed = find_installed(args.installed, args.python)
    elif not args.paths:
        raise UsageError("nothing to check: give a wheel, .so or directory, or --installed DIST")
    elif args.python is not None:
        raise UsageError("--python goes with --installed")
    recording = _recording(args)
    first_document = len(documents_read())
    families = _families_file(args.families, installed)
    rules = load_families_or_matrix(families)
    gpus = None
    devices: tuple[ComputeCapability, ...] | None
    if args.devices == "local" or (args.confirm_with_driver and args.devices is None):
        from orchestrator.judge.driver import distinct_devices, local_devices

        try:
            gpus = distinct_devices(local_devices())
        except InfraError as e:
            raise InfraError(f"--devices local: {e}; name the devices instead (9.0,12.1)") from None
        devices = tuple(gpu.capability for gpu in gpus)
    elif args.confirm_with_driver:
        raise UsageError("--confirm-with-driver asks the GPUs of this machine: use --devices local")
    else:
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
        from orchestrator.building.buildlog import scan_log

        skip_lines = scan_log(args.log).skip_lines
    paths = list(installed.libraries) if installed else list(args.paths)
    if recording is not None:  # stamped before they are read
        recording.add_inputs([*paths, *documents_read()[first_document:]])
        if args.log is not None:
            recording.add_inputs([args.log])
        if args.families is not None and families != args.families:
            recording.add_absent(args.families)
    # The cuobjdump engine takes minutes per large library: its progress on stderr
    # (a live line on a terminal; in a CI log, a line at most every 30 s).
    with _engine_progress(args.engine):
        result = check_paths(
            paths,
            rules,
            devices,
            engine=args.engine,
            cuobjdump=args.cuobjdump,
            cuda=cuda,
            skip_lines=skip_lines,
            cache=not args.no_cache,
            jobs=args.jobs or 1,
        )
    confirmation = None
    if args.confirm_with_driver and gpus:
        from orchestrator.judge.confirm import confirm, inventory_to_confirm

        inventory = inventory_to_confirm(paths, rules, devices or ())
        confirmation = confirm(inventory, rules, gpus, launch_stubs=args.launch_stubs)
    from orchestrator.reporting.device_view import DeviceReport

    report = DeviceReport.make(result, installed, families, gpus, confirmation)
    with recording.printing() if recording is not None else nullcontext():
        if args.json:
            print(jsontext.dumps(report.to_json()))
            elapsed = ('"seconds": {!r}', SECONDS_DIGITS)  # (the C encoder's float is repr's)
        else:
            from orchestrator.reporting.check_view import ELAPSED, print_check

            print_check(result, report)
            elapsed = (ELAPSED, 1)
    if recording is not None:
        recording.keep(report.exit_code, result.seconds, *elapsed)
    return report.exit_code


def _recording(args: argparse.Namespace) -> Recording | None:
    """A check whose answer depends on its command line and its files alone is kept
    (``cli.answers``), to be printed again."""
    if (
        args.no_cache
        or args.engine != "native"
        or args.installed is not None
        or args.devices == "local"
        or args.confirm_with_driver
        or not all(path.is_file() for path in args.paths)
        or getattr(args, "argv", None) is None
    ):
        return None
    return Recording(args.argv)


def _engine_progress(engine: str) -> AbstractContextManager[object]:
    if engine != "cuobjdump":
        return nullcontext()
    from orchestrator.reporting.console import console
    from orchestrator.reporting.progress_view import RunProgress

    return RunProgress(console(stderr=True), Path())


def _families_file(value: Path | None, installed: Any) -> Path:
    """``--families``: a file, a shipped profile's name, or (with --installed) the
    shipped profile of that distribution."""
    from orchestrator.planning.profiles import resolve_families, shipped_profiles

    if value is not None:
        return resolve_families(value)
    if installed is not None:
        name = installed.name.lower().replace("_", "-")
        if name in shipped_profiles():
            return resolve_families(Path(name))
        raise UsageError(
            f"no shipped profile for {installed.name}: pass --families FILE "
            f"(shipped: {', '.join(shipped_profiles())})"
        )
    raise UsageError("--families FILE (or a shipped profile's name) is required")


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser(
        "check",
        help="verdict per kernel family × device for a built wheel, .so or directory "
        "(exit 1 if one is missing or hollow)",
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="wheel, .so or directory")
    p.add_argument(
        "--installed",
        metavar="DIST",
        help="check an installed distribution (e.g. vllm, sgl-kernel): its shared objects "
        "are found through its RECORD",
    )
    p.add_argument(
        "--python",
        metavar="EXE",
        help="with --installed: the interpreter whose environment has it (default: this "
        "tool's, then python3 on PATH)",
    )
    p.add_argument(
        "--families",
        type=Path,
        metavar="FILE",
        help="families or matrix file, or a shipped profile's name (vllm, sgl-kernel); with "
        "--installed the distribution's shipped profile is the default",
    )
    p.add_argument(
        "--devices",
        metavar="LIST",
        help="compute capabilities to judge, e.g. 9.0,10.3,12.1, or 'local': the GPUs of this "
        "machine, asked of the driver (default: every device some family lists)",
    )
    p.add_argument(
        "--confirm-with-driver",
        action="store_true",
        help="have the CUDA driver load every family kernel on the local GPUs and confirm "
        "each verdict (the cubin it loads, PTX it JIT-compiles, or no code); nothing is "
        "launched; a disagreement exits 1",
    )
    p.add_argument(
        "--launch-stubs",
        action="store_true",
        help="with --confirm-with-driver: launch (one thread, own process) the kernels judged "
        "arch-guard stubs, and report what they print and the error they end with",
    )
    add_engine(p)
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
        "(what a check read is kept by content under ~/.cache/kernel-matrix/check, "
        "its printed answer under .../answers)",
    )
    p.set_defaults(handler=cmd_check)
