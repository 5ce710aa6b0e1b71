"""The GPU check: what a user's CUDA node does with mistudy, in one short run.

Needs torch, numpy and pyyaml only (a GPU box without ray/mlflow/optuna) and no data files:
the images are synthetic (timing does not depend on pixel values; the offline GPU machine has
no dataset). Measures, on the first CUDA device (or the CPU with ``--smoke``):

1. shallow CNN, regularized / CE epoch ratio at batch 256 and 512 (``Trainer.step``, the loop
   ``mistudy train`` runs; epochs interleaved, epoch 0 excluded: it is CE for every family);
2. ResNet18 at 224x224 (``--smoke``: 32), CE and regularized epochs, fp32 vs bf16;
3. float64 ``eigh`` at N = 256 and 512 on the GPU vs the CPU (the estimator's eigensolve);
4. k = 1, 4, 8 shallow trials sharing the device as separate processes: per-trial epoch time
   against k = 1;
5. the estimator itself, ``I(Y;Ŷ)`` forward + backward at N = 256 and 512: the eigen path
   (α = 1.01, and α = 2, 3 forced through eigensolves) against the trace path of the integer
   orders (α = 2, 3: products, no eigensolve), with the values' difference in bits.

Writes ``$OUT/gpu_check.json`` when ``OUT`` is set, else ``benchmarks/results/``. Full run:
about 5 minutes on one H200 (budget: 8). ``--smoke`` runs every part on tiny sizes (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from trainables import Splits, TrainConfig, Trainer

SCHEDULES = {"ce": {"family": "constant"}, "reg": {"family": "power", "exponent": 0.5}}


def synthetic_splits(n_train: int, n_val: int, n_test: int, seed: int = 0) -> Splits:
    """Balanced labels, random 28x28 images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        return torch.rand(n, 1, 28, 28, generator=g), y[torch.randperm(n, generator=g)]

    return Splits(*part(n_train), *part(n_val), *part(n_test), source="synthetic")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _trainer(splits: Splits, model: str, batch: int, schedule: str, precision: str,
             size: int, epochs: int, device: str, probes: int = 2) -> Trainer:
    cfg = TrainConfig.from_dict({
        "model": model, "batch_size": batch, "epochs": epochs, "device": device,
        "transition": SCHEDULES[schedule], "precision": precision, "input_size": size,
        "train_size": len(splits.train_y), "val_size": len(splits.val_y),
        "test_size": len(splits.test_y),
        "kernel": {"horizon": 1, "calibration_batches": max(1, probes)},
        "mi_grad_batches": probes, "eval_batch_size": 500})
    return Trainer(cfg, splits)


def _interleaved(trainers: dict[str, Trainer], epochs: int) -> dict[str, float]:
    """Median epoch seconds per trainer over epochs >= 1, epochs interleaved."""
    secs: dict[str, list[float]] = {k: [] for k in trainers}
    for i in range(epochs):
        for name in (list(trainers) if i % 2 == 0 else list(reversed(trainers))):
            _sync()
            rec = trainers[name].step()
            _sync()
            if i > 0 or epochs == 1:  # epoch 0 is CE for every family: left out if we can
                secs[name].append(rec["epoch_seconds"])
    return {k: statistics.median(v) for k, v in secs.items()}


def shallow_ratio(splits: Splits, batches: list[int], epochs: int, device: str) -> list[dict]:
    rows = []
    for b in batches:
        t = _interleaved({s: _trainer(splits, "shallow", b, s, "fp32", 224, epochs, device)
                          for s in SCHEDULES}, epochs)
        rows.append({"batch": b, "ce_epoch_s": t["ce"], "reg_epoch_s": t["reg"],
                     "ratio": t["reg"] / t["ce"]})
    return rows


def resnet_epochs(splits: Splits, size: int, epochs: int, device: str, batch: int = 128,
                  probes: dict[str, int] | None = None) -> list[dict]:
    """``probes``: the gradient-norm probe's batches per precision (default 2 each)."""
    rows = []
    for precision in ("fp32", "bf16"):
        n = (probes or {}).get(precision, 2)
        t = _interleaved({s: _trainer(splits, "resnet18", batch, s, precision, size, epochs,
                                      device, n) for s in SCHEDULES}, epochs)
        rows.append({"precision": precision, "input_size": size, "batch": batch,
                     "ce_epoch_s": t["ce"], "reg_epoch_s": t["reg"],
                     "ratio": t["reg"] / t["ce"]})
    return rows


