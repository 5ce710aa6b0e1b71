"""Loading a study through MLflow's public client, against a real ``mlflow server``: a finished
run's records come from its ``metrics.csv`` (one GET of the server's artifact proxy), and they
are the same numbers as its metric histories, read independently, point by point."""

from __future__ import annotations

import math
from typing import Any

from mlflow.tracking import MlflowClient

from analysis import load_study
from analysis._load import _records_of
from study._tracking import Tracker
from trainables.records import RECORD_KEYS

EPOCHS = 3


def _config(seed: int) -> dict[str, Any]:
    return {"dataset": "fashion_mnist", "model": "shallow", "epochs": EPOCHS, "batch_size": 64,
            "seed": seed, "alpha": 1.01, "transition": {"family": "power", "exponent": 0.5}}


def _records(seed: int) -> list[dict[str, float]]:
    out = []
    for e in range(EPOCHS):
        r = {k: 0.25 + 0.01 * j + 0.1 * e + 0.001 * seed for j, k in enumerate(RECORD_KEYS)}
        r["epoch"] = e
        out.append(r)
    return out


def _by_history(client: MlflowClient, run_id: str) -> dict[int, dict[str, float]]:
    """A run's points from its metric histories (one call per key): the independent reading."""
    out: dict[int, dict[str, float]] = {}
    for key in RECORD_KEYS:
        for m in client.get_metric_history(run_id, key):
            out.setdefault(int(m.step), {})[key] = float(m.value)
    return out


def test_server_study_loads_the_records_its_histories_hold(mlflow_server) -> None:
    tracker = Tracker(mlflow_server.uri, "load-proxied", "lp1")
    tracker.parent_run({"name": "load-proxied"})
    finished = tracker.ensure_trial_run("t0", _config(0))
    tracker.finish_trial(finished, _records(0), _config(0), "FINISHED")
    killed = tracker.ensure_trial_run("t1", _config(1))  # killed before its finish: no file
    tracker.log_records(killed, _records(1))
    tracker.client.set_terminated(killed, status="KILLED")

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(finished)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server proxies them
    from_file = _records_of(client, run, None)
    assert from_file is not None and [r["epoch"] for r in from_file] == list(range(EPOCHS))
    assert _records_of(client, client.get_run(killed), None) is None  # a 404, not an error

    data = load_study("load-proxied", mlflow_server.uri)
    assert sorted(data.history.run_id.unique()) == sorted([finished, killed])
    for run_id in (finished, killed):
        truth = _by_history(client, run_id)
        rows = data.history[data.history.run_id == run_id].to_dict("records")
        assert [int(r["epoch"]) for r in rows] == sorted(truth)
        for r in rows:
            for key, value in truth[int(r["epoch"])].items():
                assert math.isclose(float(r[key]), value, rel_tol=1e-12), (run_id, key)
