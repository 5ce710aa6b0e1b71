"""The tracker completes runs a killed driver left half-made: created (with their tags) but
without their params, because the kill fell between the two calls."""

from __future__ import annotations

from pathlib import Path

from study._tracking import Tracker
from trainables.records import TAG

CONFIG = {"dataset": "fashion_mnist", "epochs": 2, "seed": 0, "batch_size": 50,
          "transition": {"family": "power", "exponent": 0.5}, "alpha": 1.01}


def study_tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "sid")


def test_parent_created_without_params_gets_them_on_the_next_call(tmp_path: Path) -> None:
    t = study_tracker(tmp_path)
    half = t.client.create_run(t.experiment_id(), tags={f"{TAG}.study_id": "sid",
                                                        f"{TAG}.role": "parent"})
    assert t.parent_run({"name": "s", "trials": 3}) == half.info.run_id
    assert t.client.get_run(half.info.run_id).data.params == {"name": "s", "trials": "3"}
    arts = {a.path for a in t.client.list_artifacts(half.info.run_id)}
    assert "spec.yaml" in arts
    assert len(t._search(f"tags.`{TAG}.role` = 'parent'")) == 1


def test_trial_run_created_without_params_gets_them_once(tmp_path: Path) -> None:
    t = study_tracker(tmp_path)
    half = t.client.create_run(t.experiment_id(), tags={
        f"{TAG}.study_id": "sid", f"{TAG}.role": "trial", f"{TAG}.trial_id": "abc"})
    assert t.ensure_trial_run("abc", CONFIG) == half.info.run_id
    params = t.client.get_run(half.info.run_id).data.params
    assert params["transition.family"] == "power" and params["seed"] == "0"
    whole = t.ensure_trial_run("def", CONFIG)  # made in one go: the same params
    assert t.client.get_run(whole).data.params == params
    fresh = study_tracker(tmp_path)  # a resumed driver: same run, params untouched
    assert fresh.ensure_trial_run("abc", CONFIG) == half.info.run_id
    assert t.client.get_run(half.info.run_id).data.params == params
