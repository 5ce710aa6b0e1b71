"""The ``mistudy`` command. Subcommands import their heavy dependencies (ray, mlflow, optuna)
only when they run, so ``mistudy train`` works on a box with torch alone."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from trainables.cli import add_train_arguments, train_command
from trainables.closure import last_k_problem
from trainables.records import DEFAULT_LAST_K
from trainables.studyfolder import StudyPaths

__all__ = ["main", "build_parser"]


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or --resume) a hyperparameter study")
    p.add_argument("spec", nargs="?", help="study spec YAML (or use --preset)")
    p.add_argument("--preset", help="a shipped spec: quick, paper-mnist, paper-fashion")
    p.add_argument("--out", help="study folder (default: studies/<name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in --out (keeps finished trials)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="with --resume: grow the study to N sampled configurations (the "
                        "sampler continues from its history; baselines are not rerun)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
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
    common.add_argument("study", help="a study folder, a study bundle file (mistudy export "
                                      "--bundle), or an MLflow experiment name or id")
    common.add_argument("--tracking-uri", help="MLflow tracking URI (a study folder knows it)")
    common.add_argument("--last-k", type=int,
                        help="epochs averaged for a trial's gap (default: the study's own, "
                             f"else {DEFAULT_LAST_K})")
    common.add_argument("--acc-tolerance", type=float, default=0.02,
                        help="flag schedules losing more test accuracy than this (default 0.02)")
    r = sub.add_parser("rank", parents=[common], help="rank schedules by gap closure")
    r.add_argument("--format", choices=("table", "wide", "csv", "markdown", "json"),
                   default="table", help="table: 120 columns, the selection first; wide: "
                                         "every column; csv, markdown, json: every column")
    r.add_argument("--wide", action="store_const", const="wide", dest="format",
                   help="same as --format wide")
    r.add_argument("--importance", action="store_true",
                   help="also: which hyperparameters drive validation closure (fANOVA and "
                        "PED-ANOVA on the stored Optuna study)")
    r.add_argument("--log", action="store_true",
                   help="also write the ranking to the study's MLflow parent run (rank only "
                        "reads unless asked)")
    e = sub.add_parser("export", parents=[common],
                       help="write the best configs as YAML, or the study as a bundle")
    e.add_argument("--top", type=int, default=3)
    e.add_argument("--out", help="folder for the configs (new or empty)")
    e.add_argument("--bundle", metavar="FILE",
                   help="instead: write the whole study (spec, every run's per-epoch records, "
                        "the Optuna trials, the confirmation plan) to one portable file that "
                        "rank, report and confirm accept")
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


def _add_confirm(sub: Any) -> None:
    p = sub.add_parser("confirm", help="rerun the top schedules and their baselines on fresh "
                                       "seeds (a new phase of the study; rerun to resume)")
    p.add_argument("study", help="study folder")
    p.add_argument("--top", type=int, help="schedules to confirm (default 3)")
    p.add_argument("--seeds", type=int, help="fresh seeds per schedule (default 3)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--data-seeds", type=_int_list, metavar="D,D,...",
                       help="the split draw paired with each fresh seed (default: the next "
                            "draws after the study's own)")
    split.add_argument("--same-split", action="store_true",
                       help="keep the study's split draw (vary the model seed only)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} -- allowed: integers >= 0 separated by "
                                         f"commas") from None
    if any(v < 0 for v in vals) or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"{text!r} -- allowed: distinct integers >= 0")
    return vals


def confirm_command(args: argparse.Namespace) -> int:
    from ._progress import StudyProgress
    from ._ray import shutdown_ray
    from .runner import run_confirm

    for name in ("top", "seeds", "num_cpus"):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= 1000:
            return _err(f"--{name.replace('_', '-')}={v} -- allowed: an integer in [1, 1000]")
    out = Path(args.study)
    progress = []
    if not args.quiet:
        from ._folder import open_study

        _, spec = open_study(out)  # the total is set from the plan (fewer feasible: fewer)
        progress = [StudyProgress(total=0, epochs=int(spec.fixed.get("epochs", 10)))]
    try:
        info = run_confirm(out, args.top, args.seeds, args.num_cpus, progress,
                           args.data_seeds, args.same_split)
    finally:
        shutdown_ray()
    from analysis import format_confirm

    print()
    print(format_confirm(info))
    print(f"written: {out / 'confirm.md'}")
    return 0


def _add_findings(sub: Any) -> None:
    p = sub.add_parser("findings", help="regenerate docs/findings.md's tables and figures "
                                        "from study bundles")
    p.add_argument("bundles", nargs="+", help="study bundle files (mistudy export --bundle)")
    p.add_argument("--out", required=True, help="folder for the tables and PNG figures")
    p.add_argument("--update", metavar="PAGE",
                   help="also replace each study's generated block in this markdown page")


def findings_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, is_bundle, update_page, write_findings

    bad = [b for b in args.bundles if not is_bundle(b)]
    if bad:
        return _err(f"{bad[0]!r} is no study bundle; make one with mistudy export STUDY "
                    f"--bundle FILE")
    try:
        texts = write_findings(args.bundles, Path(args.out))
    except AnalysisError as exc:
        return _err(str(exc))
    for name in texts:
        print(f"wrote {Path(args.out) / (name + '-tables.md')} and its figures")
    if args.update:
        done = update_page(Path(args.update), texts)
        print(f"updated {args.update}: {done or 'no <!-- tables:NAME --> block found'}")
    return 0


def _add_replay(sub: Any) -> None:
    from trainables.pruning import DEFAULT_RULES as d

    p = sub.add_parser("replay", help="run the closure-aware pruner over a recorded study as "
                                      "if live: epochs saved, top schedules kept")
    p.add_argument("study", help="a study bundle or folder")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--top", type=int, default=5, help="the final feasible top K to keep")
    p.add_argument("--grace", type=int, default=d.grace, help=f"default {d.grace}")
    p.add_argument("--window", type=int, default=d.window, help=f"default {d.window}")
    p.add_argument("--acc-drop", type=float, default=d.acc_drop,
                   help=f"accuracy guard, a fraction (default {d.acc_drop}; -1: off)")
    p.add_argument("--ce-rise", type=float, default=-1,
                   help="CE guard in nats (default: off)")
    p.add_argument("--rungs", type=_int_list, default=list(d.rungs), metavar="E,E,...",
                   help=f"the median rule's epochs (default {','.join(map(str, d.rungs))})")
    p.add_argument("--quantile", type=float, default=d.quantile,
                   help=f"prune below this quantile (default {d.quantile})")
    p.add_argument("--median-min", type=int, default=d.median_min,
                   help=f"configurations needed before a rung judges (default {d.median_min})")


def replay_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, format_replay, get_replay_info
    from trainables.pruning import PruneRules

    if not (0 < args.quantile < 1) or args.grace < 1 or args.window < 1 or args.top < 1:
        return _err(f"--quantile={args.quantile} --grace={args.grace} --window={args.window} "
                    f"--top={args.top} -- allowed: a quantile in (0, 1), integers >= 1")
    rules = PruneRules(grace=args.grace, window=args.window,
                       acc_drop=None if args.acc_drop < 0 else args.acc_drop,
                       ce_rise=None if args.ce_rise < 0 else args.ce_rise,
                       rungs=tuple(args.rungs), median_min=args.median_min,
                       quantile=args.quantile)
    try:
        info = get_replay_info(args.study, rules, args.top)
    except AnalysisError as exc:
        return _err(str(exc))
    print(format_replay(info, args.format))
    return 0


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

    from ._reproduce import NEEDS, PAPER_EPOCHS, cpu_estimate_seconds, reproduce

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
    _add_confirm(sub)
    _add_findings(sub)
    _add_replay(sub)
    _add_reproduce(sub)
    return p


def _err(msg: str) -> int:
    for line in msg.splitlines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    t_main = time.time()
    from ._folder import record_timings
    from ._progress import StudyProgress
    from ._ray import shutdown_ray
    from .runner import run_study
    from .spec import load_spec, value_problem

    spec = None
    if not args.resume:
        if bool(args.spec) == bool(args.preset):
            return _err("give a spec file or --preset NAME (one of them)")
        spec = load_spec(args.spec, args.preset)
    elif args.spec or args.preset:
        spec = load_spec(args.spec, args.preset)  # must match the stored one (checked)
    out = Path(args.out or f"studies/{spec.name if spec else 'study'}")
    for name in ("cpus_per_trial", "gpus_per_trial", "trials"):  # the spec's own rules
        v = getattr(args, name)
        allowed = None if v is None else value_problem(name, v)
        if allowed:
            return _err(f"--{name.replace('_', '-')}={v} -- allowed: {allowed}")
    if args.num_cpus is not None and args.num_cpus < 1:
        return _err(f"--num-cpus={args.num_cpus} -- allowed: an integer >= 1")
    progress = [] if args.quiet else [_progress_for(spec, out, args.trials, StudyProgress)]
    try:
        trials = run_study(spec, out, resume=args.resume, trials=args.trials,
                           address=args.address, tracking_uri=args.tracking_uri,
                           cpus_per_trial=args.cpus_per_trial,
                           gpus_per_trial=args.gpus_per_trial, num_cpus=args.num_cpus,
                           callbacks=[p for p in progress if p is not None])
    finally:
        t_end = time.time()
        shutdown_ray()
    _print_summary(trials, out)
    if StudyPaths(out).is_study():
        record_timings(StudyPaths(out).timings, {"main_at": t_main, "main_end_at": t_end,
                                                 "ray_shutdown_seconds": time.time() - t_end})
    return 0


def _progress_for(spec: Any, out: Path, trials: int | None, cls: Any) -> Any:
    """The progress display for this run's trial count (a resumed study: its stored spec)."""
    from ._folder import StudyError, open_study

    if spec is None:
        try:
            _, spec = open_study(out)
        except StudyError:
            return None  # run_study says why, in one line
    n = spec.num_trials  # a new or interrupted study: all of its trials
    if trials is not None and StudyPaths(out).is_study():
        n = max(0, trials - spec.trials) * len(spec.seeds)  # growing: the new ones
    return cls(total=n, epochs=int(spec.fixed.get("epochs", 10)))


