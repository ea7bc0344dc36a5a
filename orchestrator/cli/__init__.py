"""The command line, ``kernel-matrix`` (and ``python -m orchestrator``): one module per
verb group, each owning its arguments and its command; :mod:`orchestrator.cli.main`
assembles them and turns every fatal error into one line and its exit code."""

from orchestrator.cli.main import build_parser, main
from orchestrator.cli.run import with_docker_overrides

__all__ = ["build_parser", "main", "with_docker_overrides"]
