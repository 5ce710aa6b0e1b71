"""The HTML report reads like the paper's table (issue 37): on the Fashion-MNIST findings
bundle (30 schedules) the first table has at most 12 columns with headers in words, intervals
as ``[lo, hi]``, feasible schedules above a visible line; every other column is one click away
and in ranking.csv; and the page does not scroll sideways at 1,400 pixels in Chromium. The
terminal and the page take their cells from one rule (``analysis._table``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analysis import analyze
from analysis._table import ranking_cells, render_text
from tests.study.conftest import mistudy

BUNDLE = Path(__file__).resolve().parents[2] / "docs/findings/closure-fashion.tar.gz"


class _Tables(HTMLParser):
    """The page's tables as lists of rows of cell texts (headers included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.depth_details = 0
        self.in_details: list[bool] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "details":
            self.depth_details += 1
        if tag == "table":
            self.tables.append([])
            self.in_details.append(self.depth_details > 0)
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.depth_details -= 1
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    res = mistudy("report", str(BUNDLE), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out / "report.html"


def test_the_first_table_is_the_ranking_a_reader_needs(report: Path) -> None:
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    first = p.tables[0]
    head = first[0]
    assert len(head) <= 12
    assert not any(re.fullmatch(r"[a-z]+(_[a-z]+)+", h) for h in head), head
    a = analyze(str(BUNDLE))
    rows = [r for r in first[1:] if len(r) == len(head)]
    assert len(rows) == len(a.ranking) == 30
    ci = head.index("95% CI")
    assert all(re.fullmatch(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", r[ci]) for r in rows)
    # feasible above the line, the rest below it, in the ranking's order
    line = [i for i, r in enumerate(first[1:]) if len(r) == 1]
    n_ok = int(a.ranking.feasible.sum())
    assert line == [n_ok] and all(r[head.index("guards")] == "ok" for r in rows[:n_ok])
    assert all(r[head.index("guards")] != "ok" for r in rows[n_ok:])
    # the same cells as the terminal's table (one rule), up to the interval's separator
    term = ranking_cells(a.ranking, a.selection.metric)
    for page_row, term_row in zip(rows, term.rows, strict=True):
        assert [c.replace(", ", ",") for c in page_row] == [c.replace("*", "*") for c in
                                                             term_row]
    assert render_text(term).splitlines()[1].split()[1] == rows[0][1].split()[0]
    # every other column one click away, and as CSV beside the page
    assert p.in_details[1] and len(p.tables[1][0]) > 30
    assert (report.parent / "ranking.csv").read_text().count("\n") == 31
    assert 'href="ranking.csv"' in report.read_text(encoding="utf-8")


def test_the_confirmation_has_the_verdict_in_words(report: Path) -> None:
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    conf = next(t for t, hidden in zip(p.tables, p.in_details, strict=True)
                if not hidden and t[0][-1] == "verdict")
    assert len(conf) == 1 + 5 and all(r[-1].startswith("closes the gap") for r in conf[1:])


def test_no_sideways_scroll_at_1400_pixels_in_chromium(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "make setup installs Debian's chromium for this test"
    probe = report.parent / "probe.html"  # the page, plus a line that writes its width
    probe.write_text(report.read_text(encoding="utf-8").replace(
        "</body>", '<script>document.body.setAttribute("data-sw", '
                   'document.documentElement.scrollWidth)</script></body>'), encoding="utf-8")
    flags = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--window-size=1400,1000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    width = int(re.search(r'data-sw="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert 0 < width <= 1400, width
