"""``kernel-matrix report``, ``baseline save`` and ``diff``: what finished runs say, and what they lost against a baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.arguments import (
    Parser,
    add_results_args,
    add_strict,
    add_strict_kernels,
    with_error_line,
)
from orchestrator.common.errors import (
    EXIT_OK,
    UsageError,
)
from orchestrator.common.words import counted

if TYPE_CHECKING:
    from orchestrator.symbols import FamilyRule


def _nightly_dir() -> Path:
    from datetime import datetime, timezone

    return Path("reports") / datetime.now(timezone.utc).strftime("%Y-%m-%d")


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.common.fsutil import sole_writer
    from orchestrator.judge.baseline import load_baseline
    from orchestrator.judge.results import load_results
    from orchestrator.reporting.console import console, say
    from orchestrator.reporting.summary import print_diff, print_summary, verdict_line
    from orchestrator.reporting.writers import write_all
    from orchestrator.run.runner import latest_run_dir

    if not args.results:
        latest = latest_run_dir()
        if latest is None:
            raise UsageError("report: no RESULTS given and no run under reports/")
        args.results, args.out = [latest], args.out or latest
        say(console(), f"kernel-matrix: reporting the latest run, {latest}")
    results = load_results(args.results)
    baseline = load_baseline(args.baseline) if args.baseline else None
    out_dir = args.out or _nightly_dir()
    with sole_writer(out_dir):
        reports = write_all(
            results,
            out_dir,
            baseline=baseline,
            history_file=args.history,
            strict=args.strict,
            title=args.title,
        )
    out = console()
    print_summary(results, title=args.title)
    if reports.diff is not None:
        print_diff(reports.diff, against=str(args.baseline))
    if reports.previous is not None:
        print_diff(reports.previous, against=f"the previous run {reports.previous_run}")
    for note in reports.notes:
        say(out, note)
    inside = [p.name for p in reports.paths if p.parent.resolve() == out_dir.resolve()]
    elsewhere = [str(p) for p in reports.paths if p.parent.resolve() != out_dir.resolve()]
    say(out, f"reports in {out_dir}: {', '.join(inside)}")
    for path in elsewhere:
        say(out, f"updated {path}")
    say(out, verdict_line(results, reports.exit_code, reports.diff))
    return with_error_line(reports.exit_code, results, strict=args.strict)


def cmd_baseline_save(args: argparse.Namespace) -> int:
    from orchestrator.judge.baseline import save_baseline, summarize
    from orchestrator.judge.results import load_results
    from orchestrator.reporting.console import console, say

    results = load_results(args.results)
    baseline = summarize(results)
    save_baseline(baseline, args.out)
    out = console()
    # Skipped cells are expected to have no inventory; crashed or unrun ones are not.
    unchecked = [c.id for c in baseline.cells.values() if c.status in ("error", "not-run")]
    if unchecked:
        say(
            out,
            f"warning: this baseline constrains nothing in the {counted(len(unchecked), 'cell')} "
            f"that crashed or did not run: {', '.join(unchecked[:10])}"
            + (" …" if len(unchecked) > 10 else ""),
        )
    size = args.out.stat().st_size
    say(
        out,
        f"kernel-matrix: baseline {args.out}: {counted(len(baseline.cells), 'cell')}, "
        f"{counted(baseline.kernel_count, 'kernel')} ({size / 1024:.1f} KiB)",
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from orchestrator.judge.baseline import load_baseline
    from orchestrator.judge.compare import combined_exit_code, diff_results
    from orchestrator.judge.results import exit_code, load_results
    from orchestrator.reporting.console import console, say
    from orchestrator.reporting.summary import print_diff, verdict_line

    baseline = load_baseline(args.baseline)
    results = load_results(args.results)
    diff = diff_results(baseline, results, strict=args.strict_kernels)
    print_diff(diff, against=str(args.baseline))
    code = combined_exit_code(exit_code(results, strict=args.strict), diff)
    say(console(), verdict_line(results, code, diff))
    return with_error_line(code, results, strict=args.strict)


def cmd_compare(args: argparse.Namespace) -> int:
    from orchestrator.judge.compare import compare, compare_json, load_side
    from orchestrator.reporting.compare_view import compare_markdown, print_compare

    rules: tuple[FamilyRule, ...] = ()
    if args.families is not None:
        from orchestrator.planning.matrix import load_families_or_matrix
        from orchestrator.planning.profiles import resolve_families

        rules = load_families_or_matrix(resolve_families(args.families))
    base, head = load_side(args.base, rules), load_side(args.head, rules)
    diff = compare(base.summary, head.summary, strict=args.strict_kernels)
    data = compare_json(diff, base, head)
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.markdown:
        print(compare_markdown(diff, data))
    else:
        print_compare(diff, data)
    return diff.exit_code


def add_parsers(verbs: argparse._SubParsersAction[Parser]) -> None:
    p = verbs.add_parser(
        "report", help="write junit.xml, summary.md, results.json and index.html for results"
    )
    add_results_args(p, latest=True)
    p.add_argument("--out", type=Path, help="report directory (default: reports/<UTC date>)")
    p.add_argument(
        "--baseline", type=Path, help="compare with this baseline (exit 1 on regression)"
    )
    p.add_argument(
        "--history",
        type=Path,
        help="append this run to a history file (e.g. reports/history.json) and compare "
        "with the previous run in it",
    )
    p.add_argument("--title", default="kernel-matrix", help="title of the reports")
    add_strict(p)
    p.set_defaults(handler=cmd_report)

    p = verbs.add_parser("baseline", help="save a baseline (a small summary of a good run)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    q = actions.add_parser("save", help="summarize results into a baseline file")
    add_results_args(q)
    q.add_argument("--out", type=Path, required=True, help="baseline file to write")
    q.set_defaults(handler=cmd_baseline_save)

    p = verbs.add_parser("diff", help="compare results with a baseline (exit 1 on regression)")
    p.add_argument("baseline", type=Path, help="baseline file (kernel-matrix baseline save)")
    add_results_args(p)
    add_strict(p)
    add_strict_kernels(p)
    p.set_defaults(handler=cmd_diff)

    p = verbs.add_parser(
        "compare",
        help="what changed from BASE to HEAD, judged by what each requested device loads "
        "(exit 1 on a family × device regression)",
    )
    p.add_argument(
        "base", type=Path, help="run directory, results.json, baseline file, wheel or library"
    )
    p.add_argument(
        "head", type=Path, help="run directory, results.json, baseline file, wheel or library"
    )
    p.add_argument(
        "--families",
        type=Path,
        metavar="FILE",
        help="families or matrix file, or a shipped profile's name (vllm, sgl-kernel): "
        "needed where a side is a wheel or a library, which compare probes and judges itself",
    )
    add_strict_kernels(p)
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="machine-readable comparison")
    shown.add_argument(
        "--markdown", action="store_true", help="a block for a step summary or a PR comment"
    )
    p.set_defaults(handler=cmd_compare)
