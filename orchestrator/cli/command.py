"""The ``kernel-matrix`` command line. Each pipeline stage is a verb, so that a CI
system can run stages on different machines (plan -> cells -> report); each verb's
module owns its arguments and its command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator import __version__
from orchestrator.cli import check, docker, plan, probe, report, run
from orchestrator.cli.arguments import Handler, Parser
from orchestrator.common.errors import (
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    KernelMatrixError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kernel-matrix",
        description="Build CUDA extensions across toolkits and arch lists, and prove every "
        "expected kernel family was compiled for every requested GPU.",
    )
    parser.add_argument("--version", action="version", version=f"kernel-matrix {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.required = True
    for verb in (plan, run, report, probe, check, docker):  # the order of --help
        verb.add_parsers(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # (cli.answers' key)
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
