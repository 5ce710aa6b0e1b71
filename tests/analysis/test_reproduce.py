"""Each figure's pipeline on tiny settings (2 epochs, 2 seeds) produces its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import CLAIMS
from study._commands import reproduce
from tests.study.conftest import mistudy
from trainables.locks import FolderLocked, folder_lock
from trainables.records import DEFAULT_LAST_K, read_metrics
from trainables.reproduce import plan_runs, train_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repro")


@pytest.mark.parametrize("figure", [3, 4, 5, 6, 1])
def test_figure_pipeline_makes_png_text_and_numbers(out: Path, figure: int) -> None:
    (res,) = reproduce(figure, "fashion_mnist", "shallow", seeds=2, epochs=2, out=out,
                       log=lambda *_: None)
    stem = f"fig{figure}-fashion_mnist-shallow"
    assert res.png == out / f"{stem}.png" and res.png.stat().st_size > 5000
    text = (out / f"{stem}.txt").read_text()
    assert CLAIMS[figure] in text and res.verdict in text
    assert json.loads((out / f"{stem}.json").read_text())
    # Runs are shared: the CE and regularized runs exist once per seed.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert all(len(list((out / "runs" / r).glob("metrics.csv"))) == 1 for r in runs)
    # The verdict follows from the runs' own per-epoch files (a second computation).
    if figure in EXPECTED_WORD:
        assert res.verdict.startswith(EXPECTED_WORD[figure](out)), res.verdict


def _cond(out: Path, cond: str, key: str) -> list[list[float]]:
    """Per seed, ``key`` over the epochs of condition ``cond``, read from metrics.csv."""
    folders = sorted((out / "runs").glob(f"fashion_mnist-shallow-28-{cond}-e2-seed*"))
    assert len(folders) == 2
    return [[float(r[key]) for r in read_metrics(f / "metrics.csv")] for f in folders]


def _fig3_word(out: Path) -> tuple[str, ...]:
    mi, dpi = _cond(out, "ce", "mi_y_yhat"), _cond(out, "ce", "dpi_margin")
    rise = sum(s[-1] - s[0] for s in mi) / len(mi)
    ok = rise > 0 and all(m >= 0 for s in dpi for m in s)
    return ("Supported" if ok else "Partly supported" if rise > 0 else "Not supported",)


def _fig4_word(out: Path) -> tuple[str, ...]:
    mi, ce = _cond(out, "reg", "mi_y_yhat"), _cond(out, "reg", "train_ce")
    ok = sum(s[-1] - s[0] for s in mi) > 0 and sum(s[-1] - s[0] for s in ce) < 0
    return ("Supported" if ok else "Not supported",)


def _fig5_word(out: Path) -> tuple[str, ...]:
    def gap(cond: str) -> float:  # mean over seeds of test_ce − train_ce over the last k epochs
        tr, te = _cond(out, cond, "train_ce"), _cond(out, cond, "test_ce")
        k = min(DEFAULT_LAST_K, len(tr[0]))
        return sum(sum(b[-k:]) / k - sum(a[-k:]) / k for a, b in zip(tr, te)) / len(tr)

    # Narrower with the regularizer: supported (separated intervals) or weakly (overlapping).
    return ("Supported", "Weakly supported") if gap("reg") < gap("ce") else ("Not supported",)


EXPECTED_WORD = {3: _fig3_word, 4: _fig4_word, 5: _fig5_word}


def test_reproduce_command_line(out: Path) -> None:
    res = mistudy("reproduce", "--figure", "5", "--dataset", "fashion_mnist", "--seeds", "2",
                  "--epochs", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "fig5-fashion_mnist-shallow.png" in res.stdout and "gap" in res.stdout
    bad = mistudy("reproduce", "--figure", "5", "--seeds", "0", "--out", str(out))
    assert bad.returncode == 2 and "--seeds=0" in bad.stderr


def _plan(out: Path, seeds: int = 2) -> list:
    plan = plan_runs("fashion_mnist", "shallow", seeds, 3, out, 28, ("ce", "reg"), threads=1)
    return [r for rs in plan.values() for r in rs]


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted CE and regularized run (3 epochs), read by the tests below."""
    out = tmp_path_factory.mktemp("whole")
    train_runs(_plan(out, seeds=1), log=lambda *_: None)
    return out


def test_runs_killed_mid_way_resume_to_the_same_numbers(tmp_path: Path, whole: Path) -> None:
    """Round-robin runs stopped after 3 of 6 epoch-steps continue from their checkpoints and end
    with the records of an uninterrupted run (the second computation), epoch for epoch."""
    calls = []

    def stop_after_three(msg: str) -> None:
        calls.append(msg)
        if len(calls) == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train_runs(_plan(tmp_path / "cut", seeds=1), log=stop_after_three)
    partial = sorted((tmp_path / "cut" / "runs").glob("*/state.pt"))
    assert len(partial) == 2  # both runs hold a checkpoint, neither is finished
    train_runs(_plan(tmp_path / "cut", seeds=1), log=lambda *_: None)
    for run in sorted((whole / "runs").iterdir()):
        a = read_metrics(run / "metrics.csv")
        b = read_metrics(tmp_path / "cut" / "runs" / run.name / "metrics.csv")
        assert len(a) == len(b) == 3
        for ra, rb in zip(a, b):
            assert {k: v for k, v in ra.items() if k != "epoch_seconds"} == \
                {k: v for k, v in rb.items() if k != "epoch_seconds"}
        assert not (tmp_path / "cut" / "runs" / run.name / "state.pt").exists()


def test_a_run_held_by_another_process_is_refused(tmp_path: Path) -> None:
    runs = _plan(tmp_path, seeds=1)
    with folder_lock(runs[0].folder):
        with pytest.raises(FolderLocked, match=r"PID \d+"):
            train_runs(runs, log=lambda *_: None)


def test_fig6_starts_at_initialization_and_weighted_norm_starts_at_zero(whole: Path) -> None:
    reg = read_metrics(next((whole / "runs").glob("*-reg-*")) / "metrics.csv")
    # the probe before epoch e+1 is the probe after epoch e (same network, same width)
    for prev, nxt in zip(reg, reg[1:]):
        assert nxt["mi_grad_norm_start"] == prev["mi_grad_norm"]
    assert reg[0]["mi_grad_norm_start"] > 0  # the untrained network's gradient is not zero
    assert reg[0]["transition"] == 1.0 and reg[0]["mi_grad_norm_weighted"] == 0.0
    for r in reg:
        assert r["mi_grad_norm_weighted"] == pytest.approx(
            (1 - (1 + r["epoch"]) ** -0.5) * r["mi_grad_norm_start"], rel=1e-12)


def test_a_diverging_reproduction_run_raises_one_line_and_writes_no_nan(tmp_path: Path) -> None:
    from trainables import TrialDiverged

    run = _plan(tmp_path, seeds=1)[1]  # the regularized one
    run.cfg = run.cfg.with_updates(lr=1e6)
    with pytest.raises(TrialDiverged, match="diverged at epoch") as info:
        train_runs([run], log=lambda *_: None)
    assert "\n" not in str(info.value)
    from trainables.checkpoint import read_history

    for r in read_history(run.folder) or []:  # the checkpoint's records: every one finite
        assert all(v == v and abs(v) != float("inf") for v in r.values()
                   if isinstance(v, float))
    assert not (run.folder / "metrics.csv").exists()  # never a finished result
