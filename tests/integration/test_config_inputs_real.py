"""Reuse of a configure by what it read, for real (issue 30): the sample extension is
configured (real CMake, the CUDA 13.0 toolchain from PyPI); a tree that differs only in
a ``.cu`` file's body (which CMake does not read) is answered from that configure
without running CMake; a tree whose ``CMakeLists.txt`` changed is configured again.

What shows that CMake did not run: the cell's build directory holds no
``CMakeCache.txt`` (a configure always writes one), the result says ``cached``, and
the cell log opens with the configure-input index's header. The matrix carries an
option unique to this test run, so that no cell-cache entry or index record of an
earlier run (the cache is the user's, with its toolchains) can answer the first run.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"
KERNEL_SOURCE = "csrc/nvfp4_quant_kernels.cu"


def configure(tmp_path: Path, matrix: Path, tree: Path, name: str) -> tuple[int, dict[str, Any]]:
    out, build = tmp_path / "runs" / name / "out", tmp_path / "runs" / name / "build"
    code = main([
        "run", str(matrix), "--tier", "configure", "--source", str(tree),
        "--out", str(out), "--build-dir", str(build), "--jobs", "1",
    ])  # fmt: skip
    (cell,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    return code, cell


def test_a_tree_that_changes_no_configure_input_is_not_configured_again(tmp_path: Path) -> None:
    first_tree = tmp_path / "trees" / "first"
    shutil.copytree(SAMPLE, first_tree, ignore=shutil.ignore_patterns("build*"))
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        f"project: {{name: sample_ext, source: {first_tree}, build: cmake, artifacts: ['*.so'],"
        f" cmake_options: {{KERNEL_MATRIX_TEST_RUN: {uuid.uuid4().hex}}}}}\n"
        'cuda: ["13.0"]\n'
        'archs: ["9.0a;12.0a"]\n'
        f"families: {SAMPLE / 'families.yaml'}\n"
    )
    code, first = configure(tmp_path, matrix, first_tree, "first")
    cell_id = first["cell"]["id"]
    assert not first["cached"]
    assert (tmp_path / "runs/first/build" / cell_id / "CMakeCache.txt").is_file()

    # A kernel's body changes (its name does not): CMake reads no .cu file.
    second_tree = shutil.copytree(first_tree, tmp_path / "trees" / "second")
    kernels = second_tree / KERNEL_SOURCE
    kernels.write_text(kernels.read_text() + "\n// a change inside no kernel's name\n")
    second_code, second = configure(tmp_path, matrix, second_tree, "second")
    assert second_code == code
    assert second["cached"] is True
    assert not (tmp_path / "runs/second/build" / cell_id / "CMakeCache.txt").exists()
    log = (tmp_path / "runs/second/out" / second["log"]).read_text()
    assert log.startswith(
        "# kernel-matrix: this cell was answered from the configure of another tree,\n"
        f"# {first_tree}: "
    )
    assert [v for v in second["verdicts"]] == [v for v in first["verdicts"]]
    assert second["inventory"] == first["inventory"]
    assert str(first_tree) not in json.dumps(second)  # rebased onto this tree and run

    # CMakeLists.txt changes: configured again.
    third_tree = shutil.copytree(second_tree, tmp_path / "trees" / "third")
    lists = third_tree / "CMakeLists.txt"
    lists.write_text(lists.read_text() + "\n# a change CMake reads\n")
    third_code, third = configure(tmp_path, matrix, third_tree, "third")
    assert third_code == code and third["cached"] is False
    assert (tmp_path / "runs/third/build" / cell_id / "CMakeCache.txt").is_file()
