"""The ordered search (``sampler_lag``): configuration k is sampled from configurations
0..k-lag only, so the same spec and sampler seed ask the same configurations whatever order
the trials finish in, however many run at once, and across a save and restore of the searcher.
Driven here by a simulated cluster (the searcher's Tune API, no Ray): the truth is a second run
with another finishing order and another number of slots, and the asynchronous search as the
control that does diverge (so the comparison can fail)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import optuna

from study._searcher import StudySearcher, configuration_seed, ordered_params
from study.spec import parse_spec

RAW: dict[str, Any] = {
    "name": "s", "fixed": {"epochs": 2},
    "search": {"families": {"power": {}, "cosine": {}, "step": {}}, "alpha": [1.0, 2.0],
               "batch_size": [64, 128]},
    "trials": 16, "seeds": [0, 1], "objective": {"metric": "val_ce", "mode": "min",
                                                 "last_k": 1}}


def _loss(config: dict[str, Any]) -> float:
    """A smooth synthetic val_ce of a configuration and seed (deterministic)."""
    t = config["transition"]
    x = sum(float(v) for k, v in sorted(t.items()) if k != "family")
    family = {"power": 0, "cosine": 0.1, "step": 0.2, "constant": 0.3}[t["family"]]
    return (config["alpha"] - 1.3) ** 2 + 0.1 * math.sin(x) + 0.01 * config["seed"] \
        + 0.05 * (config["batch_size"] == 128) + family


def _simulate(tmp: Path, raw: dict[str, Any], slots: int, order_seed: int,
              restore_after: int | None = None) -> dict[int, tuple]:
    """Run the searcher to the end: up to ``slots`` trials at once, a random one of the running
    ones finishing at each step (``order_seed``); optionally the searcher saved and restored
    from its state file after ``restore_after`` completions (a driver kill and ``--resume``,
    Tune restoring the trials in flight). Returns Optuna number -> configuration asked."""
    spec = parse_spec(raw)
    s = StudySearcher(spec, f"sqlite:///{tmp / 'o.db'}", "sid")
    rng = random.Random(order_seed)
    running: dict[str, dict[str, Any]] = {}
    asked: dict[int, tuple] = {}
    n, done, finished = 0, 0, False
    while True:
        while not finished and len(running) < slots:
            cfg = s.suggest(f"t{n}")
            if cfg is None:
                break  # waits: Tune asks again after the next result
            if cfg == "FINISHED":
                finished = True
                break
            running[f"t{n}"] = cfg
            if "optuna_trial" in cfg:
                asked[cfg["optuna_trial"]] = (str(cfg["transition"]), cfg["alpha"],
                                              cfg["batch_size"])
            n += 1
        if not running:
            break
        tid = rng.choice(sorted(running))
        cfg = running.pop(tid)
        s.on_trial_result(tid, {"epoch": 1, "val_ce": _loss(cfg)})
        s.on_trial_complete(tid, {})
        done += 1
        if restore_after is not None and done == restore_after:
            state = tmp / "searcher-state.json"
            s.save(str(state))
            restored = StudySearcher.from_state_file(state)
            assert restored is not None
            s = restored
    assert len(asked) == spec.trials
    states = {t.state for t in s.study.trials}
    assert states == {optuna.trial.TrialState.COMPLETE}
    return asked


def test_the_same_configurations_whatever_the_finishing_order_slots_or_restores(
        tmp_path: Path) -> None:
    runs = []
    for i, (slots, order, restore) in enumerate([(2, 0, None), (1, 0, None), (5, 7, None),
                                                 (3, 3, 9)]):
        (tmp_path / str(i)).mkdir()
        runs.append(_simulate(tmp_path / str(i), RAW, slots, order, restore))
    assert all(r == runs[0] for r in runs[1:])
    # past TPE's 10 random startup trials, and not all alike (the sampler did work)
    assert len(set(runs[0].values())) == RAW["trials"]


def test_the_asynchronous_search_depends_on_the_order(tmp_path: Path) -> None:
    """The control: the same spec with sampler_lag: async asks other configurations when the
    trials finish in another order (what the ordered search fixes)."""
    raw = {**RAW, "sampler_lag": "async"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _simulate(tmp_path / "a", raw, 2, 0)
    b = _simulate(tmp_path / "b", raw, 5, 7)
    assert a != b


def test_a_configuration_sees_exactly_the_configurations_lag_before_it() -> None:
    """ordered_params is a function of (spec, number, trials 0..number-lag): trials numbered
    later, running or finished, change nothing; two sampler seeds draw differently."""
    spec = parse_spec({**RAW, "sampler_lag": 3})
    study = optuna.create_study()
    for i in range(12):
        t = study.ask()
        t.suggest_float("alpha", 1.0, 2.0)
        study.tell(t, float(i % 5))
    frozen = study.get_trials()
    a = ordered_params(spec, 12, frozen)
    b = ordered_params(spec, 12, frozen[:10])  # only 0..9 = 0..12-3 are seen anyway
    assert a == b
    c = ordered_params(spec, 12, frozen[:9])  # one fewer seen: another draw
    assert a != c
    assert configuration_seed(0, 5) != configuration_seed(1, 4)


def test_a_lag_that_leaves_slots_idle_is_said_with_the_lag_that_fills_them() -> None:
    from study.runner import lag_note

    spec = parse_spec(RAW)  # lag 2, 2 seeds: 4 trials at once
    assert lag_note(spec, 2) is None and lag_note(spec, 4) is None
    note = lag_note(spec, 16)
    assert note is not None and "sampler_lag: 9" in note and "16 slots" in note
    assert lag_note(parse_spec({**RAW, "sampler_lag": "async"}), 16) is None
