"""No option is silently ignored (a wrong one is exit 2 with one line), and --resume
continues the run it names with the options that run was started with."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.run import runner

MATRIX = """\
project:
  source: src
cuda: ["12.9", "13.0"]
archs: ["9.0a"]
families:
  nvfp4:
    sources: [nvfp4_*.cu]
    devices: ["10.0", "12.1"]
"""


@pytest.fixture
def matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "src").mkdir()
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX)
    return path


def fake_toolkit(home: Path, release: str) -> Path:
    """A directory with a bin/nvcc that answers --version like the real one."""
    major, minor, _ = release.split(".")
    nvcc = home / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        f'#!/bin/sh\necho "Cuda compilation tools, release {major}.{minor}, V{release}"\n'
    )
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return home


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("kernel-matrix: error: ")
    return err[0]


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_cuda_home_without_a_toolkit_is_a_usage_error(
    verb: str, matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    argv = [verb, str(matrix), "--only", "cu12.9-9.0a", "--cuda-home", str(missing)]
    assert main(argv) == 2
    assert f"--cuda-home {missing}: no CUDA toolkit there" in error_line(capsys)


def test_a_cuda_home_of_a_version_no_cell_uses_is_a_usage_error(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = fake_toolkit(tmp_path / "cuda-12.4", "12.4.131")
    argv = ["run", str(matrix), "--only", "cu12.9-9.0a", "--cuda-home", str(home)]
    assert main(argv) == 2
    line = error_line(capsys)
    assert "holds CUDA 12.4.131, which no cell of this run builds with (CUDA 12.9)" in line


def test_two_cuda_homes_of_one_version_are_a_usage_error(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = fake_toolkit(tmp_path / "a", "12.9.41")
    second = fake_toolkit(tmp_path / "b", "12.9.86")
    argv = ["plan", str(matrix), "--cuda-home", str(first), "--cuda-home", str(second)]
    assert main(argv) == 2
    assert "both hold CUDA 12.9" in error_line(capsys)


def test_a_cuda_home_of_the_cells_version_is_planned(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = fake_toolkit(tmp_path / "cuda-12.9", "12.9.86")
    argv = ["plan", str(matrix), "--only", "cu12.9-9.0a", "--cuda-home", str(home)]
    assert main([*argv, "--format", "json"]) == 0
    (cell,) = json.loads(capsys.readouterr().out)["cells"]
    assert cell["status"] == "planned"


def test_cuda_home_variable_without_a_toolkit_is_an_error_and_another_version_a_note(
    matrix: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "nothing"))
    assert main(["plan", str(matrix), "--format", "json"]) == 2
    assert "CUDA_HOME=" in error_line(capsys)
    monkeypatch.setenv("CUDA_HOME", str(fake_toolkit(tmp_path / "cuda-12.4", "12.4.131")))
    assert main(["plan", str(matrix), "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert "CUDA_HOME=" in err and "holds CUDA 12.4.131" in err and "not used" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "docker", "--cuda-home", "/x"], "--cuda-home is for the local backend"),
        (["--docker-base-image", "img:1"], "--docker-base-image is for the docker backend"),
        (["--docker-toolchain", "mount"], "--docker-toolchain is for the docker backend"),
        (["--tier", "configure", "--engine", "cuobjdump"], "the configure tier builds no"),
    ],
)
def test_options_the_run_would_ignore_are_usage_errors(
    extra: list[str], message: str, matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(matrix), *extra]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("verb", ["probe", "check"])
def test_cuobjdump_with_the_native_engine_is_a_usage_error(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [verb, str(tmp_path), "--cuobjdump", "/usr/bin/cuobjdump"]
    if verb == "check":
        argv += ["--families", str(tmp_path / "f.yaml")]
    assert main(argv) == 2
    assert "--cuobjdump /usr/bin/cuobjdump is for --engine cuobjdump" in error_line(capsys)


def test_errors_have_one_prefix_and_a_mistyped_verb_gets_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run"]) == 2
    assert error_line(capsys) == (
        "kernel-matrix: error: run: the following arguments are required: matrix"
    )
    assert main(["rnu", "matrix.yaml"]) == 2
    assert "invalid choice 'rnu' (did you mean 'run'?)" in error_line(capsys)
    assert main(["plan", "m.yaml", "--format", "jsno"]) == 2
    assert "plan: --format: invalid choice 'jsno' (did you mean 'json'?)" in error_line(capsys)


# --- --resume --------------------------------------------------------------------------


def first_run(matrix: Path, out: Path, build: Path) -> dict[str, Any]:
    """A run whose only cell is skipped (CUDA 12.9 without a toolkit): nothing builds,
    but run.json is written as for any run."""
    argv = ["run", str(matrix), "--only", "cu12.9-9.0a", "--out", str(out)]
    argv += ["--build-dir", str(build), "--no-cache", "--jobs", "1", "--timeout", "99"]
    assert main(argv) == 0
    options: dict[str, Any] = json.loads((out / "run.json").read_text())["options"]
    return options


def test_a_run_records_its_options_and_resume_reuses_them(
    matrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, build = tmp_path / "out", tmp_path / "DIR"
    recorded = first_run(matrix, out, build)
    assert recorded["build_dir"] == str(build) and recorded["no_cache"] is True
    assert recorded["only"] == ["cu12.9-9.0a"] and recorded["tier"] == "build"
    assert recorded["jobs"] == 1 and recorded["timeout"] == 99

    seen: list[runner.RunOptions] = []

    def run_cells(*args: Any, **kwargs: Any) -> list[Any]:
        seen.append(args[3])
        return []

    monkeypatch.setattr(runner, "run_cells", run_cells)
    assert main(["run", str(matrix), "--resume", "--out", str(out)]) == 0
    (options,) = seen
    assert options.build_root == build.absolute()
    assert options.use_cache is False
    assert (options.jobs, options.timeout) == (1, 99)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--build-dir", "elsewhere"], "--build-dir"),
        (["--tier", "configure"], "--tier"),
        (["--only", "cu13.0-9.0a"], "--only"),
        (["--jobs", "2"], "--jobs"),
    ],
)
def test_resume_with_a_conflicting_option_is_a_usage_error(
    extra: list[str],
    named: str,
    matrix: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    first_run(matrix, out, tmp_path / "DIR")
    capsys.readouterr()
    assert main(["run", str(matrix), "--resume", "--out", str(out), *extra]) == 2
    line = error_line(capsys)
    assert f"--resume: {out} was run with {named} " in line


def test_probe_jobs_with_the_cuobjdump_engine_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["probe", str(tmp_path), "--engine", "cuobjdump", "--jobs", "2"]) == 2
    assert "--jobs is for the native engine" in error_line(capsys)


def test_plan_passes_each_step_its_own_toolkit_and_refuses_one_github_cannot_see(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = fake_toolkit(tmp_path / "cuda-12.9", "12.9.86")
    argv = ["plan", str(matrix), "--cuda-home", str(home)]
    assert main([*argv, "--format", "github"]) == 2
    assert "--cuda-home with --format github" in error_line(capsys)
    assert main([*argv, "--format", "buildkite"]) == 0
    steps = [line for line in capsys.readouterr().out.splitlines() if "kernel-matrix run" in line]
    assert len(steps) == 2  # cu12.9-9.0a (with the toolkit) and cu13.0-9.0a (PyPI)
    (cu129,) = [s for s in steps if "cu12.9-9.0a" in s]
    (cu130,) = [s for s in steps if "cu13.0-9.0a" in s]
    assert f"--cuda-home {home}" in cu129 and "--cuda-home" not in cu130


def test_resume_with_another_matrix_is_a_usage_error(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first_run(matrix, out, tmp_path / "DIR")
    other = tmp_path / "other.yaml"
    other.write_text(MATRIX)
    capsys.readouterr()
    assert main(["run", str(other), "--resume", "--out", str(out)]) == 2
    assert f"was run with MATRIX {matrix}, not {other}" in error_line(capsys)


def test_resume_of_a_run_that_recorded_no_options_says_so(
    matrix: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    first_run(matrix, out, tmp_path / "DIR")
    run_json = json.loads((out / "run.json").read_text())
    del run_json["options"]  # as an older version wrote it
    (out / "run.json").write_text(json.dumps(run_json))
    capsys.readouterr()
    assert main(["run", str(matrix), "--resume", "--out", str(out), "--only", "cu12.9-9.0a"]) == 0
    assert "records no options (an older run)" in capsys.readouterr().out
