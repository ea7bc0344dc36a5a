"""summary.md: grid, failures with causes, baseline diff, and GitHub's 1 MiB limit."""

from __future__ import annotations

import dataclasses

from report_data import CRASH, NASTY, SKIP_LINE, passed_cell, sample_results, synthetic_results

from orchestrator.judge.baseline import summarize
from orchestrator.judge.compare import diff_results
from orchestrator.judge.expect import MISSING, NOT_MATCHED, PRESENT, Verdict
from orchestrator.judge.results import FAILED, exit_code
from orchestrator.reporting.html import build_view, render_html
from orchestrator.reporting.markdown import GITHUB_SUMMARY_LIMIT, code, render_markdown, text


def grid_rows(markdown: str) -> dict[str, str]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| cell |"):
            rows[line.split(" | ")[0][2:].replace("\\", "")] = line
    return rows


def test_grid_failures_and_skips() -> None:
    results = sample_results()
    md = render_markdown(results, exit_code=exit_code(results))
    assert md.startswith("## kernel-matrix: ❌ FAILED (exit 1)")
    rows = grid_rows(md)
    assert rows["cu13.0-12.1f"].startswith("| cu13.0-12.1f | ✅ passed | ✅ | ✅ | ➖ | ➖ |")
    assert "| ❌ failed | ❌ 12.1 | ⚠️ 12.1 | ➖ | ➖ |" in rows["cu12.9-12.1a"]
    assert "| 💥 error | 💥 | 💥 | 💥 | 💥 |" in rows["cu12.8-10.0f"]
    assert "| ⏸️ not-run | ⏸️ |" in rows["cu13.0-9.0a"]
    assert "| ➖ skipped | ➖ |" in rows["cu12.9-9.0a"]
    # failures with their causes, the crash with its log tail
    assert "**missing** on 12.1" in md and text(SKIP_LINE) in md
    assert "**hollow** on 12.1" in md
    assert CRASH in md and "<details><summary>last lines of the build log" in md
    assert "(toolchain\\-unavailable)" in md or "(toolchain-unavailable)" in md
    assert "Truncated" not in md


def test_kernel_names_cannot_inject_markdown_or_html() -> None:
    assert text(NASTY) == "void foo\\<int, &amp;bar\\>(float\\*)"
    assert text("a | b") == "a \\| b"
    assert code("x`y") == "``x`y``"


def test_baseline_regressions_are_listed() -> None:
    new = passed_cell()
    new.verdicts[0] = dataclasses.replace(new.verdicts[0], status=MISSING, served_by=())
    new.settle()
    diff = diff_results(summarize([passed_cell()]), [new])
    md = render_markdown([new], exit_code=1, diff=diff)
    assert "**Against the baseline:** 1 regression" in md
    assert "**Regressions** (1)" in md
    assert "`nvfp4 on 12.1`: present (sm\\_120f) → missing" in md


def test_a_large_matrix_stays_under_the_github_limit() -> None:
    results = synthetic_results(2000, 30)
    md = render_markdown(results, exit_code=exit_code(results))
    assert len(md.encode("utf-8")) < GITHUB_SUMMARY_LIMIT
    assert len(grid_rows(md)) == 2000  # it fits whole
    assert "… and" in md  # the failure list is short, not 400 items
    assert md.count("\n- ") < 60


def test_truncation_keeps_failing_rows_first_and_says_so() -> None:
    results = synthetic_results(2000, 30)
    limit = 200_000
    md = render_markdown(results, exit_code=exit_code(results), limit=limit)
    assert len(md.encode("utf-8")) <= limit
    rows = grid_rows(md)
    assert 0 < len(rows) < 2000
    not_passing = [r.id for r in results if r.status != "passed"]
    assert all(cell_id in rows for cell_id in not_passing)  # every problem shown
    assert "**Truncated** to stay under GitHub's 1 MiB summary limit" in md
    assert f"{2000 - len(rows)} of 2000 grid rows omitted" in md
    assert md.rstrip().endswith("HTML report.")


def test_even_a_tiny_limit_keeps_the_verdict() -> None:
    results = synthetic_results(50, 30)
    md = render_markdown(results, exit_code=exit_code(results), limit=6000)
    assert md.startswith("## kernel-matrix: ❌ FAILED")
    assert "Truncated" in md


def test_not_matched_and_jit_only_families_are_shown_as_such() -> None:
    """A rule that stopped fitting is ❓ with its devices and its warning, never a
    bare ❌; a family present only as PTX is ✅ᴶ with the devices that JIT it."""
    cell = passed_cell()
    jit = Verdict("marlin", "12.1", PRESENT, ("compute_80",), ("_C.abi3.so",),
                  ("marlin::Marlin<1>",), ("sm_80", "compute_80"),
                  "1 of 1 marlin kernel served on 12.1 by compute_80 "
                  "(all JIT-compiled from PTX at first launch)", jit_kernels=1)  # fmt: skip
    unfit = Verdict("marlin_moe", "12.1", NOT_MATCHED,
                    reason="marlin_moe not matched: 350 kernels match `x` by name but ...")  # fmt: skip
    cell = dataclasses.replace(cell, verdicts=[*cell.verdicts, jit, unfit], status=FAILED)
    md = render_markdown([cell], exit_code=exit_code([cell]))
    row = grid_rows(md)["cu13.0-12.1f"]
    assert "| ✅ᴶ 12.1 | ❓ 12.1 |" in row, row
    assert "**not-matched** on 12.1: marlin\\_moe not matched: 350 kernels match" in md
    assert exit_code([cell]) == 1
    html = render_html(build_view([cell], exit_code=1, verdict="FAILED"))
    assert 'class="badge s-not-matched"' in html and ">JIT</span>" in html
    assert "only as PTX, JIT-compiled, on 12.1" in html
    # missing on one device and JIT-only on another: both are shown
    missing = Verdict("marlin", "12.0", MISSING, reason="no kernel of marlin on 12.0")
    mixed = dataclasses.replace(cell, verdicts=[*cell.verdicts, missing])
    row = grid_rows(render_markdown([mixed], exit_code=1))["cu13.0-12.1f"]
    assert "| ❌ 12.0 · ✅ᴶ 12.1 |" in row, row
    html = render_html(build_view([mixed], exit_code=1, verdict="FAILED"))
    assert "missing on 12.0; present only as PTX, JIT-compiled, on 12.1" in html
