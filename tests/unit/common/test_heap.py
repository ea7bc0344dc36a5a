"""common.heap: with the thresholds raised, a freed buffer's pages are reused, not
faulted in again (each run in a fresh interpreter: a heap's settings are for life)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
from orchestrator.common.heap import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    buffer = b"x" * (40 << 20)  # every page written; above glibc's own thresholds
    del buffer
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""
PAGES = (40 << 20) // 4096


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_once_the_thresholds_are_raised() -> None:
    assert page_faults("default") >= 4 * PAGES  # each buffer's pages anew
    assert page_faults("kept") < 2 * PAGES  # the first buffer's pages, then reused
