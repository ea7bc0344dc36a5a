"""The matrix file: what to build, for which CUDA versions and arch lists, and which
kernel families every build must contain.

The file is validated against ``orchestrator/schemas/matrix.schema.json``; errors
are reported as ``matrix.yaml:LINE:COL: path: message`` (exit code 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.archs import (
    ArchSpec,
    CudaVersion,
    check_cuda_version,
    format_arch_list,
    parse_arch_list,
)
from orchestrator.common.errors import ConfigError
from orchestrator.common.fsutil import MAX_CONFIG_BYTES, read_text
from orchestrator.common.yamlfile import Document, JsonPath, format_path, load_document
from orchestrator.symbols import FamilyRule, families_from_document, load_families

DEFAULT_ARTIFACTS = ("**/*.so",)
DEFAULT_BASE_IMAGE = "nvidia/cuda:{cuda}-devel-ubuntu24.04"
DEFAULT_TIMEOUT = 3600


@dataclass(frozen=True)
class PythonSpec:
    """Python packages the project's CMake imports: ``packages`` pinned from the first
    of ``requirements`` (files in the source tree) that exists, ``extra`` as written."""

    requirements: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # installed without their dependencies


@dataclass(frozen=True)
class StandIn:
    """A directory standing in for a project fetched at configure time."""

    files: tuple[str, ...] = ()  # paths (relative) created empty inside it
    fetch: str = ""  # its FetchContent name: every ${<fetch>_SOURCE_DIR}/path is created
    libraries: tuple[str, ...] = ()  # globs of the libraries the real project builds
    contents: Mapping[str, str] = field(default_factory=dict)  # files with text


@dataclass(frozen=True)
class ConfigureSpec:
    """``project.configure`` of a matrix: how the configure tier runs CMake itself for
    a ``build: pip`` project."""

    cmake_source: str = "."
    python: PythonSpec = PythonSpec()
    cmake_options: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    stand_ins: Mapping[str, StandIn] = field(default_factory=dict)
    libraries: tuple[str, ...] = ("*.so",)
    package_dir: str = ""  # where setup.py puts the libraries in the wheel ("vllm")


@dataclass(frozen=True)
class Project:
    """The extension to build."""

    source: Path
    name: str = ""
    build: str = "cmake"
    artifacts: tuple[str, ...] = DEFAULT_ARTIFACTS
    arch_variable: str = "TORCH_CUDA_ARCH_LIST"
    cmake_options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cmake_target: str | None = None
    configure: ConfigureSpec | None = None  # the configure tier of a `build: pip` project


@dataclass(frozen=True)
class CellSpec:
    """One requested point of the matrix, before planning."""

    cuda: CudaVersion
    archs: tuple[ArchSpec, ...]
    name: str = ""
    cmake_options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable id: ``cu13.0-12.1a``, ``cu12.9-9.0a_10.0f``, ``cu13.0-12.1a-bug``."""
        archs = "_".join(str(a) for a in self.archs)
        return f"cu{self.cuda}-{archs}" + (f"-{self.name}" if self.name else "")


@dataclass(frozen=True)
class DockerSettings:
    base_image: str = DEFAULT_BASE_IMAGE
    cpus: float | None = None
    memory: str | None = None
    toolchain: str = "image"
    pip_install: str = ""  # pip install arguments, into the image's Python ({cu}: cu129)


@dataclass(frozen=True)
class Matrix:
    path: Path
    project: Project
    cells: tuple[CellSpec, ...]
    families: tuple[FamilyRule, ...]
    backend: str = "local"
    docker: DockerSettings = DockerSettings()
    timeout: int = DEFAULT_TIMEOUT
    tier: str = "build"  # run's default: a matrix made for the configure tier says so


def _options(raw: dict[str, Any] | None) -> dict[str, str]:
    """CMake/env options as strings (YAML booleans become ON/OFF, as CMake spells them)."""
    out = {}
    for key, value in (raw or {}).items():
        if isinstance(value, bool):
            out[key] = "ON" if value else "OFF"
        else:
            out[key] = str(value)
    return out


