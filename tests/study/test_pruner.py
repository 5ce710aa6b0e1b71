"""``scheduler: closure`` live (issue 29): a tiny real study whose rule must fire prunes every
sampled configuration at the expected epoch, tells Optuna PRUNED, tags MLflow, never stops a
baseline or the enqueued configuration, and ranks pruned schedules last."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.study.conftest import (
    firing_closure_spec,
    mistudy,
    require_loopback,
    store_uri,
    study_runs,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_a_rule_that_must_fire_prunes_each_sampled_configuration(tmp_path: Path) -> None:
    require_loopback()
    # Δ val CE > -100 holds for every configuration: the CE guard fires at the grace epoch
    spec = firing_closure_spec(tmp_path / "spec.yaml", trials=3, seeds=[0, 1],
                               fixed={"epochs": 4},
                               enqueue=[{"transition": {"family": "power", "exponent": 0.5},
                                         "alpha": 1.01}])
    out = tmp_path / "s"
    res = mistudy("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    decisions = json.loads((out / "pruning.json").read_text())["pruned"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.number: t.state for t in study.trials}
    assert states[0] == optuna.trial.TrialState.COMPLETE  # enqueued: never pruned
    assert {states[1], states[2]} == {optuna.trial.TrialState.PRUNED}
    assert sorted(decisions) == ["1", "2"]
    assert all(d[0] == 2 and d[1] == "CE guard" for d in decisions.values())
    assert all(study.trials[n].intermediate_values for n in (1, 2))  # TPE learns from them
    # Tune's own records: baselines and the enqueued configuration trained every epoch; the
    # seed that reached the judged epoch last stopped there (a seed that ran ahead stops at its
    # next result, unless it had already finished: seeds start together, the lead is small)
    epochs: dict[str, list[int]] = {}
    for trial in (out / "ray" / "tiny").iterdir():
        if (trial / "result.json").is_file():
            rows = [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines()]
            c = rows[0]["config"]
            kind = "base" if c.get("mistudy_baseline") else str(c["optuna_trial"])
            epochs.setdefault(kind, []).append(len(rows))
    assert epochs["base"] == [4, 4] and epochs["0"] == [4, 4]
    assert all(min(epochs[n]) == 2 for n in ("1", "2")), epochs
    _, children = study_runs(store_uri(out), "tiny", out)
    told = {c.data.tags.get("mistudy.told") for c in children
            if c.data.tags.get("mistudy.optuna_trial") in ("1", "2")}
    assert told == {"PRUNED"}
    assert all(c.data.tags["mistudy.told_reason"] == "pruned at epoch 2: CE guard"
               for c in children if c.data.tags.get("mistudy.optuna_trial") in ("1", "2"))
    rank = mistudy("rank", str(out), "--format", "json")
    rows = json.loads(rank.stdout)
    assert [r["pruned"] for r in rows] == [False, True, True]  # never above a finished one


def test_a_killed_study_resumes_with_the_decisions_it_made(tmp_path: Path) -> None:
    """Tune saves no scheduler state: the decisions live in pruning.json, written before a
    trial is stopped, and a resumed study keeps them (a pruned configuration is not judged,
    nor trained, again)."""
    import os
    import signal
    import subprocess
    import time

    from tests.study.conftest import BIN

    require_loopback()
    spec = firing_closure_spec(tmp_path / "spec.yaml", trials=4, seeds=[0, 1],
                               fixed={"epochs": 4})
    out = tmp_path / "s"
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out", str(out),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "pruning.json").is_file():
        assert proc.poll() is None, "the study ended before its first decision"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    before = json.loads((out / "pruning.json").read_text())["pruned"]
    assert before
    trained_before = _epochs_by_trial(out)
    res = mistudy("run", "--resume", "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    after = json.loads((out / "pruning.json").read_text())["pruned"]
    assert {k: after[k] for k in before} == before  # every decision kept as it was
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert all(study.trials[int(n)].state == optuna.trial.TrialState.PRUNED for n in after)
    trained_after = _epochs_by_trial(out)
    # decided before the kill: not one epoch trained after the resume (a seed the kill caught
    # right after the decision is stopped unstarted, not rerun)
    for tid, (n, epochs) in trained_after.items():
        if n in before:
            assert trained_before.get(tid, (n, 0))[1] == epochs, (tid, n, epochs)
    # decided after the resume: the seed that reached the epoch last stopped there
    shortest: dict[str, int] = {}
    for n, epochs in trained_after.values():
        if n in after and n not in before:
            shortest[n] = min(shortest.get(n, epochs), epochs)
    assert shortest and all(e == after[n][0] for n, e in shortest.items())  # stopped there


def _epochs_by_trial(out: Path) -> dict[str, tuple[str, int]]:
    """Tune trial id -> (its Optuna configuration number, epochs in its result.json)."""
    found = {}
    for trial in (out / "ray" / "tiny").iterdir():
        if (trial / "result.json").is_file():
            rows = [json.loads(ln) for ln in (trial / "result.json").read_text().splitlines()]
            if rows:
                found[trial.name] = (str(rows[0]["config"].get("optuna_trial")),
                                     len({r["epoch"] for r in rows}))
    return found


def test_a_grown_study_judges_its_new_configurations(tmp_path: Path) -> None:
    """Issue 35 item 5: ``--resume --trials N`` runs the new configurations in an extension
    experiment whose baselines ran in the first one; the pruner reads the study's earlier
    experiments, so the new configurations are judged too (they trained on before)."""
    require_loopback()
    spec = firing_closure_spec(tmp_path / "spec.yaml", trials=1, seeds=[0],
                               fixed={"epochs": 3})
    out = tmp_path / "s"
    res = mistudy("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    res = mistudy("run", "--resume", "--out", str(out), "--trials", "3", "--quiet",
                  timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    decisions = json.loads((out / "pruning.json").read_text())["pruned"]
    assert sorted(decisions) == ["0", "1", "2"]  # the extension's two as well
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    more = out / "ray" / "tiny-more1"
    epochs = [len((t / "result.json").read_text().splitlines()) for t in more.iterdir()
              if (t / "result.json").is_file()]
    assert epochs == [2, 2]  # stopped at the decision, not trained to the end
