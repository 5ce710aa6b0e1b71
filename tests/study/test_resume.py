"""study._resume's check of a saved state file, on every cut a kill mid-copy can leave."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from study._folder import StudyError
from study._resume import _whole


def test_every_cut_of_a_json_or_pickle_state_is_seen_and_whole_ones_pass(tmp_path: Path) -> None:
    state = {"trial_data": [["{\"trial_id\": \"a\"}", "{}"]] * 5, "x": [1.5, None, "é"]}
    files = {"experiment_state-s.json": json.dumps(state).encode(),
             "searcher-state-s.pkl": json.dumps(state).encode(),  # this project's: JSON
             "search_gen_state-s.json": pickle.dumps(state)}  # Tune's: a pickle, despite .json
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert _whole(path), name
        for n in range(len(data)):
            path.write_bytes(data[:n])
            assert not _whole(path), (name, n)
    assert _whole(tmp_path / "absent.json")  # a session that never wrote one


def _experiment(tmp_path: Path, trial: str = "a1b2c3d4") -> Path:
    exp = tmp_path / "study" / "ray" / "tiny"
    (exp / trial).mkdir(parents=True)
    (exp / trial / "params.json").write_text("{}")
    return exp


def _driver_folder(ray_tmp: Path, trial: str, tuner: bytes) -> Path:
    """A driver's folder as Ray leaves it under $RAY_TMPDIR/ray for a resumed session."""
    folder = ray_tmp / "ray" / "session_x" / "artifacts" / "first" / "tiny" / "driver_artifacts"
    folder.mkdir(parents=True)
    state = {"trial_data": [[json.dumps({"trial_id": trial}), "{}"]], "runner_data": {}}
    (folder / "experiment_state-s.json").write_text(json.dumps(state))
    (folder / "tuner.pkl").write_bytes(tuner)
    return folder


def test_a_torn_tuner_file_is_restored_from_mistudys_copy_then_a_drivers(
        tmp_path: Path, monkeypatch) -> None:
    from study._resume import TUNER_COPY, TUNER_FILE, repair_tuner_file

    whole = pickle.dumps({"__trainable_name": "train_tune", "x": list(range(50))})
    exp = _experiment(tmp_path)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    (exp / TUNER_FILE).write_bytes(whole)
    assert repair_tuner_file(exp) == []  # whole: nothing to say, and a copy is kept
    assert (exp / TUNER_COPY).read_bytes() == whole
    for cut in (0, 1, len(whole) // 2, len(whole) - 1):
        (exp / TUNER_FILE).write_bytes(whole[:cut])
        notes = repair_tuner_file(exp)
        assert len(notes) == 1 and "cut short (a kill or a full disk); restored from" \
            in notes[0], notes
        assert (exp / TUNER_FILE).read_bytes() == whole
    # an older study without the copy: a driver folder of this experiment has one
    (exp / TUNER_COPY).unlink()
    _driver_folder(tmp_path / "tmp", "other000", pickle.dumps("another study's"))
    (exp / TUNER_FILE).write_bytes(b"")
    with pytest.raises(StudyError, match=r"tuner\.pkl was cut short \(a kill or a full "
                                         r"disk\) and no whole copy"):  # another study's: none
        repair_tuner_file(exp)
    mine = _driver_folder(tmp_path / "tmp2", "a1b2c3d4", whole)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp2"))
    notes = repair_tuner_file(exp)
    assert notes == [f"resume: tiny/{TUNER_FILE} was cut short (a kill or a full disk); "
                     f"restored from {mine.resolve() / TUNER_FILE}"]
    assert (exp / TUNER_FILE).read_bytes() == whole == (exp / TUNER_COPY).read_bytes()


def test_the_checkpoint_tunes_manager_restores_from_is_put_back_too(tmp_path: Path) -> None:
    """CI and a quiet run saw a state saved between a result and its checkpoint's registration:
    its last result names checkpoint_000001, its checkpoint manager only checkpoint_000000,
    which Tune restores from -- and had deleted. The manager is Ray's own object, saved the way
    Tune saves it (a cloudpickle in JSON); the repair reads its names without unpickling."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune.utils.serialization import TuneFunctionEncoder

    from study._resume import restore_deleted_checkpoints
    from trainables.checkpoint import STATE_FILE

    exp = tmp_path / "ray" / "tiny"
    folder = exp / "t1"
    for n in (1, 2):  # what Tune left: the newer two (num_to_keep=2 deleted the oldest)
        (folder / f"checkpoint_00000{n}").mkdir(parents=True)
        (folder / f"checkpoint_00000{n}" / STATE_FILE).write_bytes(b"epoch %d" % n)
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    manager.register_checkpoint(_TrainingResult(
        Checkpoint(str(tmp_path / "elsewhere" / "t1" / "checkpoint_000000")), {"epoch": 0}))
    meta = {"last_result": {"epoch": 1, "checkpoint_dir_name": "checkpoint_000001"},
            "checkpoint_manager": json.loads(json.dumps(manager, cls=TuneFunctionEncoder))}
    trial = {"trial_id": "t1", "status": "RUNNING", "relative_logdir": "t1"}
    (exp / "experiment_state-s.json").write_text(json.dumps(
        {"trial_data": [[json.dumps(trial), json.dumps(meta)]], "runner_data": {}}))
    notes = restore_deleted_checkpoints(exp)
    assert notes == ["resume: trial t1's saved state names checkpoint_000000, which Tune had "
                     "deleted; restarting it from checkpoint_000001"]
    assert (folder / "checkpoint_000000" / STATE_FILE).read_bytes() == b"epoch 1"
    assert restore_deleted_checkpoints(exp) == []  # whole now: nothing the second time
