"""Writing a run's reports from its cell results (possibly merged from many CI jobs)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.fsutil import write_json
from orchestrator.results import RESULT_SCHEMA_VERSION, CellResult


def merged_json(results: Sequence[CellResult]) -> dict[str, Any]:
    """The whole run as one document (``results.json``)."""
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "run": {
            "tool_version": __version__,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cells": len(results),
        },
        "cells": [r.to_json() for r in results],
    }


def write_reports(results: Sequence[CellResult], out_dir: Path) -> list[Path]:
    """Write every report of a run into ``out_dir``; returns the paths written."""
    path = out_dir / "results.json"
    write_json(path, merged_json(results))
    return [path]
