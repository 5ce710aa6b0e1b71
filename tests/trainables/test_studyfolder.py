"""trainables.studyfolder: the folder's layout and where its stores are after a move."""

from __future__ import annotations

import json
from pathlib import Path

from trainables.studyfolder import FOLDER_STORE, StudyPaths, sqlite_path, tracking_uri_of


def test_a_moved_folder_finds_its_own_store_and_artifacts(tmp_path: Path) -> None:
    made, moved = tmp_path / "made" / "study", tmp_path / "elsewhere" / "study"
    art = moved / "mlartifacts" / "1" / "abc" / "artifacts" / "metrics.csv"
    art.parent.mkdir(parents=True)
    art.write_text("epoch\n0\n")
    (moved / "mlflow.db").write_bytes(b"")
    # a run's artifact path as the store recorded it, in the folder it was made in
    recorded = made / "mlartifacts" / "1" / "abc" / "artifacts" / "metrics.csv"
    assert StudyPaths(moved).relocated(recorded) == art
    assert StudyPaths(moved).relocated(recorded.with_name("missing.csv")) is None
    assert StudyPaths(moved).relocated(Path("/data/runs/metrics.csv")) is None
    # study.json of the folder's own store, and of one from before relative stores
    for meta in ({"tracking_uri": FOLDER_STORE},
                 {"tracking_uri": f"sqlite:///{made / 'mlflow.db'}",
                  "artifact_location": (made / "mlartifacts").as_uri()}):
        uri, location = tracking_uri_of(json.loads(json.dumps(meta)), moved)
        assert sqlite_path(uri) == (moved / "mlflow.db").resolve()
        assert location == (moved / "mlartifacts").resolve().as_uri()
    assert not StudyPaths(moved).is_study()
    StudyPaths(moved).meta.write_text("{}")
    assert StudyPaths(moved).is_study()
