"""The configure tier: predict what a build will contain from CMake configure alone.

Most silent skips (vLLM 37725 among them) are decided at configure time: a guard
intersects the arch list to nothing and the source never gets its ``-gencode``
flags. CMake's File API codemodel lists, per target, every source and the exact
compile flags it will get; from those we predict each library's code objects
(one per source × gencode target), in the same :class:`Inventory` form the probe
produces, so that the same family rules and checks apply.

A prediction knows the sources, not the compiled kernels: each source's kernels
are predicted by name from the ``__global__`` functions it declares and from the
source's own name, so that family rules by source glob and by kernel regex both
apply. Hollowness (a body compiled out) is invisible before compiling; the build
tier decides it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.archs import Target
from orchestrator.common.errors import ArchSpecError, BuildError
from orchestrator.planning.matrix import Project
from orchestrator.read.inventory import PREDICTED, CodeObject, Inventory, Kernel, Library

QUERY_CLIENT = "client-kernel-matrix"
LIBRARY_TYPES = ("SHARED_LIBRARY", "MODULE_LIBRARY")
_GLOBAL_FUNCTION = re.compile(r"__global__\s+(?:[\w:<>,*&\s]+?\s+)?(\w+)\s*\(")
_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\s*\([^)]*\)")
_GENCODE_VALUE = re.compile(r"^arch=(compute_\w+),code=\[?([\w,]+)\]?$")


@dataclass(frozen=True)
class CompileGroup:
    language: str
    flags: tuple[str, ...]
    sources: tuple[Path, ...]


@dataclass(frozen=True)
class TargetModel:
    name: str
    type: str
    artifacts: tuple[str, ...]  # relative to the build directory
    groups: tuple[CompileGroup, ...]


def read_codemodel(build_dir: Path) -> list[TargetModel]:
    """The targets of a configured build tree, from the File API reply."""
    reply = build_dir / ".cmake" / "api" / "v1" / "reply"
    indexes = sorted(reply.glob("index-*.json"))
    if not indexes:
        raise BuildError(
            f"{build_dir}: no CMake File API reply (was it configured by kernel-matrix?)"
        )
    index = _load(indexes[-1])
    codemodel_file = _codemodel_file(index)
    codemodel = _load(reply / codemodel_file)
    source_root = Path(codemodel["paths"]["source"])
    targets = []
    for ref in codemodel["configurations"][0]["targets"]:
        data = _load(reply / ref["jsonFile"])
        sources = data.get("sources", [])
        groups = tuple(
            CompileGroup(
                language=group.get("language", ""),
                flags=tuple(f["fragment"] for f in group.get("compileCommandFragments", [])),
                sources=tuple(
                    _absolute(source_root, sources[i]["path"]) for i in group["sourceIndexes"]
                ),
            )
            for group in data.get("compileGroups", [])
        )
        targets.append(
            TargetModel(
                name=data["name"],
                type=data["type"],
                artifacts=tuple(a["path"] for a in data.get("artifacts", [])),
                groups=groups,
            )
        )
    return targets


def _codemodel_file(index: dict[str, Any]) -> str:
    found = _reply_file(index, "codemodel")
    if found is None:
        raise BuildError("CMake File API reply has no codemodel")
    return found


def _reply_file(index: dict[str, Any], kind: str) -> str | None:
    client = index.get("reply", {}).get(QUERY_CLIENT, {})
    for response in client.get("query.json", {}).get("responses", []):
        if response.get("kind") == kind and "jsonFile" in response:
            return str(response["jsonFile"])
    for obj in index.get("objects", []):
        if obj.get("kind") == kind and "jsonFile" in obj:
            return str(obj["jsonFile"])
    return None


def read_cmake_inputs(build_dir: Path) -> list[Path] | None:
    """Every file the configure of ``build_dir`` read as CMake input (``CMakeLists.txt``,
    included ``.cmake`` files, ``configure_file`` templates), absolute, CMake's own
    modules left out; None when the File API reply has no ``cmakeFiles`` object (a
    build directory configured before it was asked for).

    Each input is also flagged ``isGenerated`` (under the build directory) or
    ``isExternal`` (outside source and build); those flags are not used to tell the
    project's files apart: a ``build: pip`` project is configured from a copy of its
    tree *inside* the build directory, so its own files are all "generated"."""
    reply = build_dir / ".cmake" / "api" / "v1" / "reply"
    indexes = sorted(reply.glob("index-*.json"))
    if not indexes:
        return None
    name = _reply_file(_load(indexes[-1]), "cmakeFiles")
    if name is None:
        return None
    data = _load(reply / name)
    root = Path(data.get("paths", {}).get("source", build_dir))
    return [
        _absolute(root, str(entry["path"]))
        for entry in data.get("inputs", [])
        if isinstance(entry, dict) and "path" in entry and not entry.get("isCMake")
    ]


def compiled_sources(build_dir: Path, language: str = "CUDA") -> list[Path]:
    """The sources of every target that are compiled as ``language``, absolute."""
    return list(
        dict.fromkeys(
            source
            for target in read_codemodel(build_dir)
            for group in target.groups
            if group.language == language
            for source in group.sources
        )
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: unreadable CMake File API reply ({exc})") from None
    return data


def _absolute(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def gencode_targets(fragments: Iterable[str]) -> list[Target]:
    """The code objects nvcc will embed, from its flags.

    >>> [t.name for t in gencode_targets(['-gencode=arch=compute_90a,code=sm_90a',
    ...     '"--generate-code=arch=compute_80,code=[compute_80,sm_80]"'])]
    ['sm_90a', 'compute_80', 'sm_80']
    >>> [t.name for t in gencode_targets(["-arch=sm_120f"])]
    ['sm_120f', 'compute_120f']
    """
    tokens: list[str] = []
    for fragment in fragments:
        tokens += shlex.split(fragment)
    out: list[Target] = []
    pending_arch: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, _, value = token.partition("=")
        if name in ("-gencode", "--generate-code"):
            if not value and i + 1 < len(tokens):
                i += 1
                value = tokens[i]
            match = _GENCODE_VALUE.match(value)
            if not match:
                raise BuildError(f"cannot read nvcc flag '{token}'")
            out += [Target.parse(code) for code in match[2].split(",") if code]
        elif name in ("-arch", "--gpu-architecture"):
            if not value and i + 1 < len(tokens):
                i += 1
                value = tokens[i]
            out += _arch_flag(value)
            pending_arch = value
        elif name in ("-code", "--gpu-code") and pending_arch:
            codes = value or (tokens[i + 1] if i + 1 < len(tokens) else "")
            out = [t for t in out if not _from_arch_flag(t, pending_arch)]
            out += [Target.parse(code) for code in codes.split(",") if code]
        i += 1
    unique: list[Target] = []
    for target in out:
        if target not in unique:
            unique.append(target)
    return unique


def _arch_flag(value: str) -> list[Target]:
    """``-arch=sm_90a`` means sm_90a + compute_90a; ``-arch=compute_90`` means PTX only."""
    if value in ("native", "all", "all-major"):
        raise BuildError(f"-arch={value} depends on the build machine; cannot predict it")
    try:
        target = Target.parse(value)
    except ArchSpecError as exc:
        raise BuildError(f"cannot read nvcc flag -arch={value}: {exc}") from None
    if target.ptx:
        return [target]
    return [target, Target(target.cc, target.variant, ptx=True)]


def _from_arch_flag(target: Target, arch: str) -> bool:
    return target in _arch_flag(arch)


def declared_kernels(source: Path) -> list[str]:
    """Names of the ``__global__`` functions a source declares, and its own stem."""
    names = [source.stem]
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return names
    text = _LAUNCH_BOUNDS.sub(" ", text)
    for match in _GLOBAL_FUNCTION.finditer(text):
        if match[1] not in names:
            names.append(match[1])
    return names


def predict_inventory(build_dir: Path, project: Project) -> Inventory:
    """The inventory a build of ``build_dir`` will have, per library artifact that
    matches the project's artifact globs (named by its path relative to ``build_dir``,
    as the probe of a built cell names them)."""
    libraries: list[Library] = []
    globs = project.artifacts
    if project.build == "pip" and project.configure is not None:
        globs = project.configure.libraries  # CMake's targets, not the wheel setup.py makes
    for target in read_codemodel(build_dir):
        if target.type not in LIBRARY_TYPES:
            continue
        artifacts = [a for a in target.artifacts if _matches(a, globs)]
        if not artifacts:
            continue
        cubins: list[CodeObject] = []
        ptx: list[CodeObject] = []
        for group in target.groups:
            if group.language != "CUDA":
                continue
            for code in gencode_targets(group.flags):
                for source in group.sources:
                    kernels = tuple(
                        Kernel(name=n, mangled=n, size=0, instructions=PREDICTED, hollow=False)
                        for n in declared_kernels(source)
                    )
                    obj = CodeObject(code, kernels, (source.name,))
                    (ptx if code.ptx else cubins).append(obj)
        for artifact in artifacts:
            libraries.append(
                Library(_library_name(project, build_dir, artifact), tuple(cubins), tuple(ptx))
            )
    return Inventory(tuple(libraries))


def _library_name(project: Project, build_dir: Path, artifact: str) -> str:
    """A predicted library's name: relative to the build directory, or -- for a
    ``build: pip`` project whose setup.py installs the libraries into a package
    (``configure.package_dir``: ``vllm``) -- as it will be in the wheel, so that
    anchored ``libraries`` globs (``vllm/_C.*``) see the same path in both tiers."""
    configure = project.configure
    if project.build == "pip" and configure is not None and configure.package_dir:
        return f"{configure.package_dir.strip('/')}/{Path(artifact).name}"
    return _relative(build_dir, artifact)


def _matches(artifact: str, globs: Sequence[str]) -> bool:
    name = Path(artifact).name
    return any(fnmatch.fnmatch(artifact, g) or fnmatch.fnmatch(name, g) for g in globs)


def _relative(build_dir: Path, artifact: str) -> str:
    """The File API gives artifact paths relative to the build directory (absolute
    ones happen for outputs placed elsewhere)."""
    path = Path(artifact)
    if path.is_absolute():
        with contextlib.suppress(ValueError):
            return path.relative_to(build_dir).as_posix()
        return path.as_posix()
    return PurePosixPath(artifact).as_posix()