def eigh_times(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for n in sizes:
        a = torch.randn(n, n, dtype=torch.float64)
        a = a @ a.T / n + torch.eye(n, dtype=torch.float64)  # SPD, like a Gram matrix
        row: dict[str, Any] = {"N": n}
        for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            m = a.to(dev)
            torch.linalg.eigh(m)  # warm-up (cuSOLVER handles, MKL threads)
            _sync()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                torch.linalg.eigh(m)
                _sync()
                times.append(time.perf_counter() - t0)
            row[f"{dev}_ms"] = 1000 * statistics.median(times)
        if "cuda_ms" in row:
            row["cpu_over_cuda"] = row["cpu_ms"] / row["cuda_ms"]
        rows.append(row)
    return rows


def _mi_once(y: torch.Tensor, x: torch.Tensor, alpha: float, method: str) -> float:
    """One forward + backward of the estimator (the value read back: a device sync)."""
    from trainables.information import gaussian_label_mutual_information

    xr = x.clone().requires_grad_(True)
    v = gaussian_label_mutual_information(y, xr, 0.5, alpha, method)
    v.backward()
    return float(v)


def trace_times(sizes: list[int], repeat: int, device: str) -> list[dict]:
    """``gaussian_label_mutual_information`` forward + backward on the device: eigen vs trace
    path per order, one row per (N, alpha)."""
    rows = []
    for n in sizes:
        gen = torch.Generator().manual_seed(n)
        x = torch.softmax(torch.randn(n, 10, generator=gen), dim=1).to(device)
        y = (torch.arange(n) % 10).to(device)
        for alpha in (1.01, 2.0, 3.0):
            row: dict[str, Any] = {"N": n, "alpha": alpha}
            values = {}
            for method in ("eigen", "auto"):
                values[method] = _mi_once(y, x, alpha, method)  # warm-up
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    _mi_once(y, x, alpha, method)
                    _sync()
                    times.append(time.perf_counter() - t0)
                row[f"{'eigen' if method == 'eigen' else 'default'}_ms"] = \
                    1000 * statistics.median(times)
            row["eigen_over_default"] = row["eigen_ms"] / row["default_ms"]
            row["abs_diff_bits"] = abs(values["eigen"] - values["auto"]) or 1e-300
            rows.append(row)
    return rows


def _worker(args: argparse.Namespace) -> None:
    """One shallow trial in its own process (the k-trials-per-device part)."""
    splits = synthetic_splits(args.n_train, 200, 200, seed=args.seed)
    tr = _trainer(splits, "shallow", 256, "reg", "fp32", 224, args.epochs, args.device)
    secs = []
    for _ in range(args.epochs):
        rec = tr.step()
        secs.append(rec["epoch_seconds"])
    print(json.dumps({"epoch_s": statistics.median(secs[1:] or secs)}), flush=True)


def shared_device(ks: list[int], epochs: int, n_train: int, device: str) -> list[dict]:
    rows, base = [], None
    for k in ks:
        procs = [subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gpu_check", "--worker", "--seed", str(i),
             "--epochs", str(epochs), "--n-train", str(n_train), "--device", device],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for i in range(k)]
        outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1])["epoch_s"]
                for p in procs]
        per_trial = statistics.mean(outs)
        base = base or per_trial
        rows.append({"k": k, "per_trial_epoch_s": per_trial, "slowdown_vs_k1": per_trial / base,
                     "throughput_vs_k1": k * base / per_trial})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed (CI)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--n-train", type=int, default=5000, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("error: no CUDA device; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    t0 = time.time()
    if args.smoke:
        torch.set_num_threads(1)
        # bf16 convolutions are emulated on most CPUs (30x slower here; a backward pass of 10
        # images at 32x32 takes ~3.5 s): the ResNet part is one batch, one epoch, and bf16
        # leaves out the probe's two extra backward passes (fp32 runs them) -- it checks that
        # the code runs, not its speed.
        splits, r_splits = synthetic_splits(600, 100, 100), synthetic_splits(10, 10, 10)
        res = {"shallow": shallow_ratio(splits, [100, 200], 2, device),
               "resnet18": resnet_epochs(r_splits, 32, 1, device, batch=10,
                                         probes={"fp32": 1, "bf16": 0}),
               "eigh": eigh_times([64, 128], 3),
               "trace": trace_times([64, 128], 3, device),
               "shared": shared_device([1, 2], 2, 300, device)}
    else:
        splits = synthetic_splits(5000, 1000, 1000)
        res = {"shallow": shallow_ratio(splits, [256, 512], 4, device),
               "resnet18": resnet_epochs(splits, 224, 3, device),
               "eigh": eigh_times([256, 512], 20),
               "trace": trace_times([256, 512], 20, device),
               "shared": shared_device([1, 4, 8], 3, 5000, device)}
    res["meta"] = {"smoke": args.smoke, "device": torch.cuda.get_device_name(0) if cuda
                   else "cpu", "torch": torch.__version__, "seconds": time.time() - t0,
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("gpu_check-smoke.json" if args.smoke else "gpu_check.json")
    path.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
