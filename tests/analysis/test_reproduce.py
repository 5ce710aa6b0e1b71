"""Each figure's pipeline on tiny settings (2 epochs, 2 seeds) produces its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis._reproduce import CLAIMS, reproduce
from tests.study.conftest import mistudy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repro")


@pytest.mark.parametrize("figure", [3, 4, 5, 6, 1])
def test_figure_pipeline_makes_png_text_and_numbers(out: Path, figure: int) -> None:
    res = reproduce(figure, "fashion_mnist", "shallow", seeds=2, epochs=2, out=out,
                    log=lambda *_: None)
    stem = f"fig{figure}-fashion_mnist-shallow"
    assert res.png == out / f"{stem}.png" and res.png.stat().st_size > 5000
    text = (out / f"{stem}.txt").read_text()
    assert CLAIMS[figure] in text and res.verdict in text
    assert json.loads((out / f"{stem}.json").read_text())
    # Runs are shared: the CE and regularized runs exist once per seed.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert all(len(list((out / "runs" / r).glob("metrics.csv"))) == 1 for r in runs)


def test_reproduce_command_line(out: Path) -> None:
    res = mistudy("reproduce", "--figure", "5", "--dataset", "fashion_mnist", "--seeds", "2",
                  "--epochs", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "fig5-fashion_mnist-shallow.png" in res.stdout and "gap" in res.stdout
    bad = mistudy("reproduce", "--figure", "5", "--seeds", "0", "--out", str(out))
    assert bad.returncode == 2 and "--seeds=0" in bad.stderr