def _print_summary(trials: list[dict[str, Any]], out: Path) -> None:
    from ._folder import open_study
    from .runner import best_trials

    meta, spec = open_study(out)
    obj = spec.objectives[0]
    errors = sum(1 for t in trials if t["error"])
    print(f"\nstudy {spec.name!r}: {len(trials)} trials ({errors} failed) in {out}")
    guards = " under the guards" if spec.guards.active else ""
    # a closure objective: the ranking says it (mistudy rank's columns); any other objective:
    # what Optuna was told, then the ranking by closure beside it
    if not (obj.relative and _print_ranking(out, spec.last_k, len(spec.seeds), guards)):
        print(f"best configurations by {obj.metric} ({obj.mode}; selected on validation"
              f"{guards}; mean over {len(spec.seeds)} seed(s) of the last {spec.last_k} "
              f"epochs; test only read, in mistudy rank):")
        for row in best_trials(out):
            flag = "" if row["feasible"] else "  [infeasible: guard broken]"
            print(f"  #{row['number']:<3} {_params_text(row['params'])}  "
                  f"{obj.metric}={row['value']:.4f}{flag}")
        if not obj.relative:
            _print_ranking(out, spec.last_k, len(spec.seeds), guards)
    uri = meta["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        from ._folder import redact
        from ._ui import runs_link

        print(f"MLflow UI: {runs_link(redact(uri), _experiment_id(meta), shared=True)}")
    else:
        print(f"MLflow UI:  mistudy ui --out {out}")


def _print_ranking(out: Path, last_k: int, seeds: int, guards: str) -> bool:
    """The ranking as ``mistudy rank`` prints it (its 120 columns, its range-edge warnings);
    False when nothing can be ranked yet (no baseline, no finished trial: rank says why)."""
    from analysis import AnalysisError, analyze, format_edges, format_ranking

    try:
        a = analyze(str(out))
    except AnalysisError:
        return False
    print(f"ranking by {a.selection.metric} (selected on validation{guards}; mean over {seeds} "
          f"seed(s) of the last {last_k} epochs; test only read):")
    print(format_ranking(a.ranking, "table", a.selection.metric))
    for line in format_edges(a.edges):
        print(f"warning: {line}")
    return True


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else
                    f"{k.split('.')[-1]}={v}" for k, v in params.items())


