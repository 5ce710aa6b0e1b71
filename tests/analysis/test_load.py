"""Loading a study through MLflow's public client, against a real ``mlflow server``: a finished
run's records come from its ``metrics.csv`` (one GET of the server's artifact proxy), and they
are the same numbers as its metric histories, read independently, point by point."""

from __future__ import annotations

import base64
import http.server
import math
import threading
import time
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from analysis import load_study
from analysis._load import _proxied_csv, _proxy_getter, _records_of
from study._tracking import Tracker
from trainables.records import RECORD_KEYS, tag
from trainables.runsearch import search_all_runs, search_slices

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


def _sliced(client: MlflowClient, eid: str, flt: str, slices: int) -> list[Any]:
    found = dict(search_slices(client, eid, flt, slices))
    return [run for i in sorted(found) for run in found[i]]


def test_sliced_search_finds_every_run_once_in_start_order(mlflow_server) -> None:
    """The parallel start-time slices (search_slices) against one plain search: the same
    runs, none twice, in the same order, for more slices than runs and for an empty filter."""
    tracker = Tracker(mlflow_server.uri, "load-sliced", "ls1")
    tracker.parent_run({"name": "load-sliced"})
    for seed in range(7):
        tracker.ensure_trial_run(f"t{seed}", _config(seed))
        time.sleep(0.003)  # distinct start times (ms), and two runs may share one: both kinds
    client = MlflowClient(mlflow_server.uri)
    eid = client.get_experiment_by_name("load-sliced").experiment_id
    flt = f"tags.`{tag('role')}` = 'trial'"
    plain = [r.info.run_id for r in search_all_runs(client, eid, flt)]
    assert len(plain) == 7
    for slices in (2, 3, 16):
        assert [r.info.run_id for r in _sliced(client, eid, flt, slices)] == plain
    assert _sliced(client, eid, flt + " and tags.`nothing` = 'x'", 4) == []


_ROW = {k: (0 if k == "epoch" else 0.5 + j) for j, k in enumerate(RECORD_KEYS)}
_ROW_CSV = ",".join(_ROW) + "\n" + ",".join(str(v) for v in _ROW.values()) + "\n"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a one-row metrics.csv and keeps the request's headers."""
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append(dict(self.headers))
        body = _ROW_CSV.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("env", [{}, {"MLFLOW_TRACKING_USERNAME": "ann",
                                      "MLFLOW_TRACKING_PASSWORD": "s3cret"},
                                 {"MLFLOW_TRACKING_TOKEN": "tok"}])
def test_proxy_get_sends_the_credentials_mlflow_would(monkeypatch, env: dict[str, str]) -> None:
    """The artifact GET resolves MLflow's headers once when there are no credentials, and
    sends the credentials of MLflow's environment when there are (a server that records what
    it receives; the expected Authorization value computed here from the standard)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        get = _proxy_getter(uri)
        recs = [_proxied_csv(get, "mlflow-artifacts:/1/abc/artifacts") for _ in range(2)]
    finally:
        server.shutdown()
    assert recs[0] == recs[1] == [_ROW]
    assert len(_Recorder.seen) == 2 and all("mlflow" in h["User-Agent"] for h in _Recorder.seen)
    auth = {h.get("Authorization") for h in _Recorder.seen}
    if "MLFLOW_TRACKING_TOKEN" in env:
        assert auth == {"Bearer tok"}
    elif env:
        assert auth == {"Basic " + base64.b64encode(b"ann:s3cret").decode()}
    else:
        assert auth == {None}
