"""Pipelines for CI engines: the tool plans, the engine fans out, the tool merges.

GitHub Actions takes ``plan --format github`` (a ``strategy.matrix``); Buildkite
(vLLM's CI) takes the pipeline printed by ``plan --format buildkite``: one step
per runnable cell and a final step that merges the results and decides.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from orchestrator.planning.matrix import Matrix
from orchestrator.planning.plan import Cell
from orchestrator.toolchains.cuda import nvcc_version

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def buildkite_key(cell_id: str) -> str:
    """Buildkite step keys allow letters, digits, ``_`` and ``-`` only.

    >>> buildkite_key("cu13.0-9.0a_12.1a")
    'cell-cu13_0-9_0a_12_1a'
    """
    return "cell-" + _KEY_UNSAFE.sub("_", cell_id)


def buildkite_pipeline(
    matrix: Matrix,
    cells: Sequence[Cell],
    *,
    backend: str | None = None,
    cuda_homes: Sequence[Path] = (),
) -> str:
    """A Buildkite pipeline (YAML) that builds each runnable cell in its own step
    (with the backend and system toolkits the plan was made with: the agents are
    expected to have the same paths)."""
    matrix_file = str(matrix.path)
    backend_args = f" --backend {shlex.quote(backend)}" if backend else ""
    # Each step gets the toolkit of its own CUDA version (any other is an error there).
    home_of = {nvcc_version(Path(home) / "bin" / "nvcc")[0]: home for home in cuda_homes}
    steps: list[dict[str, Any]] = []
    keys: list[str] = []
    for cell in cells:
        if not cell.runnable:
            continue
        key = buildkite_key(cell.id)
        keys.append(key)
        out = f"results/{cell.id}"
        steps.append(
            {
                "label": f":package: {cell.id}",
                "key": key,
                # The CLI directly (nox would only add a virtual environment per step).
                "command": (
                    "python3 -m pip install --quiet . && "
                    f"kernel-matrix run {shlex.quote(matrix_file)} --only {shlex.quote(cell.id)} "
                    f"--out {shlex.quote(out)}{backend_args}"
                    + (
                        f" --cuda-home {shlex.quote(str(home_of[cell.cuda]))}"
                        if cell.cuda in home_of
                        else ""
                    )
                ),
                "env": {"NO_COLOR": "1"},
                "artifact_paths": [f"{out}/cells/*.json", f"{out}/logs/*.log"],
            }
        )
    report = (
        "buildkite-agent artifact download 'results/**/*' . && "
        "python3 -m pip install --quiet . && "
        "kernel-matrix report results --out report && "
        "buildkite-agent annotate --style info < report/summary.md"
    )
    steps.append(
        {
            "label": ":bar_chart: kernel-matrix report",
            "key": "kernel-matrix-report",
            "depends_on": keys,
            "allow_dependency_failure": True,
            "command": report,
            "artifact_paths": ["report/*"],
        }
    )
    return yaml.safe_dump({"steps": steps}, sort_keys=False, width=1000)
