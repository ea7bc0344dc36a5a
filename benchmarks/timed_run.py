"""``kernel-matrix ARGS`` with its stages timed, for benchmarks/bench_matrix.py.

    python benchmarks/timed_run.py STAGES.json run matrix.yaml --out ... --jobs 1

Wraps the functions that make up a run (looked up as module attributes when they
are called, so wrapping them here reaches every call) and writes each stage's
*exclusive* seconds (nested stages subtracted; summed over threads) to
STAGES.json, with the interpreter's start-up and import time.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orchestrator.building.backends  # noqa: E402
import orchestrator.building.backends.local  # noqa: E402
import orchestrator.cli  # noqa: E402
import orchestrator.common.fsutil  # noqa: E402
import orchestrator.reporting.summary  # noqa: E402
import orchestrator.reporting.writers  # noqa: E402
import orchestrator.run.runner  # noqa: E402
import orchestrator.toolchains.cuda  # noqa: E402

IMPORTED = time.perf_counter()

_lock = threading.Lock()
_local = threading.local()
TOTALS: dict[str, float] = {}

STAGES: list[tuple[Any, str, str]] = [
    (orchestrator.cli, "load_matrix", "load and validate matrix.yaml"),
    (orchestrator.cli, "plan", "plan cells (toolchain availability)"),
    (orchestrator.building.backends, "make_backend", "make backend"),
    (orchestrator.run.runner, "source_digest", "hash the source tree"),
    (orchestrator.run.runner, "run_cell", "cell: other (cache lookup, log copy, ...)"),
    (orchestrator.run.runner, "cell_cache_key", "cell: cache key"),
    (orchestrator.toolchains.cuda, "resolve", "cell: toolchain resolve"),
    (orchestrator.toolchains.cuda, "nvcc_version", "nvcc --version"),
    (orchestrator.building.backends.local, "run_logged", "cell: build tools (configure + build)"),
    (orchestrator.run.runner, "scan_log", "cell: scan the build log"),
    (orchestrator.run.runner, "collect_artifacts", "cell: find artifacts"),
    (orchestrator.run.runner, "probe", "cell: probe artifacts"),
    (orchestrator.run.runner, "check_cell", "cell: check families"),
    (orchestrator.run.runner, "_check_prediction", "cell: configure-prediction check"),
    (orchestrator.common.fsutil, "write_atomic", "atomic writes (results, cache, reports)"),
    (orchestrator.reporting.writers, "write_reports", "write reports (JSON, JUnit, MD, HTML)"),
    (orchestrator.reporting.summary, "print_summary", "print the summary table"),
]


def timed(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(0.0)  # time spent in nested timed stages
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            nested = stack.pop()
            if stack:
                stack[-1] += elapsed
            with _lock:
                TOTALS[label] = TOTALS.get(label, 0.0) + elapsed - nested

    return wrapper


def main() -> int:
    out = Path(sys.argv[1])
    for module, name, label in STAGES:
        setattr(module, name, timed(getattr(module, name), label))
    start = time.perf_counter()
    try:
        code = orchestrator.cli.main(sys.argv[2:])
    finally:
        main_s = time.perf_counter() - start
        attributed = sum(TOTALS.values())
        stages = {"imports": IMPORTED - STARTED}
        stages.update(sorted(TOTALS.items(), key=lambda item: -item[1]))
        stages["main thread: waiting for cells, other"] = max(0.0, main_s - attributed)
        stages["timed process total (imports + main)"] = IMPORTED - STARTED + main_s
        out.write_text(json.dumps(stages, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
