"""The one checkpoint layout (trainables/checkpoint.py): a kill between its two writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables import checkpoint


class _Trainer:
    """What the layout needs of a trainer: its state and its epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.weights = torch.arange(4.0) * epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.weights = int(state["epoch"]), state["weights"]


def test_a_history_ahead_of_the_state_is_cut_back_to_it(tmp_path: Path) -> None:
    records = [{"epoch": e, "train_ce": 1.0 / (e + 1)} for e in range(3)]
    checkpoint.save(tmp_path, _Trainer(2), records[:2])
    # a kill after the next epoch's history was written but before its state
    (tmp_path / checkpoint.HISTORY_FILE).write_text(json.dumps(records))
    fresh = _Trainer(0)
    got = checkpoint.load(tmp_path, fresh)
    assert fresh.epoch == 2 and torch.equal(fresh.weights, torch.arange(4.0) * 2)
    assert got == records[:2]  # epoch 2 is trained again, never skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.HISTORY_FILE,
                                                          checkpoint.STATE_FILE]


def test_a_checkpoint_without_history_loads_its_state_and_says_so(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, _Trainer(1), None)
    fresh = _Trainer(0)
    assert checkpoint.load(tmp_path, fresh) is None and fresh.epoch == 1
