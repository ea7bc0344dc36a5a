"""Tables that fit the terminal: each view has a wide layout (a grid) and narrower
ones (per device, per family, one line each). The widest layout that fits the
console without wrapping a column is printed; names that tell rows apart (cell ids,
family names) are never truncated or split, only long lists fold between words.
Designed for 80 and 120 columns (and the 160 used when output is piped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from orchestrator.reporting.console import Message, mark, say

Layout = Callable[[], RenderableType]


def fits(console: Console, renderable: RenderableType) -> bool:
    """Whether ``renderable`` prints within the console's width with no word split
    and no ``no_wrap`` column (names, marks) cut: prose columns may still fold."""
    if isinstance(renderable, Table):
        _pin_no_wrap(renderable)
    unbounded = console.options.update_width(100_000)  # Measurement.get clamps to the width
    return Measurement.get(console, unbounded, renderable).minimum <= console.width


def _pin_no_wrap(table: Table) -> None:
    """rich measures a ``no_wrap`` column by its longest word, and crops it when the
    table is too wide: its minimum width is made its longest line instead."""
    for column in table.columns:
        if not column.no_wrap:
            continue
        texts = [column.header, *column.cells]
        longest = max((cell_len(line) for t in texts for line in _plain(t).splitlines()), default=0)
        column.min_width = max(column.min_width or 0, longest)


def _plain(renderable: object) -> str:
    return renderable.plain if isinstance(renderable, Text) else str(renderable)


def show(console: Console, *layouts: Layout) -> None:
    """Print the first layout that fits (the last one always: it must wrap by lines)."""
    for layout in layouts[:-1]:
        renderable = layout()
        if fits(console, renderable):
            print_table(console, renderable)
            return
    print_table(console, layouts[-1]())


def print_table(console: Console, renderable: RenderableType) -> None:
    """Print a table (or a layout holding :class:`Message` lines). A table's title is
    a message of its own: rich would wrap it at the table's width, pipe or not."""
    if isinstance(renderable, Table) and renderable.title is not None:
        say(console, _plain(renderable.title))
        renderable.title = None
    console.print(renderable, crop=False)


def grid(title: str | None = None) -> Table:
    """A table in the house style: compact, title on the left."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


# --- family x device views (probe --families, check) ---------------------------------


@dataclass(frozen=True)
class FamilyRow:
    family: str
    code: str  # the code objects holding it ("sm_100a sm_120f", "hollow in sm_121a")
    statuses: tuple[str, ...]  # one verdict status per device (present, missing, ...)


LEGEND = ("present", "missing", "hollow", "not-applicable")
# Shown in a legend only when a table uses them.
EXTRA_LEGEND = ("present-jit", "not-matched")
LEGEND_WORDS = {
    "not-applicable": "not applicable (not meant for that device)",
    "present-jit": "present only as PTX, JIT-compiled at first launch",
    "not-matched": "not matched (the family's rule does not fit this build: see warning)",
}


def legend(used: Sequence[str] = ()) -> str:
    shown = [*LEGEND, *(s for s in EXTRA_LEGEND if s in used)]
    return "  ".join(f"{mark(s)} {LEGEND_WORDS.get(s, s)}" for s in shown)


def family_device_view(
    console: Console,
    title: str,
    rows: Sequence[FamilyRow],
    devices: Sequence[str],
    code_header: str = "code objects",
) -> None:
    """Families × devices: a grid when it fits, else one block per family naming
    the devices of each verdict (``✅ 10.0 10.3 12.0  ❌ 12.1``)."""

    def as_grid() -> RenderableType:
        table = grid(title)
        table.add_column("family", no_wrap=True)
        table.add_column(code_header, overflow="fold", min_width=12)
        for device in devices:
            table.add_column(device, justify="center", no_wrap=True)
        for row in rows:
            marks = [Text(mark(s)) for s in row.statuses]
            table.add_row(Text(row.family), Text(row.code or "(none)"), *marks)
        return table

    def per_family() -> RenderableType:
        lines = [Message(title)]
        for row in rows:
            lines.append(Message(f"{row.family}  {code_header}: {row.code or '(none)'}"))
            groups = []
            for status in (*LEGEND, *EXTRA_LEGEND):
                on = [d for d, s in zip(devices, row.statuses, strict=True) if s == status]
                if on:
                    groups.append(f"{mark(status)} {' '.join(on)}")
            lines.append(Message("    " + "   ".join(groups), indent=8))
        return Group(*lines)

    show(console, as_grid, per_family)
    say(console, legend([s for row in rows for s in row.statuses]))
