"""The command line, ``kernel-matrix`` (and ``python -m orchestrator``): one module per
verb group, each owning its arguments and its command; :mod:`orchestrator.cli.command`
assembles them and turns every fatal error into one line and its exit code. A
repeated check is answered before any of them is imported (:mod:`orchestrator.cli.answers`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main", "with_docker_overrides"]


def main(argv: Sequence[str] | None = None) -> int:
    from orchestrator.cli.answers import replay

    try:
        kept = replay(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        return 0
    if kept is not None:
        return kept
    from orchestrator.cli.command import main as run_verb

    return run_verb(argv)


def __getattr__(name: str) -> Any:
    if name == "build_parser":
        from orchestrator.cli.command import build_parser

        return build_parser
    if name == "with_docker_overrides":
        from orchestrator.cli.run import with_docker_overrides

        return with_docker_overrides
    raise AttributeError(name)
