"""Loading YAML configuration with positions, validated by a JSON Schema.

Every error a user can cause in a configuration file comes out as one line:
``matrix.yaml:12:9: archs[2]: unknown architecture '9.5' ...``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.common.errors import ArchSpecError, ConfigError, FileSystemError, InputFileError
from orchestrator.common.fsutil import MAX_CONFIG_BYTES, cache_root, read_text, write_atomic

if TYPE_CHECKING:  # jsonschema (40 ms to import) only when validating; yaml when parsing
    import jsonschema
    import yaml
    from referencing import Registry

JsonPath = tuple[str | int, ...]
T = TypeVar("T")
# YAML aliases share one node: a few lines can name billions of values ("billion
# laughs") or a value that contains itself. Real configuration files have a few
# hundred values; walking more than this many is refused, like a cycle.
MAX_NODES = 100_000
# Real configuration nests 6 levels deep; deeper is refused before construction
# (which, like jsonschema, recurses per level).
MAX_DEPTH = 64
# An integer of more digits than this is no count, size or version (and Python's
# int() refuses more than 4300 digits with a ValueError).
MAX_INT_DIGITS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    # The marker of this content (it passed the schema), and what else a reader found
    # right in it before (``note_checked``): such a check need not run again.
    marker: Path | None = None
    checked: frozenset[str] = frozenset()

    def note_checked(self, what: str) -> None:
        """Remember that ``what`` holds for this content (best effort)."""
        if self.marker is None or what in self.checked:
            return
        self.checked |= {what}
        text = _document_json(self)
        if text:
            with contextlib.suppress(OSError, FileSystemError):
                write_atomic(self.marker, text, durable=False)

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
    """Read ``path``, record positions, validate against the packaged schema. A
    content that passed before is answered from its marker: validated, and parsed
    (YAML's pure-Python parser is most of a repeated ``check``'s start-up)."""
    _documents_read.append(path)
    try:
        text = read_text(path, ConfigError, limit=MAX_CONFIG_BYTES, what="configuration file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    marker = _validated_marker(schema_name, text)
    kept = _kept_document(path, marker)
    if kept is not None:
        return kept
    document = _parsed(path, text)
    document.marker = marker
    if not marker.exists():
        _validate(document, schema(schema_name))
    # best effort (a full disk included): parsing and validation are done again
    with contextlib.suppress(OSError, FileSystemError):
        marker.parent.mkdir(parents=True, exist_ok=True)
        if next(itertools.islice(marker.parent.iterdir(), MAX_MARKERS, None), None):
            for old in marker.parent.iterdir():  # bounded: start afresh
                old.unlink(missing_ok=True)
        write_atomic(marker, _document_json(document), durable=False)
    return document


def documents_read() -> tuple[Path, ...]:
    """Every configuration file this process has loaded (what an answer kept by
    ``cli.answers`` depends on: a matrix names its families file)."""
    return tuple(_documents_read)


_documents_read: list[Path] = []


def _kept_document(path: Path, marker: Path) -> Document | None:
    """The document a marker keeps (None: no marker, or one that keeps no data)."""
    try:
        kept = json.loads(marker.read_bytes() or b"null")
        if not isinstance(kept, dict):
            return None
        positions = {tuple(at): Position(line, column) for at, line, column in kept["positions"]}
        keys = {tuple(at): Position(line, column) for at, line, column in kept["keys"]}
        checked = frozenset(str(what) for what in kept.get("checked", ()))
        return Document(path, kept["data"], positions, keys, marker, checked)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _document_json(document: Document) -> str:
    """What a marker keeps: the data and positions, when JSON gives them back exactly
    (YAML has dates, sets, keys that are not strings: those are parsed again)."""
    data = document.data
    try:
        text = json.dumps(data, allow_nan=False)
        if json.loads(text) != data:
            return ""
    except (TypeError, ValueError):
        return ""

    def table(positions: dict[JsonPath, Position]) -> list[list[Any]]:
        return [[list(at), p.line, p.column] for at, p in positions.items()]

    return json.dumps(
        {
            "data": data,
            "positions": table(document.positions),
            "keys": table(document.key_positions),
        }
    )


def _parsed(path: Path, text: str) -> Document:
    """``text`` parsed as YAML, with positions, within the bounds above."""
    import yaml

    loader: yaml.SafeLoader | None = None
    try:
        # The reader refuses NUL and other control characters as it is created.
        loader = yaml.SafeLoader(text)
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
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: invalid YAML: unacceptable character "
            f"#x{ord(exc.character) if isinstance(exc.character, str) else exc.character:04x}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        # PyYAML's composer recurses per level of nesting: [[[[...]]]] thousands deep.
        raise ConfigError(
            f"{path}: invalid YAML: nested too deeply (at most {MAX_DEPTH} levels)"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(path, data, positions, key_positions)


MAX_MARKERS = 4096


def _validated_marker(schema_name: str, text: str) -> Path:
    """A file whose existence says that ``text`` passed the packaged schemas as they
    are now: a repeated ``check`` reads its families file without validating it again
    (jsonschema is the larger part of its start-up)."""
    digest = hashlib.sha256(schema_name.encode() + b"\0" + text.encode())
    for name in sorted(_schema_files()):
        digest.update(name.encode() + b"\0" + _schema_files()[name])
    return cache_root() / "validated" / digest.hexdigest()[:40]


@cache
def _schema_files() -> dict[str, bytes]:
    folder = resources.files("orchestrator").joinpath("schemas")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.name.endswith(".json")}


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
    import yaml  # (imported by the parse that made the nodes)

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
    label = format_path(path) or "value"
    if len(path) > MAX_DEPTH:
        raise ConfigError(f"{where}: {label}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, yaml.ScalarNode):
        _check_scalar(node.value, node.tag, where, label)
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
    import yaml

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
            mark = key_node.start_mark
            _check_scalar(
                key, key_node.tag, f"{file}:{mark.line + 1}:{mark.column + 1}", format_path(child)
            )
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


def _check_scalar(value: str, tag: str, where: str, label: str) -> None:
    """What no configuration value may be: NUL characters (no path, option or
    environment variable can hold one; ``subprocess`` raises on them) and integers
    too long to convert."""
    if "\0" in value:
        label = label.replace("\0", "\\0")
        raise ConfigError(f"{where}: {label}: contains a NUL character")
    if not value.isascii() and _SURROGATE.search(value):
        # "\ud800" in a quoted string: not text (encoding a path or an argument raises)
        label = label.encode("utf-8", "backslashreplace").decode()
        raise ConfigError(f"{where}: {label}: contains a lone surrogate (\\ud800-\\udfff)")
    if tag == "tag:yaml.org,2002:int" and len(value) > MAX_INT_DIGITS:
        raise ConfigError(f"{where}: {label}: integer of {len(value)} digits is too long")


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
    from referencing import Registry, Resource

    docs = [json.loads(data) for data in _schema_files().values()]
    return Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)


@cache
def _artifact_validator(schema_name: str, definition: str | None) -> Any:
    import jsonschema

    root = schema(schema_name)
    if definition is not None:
        root = {"$ref": f"{root['$id']}#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(root, registry=_registry())


# Keywords of draft 2020-12 that the fast validator (draft 7) would silently ignore;
# ``prefixItems`` is draft 7's array form of ``items``, the others must not appear.
_DRAFT_2020_ONLY = ("unevaluatedProperties", "unevaluatedItems", "dependentRequired",
                    "dependentSchemas", "$dynamicRef", "$anchor")  # fmt: skip


def _as_draft7(node: Any) -> Any:
    if isinstance(node, list):
        return [_as_draft7(item) for item in node]
    if not isinstance(node, dict):
        return node
    unknown = [k for k in _DRAFT_2020_ONLY if k in node]
    if unknown or ("prefixItems" in node and "items" in node):
        raise ValueError(f"schema keyword(s) {unknown or ['prefixItems', 'items']}: not draft 7")
    out = {("items" if k == "prefixItems" else k): _as_draft7(v) for k, v in node.items()}
    out.pop("$schema", None)
    out.pop("$id", None)
    return out


@cache
def _fast_validator(schema_name: str, definition: str | None) -> Any:
    """The schema compiled to Python by fastjsonschema: 20 times faster than
    jsonschema on a vLLM cell result (18 MB), which it accepts or rejects alike."""
    import fastjsonschema

    root = _as_draft7(schema(schema_name))
    if definition is not None:
        root = {**root["$defs"][definition], "$defs": root["$defs"]}
    return fastjsonschema.compile({**root, "$schema": "http://json-schema.org/draft-07/schema#"})


def check_artifact(
    data: Any, schema_name: str, *, path: Path, what: str, definition: str | None = None
) -> None:
    """Validate a JSON artifact read back from disk (a result, a baseline, a history
    file) against its packaged schema (or one of its ``$defs``): a file that does not
    fit is one :class:`InputFileError` naming the file and the field, so that
    nothing hand-edited or foreign reaches the code that trusts its types.

    The fast validator decides what fits; what it refuses is looked at again by
    jsonschema (the reference, draft 2020-12), which names the field."""
    import fastjsonschema
    import jsonschema

    try:
        _fast_validator(schema_name, definition)(data)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    validator = _artifact_validator(schema_name, definition)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = format_path(tuple(error.absolute_path)) or "top level"
        raise InputFileError(f"{path}: not a kernel-matrix {what}: {where}: {_describe(error)}")


def _validate(document: Document, schema_doc: dict[str, Any]) -> None:
    import jsonschema

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
    """What is wrong, in a few words: a value is quoted only at a field, shortened,
    never the whole file (``families: /etc/passwd`` must not print the file)."""
    instance = error.instance
    if error.validator == "type":
        shown = f" {shorten(instance)}" if error.absolute_path else ""
        return f"expected {error.validator_value}, got {type(instance).__name__}{shown}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "enum":
        values: Any = error.validator_value
        choices = ", ".join(repr(v) for v in values)
        return f"{shorten(instance)} is not one of {choices}"
    message = error.message
    return message if len(message) <= 200 else message[:197] + "..."


def shorten(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
