"""The driver's MLflow side at cluster scale, with synthetic records through the real writer.

``trials`` synthetic trials × ``epochs`` epochs go through :class:`study._callbacks.MlflowCallback`
(the object Tune calls on the driver) into a real store -- an SQLite file, or a local
``mlflow server`` on 127.0.0.1 -- exactly as a study's results would: run creation on a trial's
first epoch, per-epoch records, then each trial's finish (config, metrics CSV, the plot the trial
drew in its last checkpoint, summary metrics, status). Measured:

- ``create_ms``: per trial, its run, params and tags (the first epoch of every trial);
- ``epochs_per_s``: trial-epochs logged per second once the runs exist, with epochs 1.. of
  every trial pending at once (a driver that fell behind: the writer coalesces the backlog);
- ``driver_epochs_per_cpu_s``: the same, per second of the driver process's own CPU (all its
  threads): what the writer itself costs. Into SQLite the store works inside the driver; into
  a server, the server's work is not in it (the ceiling of a driver whose server has its own
  cores);
- ``uncoalesced_per_s``: the same writer fed one epoch per call (no backlog), side by side;
- ``finish_ms``: per trial, on the driver's logging thread;
- ``rank_s``: ``mistudy rank`` (load + match + rank) on the finished store.

Goal (issue: "a driver that scales"): ≥ 500 trial-epochs/s into both stores, finish ≤ 50 ms,
rank ≤ 5 s on 1,000 runs × 20 epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from trainables.records import BASELINE_KEY, RECORD_KEYS


class _Trial:
    """What the callback reads from Tune's Trial object."""

    def __init__(self, trial_id: str, config: dict[str, Any], path: Path) -> None:
        # one folder for both here: the driver's copy of the results and the checkpoints
        self.trial_id, self.config, self.local_path, self.path = trial_id, config, str(path), \
            str(path)


