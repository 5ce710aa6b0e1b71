"""Text tables that fit a terminal."""

from __future__ import annotations

__all__ = ["TABLE_WIDTH", "fixed_width"]

TABLE_WIDTH = 120  # default tables fit a terminal this wide (rank --wide: every column)


def fixed_width(head: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,),
                width: int = TABLE_WIDTH) -> str:
    """Columns separated by one space, numbers right-aligned, the ``left`` (text) columns
    left-aligned; the first text column is cut (…) so that no line exceeds ``width``."""
    widths = [max(len(c[j]) for c in [head, *rows]) for j in range(len(head))]
    cut = left[0]
    spare = width - (sum(widths) + len(widths) - 1)
    if spare < 0:  # only the first text column (the schedule) gives way
        widths[cut] = max(len(head[cut]), widths[cut] + spare)
    lines = []
    for cells in [head, *rows]:
        cells = list(cells)
        if len(cells[cut]) > widths[cut]:
            cells[cut] = cells[cut][: widths[cut] - 1] + "…"
        lines.append(" ".join(c.ljust(w) if j in left else c.rjust(w)
                              for j, (c, w) in enumerate(zip(cells, widths, strict=True)))
                     .rstrip())
    return "\n".join(lines)