def _experiment_id(meta: dict[str, Any]) -> str | None:
    """The study's experiment id, or None when the store cannot be asked (the link then opens
    the experiment list)."""
    import os

    from mlflow.tracking import MlflowClient

    from trainables.studyfolder import credentials_to_env as _credentials_to_env

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        client = MlflowClient(_credentials_to_env(meta["tracking_uri"]))
        exp = client.get_experiment_by_name(meta["experiment"])
    except Exception:
        return None
    return str(exp.experiment_id) if exp is not None else None


def ui_command(args: argparse.Namespace) -> int:
    from ._folder import open_study, redact
    from ._ui import port_free, runs_link, serve

    meta, _ = open_study(Path(args.out))
    uri = meta["tracking_uri"]
    if not uri.startswith("sqlite:"):
        print(f"this study logs to a tracking server; open: "
              f"{runs_link(redact(uri), _experiment_id(meta), _share_view(args.out, meta))}")
        return 0
    if not 1 <= args.port <= 65535:
        return _err(f"--port={args.port} -- allowed: 1..65535")
    problem = _sqlite_problem(uri)
    if problem:
        return _err(problem)
    if not port_free(args.host, args.port):
        return _err(f"port {args.port} on {args.host} is in use; choose another with --port")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} serves the study's store (read and write, no "
              f"login) to every machine that can reach this one", file=sys.stderr)
    shared = _share_view(args.out, meta)
    return serve(uri, meta.get("artifact_location"), args.host, args.port,
                 _experiment_id(meta), Path(args.out) / "mlflow-ui.log", shared)


