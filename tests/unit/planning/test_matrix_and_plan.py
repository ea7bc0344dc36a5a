"""The matrix file, its validation errors (file:line:col), and planning into cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.common.errors import ConfigError, UsageError
from orchestrator.planning.matrix import load_matrix
from orchestrator.planning.plan import (
    PLANNED,
    TOOLCHAIN_UNAVAILABLE,
    UNSUPPORTED,
    github_matrix,
    plan,
)

REPO = Path(__file__).resolve().parents[3]

FAMILIES = """\
families:
  nvfp4:
    sources: [nvfp4_*.cu]
    devices: ["10.0", "12.1"]
"""


def write_matrix(tmp_path: Path, body: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "matrix.yaml"
    path.write_text(body)
    return path


BASE = """\
project:
  source: src
cuda: ["12.9", "13.0"]
archs: ["9.0a", "12.1a"]
families:
  nvfp4:
    sources: [nvfp4_*.cu]
    devices: ["10.0", "12.1"]
"""


def test_default_matrix_covers_card_archs_and_both_cuda_majors() -> None:
    matrix = load_matrix(REPO / "matrix.yaml")
    cells = plan(matrix)
    archs = {";".join(str(a) for a in c.archs) for c in cells}
    assert {"9.0a", "10.0f", "12.0a", "12.1a", "12.1f"} <= archs
    assert any(len(c.archs) > 1 for c in cells)
    assert {c.cuda.major for c in cells} == {12, 13}
    by_id = {c.id: c for c in cells}
    assert by_id["cu12.8-12.1a"].status == UNSUPPORTED
    assert "sm_121 is new in CUDA 12.9" in (by_id["cu12.8-12.1a"].reason or "")
    assert by_id["cu12.8-10.0f"].status == UNSUPPORTED
    assert by_id["cu13.0-12.1a"].status == PLANNED
    # CUDA 12.4 comes from Debian's packages: its 9.0a cell builds where this host can
    # fetch them (else it says why); sm_100+ is the toolkit's limit, not the host's.
    assert by_id["cu12.4-9.0a"].status in (PLANNED, TOOLCHAIN_UNAVAILABLE)
    if by_id["cu12.4-9.0a"].status == TOOLCHAIN_UNAVAILABLE:
        assert "from Debian's non-free archive" in (by_id["cu12.4-9.0a"].reason or "")
    assert by_id["cu12.4-10.0f"].status == UNSUPPORTED
    assert "sm_100 is new in CUDA 12.8" in (by_id["cu12.4-10.0f"].reason or "")
    assert "sm_120 is new in CUDA 12.8" in (by_id["cu12.4-12.0a"].reason or "")
    assert (
        by_id["cu12.8-9.0a"].status == TOOLCHAIN_UNAVAILABLE or by_id["cu12.8-9.0a"].reason is None
    )
    assert {f.name for f in matrix.families} >= {"nvfp4", "scaled_mm_sm120", "mla_sm100"}


def test_plan_json_lists_every_cell_with_gencode_and_reasons(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", str(REPO / "matrix.yaml"), "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert len(cells) == 30
    cell = next(c for c in cells if c["id"] == "cu13.0-9.0a_10.0f_12.0a_12.1a")
    assert cell["gencode"][:2] == ["-gencode", "arch=compute_90a,code=sm_90a"]
    assert cell["devices"] == ["9.0", "10.0", "12.0", "12.1"]
    assert all({"id", "cuda", "archs", "gencode", "status", "reason"} <= set(c) for c in cells)
    skipped = [c for c in cells if c["status"] != PLANNED]
    assert skipped and all(c["reason"] for c in skipped)


def test_cuda_12_without_a_toolkit_is_toolchain_unavailable_with_remedy(tmp_path: Path) -> None:
    matrix = load_matrix(write_matrix(tmp_path, BASE))
    cell = next(c for c in plan(matrix, cuda_homes=[tmp_path / "none"]) if str(c.cuda) == "12.9")
    # (a real system CUDA 12.9 would make it planned; this machine has none)
    if cell.status != PLANNED:
        assert cell.status == TOOLCHAIN_UNAVAILABLE
        assert "--cuda-home" in (cell.reason or "") and "--backend docker" in (cell.reason or "")


def test_github_format_only_has_runnable_cells(tmp_path: Path) -> None:
    matrix = load_matrix(write_matrix(tmp_path, BASE))
    gh = github_matrix(plan(matrix, backend="docker"))
    assert [e["cell"] for e in gh["include"]] == [
        "cu12.9-9.0a",
        "cu12.9-12.1a",
        "cu13.0-9.0a",
        "cu13.0-12.1a",
    ]


def test_include_exclude_and_options(tmp_path: Path) -> None:
    body = BASE + (
        "exclude:\n  - {cuda: '12.9'}\n"
        "include:\n  - {cuda: '13.0', archs: '12.1a', name: bug, "
        "cmake_options: {BUG: true, N: 3}}\n"
    )
    cells = load_matrix(write_matrix(tmp_path, body)).cells
    assert [c.id for c in cells] == ["cu13.0-9.0a", "cu13.0-12.1a", "cu13.0-12.1a-bug"]
    assert cells[-1].cmake_options == {"BUG": "ON", "N": "3"}


def test_only_selects_cells_and_rejects_unknown(tmp_path: Path) -> None:
    matrix = load_matrix(write_matrix(tmp_path, BASE))
    assert [c.id for c in plan(matrix, only=["cu13.0-9.0a"])] == ["cu13.0-9.0a"]
    with pytest.raises(UsageError, match="no cell 'cu9-x'"):
        plan(matrix, only=["cu9-x"])


def test_families_file_reference(tmp_path: Path) -> None:
    (tmp_path / "families.yaml").write_text(FAMILIES)
    body = BASE.split("families:")[0] + "families: families.yaml\n"
    matrix = load_matrix(write_matrix(tmp_path, body))
    assert [f.name for f in matrix.families] == ["nvfp4"]


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        (
            BASE.replace("archs: [", 'archs: ["9.5", '),
            ":4:",
            "archs[0]: unknown architecture '9.5'",
        ),
        (BASE.replace('"12.1a"', '"12.1x"'), ":4:", "archs[1]: malformed architecture '12.1x'"),
        (BASE.replace('"12.9"', '"12.7"'), ":3:", "cuda[0]: unknown CUDA version '12.7'"),
        (BASE.replace('"12.9"', '"twelve"'), ":3:", "cuda[0]: malformed CUDA version 'twelve'"),
        (BASE + "colour: red\n", ":9:1:", "unknown key 'colour'"),
        (
            BASE.replace("  source: src", "  source: src\n  sauce: x"),
            ":3:3:",
            "project.sauce: unknown key 'sauce' (allowed: arch_variable",
        ),
        (BASE.replace('archs: ["9.0a", "12.1a"]', "archs: 9.0a"), ":4:", "archs: expected array"),
        (
            BASE.replace('archs: ["9.0a", "12.1a"]', "archs: []"),
            ":4:",
            "archs: [] should be non-empty",
        ),
        (BASE.replace('archs: ["9.0a", "12.1a"]', 'archs: [""]'), ":4:", "archs[0]"),
        (BASE.replace("source: src", "source: nowhere"), ":2:", "project.source: source directory"),
        (
            BASE.replace('devices: ["10.0", "12.1"]', 'devices: ["12.1a"]'),
            ":8:",
            "not a device compute capability",
        ),
        (BASE.replace("sources: [nvfp4_*.cu]", "kernels: ['fp4[']"), ":7:", "invalid regex"),
        (BASE + "backend: podman\n", ":9:", "backend: 'podman' is not one of 'local', 'docker'"),
        (BASE + "timeout: -5\n", ":9:", "timeout: -5 is less than the minimum of 1"),
        (BASE + "cuda: ['13.0']\n", ":9:1:", "duplicate key 'cuda'"),
        ("project: [\n", ":2:", "invalid YAML"),
        (
            BASE.replace('archs: ["9.0a", "12.1a"]', 'archs: ["9.0a", "sm_90a"]'),
            ":4:",
            "duplicate cell 'cu12.9-9.0a'",
        ),
        ("project:\n  source: src\nfamilies: {}\n", ":3:", "families"),
        (
            "project:\n  source: src\ncuda: [13.0]\narchs: [9.0a]\nfamilies: f.yaml\n",
            "",
            "no such families file",
        ),
        (
            "project:\n  source: src\ncuda: ['13.0']\n" + FAMILIES,
            ":1:1:",
            "the matrix has no cells",
        ),
    ],
)
def test_bad_matrices_are_one_line_errors_with_position(
    tmp_path: Path, body: str, where: str, message: str
) -> None:
    path = write_matrix(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_matrix(path)
    text = str(info.value)
    assert "\n" not in text
    assert message in text
    assert text.startswith(str(path) + where) or (not where and str(tmp_path) in text)


def test_cli_reports_config_errors_as_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_matrix(tmp_path, BASE.replace('"12.1a"', '"12.1q"'))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"kernel-matrix: error: {path}:4:")


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["plan", "matrix.yaml", "--format", "xml"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_docker_settings_can_be_overridden_on_the_command_line() -> None:
    from orchestrator.cli import build_parser, with_docker_overrides

    matrix = load_matrix(REPO / "matrix.yaml")
    args = build_parser().parse_args(
        ["run", "matrix.yaml", "--docker-base-image", "local:base", "--docker-toolchain", "mount"]
    )
    changed = with_docker_overrides(matrix, args)
    assert (changed.docker.base_image, changed.docker.toolchain) == ("local:base", "mount")
    plain = build_parser().parse_args(["run", "matrix.yaml"])
    assert with_docker_overrides(matrix, plain).docker == matrix.docker


def test_buildkite_steps_call_the_cli_directly_with_valid_options(tmp_path: Path) -> None:
    import shlex

    import yaml

    from orchestrator.cli import build_parser
    from orchestrator.planning.plan import plan as plan_cells

    matrix = load_matrix(write_matrix(tmp_path, BASE))
    from orchestrator.planning.ci import buildkite_pipeline

    steps = yaml.safe_load(buildkite_pipeline(matrix, plan_cells(matrix, backend="docker")))[
        "steps"
    ]
    cells = [s for s in steps if s["key"].startswith("cell-")]
    assert len(cells) == 4
    for step in cells:
        install, command = step["command"].split(" && ")
        assert "nox" not in step["command"] and "pip install" in install
        argv = shlex.split(command)
        assert argv[:2] == ["kernel-matrix", "run"]
        args = build_parser().parse_args(argv[1:])  # every option exists
        assert args.matrix == matrix.path and len(args.only) == 1
