"""Each reproduction figure computed from hand-made records (no training, no plot): the numbers
and verdicts against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis import get_figure_info, plot_figure


def _run(n: int, **series: list[float]) -> list[dict[str, float]]:
    return [{k: v[e] for k, v in series.items()} | {"epoch": e} for e in range(n)]


def test_fig3_rise_and_dpi_violations_by_hand(tmp_path: Path) -> None:
    # seed 0: I(Y;Ŷ) 0.1 -> 0.5, seed 1: 0.3 -> 0.9; one DPI violation (seed 1, epoch 2)
    ce = [_run(3, mi_y_yhat=[0.1, 0.3, 0.5], mi_y_x=[2.0] * 3, dpi_margin=[1.0, 1.0, 1.0]),
          _run(3, mi_y_yhat=[0.3, 0.6, 0.9], mi_y_x=[2.0] * 3, dpi_margin=[1.0, 0.5, -0.1])]
    info = get_figure_info(3, {"ce": ce}, {})
    assert info.numbers["mi_rise_bits"] == pytest.approx((0.5 + 0.9) / 2 - (0.1 + 0.3) / 2)
    assert info.numbers["dpi_violations"] == 1 and info.numbers["seed_epochs"] == 6
    assert info.verdict.startswith("Partly supported")  # it rises, but DPI is violated once
    png = plot_figure(info, "hand", tmp_path / "f3.png")
    assert png.stat().st_size > 5000


def test_fig4_and_fig5_by_hand() -> None:
    reg = [_run(3, mi_y_yhat=[0.2, 0.4, 0.8], train_ce=[2.0, 1.0, 0.5], gap=[0.1, 0.1, 0.1],
                test_ce=[2.1, 1.1, 0.6]),
           _run(3, mi_y_yhat=[0.2, 0.2, 0.2], train_ce=[2.0, 1.5, 1.5], gap=[0.3, 0.1, 0.1],
                test_ce=[2.3, 1.6, 1.6])]
    info4 = get_figure_info(4, {"reg": reg}, {})
    assert info4.numbers["mi_change_bits"] == pytest.approx(0.3)
    assert info4.numbers["train_ce_change"] == pytest.approx(-1.0)
    assert info4.verdict.startswith("Supported")
    ce = [_run(3, gap=[0.5, 0.5, 0.5], train_ce=[1.0] * 3, test_ce=[1.5] * 3),
          _run(3, gap=[0.4, 0.4, 0.4], train_ce=[1.0] * 3, test_ce=[1.4] * 3)]
    info5 = get_figure_info(5, {"ce": ce, "reg": reg}, {}, last_k=2)
    # the mean over the last 2 epochs, averaged over seeds
    assert info5.numbers["gap_ce"] == pytest.approx(0.45)
    assert info5.numbers["gap_reg"] == pytest.approx(0.1)
    lo, hi = info5.numbers["gap_reg_ci"]
    assert math.isclose(lo, 0.1) and math.isclose(hi, 0.1)  # both seeds' values are 0.1
    assert info5.verdict.startswith("Supported")  # narrower, and the intervals are apart


def test_fig1_maxima_are_the_argmax_widths() -> None:
    curves = [{"widths": [0.5, 1.0, 2.0], "alignment": [0.1, 0.3, 0.2], "sigma_yhat": 1.2},
              {"widths": [0.5, 1.0, 2.0], "alignment": [0.1, 0.2, 0.4], "sigma_yhat": 1.5}]
    info = get_figure_info(1, {}, {"reg": [Path("unused")]}, curves=curves)
    assert info.numbers["maxima"] == [1.0, 2.0] and info.numbers["s_star"] == 1.5
