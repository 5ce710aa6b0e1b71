"""What differs across torch thread counts (docs/performance.md §2d): one regularized trial --
the quick preset's setting (MNIST subset, shallow CNN, batch 64, the paper's schedule) for 10
epochs -- run in fresh processes with threads=1 twice and threads=2 once; per record key, the
largest absolute difference over the epochs. Usage: python docs/findings/paths/threads.py"""

from __future__ import annotations

import json
import subprocess
import sys

RUN = """
import json, sys
from trainables import TrainConfig, run_trial
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
print(json.dumps([{k: v for k, v in r.items() if k != "epoch_seconds"} for r in run_trial(cfg)]))
"""
CFG = {"dataset": "mnist", "model": "shallow", "epochs": 10, "batch_size": 64, "lr": 0.001,
       "transition": {"family": "power", "exponent": 0.5}, "alpha": 1.01, "seed": 0,
       "device": "cpu"}


def records(threads: int) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps({**CFG, "threads": threads})],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    a, b, c = records(1), records(1), records(2)
    keys = [k for k in a[0] if isinstance(a[0][k], float)]
    same = all(x[k] == y[k] for x, y in zip(a, b, strict=True) for k in keys)
    diff = {k: max(abs(x[k] - y[k]) for x, y in zip(a, c, strict=True)) for k in keys}
    print(json.dumps({"config": CFG, "threads_1_twice_bit_identical": same,
                      "threads_1_vs_2_max_abs_diff": diff}, indent=1))


if __name__ == "__main__":
    main()
