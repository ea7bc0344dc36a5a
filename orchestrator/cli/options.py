"""Command-line options that must never be silently ignored.

An option a command cannot use (a ``--cuda-home`` without a toolkit, or with one of a
version no cell builds with; a docker option on the local backend; ``--cuobjdump``
with the native engine) is a usage error, exit 2: a typo must not turn into a green
run that skipped the very cell it was meant for.

The options a run was started with are recorded in its run.json and reused by
``--resume`` (:func:`resume_settings`), so that a resumed run continues *that* run:
same build directory, cache setting, backend, tier, jobs and overrides.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from orchestrator.archs import CudaVersion
from orchestrator.common.errors import ToolchainError, UsageError

# Variables the toolchain lookup reads (toolchain.system_candidates).
CUDA_HOME_VARIABLES = ("CUDA_HOME", "CUDA_PATH")


def _toolkit_version(home: Path, what: str) -> tuple[CudaVersion, str]:
    from orchestrator.toolchains.cuda import nvcc_version

    nvcc = home / "bin" / "nvcc"
    if not nvcc.is_file():
        raise UsageError(f"{what}: no CUDA toolkit there (no {nvcc})")
    try:
        return nvcc_version(nvcc)
    except ToolchainError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _versions(used: Collection[CudaVersion]) -> str:
    return ", ".join(str(v) for v in sorted(used)) or "none"


def check_cuda_homes(
    cuda_homes: Sequence[Path], backend: str, used: Collection[CudaVersion]
) -> list[str]:
    """Every ``--cuda-home`` must hold a toolkit of a CUDA version some cell of this
    run builds with (``used``), and only the local backend takes one. ``CUDA_HOME`` /
    ``CUDA_PATH`` that hold no toolkit are errors too; one of another version than
    every cell is only noted (it is the shell's setting, not this command's): the
    returned lines say so."""
    if cuda_homes and backend != "local":
        raise UsageError(
            f"--cuda-home is for the local backend; the {backend} backend takes CUDA from "
            "its image (or --docker-toolchain mount)"
        )
    seen: dict[CudaVersion, Path] = {}
    for home in cuda_homes:
        version, full = _toolkit_version(home, f"--cuda-home {home}")
        if version in seen:  # the first would win: the second would be ignored
            raise UsageError(
                f"--cuda-home {seen[version]} and --cuda-home {home} both hold CUDA {version}; "
                "give one toolkit per CUDA version"
            )
        seen[version] = home
        if version not in used:
            raise UsageError(
                f"--cuda-home {home} holds CUDA {full}, which no cell of this run builds "
                f"with (CUDA {_versions(used)})"
            )
    notes: list[str] = []
    if backend != "local":
        return notes
    for variable in CUDA_HOME_VARIABLES:
        value = os.environ.get(variable)
        if not value:
            continue
        version, full = _toolkit_version(Path(value), f"{variable}={value}")
        if version not in used:
            notes.append(
                f"note: {variable}={value} holds CUDA {full}, which no cell of this run "
                f"builds with (CUDA {_versions(used)}): not used"
            )
    return notes


def check_docker_options(
    args_backend: str, base_image: str | None, docker_toolchain: str | None
) -> None:
    """``--docker-base-image`` / ``--docker-toolchain`` mean nothing to the local backend."""
    if args_backend == "docker":
        return
    given = [
        name
        for name, value in (
            ("--docker-base-image", base_image),
            ("--docker-toolchain", docker_toolchain),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"{given[0]} is for the docker backend; this run uses the {args_backend} backend "
            "(add --backend docker)"
        )


def check_cuobjdump_option(engine: str, cuobjdump: Path | None) -> None:
    """``--cuobjdump`` is read by the cuobjdump engine only."""
    if cuobjdump is not None and engine != "cuobjdump":
        raise UsageError(
            f"--cuobjdump {cuobjdump} is for --engine cuobjdump; the {engine} engine reads "
            "fatbins itself"
        )


def check_probe_jobs(engine: str, jobs: int | None) -> None:
    """``probe --jobs`` sizes the native engine's worker pool; cuobjdump has none."""
    if jobs is not None and engine != "native":
        raise UsageError(
            f"--jobs is for the native engine; the {engine} engine reads one library at a time"
        )


def check_plan_format(fmt: str, cuda_homes: Sequence[Path]) -> None:
    """A GitHub job runs on another machine and never sees this one's toolkits."""
    if cuda_homes and fmt == "github":
        raise UsageError(
            "--cuda-home with --format github: the GitHub jobs run on other machines and "
            "get no --cuda-home (build CUDA 12.x there with the docker backend)"
        )


# --- what a run was started with, so that --resume continues *that* run -------------

# The options of ``run`` that decide what a run builds and how; recorded in the run
# directory's run.json and reused by --resume.
RUN_SETTINGS = (
    "matrix", "only", "backend", "cuda_home", "build_dir", "no_cache", "tier", "engine",
    "jobs", "timeout", "docker_base_image", "docker_toolchain", "strict", "source",
)  # fmt: skip
_PATHS = ("matrix", "build_dir")


def _as_json(name: str, value: Any) -> Any:
    if name in _PATHS and value is not None:
        return str(Path(value).absolute())
    if name == "cuda_home":
        return [str(Path(p).absolute()) for p in value]
    return value


def _from_json(name: str, value: Any) -> Any:
    if name in _PATHS and value is not None:
        return Path(value)
    if name == "cuda_home":
        return [Path(p) for p in value]
    return value


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings as recorded in run.json (paths made absolute)."""
    return {name: _as_json(name, getattr(args, name)) for name in RUN_SETTINGS}


def _given(value: Any) -> bool:
    return value is not None and value != []


def resume_settings(args: argparse.Namespace, out_dir: Path) -> bool:
    """Take the settings of the run in ``out_dir`` for every option not given on this
    command line; an option given with another value than the run's is an error.
    False when the run recorded no settings (made by an older version)."""
    try:
        recorded = json.loads((out_dir / "run.json").read_text()).get("options")
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return False
    for name in RUN_SETTINGS:
        if name not in recorded:
            continue
        before = _from_json(name, recorded[name])
        now = getattr(args, name)
        if not _given(now):
            setattr(args, name, before)
        elif _as_json(name, now) != recorded[name]:
            option = "MATRIX" if name == "matrix" else "--" + name.replace("_", "-")
            raise UsageError(
                f"--resume: {out_dir} was run with {option} {_show(recorded[name])}, not "
                f"{_show(_as_json(name, now))}; a resumed run continues that run (start a new "
                "one with another --out to change it)"
            )
    return True


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return "(default)" if value is None else str(value)
