"""A configure-tier run is never compared with a build-tier one (issue 35, item 7):
the configure tier predicts kernels from CMake's source lists, the build tier reads
them from the libraries, so such a comparison reported kernels lost that were not.
``diff`` and ``compare`` refuse it in one line (exit 2); a baseline records each
cell's tier (an older baseline without it was built)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.archs import Target
from orchestrator.cli import main
from orchestrator.judge.baseline import load_baseline, save_baseline, summarize
from orchestrator.judge.expect import PRESENT, Verdict
from orchestrator.judge.results import PASSED, CellResult
from orchestrator.read.inventory import PREDICTED, CodeObject, Inventory, Kernel, Library

CELL = {"id": "cu13.0-12.0a", "cuda": "13.0", "archs": "12.0a", "devices": ["12.0"]}


def run(tmp_path: Path, name: str, tier: str) -> Path:
    """A finished run of one passing cell; the build tier read a library, the
    configure tier predicted the kernel from its source."""
    if tier == "build":
        kernel = Kernel("nvfp4_quant(float*)", "_Z11nvfp4_quantPf", 4096, 120, hollow=False)
    else:  # (the configure tier names a kernel as its source declares it)
        kernel = Kernel("nvfp4_quant", "nvfp4_quant", 0, PREDICTED, hollow=False)
    cubin = CodeObject(Target.parse("sm_120a"), (kernel,), ("nvfp4_quant_kernels.cu",))
    library = Library(path="_C.so", cubins=(cubin,))
    result = CellResult(
        cell=CELL,
        status=PASSED,
        tier=tier,
        inventory=Inventory(libraries=(library,)),
        verdicts=[Verdict("nvfp4", "12.0", PRESENT, served_by=("sm_120a",))],
    )
    out = tmp_path / name
    result.write(out)
    return out


@pytest.mark.parametrize("verb", ["compare", "diff"])
def test_a_configure_run_and_a_build_run_are_not_compared(
    tmp_path: Path, verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    built, predicted = run(tmp_path, "built", "build"), run(tmp_path, "predicted", "configure")
    if verb == "diff":
        base = tmp_path / "baseline.json"
        assert main(["baseline", "save", str(built), "--out", str(base)]) == 0
        capsys.readouterr()
        argv = ["diff", str(base), str(predicted)]
    else:
        argv = ["compare", str(built), str(predicted)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(
        "kernel-matrix: error: cannot compare a build-tier run with a configure-tier one "
        "(cell cu13.0-12.0a is build-tier in the base, configure-tier in the head)"
    )
    assert "regression" not in captured.out


def test_runs_of_one_tier_compare(tmp_path: Path) -> None:
    one, two = run(tmp_path, "one", "configure"), run(tmp_path, "two", "configure")
    assert main(["compare", str(one), str(two)]) == 0


def test_a_baseline_keeps_the_tier_and_an_old_one_reads_as_built(tmp_path: Path) -> None:
    from orchestrator.judge.results import load_results

    path = tmp_path / "baseline.json"
    save_baseline(summarize(load_results([run(tmp_path, "p", "configure")])), path)
    assert load_baseline(path).cells["cu13.0-12.0a"].tier == "configure"
    data = json.loads(path.read_text())
    del data["cells"]["cu13.0-12.0a"]["tier"]  # as written before the key existed
    path.write_text(json.dumps(data))
    assert load_baseline(path).cells["cu13.0-12.0a"].tier == "build"
