"""``junit.xml``: one test suite per cell, one test case per family × requested device.

CI systems already know how to show JUnit, so a missing kernel appears where a
failing test would. The document validates against both common dialects: the
Jenkins xUnit ``junit-10.xsd`` (the one pytest and most GitHub reporters follow) and
the stricter Apache Ant schema (windyroad ``JUnit.xsd``). That is why each suite
carries ``id``, ``package``, ``hostname``, a timestamp without zone, its properties
first and system-out/-err last, why a test case has at most one result element with
the whole explanation in its text, and why the root carries no attributes (readers
sum the suites). See ``tests/fixtures/junit/``.

Mapping: present → pass; missing/hollow → ``<failure>`` (explanation and the
build-log cause); build crash (error) or interrupted (not-run) → ``<error>`` with the
log tail; skipped (unsupported, toolchain unavailable) and not-applicable →
``<skipped>`` with the reason. A cell that is not passed can never come out with
only passing cases: if nothing else failed, a ``cell`` case carries its status.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from junitparser import (
    Attr,
    Error,
    Failure,
    JUnitXml,
    Skipped,
    SystemErr,
    SystemOut,
    TestCase,
    TestSuite,
)

from orchestrator.common.fsutil import write_atomic
from orchestrator.judge.expect import FAILING, NOT_APPLICABLE, PRESENT, Verdict
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult
from orchestrator.reporting.cells import cell_status, clean, devices_of, families_of

LOG_TAIL_LINES = 40


class _Suite(TestSuite):
    """A test suite with the attributes the Ant schema requires."""

    id = Attr()
    package = Attr()


def case_name(family: str, device: str) -> str:
    """``nvfp4 on 12.1``: stable across runs, so CI can track a case's history."""
    return f"{family} on {device}"


def _case(cell_id: str, name: str) -> TestCase:
    case = TestCase(name, classname=cell_id)
    case._elem.set("time", "0")
    return case


def _verdict_text(verdict: Verdict) -> str:
    lines = [verdict.reason]
    if verdict.cause and verdict.cause not in verdict.reason:
        lines.append(f"build log: {verdict.cause}")
    if verdict.built_for:
        lines.append(f"built for: {', '.join(verdict.built_for)}")
    if verdict.served_by:
        lines.append(f"served by: {', '.join(verdict.served_by)}")
    if verdict.libraries:
        lines.append(f"libraries: {', '.join(verdict.libraries)}")
    if verdict.kernels:
        lines.append("kernels:")
        lines += [f"  {k}" for k in verdict.kernels]
    return clean("\n".join(lines))


def _result_text(result: CellResult) -> str:
    lines = [f"{result.id}: {result.status}: {result.reason or ''}".rstrip(": ")]
    if result.log:
        lines.append(f"log: {result.log}")
    if result.log_tail:
        lines.append("last lines of the build log:")
        lines += [f"  {line}" for line in result.log_tail[-LOG_TAIL_LINES:]]
    return clean("\n".join(lines))


def _checked_cases(result: CellResult, families: Sequence[str]) -> list[TestCase]:
    """Cases of a cell that was built and probed (passed or failed)."""
    cases = []
    by_key = {(v.family, v.device): v for v in result.verdicts}
    for family in families:
        for device in devices_of(result):
            case = _case(result.id, case_name(family, device))
            verdict = by_key.get((family, device))
            if verdict is None:
                case.result = [Skipped(f"{family} was not checked in this cell")]
            elif verdict.status in FAILING:
                what = f"{family} {verdict.status} on {device}"
                failure = Failure(clean(f"{what}: {verdict.reason}"), verdict.status)
                failure.text = _verdict_text(verdict)
                case.result = [failure]
            elif verdict.status == NOT_APPLICABLE:
                case.result = [Skipped(clean(verdict.reason or "not applicable"))]
            elif verdict.status != PRESENT:
                case.result = [Failure(f"unknown verdict {verdict.status!r}", verdict.status)]
            cases.append(case)
    if result.archs_without_code:
        case = _case(result.id, "every requested arch has code")
        archs = ", ".join(result.archs_without_code)
        case.result = [Failure(f"no code object for requested {archs}", "missing-arch")]
        cases.append(case)
    return cases


def _unchecked_cases(result: CellResult, families: Sequence[str]) -> list[TestCase]:
    """Cases of a cell never checked: each family × device errors or is skipped, so
    that its cases keep their names (and their history) across runs."""
    names = [case_name(f, d) for f in families for d in devices_of(result)] or ["cell"]
    message = clean(f"{result.status}: {result.reason or 'no reason recorded'}")
    cases = []
    for name in names:
        case = _case(result.id, name)
        if cell_status(result) == SKIPPED:
            case.result = [Skipped(message)]
        else:
            error = Error(message, "build-error" if result.status == ERROR else result.status)
            error.text = _result_text(result)
            case.result = [error]
        cases.append(case)
    return cases


def _has(cases: Sequence[TestCase], kind: type) -> bool:
    return any(isinstance(r, kind) for c in cases for r in c.result)


def cell_suite(result: CellResult, families: Sequence[str], index: int, stamp: str) -> TestSuite:
    suite = _Suite(result.id)
    suite.id = str(index)
    suite.package = "kernel-matrix"
    suite.hostname = socket.gethostname() or "localhost"
    suite.timestamp = stamp
    for key in ("cuda", "archs", "backend"):
        suite.add_property(key, str(result.cell.get(key, "")))
    suite.add_property("status", result.status)
    suite.add_property("toolchain", result.toolchain or "")
    suite.add_property("log", result.log or "")
    suite.add_property("cached", "true" if result.cached else "false")
    suite.add_property("build_dir", result.build_dir or "")
    status = cell_status(result)
    if status in (PASSED, FAILED):
        cases = _checked_cases(result, families)
    else:
        cases = _unchecked_cases(result, families)
    # Never a false pass: a non-passed cell must show a failure or an error.
    if status == FAILED and not _has(cases, Failure):
        case = _case(result.id, "cell")
        case.result = [Failure(clean(result.reason or "the cell failed"), "failed")]
        cases.append(case)
    if status in (ERROR, NOT_RUN) and not _has(cases, Error):
        case = _case(result.id, "cell")
        case.result = [Error(clean(result.reason or result.status), result.status)]
        cases.append(case)
    # junitparser's methods are untyped; these calls are checked by the schema tests.
    for case in cases:
        suite.append(case)  # type: ignore[no-untyped-call]
    suite.update_statistics()  # type: ignore[no-untyped-call]
    suite._elem.set("time", f"{result.duration_s:.3f}")
    out = SystemOut(clean("\n".join([*result.skip_lines, *result.warnings])))
    err = SystemErr(clean("\n".join(result.log_tail[-LOG_TAIL_LINES:])))
    suite.append(out)  # type: ignore[no-untyped-call]
    suite.append(err)  # type: ignore[no-untyped-call]
    return suite


def build_junit(results: Sequence[CellResult]) -> JUnitXml:
    families = families_of(results)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    xml = JUnitXml()
    for index, result in enumerate(results):
        # append, not add_testsuite: the latter compares every pair of suites.
        xml.append(cell_suite(result, families, index, stamp))  # type: ignore[no-untyped-call]
    return xml


def junit_text(results: Sequence[CellResult]) -> str:
    body: bytes = build_junit(results).tostring()  # type: ignore[no-untyped-call]
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body.decode("utf-8") + "\n"


def write_junit(results: Sequence[CellResult], path: Path) -> Path:
    write_atomic(path, junit_text(results))
    return path
