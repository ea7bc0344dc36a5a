"""Fuzz the loaders of users' files and of read-back artifacts with atheris
(libFuzzer, coverage guided), for longer than ``tests/unit/common/test_config_fuzz.py`` can
run in CI. ``KERNEL_MATRIX_FUZZ`` picks the target:

``yaml``   the bytes are a matrix file: ``load_matrix`` and ``load_families_or_matrix``
           return or raise ConfigError;
``json``   the bytes are a cell result, a results.json, a baseline and a history
           file in turn: each loader returns or raises InputFileError, and a result
           that loads can be reported (``write_all``) without another exception;
``regex``  the first line is a family regex, the rest are kernel names: the rule is
           refused at load (ConfigError) or every match returns or is refused, in
           one line, within its time limit.

Every error must be one line. libFuzzer reports any other exception with its
input, a hang (``-timeout``) and memory beyond ``-rss_limit_mb``.

    pip install atheris
    python fuzz/fuzz_config.py --make-corpus fuzz/corpus-yaml     # (json, regex alike)
    KERNEL_MATRIX_FUZZ=yaml python fuzz/fuzz_config.py fuzz/corpus-yaml \\
        -rss_limit_mb=1024 -timeout=10 -max_total_time=600 -print_final_stats=1 \\
        -artifact_prefix=fuzz/artifacts/
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["orchestrator"]):
    from orchestrator.common.errors import ConfigError, InputFileError, KernelMatrixError
    from orchestrator.judge.baseline import load_baseline
    from orchestrator.judge.results import load_cell_result, load_merged
    from orchestrator.planning.matrix import load_families_or_matrix, load_matrix
    from orchestrator.reporting.history import load_history
    from orchestrator.reporting.writers import write_all
    from orchestrator.symbols import FamilyRule

TARGET = os.environ.get("KERNEL_MATRIX_FUZZ", "yaml")
WORK = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
(WORK / "src").mkdir()


def one_line(exc: Exception) -> None:
    if "\n" in str(exc):
        raise AssertionError(f"a multi-line error: {exc!r}") from None


def fuzz_yaml(data: bytes) -> None:
    path = WORK / "m.yaml"
    path.write_bytes(data)
    for loader in (load_matrix, load_families_or_matrix):
        try:
            loader(path)
        except ConfigError as exc:
            one_line(exc)


def fuzz_json(data: bytes) -> None:
    for name, loader in (
        ("cell.json", load_cell_result),
        ("results.json", load_merged),
        ("baseline.json", load_baseline),
        ("history.json", load_history),
    ):
        path = WORK / name
        path.write_bytes(data)
        try:
            loaded = loader(path)
        except InputFileError as exc:
            one_line(exc)
            continue
        results = [loaded] if name == "cell.json" else loaded if name == "results.json" else []
        if results:
            try:
                write_all(results, WORK / "out")
            except KernelMatrixError as exc:
                one_line(exc)


def fuzz_regex(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    pattern, _, rest = text.partition("\n")
    try:
        rule = FamilyRule("f", (), kernels=(pattern,), log=(pattern,))
    except ConfigError as exc:
        one_line(exc)
        return
    for name in rest.split("\n")[:16]:
        try:
            rule.matches_kernel(name, ())
            rule.explains(name)
        except ConfigError as exc:
            one_line(exc)


TARGETS = {"yaml": fuzz_yaml, "json": fuzz_json, "regex": fuzz_regex}


def make_corpus(target: Path) -> None:
    """Seeds for every target into ``target`` (valid inputs the fuzzer mutates)."""
    target.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    (target / "matrix.yaml").write_bytes((root / "matrix.yaml").read_bytes())
    (target / "families.yaml").write_bytes(
        (root / "examples/sample_ext/families.yaml").read_bytes()
    )
    (target / "results.json").write_bytes(
        (root / "tests/fixtures/reports/results.json").read_bytes()
    )
    cells = json.loads((target / "results.json").read_text())["cells"]
    (target / "cell.json").write_text(json.dumps(cells[0]))
    (target / "history.json").write_text(
        json.dumps(
            {
                "schema_version": 1,
                "runs": [
                    {"run": "r", "written": "w", "dir": "d", "counts": {"passed": 1},
                     "failing": 0, "baseline": "d/baseline.json", "regressions": None}
                ],
            }
        )
    )  # fmt: skip
    (target / "regex.txt").write_text(
        "marlin(::|\\d+)Marlin(<|I)\nvoid marlin::Marlin<float>()\n(?<!mxfp4_)cvt_fp16_to_fp4\n"
    )


def main() -> None:
    if sys.argv[1:2] == ["--make-corpus"]:
        make_corpus(Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, TARGETS[TARGET])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
