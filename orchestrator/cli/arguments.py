"""Arguments shared by several verbs, and the parser that turns every usage mistake into one line (exit 2)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.judge.results import CellResult
    from orchestrator.planning.matrix import Matrix

from orchestrator.common.errors import (
    EXIT_INFRA,
    CellErrors,
    UsageError,
)
from orchestrator.planning.choices import BACKENDS
from orchestrator.read.engines import DEFAULT_ENGINE, ENGINES

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse that raises (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self._verb_prefix() + message)

    def _verb_prefix(self) -> str:
        # main() prints "kernel-matrix: error: "; add only the verb ("run: "), if any.
        verb = self.prog.removeprefix("kernel-matrix").strip()
        return f"{verb}: " if verb else ""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A mistyped option (--onyl): say which one was meant. Checked here, in the
        # verb's own parser, because only it knows the verb's options (argparse reports
        # leftovers later, from the top parser, without them).
        parsed, extras = super().parse_known_args(args, namespace)
        for extra in extras:
            if not extra.startswith("--"):
                continue
            typed = extra.split("=", 1)[0]
            close = difflib.get_close_matches(typed, list(self._option_string_actions), n=1)
            if close:
                raise UsageError(
                    f"{self._verb_prefix()}unrecognized option '{typed}' "
                    f"(did you mean '{close[0]}'?)"
                )
        return parsed, extras

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


def add_cell_selection(parser: argparse.ArgumentParser) -> None:
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


def matrix_of(args: argparse.Namespace) -> Matrix:
    """The matrix of ``args``, with ``--source`` resolved (an sdist is unpacked, a
    release downloaded: once, cached)."""
    source = None
    if args.source:
        from orchestrator.building.sources import resolve_source

        source = resolve_source(args.source)
    from orchestrator.planning.matrix import load_matrix

    return load_matrix(args.matrix, source=source)


def add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="a cell skipped for lack of a toolchain is an infrastructure failure (exit 3)",
    )


def add_strict_kernels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict-kernels",
        action="store_true",
        help="a kernel that a requested device no longer loads working code of fails too "
        "(exit 1); by default only family × device regressions do",
    )


def add_engine(parser: argparse.ArgumentParser, default: str | None = DEFAULT_ENGINE) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=default,
        help=f"probe engine (default: {DEFAULT_ENGINE})",
    )


def add_results_args(parser: argparse.ArgumentParser, *, latest: bool = False) -> None:
    """RESULTS...; with ``latest``, none means the latest run under reports/."""
    parser.add_argument(
        "results",
        nargs="*" if latest else "+",
        type=Path,
        metavar="RESULTS",
        help="cell result files, run directories (cells/*.json inside) or results.json files; "
        "a later one wins for the same cell" + ("; default: the latest run" if latest else ""),
    )


def with_error_line(code: int, results: Sequence[CellResult], *, strict: bool) -> int:
    """Exit 3 from cell results comes with the one stderr error line every fatal error
    has (``kernel-matrix: error: ...``), naming the first broken cell and its cause."""
    if code == EXIT_INFRA:
        from orchestrator.judge.results import infra_summary

        raise CellErrors(infra_summary(results, strict=strict))
    return code
