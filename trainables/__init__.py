"""mistudy's training core: the Rényi MI estimator, transition schedules, models, data and the
regularized training loop. Needs only torch, torchvision, numpy and pyyaml.

Names are imported on first use (PEP 562), so torch-free modules -- ``trainables.records``,
``trainables.schedules``, ``trainables.saturation`` -- can be read without importing torch:
``analysis`` reads a study that way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ConfigError, KernelConfig, TrainConfig, apply_overrides, load_yaml
    from .data import Splits, load_splits
    from .errors import DataError, TrialDiverged
    from .loop import Trainer, resolve_device, run_trial
    from .models import MODELS, build_model
    from .names import DATASETS
    from .records import RECORD_KEYS
    from .schedules import FAMILIES, Family, Param, transition, validate_transition

_WHERE = {
    "config": ("ConfigError", "KernelConfig", "TrainConfig", "apply_overrides", "load_yaml"),
    "data": ("Splits", "load_splits"),
    "errors": ("DataError", "TrialDiverged"),
    "names": ("DATASETS",),
    "loop": ("Trainer", "resolve_device", "run_trial"),
    "models": ("MODELS", "build_model"),
    "records": ("RECORD_KEYS",),
    "schedules": ("FAMILIES", "Family", "Param", "transition", "validate_transition"),
}
_MODULE_OF = {name: mod for mod, names in _WHERE.items() for name in names}

__all__ = [
    "ConfigError", "KernelConfig", "TrainConfig", "apply_overrides", "load_yaml",
    "DATASETS", "DataError", "Splits", "load_splits",
    "Trainer", "TrialDiverged", "resolve_device", "run_trial",
    "MODELS", "build_model", "RECORD_KEYS",
    "FAMILIES", "Family", "Param", "transition", "validate_transition",
]
assert sorted(__all__) == sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