def _share_view(out: str, meta: dict[str, Any]) -> bool:
    """Whether the study's experiment holds the view the link opens (every study's end and
    ``mistudy sync`` store it; made here from the ranking when missing). False when there is
    nothing to rank yet or the store refuses the tag: the link then opens the run list."""
    from analysis import AnalysisError, analyze

    from ._tracking import Tracker
    from ._ui import SHARE_TAG, share_view

    try:
        tracker = Tracker(meta["tracking_uri"], meta["experiment"], meta["study_id"])
        exp = tracker.client.get_experiment_by_name(meta["experiment"])
        if exp is not None and SHARE_TAG in exp.tags:
            return True
        a = analyze(out)
        share_view(tracker, a.ranking, a.trials)
    except (AnalysisError, OSError):
        return False
    except Exception as exc:  # the server may refuse the write: the plain link still works
        print(f"note: the charted view could not be stored ({type(exc).__name__}); the "
              f"link opens the run list", file=sys.stderr)
        return False
    return True


def _sqlite_problem(uri: str) -> str | None:
    """A missing or damaged store is said, never silently replaced by an empty one."""
    from trainables.studyfolder import sqlite_path

    path = sqlite_path(uri) or Path(uri)
    if not path.is_file():
        return f"the study's MLflow store {path} is missing; the runs are under ray/: " \
               f"'mistudy sync --out FOLDER' rebuilds the store from them"
    with open(path, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return f"the study's MLflow store {path} is damaged (not an SQLite database); " \
               f"move it aside and run 'mistudy sync --out FOLDER' to rebuild it"
    return None


def sync_command(args: argparse.Namespace) -> int:
    from .runner import sync_study

    stats = sync_study(Path(args.out))
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

    if args.last_k is not None and (allowed := last_k_problem(args.last_k)):
        return _err(f"--last-k={args.last_k} -- allowed: {allowed}")
    if not 0 <= args.acc_tolerance <= 1:  # NaN fails this too
        return _err(f"--acc-tolerance={args.acc_tolerance} -- allowed: a number in [0, 1]")
    if args.command == "export":
        problem = _export_target_problem(args)
        if problem:
            return _err(problem)
        if args.bundle:
            return _bundle_command(args)
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        return _err(f"--out {out!r} is a file; give a folder")
    if getattr(args, "top", 1) < 1:
        return _err(f"--top={args.top} -- allowed: an integer >= 1")
    try:
        a = analyze(args.study, args.tracking_uri, args.last_k, args.acc_tolerance)
    except AnalysisError as exc:
        return _err(str(exc))
    for note in a.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.command == "rank":
        print(format_ranking(a.ranking, args.format, a.selection.metric))
        from analysis import format_edges

        for line in format_edges(a.edges):  # beside the table; never inside csv/json
            print(f"warning: {line}", file=sys.stderr if args.format in ("csv", "json")
                  else sys.stdout)
        if args.importance:
            print()
            print(_importance_text(args.study, args.format))
        if args.log and not log_ranking(a):
            print("note: no MLflow parent run to log to (a bundle, or an experiment without "
                  "one)", file=sys.stderr)
    elif args.command == "export":
        from analysis import confirmation

        for path in export_configs(a, Path(args.out), args.top, args.include_flagged,
                                   args.seeds, confirmation(args.study, a)):
            print(f"wrote {path}")
    else:
        from analysis import confirmation

        path = write_report(a, Path(args.out), args.top, _importance_info(args.study),
                            confirmation(args.study, a))
        print(f"wrote {path}")
    return 0


def _export_target_problem(args: argparse.Namespace) -> str | None:
    """``export`` writes a bundle file or a folder of configs, never into another export's
    leftovers or a folder of other files."""
    import re

    if bool(args.bundle) == bool(args.out):
        return "export: give --out FOLDER (configs) or --bundle FILE (the whole study)"
    if args.bundle:
        b = Path(args.bundle)
        return f"--bundle {b} is a folder; give a file name" if b.is_dir() else None
    out = Path(args.out)
    if out.is_dir():
        others = [p.name for p in out.iterdir()
                  if not re.fullmatch(r"\d\d-.+\.yaml|ranking\.csv", p.name)]
        if others:
            return (f"--out {out} holds files that no export wrote ({others[:3]}); "
                    f"give a new or empty folder")
    return None


def _bundle_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, write_bundle

    folder = Path(args.study)
    if not StudyPaths(folder).is_study():
        return _err(f"{args.study!r} is no study folder (a bundle is made from one)")
    try:
        path = write_bundle(folder, Path(args.bundle))
    except AnalysisError as exc:
        return _err(str(exc))
    except OSError as exc:
        return _err(f"cannot write {args.bundle}: {exc.strerror or exc}")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): mistudy rank {path}")
    return 0


