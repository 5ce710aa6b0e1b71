"""The tracker completes runs a killed driver left half-made: created (with their tags) but
without their params, because the kill fell between the two calls. The logging thread fails
fast on a server that is down and keeps its records."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from study._callbacks import MlflowCallback
from study._tracking import Tracker
from trainables.records import RECORD_KEYS, TAG

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


def test_the_logging_thread_retries_on_its_own_clock_and_keeps_the_records() -> None:
    """A server that is down: the logging thread's requests fail at once and are retried every
    ``retry_seconds`` (under MLflow's own backoff a first failure takes ~4 minutes, and a
    record waits that long for a restarted server); the records stay queued; other threads
    keep MLflow's retry policy."""
    if "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in os.environ:
        pytest.skip("MLFLOW_HTTP_REQUEST_MAX_RETRIES is set: the user's policy holds everywhere")
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cb = MlflowCallback(Tracker(f"http://127.0.0.1:{port}", "exp", "sid"),
                        retry_seconds=0.2, drain_timeout=1.0)
    record = {**{k: 0.5 for k in RECORD_KEYS}, "epoch": 0}
    cb._put(("result", "t1", CONFIG, record, {}))
    t0 = time.monotonic()
    while cb.failures < 6 and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    assert cb.failures >= 6, f"{cb.failures} failed tries in 60 s"  # three flushes, 2 calls each
    assert cb.pending == {"t1": {0: record}}  # nothing dropped
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == MLFLOW_HTTP_REQUEST_MAX_RETRIES.default
    assert cb._queue is not None and cb._thread is not None
    cb._queue.put(("stop",))
    cb._thread.join(30)
    assert not cb._thread.is_alive()
