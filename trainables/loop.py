"""The regularized training loop: ``L = f(epoch)·CE − (1 − f(epoch))·I(Y;Ŷ)``.

Read top to bottom: :class:`Trainer` holds data (whole splits as tensors on the device), model,
optimizer and the kernel widths; :meth:`Trainer.train_epoch` runs the batches;
:meth:`Trainer.evaluate` makes the epoch's record in eval mode; :func:`run_trial` ties them
together and calls ``report(record)`` once per epoch (the Ray trainable wraps exactly this).

The epoch record's keys are a contract (see ``RECORD_KEYS``). ``mi_y_yhat`` and ``mi_y_x`` are
the means over the training split's batches (fixed order, batch size as in training), after the
epoch, in eval mode. ``I(Y;X)`` does not depend on the network, so it is computed once.
``mi_grad_norm`` is the mean over ``mi_grad_batches`` fixed training batches of the ℓ2 norm of
``∇θ I(Y;Ŷ)`` -- a probe, because a per-step measurement would need a second backward pass.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import kernel_width as kw
from .config import ConfigError, TrainConfig
from .data import Splits, load_splits
from .errors import TrialDiverged
from .information import (
    gaussian_label_mutual_information,
    gram_matrix,
    label_gram_matrix,
    label_matrix,
    mutual_information,
)
from .models import build_model
from .records import non_finite
from .schedules import transition

__all__ = ["Trainer", "run_trial", "resolve_device"]


_SIGMA_X_CACHE: dict[str, float] = {}
# Settings that cannot change the inputs X or σ_X's calibration. Everything else is part of
# the cache key, so a new config field is in the key until someone declares it here: at worst
# a recomputation, never a stale width.
_NOT_X = frozenset({
    "model", "epochs", "lr", "optimizer", "momentum", "weight_decay", "seed", "alpha",
    "transition", "input_size", "yhat", "estimator", "mi_grad_batches", "eval_batch_size",
    "threads", "precision", "data_source",
})
_NOT_X_KERNEL = frozenset({"yhat", "sigma_yhat", "horizon", "y", "sigma_y"})


def x_width_key(cfg: TrainConfig) -> str:
    """σ_X's cache key: the config minus the settings that cannot change it."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_X}
    d["kernel"] = {k: v for k, v in d["kernel"].items() if k not in _NOT_X_KERNEL}
    return json.dumps(d, sort_keys=True)


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; an explicit ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use auto or cpu")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: TrainConfig, splits: Splits | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        sizes = (cfg.train_size, cfg.val_size, cfg.test_size)
        splits = splits or load_splits(cfg.dataset, cfg.data_dir, cfg.data_seed, sizes,
                                       cfg.val_source)
        self.data = splits.to(self.device)
        if cfg.data_source is None:  # where the data came from goes into the saved config
            self.cfg = cfg = cfg.with_updates(data_source=splits.source)
        if cfg.batch_size > len(self.data.train_y):
            raise ConfigError(f"batch_size={cfg.batch_size} exceeds the training split "
                              f"({len(self.data.train_y)} examples from {splits.source})")
        self.num_classes = splits.num_classes
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.num_classes, cfg.input_size).to(self.device)
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            cfg.precision]
        if self.amp_dtype is not None and self.device.type == "cpu":
            warnings.warn(f"precision={cfg.precision} on the CPU: most CPUs emulate reduced-"
                          f"precision convolutions (ResNet18 ran 20-30x slower than fp32 on "
                          f"this project's machine); it is meant for CUDA", stacklevel=2)
        if self.amp_dtype is not None and self.device.type == "cuda":
            # NHWC lets cuDNN use tensor cores for reduced-precision convolutions
            self.model = self.model.to(memory_format=torch.channels_last)
        # fp16 gradients underflow without loss scaling on CUDA; bf16 has fp32's range
        self.scaler = (torch.amp.GradScaler("cuda")
                       if cfg.precision == "fp16" and self.device.type == "cuda" else None)
        self.opt = self._optimizer()
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)  # batch order
        self.epoch = 0  # next epoch to train
        self.widths = kw.KernelWidths(cfg.kernel, softmax=cfg.yhat == "softmax")
        self.widths.x = self._initial_sigma_x()
        # Ŷ's width is first needed when I(Y;Ŷ) enters the loss or the probe: computed then.
        self._mi_y_x: float | None = None  # I(Y;X) is network-independent: computed once
        # The ||grad I(Y;Ŷ)|| probe before the next epoch: the last epoch's end-of-epoch probe
        # (same network, same width), or measured on the untrained network before epoch 0.
        self._grad_norm_start: float | None = None

    # ---- setup -------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                   weight_decay=c.weight_decay)
        return torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def _fixed_batches(self, k: int | None = None) -> list[slice]:
        """The training split in order, cut at the training batch size (the MI probes)."""
        n, b = len(self.data.train_y), self.cfg.batch_size
        cuts = [slice(i, min(i + b, n)) for i in range(0, n, b)]
        return cuts if k is None else cuts[:k]

    def forward(self, x: Tensor) -> Tensor:
        """The network on ``x`` in the configured precision; logits back in fp32 (the CE and
        the estimator's input; the estimator itself then works in float64)."""
        ctx = (torch.autocast(self.device.type, dtype=self.amp_dtype)
               if self.amp_dtype is not None else contextlib.nullcontext())
        with ctx:
            out = self.model(x)
        return out.float()  # (B, C)

    def _features(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=1) if self.cfg.yhat == "softmax" else logits

    def _initial_sigma_x(self) -> float:
        """The inputs never change, so a process computes each σ_X once (a reused Ray actor
        skips the calibration for the next trial on the same data)."""
        key = x_width_key(self.cfg)
        if key not in _SIGMA_X_CACHE:
            xs = [(self.data.train_x[s], self.data.train_y[s])
                  for s in self._fixed_batches(self.cfg.kernel.calibration_batches)]
            _SIGMA_X_CACHE[key] = self.widths.calibrate_x(xs)
        return _SIGMA_X_CACHE[key]

    @torch.no_grad()
    def _yhat_batches(self) -> list[tuple[Tensor, Tensor]]:
        self.model.eval()
        return [(self._features(self.forward(self.data.train_x[s])), self.data.train_y[s])
                for s in self._fixed_batches(self.cfg.kernel.calibration_batches)]

    def yhat_alignment_curve(self) -> kw.AlignmentCurve:
        """The alignment curve of Ŷ for the network as it is now (the paper's Fig. 1)."""
        return self.widths.curve(self._yhat_batches())

    @property
    def sigma_x(self) -> float:
        assert self.widths.x is not None
        return self.widths.x

    @property
    def sigma_yhat(self) -> float:
        """σ_Ŷ for the next epoch (before epoch 0: the untrained network's maximizer)."""
        return self.widths.start_yhat(self._yhat_batches)

    # ---- the estimator on one batch ----------------------------------------------------
    def mi(self, y: Tensor, feats: Tensor, sigma: float) -> Tensor:
        """``I(Y; feats)`` in bits on one batch, differentiable in ``feats``."""
        k, est = self.cfg.kernel, self.cfg.estimator
        # fast: integer alpha by traces of powers (no eigensolve), else the label structure's
        # eigensolves; trace / eigen force one of them; dense: the three-eigensolve reference
        method = {"fast": "auto", "trace": "trace"}.get(est, "eigen")
        if k.y == "label" and est != "dense":
            return gaussian_label_mutual_information(y, feats, sigma, self.cfg.alpha, method)
        b = gram_matrix(feats.double(), sigma)  # float64 like the fast path: same numbers
        a = (label_matrix(y, self.num_classes) if k.y == "label"
             else label_gram_matrix(y, self.num_classes, k.sigma_y))
        return mutual_information(a.to(b.dtype), b, self.cfg.alpha,
                                  method=method).to(feats.dtype)

    # ---- training ----------------------------------------------------------------------
    def train_epoch(self) -> float:
        """One pass over the shuffled training split; returns the mean batch loss."""
        f = transition(self.cfg.transition, self.epoch)
        w = 1.0 - f  # weight of I(Y;Ŷ); 0 for plain CE, so the estimator is skipped
        x, y = self.data.train_x, self.data.train_y
        n, b = len(y), self.cfg.batch_size
        perm = torch.randperm(n, generator=self.gen, device=self.device)
        self.model.train()
        total = torch.zeros((), device=self.device)
        steps = 0
        for i in range(0, n, b):
            idx = perm[i:i + b]
            logits = self.forward(x[idx])  # (B, C), fp32
            loss = f * F.cross_entropy(logits, y[idx])
            if w > 0:
                loss = loss - w * self.mi(y[idx], self._features(logits), self.sigma_yhat)
            self.opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            total += loss.detach()  # summed on the device: no per-step sync
            steps += 1
        return float(total) / steps  # note: one CPU-GPU sync per epoch

    # ---- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def _ce_acc(self, x: Tensor, y: Tensor) -> tuple[float, float, Tensor]:
        logits = torch.cat([self.forward(x[i:i + self.cfg.eval_batch_size])
                            for i in range(0, len(y), self.cfg.eval_batch_size)])
        ce = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return float(ce), float(acc), logits

    def _mean_mi(self, feats: Tensor, sigma: float) -> float:
        vals = [self.mi(self.data.train_y[s], feats[s], sigma) for s in self._fixed_batches()]
        return float(torch.stack(vals).mean())

    def _mi_grad_norm(self) -> float:
        """Mean over probe batches of ``||∇θ I(Y;Ŷ)||_2`` (eval mode, no optimizer step)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norms = []
        for s in self._fixed_batches(self.cfg.mi_grad_batches):
            feats = self._features(self.forward(self.data.train_x[s]))
            mi = self.mi(self.data.train_y[s], feats, self.sigma_yhat)
            grads = torch.autograd.grad(mi, params, allow_unused=True)
            sq = sum((g.double() ** 2).sum() for g in grads if g is not None)
            norms.append(torch.as_tensor(sq).sqrt())
        return float(torch.stack(norms).mean()) if norms else float("nan")

    def evaluate(self, train_loss: float) -> dict[str, Any]:
        d = self.data
        self.model.eval()
        train_ce, train_acc, train_logits = self._ce_acc(d.train_x, d.train_y)
        val_ce, val_acc, _ = self._ce_acc(d.val_x, d.val_y)
        test_ce, test_acc, _ = self._ce_acc(d.test_x, d.test_y)
        with torch.no_grad():
            mi_y_yhat = self._mean_mi(self._features(train_logits), self.sigma_yhat)
            if self._mi_y_x is None:
                self._mi_y_x = self._mean_mi(d.train_x, self.sigma_x)
        return {
            "epoch": self.epoch,
            "transition": transition(self.cfg.transition, self.epoch),
            "train_loss": train_loss, "train_ce": train_ce, "train_acc": train_acc,
            "val_ce": val_ce, "val_acc": val_acc, "test_ce": test_ce, "test_acc": test_acc,
            "gap": test_ce - train_ce, "val_gap": val_ce - train_ce,
            "mi_y_x": self._mi_y_x, "mi_y_yhat": mi_y_yhat,
            "dpi_margin": self._mi_y_x - mi_y_yhat,
            "mi_grad_norm": self._mi_grad_norm(),
            "sigma_x": self.sigma_x, "sigma_yhat": self.sigma_yhat,
        }

    def grad_norm_start(self) -> float:
        """The probe before the next epoch (before epoch 0: at initialization)."""
        if self._grad_norm_start is None:
            self.model.eval()
            self._grad_norm_start = self._mi_grad_norm()
        return self._grad_norm_start

    def step(self) -> dict[str, Any]:
        """Train one epoch and return its record; :class:`TrialDiverged` (one line) if the
        loss, a cross-entropy or the MI is not finite -- no such record is ever returned."""
        t0 = time.perf_counter()
        try:
            start = self.grad_norm_start()
            train_loss = self.train_epoch()
            self.widths.update_yhat(self._yhat_batches)  # the next epoch's σ_Ŷ (online s*)
            record = self.evaluate(train_loss)
        except torch.linalg.LinAlgError as exc:  # non-finite network outputs reach the kernel
            first = str(exc).splitlines()[0]
            raise TrialDiverged(f"trial diverged at epoch {self.epoch}: the eigensolver "
                                f"failed ({first})") from exc
        bad = non_finite(record)
        if bad:
            values = ", ".join(f"{k}={record[k]}" for k in bad)
            raise TrialDiverged(f"trial diverged at epoch {self.epoch}: {values}")
        record["epoch_seconds"] = time.perf_counter() - t0
        record["mi_grad_norm_start"] = start
        record["mi_grad_norm_weighted"] = (1.0 - record["transition"]) * start
        self._grad_norm_start = record["mi_grad_norm"]
        self.epoch += 1
        return record

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit (loads with ``weights_only=True``)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch, **self.widths.state_dict(),
            "grad_norm_start": self._grad_norm_start,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu")
                           else state["generator"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.epoch = int(state["epoch"])
        self.widths.load_state_dict(state)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        g = state.get("grad_norm_start")  # absent in checkpoints before it: re-measured
        self._grad_norm_start = None if g is None else float(g)


def run_trial(
    config: TrainConfig | Mapping[str, Any],
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    trainer: Trainer | None = None,
) -> list[dict[str, Any]]:
    """Train ``config`` for its epochs, calling ``report(record)`` after every epoch."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    trainer = trainer or Trainer(cfg)
    records = []
    while trainer.epoch < cfg.epochs:
        record = trainer.step()
        records.append(record)
        if report is not None:
            report(record)
    return records
