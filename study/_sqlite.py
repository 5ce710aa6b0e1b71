"""Create a study's SQLite stores (MLflow's and Optuna's) atomically.

Both libraries build their schema in many steps (MLflow runs dozens of Alembic migrations,
seconds on a busy machine). A study killed in the middle used to leave a half-migrated file
that every later ``--resume`` tripped over (``duplicate column name: step``). The schema is
now built in a hidden file beside the target and renamed into place, so the store either
does not exist yet or is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainables.fileio import replace_atomically
from trainables.studyfolder import SQLITE_PREFIX as PREFIX
from trainables.studyfolder import StudyPaths, sqlite_path


def create_atomically(uri: str, build: Callable[[str], None]) -> bool:
    """When ``uri`` names a SQLite file that does not exist, run ``build`` on a temporary
    file's URI and rename the finished file into place. Returns True if it created one."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by a killed attempt
        stale.unlink(missing_ok=True)

    def build_and_close(tmp: Path) -> None:
        build(f"{PREFIX}{tmp}")
        for suffix in ("-journal", "-wal", "-shm"):  # none left once the engine is disposed
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    replace_atomically(path, build_and_close, tag="creating")
    return True


def build_mlflow_store(uri: str) -> None:
    """MLflow's full schema (every migration) in ``uri``; the engine is closed after."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = sqlite_path(uri)
    assert path is not None
    store = SqlAlchemyStore(uri, str(path.parent / StudyPaths.ARTIFACTS))
    store.engine.dispose()
    SqlAlchemyStore._engine_map.pop(uri, None)


def build_optuna_store(uri: str) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(uri)
    storage.engine.dispose()


def ensure_mlflow_store(uri: str) -> None:
    create_atomically(uri, build_mlflow_store)


def ensure_optuna_store(uri: str) -> None:
    create_atomically(uri, build_optuna_store)


def store_problem(uri: str) -> str | None:
    """A missing or damaged store is said, never silently replaced by an empty one."""
    from trainables.studyfolder import sqlite_path

    path = sqlite_path(uri) or Path(uri)
    if not path.is_file():
        return f"the study's MLflow store {path} is missing; the runs are under ray/: " \
               f"'mistudy sync --out FOLDER' rebuilds the store from them"
    with open(path, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return f"the study's MLflow store {path} is damaged (not an SQLite database); " \
               f"move it aside and run 'mistudy sync --out FOLDER' to rebuild it"
    return None
