"""The ``plan`` table: every cell with its nvcc ``-gencode`` flags and, for a
skipped cell, why (in the words ``run`` uses: unsupported, toolchain unavailable)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.text import Text

from orchestrator.common.words import counted
from orchestrator.planning.matrix import Matrix
from orchestrator.planning.plan import Cell
from orchestrator.reporting.console import Message
from orchestrator.reporting.tables import grid, show


def gencode_lines(cell: Cell) -> str:
    """``arch=compute_90a,code=sm_90a``, one target a line (each is a ``-gencode``)."""
    flags = cell.to_json()["gencode"]
    return "\n".join(flag for flag in flags if flag != "-gencode")


def status_word(cell: Cell) -> str:
    return cell.status.replace("-", " ")


def reason(cell: Cell) -> str:
    """The reason, without the status word it may start with."""
    text = cell.reason or ""
    return text.removeprefix(status_word(cell) + ":").strip()


def print_plan(out: Console, matrix: Matrix, cells: Sequence[Cell]) -> None:
    title = (
        f"{matrix.path}: {counted(len(cells), 'cell')} ({sum(c.runnable for c in cells)} to run)"
    )

    def wide() -> RenderableType:
        table = grid(title)
        table.add_column("cell", no_wrap=True)
        table.add_column("CUDA", no_wrap=True)
        table.add_column("nvcc -gencode", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("reason", overflow="fold", min_width=30)
        for cell in cells:
            table.add_row(
                Text(cell.id),
                str(cell.cuda),
                Text(gencode_lines(cell)),
                status_word(cell),
                Text(reason(cell)),
            )
        return table

    def narrow() -> RenderableType:
        # The cell id already carries the CUDA version; the reason goes under its status.
        table = grid(title)
        table.add_column("cell", no_wrap=True)
        table.add_column("nvcc -gencode", no_wrap=True)
        table.add_column("status", overflow="fold", min_width=12)
        for cell in cells:
            status = status_word(cell) + (f": {reason(cell)}" if cell.reason else "")
            table.add_row(Text(cell.id), Text(gencode_lines(cell)), Text(status))
        return table

    def compact() -> RenderableType:
        # The reasons under the table, once for all the cells that share one.
        table = grid()
        table.add_column("cell", no_wrap=True)
        table.add_column("nvcc -gencode", no_wrap=True)
        table.add_column("status", min_width=11)
        for cell in cells:
            table.add_row(Text(cell.id), Text(gencode_lines(cell)), status_word(cell))
        shared: dict[tuple[str, str], list[str]] = {}
        for cell in cells:
            if cell.reason:
                shared.setdefault((status_word(cell), reason(cell)), []).append(cell.id)
        reasons = [
            Message(f"{word}: {', '.join(ids)}: {why}") for (word, why), ids in shared.items()
        ]
        return Group(Message(title), table, *reasons)

    def lines() -> RenderableType:
        said = [Message(title)]
        for cell in cells:
            why = f": {reason(cell)}" if cell.reason else ""
            said.append(Message(f"{cell.id}  {status_word(cell)}{why}"))
            flags = gencode_lines(cell).replace("\n", " -gencode ")
            said.append(Message(f"    -gencode {flags}", indent=8))
        return Group(*said)

    # A reason in a table column wraps inside it; a CI log gets each reason as a line.
    layouts = (wide, narrow, compact, lines) if out.is_terminal else (compact, lines)
    show(out, *layouts)
