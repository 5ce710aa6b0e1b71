from __future__ import annotations

import optuna
import pytest

from study._searcher import StudySearcher, baseline_configs, sample_config
from study.spec import parse_spec
from trainables import TrainConfig
from trainables.records import train_config_of
from trainables.schedules import FAMILIES

RAW = {"name": "s", "fixed": {"epochs": 2},
       "search": {"families": {"power": {}, "cosine": {"floor": 0.1}, "step": {}},
                  "alpha": [1.0, 2.0], "batch_size": [64, 128]},
       "trials": 3, "seeds": [0, 1], "objective": {"last_k": 2}}
# These tests ask configurations before any is told, which the ordered search (sampler_lag)
# would rightly hold back: they are about what both searches share, run on the asynchronous one.
SPEC = parse_spec({**RAW, "sampler_lag": "async"})


def test_define_by_run_space_carries_only_the_trials_family() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        cfg = sample_config(trial, SPEC)
        fam = cfg["transition"]["family"]
        seen.add(fam)
        assert set(cfg["transition"]) == {"family"} | {p.name for p in FAMILIES[fam].params}
        assert all(k in ("family", "alpha", "batch_size") or k.startswith(f"{fam}.")
                   for k in trial.params)
        if fam == "cosine":
            assert cfg["transition"]["floor"] == 0.1 and "cosine.floor" not in trial.params
        TrainConfig.from_dict(cfg)  # every sample is a valid training config
        study.tell(trial, 0.0)
    assert seen == {"power", "cosine", "step"}


def test_baselines_cover_every_batch_size_and_seed() -> None:
    pairs = {(b["batch_size"], b["seed"]) for b in baseline_configs(SPEC)}
    assert pairs == {(64, 0), (64, 1), (128, 0), (128, 1)}
    assert all(b["transition"] == {"family": "constant", "c": 1.0} for b in baseline_configs(SPEC))


def test_objective_is_the_mean_of_the_last_k_epochs() -> None:
    from trainables.closure import last_k_mean

    hist = [{"epoch": e, "val_ce": v} for e, v in ((1, 3.0), (2, 2.0), (3, 1.0))]
    assert last_k_mean(hist, "val_ce", 2) == pytest.approx(1.5)
    # Records arrive out of order after a restore: the window is by epoch, not by position.
    assert last_k_mean(hist[::-1], "val_ce", 2) == pytest.approx(1.5)


def test_searcher_emits_baselines_then_each_config_per_seed_and_tells_the_mean(tmp_path) -> None:
    s = StudySearcher(SPEC, f"sqlite:///{tmp_path / 'o.db'}", "sid")
    out = [s.suggest(f"t{i}") for i in range(SPEC.num_trials + 1)]
    assert out[-1] == "FINISHED"
    base, searched = out[:4], out[4:-1]
    assert all(c["mistudy_baseline"] for c in base)
    assert all(c["epochs"] == 2 for c in base + searched)  # fixed settings merged in
    assert [c["seed"] for c in searched] == [0, 1, 0, 1, 0, 1]
    assert searched[0]["transition"] == searched[1]["transition"]
    TrainConfig.from_dict(train_config_of(searched[0]))
    # Seeds 0 and 1 of the first config report; Optuna hears the mean once both are done.
    for tid, vals in (("t4", (4.0, 3.0)), ("t5", (2.0, 1.0))):
        for epoch, v in enumerate(vals, start=1):
            s.on_trial_result(tid, {"epoch": epoch, "val_ce": v})
        s.on_trial_complete(tid, {})
        if tid == "t4":
            assert s.study.trials[0].state == optuna.trial.TrialState.RUNNING
    assert s.study.trials[0].value == pytest.approx((3.5 + 1.5) / 2)


