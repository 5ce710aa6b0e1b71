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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .closure import COMPARISON_KEYS
from .fileio import atomic_write_text

__all__ = [
    "RECORD_KEYS", "OPTIONAL_RECORD_KEYS", "SUMMARY_METRICS", "STRING_KEYS", "FINITE_KEYS",
    "STUDY_KEYS", "BASELINE_KEY", "ENQUEUED_KEY", "PHASE_KEY", "CONFIRM_PHASE", "VIEW_ORDER",
    "TAG", "tag", "Tags", "TAGS", "ROLE_PARENT", "ROLE_TRIAL", "TRIAL_RUNS", "PARENT_RUN",
    "study_filter", "METRICS_FILE", "CONFIG_FILE", "SPEC_FILE", "DEFAULT_ALPHA", "NUM_CLASSES",
    "DEFAULT_LAST_K",
    "schedule_text", "run_name", "train_config_of", "flatten", "unflatten", "param_text",
    "param_value",
    "typed_config", "run_group",
    "MetricsWriter", "read_metrics", "parse_metrics", "write_metrics", "non_finite",
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
# One-number columns on a finished trial's MLflow run (sortable in the runs table).
# view_order: the run's place in the view the MLflow link opens (study._ui; sorts the table).
VIEW_ORDER = "view_order"
SUMMARY_METRICS = ("final_gap", "final_test_acc", "gap_closure", VIEW_ORDER, *COMPARISON_KEYS)
# A record with any of these non-finite is a diverged trial, never a result.
FINITE_KEYS = ("train_loss", "train_ce", "val_ce", "test_ce", "mi_y_yhat")

# ---- defaults shared by every entry point -----------------------------------------------
DEFAULT_ALPHA = 1.01  # Rényi order (the paper's)
NUM_CLASSES = 10  # MNIST and Fashion-MNIST
DEFAULT_LAST_K = 3  # epochs averaged into a trial's final value (objective, gap, ranking)

# ---- study keys and tags ----------------------------------------------------------------
BASELINE_KEY = "mistudy_baseline"  # in a trial's config: a matched cross-entropy baseline
ENQUEUED_KEY = "mistudy_enqueued"  # in a trial's config: a configuration the spec enqueued
PHASE_KEY = "mistudy_phase"  # in a trial's config: CONFIRM_PHASE for a confirmation run
CONFIRM_PHASE = "confirm"  # also the confirmation experiment's name suffix (ray/NAME-confirm)
# in a trial's config, not training settings
STUDY_KEYS = (BASELINE_KEY, "optuna_trial", ENQUEUED_KEY, PHASE_KEY)
TAG = "mistudy"  # MLflow tag namespace


def tag(name: str) -> str:
    """The MLflow tag ``mistudy.<name>``."""
    return f"{TAG}.{name}"


class Tags(NamedTuple):
    """Every MLflow tag mistudy writes on a run, by name (``TAGS.trial_id`` is
    ``"mistudy.trial_id"``): written by ``study._tracking``/``study._callbacks``, read by
    ``analysis._load`` and the UI's filters -- spelled here only."""

    study_id: str = tag("study_id")
    role: str = tag("role")
    trial_id: str = tag("trial_id")
    family: str = tag("family")
    baseline: str = tag("baseline")
    dataset: str = tag("dataset")
    model: str = tag("model")
    seed: str = tag("seed")
    batch_size: str = tag("batch_size")
    optuna_trial: str = tag("optuna_trial")
    enqueued: str = tag("enqueued")
    phase: str = tag("phase")
    saturation_epoch: str = tag("saturation_epoch")
    epochs_done: str = tag("epochs_done")
    error: str = tag("error")
    told: str = tag("told")
    told_reason: str = tag("told_reason")
    selected_by: str = tag("selected_by")
    node: str = tag("node")
    hostname: str = tag("hostname")
    node_id: str = tag("node_id")
    cuda_visible_devices: str = tag("cuda_visible_devices")
    device: str = tag("device")
    # top-level (unprefixed): the MLflow UI's "Group by" lists these first
    schedule: str = "schedule"  # the schedule's label (seeds of one schedule share it)
    group: str = "group"  # the line a run belongs to in the charts (run_group)
    best_schedule: str = "best_schedule"  # on the parent: the ranking's first schedule
    note: str = "mlflow.note.content"  # MLflow's description of a run or an experiment


TAGS = Tags()


def run_group(label: str, baseline: bool, phase: str, pruned: bool = False) -> str:
    """The chart line a run belongs to (the shared view groups runs by ``TAGS.group``): a
    schedule's seeds are one line; its matched CE baseline is a line of its own ("CE b64");
    confirmation runs and pruned runs are groups apart from the search's finished ones."""
    if phase != "search":
        return f"{phase}: {label}"
    if pruned and not baseline:
        return f"pruned: {label}"
    return label
ROLE_PARENT, ROLE_TRIAL = "parent", "trial"  # values of TAGS.role
TRIAL_RUNS = f"tags.`{TAGS.role}` = '{ROLE_TRIAL}'"  # MLflow filters: a study's trial runs,
PARENT_RUN = f"tags.`{TAGS.role}` = '{ROLE_PARENT}'"  # its parent run


def study_filter(study_id: str) -> str:
    """MLflow's filter for the runs of one study."""
    return f"tags.`{TAGS.study_id}` = '{study_id}'"

# ---- the files of a run (its folder under ``mistudy train``, its MLflow artifacts) --------
METRICS_FILE = "metrics.csv"  # one row per epoch (RECORD_KEYS)
CONFIG_FILE = "config.yaml"  # the training config that reruns the run
SPEC_FILE = "spec.yaml"  # a study's spec: in its folder and on its MLflow parent run


# ---- the schedule as text ---------------------------------------------------------------
_SHORT = {"exponent": "p"}  # the paper's name for the power family's exponent


def _num(v: Any) -> str:
    """Four significant digits: readable, and sampled values rarely share a name (two that
    do are one schedule to the eye; the exact values stay in the params)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def schedule_text(config: Mapping[str, Any]) -> str:
    """The canonical name of a trial's configuration, seeds aside: ``power p=0.50 α=1.01 b256``;
    ``CE b256`` for a cross-entropy baseline. The MLflow ``schedule`` tag (seeds of one
    configuration share it, so "Group by" averages them) and the ranking's schedule column."""
    batch = f"b{config.get('batch_size', '?')}"
    if config.get(BASELINE_KEY):
        return f"CE {batch}"
    tr = config.get("transition") or {}
    params = " ".join(f"{_SHORT.get(k, k)}={_num(v)}" for k, v in sorted(tr.items())
                      if k != "family")
    alpha = config.get("alpha")
    alpha_text = "" if alpha is None else f" α={_num(float(alpha))}"
    return " ".join(t for t in (str(tr.get("family", "?")), params) if t) + alpha_text + \
        f" {batch}"


def train_config_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config without the keys the study adds (:data:`STUDY_KEYS`)."""
    return {k: v for k, v in config.items() if k not in STUDY_KEYS}


def run_name(config: Mapping[str, Any]) -> str:
    """A trial run's readable name: ``power p=0.50 α=1.01 b256 s0``, ``CE b256 s0``; a split
    draw other than 0 adds `` d3``, a confirmation run starts with ``confirm:``."""
    draw = config.get("data_seed")
    name = f"{schedule_text(config)} s{config.get('seed', '?')}" + \
        (f" d{draw}" if draw not in (None, 0) else "")
    return f"confirm: {name}" if config.get(PHASE_KEY) == CONFIRM_PHASE else name


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
    """A config value as an MLflow param. Numbers keep their type in the text: ints as digits,
    floats always with a point or exponent (``repr``), so :func:`param_value` reads them back
    exactly; ``null``/``true``/``false``; strings as they are (readable in the UI)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


_WORDS: dict[str, Any] = {"null": None, "None": None, "true": True, "True": True,
                          "false": False, "False": False, "inf": math.inf, "-inf": -math.inf,
                          "nan": math.nan}


def param_value(text: str) -> Any:
    """The inverse of :func:`param_text` (also for params written by earlier versions, which
    wrote ``str(value)``): a JSON number keeps its int/float type; the words above; else the
    string itself. Never a guess by content like "has a dot"."""
    if text in _WORDS:
        return _WORDS[text]
    try:
        v = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else text


# Config keys whose values are strings (or null) whatever they look like: a folder named
# "3" stays "3". tests/trainables/test_records.py checks this against TrainConfig's fields.
STRING_KEYS = frozenset({
    "dataset", "model", "optimizer", "device", "yhat", "estimator", "data_dir", "data_source",
    "precision", "val_source", "kernel.yhat", "kernel.x", "kernel.y", "transition.family",
})


def typed_config(params: Mapping[str, str]) -> dict[str, Any]:
    """A run's params (dotted, text) -> its nested, typed config."""
    flat = {k: (None if v in ("null", "None") else v) if k in STRING_KEYS else param_value(v)
            for k, v in params.items()}
    return unflatten(flat)


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
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(RECORD_KEYS), extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow(dict(r))
    atomic_write_text(Path(path), buf.getvalue())


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Read ``metrics.csv`` as floats (``epoch`` as int); empty cells (a key an older version
    did not write) are left out; a torn last line (a kill mid-write) is dropped."""
    with open(path, newline="", encoding="utf-8") as fh:
        return parse_metrics(fh)


def parse_metrics(lines: Iterable[str]) -> list[dict[str, float]]:
    """:func:`read_metrics` of a ``metrics.csv`` already in memory (e.g. downloaded)."""
    rows = []
    for raw in csv.DictReader(lines):
        try:
            row = {k: float(v) for k, v in raw.items() if k and v not in (None, "")}
        except ValueError:
            break
        if not all(k in row for k in RECORD_KEYS if k not in OPTIONAL_RECORD_KEYS):
            break
        row["epoch"] = int(row["epoch"])
        rows.append(row)
    return rows