def _config(i: int, epochs: int) -> dict[str, Any]:
    baseline = i % 10 == 0  # one CE baseline per 9 searched trials, batch sizes shared
    tr = {"family": "constant", "c": 1.0} if baseline else \
        {"family": "power", "exponent": 0.1 + (i % 97) / 50}
    return {"dataset": "fashion_mnist", "model": "shallow", "epochs": epochs,
            "batch_size": 64 * (1 + (i // 10) % 3), "seed": (i // 30) % 2,
            "alpha": 1.01 + (i % 7) / 4, "transition": tr, BASELINE_KEY: baseline}


def _record(i: int, epoch: int) -> dict[str, Any]:
    r = {k: 0.5 + 0.001 * ((i * 31 + epoch * 7 + j) % 100) for j, k in enumerate(RECORD_KEYS)}
    r.update(epoch=epoch, train_ce=1.0 / (1 + epoch), val_ce=1.2 / (1 + epoch) + 0.01 * (i % 5),
             test_ce=1.2 / (1 + epoch) + 0.01 * (i % 5), val_acc=0.8, test_acc=0.8)
    r["gap"], r["val_gap"] = r["test_ce"] - r["train_ce"], r["val_ce"] - r["train_ce"]
    r["timestamp"] = time.time()
    return r


def _trial_folder(root: Path, i: int, epochs: int) -> Path:
    """A trial's Tune folder as a finished trial leaves it: result.json, and the plot it drew
    with its history in the last checkpoint (one drawing, copied: drawing is not measured)."""
    folder = root / f"t{i:05d}"
    ck = folder / f"checkpoint_{epochs - 1:06d}"
    ck.mkdir(parents=True)
    records = [_record(i, e) for e in range(epochs)]
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    (ck / "history.json").write_text(json.dumps(records))
    return folder


def _wait(cb: Any, done: Any, timeout: float = 3600) -> float:
    t0 = time.perf_counter()
    while not done() and time.perf_counter() - t0 < timeout:
        time.sleep(0.005)
    if not done():
        raise RuntimeError(f"the writer did not finish in {timeout} s")
    return time.perf_counter() - t0


def _measure(uri: str, root: Path, trials: int, epochs: int) -> dict[str, Any]:
    from study._callbacks import MlflowCallback, trial_folders
    from study._tracking import Tracker
    from trainables.plots import plot_trial

    png = plot_trial([_record(0, e) for e in range(epochs)], root / "drawn.png", "bench")
    art = (root / "artifacts").as_uri() if uri.startswith("sqlite:") else None
    tracker = Tracker(uri, "bench", "bench-study", artifact_location=art)
    tracker.parent_run({"name": "bench"})
    cb = MlflowCallback(tracker)
    ts = []
    for i in range(trials):
        folder = _trial_folder(root / "ray", i, epochs)
        shutil.copyfile(png, folder / f"checkpoint_{epochs - 1:06d}" / "trajectories.png")
        ts.append(_Trial(f"t{i:05d}", _config(i, epochs), folder))
    for t in ts:  # first epochs: every trial's run is created
        cb.on_trial_result(0, [], t, _record(int(t.trial_id[1:]), 0))
    create_s = _wait(cb, lambda: tracker._logged >= trials)
    cb.on_experiment_end([])  # the writer thread ends; below, its work is timed directly
    # A driver that fell behind: epochs 1.. of every trial are pending when the writer runs
    # (what the thread absorbs from the queue), and one flush logs them all.
    for e in range(1, epochs):
        for t in ts:
            cb._absorb(("result", t.trial_id, t.config, _record(int(t.trial_id[1:]), e), {}))
    t0, cpu0 = time.perf_counter(), time.process_time()
    assert cb.flush()
    log_s, log_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for t in ts:
        cb._absorb(("finish", t.trial_id, t.config, trial_folders(t), "FINISHED", None))
    t0 = time.perf_counter()
    assert cb.flush()
    finish_s = time.perf_counter() - t0
    return {"create_ms": 1000 * create_s / trials,
            "uncoalesced_per_s": _uncoalesced(uri, art, min(trials, 100), 5),
            "epochs_per_s": trials * (epochs - 1) / log_s,
            "driver_epochs_per_cpu_s": trials * (epochs - 1) / log_cpu,
            "finish_ms": 1000 * finish_s / trials, "callback_failures": cb.failures,
            "driver_plots": tracker.plots_drawn}


def _uncoalesced(uri: str, art: str | None, n: int, epochs: int) -> float:
    """The writer fed one epoch per call (its own experiment, outside the ranked one)."""
    from study._tracking import Tracker

    tracker = Tracker(uri, "bench-uncoalesced", "u", artifact_location=art)
    runs = [tracker.ensure_trial_run(f"u{i}", _config(i, epochs)) for i in range(n)]
    for i, r in enumerate(runs):
        tracker.log_records(r, [_record(i, 0)])
    t0 = time.perf_counter()
    for e in range(1, epochs):
        for i, r in enumerate(runs):
            tracker.log_records(r, [_record(i, e)])
    return n * (epochs - 1) / (time.perf_counter() - t0)


def _rank(uri: str) -> tuple[float, int]:
    from analysis import analyze

    t0 = time.perf_counter()
    res = analyze("bench", uri)
    return time.perf_counter() - t0, len(res.ranking)


def _rank_cli(uri: str, direct: bool = True) -> float:
    """``mistudy rank`` end to end, in its own process (imports included); ``direct=False``
    reads a SQLite store through MLflow's client (the reader before analysis._sqlite_runs)."""
    from analysis._load import DIRECT_ENV

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "study.cli", "rank", "bench", "--tracking-uri", uri],
                   check=True, capture_output=True,
                   env={**os.environ, DIRECT_ENV: "1" if direct else "0"})
    return time.perf_counter() - t0


def _rank_cli_side_by_side(uri: str, repeats: int = 3) -> dict[str, float]:
    """The direct reader and MLflow's client on the same store, alternated; medians."""
    import statistics

    direct, client = [], []
    for _ in range(repeats):
        direct.append(_rank_cli(uri, True))
        client.append(_rank_cli(uri, False))
    return {"rank_cli_s": statistics.median(direct),
            "rank_cli_through_mlflow_s": statistics.median(client)}


def _server(root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],  # MLflow's default: 4 workers
        stdout=open(root / "server.log", "ab"), stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(uri + "/health", timeout=1)
            return proc, uri
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the mlflow server did not start")


def run(trials: int = 1000, epochs: int = 20, stores: tuple[str, ...] = ("sqlite", "server")
        ) -> list[dict[str, Any]]:
    rows = []
    for store in stores:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            proc = None
            if store == "sqlite":
                uri = f"sqlite:///{root / 'mlflow.db'}"
            else:
                proc, uri = _server(root)
            try:
                row = {"store": store, "trials": trials, "epochs": epochs,
                       **_measure(uri, root, trials, epochs)}
                row["rank_s"], row["ranked"] = _rank(uri)
                if store == "sqlite":
                    row.update(_rank_cli_side_by_side(uri))
                else:
                    row["rank_cli_s"] = _rank_cli(uri)
            finally:
                if proc is not None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
            rows.append(row)
    return rows
