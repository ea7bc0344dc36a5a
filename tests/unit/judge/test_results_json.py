"""results.json: the merged run validates against its published JSON Schema and reads
back exactly like the cell files it was merged from."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from report_data import sample_results

from orchestrator.common.errors import InputFileError
from orchestrator.common.yamlfile import schema
from orchestrator.judge.baseline import summarize
from orchestrator.judge.compare import diff_results
from orchestrator.judge.results import load_results
from orchestrator.reporting.writers import merged_json, write_all


def validator() -> jsonschema.Draft202012Validator:
    doc = schema("results.schema.json")
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def test_merged_results_validate_against_the_schema(tmp_path: Path) -> None:
    results = sample_results()
    diff = diff_results(summarize(results[:1]), results)
    validator().validate(merged_json(results, exit_code=1, diff=diff))
    write_all(results, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    validator().validate(data)
    assert data["run"]["status_counts"] == {
        "failed": 1,
        "error": 1,
        "not-run": 1,
        "passed": 1,
        "skipped": 2,
    }
    assert data["run"]["exit_code"] == 1


def test_each_cell_file_validates_as_a_cell() -> None:
    defs = schema("results.schema.json")["$defs"]
    cell = jsonschema.Draft202012Validator({"$ref": "#/$defs/cellResult", "$defs": defs})
    for result in sample_results():
        cell.validate(result.to_json())


def test_the_schema_rejects_what_it_should() -> None:
    data = merged_json(sample_results())
    data["cells"][0]["status"] = "green"
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(data)


def test_results_json_reads_back_like_the_cells(tmp_path: Path) -> None:
    results = sample_results()
    for result in results:
        result.write(tmp_path / "run")
    write_all(load_results([tmp_path / "run"]), tmp_path / "out")
    again = load_results([tmp_path / "out" / "results.json"])
    assert sorted(r.to_json()["cell"]["id"] for r in again) == sorted(r.id for r in results)
    by_id = {r.id: r.to_json() for r in again}
    for result in results:
        assert by_id[result.id] == result.to_json()


def test_unreadable_results_are_input_errors(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text("[]")
    with pytest.raises(InputFileError):
        load_results([bad])
    with pytest.raises(InputFileError):
        load_results([tmp_path / "missing.json"])
