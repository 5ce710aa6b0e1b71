"""The paper's training runs for ``mistudy reproduce`` (its Figures 1, 3-6 are computed and
drawn by ``analysis``' reproduction from these runs' records).

Runs are shared between figures and cached in ``OUT/runs/<condition>-seed<k>/``: plain-CE runs
(``ce``) and regularized ones (``reg``: ``f = (1 + epoch)^-0.5``, α = 1.01); the regularized
runs also record the alignment curve of Ŷ after every epoch (Fig. 1). Each run trains through
the one checkpointed epoch (:func:`trainables.checkpoint.checkpointed_epoch`), so a stopped
reproduction continues where it was.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .checkpoint import HISTORY_FILE, STATE_FILE, checkpointed_epoch, load
from .config import TrainConfig
from .fileio import atomic_write_text
from .locks import folder_lock
from .records import DEFAULT_ALPHA, METRICS_FILE, NUM_CLASSES, read_metrics, write_metrics

__all__ = ["PAPER_EPOCHS", "CONDITIONS", "ALIGNMENT_FILE", "paper_config", "PaperRun",
           "plan_runs", "train_runs", "cpu_estimate_seconds"]

PAPER_EPOCHS = {"shallow": 50, "resnet18": 100}
CONDITIONS = {"ce": {"family": "constant", "c": 1.0},
              "reg": {"family": "power", "exponent": 0.5}}
ALIGNMENT_FILE = "alignment.json"  # a finished regularized run's per-epoch alignment curves
_PARTIAL = "alignment.partial.jsonl"  # the curves so far, beside the checkpoint


def paper_config(dataset: str, model: str, condition: str, seed: int, epochs: int,
                 input_size: int, threads: int | None = None) -> TrainConfig:
    return TrainConfig.from_dict({
        "dataset": dataset, "model": model, "epochs": epochs, "seed": seed,
        "alpha": DEFAULT_ALPHA, "transition": CONDITIONS[condition],
        "input_size": input_size if model == "resnet18" else 224,  # shallow ignores it
        "batch_size": 256 if model == "shallow" else 64, "threads": threads})


class PaperRun:
    """One reproduction run in ``folder``, resumable after every epoch in the one checkpoint
    layout (:mod:`trainables.checkpoint`: ``state.pt``, ``history.json``), plus
    ``alignment.partial.jsonl`` for Fig. 1's curves; the finished run is ``metrics.csv``
    (+ ``alignment.json``), written atomically, and its checkpoint removed."""

    def __init__(self, cfg: TrainConfig, folder: Path, curves: bool) -> None:
        self.cfg, self.folder, self.curves = cfg, folder, curves
        self.done = folder / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        self.align: list[dict[str, Any]] = []
        self.trainer: Any = None
        self.rng: Any = None

    def finished(self) -> bool:
        return self.done.exists() and (not self.curves
                                       or (self.folder / ALIGNMENT_FILE).exists())

    def result(self) -> list[dict[str, Any]]:
        return [dict(r) for r in read_metrics(self.done)]

    def open(self) -> None:
        """Build the trainer; continue from the last saved epoch if there is one."""
        import torch

        from .loop import Trainer

        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer = Trainer(self.cfg)
        if (self.folder / STATE_FILE).exists():
            self.records = load(self.folder, self.trainer) or []
            e = self.trainer.epoch
            lines = (self.folder / _PARTIAL).read_text().splitlines() if self.curves else []
            self.align = [json.loads(x) for x in lines[:e]]
            if len(self.records) < e or (self.curves and len(self.align) < e):
                raise RuntimeError(f"{self.folder}: its checkpoint is at epoch {e} but fewer "
                                   f"records were saved; delete the folder to restart the run")
        self.rng = torch.get_rng_state()

    def step(self) -> None:
        """Train one epoch through the one checkpointed epoch; Fig. 1's curve is saved with
        the records, before the state."""
        import torch

        torch.set_rng_state(self.rng)  # runs interleaved in one process keep their own RNG
        checkpointed_epoch(self.trainer, self.records, self.folder,
                           before_save=self._curve if self.curves else None)
        self.rng = torch.get_rng_state()
        if self.trainer.epoch >= self.cfg.epochs:
            self._finish()

    def _curve(self, record: dict[str, Any]) -> None:
        tr = self.trainer
        c = tr.yhat_alignment_curve()
        self.align.append({"widths": c.widths.tolist(), "alignment": c.alignment.tolist(),
                           "sigma_yhat": tr.sigma_yhat})
        atomic_write_text(self.folder / _PARTIAL,
                          "".join(json.dumps(a) + "\n" for a in self.align))

    def _finish(self) -> None:
        if self.curves:
            atomic_write_text(self.folder / ALIGNMENT_FILE, json.dumps(self.align))
        write_metrics(self.done, self.records)
        for name in (STATE_FILE, HISTORY_FILE, _PARTIAL):
            (self.folder / name).unlink(missing_ok=True)


def plan_runs(dataset: str, model: str, seeds: int, epochs: int, out: Path, size: int,
              conditions: tuple[str, ...], threads: int | None = None
              ) -> dict[str, list[PaperRun]]:
    """The runs each condition needs, in ``OUT/runs/<dataset>-<model>-<size>-<cond>-e<E>-seed<k>``
    (the folder name is the cache key; the thread count is not part of it)."""
    return {cond: [PaperRun(paper_config(dataset, model, cond, s, epochs, size, threads),
                            out / "runs" / f"{dataset}-{model}-{size}-{cond}-e{epochs}-seed{s}",
                            curves=(cond == "reg"))
                   for s in range(seeds)] for cond in conditions}


def train_runs(runs: list[PaperRun], log: Any = print) -> None:
    """Train the unfinished runs round-robin, one epoch each in turn: stopped at any time, the
    seeds and conditions have trained about equally many epochs (and resume from there)."""
    todo = [r for r in runs if not r.finished()]
    with ExitStack() as stack:
        for r in todo:
            stack.enter_context(folder_lock(r.folder))
            r.open()
        t0 = time.time()
        while todo:
            for r in list(todo):
                r.step()
                log(f"  {r.folder.name}: epoch {r.trainer.epoch}/{r.cfg.epochs} "
                    f"({time.time() - t0:.0f} s)")
                if r.finished():
                    todo.remove(r)


def cpu_estimate_seconds(model: str, input_size: int, epochs: int, seeds: int,
                         conditions: int, train_size: int = 5000, batch: int = 64) -> float:
    """Rough wall time from one timed training step (forward + backward) on this machine."""
    import torch

    from .models import build_model

    net = build_model(model, NUM_CLASSES, input_size)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, NUM_CLASSES, (batch,))
    t0 = time.perf_counter()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    step = time.perf_counter() - t0
    return step * (train_size / batch) * 1.5 * epochs * seeds * conditions  # 1.5: evaluation
