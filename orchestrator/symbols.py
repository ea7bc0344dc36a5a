"""Kernel families: named groups of kernels, and how to recognise them.

A family is recognised in a built library by the source files its cubins were
compiled from (globs) and/or its demangled kernel names (regexes). Dispatcher
sources compiled for every arch (vLLM's ``*_entry.cu``) are excluded so that they
never make a family look present.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.archs import ComputeCapability, CudaVersion
from orchestrator.common.userregex import AnyOf, InvalidRegex, UserRegex, compile_pattern
from orchestrator.common.yamlfile import Document, JsonPath, format_path, load_document, shorten

DEFAULT_HOLLOW_MAX_INSTRUCTIONS = 8


@dataclass(frozen=True)
class FamilyRule:
    """How to recognise one kernel family, and where it must exist."""

    name: str
    devices: tuple[ComputeCapability, ...]
    description: str = ""
    sources: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()
    exclude_sources: tuple[str, ...] = ()
    exclude_kernels: tuple[str, ...] = ()
    core_kernels: tuple[str, ...] = ()  # the kernels that do the work (not helpers)
    libraries: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    runners: tuple[str, ...] = ()
    image_reporter: str | None = None
    min_cuda: CudaVersion | None = None
    hollow_max_instructions: int = DEFAULT_HOLLOW_MAX_INSTRUCTIONS
    origin: str = field(default="", compare=False, repr=False)  # the file it came from
    # Its patterns are known to compile (read from a file, which checks them with
    # positions): they are compiled on first use, not as the rule is made.
    patterns_checked: bool = field(default=False, compare=False, repr=False)
    _kernel_patterns: tuple[UserRegex, ...] = field(default=(), compare=False, repr=False)
    _exclude_patterns: tuple[UserRegex, ...] = field(default=(), compare=False, repr=False)
    _core_patterns: tuple[UserRegex, ...] = field(default=(), compare=False, repr=False)
    _log_patterns: tuple[UserRegex, ...] = field(default=(), compare=False, repr=False)
    _kernel_any: AnyOf = field(default=AnyOf(()), compare=False, repr=False)
    _exclude_any: AnyOf = field(default=AnyOf(()), compare=False, repr=False)
    # Demangled name -> (matches a kernel regex, matches an exclude regex): one kernel
    # is met in every code object that holds it, and several checks read one rule.
    _name_memo: dict[str, tuple[bool, bool]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        # Users' regexes are matched with time limits (userregex); an error names the rule.
        where = f"{self.origin}: " if self.origin else ""
        for key, attribute in (
            ("kernels", "_kernel_patterns"),
            ("exclude_kernels", "_exclude_patterns"),
            ("core_kernels", "_core_patterns"),
            ("log", "_log_patterns"),
        ):
            patterns = tuple(
                UserRegex(p, f"{where}families.{self.name}.{key}[{i}]", lazy=self.patterns_checked)
                for i, p in enumerate(getattr(self, key))
            )
            object.__setattr__(self, attribute, patterns)
        object.__setattr__(self, "_kernel_any", AnyOf(self._kernel_patterns))
        object.__setattr__(self, "_exclude_any", AnyOf(self._exclude_patterns))

    def explains(self, log_line: str) -> bool:
        """Whether a build-log line (a "Not building ..." line) is about this family:
        one of its ``log`` regexes matches, or by default every word of its name."""
        if self.log:
            return any(p.search(log_line) for p in self._log_patterns)
        words = [w for w in re.split(r"[_\W]+", self.name.lower()) if w]
        lowered = log_line.lower()
        return all(w in lowered for w in words)

    def applies_to(self, device: ComputeCapability, cuda: CudaVersion | None = None) -> bool:
        """Whether the family is meant to exist on ``device`` (built with ``cuda``)."""
        if cuda is not None and self.min_cuda is not None and cuda < self.min_cuda:
            return False
        return device in self.devices

    def matches_library(self, library: str) -> bool:
        """Whether a library (a path, or ``wheel!member``) may hold the family. A glob
        without ``/`` matches the file name; one with ``/`` is anchored on the path's
        last components (``vllm/_C.*`` is ``vllm/_C.abi3.so``, never
        ``vllm/third_party/deep_gemm/_C.cpython-312-x86_64-linux-gnu.so``)."""
        return not self.libraries or library_matches(library, self.libraries)

    @property
    def kernel_patterns(self) -> tuple[UserRegex, ...]:
        """Its ``kernels`` regexes, compiled (a reader may search several rules' at
        once: ``read.demand``)."""
        return self._kernel_patterns

    def matches_source(self, source: str) -> bool:
        return _glob_any(source, self.sources)

    def excludes_source(self, source: str) -> bool:
        return _glob_any(source, self.exclude_sources)

    def is_core(self, demangled: str) -> bool:
        """Whether a kernel of the family does its work (every kernel, without
        ``core_kernels``)."""
        return not self.core_kernels or any(p.search(demangled) for p in self._core_patterns)

    def matches_name(self, demangled: str) -> bool:
        return self._name_rules(demangled)[0]

    def excludes_kernel(self, demangled: str) -> bool:
        return self._name_rules(demangled)[1]

    def _name_rules(self, demangled: str) -> tuple[bool, bool]:
        known = self._name_memo.get(demangled)
        if known is None:
            known = (self._kernel_any.search(demangled), self._exclude_any.search(demangled))
            self._name_memo[demangled] = known
        return known

    def matches_kernel(
        self,
        demangled: str,
        sources: Iterable[str],
        library: str = "",
        *,
        predicted: bool = False,
    ) -> bool:
        """Whether a kernel (demangled name, the sources of its cubin) belongs here.

        Both rules given: the name must match, and the source too where the source
        is known. One rule given: that rule decides. Excluded sources never count.
        A ``predicted`` kernel (configure tier) has no compiled name -- templates
        instantiated from headers are invisible before compiling --, so where the
        family names its sources, the source alone decides.
        """
        if library and not self.matches_library(library):
            return False
        facts = self.source_facts(sources)
        return facts is not None and self.matches_kernel_from(facts, demangled, predicted)

    def source_facts(self, sources: Iterable[str]) -> tuple[bool, bool] | None:
        """What a code object's sources say for every kernel in it: None when one of
        them is excluded, else (one matches the family's globs, any are known).
        Computed once per code object, then ``matches_kernel_from`` per kernel."""
        known = tuple(sources)
        if any(self.excludes_source(s) for s in known):
            return None
        return any(self.matches_source(s) for s in known), bool(known)

    def matches_kernel_from(
        self, facts: tuple[bool, bool], demangled: str, predicted: bool = False
    ) -> bool:
        """``matches_kernel`` for a kernel of a code object whose ``source_facts``
        are ``facts`` (not None)."""
        source_ok, known = facts
        name_ok, excluded = self._name_rules(demangled)
        if excluded:
            return False
        if predicted and self.sources:
            return source_ok
        if self.kernels and self.sources:
            return name_ok and (source_ok or not known)
        return name_ok if self.kernels else source_ok


def library_matches(library: str, globs: Iterable[str]) -> bool:
    """A library path (``wheel.whl!vllm/_C.abi3.so`` or a file path) against
    ``libraries`` globs: by file name, or anchored on trailing path components.

    >>> library_matches("v.whl!vllm/_C.abi3.so", ["vllm/_C.*"])
    True
    >>> library_matches("v.whl!vllm/third_party/deep_gemm/_C.cpython-312.so", ["vllm/_C.*"])
    False
    >>> library_matches("/b/vllm/third_party/deep_gemm/_C.cpython-312.so", ["_C.*"])
    True
    """
    return _glob_any(library.rsplit("!", 1)[-1], globs)


def _glob_any(source: str, globs: Iterable[str]) -> bool:
    """Match a glob against a basename (``nvfp4_*.cu``) or a path suffix (``csrc/x/*.cu``)."""
    return _glob_any_of(source, tuple(globs))


# A library holds thousands of kernels from a few hundred sources: each (source,
# globs) pair is matched once.
@lru_cache(maxsize=1 << 16)
def _glob_any_of(source: str, globs: tuple[str, ...]) -> bool:
    path = PurePosixPath(source)
    for glob in globs:
        if "/" in glob:
            parts = len(PurePosixPath(glob).parts)
            tail = "/".join(path.parts[-parts:])
            if fnmatch.fnmatch(tail, glob):
                return True
        elif fnmatch.fnmatch(path.name, glob):
            return True
    return False


@cache
def demangle(mangled: str) -> str:
    """Demangle an Itanium C++ name (the device compiler uses the host ABI);
    names that are not mangled come back unchanged."""
    if not mangled.startswith("_Z"):
        return mangled
    demangled = _demangler()(mangled)
    return mangled if demangled is None else demangled


def families_from_document(document: Document, path: JsonPath) -> tuple[FamilyRule, ...]:
    """Build family rules from the mapping at ``path`` of an already-validated file."""
    mapping: Any = document.data
    for part in path:
        mapping = mapping[part]
    rules = []
    # Every pattern is compiled here, for an error with its position; a content whose
    # patterns all compiled before (its marker says so) is not compiled again.
    patterns_checked = f"patterns:{format_path(path)}"
    compiled_before = patterns_checked in document.checked
    for name, spec in mapping.items():
        here = (*path, name)
        for key in ("kernels", "exclude_kernels", "core_kernels", "log"):
            for index, pattern in enumerate(spec.get(key, []) if not compiled_before else ()):
                try:
                    compile_pattern(pattern)
                except InvalidRegex as exc:
                    raise document.error(
                        (*here, key, index), f"invalid regex {shorten(pattern)}: {exc}"
                    ) from None
        devices = tuple(
            document.parse((*here, "devices", i), lambda v: ComputeCapability.parse(str(v)))
            for i in range(len(spec["devices"]))
        )
        min_cuda = (
            document.parse((*here, "min_cuda"), lambda v: CudaVersion.parse(str(v)))
            if "min_cuda" in spec
            else None
        )
        rules.append(
            FamilyRule(
                name=name,
                devices=devices,
                description=spec.get("description", ""),
                sources=tuple(spec.get("sources", ())),
                kernels=tuple(spec.get("kernels", ())),
                exclude_sources=tuple(spec.get("exclude_sources", ())),
                exclude_kernels=tuple(spec.get("exclude_kernels", ())),
                core_kernels=tuple(spec.get("core_kernels", ())),
                libraries=tuple(spec.get("libraries", ())),
                log=tuple(spec.get("log", ())),
                runners=tuple(spec.get("runners", ())),
                image_reporter=spec.get("image_reporter"),
                min_cuda=min_cuda,
                hollow_max_instructions=spec.get(
                    "hollow_max_instructions", DEFAULT_HOLLOW_MAX_INSTRUCTIONS
                ),
                origin=str(document.path),
                patterns_checked=True,
            )
        )
    document.note_checked(patterns_checked)
    return tuple(rules)


def load_families(path: Path) -> tuple[FamilyRule, ...]:
    """Read a families file (``families: {name: {...}}``)."""
    document = load_document(path, "families.schema.json")
    return families_from_document(document, ("families",))


@cache
def _demangler() -> Callable[[str], str | None]:
    """The C++ runtime's ``__cxa_demangle`` (what cxxfilt calls), called directly, on
    the first name to demangle (a repeated ``check`` has none). One output buffer per
    thread is reused: a PTX module may hold 300 000 names, and cxxfilt's wrapping
    costs a third of the time. None for a name that is not valid."""
    import ctypes

    try:
        runtime = ctypes.CDLL("libstdc++.so.6")
    except OSError:  # not Linux, or another C++ runtime: let cxxfilt find it
        import cxxfilt

        def by_cxxfilt(mangled: str) -> str | None:
            try:
                return str(cxxfilt.demangle(mangled, external_only=False))
            except cxxfilt.InvalidName:
                return None

        return by_cxxfilt
    cxa_demangle = runtime.__cxa_demangle
    cxa_demangle.restype = ctypes.c_void_p
    # (the length and status by address, not byref: a third less time a name)
    cxa_demangle.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    string_at = ctypes.string_at
    per_thread = threading.local()

    def native(mangled: str) -> str | None:
        state = getattr(per_thread, "state", None)
        if state is None:
            # [the buffer (allocated by the runtime on the first call, then grown by
            # it with realloc), the length and status (kept alive here) and their
            # addresses]; kept for the thread's life
            length, status = ctypes.c_size_t(0), ctypes.c_int(0)
            state = per_thread.state = [
                None,
                length,
                status,
                ctypes.addressof(length),
                ctypes.addressof(status),
            ]
        result = cxa_demangle(mangled.encode(), state[0], state[3], state[4])
        if state[2].value != 0 or not result:
            return None
        state[0] = result
        return string_at(result).decode("utf-8", "replace")

    return native
