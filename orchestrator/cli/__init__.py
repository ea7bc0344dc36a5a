from orchestrator.cli.main import build_parser, main, with_docker_overrides

__all__ = ["build_parser", "main", "with_docker_overrides"]
