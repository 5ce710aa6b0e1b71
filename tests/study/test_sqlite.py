"""Study stores are created atomically: a kill while MLflow migrates its schema (seconds) must
not leave a half-built database that every later resume fails on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from study._sqlite import create_atomically, ensure_mlflow_store, ensure_optuna_store
from trainables.studyfolder import sqlite_path

KILLED_BUILD = """
import sys, time, sqlite3
from study._sqlite import create_atomically
def build(uri):
    con = sqlite3.connect(uri[len("sqlite:///"):])
    con.execute("create table half (x int)"); con.commit(); con.close()
    print("half", flush=True); time.sleep(60)
create_atomically(sys.argv[1], build)
"""


def test_sqlite_path_only_for_files() -> None:
    assert sqlite_path("sqlite:////tmp/a/mlflow.db") == Path("/tmp/a/mlflow.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_killed_mid_build_leaves_no_store_and_the_next_build_completes(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, uri], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "half"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "mlflow.db").exists()
    assert list(tmp_path.glob(".mlflow.db.creating-*"))  # the half-built file, hidden
    ensure_mlflow_store(uri)
    assert not list(tmp_path.glob(".mlflow.db.creating-*"))
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.0, step=3)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "m")] == [3]


def test_real_mlflow_migration_killed_at_many_points(tmp_path: Path) -> None:
    # Imports first (seconds), then "go", then the schema build (about a second): the kills
    # land inside the migrations.
    code = ("import sys; import mlflow.store.tracking.sqlalchemy_store; "
            "from study._sqlite import ensure_mlflow_store; print('go', flush=True); "
            "ensure_mlflow_store(sys.argv[1])")
    inside = 0  # kills that landed during the schema build (a half-built file is left)
    for i, delay in enumerate((0.05, 0.2, 0.4, 0.7)):
        path = tmp_path / f"m{i}" / "mlflow.db"
        uri = f"sqlite:///{path}"
        proc = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if path.exists():  # finished before the kill: then it is complete, usable as it is
            MlflowClient(uri).search_experiments()
        else:
            inside += bool(list(path.parent.glob(".mlflow.db.creating-*")))
        ensure_mlflow_store(uri)
        client = MlflowClient(uri)
        client.create_run(client.create_experiment("e"))
    assert inside >= 1, "no kill landed inside a migration: the test proved nothing"


def test_existing_store_is_left_alone(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'optuna.db'}"
    ensure_optuna_store(uri)
    study = optuna.create_study(storage=uri, study_name="s")
    study.enqueue_trial({"x": 1.0})
    before = (tmp_path / "optuna.db").read_bytes()
    assert create_atomically(uri, lambda u: (_ for _ in ()).throw(AssertionError)) is False
    assert (tmp_path / "optuna.db").read_bytes() == before
    assert len(optuna.load_study(study_name="s", storage=uri).trials) == 1
