"""docs/findings.md's numbers come from the committed study bundles: regenerating its tables
with the documented command gives the page's blocks back, character for character."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.study.conftest import mistudy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted((ROOT / "docs" / "findings").glob("*.tar.gz"))
PAGE = ROOT / "docs" / "findings.md"


def test_the_findings_page_names_both_studies_and_their_bundles() -> None:
    names = {b.name.removesuffix(".tar.gz") for b in BUNDLES}
    assert {"closure-fashion", "closure-mnist"} <= names
    text = PAGE.read_text(encoding="utf-8")
    for name in names:
        assert f"<!-- tables:{name} -->" in text and f"docs/findings/{name}.tar.gz" in text
    for b in BUNDLES:
        assert b.stat().st_size < 5_000_000  # a few MB at most


def test_the_documented_command_reproduces_the_findings_tables(tmp_path: Path) -> None:
    res = mistudy("findings", *map(str, BUNDLES), "--out", str(tmp_path), timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    page = PAGE.read_text(encoding="utf-8")
    for b in BUNDLES:
        name = b.name.removesuffix(".tar.gz")
        fresh = (tmp_path / f"{name}-tables.md").read_text(encoding="utf-8").rstrip("\n")
        block = re.search(rf"<!-- tables:{re.escape(name)} -->\n(.*?)\n<!-- end tables:"
                          rf"{re.escape(name)} -->", page, re.S)
        assert block is not None, name
        assert block.group(1) == fresh, f"{name}: docs/findings.md differs from its bundle"
        assert (tmp_path / f"{name}-pareto.png").stat().st_size > 5000
        assert (tmp_path / f"{name}-family.png").stat().st_size > 5000
        assert (tmp_path / f"{name}-confirm.png").stat().st_size > 5000
