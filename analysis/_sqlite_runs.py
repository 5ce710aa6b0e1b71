"""A study's runs read straight from a local MLflow SQLite store, for ``rank`` and every reader
of a study: the same runs, in the same order, with the same tags and parameters as MLflow's
``search_runs`` gives (``tests/analysis/test_sqlite_runs.py`` compares the two on one store).

Why: through MLflow, reading 1,000 finished runs costs a second to open the store (its client
and schema check) and about two more to build every run's entity -- its latest metrics
included, which the analysis never reads (the records come from each run's ``metrics.csv``).
Here it is three queries on a read-only connection. The tables read (``experiments``,
``runs``, ``tags``, ``params``) are MLflow's SQL schema, unchanged for years; ``study._versions``
pins the MLflow minor this is tested against, and any surprise (another schema, a locked or
damaged file) returns None: the caller then reads through MLflow as before.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from trainables.records import ROLE_PARENT, ROLE_TRIAL, TAGS

__all__ = ["SqliteRuns", "read_runs"]


class SqliteRuns(NamedTuple):
    experiment_id: str
    name: str
    runs: list[Any]  # each with .info (run_id, status, start_time, artifact_uri) and .data
    parent_run_id: str | None  # the newest parent run of the study, if any


def read_runs(db: Path, experiment: str, study_id: str | None) -> SqliteRuns | None:
    """The trial runs of ``experiment`` (a name, or an id) -- of study ``study_id`` when given
    -- as MLflow's search would list them (active runs, oldest first, then by run id), and the
    study's newest parent run; None when the store cannot be read this way."""
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
            return _read(con, experiment, study_id)
    except (sqlite3.Error, ValueError, TypeError):
        return None


def _read(con: sqlite3.Connection, experiment: str, study_id: str | None) -> SqliteRuns | None:
    exp = con.execute("SELECT experiment_id, name FROM experiments WHERE name = ?",
                      (experiment,)).fetchone()
    if exp is None and experiment.isdigit():
        exp = con.execute("SELECT experiment_id, name FROM experiments WHERE experiment_id = ?",
                          (int(experiment),)).fetchone()
    if exp is None:
        return None  # MLflow's client says which experiments there are
    rows = con.execute(
        "SELECT run_uuid, status, start_time, artifact_uri FROM runs "
        "WHERE experiment_id = ? AND lifecycle_stage = 'active'", (exp[0],)).fetchall()
    tags, params = _by_run(con, "tags", exp[0]), _by_run(con, "params", exp[0])
    runs, parents = [], []
    for run_id, status, start, artifact_uri in rows:
        t = tags.get(run_id, {})
        if study_id is not None and t.get(TAGS.study_id) != study_id:
            continue
        run = SimpleNamespace(
            info=SimpleNamespace(run_id=run_id, status=status, start_time=start,
                                 artifact_uri=artifact_uri),
            data=SimpleNamespace(tags=t, params=params.get(run_id, {})))
        if t.get(TAGS.role) == ROLE_TRIAL:
            runs.append(run)
        elif t.get(TAGS.role) == ROLE_PARENT:
            parents.append(run)
    # MLflow's order: start_time ascending (none last), then the run id
    runs.sort(key=lambda r: (r.info.start_time is None, r.info.start_time or 0, r.info.run_id))
    parents.sort(key=lambda r: (r.info.start_time is None, -(r.info.start_time or 0),
                                r.info.run_id))
    return SqliteRuns(str(exp[0]), str(exp[1]), runs,
                      parents[0].info.run_id if parents else None)


def _by_run(con: sqlite3.Connection, table: str, experiment_id: Any
            ) -> dict[str, dict[str, str]]:
    """run id -> {key: value} of ``table`` (tags or params) for the experiment's active runs."""
    out: dict[str, dict[str, str]] = {}
    for key, value, run_id in con.execute(
            f"SELECT t.key, t.value, t.run_uuid FROM {table} t JOIN runs r "  # noqa: S608
            "ON r.run_uuid = t.run_uuid WHERE r.experiment_id = ? "
            "AND r.lifecycle_stage = 'active'", (experiment_id,)):
        out.setdefault(run_id, {})[key] = value
    return out
