"""``kernel-matrix plan``: expand a matrix into cells (a table, JSON, or a CI engine's matrix)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestrator.cli.arguments import (
    Parser,
    add_cell_selection,
    matrix_of,
)
from orchestrator.common.errors import (
    EXIT_OK,
)


def cmd_plan(args: argparse.Namespace) -> int:
    from orchestrator.cli.options import check_cuda_homes, check_plan_format
    from orchestrator.planning.plan import github_matrix, plan, plan_json, used_cuda_versions
    from orchestrator.reporting.console import console

    check_plan_format(args.format, args.cuda_home)
    matrix = matrix_of(args)
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


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser("plan", help="expand a matrix into cells (table, json, github, buildkite)")
    p.add_argument("matrix", type=Path, help="matrix file, e.g. matrix.yaml")
    p.add_argument("--format", choices=("table", "json", "github", "buildkite"), default="table")
    add_cell_selection(p)
    p.set_defaults(handler=cmd_plan)
