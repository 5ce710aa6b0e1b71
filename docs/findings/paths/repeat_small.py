"""The ordered search repeats (issue 34's done-when, on the issue's small spec): one spec and
sampler seed -- 16 configurations x 2 seeds, 2 epochs, the closure objective under both guards
(the searcher waits for the baselines, then asks each configuration from 0..k-2) -- run on 2
CPUs, on 1 CPU, and on 2 CPUs with the driver SIGKILLed after its 12th result and resumed.
Compared: the configurations Optuna asked, in order, and every (configuration, seed)'s final
test CE. Writes docs/findings/paths/repeat-small.json.

Usage: python docs/findings/paths/repeat_small.py WORKDIR
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent / "mistudy"
SPEC = {
    "name": "small", "sampler_seed": 3,
    "fixed": {"dataset": "mnist", "model": "shallow", "epochs": 2, "lr": 0.001, "threads": 1},
    "search": {"families": {"power": {}, "cosine": {}, "step": {}, "linear": {}},
               "alpha": [1.01, 2.0], "batch_size": [64, 128]},
    "trials": 16, "seeds": [0, 1],
    "objective": {"metric": "val_gap_reduction", "mode": "max", "last_k": 1,
                  "max_acc_drop": 0.01, "max_ce_rise": 0.02},
    "stopper": {"enabled": False}, "resources": {"cpus_per_trial": 1},
}


def run(out: Path, cpus: int, kill_after: int | None = None) -> float:
    spec = out.parent / f"{out.name}.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    t0 = time.time()
    cmd = [str(BIN), "run", str(spec), "--out", str(out), "--quiet", "--num-cpus", str(cpus)]
    if kill_after is None:
        subprocess.run(cmd, check=True, capture_output=True)
        return time.time() - t0
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while _results(out) < kill_after:
        assert proc.poll() is None, "the study ended before the kill"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    subprocess.run([str(BIN), "run", "--resume", "--out", str(out), "--quiet", "--num-cpus",
                    str(cpus)], check=True, capture_output=True)
    return time.time() - t0


def _results(out: Path) -> int:
    exp = out / "ray" / "small"
    return sum(1 for t in exp.glob("*/result.json")
               if len(t.read_text().splitlines()) >= 2) if exp.is_dir() else 0


def asked(out: Path) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{out / 'optuna.db'}")
    return [t.params for t in study.trials]


def final_test_ce(out: Path) -> dict[str, str]:
    found = {}
    for exp in (out / "ray").iterdir():
        for t in exp.glob("*/result.json"):
            rows = [json.loads(ln) for ln in t.read_text().splitlines() if ln.strip()]
            c = rows[-1]["config"]
            key = "baseline" if c.get("mistudy_baseline") else str(c["optuna_trial"])
            found[f"{key}/b{c['batch_size']}/s{c['seed']}"] = float(rows[-1]["test_ce"]).hex()
    return found


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    runs = {"2 cpus": (2, None), "1 cpu": (1, None), "2 cpus, SIGKILL after 12, resumed": (2, 12)}
    out = {}
    for name, (cpus, kill) in runs.items():
        folder = work / (name.split(",")[0].replace(" ", "") + ("-killed" if kill else ""))
        wall = run(folder, cpus, kill)
        out[name] = {"wall_s": wall, "asked": asked(folder), "test_ce": final_test_ce(folder)}
    ref = out["2 cpus"]
    summary = {name: {"wall_s": round(r["wall_s"], 1),
                      "same_configurations_in_order": r["asked"] == ref["asked"],
                      "configurations": len(r["asked"]),
                      "same_final_test_ce_bitwise": r["test_ce"] == ref["test_ce"],
                      "trials_compared": len(r["test_ce"])}
               for name, r in out.items()}
    result = {"spec": SPEC, "summary": summary, "asked_2cpus": ref["asked"]}
    path = REPO / "docs/findings/paths/repeat-small.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
