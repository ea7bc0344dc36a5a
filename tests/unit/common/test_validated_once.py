"""A configuration file is validated against its schema once per content: a repeated
``check`` reads its families file without importing jsonschema again."""

from __future__ import annotations

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
