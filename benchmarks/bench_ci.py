"""Where the time of a CI run goes, by test file, from pytest's JUnit XML.

    CI=true PYTEST_ADDOPTS="--junitxml=/tmp/ci.xml" bash .ci/run   # (timed from outside)
    python benchmarks/bench_ci.py --junit /tmp/ci.xml --wall 1500 [--append]

Each test's time includes the downloads it triggered (the first test that needs a
toolchain, a torch environment or a wheel pays for it), so on a fresh machine a file's
share is what it costs there. ``--wall`` is the whole ``.ci/run`` (installs, lint and
pytest's collection included), measured by the caller.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, append_entry

CONFIGURE_TESTS = "tests/integration/test_vllm_configure.py"


def by_file(junit: Path) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
    """Seconds, tests and failures (errors included) per test file."""
    seconds: dict[str, float] = defaultdict(float)
    tests: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    for case in ElementTree.parse(junit).iter("testcase"):  # noqa: S314 (our own report)
        classname = case.get("classname", "")
        parts = classname.split(".")
        # tests.unit.test_x[.Class] -> tests/unit/test_x.py; doctests: orchestrator.mod
        module = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
        name = "/".join(parts[: module + 1]) + ".py"
        seconds[name] += float(case.get("time", 0))
        tests[name] += 1
        failed[name] += any(c.tag in ("failure", "error") for c in case)
    return seconds, tests, failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--junit", type=Path, required=True, help="pytest's --junitxml file")
    parser.add_argument("--wall", type=float, help="seconds the whole .ci/run took")
    parser.add_argument("--most", type=int, default=12, help="files to list (by time)")
    add_output_options(parser)
    args = parser.parse_args()

    seconds, tests, failed = by_file(args.junit)
    total = sum(seconds.values())
    rows = [
        "| test file | tests | failed | seconds | share of the tests' time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    listed = sorted(seconds, key=seconds.__getitem__, reverse=True)[: args.most]
    if CONFIGURE_TESTS in seconds and CONFIGURE_TESTS not in listed:
        listed.append(CONFIGURE_TESTS)
    for name in listed:
        rows.append(
            f"| {name} | {tests[name]} | {failed[name]} | {seconds[name]:.0f} "
            f"| {100 * seconds[name] / total:.1f} % |"
        )
    others = [n for n in seconds if n not in listed]
    rows.append(
        f"| {len(others)} other files | {sum(tests[n] for n in others)} "
        f"| {sum(failed[n] for n in others)} | {sum(seconds[n] for n in others):.0f} "
        f"| {100 * sum(seconds[n] for n in others) / total:.1f} % |"
    )
    wall = f"; the whole `.ci/run`: {args.wall:.0f} s" if args.wall else ""
    summary = (
        f"{sum(tests.values())} tests, {sum(failed.values())} failed, "
        f"{total:.0f} s in tests{wall}. The configure tier's tests ({CONFIGURE_TESTS}): "
        f"{seconds.get(CONFIGURE_TESTS, 0):.0f} s, "
        f"{100 * seconds.get(CONFIGURE_TESTS, 0) / total:.1f} % of the tests' time."
    )
    print("\n".join([*rows, "", summary]))
    if args.append:
        append_entry(args, "CI run, time by test file", [], [*rows, "", summary])
    return 0


if __name__ == "__main__":
    sys.exit(main())
