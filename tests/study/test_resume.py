"""study._resume's check of a saved state file, on every cut a kill mid-copy can leave."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

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
