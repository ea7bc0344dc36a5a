"""Which CMake guard dropped a kernel family: the call and its ``file:line``.

A family that a configure leaves without code was dropped by a guard: a call such as
vLLM's ``cuda_archs_loose_intersection(FP4_ARCHS "10.0f;12.0f" "${CUDA_ARCHS}")``
whose result was empty (or lacked the device's arch), tested by the ``if()`` around
the lines that add the family's sources. Two things find it:

* the project's CMake files, read statically: where a family's source file is
  named, and the ``if()`` conditions (or ``${VAR}`` arguments) around that place;
* CMake's own trace of the configure (``--trace-expand --trace-format=json-v1``,
  restricted to the project's files): every call that ran, with its arguments
  expanded -- so the guard is shown as it ran, e.g.
  ``CMakeLists.txt:1035: cuda_archs_loose_intersection(FP4_SM120_ARCHS 12.0f 12.1a)``.

The guard is the last call that ran before that place and set one of those
variables (a name from ``GUARD_COMMANDS`` preferred); where a family's source is
passed to a function of the project (the sample extension's
``sample_guarded_family(... SRCS x.cu)``), the guard call that ran inside it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.archs import ArchSpec, ComputeCapability
from orchestrator.common.errors import KernelMatrixError
from orchestrator.symbols import FamilyRule

TRACE_FILE = "cmake-trace.json"
GUARD_COMMANDS = ("cuda_archs_loose_intersection",)
MAX_TRACE_BYTES = 512 * 1024 * 1024  # a sane bound: vLLM's whole trace is a few MB
# Commands that read or change variables but never decide a guard.
_NOT_GUARDS = frozenset(
    [
        "set",
        "unset",
        "list",
        "string",
        "if",
        "elseif",
        "else",
        "endif",
        "message",
        "foreach",
        "endforeach",
        "while",
        "endwhile",
        "return",
        "include",
        "math",
        "get_filename_component",
        "set_property",
        "set_source_files_properties",
        "cmake_parse_arguments",
    ]
)
_CONDITION_WORDS = frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "DEFINED",
        "TRUE",
        "FALSE",
        "ON",
        "OFF",
        "EXISTS",
        "COMMAND",
        "TARGET",
        "TEST",
        "POLICY",
        "IN_LIST",
        "STREQUAL",
        "STRLESS",
        "STRGREATER",
        "EQUAL",
        "LESS",
        "GREATER",
        "MATCHES",
        "IS_DIRECTORY",
        "IS_ABSOLUTE",
        "VERSION_EQUAL",
        "VERSION_LESS",
        "VERSION_GREATER",
        "VERSION_LESS_EQUAL",
        "VERSION_GREATER_EQUAL",
        "LESS_EQUAL",
        "GREATER_EQUAL",
        "STRLESS_EQUAL",
        "STRGREATER_EQUAL",
    ]
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A source path, or a file(GLOB) pattern of sources (sm80_kernel_*.cu).
_SOURCE_TOKEN = re.compile(r"[\w./+*?-]+\.(?:cu|cuh|cpp|cc|c)\b")


@dataclass(frozen=True)
class Command:
    """One command of a CMake file, as written."""

    name: str  # lower case
    args: str
    line: int


@dataclass(frozen=True)
class TraceRecord:
    """One command that ran, from CMake's json-v1 trace."""

    index: int
    name: str
    args: tuple[str, ...]
    file: str
    line: int
    frame: int

    def show(self, root: Path) -> str:
        where = _relative(self.file, root)
        args = " ".join(f'"{a}"' if (not a or any(c in a for c in ' ;"')) else a for a in self.args)
        return f"{where}:{self.line}: {self.name}({args})"


def trace_arguments(source: Path, trace: Path) -> list[str]:
    """CMake options that trace the project's own CMake files (not CUTLASS's or
    torch's) into ``trace``, with arguments expanded."""
    files = sorted(project_cmake_files(source))
    if not files:  # (a source this process cannot see: a container's path) no trace
        return []
    return [
        "--trace-expand",
        "--trace-format=json-v1",
        f"--trace-redirect={trace}",
        *(f"--trace-source={f}" for f in files),
    ]


