"""mistudy's benchmark suite. `make bench` (full) or `make bench-quick` (< 3 minutes).

Each benchmark writes ``benchmarks/results/<name>.json`` (figures, machine, versions, date) and
prints a table. Ratios are measured side by side in one process, on a quiet machine.

    python -m benchmarks.run --quick | --full [--only estimator,epoch,data,study]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from . import _common


def _estimator(full: bool) -> dict[str, Any]:
    from . import bench_estimator

    sizes = (128, 256, 512, 1024) if full else (128, 256, 512)
    rows = [r for alpha in (1.01, 2.0, 3.0)  # eigen path; trace path at the integer orders
            for r in bench_estimator.run(sizes, repeat=7 if full else 3, alpha=alpha)]
    print(_common.table(rows, ["N", "alpha", "reference_ms", "fast_ms", "fast_eigen_ms",
                               "label_given_gram_ms", "eigh_ms", "speedup", "eigen_over_fast",
                               "fast_abs_diff_bits", "fast_grad_rel_diff"]))
    return {"rows": rows, "goal": "fast >= 5x reference; |ΔI| <= 1e-6 bits; grad rel <= 1e-6"}


def _epoch(full: bool) -> dict[str, Any]:
    from . import bench_epoch

    rows = bench_epoch.run((64, 256, 512), epochs=9 if full else 3,
                           orders=("interleaved", "sequential") if full else ("interleaved",))
    print(_common.table(rows, ["batch", "alpha", "path", "order", "ce_train_s", "reg_train_s",
                               "ratio_train", "ce_epoch_s", "reg_epoch_s", "ratio_epoch",
                               "ratio_all_mean", "ce_widths_s"]))
    return {"rows": rows, "goal": "ratio <= 1.2 at batch 256, <= 1.4 at 512; at alpha 2 or 3 "
                                  "(trace path) training-pass ratio <= 1.15 at batch 256",
            "path": "Trainer.step (the loop mistudy train runs)"}


def _data(full: bool) -> dict[str, Any]:
    from . import bench_data

    rows = bench_data.run(epochs=5 if full else 2)
    print(_common.table(rows, ["path", "images_per_s"]))
    return {"rows": rows}


def _study(full: bool) -> dict[str, Any]:
    from . import bench_study

    res = bench_study.run(preset="quick" if full else None)
    print(_common.table([res], [k for k in res if not isinstance(res[k], dict)]))
    return res


def _load(full: bool) -> dict[str, Any]:
    from . import bench_load

    res = bench_load.run(200 if full else 50, 100)
    print(_common.table([res], list(res)))
    return res


def _tracking(full: bool) -> dict[str, Any]:
    from . import bench_tracking

    rows = bench_tracking.run(1000 if full else 200, 20)
    print(_common.table(rows, list(rows[0])))
    return {"rows": rows, "goal": "epochs_per_s >= 500 (SQLite and server); finish_ms <= 50; "
                                  "rank_cli_s (mistudy rank end to end) <= 5 "
                                  "at 1,000 trials x 20 epochs"}


def _start(full: bool) -> dict[str, Any]:
    from . import bench_start

    rows = bench_start.run(repeat=3 if full else 1)
    print(_common.table(rows, list(dict.fromkeys(k for r in rows for k in r))))
    return {"rows": rows, "unit": "CPU-seconds over every process a command starts"}


BENCHES = {"estimator": _estimator, "epoch": _epoch, "data": _data, "study": _study,
           "load": _load, "tracking": _tracking, "start": _start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name in args.only.split(","):
        if name not in BENCHES:
            print(f"error: unknown benchmark {name!r}; allowed: {sorted(BENCHES)}",
                  file=sys.stderr)
            return 2
        print(f"\n== {name} ({'full' if args.full else 'quick'}) ==")
        payload = BENCHES[name](args.full)
        path = _common.write(f"{name}{'' if args.full else '-quick'}", payload)
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
