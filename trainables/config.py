"""The one training config: a frozen dataclass built from a plain dict (YAML, ``--set``, Tune).

Unknown keys raise and list the known ones; every bad value raises :class:`ConfigError` with one
line naming the key, the value and what is allowed -- before any data is loaded.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .names import DATASETS, MAX_TRACE_ORDER, MODEL_NAMES, STRATEGIES, VAL_SOURCES, integer_order
from .records import DEFAULT_ALPHA, NUM_CLASSES
from .schedules import validate_transition
from .yamlio import MAX_BYTES, YamlLimitError, safe_load

__all__ = ["ConfigError", "KernelConfig", "TrainConfig", "apply_overrides", "load_yaml"]

PRECISIONS = ("fp32", "bf16", "fp16")
ESTIMATORS = ("fast", "trace", "eigen", "dense")  # see TrainConfig.estimator
MAX_EPOCHS = 10_000  # the paper: 50-100; more is a typo that would hold a cluster for weeks
MAX_SEED = 2**32  # numpy's and torch's seeding both take it


class ConfigError(ValueError):
    """A bad config value. The message is one line for the user; ``problems`` holds each
    problem found (a command prints one ``error:`` line per problem)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


@dataclass(frozen=True)
class KernelConfig:
    """Kernel widths per layer. See :mod:`trainables.kernel_width` for the strategies."""

    yhat: str = "alignment"  # strategy for Ŷ: alignment | silverman | fixed
    x: str = "alignment"  # strategy for X
    y: str = "label"  # label (0/1 same-label matrix) | gaussian (one-hot, width sigma_y)
    sigma_yhat: float | None = None  # used when yhat == fixed
    sigma_x: float | None = None  # used when x == fixed
    sigma_y: float = 0.1  # used when y == gaussian
    gamma: float | None = None  # silverman scale; None = median pairwise distance
    horizon: int = 5  # epochs whose alignment maxima are averaged into s*
    calibration_batches: int = 8  # training batches per alignment curve


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist"  # mnist | fashion_mnist
    model: str = "shallow"  # shallow | resnet18
    epochs: int = 10
    batch_size: int = 256  # examples per step; also the MI estimator's N
    lr: float = 1e-3  # Adam step size (or SGD's)
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    seed: int = 0  # model init and batch order
    data_seed: int = 0  # which balanced subset; shared by all trials so baselines match
    alpha: float = DEFAULT_ALPHA  # Rényi order; 1 = von Neumann (Shannon) limit
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    transition: dict[str, Any] = field(
        default_factory=lambda: {"family": "power", "exponent": 0.5}
    )
    input_size: int = 224  # ResNet18 input side in pixels (paper: 224); shallow ignores it
    yhat: str = "softmax"  # Ŷ layer fed to the estimator: softmax | logits
    # fast: exact, the label structure; integer alpha by traces of powers, no eigensolve |
    # trace: that path required (integer alpha) | eigen: always eigensolves | dense: reference
    estimator: str = "fast"
    kernel: KernelConfig = field(default_factory=KernelConfig)
    train_size: int = 5000  # balanced: per class = size / 10
    val_size: int = 1000
    test_size: int = 1000
    data_dir: str | None = None
    # Where an IDX dataset's validation split comes from: test_file (default; disjoint from the
    # test examples, so validation is exchangeable with test) | train_file (the old behaviour)
    val_source: str = "test_file"
    data_source: str | None = None  # filled in after loading: where the data came from
    mi_grad_batches: int = 4  # training batches for the ||grad I(Y;Ŷ)|| probe per epoch
    eval_batch_size: int = 1000  # examples per forward pass in evaluation (no gradients)
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    # The network's forward pass: fp32 | bf16 | fp16 (autocast; fp16 with a grad scaler on
    # CUDA). The MI estimator always works in float64 and the loss is accumulated in fp32.
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config must be a mapping of keys to values, got {raw!r:.60}")
        data = dict(raw)
        _reject_unknown(data, cls, "")
        kernel = data.get("kernel") or {}
        if not isinstance(kernel, Mapping):
            raise ConfigError(f"kernel={kernel!r} must be a mapping; keys: {_keys(KernelConfig)}")
        _reject_unknown(kernel, KernelConfig, "kernel.")
        data["kernel"] = KernelConfig(**kernel)
        try:
            data["transition"] = validate_transition(_with_family(data.get("transition")))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict; ``TrainConfig.from_dict(cfg.to_dict()) == cfg``."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every problem at once, one line each (:class:`ConfigError`)."""
        token = _PROBLEMS.set([])
        try:
            for check in _CHECKS:
                try:
                    check(self)
                except (TypeError, ValueError):
                    pass  # a value of the wrong type, already reported by an earlier line
            problems = _PROBLEMS.get() or []
        finally:
            _PROBLEMS.reset(token)
        if problems:
            unique = list(dict.fromkeys(problems))
            raise ConfigError("; ".join(unique), unique)

    def with_updates(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _with_family(spec: Any) -> Any:
    """No transition -> the paper's power schedule; parameters without a family -> power's."""
    default = TrainConfig().transition
    if spec is None:
        return default
    if isinstance(spec, Mapping) and "family" not in spec:
        return {"family": default["family"], **spec}
    return spec


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _reject_unknown(data: Mapping[str, Any], cls: type, prefix: str) -> None:
    known = _keys(cls)
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown config key {prefix}{key!r}; known keys: {known}")


# While a config is validated, every problem is collected here (all are reported at once).
_PROBLEMS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("problems",
                                                                             default=None)


def _need(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        msg = f"{key}={value!r} is not allowed; allowed: {allowed}"
        bucket = _PROBLEMS.get()
        if bucket is None:
            raise ConfigError(msg)
        bucket.append(msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _in(value: Any, options: Any) -> bool:
    return isinstance(value, str) and value in options


def _check_choices(c: TrainConfig) -> None:
    _need(_in(c.dataset, DATASETS), "dataset", c.dataset, str(list(DATASETS)))
    _need(_in(c.model, MODEL_NAMES), "model", c.model, str(sorted(MODEL_NAMES)))
    _need(_in(c.optimizer, ("adam", "sgd")), "optimizer", c.optimizer, "'adam' or 'sgd'")
    _need(_in(c.yhat, ("softmax", "logits")), "yhat", c.yhat, "'softmax' or 'logits'")
    _need(_in(c.estimator, ESTIMATORS), "estimator", c.estimator, str(list(ESTIMATORS)))
    _need(_in(c.precision, PRECISIONS), "precision", c.precision, str(list(PRECISIONS)))
    _need(isinstance(c.device, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", c.device)),
          "device", c.device, "auto, cpu, cuda or cuda:N")
    _need(_in(c.val_source, VAL_SOURCES), "val_source", c.val_source, str(list(VAL_SOURCES)))
    _need(c.data_dir is None or isinstance(c.data_dir, str), "data_dir", c.data_dir,
          "a folder path or null")


def _check_numbers(c: TrainConfig) -> None:
    _need(_is_num(c.alpha) and c.alpha > 0, "alpha", c.alpha, "a finite number > 0")
    if c.estimator == "trace" and _is_num(c.alpha):
        _need(integer_order(c.alpha) is not None, "alpha", c.alpha,
              f"with estimator=trace: an integer in [2, {MAX_TRACE_ORDER}]")
    _need(_is_num(c.lr) and c.lr > 0, "lr", c.lr, "a finite number > 0")
    _need(_is_num(c.momentum) and 0 <= c.momentum < 1, "momentum", c.momentum, "[0, 1)")
    _need(_is_num(c.weight_decay) and c.weight_decay >= 0, "weight_decay", c.weight_decay,
          "a finite number >= 0")
    _need(_is_int(c.epochs) and 1 <= c.epochs <= MAX_EPOCHS, "epochs", c.epochs,
          f"an integer in [1, {MAX_EPOCHS}]")
    for key in ("seed", "data_seed"):
        _need(_is_int(getattr(c, key)) and 0 <= getattr(c, key) < MAX_SEED, key,
              getattr(c, key), "an integer in [0, 2**32)")
    for key in ("train_size", "val_size", "test_size"):
        v = getattr(c, key)
        _need(_is_int(v) and v >= NUM_CLASSES and v % NUM_CLASSES == 0, key, v,
              "a positive multiple of 10 (balanced classes)")
    _need(_is_int(c.batch_size) and NUM_CLASSES <= c.batch_size <= c.train_size,
          "batch_size", c.batch_size, f"an integer in [{NUM_CLASSES}, train_size={c.train_size}]")
    _need(_is_int(c.input_size) and 32 <= c.input_size <= 512, "input_size", c.input_size,
          "an integer in [32, 512]")
    _need(_is_int(c.mi_grad_batches) and c.mi_grad_batches >= 0, "mi_grad_batches",
          c.mi_grad_batches, "an integer >= 0")
    _need(_is_int(c.eval_batch_size) and c.eval_batch_size >= 1, "eval_batch_size",
          c.eval_batch_size, "an integer >= 1")
    _need(c.threads is None or (_is_int(c.threads) and c.threads >= 1), "threads", c.threads,
          "null or an integer >= 1")


def _check_kernel(c: TrainConfig) -> None:
    k = c.kernel
    for layer in ("yhat", "x"):
        strat = getattr(k, layer)
        _need(_in(strat, STRATEGIES), f"kernel.{layer}", strat, str(list(STRATEGIES)))
        sigma = getattr(k, f"sigma_{layer}")
        if strat == "fixed":
            _need(_is_num(sigma) and sigma > 0, f"kernel.sigma_{layer}", sigma,
                  f"a number > 0 when kernel.{layer} is 'fixed'")
    _need(_in(k.y, ("label", "gaussian")), "kernel.y", k.y, "'label' or 'gaussian'")
    _need(_is_num(k.sigma_y) and k.sigma_y > 0, "kernel.sigma_y", k.sigma_y, "a number > 0")
    _need(k.gamma is None or (_is_num(k.gamma) and k.gamma > 0), "kernel.gamma", k.gamma,
          "null or a number > 0")
    _need(_is_int(k.horizon) and k.horizon >= 1, "kernel.horizon", k.horizon, "an integer >= 1")
    _need(_is_int(k.calibration_batches) and k.calibration_batches >= 1,
          "kernel.calibration_batches", k.calibration_batches, "an integer >= 1")


_CHECKS = (_check_choices, _check_numbers, _check_kernel)


# YAML 1.2's plain numbers and booleans; YAML 1.1 (PyYAML) also reads 0x10, 017 (octal),
# 1_000 and yes/on as numbers and booleans, which a --set value must not silently become.
_DECIMAL = re.compile(r"[-+]?(\d+|\d+\.\d*|\.\d+)([eE][-+]?\d+)?|[-+]?\.(inf|Inf|INF)|"
                      r"\.(nan|NaN|NAN)")


def _parse_value(text: str) -> Any:
    try:
        value = safe_load(text, "--set value") if text.strip() else ""
    except (yaml.YAMLError, YamlLimitError):
        return text
    t = text.strip()
    if isinstance(value, bool):
        return value if t in ("true", "false", "True", "False", "TRUE", "FALSE") else t
    if isinstance(value, (int, float)):
        plain = _DECIMAL.fullmatch(t) and not re.fullmatch(r"[-+]?0\d+", t)
        return value if plain else t
    return value


def apply_overrides(base: Mapping[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    out: dict[str, Any] = _deepcopy(base)
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like key=value (dotted keys nest)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        if parts[:1] == ["transition"] and parts[-1] == "family" and node.get("family") != (
            new := _parse_value(text)
        ):
            # A new family drops the old family's parameters.
            node.clear()
            node["family"] = new
            continue
        node[parts[-1]] = _parse_value(text)
    return out


def _deepcopy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; one-line :class:`ConfigError` on any problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = safe_load(fh.read(MAX_BYTES + 1), f"config file {path!r}")
    except YamlLimitError as exc:
        raise ConfigError(str(exc)) from None
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path!r} is not UTF-8 text") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a folder") from None
    except OSError as exc:
        raise ConfigError(f"config file {path!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"config file {path!r} is not valid safe YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping, got {type(data).__name__}")
    return data
