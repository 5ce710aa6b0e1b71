"""The ``mistudy`` command. Subcommands import their heavy dependencies (ray, mlflow, optuna)
only when they run, so ``mistudy train`` works on a box with torch alone."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from trainables.cli import add_train_arguments, train_command

__all__ = ["main", "build_parser"]


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or --resume) a hyperparameter study")
    p.add_argument("spec", nargs="?", help="study spec YAML (or use --preset)")
    p.add_argument("--preset", help="a shipped spec: quick, paper-mnist, paper-fashion")
    p.add_argument("--out", help="study folder (default: studies/<name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted study in --out (keeps finished trials)")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --out)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (torch threads)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share one")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")


def _add_ui_sync(sub: Any) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI (127.0.0.1) on a study's store")
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    s = sub.add_parser("sync", help="make MLflow match Tune's results (after a store outage)")
    s.add_argument("--out", required=True, help="study folder")


def _add_analysis(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("study", help="MLflow experiment name or id, or a study folder")
    common.add_argument("--tracking-uri", help="MLflow tracking URI (a study folder knows it)")
    common.add_argument("--last-k", type=int, default=3,
                        help="epochs averaged for a trial's gap (default 3)")
    common.add_argument("--acc-tolerance", type=float, default=0.02,
                        help="flag schedules losing more test accuracy than this (default 0.02)")
    r = sub.add_parser("rank", parents=[common], help="rank schedules by gap closure")
    r.add_argument("--format", choices=("table", "csv", "markdown", "json"), default="table")
    e = sub.add_parser("export", parents=[common], help="write the best configs as YAML")
    e.add_argument("--top", type=int, default=3)
    e.add_argument("--out", required=True)
    e.add_argument("--include-flagged", action="store_true",
                   help="also export schedules flagged for an accuracy drop")
    e.add_argument("--seeds", type=int, default=5, help="seeds in the exported rerun specs")
    p = sub.add_parser("report", parents=[common], help="figures and an HTML report")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=int, default=3, help="schedules drawn against the baseline")


def _figures(text: str) -> list[int]:
    if text == "all":
        return [5, 3, 4, 6, 1]
    try:
        figs = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: all, or figures from "
                                         f"1,3,4,5,6 separated by commas") from None
    bad = [f for f in figs if f not in (1, 3, 4, 5, 6)]
    if bad:
        raise argparse.ArgumentTypeError(f"figure {bad[0]}: allowed: 1, 3, 4, 5, 6 or all")
    return figs


def _add_reproduce(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="the paper's figures with our numbers, over seeds")
    p.add_argument("--figure", type=_figures, required=True, metavar="N[,N...]|all",
                   help="figures 1,3,4,5,6 (comma-separated) or all; runs are shared")
    p.add_argument("--conditions", choices=("ce", "reg"), nargs="+",
                   help="train only these conditions' runs and draw what they allow (to split "
                        "the runs over processes; a later call with all of them draws the rest)")
    p.add_argument("--dataset", choices=("mnist", "fashion_mnist"), default="mnist")
    p.add_argument("--model", choices=("shallow", "resnet18"), default="shallow")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, help="default: the paper's (50 shallow, 100 ResNet18)")
    p.add_argument("--input-size", type=int,
                   help="ResNet18 input side (paper: 224); smaller is a labelled reduced variant")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--out", default="reproduction")


def reproduce_command(args: argparse.Namespace) -> int:
    import torch

    from analysis._reproduce import NEEDS, PAPER_EPOCHS, cpu_estimate_seconds, reproduce

    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        return _err(f"--seeds={args.seeds} --epochs={args.epochs} -- allowed: integers >= 1")
    if args.input_size is not None and not 32 <= args.input_size <= 512:
        return _err(f"--input-size={args.input_size} -- allowed: 32..512")
    if args.threads is not None and args.threads < 1:
        return _err(f"--threads={args.threads} -- allowed: an integer >= 1")
    figs = args.figure
    if args.conditions:
        figs = [f for f in figs if set(NEEDS[f]) <= set(args.conditions)]
        if not figs:
            return _err(f"--conditions {' '.join(args.conditions)} draws none of figures "
                        f"{args.figure}; figure 5 needs both ce and reg")
    if args.model == "resnet18" and not torch.cuda.is_available():
        size = args.input_size or 224
        conds = len({c for f in figs for c in NEEDS[f]})
        est = cpu_estimate_seconds("resnet18", size, args.epochs or PAPER_EPOCHS["resnet18"],
                                   args.seeds, conds)
        print(f"warning: ResNet18 at {size}px on the CPU: about {est / 3600:.1f} hours; "
              f"--input-size 32 runs a reduced variant (labelled as such)", file=sys.stderr)
    from trainables import ConfigError, DataError, TrialDiverged
    from trainables.locks import FolderLocked

    try:
        results = reproduce(figs, args.dataset, args.model, args.seeds, args.epochs,
                            Path(args.out), args.input_size, threads=args.threads)
    except (ConfigError, DataError, FolderLocked, TrialDiverged) as exc:
        return _err(str(exc))
    for res in results:
        print(f"{res.png}\n{res.verdict}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mistudy",
        description="Hyperparameter studies for cross-entropy regularized with mutual "
                    "information: L = f(epoch)·CE − (1 − f(epoch))·I(Y;Ŷ).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train one config, show MI per epoch"))
    _add_run(sub)
    _add_ui_sync(sub)
    _add_analysis(sub)
    _add_reproduce(sub)
    return p


def _err(msg: str) -> int:
    for line in msg.splitlines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    t_main = time.time()
    from .runner import StudyError, run_study
    from .spec import SpecError, load_spec

    try:
        spec = None
        if not args.resume:
            if bool(args.spec) == bool(args.preset):
                return _err("give a spec file or --preset NAME (one of them)")
            spec = load_spec(args.spec, args.preset)
        out = Path(args.out or f"studies/{spec.name if spec else 'study'}")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            v = getattr(args, name)
            if v is not None and (v < 0 or (name == "cpus_per_trial" and v == 0)):
                return _err(f"--{name.replace('_', '-')}={v} -- allowed: > 0 (GPUs: >= 0)")
        grid = run_study(spec, out, resume=args.resume, address=args.address,
                         tracking_uri=args.tracking_uri, cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, num_cpus=args.num_cpus)
    except SpecError as exc:
        return _err("\n".join(exc.problems))
    except StudyError as exc:
        return _err(str(exc))
    from .runner import StudyPaths, open_study, record_timings, shutdown_ray

    _, spec = open_study(out)
    _print_summary(grid, spec, out)
    t_end = time.time()
    shutdown_ray()
    record_timings(StudyPaths(out).timings, {"main_at": t_main, "main_end_at": t_end,
                                     "ray_shutdown_seconds": time.time() - t_end})
    return 0


def _print_summary(grid: Any, spec: Any, out: Path) -> None:
    from .runner import best_trials

    obj = spec.objectives[0]
    errors = sum(1 for r in grid if r.error)
    print(f"\nstudy {spec.name!r}: {len(grid)} trials ({errors} failed) in {out}")
    print(f"best trials by {obj.metric} (mean of the last {spec.last_k} epochs, {obj.mode}):")
    for row in best_trials(grid, spec):
        tr = row["config"]["transition"]
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in tr.items())
        last = row["last"]
        print(f"  {row['trial_id']}  {params}  α={row['config']['alpha']:.3g} "
              f"batch={row['config']['batch_size']} seed={row['config']['seed']}  "
              f"{obj.metric}={row['value']:.4f}  gap={last['gap']:.4f} "
              f"test_acc={last['test_acc']:.3f}")
    print(f"open the MLflow UI:  mistudy ui --out {out}")


def ui_command(args: argparse.Namespace) -> int:
    import subprocess

    from .runner import StudyError, open_study

    try:
        meta, _ = open_study(Path(args.out))
    except StudyError as exc:
        return _err(str(exc))
    uri = meta["tracking_uri"]
    if not uri.startswith("sqlite:"):
        print(f"this study logs to a tracking server; open it in a browser: {uri}")
        return 0
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    return subprocess.call(cmd)


def sync_command(args: argparse.Namespace) -> int:
    from .runner import StudyError, sync_study

    try:
        stats = sync_study(Path(args.out))
    except StudyError as exc:
        return _err(str(exc))
    print(f"synced: {stats}")
    return 0


def analysis_command(args: argparse.Namespace) -> int:
    from analysis import (
        AnalysisError,
        analyze,
        export_configs,
        format_ranking,
        log_ranking,
        write_report,
    )

    if args.last_k < 1:
        return _err(f"--last-k={args.last_k} -- allowed: an integer >= 1")
    if getattr(args, "top", 1) < 1:
        return _err(f"--top={args.top} -- allowed: an integer >= 1")
    try:
        a = analyze(args.study, args.tracking_uri, args.last_k, args.acc_tolerance)
    except AnalysisError as exc:
        return _err(str(exc))
    for note in a.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.command == "rank":
        print(format_ranking(a.ranking, args.format))
        log_ranking(a)
    elif args.command == "export":
        for path in export_configs(a, Path(args.out), args.top, args.include_flagged,
                                   args.seeds):
            print(f"wrote {path}")
    else:
        print(f"wrote {write_report(a, Path(args.out), args.top)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": train_command, "run": run_command, "ui": ui_command,
                "sync": sync_command, "rank": analysis_command, "export": analysis_command,
                "report": analysis_command, "reproduce": reproduce_command}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
