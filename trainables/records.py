"""The one place that says how a trial is written down: epoch-record keys, study-only config
keys, MLflow tag names, the schedule's text, typed params and ``metrics.csv``.

Torch-free on purpose: ``analysis`` and ``study`` read studies through this module without
importing torch. Everything that writes or reads a record, a tag or a param goes through here,
so a new key is added once.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RECORD_KEYS", "OPTIONAL_RECORD_KEYS", "FINITE_KEYS", "STUDY_KEYS", "BASELINE_KEY",
    "TAG", "tag", "DEFAULT_ALPHA", "NUM_CLASSES", "DEFAULT_LAST_K",
    "schedule_text", "run_name", "flatten", "unflatten", "param_text", "param_value",
    "MetricsWriter", "read_metrics", "write_metrics", "non_finite",
]

# ---- epoch records ----------------------------------------------------------------------
# The epoch record (one per trained epoch) is a contract with every reader. ``mi_grad_norm``
# is measured after the epoch; ``mi_grad_norm_start`` before it (at epoch 0: the untrained
# network, the paper's Fig. 6 start); ``mi_grad_norm_weighted`` is
# ``(1 - f(epoch)) * mi_grad_norm_start``: what the regularizer's gradient weighs in the loss.
RECORD_KEYS = (
    "epoch", "transition", "train_loss", "train_ce", "train_acc", "val_ce", "val_acc",
    "test_ce", "test_acc", "gap", "val_gap", "mi_y_x", "mi_y_yhat", "dpi_margin",
    "mi_grad_norm", "sigma_x", "sigma_yhat", "epoch_seconds",
    "mi_grad_norm_start", "mi_grad_norm_weighted",
)
# Added after the first studies were recorded: readers accept records without them.
OPTIONAL_RECORD_KEYS = ("mi_grad_norm_start", "mi_grad_norm_weighted")
# A record with any of these non-finite is a diverged trial, never a result.
FINITE_KEYS = ("train_loss", "train_ce", "val_ce", "test_ce", "mi_y_yhat")

# ---- defaults shared by every entry point -----------------------------------------------
DEFAULT_ALPHA = 1.01  # Rényi order (the paper's)
NUM_CLASSES = 10  # MNIST and Fashion-MNIST
DEFAULT_LAST_K = 3  # epochs averaged into a trial's final value (objective, gap, ranking)

# ---- study keys and tags ----------------------------------------------------------------
BASELINE_KEY = "mistudy_baseline"  # in a trial's config: a matched cross-entropy baseline
STUDY_KEYS = (BASELINE_KEY, "optuna_trial")  # in a trial's config, not training settings
TAG = "mistudy"  # MLflow tag namespace


def tag(name: str) -> str:
    """The MLflow tag ``mistudy.<name>``."""
    return f"{TAG}.{name}"


# ---- the schedule as text ---------------------------------------------------------------
_SHORT = {"exponent": "p", "rate": "r", "period": "T", "c": "c", "floor": "min",
          "warmup": "w", "epochs": "E"}


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def schedule_text(transition: Mapping[str, Any], alpha: float | None = None,
                  baseline: bool = False) -> str:
    """The canonical name of a schedule configuration: ``power p=0.50 α=1.01``; ``CE`` for a
    cross-entropy baseline. Seeds of one configuration share it (the MLflow ``schedule`` tag)."""
    if baseline:
        return "CE"
    family = str(transition.get("family", "?"))
    params = " ".join(f"{_SHORT.get(k, k)}={_num(v)}" for k, v in sorted(transition.items())
                      if k != "family")
    text = f"{family} {params}".strip()
    return text if alpha is None else f"{text} α={_num(float(alpha))}"


def run_name(config: Mapping[str, Any]) -> str:
    """A trial run's readable name: ``power p=0.50 α=1.01 b256 s0``, ``CE b256 s0``."""
    sched = schedule_text(config.get("transition") or {}, config.get("alpha"),
                          bool(config.get(BASELINE_KEY, False)))
    return f"{sched} b{config.get('batch_size', '?')} s{config.get('seed', '?')}"


# ---- typed params -----------------------------------------------------------------------
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (``kernel.horizon``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested dict; the inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def param_text(value: Any) -> str:
    """A param value as MLflow stores it: JSON, so it reads back with its type."""
    return json.dumps(value)


def param_value(text: str) -> Any:
    """The inverse of :func:`param_text`. Params written before JSON (a bare ``power``) come
    back as the string they are."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text if text != "None" else None


# ---- metrics.csv ------------------------------------------------------------------------
def non_finite(record: Mapping[str, Any]) -> list[str]:
    """The keys of ``FINITE_KEYS`` whose value is not a finite number."""
    return [k for k in FINITE_KEYS if k in record and not math.isfinite(float(record[k]))]


class MetricsWriter:
    """Appends records to ``metrics.csv`` row by row (flushed: a kill loses at most the row
    being written). ``append=True`` continues a file a resumed run wrote before."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        fresh = not (append and self.path.exists())
        self._fh = open(self.path, "w" if fresh else "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._fh, fieldnames=list(RECORD_KEYS), extrasaction="ignore")
        if fresh:
            self._w.writeheader()

    def write(self, record: Mapping[str, Any]) -> None:
        self._w.writerow(dict(record))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_metrics(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write a whole ``metrics.csv`` atomically (a hidden file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with MetricsWriter(tmp) as w:
        for r in records:
            w.write(r)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Read ``metrics.csv`` as floats (``epoch`` as int); empty cells (a key an older version
    did not write) are left out; a torn last line (a kill mid-write) is dropped."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            try:
                row = {k: float(v) for k, v in raw.items() if k and v not in (None, "")}
            except ValueError:
                break
            if not all(k in row for k in RECORD_KEYS if k not in OPTIONAL_RECORD_KEYS):
                break
            row["epoch"] = int(row["epoch"])
            rows.append(row)
    return rows
