"""The README's printed quick study is what ``make study`` prints today (issue 34 item 5): the
quick preset's search run here end to end (Ray, MLflow, the real MNIST subset), and its ranking
table compared line by line with the README's. The search is ordered (``sampler_lag``) and the
runs deterministic on this machine kind, so any difference is a change in behaviour: rerun
``make study`` and paste its table into the README (the command is in the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.study.conftest import mistudy, require_loopback

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
README = Path(__file__).resolve().parents[2] / "README.md"


def _table(text: str) -> list[str]:
    """The ranking lines: the header after 'ranking by', then one numbered line per schedule."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("ranking by "))
    out = [lines[start], lines[start + 1]]
    for ln in lines[start + 2:]:
        if not ln[:1].isdigit():
            break
        out.append(ln)
    return out


def test_the_readme_quick_study_table_is_todays(tmp_path: Path) -> None:
    require_loopback()
    res = mistudy("run", "--preset", "quick", "--out", str(tmp_path / "q"), "--quiet",
                  timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    readme = README.read_text(encoding="utf-8")
    block = readme[readme.index("study 'quick': "):]
    assert _table(res.stdout) == _table(block)
    assert len(_table(block)) == 2 + 6  # six configurations
