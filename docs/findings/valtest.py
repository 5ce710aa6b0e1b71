"""Are validation and test exchangeable? CE baselines on many split draws.

``data_seed`` draws the balanced split (validation and test both from the t10k file, disjoint);
every trial of a study shares one draw (``data_seed: 0``) so that baselines match. Over split
draws, ``test_ce − val_ce`` of a plain cross-entropy run is what a selection on validation pays
when it is read on test: 0 on average when the splits are exchangeable. Within one draw it is
that draw's fixed offset plus model-seed noise. This trains the study's CE baseline (shallow
CNN, 30 epochs, b64, Adam 1e-3, one torch thread) for each ``--seeds`` value, either as the
model seed on split 0 (``--vary seed``) or as both split and model seed (``--vary data_seed``),
resumable (a run whose metrics.csv is complete is read, not rerun), and writes the per-run
numbers and a summary as JSON and Markdown.

    python docs/findings/valtest.py --dataset fashion_mnist --vary data_seed --seeds 1-10 \
        --runs /tmp/valtest --out docs/findings/valtest-fashion-splits
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from trainables.closure import last_k_mean
from trainables.records import read_metrics

EPOCHS, BATCH, LAST_K = 30, 64, 5  # the closure studies' settings (study/presets/closure-*.yaml)


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _run(dataset: str, seed: int, data_seed: int, folder: Path) -> list[dict[str, float]]:
    csv = folder / "metrics.csv"
    if csv.is_file() and len(read_metrics(csv)) == EPOCHS:
        return read_metrics(csv)
    sets = {"dataset": dataset, "model": "shallow", "epochs": EPOCHS, "batch_size": BATCH,
            "lr": 0.001, "threads": 1, "seed": seed, "data_seed": data_seed, "alpha": 1.01,
            "transition.family": "constant", "transition.c": 1.0}
    cmd = [sys.executable, "-m", "study.cli", "train", "--quiet", "--out", str(folder)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, check=True)
    return read_metrics(csv)


def _t_interval(xs: list[float]) -> tuple[float, float]:
    """95% Student-t interval of the mean (t quantiles for n − 1 ≤ 30 degrees of freedom)."""
    t95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
           10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 19: 2.09, 29: 2.05}
    n = len(xs)
    m, sd = statistics.fmean(xs), statistics.stdev(xs)
    t = t95.get(n - 1) or t95[max(k for k in t95 if k <= n - 1)]
    half = t * sd / math.sqrt(n)
    return m - half, m + half


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--seeds", default="1-10", help="a range, e.g. 1-10")
    ap.add_argument("--vary", choices=("seed", "data_seed"), default="data_seed",
                    help="seed: model seeds on split 0; data_seed: a new split per run")
    ap.add_argument("--runs", type=Path, required=True, help="where the runs are kept")
    ap.add_argument("--out", type=Path, required=True, help="stem of the .json / .md written")
    args = ap.parse_args()
    rows = []
    for seed in _seeds(args.seeds):
        split = seed if args.vary == "data_seed" else 0
        name = f"{args.dataset}-seed{seed}" + (f"-split{split}" if split else "")
        recs = _run(args.dataset, seed, split, args.runs / name)
        v, t = last_k_mean(recs, "val_ce", LAST_K), last_k_mean(recs, "test_ce", LAST_K)
        va, ta = last_k_mean(recs, "val_acc", LAST_K), last_k_mean(recs, "test_acc", LAST_K)
        rows.append({"seed": seed, "data_seed": split, "val_ce": v, "test_ce": t, "diff_ce": t - v,
                     "val_acc": va, "test_acc": ta, "diff_acc": ta - va})
        print(f"seed {seed}: test_ce − val_ce = {t - v:+.4f}", flush=True)
    diffs, accs = [r["diff_ce"] for r in rows], [r["diff_acc"] for r in rows]
    summary = {"dataset": args.dataset, "vary": args.vary, "epochs": EPOCHS,
               "batch_size": BATCH, "last_k": LAST_K,
               "n": len(rows), "mean_diff_ce": statistics.fmean(diffs),
               "sd_diff_ce": statistics.stdev(diffs), "ci95_diff_ce": _t_interval(diffs),
               "mean_diff_acc": statistics.fmean(accs), "ci95_diff_acc": _t_interval(accs),
               "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    lo, hi = summary["ci95_diff_ce"]
    alo, ahi = summary["ci95_diff_acc"]
    what = (f"{len(rows)} split draws (data_seed = seed = {args.seeds})"
            if args.vary == "data_seed" else f"one split (data_seed 0), model seeds {args.seeds}")
    md = [f"CE baselines, {args.dataset}, shallow CNN, {EPOCHS} epochs, b{BATCH}, {what}; "
          f"last {LAST_K} epochs:", "",
          "| seed | data_seed | val_ce | test_ce | test − val (nats) | val_acc | test_acc |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['seed']} | {r['data_seed']} | {r['val_ce']:.4f} | {r['test_ce']:.4f} | "
           f"{r['diff_ce']:+.4f} | "
           f"{r['val_acc']:.4f} | {r['test_acc']:.4f} |" for r in rows]
    md += ["", f"test_ce − val_ce: mean {summary['mean_diff_ce']:+.4f} nats, sd "
           f"{summary['sd_diff_ce']:.4f}, 95% t-interval [{lo:+.4f}, {hi:+.4f}]; "
           f"test_acc − val_acc: mean {summary['mean_diff_acc']:+.4f}, 95% [{alo:+.4f}, "
           f"{ahi:+.4f}]."]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(md[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
