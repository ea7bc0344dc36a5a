"""index.html: self-contained, autoescaped, with heatmap, drill-down, diffs and the
history trend. (It is rendered in a real Chromium in tests/integration.)"""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from report_data import NASTY, passed_cell, sample_results

from orchestrator.judge.expect import MISSING
from orchestrator.reporting.history import load_history
from orchestrator.reporting.writers import write_all


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str = "", **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag
            and (not cls or cls in a.get("class", "").split())
            and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def page(tmp_path: Path, results: list | None = None, **kwargs: object) -> str:  # type: ignore[type-arg]
    write_all(results if results is not None else sample_results(), tmp_path, **kwargs)  # type: ignore[arg-type]
    return (tmp_path / "index.html").read_text(encoding="utf-8")


def test_kernel_names_are_escaped(tmp_path: Path) -> None:
    html = page(tmp_path)
    assert "foo&lt;int, &amp;bar&gt;(float*)" in html
    assert "foo<int" not in html and "&bar>" not in html
    assert NASTY in "".join(Elements(html).text)  # and reads back as the real name


def test_hostile_cell_ids_and_log_lines_are_escaped(tmp_path: Path) -> None:
    results = sample_results()
    evil = '"><script>alert(1)</script>'
    results[0].cell["id"] = "cu13.0-" + evil
    results[2].log_tail.append("</pre><img src=x onerror=alert(2)>")
    html = page(tmp_path, results)
    assert "<script>alert" not in html and "<img" not in html
    assert html.count("<script>") == 1  # ours


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    html = page(tmp_path)
    elements = Elements(html)
    assert not elements.find("link") and not elements.find("img") and not elements.find("iframe")
    assert all(not a.get("src") for _, a in elements.tags)
    assert not re.search(r"https?://", html)
    assert "@import" not in html and "url(" not in html


def test_heatmap_and_drill_down(tmp_path: Path) -> None:
    elements = Elements(page(tmp_path))
    results = sample_results()
    rows = elements.find("tr")
    heat = [a for a in rows if "data-anchor" in a]
    assert [a["data-id"] for a in heat] == [r.id for r in results]
    squares = elements.find("td", "h")
    assert len(squares) == len(results) * 4
    assert [s["class"] for s in squares[4:6]] == ["h s-missing", "h s-hollow"]
    assert {s["class"] for s in squares[8:12]} == {"h s-error"}
    cells = elements.find("details", "cell")
    assert [c["data-id"] for c in cells] == [r.id for r in results]
    assert all(c["id"] == a["data-anchor"] for c, a in zip(cells, heat, strict=True))
    text = "".join(elements.text)
    assert "Not building NVFP4" in text  # the cause, in the drill-down
    assert "Unsupported gpu architecture" in text  # the crash's log tail
    assert "8.8 KiB" in text  # a kernel's size (9000 bytes)


def test_history_and_kernel_diff_against_the_previous_night(tmp_path: Path) -> None:
    history = tmp_path / "reports" / "history.json"
    page(tmp_path / "reports" / "night1", history_file=history, run_label="2025-01-01")
    worse = sample_results()
    worse[0].verdicts[0] = dataclasses.replace(worse[0].verdicts[0], status=MISSING)
    worse[0].settle()
    html = page(
        tmp_path / "reports" / "night2", worse, history_file=history, run_label="2025-01-02"
    )
    entries = load_history(history)
    assert [e.run for e in entries] == ["2025-01-01", "2025-01-02"]
    assert entries[1].regressions == 1 and entries[0].regressions is None
    assert entries[1].baseline == "night2/baseline.json"
    elements = Elements(html)
    assert elements.find("section", id="history") and elements.find("svg", id="trend")
    assert len(elements.find("g", "bar")) == 2
    assert "Against the previous night (2025-01-01)" in html
    links = [a["href"] for a in elements.find("a") if a["href"].endswith("index.html")]
    assert links == ["../night2/index.html", "../night1/index.html"]  # newest first
    assert all((tmp_path / "reports" / "night2" / link).is_file() for link in links)


def test_reporting_a_run_again_replaces_its_history_entry(tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    for _ in range(2):
        page(tmp_path / "a", history_file=history)
    page(tmp_path / "b", [passed_cell()], history_file=history)
    page(tmp_path / "a", history_file=history)
    entries = load_history(history)
    assert [e.dir for e in entries] == ["a", "b"]
    data = json.loads(history.read_text())
    assert data["schema_version"] == 1 and len(data["runs"]) == 2


def test_a_configure_tier_report_says_predicted_where_the_eye_lands(tmp_path: Path) -> None:
    """Issue 35, item 12: the report of a configure-tier run said "OK · exit 0" and
    "passed" like a build; every verdict of it is a prediction (nothing compiled)."""
    guess = dataclasses.replace(passed_cell(), tier="configure")
    elements = Elements(page(tmp_path, [guess]))
    shown = [t.strip() for t in elements.text]
    assert "OK (predicted) · exit 0" in shown  # the header's verdict
    assert "✓ predicted to pass" in shown and "✓ passed" not in shown  # the cell's badge
    assert "predicted to pass" in shown and "passed" not in shown  # the header's count
    (row_badge,) = [a for a in elements.find("span", "badge") if a.get("title")]
    assert row_badge["title"] == "predicted to pass"  # the heatmap row
    built = [t.strip() for t in Elements(page(tmp_path / "built", [passed_cell()])).text]
    assert "OK · exit 0" in built and "✓ passed" in built and "passed" in built
