"""The committed MNIST closure spec run twice with the ordered search -- on 2 CPUs and on 1 CPU
(the 1-CPU run also stopped by a signal after 5 configurations and resumed) -- compared: the
configurations Optuna was asked, in order, and every trial's per-epoch records, bit for bit.

Usage: .venv/bin/python docs/findings/paths/compare_ordered.py STUDIES_DIR
(the folders ordered-2cpu and ordered-1cpu that run_all.sh made); writes ordered-1v2.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
KEYS = ("train_ce", "val_ce", "test_ce", "val_acc", "test_acc", "mi_y_yhat", "mi_y_x")


def asked(out: Path) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="mnist-ordered",
                              storage=f"sqlite:///{out / 'optuna.db'}")
    return [{"params": t.params, "state": t.state.name,
             "value": None if t.values is None else [float(v).hex() for v in t.values]}
            for t in study.trials]


def records(out: Path) -> dict[str, dict[int, list[str]]]:
    """(configuration or baseline)/batch/seed -> epoch -> the KEYS' values as hex floats (an
    epoch reported twice across a resume is kept once: it must be identical)."""
    found: dict[str, dict[int, list[str]]] = {}
    for t in (out / "ray" / "mnist-ordered").glob("*/result.json"):
        rows = [json.loads(ln) for ln in t.read_text().splitlines() if ln.strip()]
        if not rows:
            continue
        c = rows[-1]["config"]
        key = "baseline" if c.get("mistudy_baseline") else str(c["optuna_trial"])
        per = found.setdefault(f"{key}/b{c['batch_size']}/s{c['seed']}", {})
        for r in rows:
            vals = [float(r[k]).hex() for k in KEYS]
            assert per.setdefault(int(r["epoch"]), vals) == vals, (key, r["epoch"])
    return found


def main(work: Path) -> None:
    two, one = work / "ordered-2cpu", work / "ordered-1cpu"
    a2, a1 = asked(two), asked(one)
    r2, r1 = records(two), records(one)
    same_epochs = sum(1 for k in r2 for e in r2[k] if r1.get(k, {}).get(e) == r2[k][e])
    summary = {
        "configurations": [len(a2), len(a1)],
        "same_configurations_in_order": [x["params"] for x in a2] == [x["params"] for x in a1],
        "same_told_values_bitwise": [x["value"] for x in a2] == [x["value"] for x in a1],
        "trials": [len(r2), len(r1)],
        "trial_epochs": [sum(map(len, r2.values())), sum(map(len, r1.values()))],
        "trial_epochs_bit_identical": same_epochs,
        "same_final_test_ce_bitwise": all(
            r1.get(k, {}).get(max(r2[k]), [None] * 3)[2] == r2[k][max(r2[k])][2] for k in r2),
        "wall_s": {name: int((work / f"{name}.done").read_text()) if
                   (work / f"{name}.done").is_file() else None
                   for name in ("ordered-2cpu", "ordered-1cpu")},
    }
    path = REPO / "docs/findings/paths/ordered-1v2.json"
    path.write_text(json.dumps({"summary": summary, "asked_2cpus": a2}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
