"""Issue 22 end to end, with real builds of the sample extension (CUDA 13.0 from
PyPI, one cell, ``12.0a``), as a user replays it from the CLI:

1. a run with its own ``--out``/``--build-dir`` and result cache (built), then the
   same matrix with other directories: answered from the result cache, its
   artifacts restored into the new build directory, and no path of the first run
   anywhere in its results;
2. ``baseline save`` of the first run, ``diff`` of the second against it: no move;
3. a run with ``SAMPLE_EXT_STABLE_LIB=ON`` (the FP4 kernels in
   ``_C_stable_libtorch.so``) diffed against the same baseline: exactly the FP4
   kernels moved.

The FP4 kernels are those of ``FP4_SOURCES`` in examples/sample_ext/CMakeLists.txt
(nvfp4_quant_kernels.cu, nvfp4_scaled_mm_kernels.cu: one ``__global__`` each);
checked by hand with the real cuobjdump (``--dump-elf-symbols``: the plain
``_C.so`` holds 6 entry kernels, the STABLE_LIB ``_C.so`` 4 and
``_C_stable_libtorch.so`` the 2 nvfp4 ones).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from own_cache import cache_env, own_cache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CELL = "cu13.0-12.0a"
FP4_KERNELS = [
    "(anonymous namespace)::nvfp4_quant_kernel(float*, int, float)",
    "(anonymous namespace)::nvfp4_scaled_mm_kernel(float*, int, float)",
]


def kernel_matrix(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (``cache``: a result cache of the test's own)."""
    env = cache_env(cache) if cache else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
    )


def matrix(path: Path, *, stable: bool) -> Path:
    option = ", cmake_options: {SAMPLE_EXT_STABLE_LIB: true}" if stable else ""
    path.write_text(
        f"project: {{source: {REPO / 'examples/sample_ext'}, artifacts: ['*.so']{option}}}\n"
        "cuda: ['13.0']\narchs: ['12.0a']\n"
        f"families: {REPO / 'examples/sample_ext/families.yaml'}\n"
    )
    return path


def strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from strings(value)


def test_cached_cell_and_baselines_do_not_depend_on_the_build_directory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = matrix(tmp_path / "plain.yaml", stable=False)
    # (outside tmp_path: the results name the toolchain in it, and no path of tmp_path
    # but this run's own may appear in them)
    cache = own_cache(tmp_path_factory.mktemp("own-cache"))
    first = kernel_matrix(
        "run", str(plain), "--out", str(tmp_path / "r1"), "--build-dir", str(tmp_path / "b1"),
        cache=cache,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "(cached" not in first.stdout

    # 1. The same cell, other directories: from the cache, artifacts restored here.
    second = kernel_matrix(
        "run", str(plain), "--out", str(tmp_path / "r2"), "--build-dir", str(tmp_path / "b2"),
        cache=cache,
    )  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    restored = tmp_path / "b2" / CELL / "_C.so"
    assert f"(cached: not rebuilt, artifacts restored into {tmp_path / 'b2' / CELL})" in (
        second.stdout
    )
    assert restored.read_bytes() == (tmp_path / "b1" / CELL / "_C.so").read_bytes()
    results = json.loads((tmp_path / "r2" / "results.json").read_text())
    (cell,) = results["cells"]
    assert cell["cached"] is True and cell["build_dir"] == str(tmp_path / "b2" / CELL)
    assert cell["artifacts"] == ["_C.so"]
    assert [lib["path"] for lib in cell["inventory"]["libraries"]] == ["_C.so"]
    # No path outside this run's own directories (r2, b2) among the test's files.
    ours = [tmp_path / "r2", tmp_path / "b2", tmp_path / "plain.yaml"]
    foreign = [
        s for s in strings(results) if str(tmp_path) in s and not any(str(d) in s for d in ours)
    ]
    assert foreign == []
    for report in ("summary.md", "junit.xml", "index.html", f"cells/{CELL}.json"):
        assert str(tmp_path / "b1") not in (tmp_path / "r2" / report).read_text()
        assert str(tmp_path / "r1") not in (tmp_path / "r2" / report).read_text()

    # 2. Baseline from the first directory, diff of the second: nothing moved.
    baseline = tmp_path / "baseline.json"
    saved = kernel_matrix("baseline", "save", str(tmp_path / "r1"), "--out", str(baseline))
    assert saved.returncode == 0, saved.stderr
    assert str(tmp_path) not in baseline.read_text()
    same = kernel_matrix("diff", str(baseline), str(tmp_path / "r2"))
    assert same.returncode == 0, same.stdout[-3000:]
    assert "0 regressions (0 family × device, 0 kernels), 0 moved, 0 new kernels" in same.stdout

    # 3. SAMPLE_EXT_STABLE_LIB=ON: exactly the FP4 kernels moved, nothing lost.
    stable = matrix(tmp_path / "stable.yaml", stable=True)
    third = kernel_matrix(
        "run", str(stable), "--out", str(tmp_path / "r3"), "--build-dir", str(tmp_path / "b3"),
        "--no-cache",
    )  # fmt: skip
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    moved = kernel_matrix("diff", str(baseline), str(tmp_path / "r3"))
    assert moved.returncode == 0, moved.stdout[-3000:]
    assert "0 regressions (0 family × device, 0 kernels), 2 moved, 0 new kernels" in moved.stdout
    lines = sorted(line.strip() for line in moved.stdout.splitlines() if "moved: " in line)
    assert lines == [
        f"moved: {CELL}: {kernel} [sm_120a]: _C.so -> _C_stable_libtorch.so"
        for kernel in FP4_KERNELS
    ]
