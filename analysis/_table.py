"""The one formatting rule for the tables a reader compares schedules in: the terminal
(``rank``, the confirmation a study prints), the HTML report and markdown pages all take their
columns, units and rounding from here, and only lay the cells out differently.

A column has a short header (a 120-column terminal), a header in words (a page), and the rule
that turns a row into its cell. Units: gap reductions and CE differences in nats (3 decimals),
accuracy differences in points (1 decimal), intervals as ``[lo, hi]``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd

from ._text import fixed_width

__all__ = ["Column", "TableCells", "ranking_cells", "confirm_cells", "render_text",
           "render_html", "render_markdown", "nats", "points", "interval"]

Row = dict[str, Any]


class Column(NamedTuple):
    short: str  # terminal header
    words: str  # page header
    cell: Callable[[Row], str]
    text: bool = False  # left-aligned (a name or words), else a number


class TableCells(NamedTuple):
    columns: list[Column]
    rows: list[list[str]]
    first_out: int | None  # index of the first row below the line (infeasible), None: none
    notes: list[str]  # what the units and marks mean, one line each (the terminal's headers)
    page_note: str = ""  # the same in one sentence for a page (its headers in words)


def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def nats(v: Any, digits: int = 3) -> str:
    return "n/a" if _bad(v) else f"{float(v):+.{digits}f}"


def points(v: Any) -> str:
    """A fraction shown in points (accuracy)."""
    return "n/a" if _bad(v) else f"{100 * float(v):+.1f}"


def interval(lo: Any, hi: Any, sep: str = ", ") -> str:
    return "n/a" if _bad(lo) or _bad(hi) else f"[{float(lo):+.3f}{sep}{float(hi):+.3f}]"


def _guard(r: Row) -> str:
    if r.get("pruned"):
        return "pruned"
    return "ok" if r.get("feasible") else "no"


def _label(r: Row) -> str:
    return str(r["schedule"]) + ("*" if r.get("enqueued") else "")


def ranking_cells(ranking: pd.DataFrame, metric: str, sep: str = ",") -> TableCells:
    """The ranking's default columns (``rank`` prints them): the selection metric with its
    interval, the test reduction, Δ accuracy, Δ train and Δ test CE, the side the gap closed
    from, the guard (``pruned`` for a pruned schedule), n; ``*`` marks an enqueued one."""
    closure = metric == "val_closure"
    lo, hi = ("val_ci_low", "val_ci_high") if closure else ("val_red_ci_low", "val_red_ci_high")
    name = ("val_clos", "validation closure") if closure else \
        ("val_red", "validation gap reduction (nats)")
    cols = [
        Column("#", "#", lambda r: str(r["_rank"])),
        Column("schedule", "schedule", _label, text=True),
        Column(name[0], name[1], lambda r: nats(r[metric])),
        Column(f"{name[0]}_ci", "95% CI", lambda r: interval(r[lo], r[hi], sep)),
        Column("test_red", "test gap reduction (nats)",
               lambda r: nats(r["test_gap_reduction"])),
        Column("Δacc", "Δ test acc (points)", lambda r: points(r["delta_test_acc"])),
        Column("Δtrain", "Δ train CE (nats)", lambda r: nats(r["delta_train_ce"])),
        Column("Δtest", "Δ test CE (nats)", lambda r: nats(r["delta_test_ce"])),
        Column("from", "gap closed from", lambda r: str(r.get("closed_from") or "-")),
        Column("guard", "guards", _guard),
        Column("n", "seeds", lambda r: str(r["n_seeds"])),
    ]
    records = ranking.to_dict("records")
    # a frame holding a "rank" column (a subset of the ranking) keeps its ranks
    rows = [[c.cell({**r, "_rank": int(r.get("rank", i))}) for c in cols]
            for i, r in enumerate(records, 1)]
    out = next((i for i, r in enumerate(records) if not r.get("feasible")), None)
    notes = [f"{name[0]}: {metric}, the selection (validation), 95% CI over seeds; test_red: "
             "the test gap reduction (only read).",
             "Δ against the matched CE baseline: acc in test accuracy points, train / test CE "
             "in nats. from: the test gap",
             "closed from below (train CE up), above (test CE down) or both. guard: within the "
             "study's guards. * enqueued."]
    page = (f"Selected on the {name[1].removesuffix(' (nats)')}, 95% CI over seeds; the test "
            "gap reduction is only read. Δ against the matched CE baseline on "
            "the same seeds. Gap closed from below: train CE up; above: test CE down. Guards: "
            "ok within the study's guards, no outside them, pruned stopped early. * enqueued.")
    return TableCells(cols, rows, out, notes, page)


def confirm_cells(info: Any, sep: str = ",") -> TableCells:
    """The confirmation (``analysis._confirm.ConfirmInfo``): per schedule the in-search
    validation value, the confirmed test value with its interval, the shrinkage, Δ accuracy,
    Δ train and Δ test CE, n and the verdict in words."""
    m = info.metric.removeprefix("val_")
    cols = [
        Column("schedule", "schedule", lambda r: str(r["schedule"]), text=True),
        Column("search_val", "in search (validation)", lambda r: nats(r[f"search_val_{m}"])),
        Column("confirmed", "confirmed (test)", lambda r: nats(r[f"confirmed_test_{m}"])),
        Column("95% CI", "95% CI", lambda r: interval(r[f"confirmed_{m}_ci_low"],
                                                      r[f"confirmed_{m}_ci_high"], sep)),
        Column("shrink", "shrinkage", lambda r: nats(r[f"shrinkage_{m}"])),
        Column("Δacc", "Δ test acc (points)", lambda r: points(r["confirmed_delta_test_acc"])),
        Column("Δtrain_ce", "Δ train CE (nats)", lambda r: nats(r["confirmed_delta_train_ce"])),
        Column("Δtest_ce", "Δ test CE (nats)", lambda r: nats(r["confirmed_delta_test_ce"])),
        Column("n", "seeds", lambda r: str(r["n_confirmed"])),
    ]
    rows = [[c.cell(r) for c in cols] for r in info.table.to_dict("records")]
    return TableCells(cols, rows, None, [])


def render_text(t: TableCells, width: int | None = None) -> str:
    left = tuple(i for i, c in enumerate(t.columns) if c.text)
    kw = {} if width is None else {"width": width}
    return fixed_width([c.short for c in t.columns], t.rows, left=left, **kw)


def render_markdown(t: TableCells, extra: list[str] | None = None) -> str:
    """A markdown table with headers in words (``extra``: a verdict column in words)."""
    head = "| " + " | ".join(c.words for c in t.columns) + (" | verdict |" if extra else " |")
    rule = "|" + "|".join("---" if c.text else "---:" for c in t.columns) + \
        ("|---|" if extra else "|")
    rows = [r + ([extra[i]] if extra else []) for i, r in enumerate(t.rows)]
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in rows)])


def render_html(t: TableCells, extra: list[str] | None = None, cls: str = "ranking") -> str:
    """A table with headers in words; a visible line above the first row below the line;
    ``extra``: one more cell per row, in words (a verdict), spanning the row's last column."""
    n = len(t.columns) + (1 if extra else 0)
    head = "".join(f"<th>{html.escape(c.words)}</th>" for c in t.columns)
    if extra:
        head += "<th>verdict</th>"
    body = []
    for i, row in enumerate(t.rows):
        if i == t.first_out:
            body.append(f'<tr class="line"><td colspan="{n}">below the line: outside the '
                        "guards, pruned, or without a matched baseline</td></tr>")
        cells = "".join(f'<td class="{"t" if c.text else "n"}">{html.escape(v)}</td>'
                        for c, v in zip(t.columns, row, strict=True))
        if extra:
            cells += f'<td class="t">{html.escape(extra[i])}</td>'
        body.append(f"<tr>{cells}</tr>")
    return (f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")
