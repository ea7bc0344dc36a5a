"""A repeated check answered from the output it printed before (orchestrator.cli.answers):
the same bytes but for its own time, the same exit code, nothing else imported -- and
never once an input changed, or for a check whose answer depends on more than its
files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synth import hollow_body, working_body
from test_check import GEMM, QUANT, cubin, library, make_wheel

from orchestrator.cli import main
from orchestrator.common.errors import EXIT_KERNEL_MISSING, EXIT_OK

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = (
    "families:\n"
    "  nvfp4:\n    kernels: ['quant_kernel']\n    libraries: ['_C.*']\n    devices: ['12.0']\n"
    "  scaled_mm_sm120:\n    kernels: ['scaled_mm_sm120_fp8']\n    libraries: ['_C.*']\n"
    "    devices: ['12.0']\n"
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(cache))
    return cache / "answers"


@pytest.fixture
def families(tmp_path: Path) -> Path:
    path = tmp_path / "families.yaml"
    path.write_text(FAMILIES)
    return path


def working_wheel(tmp_path: Path) -> Path:
    return make_wheel(
        tmp_path,
        library(cubin(120, "", (QUANT, working_body(40)), (GEMM, working_body(40)))),
    )


def no_verb_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command line is parsed: the answer must come from the
    kept output alone."""

    def refuse(*args: object, **kwargs: object) -> int:
        raise AssertionError("the check ran again")

    monkeypatch.setattr("orchestrator.cli.command.main", refuse)


def answered(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def without_seconds(out: str) -> dict[str, object]:
    return {k: v for k, v in json.loads(out).items() if k != "seconds"}


def test_a_repeated_check_prints_the_same_answer_without_running(
    tmp_path: Path,
    families: Path,
    own_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", str(working_wheel(tmp_path)), "--families", str(families), "--json"]
    first = answered(argv, capsys)
    assert first[0] == EXIT_OK
    assert len(list(own_cache.iterdir())) == 1
    no_verb_run(monkeypatch)
    again = answered(argv, capsys)
    assert again[0] == first[0]
    assert without_seconds(again[1]) == without_seconds(first[1])
    assert json.loads(again[1])["seconds"] < 1  # its own time, not the first check's
    # The table: the same lines, the verdict line with the replay's time.
    monkeypatch.undo()
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(own_cache.parent))
    table = answered(argv[:-1], capsys)
    no_verb_run(monkeypatch)
    table_again = answered(argv[:-1], capsys)
    assert table_again[0] == table[0] == EXIT_OK
    assert table_again[1].splitlines()[:-1] == table[1].splitlines()[:-1]
    assert table_again[1].splitlines()[-1].endswith("s, exit 0)")


def test_a_changed_wheel_is_judged_again_and_a_lost_kernel_fails(
    tmp_path: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = working_wheel(tmp_path)
    argv = ["check", str(wheel), "--families", str(families), "--json"]
    assert answered(argv, capsys)[0] == EXIT_OK
    stat = wheel.stat()
    make_wheel(tmp_path, library(cubin(120, "", (QUANT, working_body(40)), (GEMM, hollow_body()))))
    os.utime(wheel, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time
    code, out, _ = answered(argv, capsys)
    assert code == EXIT_KERNEL_MISSING
    assert json.loads(out)["families"]["scaled_mm_sm120"]["hollow_in"] == ["sm_120"]


def test_a_changed_families_file_is_read_again(
    tmp_path: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = working_wheel(tmp_path)
    matrix = tmp_path / "matrix.yaml"  # the families file is named inside it
    matrix.write_text(
        "project: {name: x, source: ., build: cmake}\n"
        "cuda: ['13.0']\narchs: ['12.0']\nfamilies: families.yaml\n"
    )
    argv = ["check", str(wheel), "--families", str(matrix), "--json"]
    first = answered(argv, capsys)
    assert list(json.loads(first[1])["families"]) == ["nvfp4", "scaled_mm_sm120"]
    families.write_text(FAMILIES.replace("scaled_mm_sm120:", "scaled_mm_sm120_renamed:"))
    again = answered(argv, capsys)
    assert list(json.loads(again[1])["families"]) == ["nvfp4", "scaled_mm_sm120_renamed"]


def test_a_file_that_shadows_a_shipped_profile_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["check", str(working_wheel(tmp_path)), "--families", "vllm", "--json"]
    shipped = answered(argv, capsys)
    assert "nvfp4_quant" in json.loads(shipped[1])["families"]
    (tmp_path / "vllm").write_text(FAMILIES.replace("nvfp4:", "mine:"))
    code, out, _ = answered(argv, capsys)
    assert list(json.loads(out)["families"]) == ["mine", "scaled_mm_sm120"]
    assert code == EXIT_OK


def test_another_terminal_width_is_rendered_again(
    tmp_path: Path,
    families: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check", str(working_wheel(tmp_path)), "--families", str(families)]
    answered(argv, capsys)
    monkeypatch.setenv("COLUMNS", "100")
    no_verb_run(monkeypatch)
    with pytest.raises(AssertionError, match="ran again"):
        main(argv)


@pytest.mark.parametrize("extra", [["--no-cache"], ["--engine", "cuobjdump"]])
def test_checks_that_depend_on_more_than_their_files_are_not_kept(
    tmp_path: Path,
    families: Path,
    own_cache: Path,
    extra: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    wheel = working_wheel(tmp_path)
    main(["check", str(tmp_path), "--families", str(families), "--json"])  # a directory
    main(["check", str(wheel), "--families", str(families), "--json", *extra])
    capsys.readouterr()
    assert not own_cache.exists()


def test_an_answer_imports_nothing_but_its_own_module(tmp_path: Path, families: Path) -> None:
    argv = ["check", str(working_wheel(tmp_path)), "--families", str(families), "--json"]
    script = (
        "import sys\nfrom orchestrator.cli import main\ncode = main(sys.argv[1:])\n"
        "print(sorted(m for m in sys.modules if m.startswith('orchestrator')), file=sys.stderr)\n"
        "sys.exit(code)"
    )
    env = {**os.environ, "KERNEL_MATRIX_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [EXIT_OK, EXIT_OK]
    assert without_seconds(runs[0].stdout) == without_seconds(runs[1].stdout)
    assert "orchestrator.judge.check" in runs[0].stderr
    assert runs[1].stderr.strip() == str(
        ["orchestrator", "orchestrator.cli", "orchestrator.cli.answers", "orchestrator.common",
         "orchestrator.common.cachedir"]
    )  # fmt: skip
