"""Study efficiency: training seconds summed over trials / (wall seconds × concurrent slots),
and where the rest goes (Ray start, trial setup, checkpointing, MLflow logging, final sync)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SMALL = {  # the quick preset's shape at a third of its size, for bench-quick
    "name": "bench", "fixed": {"dataset": "fashion_mnist", "epochs": 4, "train_size": 2000,
                               "kernel": {"calibration_batches": 4, "horizon": 3},
                               "mi_grad_batches": 2},
    "search": {"families": {"power": {}, "exponential": {}}, "alpha": [1.01, 2.0],
               "batch_size": [200]},
    "trials": 3, "seeds": [0, 1], "resources": {"cpus_per_trial": 1},
}


def _trials(study: Path) -> list[list[dict[str, Any]]]:
    out = []
    for t in (study / "ray").glob("*/*/result.json"):
        out.append([json.loads(x) for x in t.read_text().splitlines() if x.strip()])
    return out


def run(preset: str | None = None) -> dict[str, Any]:
    exe = str(Path(sys.executable).with_name("mistudy"))
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "study"
        if preset:
            cmd = [exe, "run", "--preset", preset, "--out", str(out)]
        else:
            spec = Path(d) / "spec.yaml"
            spec.write_text(yaml.safe_dump(SMALL))
            cmd = [exe, "run", str(spec), "--out", str(out)]
        t0 = time.time()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.time() - t0
        timings = json.loads((out / "timings.json").read_text())
        trials = _trials(out)
    train = sum(r["epoch_seconds"] for t in trials for r in t)
    setup = sum(t[0].get("setup_seconds", 0.0) for t in trials if t)
    ckpt = sum(r.get("checkpoint_seconds", 0.0) for t in trials for r in t)
    slots = timings["slots"]
    return {
        "preset": preset or "bench (small)", "trials": len(trials), "slots": slots,
        "wall_s": wall, "train_s": train, "efficiency": train / (wall * slots),
        # the same inside Tune's fit alone: what is left once the fixed per-study costs
        # (interpreter, Ray start and stop, stores, final sync) are taken out
        "fit_s": timings["fit_seconds"],
        "fit_efficiency": train / (timings["fit_seconds"] * slots),
        "ray_start_s": timings["ray_start_seconds"], "trial_setup_s": setup,
        "checkpoint_s": ckpt, "mlflow_s": timings.get("mlflow_callback_seconds", 0.0),
        "sync_s": timings["sync_seconds"],
        "process_s": wall - timings["run_seconds"],
        # process_s split: interpreter + imports before `mistudy run` starts; from there to
        # Ray's start (spec, stores, ray/tune imports); after the study (summary); exit.
        "startup_s": timings["main_at"] - t0,
        "pre_ray_s": timings["ray_init_at"] - timings["main_at"],
        "summary_s": timings["main_end_at"] - timings["run_end_at"],
        "ray_stop_s": timings.get("ray_shutdown_seconds", 0.0),
        "exit_s": t0 + wall - timings["main_end_at"],  # Ray's stop included
    }
