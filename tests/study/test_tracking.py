"""The tracker completes runs a killed driver left half-made: created (with their tags) but
without their params, because the kill fell between the two calls. The logging thread fails
fast on a server that is down and keeps its records."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from study._callbacks import MlflowCallback
from study._tracking import Tracker
from tests.study.conftest import MlflowServer
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


def test_the_logging_thread_retries_on_its_own_clock_and_keeps_the_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that is down: the logging thread's requests fail at once and are retried every
    ``retry_seconds`` (under MLflow's own backoff a first failure takes ~4 minutes, and a
    record waits that long for a restarted server); the records stay queued; other threads
    keep MLflow's retry policy."""
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # MLflow's default
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


class _AnswerLosingProxy:
    """A loopback HTTP proxy in front of a real MLflow server that, for the paths in
    ``lose``, forwards the call and then drops the connection instead of the answer: a server
    killed after committing a call but before answering it."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading
        import urllib.error
        import urllib.request

        self.lose: dict[str, int] = {}  # path suffix -> answers still to drop
        self.lost: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = urllib.request.Request(
                    upstream + self.path, data=body or None, method=self.command,
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() in ("content-type", "authorization")})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, ctype, answer = r.status, r.headers.get("Content-Type"), r.read()
                except urllib.error.HTTPError as e:
                    status, ctype, answer = e.code, e.headers.get("Content-Type"), e.read()
                path = self.path.split("?")[0]
                for suffix, n in proxy.lose.items():
                    if n > 0 and path.endswith(suffix):
                        proxy.lose[suffix] = n - 1
                        proxy.lost.append(path)
                        self.close_connection = True  # the call happened; its answer is lost
                        return
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_call_the_server_made_but_never_answered_is_not_made_twice(
        mlflow_server: MlflowServer) -> None:
    """The logging thread retries on its own (no MLflow backoff): a run created, a params or a
    metrics batch logged, whose answer was lost, must not be created or logged again on the
    retry -- the tracker reads the store again after a failed call."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from study._tracking import no_backoff_in_this_thread

    proxy = _AnswerLosingProxy(mlflow_server.uri)
    exp = f"lost-{uuid.uuid4().hex[:8]}"
    t = Tracker(proxy.uri, exp, "sid")
    records = [{**{k: 0.25 for k in RECORD_KEYS}, "epoch": e} for e in range(3)]

    def failing_then_done(call: Any) -> Any:
        with pytest.raises(MlflowException, match="Connection aborted|RemoteDisconnected"):
            call()
        return call()

    def scenario() -> tuple[str, str]:
        t.parent_run({"name": "s"})  # the experiment and the parent: nothing lost
        proxy.lose = {"/runs/create": 1}
        a = failing_then_done(lambda: t.ensure_trial_run("a", CONFIG))
        proxy.lose = {"/runs/log-batch": 1}  # the new run's params
        b = failing_then_done(lambda: t.ensure_trial_run("b", CONFIG))
        proxy.lose = {"/runs/log-batch": 1}  # a metrics batch
        failing_then_done(lambda: t.log_records(a, records))
        return a, b

    try:
        with ThreadPoolExecutor(1, initializer=no_backoff_in_this_thread) as pool:
            a, b = pool.submit(scenario).result(timeout=120)
    finally:
        proxy.close()
    assert proxy.lost == ["/api/2.0/mlflow/runs/create", "/api/2.0/mlflow/runs/log-batch",
                          "/api/2.0/mlflow/runs/log-batch"]
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(exp)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG}.role` = 'trial'")
    assert sorted(r.data.tags[f"{TAG}.trial_id"] for r in runs) == ["a", "b"]
    for run_id in (a, b):
        assert client.get_run(run_id).data.params["seed"] == "0"
    # (MLflow's SQL store also keeps an identical metric row once, so this part holds on it
    # even for a tracker that re-sends the batch; the tracker re-reads the run's epochs)
    steps = [m.step for m in client.get_metric_history(a, "epoch")]
    assert sorted(steps) == [0, 1, 2]


def test_a_retry_count_the_user_set_holds_in_the_logging_thread_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    from study._tracking import no_backoff_in_this_thread

    def in_thread(env: str | None) -> int:
        if env is None:
            monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", env)
        with ThreadPoolExecutor(1, initializer=no_backoff_in_this_thread) as pool:
            return int(pool.submit(MLFLOW_HTTP_REQUEST_MAX_RETRIES.get).result())

    assert in_thread(None) == 0  # the logging thread's own retries replace MLflow's
    assert in_thread("3") == 3  # the user's choice
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 3  # and every other thread keeps it
