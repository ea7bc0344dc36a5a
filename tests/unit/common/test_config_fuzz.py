"""Fuzzing the loaders of what users write and what kernel-matrix reads back: the
YAML configuration (matrix and families files), the JSON artifacts (cell results,
results.json, baselines, history files) and the family regexes. Whatever the input,
each loader returns or raises its one-line error (exit 2), never another exception;
and an artifact that loads is one the reports can be written from (issue 21: wrong
types used to crash later, in the reports).

These run a few hundred examples in CI; ``fuzz/fuzz_config.py`` (atheris, coverage
guided, ``nox -s fuzz``) runs the same contracts for longer. docs/security.md records
what its runs tried.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.common.errors import ConfigError, InputFileError, KernelMatrixError
from orchestrator.common.userregex import MATCH_TIMEOUT_S
from orchestrator.common.yamlfile import _artifact_validator, _fast_validator
from orchestrator.judge.baseline import load_baseline, summarize
from orchestrator.judge.results import exit_code, load_cell_result, load_merged
from orchestrator.planning.matrix import load_families_or_matrix, load_matrix
from orchestrator.reporting.history import load_history
from orchestrator.reporting.writers import write_all
from orchestrator.symbols import FamilyRule

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

MATRIX = {
    "project": {"source": "src", "env": {"A": "1"}, "cmake_options": {"B": True}},
    "cuda": ["13.0"],
    "archs": ["9.0a", "12.1a;12.0f"],
    "include": [{"cuda": "13.0", "archs": "10.0f", "name": "x"}],
    "families": {
        "nvfp4": {"kernels": ["nvfp4"], "devices": ["10.0", "12.1"], "log": ["Not building"]}
    },
}
RESULT: dict[str, Any] = {
    "schema_version": 1,
    "cell": {"id": "cu13.0-9.0a", "cuda": "13.0", "archs": "9.0a", "devices": ["9.0"]},
    "status": "passed",
    "reason": None,
    "duration_s": 1.5,
    "inventory": {
        "libraries": [
            {
                "path": "_C.so",
                "cubins": [
                    {
                        "arch": "sm_90a",
                        "sources": ["a.cu"],
                        "kernels": [
                            {
                                "name": "k",
                                "mangled": "_Z1kv",
                                "size": 64,
                                "instructions": 9,
                                "hollow": False,
                            }
                        ],
                    }
                ],
                "ptx": [],
            }
        ]
    },
    "verdicts": [{"family": "nvfp4", "device": "9.0", "status": "not-applicable", "served_by": []}],
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.integers(-(10**400), 10**400)  # beyond 64 bits: refused at load
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def mutated(document: Any, draw_path: list[int], replacement: Any) -> Any:
    """``document`` with the value reached by following ``draw_path`` (indices into
    each level's keys or items) replaced."""
    if not draw_path or not isinstance(document, dict | list) or not document:
        return replacement
    step, rest = draw_path[0], draw_path[1:]
    if isinstance(document, dict):
        key = list(document)[step % len(document)]
        return {**document, key: mutated(document[key], rest, replacement)}
    index = step % len(document)
    copy = list(document)
    copy[index] = mutated(copy[index], rest, replacement)
    return copy


# --- YAML configuration ------------------------------------------------------------------


def load_config(tmp: Path, text: str | bytes) -> None:
    (tmp / "src").mkdir(exist_ok=True)
    path = tmp / "m.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    for loader in (load_matrix, load_families_or_matrix):
        try:
            loader(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)


@SETTINGS
@given(st.lists(st.integers(0, 50), max_size=5), json_values)
def test_matrix_with_a_value_replaced(tmp_path: Path, where: list[int], replacement: Any) -> None:
    load_config(tmp_path, yaml.safe_dump(mutated(MATRIX, where, replacement)))


@SETTINGS
@given(st.binary(max_size=300))
def test_matrix_of_random_bytes(tmp_path: Path, data: bytes) -> None:
    load_config(tmp_path, b"project: {source: src}\n" + data)


@SETTINGS
@given(st.text(alphabet="[]{}:,-&*!|>'\"#%@`\n\t ab01\x00\x85\ufeff", max_size=200))
def test_matrix_of_yaml_syntax(tmp_path: Path, text: str) -> None:
    load_config(tmp_path, text)


# --- JSON artifacts ----------------------------------------------------------------------

LOADERS = {
    "cell": load_cell_result,
    "results": load_merged,
    "baseline": load_baseline,
    "history": load_history,
}


def valid(kind: str) -> Any:
    if kind == "cell":
        return RESULT
    if kind == "results":
        run = {"tool_version": "0.1.0", "written": "w", "cells": 1}
        return {"schema_version": 1, "run": run, "cells": [RESULT]}
    if kind == "baseline":
        return {
            "schema_version": 1,
            "kind": "kernel-matrix-baseline",
            "cells": {
                "c": {
                    "status": "passed",
                    "families": [
                        {"family": "f", "device": "9.0", "status": "present", "served_by": []}
                    ],
                    "kernels": {"k": [["_C.so", "sm_90a", 64, False]]},
                }
            },
        }
    entry = {"run": "r", "written": "w", "dir": "d", "counts": {"passed": 1}, "failing": 0}
    return {"schema_version": 1, "runs": [{**entry, "baseline": None, "regressions": 0}]}


def load_artifact(tmp: Path, kind: str, data: str | bytes) -> Any:
    path = tmp / ("results.json" if kind == "results" else f"{kind}.json")
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    try:
        return LOADERS[kind](path)
    except InputFileError as exc:
        assert "\n" not in str(exc)
        return None


@pytest.mark.parametrize("kind", LOADERS)
def test_the_valid_artifacts_load(tmp_path: Path, kind: str) -> None:
    assert load_artifact(tmp_path, kind, json.dumps(valid(kind)))


@pytest.mark.parametrize("kind", LOADERS)
@settings(SETTINGS, max_examples=60)
@given(where=st.lists(st.integers(0, 50), max_size=8), replacement=json_values)
def test_artifact_with_a_value_replaced(
    tmp_path: Path, kind: str, where: list[int], replacement: Any
) -> None:
    """A hand-edited artifact either is refused in one line or is one the reports
    and the baseline can be made from without a crash."""
    loaded = load_artifact(tmp_path, kind, json.dumps(mutated(valid(kind), where, replacement)))
    results = loaded if kind == "results" else [loaded] if kind == "cell" and loaded else None
    if results:
        try:
            write_all(results, tmp_path / "out")
            summarize(results)
            exit_code(results)
        except KernelMatrixError as exc:  # e.g. two cells of one id; never a traceback
            assert "\n" not in str(exc)


@pytest.mark.parametrize("kind", LOADERS)
@SETTINGS
@given(data=st.binary(max_size=200))
def test_artifact_of_random_bytes(tmp_path: Path, kind: str, data: bytes) -> None:
    load_artifact(tmp_path, kind, data)


# --- family regexes ----------------------------------------------------------------------

REGEX_ALPHABET = "()[]{}|*+?.^$\\-,:<>=!PaAbBdDsSwWz019_"


@SETTINGS
@given(
    st.text(alphabet=REGEX_ALPHABET, max_size=30),
    st.lists(st.text(alphabet="ab_<>:09 ", max_size=300), max_size=4),
)
def test_family_regexes(pattern: str, names: list[str]) -> None:
    """A pattern is refused in one line at load, or every match of it returns, or is
    refused in one line, within its time limit."""
    try:
        rule = FamilyRule("f", (), kernels=(pattern,), log=(pattern,))
    except ConfigError as exc:
        assert "\n" not in str(exc) and "invalid regex" in str(exc)
        return
    for name in names:
        started = time.monotonic()
        try:
            rule.matches_kernel(name, ())
            rule.explains(name)
        except ConfigError as exc:
            assert "\n" not in str(exc) and "rewrite it" in str(exc)
        assert time.monotonic() - started < 2 * MATCH_TIMEOUT_S + 5


SCHEMAS = {
    "cell": ("results.schema.json", "cellResult"),
    "results": ("results.schema.json", None),
    "baseline": ("baseline.schema.json", None),
    "history": ("history.schema.json", None),
}


@pytest.mark.parametrize("kind", SCHEMAS)
@SETTINGS
@given(where=st.lists(st.integers(0, 50), max_size=8), replacement=json_values)
def test_the_fast_validator_agrees_with_jsonschema(
    kind: str, where: list[int], replacement: Any
) -> None:
    """Artifacts are checked by fastjsonschema (draft 7, compiled) and, when it
    refuses, by jsonschema (draft 2020-12, the reference): what the fast one accepts,
    the reference must accept too, or it would let through what the schema forbids.
    (The other way round costs only time: the reference has the last word.)"""
    name, definition = SCHEMAS[kind]
    document = mutated(valid(kind), where, replacement)
    try:
        _fast_validator(name, definition)(document)
        fast = True
    except fastjsonschema.JsonSchemaException:
        fast = False
    reference = not any(_artifact_validator(name, definition).iter_errors(document))
    assert reference or not fast, document


@pytest.mark.parametrize(
    ("kind", "where", "value"),
    [
        ("cell", ["inventory", "libraries", 0, "cubins", 0, "kernels", 0, "size"], True),
        ("cell", ["duration_s"], "1"),
        ("baseline", ["cells", "c", "kernels", "k", 0, 2], True),
        ("baseline", ["cells", "c", "kernels", "k", 0, 2], -1),
        ("baseline", ["cells", "c", "kernels", "k", 0], ["lib", "sm_90a", 1, False, "extra"]),
        ("history", ["runs", 0, "baseline"], 5),
    ],
)
def test_the_fast_validator_refuses_what_the_schema_forbids(
    kind: str, where: list[str | int], value: Any
) -> None:
    document = json.loads(json.dumps(valid(kind)))
    target = document
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    name, definition = SCHEMAS[kind]
    with pytest.raises(fastjsonschema.JsonSchemaException):
        _fast_validator(name, definition)(document)
    assert any(_artifact_validator(name, definition).iter_errors(document))
