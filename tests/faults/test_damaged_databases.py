"""A study's SQLite stores damaged: one line naming the file, exit 2, never a SQLAlchemy
traceback (issue 35, item 17: a truncated ``mlflow.db`` in ``rank`` and ``sync``, a garbage
``optuna.db`` in ``export --bundle`` and the importance were ``DatabaseError`` tracebacks)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.test_special_files import _folder
from tests.study.conftest import mistudy
from trainables.studyfolder import sqlite_problem, sqlite_uri

pytestmark = [pytest.mark.faults]
PAGE = 4096


def _database(path: Path, rows: int = 3000) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)")
        db.executemany("INSERT INTO t (s) VALUES (?)", [(f"row {i} " * 8,) for i in range(rows)])
    db.close()
    return path


def _sqlite_reads_it(path: Path) -> bool:
    """SQLite's own verdict (the independent truth): the file opens and checks whole."""
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            return ok and db.execute("SELECT count(*) FROM t").fetchone()[0] == 3000
    except sqlite3.DatabaseError:
        return False


def test_every_cut_of_a_database_is_seen_as_sqlite_sees_it(tmp_path: Path) -> None:
    whole = _database(tmp_path / "whole.db").read_bytes()
    assert len(whole) > 20 * PAGE and sqlite_problem(tmp_path / "whole.db") is None
    assert _sqlite_reads_it(tmp_path / "whole.db")
    cut = tmp_path / "cut.db"
    for size in sorted({*range(100, len(whole), PAGE), *range(PAGE + 7, len(whole), 5 * PAGE),
                        len(whole) - 512, len(whole) - 1}):
        cut.write_bytes(whole[:size])
        problem = sqlite_problem(cut)
        assert problem is not None and "cut short" in problem, size
        # SQLite agrees, once the cut reaches a byte it uses (the last page's final bytes
        # are free space: a file one byte short still reads, and is still cut short)
        assert size == len(whole) - 1 or not _sqlite_reads_it(cut), size
    for size in (0,):  # SQLite's own empty database
        cut.write_bytes(whole[:size])
        assert sqlite_problem(cut) is None


def test_garbage_folders_fifos_and_a_writer_mid_way(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    for garbage in (os.urandom(40000), b"SQLite format 2\x00" + bytes(200), b"{}", b"x" * 99):
        db.write_bytes(garbage)
        assert "not a SQLite database" in (sqlite_problem(db) or ""), garbage[:20]
    db.unlink()
    os.mkfifo(db)
    t0 = time.time()
    assert "not a regular file" in (sqlite_problem(db) or "") and time.time() - t0 < 1
    db.unlink()
    db.mkdir()
    assert "not a regular file" in (sqlite_problem(db) or "")
    with pytest.raises(OSError, match="not a regular file"):  # the one URI builder refuses
        sqlite_uri(db)
    # a journal beside it: a writer (or SQLite's recovery of a kill) may be mid-way
    whole = _database(tmp_path / "w.db").read_bytes()
    (tmp_path / "w.db").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "w.db-journal").write_bytes(b"")
    assert sqlite_problem(tmp_path / "w.db") is None
    assert sqlite_problem(tmp_path / "absent.db") is None  # a store not made yet


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(40000))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _malformed(path: Path) -> None:
    """Header whole, pages after the second overwritten: only SQLite itself can tell."""
    data = bytearray(path.read_bytes())
    for at in range(2 * PAGE, len(data), PAGE):
        data[at:at + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))


DAMAGES: dict[str, Callable[[Path], None]] = {
    "cut short": _cut, "garbage": _garbage, "a FIFO": _fifo, "malformed inside": _malformed}


def _store_folder(tmp: Path) -> Path:
    """A study folder with its two stores: an MLflow experiment, an Optuna study with trials."""
    import optuna
    from mlflow.tracking import MlflowClient

    out = _folder(tmp)
    MlflowClient(tracking_uri=sqlite_uri(out / "mlflow.db")).create_experiment("tiny")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=sqlite_uri(out / "optuna.db"))
    for n in range(150):
        trial = study.ask()
        trial.suggest_float("alpha", 1.0, 2.0)
        study.tell(trial, 0.1 * n)
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store_folder(tmp_path_factory.mktemp("stores"))


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_store_is_named_in_one_line(stores: Path, tmp_path: Path,
                                              damage: str) -> None:
    import shutil

    for name in ("mlflow.db", "optuna.db"):
        out = tmp_path / name / "s"
        shutil.copytree(stores, out)
        DAMAGES[damage](out / name)
        # sync asks for Tune's experiment first: this folder has none to pass it with a store
        # damaged inside, where only SQLite can tell (rank covers that case)
        sync = [] if damage == "malformed inside" else [["sync", "--out", str(out)]]
        commands = [["rank", str(out)], *sync] if name == "mlflow.db" \
            else [["export", str(out), "--bundle", str(tmp_path / "b.tar.gz")]]
        for command in commands:
            res = mistudy(*command, timeout=60)  # a FIFO opened by SQLite would block
            lines = res.stderr.strip().splitlines()
            assert res.returncode == 2 and len(lines) == 1 and str(out / name) in lines[0] \
                and "Traceback" not in res.stderr, (command, res.stderr[-2000:])