def _importance_info(study: str) -> list[Any]:
    """Importance for the study's selection metric and for ``val_closure`` (empty where the
    study has no stored Optuna study: an MLflow experiment name)."""
    from analysis import AnalysisError, get_importance_info, optuna_trials, study_settings

    try:
        trials = optuna_trials(study)
    except AnalysisError:
        return []
    targets = dict.fromkeys([study_settings(study).get("select", "val_closure"), "val_closure"])
    return [get_importance_info(trials, t) for t in targets]


def _importance_text(study: str, fmt: str) -> str:
    from analysis import format_importance

    infos = _importance_info(study)
    if not infos:
        return "importance: needs a study folder or bundle (it reads the stored Optuna study)"
    style = "markdown" if fmt == "markdown" else "csv" if fmt == "csv" else "table"
    return "\n\n".join(format_importance(i, style) for i in infos)


def _known_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: one line, exit 2 (anything else is a bug and
    keeps its traceback)."""
    from trainables.config import ConfigError
    from trainables.data import DataError
    from trainables.locks import FolderLocked
    from trainables.loop import TrialDiverged
    from trainables.records import UnsafeTarget

    from ._folder import StudyError
    from .spec import SpecError

    return (ConfigError, DataError, FolderLocked, TrialDiverged, StudyError, SpecError,
            UnsafeTarget)


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed (`>&-`): print into nothing
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    args = build_parser().parse_args(argv)
    commands = {"train": train_command, "run": run_command, "ui": ui_command,
                "sync": sync_command, "rank": analysis_command, "export": analysis_command,
                "report": analysis_command, "reproduce": reproduce_command,
                "confirm": confirm_command, "findings": findings_command,
                "replay": replay_command}
    from ._lifecycle import StudyInterrupted, exit_code, install_stop_signals

    if args.command in ("run", "confirm", "sync"):
        install_stop_signals()  # SIGTERM / SIGHUP stop like Ctrl-C: state saved, 143 / 129
    try:
        return commands[args.command](args)
    except StudyInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code()
    except KeyboardInterrupt:
        import shlex

        resume = f" -- continue with: mistudy run --resume --out {shlex.quote(args.out)}" \
            if args.command == "run" and getattr(args, "out", None) else \
            f" -- continue with: mistudy confirm {shlex.quote(args.study)}" \
            if args.command == "confirm" else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return exit_code()
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not the reader's: a real error
        return 128 + signal.SIGPIPE  # `mistudy rank ... | head`: stop quietly, as Unix tools do
    except Exception as exc:
        from .spec import SpecError

        if isinstance(exc, SpecError):
            return _err("\n".join(exc.problems))
        if isinstance(exc, _known_errors()):
            return _err(str(exc))
        storage = _storage_problem(exc)
        if storage:
            return _err(storage)
        raise


def _stdout_closed() -> bool:
    """Whether the reader of stdout went away (the pipe reports an error to poll). Then
    stdout is pointed at /dev/null: Python would report the broken pipe again at exit."""
    import select

    fd = sys.stdout.fileno()
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    if not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0)):
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return True


def _storage_problem(exc: BaseException) -> str | None:
    """A full disk or a read-only folder, wherever in the stack it surfaced (our files,
    SQLite under MLflow or Optuna, Ray's storage): one line saying which, and that what was
    recorded before it is kept (every write is atomic or an append; --resume continues)."""
    from trainables.studyfolder import storage_failure

    found = storage_failure(exc)
    if found is None:
        return None
    why, where = found
    return (f"{why}{f' ({where})' if where else ''}: nothing already recorded is lost; "
            f"free space or make the folder writable, then rerun (a study: "
            f"mistudy run --resume --out FOLDER)")


if __name__ == "__main__":
    sys.exit(main())
