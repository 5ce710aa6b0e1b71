"""The Ray Tune trainable: :class:`trainables.Trainer` behind Tune's function API.

Imports ray and torch only when called: ``trainables`` stays importable on a torch-only box,
and the study's driver, which hands this function to Tune, never pays torch's import
(~2.7 CPU-s per command; the Ray workers that run it have torch imported already). Every
epoch reports the record with a checkpoint (model, optimizer, RNG, epoch, kernel widths); a
restarted trial continues from its last checkpoint, bit for bit on the CPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .records import BASELINE_KEY, train_config_of

__all__ = ["train_tune"]


def train_tune(config: dict[str, Any]) -> None:
    """Tune function trainable. ``config`` is a full training config plus study keys."""
    import ray
    from ray import tune

    from .checkpoint import checkpointed_run, load
    from .loop import Trainer

    t_enter = time.perf_counter()
    cfg = TrainConfig.from_dict(train_config_of(config))
    if cfg.threads is None:
        # One trial, its own CPUs: no oversubscription. Recorded, so a rerun with
        # `mistudy train --config` uses the same thread count and gets the same numbers.
        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
        cfg = cfg.with_updates(threads=max(1, int(cpus)))
    trainer = Trainer(cfg)
    checkpoint = tune.get_checkpoint()
    history: list[dict[str, Any]] | None = []  # every epoch's record, for the trial's plot
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            history = load(Path(d), trainer)
    extras = {
        BASELINE_KEY: int(bool(config.get(BASELINE_KEY, False))),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "device": str(trainer.device),
        "node_id": ray.get_runtime_context().get_node_id(),
        "data_source": trainer.data.source,
        "threads": cfg.threads,
        "setup_seconds": time.perf_counter() - t_enter,  # data, model, calibration, restore
    }

    saving = [0.0]  # when the epoch's checkpoint began (perf_counter seconds)

    def before_save(record: dict[str, Any]) -> None:
        saving[0] = time.perf_counter()

    def report(record: dict[str, Any], folder: Path) -> None:
        extras["checkpoint_seconds"] = time.perf_counter() - saving[0]
        # epochs_done is ASHA's clock: Tune's own iteration count restarts from what its
        # saved state knew, which can trail the checkpoint a resumed trial restarts from.
        tune.report({**record, **extras, "epochs_done": trainer.epoch},
                    checkpoint=tune.Checkpoint.from_directory(folder))

    # a fresh folder per epoch: Tune takes it over at the report
    checkpointed_run(trainer, history, tempfile.TemporaryDirectory, report,
                     before_save=before_save, draw=True)