def load_matrix(path: Path, *, source: Path | None = None, _chain: tuple[Path, ...] = ()) -> Matrix:
    """Read, validate and expand a matrix file; ``source`` (``run --source``)
    replaces the project's source directory (``_chain``: the files whose
    ``families:`` led here, to refuse a cycle)."""
    path = Path(path)
    document = load_document(path, "matrix.schema.json")
    data = document.data
    base = path.resolve().parent

    raw_project = data["project"]
    if source is not None:
        source = source.resolve()
    elif "source" in raw_project:
        source = (base / raw_project["source"]).resolve()
        if not source.is_dir():
            raise document.error(
                ("project", "source"), f"source directory '{source}' does not exist"
            )
    else:
        raise document.error(
            ("project",), "no 'source' here: give the source tree with --source DIR"
        )
    project = Project(
        source=source,
        name=raw_project.get("name", source.name),
        build=raw_project.get("build", "cmake"),
        artifacts=tuple(raw_project.get("artifacts", DEFAULT_ARTIFACTS)),
        arch_variable=raw_project.get("arch_variable", "TORCH_CUDA_ARCH_LIST"),
        cmake_options=_options(raw_project.get("cmake_options")),
        env=_options(raw_project.get("env")),
        cmake_target=raw_project.get("cmake_target"),
        configure=_configure(raw_project.get("configure")),
    )

    versions = [_cuda(document, ("cuda", i)) for i in range(len(data.get("cuda", [])))]
    arch_lists = [
        document.parse(("archs", i), parse_arch_list) for i in range(len(data.get("archs", [])))
    ]
    excludes = [_exclude(document, i) for i in range(len(data.get("exclude", [])))]

    cells: list[CellSpec] = []
    # Where each cell comes from: a duplicate is reported at the entry that repeats.
    origins: list[tuple[JsonPath, JsonPath]] = []
    for v, version in enumerate(versions):
        for a, archs in enumerate(arch_lists):
            if not any(_excluded(version, archs, ex) for ex in excludes):
                cells.append(CellSpec(version, archs))
                origins.append((("cuda", v), ("archs", a)))
    for index, raw in enumerate(data.get("include", [])):
        here = ("include", index)
        cells.append(
            CellSpec(
                cuda=_cuda(document, (*here, "cuda")),
                archs=document.parse((*here, "archs"), parse_arch_list),
                name=raw.get("name", ""),
                cmake_options=_options(raw.get("cmake_options")),
                env=_options(raw.get("env")),
            )
        )
        origins.append((here, here))
    if not cells:
        raise document.error((), "the matrix has no cells: give 'cuda' and 'archs', or 'include'")
    _check_unique(document, cells, origins)

    raw_docker = data.get("docker", {})
    return Matrix(
        path=path,
        project=project,
        cells=tuple(cells),
        families=_families(document, base, (*_chain, path.resolve())),
        backend=data.get("backend", "local"),
        docker=DockerSettings(
            base_image=raw_docker.get("base_image", DEFAULT_BASE_IMAGE),
            cpus=raw_docker.get("cpus"),
            memory=raw_docker.get("memory"),
            toolchain=raw_docker.get("toolchain", "image"),
            pip_install=" ".join(raw_docker.get("pip_install", "").split()),
        ),
        timeout=data.get("timeout", DEFAULT_TIMEOUT),
        tier=data.get("tier", "build"),
    )


