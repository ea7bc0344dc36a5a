"""Loading YAML configuration with positions, validated by a JSON Schema.

Every error a user can cause in a configuration file comes out as one line:
``matrix.yaml:12:9: archs[2]: unknown architecture '9.5' ...``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml
from referencing import Registry, Resource

from orchestrator.errors import ArchSpecError, ConfigError

JsonPath = tuple[str | int, ...]
T = TypeVar("T")
# YAML aliases share one node: a few lines can name billions of values ("billion
# laughs") or a value that contains itself. Real configuration files have a few
# hundred values; walking more than this many is refused, like a cycle.
MAX_NODES = 100_000


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """A parsed YAML file and where each value (and each mapping key) stands in it."""

    path: Path
    data: Any
    positions: dict[JsonPath, Position]
    key_positions: dict[JsonPath, Position]

    def where(self, path: JsonPath, *, key: bool = False) -> str:
        """``file:line:col`` of ``path``, or of its nearest parent that has one."""
        table = self.key_positions if key else self.positions
        probe = tuple(path)
        while probe not in table and probe:
            probe = probe[:-1]
        pos = table.get(probe) or self.positions.get(probe)
        if pos is None:
            return str(self.path)
        return f"{self.path}:{pos.line}:{pos.column}"

    def error(self, path: JsonPath, message: str, *, key: bool = False) -> ConfigError:
        label = format_path(path)
        return ConfigError(f"{self.where(path, key=key)}: {label + ': ' if label else ''}{message}")

    def parse(self, path: JsonPath, parser: Callable[[Any], T]) -> T:
        """Run ``parser`` on the value at ``path``; its ArchSpecError gets a position."""
        value: Any = self.data
        for part in path:
            value = value[part]
        try:
            return parser(value)
        except ArchSpecError as exc:
            raise self.error(path, str(exc)) from None


def format_path(path: JsonPath) -> str:
    """``('include', 2, 'archs')`` -> ``include[2].archs``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_document(path: Path, schema_name: str) -> Document:
    """Read ``path``, record positions, validate against the packaged schema."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}: the file is empty")
        positions: dict[JsonPath, Position] = {}
        key_positions: dict[JsonPath, Position] = {}
        _record(path, node, (), positions, key_positions, _Walk())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    document = Document(path, data, positions, key_positions)
    _validate(document, schema(schema_name))
    return document


@dataclass
class _Walk:
    """What the walk over a node tree has seen: the nodes on the current path (an
    alias that refers to one of them is a cycle) and how many it has visited."""

    open: set[int] = field(default_factory=set)
    visited: int = 0


def _record(
    file: Path,
    node: yaml.Node,
    path: JsonPath,
    positions: dict[JsonPath, Position],
    key_positions: dict[JsonPath, Position],
    walk: _Walk,
) -> None:
    where = f"{file}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
    if id(node) in walk.open:
        raise ConfigError(f"{where}: {format_path(path) or 'value'}: an alias refers to itself")
    walk.visited += 1
    if walk.visited > MAX_NODES:
        raise ConfigError(
            f"{where}: {format_path(path) or 'value'}: more than {MAX_NODES} values "
            "(aliases expanding without end?); refusing the file"
        )
    positions[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    if not isinstance(node, yaml.CollectionNode):
        return
    walk.open.add(id(node))
    try:
        _record_children(file, node, path, positions, key_positions, walk)
    finally:
        walk.open.discard(id(node))


def _record_children(
    file: Path,
    node: yaml.CollectionNode,
    path: JsonPath,
    positions: dict[JsonPath, Position],
    key_positions: dict[JsonPath, Position],
    walk: _Walk,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                raise ConfigError(
                    f"{file}:{mark.line + 1}:{mark.column + 1}: {format_path(path) or 'top level'}: "
                    "a key must be a plain name, not a list or a mapping"
                )
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"{file}:{mark.line + 1}:{mark.column + 1}: "
                    f"{format_path(child)}: duplicate key '{key}'"
                )
            seen.add(key)
            key_positions[child] = Position(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
            _record(file, value_node, child, positions, key_positions, walk)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(file, item, (*path, index), positions, key_positions, walk)


@cache
def schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in ``orchestrator/schemas/``."""
    text = (
        resources.files("orchestrator")
        .joinpath("schemas")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _registry() -> Registry:
    """All packaged schemas, so that one can ``$ref`` another by file name."""
    folder = resources.files("orchestrator").joinpath("schemas")
    docs = [
        json.loads(f.read_text(encoding="utf-8"))
        for f in folder.iterdir()
        if f.name.endswith(".json")
    ]
    return Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)


def _validate(document: Document, schema_doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema_doc, registry=_registry())
    errors = sorted(
        validator.iter_errors(document.data),
        key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]),
    )
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    path: JsonPath = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(
            error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        )
        extra = [k for k in error.instance if k not in allowed]
        key_path = (*path, extra[0])
        raise document.error(
            key_path, f"unknown key '{extra[0]}' (allowed: {', '.join(allowed)})", key=True
        )
    raise document.error(path, _describe(error))


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "type":
        return f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "enum":
        values: Any = error.validator_value
        choices = ", ".join(repr(v) for v in values)
        return f"{error.instance!r} is not one of {choices}"
    return error.message
