"""Library identity does not depend on where a build happened (issue 22).

* A cell answered from the result cache in a new build directory has its
  artifacts copied there, and its result names no file of the run that filled the
  cache.
* A baseline saved from a run in one directory and a run of the same source in
  another directory diff with no finding at all; a library move (the FP4 kernels
  into ``_C_stable_libtorch.so``) is a move of exactly the kernels that moved.
* The cache is bounded: least recently used entries go first; an entry larger than
  the limit is not stored; a damaged entry is rebuilt.

The "builds" are a fake backend that writes hand-made libraries (no compiler in
unit tests); tests/integration/test_library_identity.py replays the same with real
builds of the sample extension.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from synth import (
    KIND_ELF,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_shared_object,
    working_body,
)

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.cli import main
from orchestrator.common.errors import UsageError
from orchestrator.judge.baseline import load_baseline, save_baseline, summarize
from orchestrator.judge.compare import KERNEL_MOVED, compare, diff_results
from orchestrator.judge.results import PASSED, CellResult
from orchestrator.planning.matrix import Matrix, load_matrix
from orchestrator.planning.plan import Cell, plan
from orchestrator.run import cellcache
from orchestrator.run.runner import RunOptions, run_cells

FP4 = ("_Z11nvfp4_quantv", "_Z12nvfp4_scaledv")  # nvfp4_quant(), nvfp4_scaled()
MAIN = ("_Z7mm_mainv", "_Z8dispatchv")  # mm_main(), dispatch()


def library(mangled: tuple[str, ...], padding: int = 0) -> bytes:
    cubin = build_cubin(CubinSpec([KernelSpec(m, working_body(20)) for m in mangled]), sm=120)
    data = build_shared_object([build_container([EntrySpec(KIND_ELF, 120, cubin, "a")])])
    return data + bytes(padding)  # (padding: an artifact of a chosen size)


class FakeBackend:
    """A "build" writes ``_C.so`` with every kernel, or (``stable``, as the matrix's
    ``STABLE_LIB`` option asks) the FP4 kernels into ``_C_stable_libtorch.so``, as
    vLLM did."""

    name = "local"

    def __init__(self, padding: int = 0, stable: bool = False) -> None:
        self.built: list[Path] = []
        self.padding = padding
        self.stable = stable

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        self.built.append(job.build_dir)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        job.log.write(f"$ cmake -B {job.build_dir}\n".encode())
        # A warning that names the build directory, as compilers' warnings may.
        job.log.write(f"{job.build_dir}/gen.cu(3): warning #177-D: unused\n".encode())
        if self.stable:
            (job.build_dir / "_C.so").write_bytes(library(MAIN, self.padding))
            (job.build_dir / "_C_stable_libtorch.so").write_bytes(library(FP4))
        else:
            (job.build_dir / "_C.so").write_bytes(library(MAIN + FP4, self.padding))
        return BuildOutcome("fake", 0.0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(cache))
    monkeypatch.delenv(cellcache.LIMIT_VARIABLE, raising=False)
    return cache


def matrix(tmp_path: Path, *, stable: bool = False, archs: str = "['12.0a']") -> Matrix:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "kernels.cu").write_text("// the source the cache key hashes\n")
    path = tmp_path / ("stable.yaml" if stable else "plain.yaml")
    option = ", cmake_options: {STABLE_LIB: true}" if stable else ""
    path.write_text(
        f"project: {{source: src, artifacts: ['*.so']{option}}}\n"
        f"cuda: ['13.0']\narchs: {archs}\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']},"
        " main: {kernels: [mm_main], devices: ['12.0']}}\n"
    )
    return load_matrix(path)


def run(
    tmp_path: Path, name: str, m: Matrix, backend: FakeBackend, *, use_cache: bool = True
) -> list[CellResult]:
    options = RunOptions(
        out_dir=tmp_path / name / "out", build_root=tmp_path / name / "build", use_cache=use_cache
    )
    return run_cells(m, plan(m), backend, options)


def test_a_cache_hit_in_a_new_build_dir_restores_the_artifacts_there(tmp_path: Path) -> None:
    m, backend = matrix(tmp_path), FakeBackend()
    (first,) = run(tmp_path, "one", m, backend)
    (second,) = run(tmp_path, "two", m, backend)
    assert backend.built == [tmp_path / "one/build/cu13.0-12.0a"]  # built once
    assert not first.cached and second.cached and second.status == PASSED
    restored = tmp_path / "two/build/cu13.0-12.0a/_C.so"
    assert restored.read_bytes() == (tmp_path / "one/build/cu13.0-12.0a/_C.so").read_bytes()
    assert second.build_dir == str(tmp_path / "two/build/cu13.0-12.0a")
    assert second.artifacts == ["_C.so"]
    assert second.inventory is not None
    assert [lib.path for lib in second.inventory.libraries] == ["_C.so"]
    assert second.warnings == [
        f"{tmp_path / 'two/build/cu13.0-12.0a'}/gen.cu(3): warning #177-D: unused"
    ]
    # Nothing in this run's cell file points into the first run.
    cell_file = (tmp_path / "two/out/cells/cu13.0-12.0a.json").read_text()
    assert str(tmp_path / "one") not in cell_file
    assert json.loads(cell_file)["cached"] is True
    log = (tmp_path / "two/out/logs/cu13.0-12.0a.log").read_text()
    assert log.startswith("# kernel-matrix: this cell was answered from the result cache")
    assert f"restored into {tmp_path / 'two/build/cu13.0-12.0a'}" in log
    # The earlier build's log, its paths made this run's (the header names where it ran).
    body = log.split("\n", 3)[3]
    assert f"$ cmake -B {tmp_path / 'two/build/cu13.0-12.0a'}" in body
    assert str(tmp_path / "one") not in body


def test_the_console_and_reports_say_a_cell_was_cached(tmp_path: Path) -> None:
    from orchestrator.reporting.summary import cell_line
    from orchestrator.reporting.writers import write_reports

    m, backend = matrix(tmp_path), FakeBackend()
    run(tmp_path, "one", m, backend)
    results = run(tmp_path, "two", m, backend)
    where = tmp_path / "two/build/cu13.0-12.0a"
    assert f"(cached: not rebuilt, artifacts restored into {where})" in cell_line(results[0])
    out = tmp_path / "two/out"
    write_reports(results, out)
    assert "1 of 1 cell answered from the result cache" in (out / "summary.md").read_text()
    html = (out / "index.html").read_text()
    assert "not rebuilt, artifacts restored from the result cache" in html
    assert '<property name="cached" value="true"' in (out / "junit.xml").read_text()
    merged = json.loads((out / "results.json").read_text())
    assert merged["cells"][0]["cached"] is True
    assert merged["cells"][0]["build_dir"] == str(where)
    assert str(tmp_path / "one") not in json.dumps(merged)


def test_same_source_built_in_two_directories_diffs_with_no_finding(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    first = run(tmp_path, "runner-a", m, FakeBackend(), use_cache=False)
    second = run(tmp_path, "runner-b", m, FakeBackend(), use_cache=False)
    save_baseline(summarize(first), tmp_path / "baseline.json")
    diff = diff_results(load_baseline(tmp_path / "baseline.json"), second)
    assert diff.findings == []


def test_a_moved_library_is_a_move_of_exactly_the_kernels_that_moved(tmp_path: Path) -> None:
    first = run(tmp_path, "a", matrix(tmp_path), FakeBackend(), use_cache=False)
    stable = matrix(tmp_path, stable=True)
    moved = run(tmp_path, "b", stable, FakeBackend(stable=True), use_cache=False)
    diff = diff_results(summarize(first), moved)
    assert diff.regressions == []
    assert sorted((f.subject, f.before, f.after, f.archs) for f in diff.findings) == [
        ("nvfp4_quant()", "_C.so", "_C_stable_libtorch.so", ("sm_120a",)),
        ("nvfp4_scaled()", "_C.so", "_C_stable_libtorch.so", ("sm_120a",)),
    ]
    assert all(f.kind == KERNEL_MOVED for f in diff.findings)


def test_baselines_of_older_versions_with_absolute_paths_still_diff_cleanly(
    tmp_path: Path,
) -> None:
    """Older versions wrote absolute library paths into results and baselines."""
    m = matrix(tmp_path)
    first = run(tmp_path, "old-runner", m, FakeBackend(), use_cache=False)
    data = summarize(first).to_json()
    for copies in data["cells"]["cu13.0-12.0a"]["kernels"].values():
        for copy in copies:
            copy[0] = f"/home/runner/work/build/cu13.0-12.0a/{copy[0]}"
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_baseline(tmp_path / "old.json")
    second = run(tmp_path, "new-runner", m, FakeBackend(), use_cache=False)
    assert diff_results(old, second).findings == []
    # ... and an old results file (absolute inventory paths) against a new baseline.
    for result in first:
        assert result.inventory is not None
        result.inventory = type(result.inventory)(
            tuple(
                type(lib)(f"/old/ws/build/{result.id}/{lib.path}", lib.cubins, lib.ptx)
                for lib in result.inventory.libraries
            )
        )
    assert compare(summarize(second), summarize(first)).findings == []


def test_diff_from_the_cli_against_a_baseline_of_another_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = matrix(tmp_path)
    run(tmp_path, "a", m, FakeBackend(), use_cache=False)
    run(tmp_path, "b", m, FakeBackend(), use_cache=False)
    base = tmp_path / "baseline.json"
    assert main(["baseline", "save", str(tmp_path / "a/out"), "--out", str(base)]) == 0
    assert main(["diff", str(base), str(tmp_path / "b/out")]) == 0
    out = capsys.readouterr().out
    assert "0 moved" in out and "moved:" not in out
    assert str(tmp_path / "a") not in base.read_text()  # the baseline names no directory


def test_a_cache_entry_with_a_vanished_artifact_is_rebuilt(tmp_path: Path) -> None:
    m, backend = matrix(tmp_path), FakeBackend()
    (first,) = run(tmp_path, "one", m, backend)
    assert first.cache_key is not None
    entry = cellcache.cache_path(first.cache_key, "build")
    (entry / "artifacts" / "_C.so").unlink()
    (second,) = run(tmp_path, "two", m, backend)
    assert not second.cached and len(backend.built) == 2
    assert (tmp_path / "two/build/cu13.0-12.0a/_C.so").is_file()
    assert (entry / "artifacts" / "_C.so").is_file()  # stored again, whole


def test_an_entry_larger_than_the_limit_is_not_stored_and_the_cell_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cellcache.LIMIT_VARIABLE, "64K")
    m, backend = matrix(tmp_path), FakeBackend(padding=100_000)
    (first,) = run(tmp_path, "one", m, backend)
    assert first.status == PASSED
    assert any("exceed the cache's limit" in w for w in first.warnings)
    (second,) = run(tmp_path, "two", m, backend)
    assert not second.cached and len(backend.built) == 2


def test_the_least_recently_used_entries_go_when_the_cache_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = matrix(tmp_path, archs="['12.0a', '12.0f', '12.1a']")
    backend = FakeBackend(padding=30_000)
    cells = plan(m)

    def run_one(cell: Cell, build: str) -> CellResult:
        options = RunOptions(out_dir=tmp_path / build / "out", build_root=tmp_path / build)
        (result,) = run_cells(m, [cell], backend, options)
        assert result.cache_key is not None
        return result

    keys = []
    for i, cell in enumerate(cells):  # stored one after the other, oldest first
        result = run_one(cell, "b1")
        assert not result.cached
        keys.append(result.cache_key)
        entry = cellcache.cache_path(keys[-1], "build")
        if i == 0:
            # Room for two entries like this one, not three.
            entry_size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            monkeypatch.setenv(cellcache.LIMIT_VARIABLE, str(int(2.5 * entry_size)))
        os.utime(entry, (time.time() - 100 + i, time.time() - 100 + i))
        if i == 0:
            assert run_one(cell, "b2").cached  # a hit: now the most recently used
    kept = [cellcache.cache_path(k, "build").is_dir() for k in keys]
    assert kept == [True, False, True]  # the second was the least recently used
    total = sum(f.stat().st_size for f in (tmp_path / "cache/cells").rglob("*") if f.is_file())
    assert total <= cellcache.cache_limit()


def test_a_bad_cache_limit_is_one_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cellcache.LIMIT_VARIABLE, "lots")
    with pytest.raises(UsageError, match=r"KERNEL_MATRIX_CELL_CACHE_LIMIT=lots: not a size"):
        cellcache.cache_limit()


def test_library_identity_ignores_the_versioned_wheel_name() -> None:
    from orchestrator.read.inventory import library_identity

    a = library_identity("dist/vllm-0.1.dev5+g1234-cp38-abi3-linux_x86_64.whl!vllm/_C.abi3.so")
    b = library_identity("/ws/dist/vllm-0.2.0-cp38-abi3-linux_x86_64.whl!vllm/_C.abi3.so")
    assert a == b == "vllm/_C.abi3.so"


def test_a_result_without_artifacts_is_cached_too(tmp_path: Path) -> None:
    """A configure-tier cell produces no artifact: its result and log are kept all the
    same (they were not: the entry's folder was made only for artifacts)."""
    (result,) = run(tmp_path, "b1", matrix(tmp_path), FakeBackend())
    result.artifacts = []
    log = tmp_path / "cell.log"
    log.write_text("cmake configure\n")
    key = "0" * 32
    cellcache.store(key, "configure", result, tmp_path / "no-build-dir", log, 1 << 20)
    stored = cellcache.load(key, "configure")
    assert stored is not None
    assert stored.result.artifacts == [] and stored.result.id == result.id
    assert stored.log.read_text() == "cmake configure\n"


def test_a_cell_from_the_cache_is_not_announced_as_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import building

    m, backend = matrix(tmp_path), FakeBackend()
    monkeypatch.setattr(building.backends, "make_backend", lambda *a, **k: backend)
    monkeypatch.setenv("NO_COLOR", "1")
    argv = ["run", str(m.path), "--build-dir", str(tmp_path / "build")]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert "▶ cu13.0-12.0a: building with CUDA 13.0 …" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert "▶ cu13.0-12.0a: from the result cache (not rebuilt) …" in out
    assert "building" not in out
    assert len(backend.built) == 1
