"""analysis._sqlite_runs reads a local MLflow store's runs straight from its tables: the second
computation here is MLflow's own ``search_runs`` on the same store, which the reader must
match run for run -- order, tags, parameters, the parent run -- across experiments, studies,
deleted runs and runs that started in the same millisecond."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis._load import _runs_frame
from analysis._sqlite_runs import read_runs
from trainables.records import PARENT_RUN, ROLE_PARENT, ROLE_TRIAL, TAGS, TRIAL_RUNS, study_filter
from trainables.runsearch import search_all_runs


def _store(tmp_path: Path) -> tuple[Path, MlflowClient]:
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    for name in ("study", "other"):
        exp = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
        for study_id in ("s1", "s2"):
            for k in range(2):  # two parents: the newest is the study's
                client.create_run(exp, start_time=1_000 + k, tags={
                    TAGS.role: ROLE_PARENT, TAGS.study_id: study_id})
            for i in range(12):
                run = client.create_run(exp, start_time=2_000 + i // 3, tags={  # ties of 3
                    TAGS.role: ROLE_TRIAL, TAGS.study_id: study_id, TAGS.trial_id: f"t{i}",
                    TAGS.baseline: "true" if i % 4 == 0 else "false"})
                for key, value in (("alpha", 1.01 + i / 10), ("batch_size", 64),
                                   ("transition.family", "power"),
                                   ("transition.exponent", 0.5), ("seed", i % 2)):
                    client.log_param(run.info.run_id, key, value)
                if i == 5:
                    client.delete_run(run.info.run_id)  # gone from every search
                if i == 7:
                    client.set_terminated(run.info.run_id, "FINISHED")
    return db, client


def test_the_runs_read_from_the_tables_are_mlflows_search(tmp_path: Path) -> None:
    db, client = _store(tmp_path)
    for name in ("study", "other"):
        exp = client.get_experiment_by_name(name)
        for study_id in ("s1", "s2", None):
            got = read_runs(db, name, study_id)
            assert got is not None and got.experiment_id == exp.experiment_id
            flt = TRIAL_RUNS + (f" and {study_filter(study_id)}" if study_id else "")
            want = search_all_runs(client, exp.experiment_id, flt)
            assert [r.info.run_id for r in got.runs] == [r.info.run_id for r in want]
            assert len(want) == (11 if study_id else 22)  # the deleted run is in neither
            for g, w in zip(got.runs, want, strict=True):
                assert (g.info.status, g.info.start_time, g.info.artifact_uri) == \
                    (w.info.status, w.info.start_time, w.info.artifact_uri)
                assert g.data.tags == w.data.tags and g.data.params == w.data.params
            pd.testing.assert_frame_equal(_runs_frame(got.runs), _runs_frame(want))
            parents = client.search_runs(
                [exp.experiment_id], PARENT_RUN + (f" and {study_filter(study_id)}"
                                                   if study_id else ""),
                order_by=["attributes.start_time DESC"], max_results=1)
            assert got.parent_run_id == parents[0].info.run_id
    by_id = read_runs(db, client.get_experiment_by_name("other").experiment_id, "s1")
    assert by_id is not None and by_id.name == "other"


def test_what_it_cannot_read_is_left_to_mlflow(tmp_path: Path) -> None:
    db, _ = _store(tmp_path)
    assert read_runs(db, "no such experiment", None) is None  # MLflow's client names them
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert read_runs(garbage, "study", None) is None
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert read_runs(empty, "study", None) is None  # no tables: not MLflow's schema
