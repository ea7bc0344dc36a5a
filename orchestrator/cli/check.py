"""``kernel-matrix check``: the verdict of every family on every requested device for a wheel, library or directory that is already built."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.cli.arguments import (
    Parser,
    add_engine,
)
from orchestrator.cli.options import check_cuobjdump_option, check_probe_jobs
from orchestrator.common.errors import (
    UsageError,
)


def cmd_check(args: argparse.Namespace) -> int:
    """Family × device verdicts for built wheels/libraries/dirs: table or --json."""
    from orchestrator.archs import CudaVersion, check_cuda_version, parse_device_list
    from orchestrator.building.recipe import scan_log
    from orchestrator.common.fsutil import not_regular
    from orchestrator.judge.check import check_paths
    from orchestrator.planning.matrix import load_families_or_matrix
    from orchestrator.reporting.check_view import print_check

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


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
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
        "(what a check read is kept by content under ~/.cache/kernel-matrix/check)",
    )
    p.set_defaults(handler=cmd_check)