def test_tpe_with_the_guard_samples_fewer_infeasible_configurations() -> None:
    """The guards reach TPE through Trial.set_constraint (what the searcher stores): on a
    synthetic objective that rewards x but is infeasible above x = 0.3, the constrained sampler
    spends fewer of its post-startup trials in the infeasible region."""
    from study._searcher import make_sampler
    from study.spec import load_spec

    spec = load_spec(preset="quick")

    def infeasible_after_startup(constrained: bool) -> int:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, seed=3))
        bad = 0
        for i in range(40):
            t = study.ask()
            x = t.suggest_float("x", 0.0, 1.0)
            if constrained:
                t.set_constraint("max_acc_drop", x - 0.3)
            study.tell(t, x)
            bad += int(i >= 10 and x > 0.3)
        return bad

    with_guard, without = infeasible_after_startup(True), infeasible_after_startup(False)
    assert with_guard < without, (with_guard, without)
    assert without - with_guard >= 10  # here 16 of 30 against all 30 without the guard


def test_a_restored_state_is_brought_up_to_the_records_and_tells_what_finished(tmp_path) -> None:
    # The driver saved the searcher while seed 1 had reported one epoch; then seed 1 trained its
    # second epoch and finished, and the driver died before either reached the searcher (Tune's
    # copy of its state trails the trials' checkpoints). study._resume hands it the records.
    s = StudySearcher(SPEC, f"sqlite:///{tmp_path / 'o.db'}", "sid")
    for i in range(6):  # four baselines, then configuration 0 on seeds 0 and 1
        s.suggest(f"t{i}")
    for epoch, v in ((1, 4.0), (2, 3.0)):
        s.on_trial_result("t4", {"epoch": epoch, "val_ce": v})
    s.on_trial_complete("t4", {})
    s.on_trial_result("t5", {"epoch": 1, "val_ce": 2.0})
    state = tmp_path / "searcher-state-x.pkl"
    s.save(str(state))
    restored = StudySearcher.from_state_file(state)
    assert restored is not None
    records = {"t5": [{"epoch": 1, "val_ce": 2.0}, {"epoch": 2, "val_ce": 1.0}]}
    assert restored.recover(records, finished={"t5"}) == (1, ["t5"])
    trial = restored.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == pytest.approx(((4.0 + 3.0) / 2 + (2.0 + 1.0) / 2) / 2)
    assert restored.recover(records, finished={"t5"}) == (0, [])  # once only
    (tmp_path / "list.pkl").write_text('{"pending": []}')  # a confirmation's searcher
    assert StudySearcher.from_state_file(tmp_path / "list.pkl") is None


def test_a_configuration_asked_after_the_last_save_is_taken_again_not_asked_anew(
        tmp_path) -> None:
    # The driver asked Optuna for configuration 1 and was killed before Tune saved the
    # searcher: the stored study holds a RUNNING trial the restored state never heard of.
    # The restored searcher must take that trial (its stored values), not ask a new one: a
    # resume samples nothing twice and leaves nothing RUNNING (round 4's torn-session orphan).
    s = StudySearcher(SPEC, f"sqlite:///{tmp_path / 'o.db'}", "sid")
    for i in range(6):  # four baselines, then configuration 0 on seeds 0 and 1
        s.suggest(f"t{i}")
    state = tmp_path / "searcher-state-x.json"
    s.save(str(state))
    lost = s.suggest("t6")  # configuration 1, seed 0: asked, then the kill
    assert len(s.study.trials) == 2
    restored = StudySearcher.from_state_file(state)
    assert restored is not None
    again = restored.suggest("t6b")
    assert again["optuna_trial"] == lost["optuna_trial"] == 1
    assert again["transition"] == lost["transition"] and again["alpha"] == lost["alpha"]
    assert restored.suggest("t7b")["optuna_trial"] == 1  # its second seed
    nxt = restored.suggest("t8b")  # configuration 2: asked anew
    assert nxt["optuna_trial"] == 2
    assert len(restored.study.trials) == 3 == SPEC.trials
    assert restored.suggest("t9b")["optuna_trial"] == 2
    assert restored.suggest("t10b") == "FINISHED"
