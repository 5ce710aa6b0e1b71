"""Create a study's SQLite stores (MLflow's and Optuna's) atomically.

Both libraries build their schema in many steps (MLflow runs dozens of Alembic migrations,
seconds on a busy machine). A study killed in the middle used to leave a half-migrated file
that every later ``--resume`` tripped over (``duplicate column name: step``). The schema is
now built in a hidden file beside the target and renamed into place, so the store either
does not exist yet or is complete.

An empty store is the same file for every study of one MLflow (or Optuna) version, so it is
built once per machine and kept in the cache (``trainables.fileio.cache_root()/stores``): a
new study copies it (milliseconds) instead of migrating (~1.5 CPU-s for MLflow's schema). The
copy is checked like any store (``sqlite_problem``); one that fails is built afresh and the
cache replaced. MLflow's "Default" experiment records an artifact folder, which a copy points
at this study's folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainables.fileio import replace_atomically
from trainables.studyfolder import SQLITE_PREFIX as PREFIX
from trainables.studyfolder import StudyPaths, sqlite_path


def create_atomically(uri: str, build: Callable[[str], None], template: str | None = None
                      ) -> bool:
    """When ``uri`` names a SQLite file that does not exist, run ``build`` on a temporary
    file's URI and rename the finished file into place. Returns True if it created one. With
    ``template`` (a name for the cache, one per library version), the empty store built once
    is copied instead of built again."""
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

    def from_template(tmp: Path) -> None:
        assert template is not None
        if _copy_template(template, tmp):
            return
        build_and_close(tmp)
        _keep_template(template, tmp)

    replace_atomically(path, build_and_close if template is None else from_template,
                       tag="creating")
    return True


def template_path(name: str) -> Path:
    """Where the empty store ``name`` (e.g. ``mlflow-3.17.2``) is kept on this machine."""
    from trainables.fileio import cache_root

    return cache_root() / "stores" / f"{name}.db"


def _copy_template(name: str, tmp: Path) -> bool:
    """Copy the kept empty store to ``tmp``; False when there is none or it is unsound (then
    nothing is left at ``tmp``)."""
    import shutil

    from trainables.studyfolder import sqlite_problem

    src = template_path(name)
    try:
        if not src.is_file() or src.is_symlink() or sqlite_problem(src):
            return False
        shutil.copyfile(src, tmp)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    if sqlite_problem(tmp):  # changed while it was copied
        tmp.unlink()
        return False
    return True


def _keep_template(name: str, built: Path) -> None:
    """Keep a copy of a freshly built empty store for the next study; a cache that cannot be
    written (read-only home, full disk) only costs the next study the build."""
    import shutil

    def copy(tmp: Path) -> None:
        shutil.copyfile(built, tmp)

    dst = template_path(name)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(dst, copy)
    except OSError:
        pass


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


def default_artifacts(path: Path) -> None:
    """Point the "Default" experiment (id 0, which MLflow makes with every store) of the
    store at ``path`` at its own folder's artifacts, as a fresh build does (and with its
    times): a copied empty store still names the folder it was first built in. MLflow's
    schema keeps it in ``experiments.artifact_location``."""
    import sqlite3
    import time

    # as build_mlflow_store's SqlAlchemyStore writes it: its artifact root joined with "0"
    location = f"{path.parent / StudyPaths.ARTIFACTS}/0"
    now = int(time.time() * 1000)  # MLflow's times are milliseconds since the epoch
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                        "last_update_time = ? WHERE experiment_id = 0", (location, now, now))
    finally:
        con.close()


def ensure_mlflow_store(uri: str) -> None:
    import mlflow

    path = sqlite_path(uri)
    if create_atomically(uri, build_mlflow_store, template=f"mlflow-{mlflow.__version__}"):
        assert path is not None
        default_artifacts(path)


def ensure_optuna_store(uri: str) -> None:
    import optuna

    create_atomically(uri, build_optuna_store, template=f"optuna-{optuna.__version__}")


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
