"""Reuse of a configure by what it read (issue 30): a tree whose configure inputs are
unchanged is answered from the configure of another tree, without running CMake.

The "configure" here is a fake backend that writes what CMake would: a File API reply
(codemodel and cmakeFiles) and a json-v1 trace of the project's files, in which a
generator script runs and a ``file(GLOB)`` collects its outputs. The real thing is
tests/integration/test_config_inputs.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.judge.results import PASSED, CellResult
from orchestrator.planning.matrix import Matrix, load_matrix
from orchestrator.planning.plan import Cell, plan
from orchestrator.run import cellcache, configinputs
from orchestrator.run.runner import RunOptions, run_cells

TREE = {
    "CMakeLists.txt": "project(x)\ninclude(cmake/archs.cmake)\n",
    "cmake/archs.cmake": "set(ARCHS 12.0a)\n",
    "gen/generate.py": "import helpers\n",
    "gen/helpers.py": "KERNELS = 3\n",
    "csrc/a.cu": "__global__ void nvfp4_quant(int x) { /* body */ }\n",
    "csrc/gen/keep.txt": "",
    "README.md": "hello\n",
    "tools/lint.py": "print('not read by the configure')\n",
}


def make_tree(root: Path) -> Path:
    for name, text in TREE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def write_configure(source: Path, build: Path) -> None:
    """What a configure of ``source`` leaves in ``build``: the File API reply and the
    trace (paths absolute, as CMake writes them)."""
    reply = build / ".cmake" / "api" / "v1" / "reply"
    reply.mkdir(parents=True, exist_ok=True)
    responses = [
        {"kind": "codemodel", "jsonFile": "codemodel.json"},
        {"kind": "cmakeFiles", "jsonFile": "cmakeFiles.json"},
    ]
    files = {
        "index-1.json": {
            "reply": {"client-kernel-matrix": {"query.json": {"responses": responses}}}
        },
        "codemodel.json": {
            "paths": {"source": str(source), "build": str(build)},
            "configurations": [{"targets": [{"jsonFile": "target.json"}]}],
        },
        "target.json": {
            "name": "_C",
            "type": "SHARED_LIBRARY",
            "artifacts": [{"path": "_C.so"}],
            "sources": [{"path": "csrc/a.cu"}],
            "compileGroups": [
                {
                    "language": "CUDA",
                    "compileCommandFragments": [
                        {"fragment": "-gencode=arch=compute_120a,code=sm_120a"}
                    ],
                    "sourceIndexes": [0],
                }
            ],
        },
        "cmakeFiles.json": {
            "paths": {"source": str(source), "build": str(build)},
            "inputs": [
                {"path": "CMakeLists.txt"},
                {"path": "cmake/archs.cmake"},
                {"path": "/usr/share/cmake/Modules/CMakeCUDAInformation.cmake", "isCMake": True},
                {"path": "/opt/torch/TorchConfig.cmake", "isExternal": True},
            ],
        },
    }
    for name, data in files.items():
        (reply / name).write_text(json.dumps(data))
    lists = str(source / "CMakeLists.txt")
    trace = [
        {"version": {"major": 1, "minor": 2}},
        {
            "cmd": "execute_process",
            "args": ["COMMAND", "python3", f"{source}/gen/generate.py", f"{source}/csrc/gen"],
            "file": lists,
            "line": 3,
            "frame": 1,
        },
        {
            "cmd": "file",
            "args": ["GLOB", "GEN", f"{source}/csrc/gen/*.cu"],
            "file": lists,
            "line": 4,
        },
        {"cmd": "if", "args": ["EXISTS", f"{source}/optional.txt"], "file": lists, "line": 5},
    ]
    (build / "cmake-trace.json").write_text("".join(json.dumps(r) + "\n" for r in trace))


def matrix_of(tmp_path: Path, source: Path) -> Matrix:
    path = tmp_path / "matrix.yaml"
    path.write_text(
        "project: {source: src, artifacts: ['*.so']}\n"
        "cuda: ['13.0']\narchs: ['12.0a']\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']}}\n"
    )
    return load_matrix(path, source=source)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(cache))
    return cache


# --- the index logic ---------------------------------------------------------------


def edit(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def add(name: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("new\n")

    return change


def delete(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


REUSED = {
    "a kernel's body": edit("csrc/a.cu", "__global__ void nvfp4_quant(int x) { x += 1; }\n"),
    "an unrelated file": edit("README.md", "changed\n"),
    "a Python file no generator can import": edit("tools/lint.py", "print(1)\n"),
    "a new source the configure does not glob": add("csrc/other.cu"),
}
RECONFIGURED = {
    "CMakeLists.txt": (edit("CMakeLists.txt", "project(y)\n"), "CMakeLists.txt changed"),
    "an included CMake file": (edit("cmake/archs.cmake", "set(ARCHS 12.1a)\n"), "changed"),
    "the generator script": (edit("gen/generate.py", "import os\n"), "gen/generate.py changed"),
    "a module beside the generator": (edit("gen/helpers.py", "KERNELS = 4\n"), "helpers.py"),
    "a new module beside the generator": (add("gen/jinja2.py"), "GLOB_RECURSE gen/*.py"),
    "a listed CMake file deleted": (delete("cmake/archs.cmake"), "cmake/archs.cmake is gone"),
    "a new CMake file anywhere": (add("other/CMakeLists.txt"), "CMakeLists.txt) finds others"),
    "a file the glob finds": (add("csrc/gen/extra.cu"), "file(GLOB csrc/gen/*.cu) finds others"),
    "a path tested by if(EXISTS)": (add("optional.txt"), "optional.txt is new"),
    "a renamed kernel": (
        edit("csrc/a.cu", "__global__ void nvfp4_quant_v2(int x) {}\n"),
        "the kernels csrc/a.cu declares changed",
    ),
    "a compiled source deleted": (delete("csrc/a.cu"), "csrc/a.cu is gone"),
}


def recorded(tmp_path: Path) -> tuple[Path, configinputs.ConfigureInputs]:
    base = make_tree(tmp_path / "base")
    build = tmp_path / "build"
    write_configure(base, build)
    inputs = configinputs.collect(matrix_of(tmp_path, base).project, build)
    assert inputs is not None
    return base, inputs


def test_what_a_configure_read(tmp_path: Path) -> None:
    _, inputs = recorded(tmp_path)
    assert sorted(inputs.files) == [
        "CMakeLists.txt", "cmake/archs.cmake", "csrc/gen", "gen/generate.py",
        "gen/helpers.py", "optional.txt",
    ]  # fmt: skip
    assert inputs.files["csrc/gen"] == configinputs.DIRECTORY
    assert inputs.files["optional.txt"] is None  # absent, and must stay so
    assert inputs.kernels == {"csrc/a.cu": ["a", "nvfp4_quant"]}
    patterns = {(g.pattern, g.recurse, g.found) for g in inputs.globs}
    assert ("csrc/gen/*.cu", False, ()) in patterns
    assert ("gen/*.py", True, ("gen/generate.py", "gen/helpers.py")) in patterns
    again = configinputs.ConfigureInputs.from_json(json.loads(json.dumps(inputs.to_json())))
    assert again == inputs


@pytest.mark.parametrize("change", REUSED.values(), ids=REUSED.keys())
def test_a_change_the_configure_did_not_read_is_reused(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    base, inputs = recorded(tmp_path)
    head = shutil.copytree(base, tmp_path / "head")
    change(head)
    assert inputs.first_change(head) is None


@pytest.mark.parametrize(("change", "said"), RECONFIGURED.values(), ids=RECONFIGURED.keys())
def test_a_change_to_an_input_is_not_reused(
    tmp_path: Path, change: Callable[[Path], None], said: str
) -> None:
    base, inputs = recorded(tmp_path)
    head = shutil.copytree(base, tmp_path / "head")
    change(head)
    found = inputs.first_change(head)
    assert found is not None and said in found


def test_the_index_points_at_a_stored_entry_only(tmp_path: Path) -> None:
    base, inputs = recorded(tmp_path)
    configinputs.remember("k", "entry1", base, inputs)
    assert configinputs.lookup("k", base) is None  # the entry is not in the cell cache
    entry = cellcache.cache_path("entry1", "configure")
    entry.mkdir(parents=True)
    (entry / "result.json").write_text("{}")
    match = configinputs.lookup("k", base)
    assert match is not None and (match.entry, match.source) == ("entry1", str(base))
    assert configinputs.lookup("another-cell", base) is None


# --- through the runner ---------------------------------------------------------------


class FakeConfigure:
    name = "local"

    def __init__(self, source: Path) -> None:
        self.source = source
        self.configured: list[Path] = []

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        assert job.configure_only
        self.configured.append(self.source)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        job.log.write(f"-- Configuring {self.source} in {job.build_dir}\n".encode())
        job.log.write(f"{self.source}/CMakeLists.txt:9: warning: a warning\n".encode())
        write_configure(self.source, job.build_dir)
        return BuildOutcome("fake", 1.0)


def configure(
    tmp_path: Path, name: str, source: Path, backend: FakeConfigure, *, use_cache: bool = True
) -> CellResult:
    backend.source = source
    m = matrix_of(tmp_path, source)
    options = RunOptions(
        out_dir=tmp_path / name / "out",
        build_root=tmp_path / name / "build",
        configure_only=True,
        use_cache=use_cache,
    )
    (result,) = run_cells(m, plan(m), backend, options)
    return result


def test_a_tree_that_changed_no_input_is_answered_without_configuring(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base")
    backend = FakeConfigure(base)
    first = configure(tmp_path, "one", base, backend)
    assert first.status == PASSED and not first.cached
    head = shutil.copytree(base, tmp_path / "head")
    REUSED["a kernel's body"](head)
    second = configure(tmp_path, "two", head, backend)
    assert backend.configured == [base]  # CMake ran once
    assert second.cached and second.status == PASSED and second.cache_key == first.cache_key
    assert second.build_dir == str(tmp_path / "two/build/cu13.0-12.0a")
    assert second.warnings == [f"{head}/CMakeLists.txt:9: warning: a warning"]  # this tree's
    assert not (tmp_path / "two/build/cu13.0-12.0a/.cmake").exists()
    log = (tmp_path / "two/out/logs/cu13.0-12.0a.log").read_text()
    assert log.startswith(
        f"# kernel-matrix: this cell was answered from the configure of another tree,\n# {base}: "
    )
    assert f"-- Configuring {head} in {tmp_path / 'two/build/cu13.0-12.0a'}" in log
    cell = json.loads((tmp_path / "two/out/cells/cu13.0-12.0a.json").read_text())
    assert cell["cached"] is True and str(base) not in json.dumps(cell)
    # an input changed: configured again, and that configure is recorded too
    third_tree = shutil.copytree(head, tmp_path / "third")
    edit("cmake/archs.cmake", "set(ARCHS 12.1a)\n")(third_tree)
    third = configure(tmp_path, "three", third_tree, backend)
    assert backend.configured == [base, third_tree] and not third.cached
    # the base answers again for a fourth tree like it
    fourth = configure(tmp_path, "four", shutil.copytree(base, tmp_path / "fourth"), backend)
    assert fourth.cached and backend.configured == [base, third_tree]


def test_no_cache_neither_uses_nor_writes_the_index(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base")
    backend = FakeConfigure(base)
    configure(tmp_path, "one", base, backend, use_cache=False)
    assert not list((tmp_path / "cache").glob("configure-inputs/*.json"))
    # (the cell cache was written: `run --no-cache` rebuilds and keeps the new result)
    head = shutil.copytree(base, tmp_path / "head")
    REUSED["an unrelated file"](head)
    assert not configure(tmp_path, "two", head, backend).cached  # nothing to reuse
    assert list((tmp_path / "cache").glob("configure-inputs/*.json"))  # now recorded
    other = shutil.copytree(base, tmp_path / "other")
    REUSED["a kernel's body"](other)
    assert not configure(tmp_path, "three", other, backend, use_cache=False).cached
    assert backend.configured == [base, head, other]
    assert configure(tmp_path, "four", other, backend).cached  # (from the index, or the cache)