def project_cmake_files(source: Path) -> Iterator[Path]:
    """``CMakeLists.txt`` and ``*.cmake`` of the project, not of what it vendors or
    built (build trees, ``.deps``, third-party checkouts)."""
    skip = {"build", "dist", ".deps", ".git", "third_party", "3rdparty", "stand-ins", "_deps"}
    stack = [source]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in skip and not entry.name.startswith("."):
                    stack.append(entry)
            elif entry.name == "CMakeLists.txt" or entry.suffix == ".cmake":
                yield entry


def read_trace(path: Path) -> list[TraceRecord]:
    """The records of a json-v1 trace (its first line is the version)."""
    records: list[TraceRecord] = []
    if not path.is_file() or path.stat().st_size > MAX_TRACE_BYTES:
        return records
    with path.open(encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(data, dict) or "cmd" not in data:
                continue
            records.append(
                TraceRecord(
                    index=len(records),
                    name=str(data["cmd"]).lower(),
                    args=tuple(str(a) for a in data.get("args", ())),
                    file=str(data.get("file", "")),
                    line=int(data.get("line", 0)),
                    frame=int(data.get("frame", 0)),
                )
            )
    return records


def commands(text: str) -> list[Command]:
    """The commands of a CMake file, with their raw argument text and first line.

    >>> [(c.name, c.line) for c in commands('if(A)  # c(x)\\n  set(S "a.cu")\\nendif()\\n')]
    [('if', 1), ('set', 2), ('endif', 3)]
    """
    out: list[Command] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch.isalpha() or ch == "_":
            match = re.match(r"[A-Za-z_][A-Za-z0-9_]*\s*\(", text[i:])
            if not match:
                i += 1
                continue
            name = match[0].rstrip("( \t\n").lower()
            start_line = line
            j = i + match.end()
            depth, quoted, args_start = 1, False, j
            while j < n and depth:
                c = text[j]
                if c == "\n":
                    line += 1
                elif c == "\\" and quoted:
                    j += 1
                elif c == '"':
                    quoted = not quoted
                elif not quoted and c == "#":
                    end = text.find("\n", j)
                    j = n - 1 if end < 0 else end - 1
                elif not quoted and c == "(":
                    depth += 1
                elif not quoted and c == ")":
                    depth -= 1
                j += 1
            out.append(Command(name, text[args_start : j - 1], start_line))
            i = j
        else:
            i += 1
    return out


@dataclass(frozen=True)
class Mention:
    """A place in a CMake file that names a family's source."""

    file: Path
    command: Command
    conditions: tuple[Command, ...]  # enclosing if/elseif, innermost first
    messages: tuple[str, ...] = ()  # message() texts of the enclosing if blocks


def mentions(files: Iterable[Path], family: FamilyRule) -> list[Mention]:
    """Where the project's CMake files name a source of ``family`` (outside function
    and macro bodies, which run where they are called), each with the messages of the
    if blocks around it (their "Not building …" lines tell families that share
    source names apart: vLLM's dense and MoE Marlin)."""
    return [m for path, lexed in _lexed(files) for m in _mentions_in(path, lexed, family)]


def _lexed(files: Iterable[Path]) -> Iterator[tuple[Path, list[Command]]]:
    """Each readable file and its commands."""
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        yield path, commands(text)


def _mentions_in(path: Path, lexed: Sequence[Command], family: FamilyRule) -> list[Mention]:
    found: list[Mention] = []
    stack: list[Command] = []
    blocks: list[list[str]] = []  # the messages of each open if block
    pending: list[tuple[Mention, list[list[str]]]] = []
    in_definition = 0
    for command in lexed:
        if command.name in ("function", "macro"):
            in_definition += 1
        elif command.name in ("endfunction", "endmacro"):
            in_definition = max(0, in_definition - 1)
        elif command.name == "if":
            stack.append(command)
            blocks.append([])
        elif command.name in ("elseif", "else") and stack:
            stack[-1] = command
        elif command.name == "endif" and stack:
            stack.pop()
            blocks.pop()
        elif command.name == "message" and blocks:
            for block in blocks:
                block.append(command.args)
        elif not in_definition and _names_family_source(command.args, family):
            pending.append((Mention(path, command, tuple(reversed(stack))), list(blocks)))
    for mention, around in pending:
        messages = tuple(m for block in around for m in block)
        found.append(dataclasses.replace(mention, messages=messages))
    return found


def _names_family_source(args: str, family: FamilyRule) -> bool:
    for token in _SOURCE_TOKEN.findall(args):
        name = PurePosixPath(token).name
        if family.sources and any(_names_source(name, g) for g in family.sources):
            return not family.excludes_source(name)
    return False


def _names_source(name: str, glob: str) -> bool:
    """Whether a source name, or a file(GLOB) pattern of sources, is one of a
    family's: a pattern when either glob covers the other and they share a literal
    start ("sm80_kernel_*_float16.cu" is "sm80_kernel_*.cu"; "*.cu" names no family).

    >>> _names_source("sm80_kernel_*_float16.cu", "sm80_kernel_*.cu")
    True
    >>> _names_source("*.cu", "sm80_kernel_*.cu"), _names_source("a.cu", "a.cu")
    (False, True)
    """
    start = re.split(r"[*?]", name, maxsplit=1)[0]
    if start == name:  # a plain name
        return fnmatch.fnmatch(name, glob)
    return (
        bool(start)
        and glob.startswith(start)
        and (fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(glob, name))
    )


def _condition_variables(condition: Command) -> list[str]:
    names = _REFERENCE.findall(condition.args)
    for token in re.split(r"[\s()]+", condition.args):
        token = token.strip('"')
        if _IDENTIFIER.match(token) and token not in _CONDITION_WORDS and not token.isdigit():
            names.append(token)
    return [n for n in dict.fromkeys(names) if not n.startswith("CMAKE_")]


def guard_of(
    family: FamilyRule,
    source: Path,
    records: Sequence[TraceRecord],
    device: str | None = None,
    guard_commands: Sequence[str] = GUARD_COMMANDS,
) -> str | None:
    """The guard call (as it ran) that decided whether ``family``'s sources got code,
    with the ``if()`` that tested it; None when no place names the family's sources.
    Where several guards add the same source (vLLM's SM12x and SM10x NVFP4 blocks),
    the one whose allow-list speaks of ``device``'s major version is chosen."""
    return GuardFinder(source, records, guard_commands).dropped_by(family, device)


@dataclass(frozen=True)
class _Found:
    """A family's guard calls that ran (as shown, preferred first) and its generator
    with how many of its sources it wrote."""

    candidates: tuple[tuple[TraceRecord, str], ...]
    generator: tuple[str, int] | None


class GuardFinder:
    """The guard look-ups of one configure (its trace, the project's CMake files under
    ``source``): each file read and lexed once, each family's guards found once, for
    every device it is asked about."""

    def __init__(
        self,
        source: Path,
        records: Sequence[TraceRecord],
        guard_commands: Sequence[str] = GUARD_COMMANDS,
    ) -> None:
        self.source, self.records = source, records
        self._guards = {g.lower() for g in guard_commands}
        self._files: list[tuple[Path, list[Command]]] | None = None
        self._found: dict[FamilyRule, _Found] = {}

    def _lookup(self, family: FamilyRule) -> _Found:
        found = self._found.get(family)
        if found is not None:
            return found
        if self._files is None:
            self._files = list(_lexed(project_cmake_files(self.source)))
        candidates: list[tuple[TraceRecord, str]] = []
        explained: list[tuple[TraceRecord, str]] = []  # in a block whose message is the family's
        found_mentions = [m for p, c in self._files for m in _mentions_in(p, c, family)]
        for mention in found_mentions:
            guard = _guard_at(mention, self.source, self.records, self._guards)
            if guard is not None and guard[0] not in [c[0] for c in candidates]:
                candidates.append(guard)
                if any(family.explains(message) for message in mention.messages):
                    explained.append(guard)
        generator = _generator(found_mentions, family, self.source, self.records)
        found = _Found(tuple(explained or candidates), generator)
        self._found[family] = found
        return found

    def _chosen(self, found: _Found, device: str | None) -> tuple[TraceRecord, str]:
        """The candidate whose allow-list speaks of ``device``'s major version, else
        the first."""
        if device is not None:
            major = device.split(".")[0] + "."
            for record, shown in found.candidates:
                allowed = ";".join(record.args[1:-1])  # (OUT, ALLOWED..., REQUESTED)
                if any(a.strip().startswith(major) for a in allowed.split(";")):
                    return record, shown
        return found.candidates[0]

    def dropped_by(self, family: FamilyRule, device: str | None = None) -> str | None:
        """:func:`guard_of`: the guard (or generator) that left ``family`` without code
        on ``device``; None when none did, or none is known."""
        if not self.records or not family.sources:
            return None
        found = self._lookup(family)
        generator = found.generator
        if generator and generator[1]:  # it wrote some of them: not the generator's doing
            generator = None
        generated = f"{generator[0]}, which wrote none of its sources" if generator else None
        if not found.candidates:
            return f"the generator {generated}" if generated else None
        chosen_record, chosen = self._chosen(found, device)
        if device is not None:
            result = guard_result(self.records, chosen_record)
            if result is not None and _serves(result, device):
                # The guard let the device's arch through: it decided nothing here.
                return f"the generator {generated}" if generated else None
        # Where the guard's result is not known, both may be the cause: name both.
        return f"{chosen}, or by the generator {generated}" if generated else chosen

    def governed_by(self, family: FamilyRule, device: str | None = None) -> str | None:
        """The guard call (as it ran) that governs ``family``'s sources for ``device``,
        whatever it decided -- the one :meth:`dropped_by` would name -- else the
        generator that writes them; "" when the trace shows neither (no CMake file
        names its sources, or none under a guard); None when that cannot be told (no
        trace, a family without source globs)."""
        if not self.records or not family.sources:
            return None
        found = self._lookup(family)
        if found.candidates:
            return self._chosen(found, device)[1]
        return f"the generator {found.generator[0]}" if found.generator else ""


def guard_result(records: Sequence[TraceRecord], guard: TraceRecord) -> tuple[str, ...] | None:
    """What a guard call left in its result variable (its first argument): the value
    of the ``set(<result> … PARENT_SCOPE)`` that the called function ran last, as the
    expanded trace shows it; None where the trace shows no such ``set``.

    >>> call = TraceRecord(0, "cuda_archs_loose_intersection", ("A", "8.9;12.0", "12.1a"), "f", 1, 1)
    >>> inner = TraceRecord(1, "set", ("A", "12.1a", "PARENT_SCOPE"), "u.cmake", 9, 2)
    >>> guard_result([call, inner], call), guard_result([call], call)
    (('12.1a',), None)
    """
    if not guard.args:
        return None
    found = None
    for record in records[guard.index + 1 :]:
        if record.frame <= guard.frame:  # back in the caller: the function returned
            break
        args = record.args
        if (
            record.name.lower() == "set"
            and args[:1] == guard.args[:1]
            and args[-1:] == ("PARENT_SCOPE",)
        ):
            found = tuple(arch for arg in args[1:-1] for arch in arg.split(";") if arch.strip())
    return found


def _serves(archs: Sequence[str], device: str) -> bool:
    """Whether code built for ``archs`` (an arch list as guards hold it) runs on ``device``."""
    try:
        wanted = ComputeCapability.parse(device)
        return any(t.runs_on(wanted) for a in archs for t in ArchSpec.parse(a).targets)
    except KernelMatrixError:  # (an entry this version cannot read: say nothing)
        return False


def generator_of(family: FamilyRule, source: Path, records: Sequence[TraceRecord]) -> str | None:
    """Where ``family``'s sources are written at configure time: the last script
    (a ``.py`` argument) that ``execute_process`` ran before the ``file(GLOB …)`` that
    collects them (vLLM's Marlin and Machete generators), as it ran; None when the
    family's sources are not collected that way."""
    found = _generator(mentions(project_cmake_files(source), family), family, source, records)
    return found[0] if found else None


def _generator(
    found: Sequence[Mention], family: FamilyRule, source: Path, records: Sequence[TraceRecord]
) -> tuple[str, int] | None:
    """The generator as :func:`generator_of` names it, and how many of ``family``'s
    sources the ``file(GLOB …)`` after it finds (what the script chose to write)."""
    # first those in a block whose message is the family's (dense vs MoE Marlin)
    ordered = sorted(found, key=lambda m: not any(family.explains(t) for t in m.messages))
    for mention in ordered:
        if mention.command.name != "file" or not mention.command.args.lstrip().startswith("GLOB"):
            continue
        at = _position(records, mention.file, mention.command.line)
        if at is None:
            continue
        for record in reversed(records[:at]):
            scripts = [i for i, a in enumerate(record.args) if a.endswith(".py")]
            if record.name == "execute_process" and scripts:
                run = [_relative(record.args[scripts[0]], source)]
                for argument in record.args[scripts[0] + 1 :]:
                    if _KEYWORD.match(argument):  # WORKING_DIRECTORY, RESULT_VARIABLE ...
                        break
                    run.append(_relative(argument, source))  # (an output directory)
                where = _relative(record.file, source)
                shown = f"{where}:{record.line}: execute_process(… {' '.join(run)})"
                return shown, _globbed_sources(records[at], family)
    return None


_GLOB_OPTIONS = {"RELATIVE": 1, "LIST_DIRECTORIES": 1, "CONFIGURE_DEPENDS": 0, "FOLLOW_SYMLINKS": 0}


def _globbed_sources(record: TraceRecord, family: FamilyRule) -> int:
    """How many of ``family``'s sources a ``file(GLOB[_RECURSE] VAR patterns…)`` that
    ran finds on disk now (relative patterns: from the directory of the file that ran
    it)."""
    patterns: list[str] = []
    arguments = iter(record.args[2:])  # after GLOB and the variable
    for argument in arguments:
        if argument in _GLOB_OPTIONS:
            for _ in range(_GLOB_OPTIONS[argument]):
                next(arguments, None)
        else:
            patterns.append(argument)
    names: set[str] = set()
    for pattern in patterns:
        full = os.path.join(os.path.dirname(record.file), pattern)  # (an absolute one stays)
        if record.args[0].upper() == "GLOB_RECURSE":
            folder, name = os.path.split(full)
            full = os.path.join(folder, "**", name)
        names.update(os.path.basename(p) for p in glob.glob(full, recursive=True))
    return sum(
        any(fnmatch.fnmatch(n, g) for g in family.sources) and not family.excludes_source(n)
        for n in names
    )


_KEYWORD = re.compile(r"^[A-Z][A-Z_]+$")


def _guard_at(
    mention: Mention, source: Path, records: Sequence[TraceRecord], guards: set[str]
) -> tuple[TraceRecord, str] | None:
    where = _position(records, mention.file, mention.command.line)
    for condition in mention.conditions:
        if_at = _position(records, mention.file, condition.line)
        limit = if_at if if_at is not None else where
        for variable in _condition_variables(condition):
            guard = _last_setter(records, variable, limit, guards)
            if guard is not None:
                tested = _shown_if(mention, condition, source)
                return guard, f"{guard.show(source)} (tested by {tested})"
    if where is not None:
        inner = _called_guard(records, where, guards)
        if inner is not None:
            caller = records[where]
            called_at = f"{_relative(caller.file, source)}:{caller.line}"
            return inner, f"{inner.show(source)} (in {caller.name}() at {called_at})"
        for variable in _REFERENCE.findall(mention.command.args):
            guard = _last_setter(records, variable, where, guards)
            if guard is not None:
                return guard, guard.show(source)
    return None


def _relative(file: str | Path, root: Path) -> str:
    try:
        return str(Path(file).relative_to(root))
    except ValueError:
        return str(file)


def _shown_if(mention: Mention, condition: Command, root: Path) -> str:
    where = _relative(mention.file, root)
    return f"{where}:{condition.line} {condition.name}({' '.join(condition.args.split())})"


def _position(records: Sequence[TraceRecord], file: Path, line: int) -> int | None:
    """The index of the last record of the command at ``file:line`` that ran."""
    wanted = str(file)
    for record in reversed(records):
        if record.line == line and record.file == wanted:
            return record.index
    return None


def _last_setter(
    records: Sequence[TraceRecord], variable: str, before: int | None, guards: set[str]
) -> TraceRecord | None:
    end = len(records) if before is None else before
    fallback: TraceRecord | None = None
    for record in reversed(records[:end]):
        if not record.args or record.args[0] != variable:
            continue
        if record.name in guards:
            return record
        if fallback is None and record.name not in _NOT_GUARDS:
            fallback = record
    return fallback


def _called_guard(
    records: Sequence[TraceRecord], call: int, guards: set[str]
) -> TraceRecord | None:
    """The last guard call that ran inside the function/macro call at ``call``."""
    frame = records[call].frame
    found: TraceRecord | None = None
    for record in records[call + 1 :]:
        if record.frame <= frame:
            break
        if record.name in guards:
            found = record
    return found
