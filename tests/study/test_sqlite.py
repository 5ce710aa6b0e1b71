"""Study stores are created atomically: a kill while MLflow migrates its schema (seconds) must
not leave a half-built database that every later resume fails on."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study._sqlite import (
    build_mlflow_store,
    create_atomically,
    ensure_mlflow_store,
    ensure_optuna_store,
    template_path,
)
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
        # an empty cache each time: with a kept empty store the schema is copied, not built
        env = {**os.environ, "MISTUDY_DATA": str(tmp_path / f"cache{i}")}
        proc = subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                                text=True, env=env)
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


_CONSTRAINT = ("CONSTRAINT", "CHECK", "FOREIGN KEY", "PRIMARY KEY", "UNIQUE")


def _table_sql(sql: str | None) -> tuple[str, ...]:
    """A table's SQL with its columns in order and its constraints as a set: MLflow's own
    migrations write a table's constraints in an order that changes from one build to the
    next (Alembic's batch mode copies them from a set)."""
    lines = [ln.strip().rstrip(",") for ln in (sql or "").splitlines()]
    columns = [ln for ln in lines if not ln.startswith(_CONSTRAINT)]
    return (*columns, *sorted(ln for ln in lines if ln.startswith(_CONSTRAINT)))


def _schema(path: Path) -> tuple[list, list, list]:
    """Tables, indexes and their SQL; Alembic's revision; the Default experiment's row less
    its times and artifact folder."""
    con = sqlite3.connect(path)
    try:
        master = sorted((kind, name, _table_sql(sql)) for kind, name, sql in
                        con.execute("SELECT type, name, sql FROM sqlite_master"))
        revision = list(con.execute("SELECT version_num FROM alembic_version"))
        default = list(con.execute("SELECT experiment_id, name, lifecycle_stage FROM "
                                   "experiments"))
    finally:
        con.close()
    return master, revision, default


def _artifact_location(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("SELECT artifact_location FROM experiments WHERE "
                               "experiment_id = 0").fetchone()[0])
    finally:
        con.close()


def test_a_store_copied_from_the_kept_empty_one_is_a_fresh_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MISTUDY_DATA", str(tmp_path / "cache"))
    kept = template_path(f"mlflow-{mlflow.__version__}")
    built = tmp_path / "built" / "mlflow.db"  # MLflow's own build, never through the cache
    built.parent.mkdir()
    build_mlflow_store(f"sqlite:///{built}")
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    ensure_mlflow_store(f"sqlite:///{first}")  # builds, and keeps an empty copy
    assert kept.is_file()
    kept_bytes = kept.read_bytes()
    ensure_mlflow_store(f"sqlite:///{second}")  # copies it
    assert kept.read_bytes() == kept_bytes
    assert _schema(first) == _schema(second) == _schema(built)
    # each store's Default experiment points at its own folder, as in MLflow's own build
    own = _artifact_location(built)
    assert own.startswith(str(built.parent))
    for path in (first, second):
        assert _artifact_location(path) == own.replace(str(built.parent), str(path.parent))
    client = MlflowClient(f"sqlite:///{second}")
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 2.0, step=1)
    assert client.get_metric_history(run.info.run_id, "m")[0].value == 2.0


def test_a_damaged_kept_store_is_built_afresh_and_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    monkeypatch.setenv("MISTUDY_DATA", str(tmp_path / "cache"))
    kept = template_path(f"optuna-{optuna.__version__}")
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not a database" * 100)
    uri = f"sqlite:///{tmp_path / 's' / 'optuna.db'}"
    ensure_optuna_store(uri)
    assert optuna.create_study(storage=uri, study_name="s").trials == []
    assert kept.read_bytes().startswith(b"SQLite format 3\x00")  # the sound build, kept


def test_a_cache_that_cannot_be_written_only_costs_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("MISTUDY_DATA", str(blocker / "cache"))  # under a file: no folder
    uri = f"sqlite:///{tmp_path / 's' / 'mlflow.db'}"
    ensure_mlflow_store(uri)
    client = MlflowClient(uri)
    assert client.get_experiment(client.create_experiment("e")).name == "e"
