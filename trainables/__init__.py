"""mistudy's training core: the Rényi MI estimator, transition schedules, models, data and the
regularized training loop. Needs only torch, torchvision, numpy and pyyaml."""

from .config import ConfigError, KernelConfig, TrainConfig, apply_overrides, load_yaml
from .data import DATASETS, DataError, Splits, load_splits
from .loop import Trainer, TrialDiverged, resolve_device, run_trial
from .models import MODELS, build_model, count_parameters
from .records import RECORD_KEYS
from .schedules import FAMILIES, Family, Param, is_baseline, transition, validate_transition

__all__ = [
    "ConfigError", "KernelConfig", "TrainConfig", "apply_overrides", "load_yaml",
    "DATASETS", "DataError", "Splits", "load_splits",
    "RECORD_KEYS", "Trainer", "TrialDiverged", "resolve_device", "run_trial",
    "MODELS", "build_model", "count_parameters",
    "FAMILIES", "Family", "Param", "is_baseline", "transition", "validate_transition",
]
