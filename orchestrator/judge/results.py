"""Per-cell results, the run they belong to, and their versioned JSON form.

``reports/<run>/cells/<cell-id>.json`` holds one :class:`CellResult`; a run may be
merged from many CI jobs (each wrote some cells) by ``kernel-matrix report``.

JSON schema (``schema_version`` 1), per cell::

    {"schema_version": 1, "cell": {id, cuda, archs, gencode, devices, backend, ...},
     "status": "passed|failed|error|skipped|not-run", "reason": str|null,
     "tier": "build|configure", "toolchain": str|null, "duration_s": float,
     "build_s": float, "cached": bool, "log": str|null, "build_dir": str|null,
     "skip_lines": [str], "warnings": [str], "log_tail": [str], "artifacts": [str],
     "archs_without_code": [str], "inventory": {...}|null,
     "verdicts": [{family, device, status, served_by, libraries, kernels,
                   built_for, reason, cause}],
     "prediction_mismatches": [str],   # configure-tier prediction vs the build: tool bugs
     "sizes": {targets: {sm_120a: {entries, bytes, stored}}, families: {f: {sm_120a: n}}}}
                                       # build tier only (orchestrator.judge.sizes)

``build_dir`` is the cell's build directory in the run that wrote the result (its
*artifact root*); ``artifacts`` and the inventory's library paths are relative to
it, so a result says the same wherever it was built. A cached cell (``cached``)
had its artifacts restored into this ``build_dir`` from the result cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.common.errors import EXIT_INFRA, EXIT_KERNEL_MISSING, EXIT_OK, InputFileError
from orchestrator.common.fsutil import load_json_file, not_regular, walk_files, write_json
from orchestrator.common.yamlfile import check_artifact, shorten
from orchestrator.judge.expect import Verdict
from orchestrator.judge.sizes import Sizes
from orchestrator.read.inventory import Inventory

RESULT_SCHEMA_VERSION = 1

PASSED = "passed"
FAILED = "failed"
ERROR = "error"
SKIPPED = "skipped"
NOT_RUN = "not-run"
FINAL_STATUSES = (PASSED, FAILED, SKIPPED)
STATUSES = (PASSED, FAILED, ERROR, SKIPPED, NOT_RUN)


@dataclass
class CellResult:
    cell: dict[str, Any]
    status: str
    reason: str | None = None
    tier: str = "build"
    toolchain: str | None = None
    duration_s: float = 0.0
    build_s: float = 0.0
    cached: bool = False
    log: str | None = None
    build_dir: str | None = None
    skip_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    archs_without_code: list[str] = field(default_factory=list)
    inventory: Inventory | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    cache_key: str | None = None
    prediction_mismatches: list[str] = field(default_factory=list)
    # Bytes per target and per family (build tier; None: not known, e.g. the configure tier)
    sizes: Sizes | None = None

    @property
    def id(self) -> str:
        return str(self.cell["id"])

    @property
    def failing_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.failing]

    def settle(self) -> None:
        """Passed or failed, from the verdicts (for a cell that built and probed)."""
        self.status = FAILED if self.failing_verdicts or self.archs_without_code else PASSED
        if self.archs_without_code and not self.failing_verdicts:
            self.reason = (
                f"no code object at all for requested {', '.join(self.archs_without_code)}"
            )

    def to_json(self) -> dict[str, Any]:
        data = {
            "schema_version": RESULT_SCHEMA_VERSION,
            "cell": self.cell,
            "status": self.status,
            "reason": self.reason,
            "tier": self.tier,
            "toolchain": self.toolchain,
            "duration_s": round(self.duration_s, 3),
            "build_s": round(self.build_s, 3),
            "cached": self.cached,
            "log": self.log,
            "build_dir": self.build_dir,
            "skip_lines": self.skip_lines,
            "warnings": self.warnings,
            "log_tail": self.log_tail,
            "artifacts": self.artifacts,
            "archs_without_code": self.archs_without_code,
            "inventory": self.inventory.to_json() if self.inventory else None,
            "verdicts": [v.to_json() for v in self.verdicts],
            "cache_key": self.cache_key,
            "prediction_mismatches": self.prediction_mismatches,
        }
        if self.sizes is not None:
            data["sizes"] = self.sizes.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        version = data.get("schema_version")
        if version != RESULT_SCHEMA_VERSION:
            raise ValueError(f"unsupported result schema_version {version!r}")
        cell = data["cell"]
        if not isinstance(cell, dict) or not isinstance(cell.get("id"), str):
            raise ValueError("'cell' must be an object with a string 'id'")
        return cls(
            cell=data["cell"],
            status=data["status"],
            reason=data.get("reason"),
            tier=data.get("tier", "build"),
            toolchain=data.get("toolchain"),
            duration_s=data.get("duration_s", 0.0),
            build_s=data.get("build_s", 0.0),
            cached=data.get("cached", False),
            log=data.get("log"),
            build_dir=data.get("build_dir"),
            skip_lines=list(data.get("skip_lines", [])),
            warnings=list(data.get("warnings", [])),
            log_tail=list(data.get("log_tail", [])),
            artifacts=list(data.get("artifacts", [])),
            archs_without_code=list(data.get("archs_without_code", [])),
            inventory=Inventory.from_json(data["inventory"]) if data.get("inventory") else None,
            verdicts=[Verdict.from_json(v) for v in data.get("verdicts", [])],
            cache_key=data.get("cache_key"),
            prediction_mismatches=list(data.get("prediction_mismatches", [])),
            sizes=Sizes.from_json(data["sizes"]) if data.get("sizes") else None,
        )

    def write(self, directory: Path) -> Path:
        path = directory / "cells" / f"{self.id}.json"
        write_json(path, self.to_json())
        return path


def load_cell_result(path: Path) -> CellResult:
    """A cell result file, validated against ``results.schema.json`` (its cellResult)."""
    data = _load_json(path, "cell result", "no such result file")
    _check_version(data, path, "cell result")
    check_artifact(
        data, "results.schema.json", path=path, what="cell result", definition="cellResult"
    )
    return _from_validated(path, data, "cell result")


def _load_json(path: Path, what: str, missing: str) -> Any:
    try:
        return load_json_file(path, InputFileError, what=f"kernel-matrix {what}")
    except FileNotFoundError:
        raise InputFileError(f"{path}: {missing}") from None


def _check_version(data: Any, path: Path, what: str) -> None:
    """The version first: a file of another version is said to be one."""
    if not isinstance(data, dict):
        raise InputFileError(
            f"{path}: not a kernel-matrix {what} (expected a JSON object, found "
            f"{type(data).__name__})"
        )
    version = data.get("schema_version")
    if version != RESULT_SCHEMA_VERSION:
        raise InputFileError(
            f"{path}: not a kernel-matrix {what}: unsupported result schema_version "
            f"{shorten(version)} (this kernel-matrix reads {RESULT_SCHEMA_VERSION})"
        )


def _from_validated(path: Path, data: Any, what: str) -> CellResult:
    try:
        return CellResult.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:  # what the schema cannot say
        raise InputFileError(f"{path}: not a kernel-matrix {what} ({exc})") from None


def load_results(paths: Iterable[Path]) -> list[CellResult]:
    """Cell results from files and/or run directories (``cells/*.json`` inside, else a
    ``results.json``), or merged ``results.json`` files. Later files win for the same
    cell id."""
    by_id: dict[str, CellResult] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("cells/*.json")) or _nested_cell_files(path)
            if not files and (path / "results.json").is_file():
                # A report directory (kernel-matrix report --out) holds only the merged run.
                for result in load_merged(path / "results.json"):
                    by_id[result.id] = result
                continue
            if not files:
                raise InputFileError(
                    f"{path}: no cells/*.json or results.json results in this directory"
                )
            for file in files:
                result = load_cell_result(file)
                by_id[result.id] = result
        elif path.name == "results.json" or _is_merged(path):
            for result in load_merged(path):
                by_id[result.id] = result
        else:
            result = load_cell_result(path)
            by_id[result.id] = result
    return list(by_id.values())


def _nested_cell_files(folder: Path) -> list[Path]:
    """``**/cells/*.json`` under ``folder``, walked without recursion (a tree nested
    thousands deep would exhaust Python's stack in ``glob``)."""
    try:
        return sorted(
            p for p in walk_files(folder) if p.parent.name == "cells" and p.suffix == ".json"
        )
    except OSError as exc:
        raise InputFileError(f"{exc.filename or folder}: cannot read: {exc.strerror}") from None


def _is_merged(path: Path) -> bool:
    try:
        if not_regular(path.stat().st_mode):
            return False  # (a FIFO must not be opened here: load_cell_result refuses it)
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            head = handle.read(200)
    except OSError:
        return False
    return '"cells"' in head and '"run"' in head


def load_merged(path: Path) -> list[CellResult]:
    """A merged ``results.json``, validated against ``results.schema.json``."""
    data = _load_json(path, "results file", "no such results file")
    _check_version(data, path, "results file")
    check_artifact(data, "results.schema.json", path=path, what="results file")
    return [_from_validated(path, cell, "results file") for cell in data["cells"]]


def exit_code(results: Sequence[CellResult], *, strict: bool = False) -> int:
    """0 all met · 1 a kernel missing/hollow · 3 infrastructure (build crash, or with
    ``strict`` a cell skipped for lack of a toolchain). A missing kernel wins over an
    infrastructure failure, because it is a finding about the code.

    Defensive about merged, possibly hand-edited inputs: a failing verdict fails the
    run whatever its cell's status says, and an unknown status is never a pass."""
    if any(r.status == FAILED or r.failing_verdicts for r in results):
        return EXIT_KERNEL_MISSING
    if any(r.status in (ERROR, NOT_RUN) or r.status not in STATUSES for r in results):
        return EXIT_INFRA
    if strict and any(
        r.status == SKIPPED and r.cell.get("status") == "toolchain-unavailable" for r in results
    ):
        return EXIT_INFRA
    return EXIT_OK


def infra_summary(results: Sequence[CellResult], *, strict: bool = False) -> str:
    """One line for a run whose exit code is 3: which cells could not be built or
    checked, and why the first one failed (its log and result say the rest)."""
    broken = [r for r in results if r.status in (ERROR, NOT_RUN) or r.status not in STATUSES]
    if strict:
        broken += [
            r
            for r in results
            if r.status == SKIPPED and r.cell.get("status") == "toolchain-unavailable"
        ]
    if not broken:
        return "infrastructure failure"
    first = broken[0]
    reason = f"{first.id}: {first.reason or first.status}"
    kinds = {
        "failed to build or check": sum(
            r.status == ERROR or r.status not in STATUSES for r in broken
        ),
        "not run": sum(r.status == NOT_RUN for r in broken),
        "without a toolchain (--strict)": sum(r.status == SKIPPED for r in broken),
    }
    why = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
    noun = "cell" if len(broken) == 1 else "cells"
    first_word = "" if len(broken) == 1 else "the first, "
    return f"{len(broken)} {noun} could not be built or checked ({why}); {first_word}{reason}"
