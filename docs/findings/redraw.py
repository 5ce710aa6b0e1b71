"""The confirmation again, on fresh seeds **and fresh split draws**: each committed study's
confirmed schedules and their matched CE baselines, rerun with every fresh model seed paired
with a split draw (``data_seed``) the study never used -- what ``mistudy confirm`` now does by
default (``--data-seeds``), for the two findings studies whose folders live elsewhere (a bundle
holds the plan and the records, not Tune's experiment).

The plan is the bundle's own ``confirm.json`` (the same schedules, the same fixed settings);
the seeds and draws are the ones ``mistudy confirm`` would pick: seeds after every seed the
study used (search and confirmation), draws after the study's own. Each run is ``mistudy train``
(one torch thread), resumable: a run whose ``metrics.csv`` is complete is read, not rerun. The
numbers are ``trainables.closure.compare`` against the matched baseline (same seed and draw,
last 5 epochs) and ``analysis.get_confirm_info``'s table, so they read as ``confirm.md`` does.

    python docs/findings/redraw.py docs/findings/closure-mnist.tar.gz --runs /tmp/redraw \\
        --out docs/findings/closure-mnist-redraw
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import analyze, format_confirm, read_bundle
from analysis._confirm import get_confirm_info
from analysis._rank import match_baselines, trial_table
from trainables.records import BASELINE_KEY, read_metrics, schedule_text


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _run(config: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    csv = folder / "metrics.csv"
    if csv.is_file() and len(read_metrics(csv)) == int(config["epochs"]):
        return read_metrics(csv)
    cmd = [sys.executable, "-m", "study.cli", "train", "--quiet", "--out", str(folder)]
    for k, v in _flat({k: v for k, v in config.items() if not k.startswith("mistudy_")}).items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, check=True)
    return read_metrics(csv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--runs", type=Path, required=True, help="where the runs are kept")
    ap.add_argument("--out", type=Path, required=True, help="stem of the .json / .md written")
    ap.add_argument("--top", type=int, help="confirm only the first N of the plan")
    args = ap.parse_args()
    b = read_bundle(args.bundle)
    plan = b.confirm
    used = {int(s) for s in b.data.runs["p.seed"]}
    n = len(plan["seeds"])
    seeds = list(range(max(used) + 1, max(used) + 1 + n))
    draw0 = int(b.data.runs["p.data_seed"].max()) if "p.data_seed" in b.data.runs else 0
    draws = list(range(draw0 + 1, draw0 + 1 + n))
    fixed = {k: v for k, v in plan["configs"][0].items()
             if k not in ("transition", "alpha", "batch_size", "seed", BASELINE_KEY,
                          "mistudy_phase")}
    schedules = plan["schedules"][: args.top or None]
    runs, history = [], []
    jobs = [({**fixed, "transition": {"family": "constant", "c": 1.0}, "alpha": 1.01,
              "batch_size": bs, BASELINE_KEY: True}) for bs in
            sorted({s["batch_size"] for s in schedules})]
    jobs += [{**fixed, "transition": s["transition"], "alpha": s["alpha"],
              "batch_size": s["batch_size"]} for s in schedules]
    for job in jobs:
        for seed, draw in zip(seeds, draws, strict=True):
            cfg = {**job, "seed": seed, "data_seed": draw}
            label = schedule_text(cfg)
            run_id = f"{label} s{seed} d{draw}".replace(" ", "_").replace("=", "")
            recs = _run(cfg, args.runs / Path(args.bundle).name.split(".")[0] / run_id)
            print(f"{run_id}: {len(recs)} epochs", flush=True)
            runs.append({"run_id": run_id, "trial_id": run_id, "status": "FINISHED",
                         "baseline": bool(cfg.get(BASELINE_KEY)), "schedule": label,
                         "phase": "confirm", "config": cfg,
                         **{f"p.{k}": v for k, v in _flat(cfg).items()}})
            history += [{"run_id": run_id, **r} for r in recs]
    trials, _ = trial_table(pd.DataFrame(runs), pd.DataFrame(history), 5)
    matched = match_baselines(trials, pd.DataFrame(history), 5)
    search = analyze(args.bundle, phase="search").ranking
    info = get_confirm_info(search, matched, [s["schedule"] for s in schedules],
                            plan["metric"], seeds, float(plan.get("max_acc_drop") or 0.01),
                            data_seeds=draws)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = format_confirm(info)
    args.out.with_suffix(".md").write_text("```\n" + text + "\n```\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"bundle": args.bundle, "seeds": seeds, "data_seeds": draws,
         "table": json.loads(info.table.to_json(orient="records")),
         "runs": [{**{k: r[k] for k in ("run_id", "baseline", "schedule", "config")},
                   "records": [{k: v for k, v in h.items() if k != "run_id"}
                               for h in history if h["run_id"] == r["run_id"]]}
                  for r in runs]}, separators=(",", ":")), "utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
