"""docs/environment.md names every environment variable the code reads: a variable
added to the code without a line in the doc fails here."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.cli.options import CUDA_HOME_VARIABLES
from orchestrator.run.cellcache import HOST_BUILD_ENV

REPO = Path(__file__).resolve().parents[3]
SOURCES = [*sorted((REPO / "orchestrator").rglob("*.py")), REPO / "noxfile.py"]
_READ = re.compile(r"""environ(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]+)"|"(KERNEL_MATRIX_[A-Z_]+)\"""")
_TOOL = re.compile(r"""_binary_tool\("(\w+)\"""")


def variables_in_code() -> set[str]:
    found = set(HOST_BUILD_ENV) | set(CUDA_HOME_VARIABLES)
    for source in SOURCES:
        text = source.read_text()
        found |= {a or b for a, b in _READ.findall(text)}
        found |= {f"KERNEL_MATRIX_{tool.upper()}" for tool in _TOOL.findall(text)}
    return found


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (REPO / "docs/environment.md").read_text()))
    found = variables_in_code()
    assert {"KERNEL_MATRIX_CACHE", "KERNEL_MATRIX_CUOBJDUMP", "CUDA_HOME", "CC"} <= found
    assert sorted(found - documented) == []
