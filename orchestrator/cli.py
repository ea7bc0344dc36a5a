"""The ``kernel-matrix`` command line. Each pipeline stage is a verb, so that a CI
system can run stages on different machines (plan -> cells -> report)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from orchestrator import __version__
from orchestrator.errors import EXIT_OK, EXIT_USAGE, KernelMatrixError, UsageError
from orchestrator.matrix import BACKENDS, load_matrix
from orchestrator.plan import github_matrix, plan
from orchestrator.reporting.console import console

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


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


def cmd_plan(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.matrix)
    cells = plan(matrix, backend=args.backend, cuda_homes=args.cuda_home, only=args.only)
    if args.format == "json":
        print(
            json.dumps(
                {"matrix": str(matrix.path), "cells": [c.to_json() for c in cells]}, indent=2
            )
        )
    elif args.format == "github":
        print(json.dumps(github_matrix(cells), separators=(",", ":")))
    else:
        table = Table(title=f"{matrix.path}: {len(cells)} cells")
        for column in ("cell", "CUDA", "archs", "status", "reason"):
            table.add_column(column, overflow="fold")
        for cell in cells:
            info = cell.to_json()
            table.add_row(cell.id, info["cuda"], info["archs"], cell.status, cell.reason or "")
        console().print(table)
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

    p = verbs.add_parser("plan", help="expand a matrix into cells (table, json, github)")
    p.add_argument("matrix", type=Path, help="matrix file, e.g. matrix.yaml")
    p.add_argument("--format", choices=("table", "json", "github"), default="table")
    _add_cell_selection(p)
    p.set_defaults(handler=cmd_plan)
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
        print("kernel-matrix: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