def _configure(raw: dict[str, Any] | None) -> ConfigureSpec | None:
    if raw is None:
        return None
    python = raw.get("python", {})

    return ConfigureSpec(
        cmake_source=raw.get("cmake_source", "."),
        python=PythonSpec(
            requirements=tuple(python.get("requirements", ())),
            packages=tuple(python.get("packages", ())),
            extra=tuple(python.get("extra", ())),
        ),
        cmake_options=_options(raw.get("cmake_options")),
        env=_options(raw.get("env")),
        stand_ins={
            name: StandIn(
                files=tuple(spec.get("files", ())),
                fetch=spec.get("fetch", ""),
                libraries=tuple(spec.get("libraries", ())),
                contents=dict(spec.get("contents", {})),
            )
            for name, spec in raw.get("stand_ins", {}).items()
        },
        libraries=tuple(raw.get("libraries", ("*.so",))),
        package_dir=raw.get("package_dir", ""),
    )


def _cuda(document: Document, path: tuple[str | int, ...]) -> CudaVersion:
    def parse(value: object) -> CudaVersion:
        version = CudaVersion.parse(str(value))
        check_cuda_version(version)
        return version

    return document.parse(path, parse)


def _exclude(document: Document, index: int) -> dict[str, Any]:
    raw = document.data["exclude"][index]
    out: dict[str, Any] = {}
    if "cuda" in raw:
        out["cuda"] = _cuda(document, ("exclude", index, "cuda"))
    if "archs" in raw:
        out["archs"] = document.parse(("exclude", index, "archs"), parse_arch_list)
    return out


def _excluded(version: CudaVersion, archs: tuple[ArchSpec, ...], rule: dict[str, Any]) -> bool:
    return bool(rule.get("cuda", version) == version and rule.get("archs", archs) == archs)


def _check_unique(
    document: Document, cells: list[CellSpec], origins: list[tuple[JsonPath, JsonPath]]
) -> None:
    """Two cells with one id would share a result file and a build directory."""
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.id in seen:
            (cuda, archs), (first_cuda, first_archs) = origins[index], origins[seen[cell.id]]
            # The entry that repeats an earlier one: the CUDA version or the arch list.
            path = cuda if cuda[0] == "include" or archs == first_archs else archs
            raise document.error(
                path,
                f"duplicate cell '{cell.id}' (CUDA {cell.cuda}, archs "
                f"{format_arch_list(cell.archs)}, as {format_path(first_cuda)}"
                f"{'' if first_cuda == first_archs else ' × ' + format_path(first_archs)}); "
                "remove the repeat, or give include entries a distinct 'name'",
            )
        seen[cell.id] = index


def _families(document: Document, base: Path, chain: tuple[Path, ...]) -> tuple[FamilyRule, ...]:
    raw = document.data["families"]
    if isinstance(raw, str):
        target = base / raw
        if target.resolve() in chain:
            raise document.error(
                ("families",),
                f"'{raw}' leads back to {target} (matrix files whose families: name each "
                "other form a cycle); name a families file",
            )
        return load_families_or_matrix(target, _chain=chain)
    return families_from_document(document, ("families",))


def _flow_style(text: str) -> bool:
    """Whether a YAML text is one flow-style mapping (``{project: ..., ...}``), after
    its comments and a document start: only then can its keys hide from a line scan.

    >>> _flow_style("--- {project: {name: x}}"), _flow_style("families: {project: {}}")
    (True, False)
    """
    body = re.sub(r"(?m)^[ \t]*#.*$", "", text).lstrip()
    return body.removeprefix("---").lstrip().startswith("{")


def load_families_or_matrix(path: Path, *, _chain: tuple[Path, ...] = ()) -> tuple[FamilyRule, ...]:
    """Family rules from a families file, or from a matrix file's ``families``."""
    path = Path(path)
    try:
        text = read_text(path, ConfigError, limit=MAX_CONFIG_BYTES, what="families file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such families file") from None
    if re.search(r"(?m)^([\"']?)project\1\s*:", text):  # a matrix (block style)
        return load_matrix(path, _chain=_chain).families
    if "project" in text and _flow_style(text):  # maybe a matrix: ask the parser
        import yaml

        try:
            head = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError, ValueError):
            head = None  # let the full loader report it with a position
        if isinstance(head, dict) and "project" in head:
            return load_matrix(path, _chain=_chain).families
    return load_families(path)
