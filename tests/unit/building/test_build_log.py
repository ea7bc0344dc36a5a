"""Why a build step failed, brought from its log to the cell's reason (issue 35, item
6b): the first line of the failed step that says what failed, never pip's
"error: subprocess-exited-with-error" / "See above for output" around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.building.buildlog import scan_log
from orchestrator.cli import main
from orchestrator.common.errors import BuildError
from orchestrator.planning.plan import Cell
from orchestrator.run import cellcache

# pip 24 with --verbose and --no-build-isolation, vLLM's setup.py without torch.
PIP_VERBOSE = """\
$ python3 -c COPY /src /b/cu13.0-12.1a/source build dist .deps
$ pip wheel /b/cu13.0-12.1a/source --no-deps --no-build-isolation --wheel-dir /b/cu13.0-12.1a/dist --verbose
Processing /b/cu13.0-12.1a/source
  Running command Preparing metadata (pyproject.toml)
  fatal: not a git repository (or any of the parent directories): .git
  Traceback (most recent call last):
    File "/usr/lib/python3/dist-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 353, in <module>
      main()
    File "/usr/lib/python3/dist-packages/setuptools/build_meta.py", line 311, in run_setup
      exec(code, locals())
    File "<string>", line 18, in <module>
  ModuleNotFoundError: No module named 'torch'
  error: subprocess-exited-with-error

  × Preparing metadata (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> See above for output.

  note: This error originates from a subprocess, and is likely not a problem with pip.
  Preparing metadata (pyproject.toml) ... error
error: metadata-generation-failed

× Encountered error while generating package metadata.
╰─> See above for output.

note: This is an issue with the package mentioned above, not pip.
hint: See above for details.
"""

# Without --verbose pip prints the subprocess's output inside its box, after its line.
PIP_BOXED = """\
$ pip wheel . --no-deps
  error: subprocess-exited-with-error

  × Getting requirements to build wheel did not run successfully.
  │ exit code: 1
  ╰─> [6 lines of output]
      /site/torch/_subclasses/functional_tensor.py:276: UserWarning: Failed to initialize NumPy: No module named 'numpy'
      Traceback (most recent call last):
        File "<string>", line 12, in <module>
      RuntimeError: CUDA_HOME is not set
      [end of output]
ERROR: Failed to build installable wheels for some pyproject.toml based projects (vllm)
"""

CMAKE = """\
$ cmake -S /src -B /b -G Ninja
-- The CXX compiler identification is GNU 12.2.0
CMake Error at CMakeLists.txt:12 (find_package):
  By not providing "FindTorch.cmake" in CMAKE_MODULE_PATH this project has
  asked CMake to find a package configuration file provided by "Torch", but
-- Configuring incomplete, errors occurred!
"""

# The configure step's try-compile output had an error line; the build step failed.
NINJA = """\
$ cmake -S /src -B /b -G Ninja
-- Performing Test HAVE_X - Failed: fatal error: x.h: No such file or directory
-- Configuring done
$ cmake --build /b -j 2
[1/4] Building CUDA object CMakeFiles/_C.dir/csrc/kernels.cu.o
FAILED: CMakeFiles/_C.dir/csrc/kernels.cu.o
/src/csrc/kernels.cu(12): error: identifier "fp4_t" is undefined
1 error detected in the compilation of "/src/csrc/kernels.cu".
ninja: build stopped: subcommand failed.
"""

ONLY_PIP = """\
$ pip wheel . --no-deps
error: subprocess-exited-with-error
╰─> See above for output.
"""


@pytest.mark.parametrize(
    ("log", "why"),
    [
        (PIP_VERBOSE, "ModuleNotFoundError: No module named 'torch'"),
        (PIP_BOXED, "RuntimeError: CUDA_HOME is not set"),
        (
            CMAKE,
            "CMake Error at CMakeLists.txt:12 (find_package): By not providing "
            '"FindTorch.cmake" in CMAKE_MODULE_PATH this project has',
        ),
        (NINJA, '/src/csrc/kernels.cu(12): error: identifier "fp4_t" is undefined'),
        (ONLY_PIP, "error: subprocess-exited-with-error"),  # nothing better: pip's line
        ("$ cmake --build /b\nninja: no work to do.\n", None),
    ],
    ids=["pip-verbose", "pip-boxed", "cmake", "ninja-after-configure", "only-pip", "none"],
)
def test_the_failed_steps_own_error_line_is_picked(
    tmp_path: Path, log: str, why: str | None
) -> None:
    path = tmp_path / "cell.log"
    path.write_text(log)
    assert scan_log(path).first_error == why


class FailingBackend:
    """A pip build that fails as vLLM's does without torch."""

    name = "local"

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        job.log.write(PIP_VERBOSE.encode())
        raise BuildError("wheel failed (exit 1)")


def test_the_console_and_the_cell_name_the_real_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import building

    monkeypatch.setattr(building.backends, "make_backend", lambda *a, **k: FailingBackend())
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cellcache.LIMIT_VARIABLE, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text(
        "project: {source: src, build: pip, artifacts: ['dist/*.whl']}\n"
        "cuda: ['13.0']\narchs: ['12.1a']\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.1']}}\n"
    )
    assert main(["run", "m.yaml", "--out", "out"]) == 3
    why = "cu13.0-12.1a: wheel failed (exit 1): ModuleNotFoundError: No module named 'torch'"
    assert why in capsys.readouterr().out
