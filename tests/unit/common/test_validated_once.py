"""A configuration file is validated against its schema once per content: a repeated
``check`` reads its families file without importing jsonschema again."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from orchestrator.common import yamlfile
from orchestrator.common.errors import ConfigError

FAMILIES = "families:\n  nvfp4:\n    kernels: ['nvfp4']\n    devices: ['12.1']\n"


@pytest.fixture
def validations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    seen: list[Path] = []
    real = yamlfile._validate

    def counting(document: yamlfile.Document, schema_doc: dict[str, object]) -> None:
        seen.append(document.path)
        real(document, schema_doc)

    monkeypatch.setattr(yamlfile, "_validate", counting)
    return seen


def test_the_same_content_is_validated_once(tmp_path: Path, validations: list[Path]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(FAMILIES)
    second.write_text(FAMILIES)  # another file, the same content
    yamlfile.load_document(first, "families.schema.json")
    yamlfile.load_document(second, "families.schema.json")
    assert validations == [first]
    second.write_text(FAMILIES.replace("12.1", "12.0"))  # changed: validated again
    yamlfile.load_document(second, "families.schema.json")
    assert validations == [first, second]


def test_a_file_that_fails_is_never_marked(tmp_path: Path, validations: list[Path]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAMILIES.replace("kernels:", "kernals:"))
    for _ in range(2):
        with pytest.raises(ConfigError, match="unknown key 'kernals'"):
            yamlfile.load_document(bad, "families.schema.json")
    assert validations == [bad, bad]


def test_the_same_content_under_another_schema_is_validated(
    tmp_path: Path, validations: list[Path]
) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(FAMILIES)
    yamlfile.load_document(path, "families.schema.json")
    with pytest.raises(ConfigError):
        yamlfile.load_document(path, "matrix.schema.json")
    assert validations == [path, path]


def test_a_validated_content_is_not_parsed_again(
    tmp_path: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[Path] = []
    real = yamlfile._parsed

    def counting(path: Path, text: str) -> yamlfile.Document:
        parses.append(path)
        return real(path, text)

    monkeypatch.setattr(yamlfile, "_parsed", counting)
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(FAMILIES)
    second.write_text(FAMILIES)
    parsed = yamlfile.load_document(first, "families.schema.json")
    kept = yamlfile.load_document(second, "families.schema.json")
    assert parses == [first] and validations == [first]
    assert kept.path == second and kept.data == parsed.data
    assert kept.positions == parsed.positions and kept.key_positions == parsed.key_positions
    # an error still points into the file it was read from
    assert kept.where(("families", "nvfp4", "devices", 0)) == f"{second}:4:15"


@pytest.mark.parametrize(
    "data", [{"when": datetime.date(2026, 12, 7)}, {1: "an int key"}, {"x": float("nan")}]
)
def test_what_json_cannot_give_back_exactly_is_not_kept(tmp_path: Path, data: object) -> None:
    # (YAML dates, non-string keys, NaN: such a content is parsed each time)
    assert yamlfile._document_json(yamlfile.Document(tmp_path, data, {}, {})) == ""


def test_a_bad_regex_is_refused_with_its_position_every_time(
    tmp_path: Path, validations: list[Path]
) -> None:
    from orchestrator.symbols import load_families

    path = tmp_path / "a.yaml"
    path.write_text(FAMILIES.replace("['nvfp4']", "['fp4[']"))
    for _ in range(3):  # the schema passes it; the regex check must not be skipped later
        with pytest.raises(ConfigError, match=r"a\.yaml:3:15: families\.nvfp4\.kernels\[0\]"):
            load_families(path)
