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


def cmd_probe(args: argparse.Namespace) -> int:
    """Inventory of shared objects/wheels/directories: rich summary or --json."""
    from orchestrator.archs import DEVICES
    from orchestrator.matrix import load_families_or_matrix
    from orchestrator.probe import family_presence, inventory_json, probe

    rules = load_families_or_matrix(args.families) if args.families else ()
    inventory = probe(args.paths, engine=args.engine, cuobjdump=args.cuobjdump)
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
        table = Table(title="kernel families x devices (cubin or PTX the driver loads)")
        table.add_column("family")
        table.add_column("cubins / PTX", overflow="fold")
        for device in DEVICES:
            table.add_column(str(device.cc), justify="center")
        for name, found in presence.items():
            marks = [
                "yes"
                if device.cc in found.devices
                else "hollow"
                if device.cc in found.hollow_devices
                else "-"
                for device in DEVICES
            ]
            table.add_row(name, " ".join(found.cubins + found.ptx) or "(none)", *marks)
        out.print(table)
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

    p = verbs.add_parser("probe", help="list the cubins, PTX and kernels really inside libraries")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".so, wheel or directory")
    p.add_argument("--families", type=Path, metavar="FILE", help="families file or matrix file")
    p.add_argument("--engine", choices=("native", "cuobjdump"), default="native")
    p.add_argument("--cuobjdump", type=Path, metavar="PATH", help="cuobjdump to use")
    p.add_argument("--json", action="store_true", help="machine-readable inventory")
    p.set_defaults(handler=cmd_probe)
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
