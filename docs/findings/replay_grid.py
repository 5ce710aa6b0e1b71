"""How far can a closure-aware pruning rule go on the two committed studies, and does the best
rule of one study hold on the other? ``mistudy replay`` over a grid of rule sets
(``trainables.pruning.PruneRules``: grace, rungs, quantile, accuracy and CE guards, how many
configurations must have reached a rung), each replayed on both findings bundles exactly as
``mistudy replay`` does, then:

* the rules that keep both studies' final feasible top 5 intact, and the most they save;
* leave one study out: the rule that saves most on one study with its top 5 intact, replayed on
  the other (what choosing defaults on recorded studies is worth on a new one).

    python docs/findings/replay_grid.py --out docs/findings/replay-grid.json
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from pathlib import Path
from typing import Any

import analysis._commands as commands
from analysis import get_replay_info
from trainables.pruning import DEFAULT_RULES, PruneRules

BUNDLES = {"fashion": "docs/findings/closure-fashion.tar.gz",
           "mnist": "docs/findings/closure-mnist.tar.gz"}
GRID = {
    "rungs": [tuple(range(15, 28)), tuple(range(15, 28, 2)), tuple(range(14, 28, 2)),
              tuple(range(15, 28, 3)), (15, 17, 19, 21, 23), (15, 16, 17, 18, 19, 20),
              (15, 20, 25), (10, 15, 20, 25), (12, 15, 20, 25)],
    "quantile": [0.4, 0.5, 0.6],
    "acc_drop": [0.015, 0.02, 0.025],
    "ce_rise": [None, 0.1],
    "median_min": [4, 5],
    "grace": [4, 5, 6],
}


def _replay(rules: PruneRules) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, bundle in BUNDLES.items():
        info = get_replay_info(bundle, rules)
        out[name] = {"saved": info.epochs_saved / info.epochs_total,
                     "kept": len(info.top_k_kept), "top_k": len(info.top_k)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    # each bundle is read once (the replay reads it per call)
    commands.analyze = functools.lru_cache(None)(commands.analyze)  # type: ignore[assignment]
    rows = []
    keys = list(GRID)
    for values in itertools.product(*GRID.values()):
        rules = PruneRules(**dict(zip(keys, values, strict=True)))
        rows.append({"rules": rules._asdict(), **_replay(rules)})
    default = {"rules": DEFAULT_RULES._asdict(), **_replay(DEFAULT_RULES)}
    intact = [r for r in rows if all(r[n]["kept"] == r[n]["top_k"] for n in BUNDLES)]
    both30 = [r for r in intact if all(r[n]["saved"] >= 0.30 for n in BUNDLES)]
    loo = {}
    for chosen, other in (("mnist", "fashion"), ("fashion", "mnist")):
        ok = [r for r in rows if r[chosen]["kept"] == r[chosen]["top_k"]]
        best = max(r[chosen]["saved"] for r in ok)
        tied = [r for r in ok if r[chosen]["saved"] >= best - 1e-12]
        loo[f"chosen_on_{chosen}"] = {
            "saved_there": best, "rules": [r["rules"] for r in tied],
            f"saved_on_{other}": sorted({round(r[other]["saved"], 4) for r in tied}),
            f"top5_kept_on_{other}": sorted({r[other]["kept"] for r in tied})}
    summary = {
        "rule_sets": len(rows), "default": default,
        "top5_intact_on_both": len(intact),
        "best_intact": sorted(intact, key=lambda r: -min(r[n]["saved"] for n in BUNDLES))[:10],
        "reach_30pct_on_both_with_top5_intact": len(both30),
        "leave_one_study_out": loo,
    }
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1,
                                   default=list))
    print(json.dumps({k: v for k, v in summary.items() if k != "best_intact"}, indent=1,
                     default=list)[:3000])


if __name__ == "__main__":
    main()
