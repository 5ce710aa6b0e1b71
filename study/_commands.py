"""The bodies of ``mistudy``'s study commands (``study.cli`` parses and dispatches):
run, confirm, ui, sync, rank / export / report, findings, replay, reproduce. Each
validates its flags in one line (exit 2) before any expensive work."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.closure import last_k_problem

from ._sqlite import store_problem
from ._summary import print_summary
from ._view import ensure_shared_view, experiment_id

if TYPE_CHECKING:
    from ._progress import StudyProgress  # Ray Tune's import: only where a bar is shown

__all__ = ["run_command", "confirm_command", "ui_command", "sync_command", "analysis_command",
           "findings_command", "replay_command", "paths_command", "reproduce_command",
           "reproduce", "err"]


def err(msg: str) -> int:
    """Each line of ``msg`` as ``error: ...`` on stderr; the exit code 2."""
    for line in msg.splitlines():
        print(f"error: {line}", file=sys.stderr)
    return 2


def _progress_bar() -> StudyProgress:
    """The terminal's progress line, a Tune callback: Ray Tune's import (~1 CPU-s) is paid by
    a command that shows one, not by a quiet one or one refused before it starts."""
    from ._progress import StudyProgress

    return StudyProgress(total=0, epochs=0)


def confirm_command(args: argparse.Namespace) -> int:
    from ._ray import shutdown_ray
    from .runner import run_confirm

    for name in ("top", "seeds", "num_cpus"):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= 1000:
            return err(f"--{name.replace('_', '-')}={v} -- allowed: an integer in [1, 1000]")
    from trainables.config import MAX_SEED

    bad = [d for d in args.data_seeds or [] if not 0 <= d < MAX_SEED]
    if bad:  # before planning: a trial would fail on it, far from the flag
        return err(f"--data-seeds: {bad[0]} -- allowed: split draws in [0, {MAX_SEED})")
    from ._folder import study_paths

    paths = study_paths(args.study)
    # the total and epochs are set from the plan and the study (run_confirm opens it)
    progress = [] if args.quiet else [_progress_bar()]
    try:
        info = run_confirm(paths, args.top, args.seeds, args.num_cpus, progress,
                           args.data_seeds, args.same_split)
    finally:
        shutdown_ray()
    from analysis import format_confirm

    print()
    print(format_confirm(info))
    print(f"written: {paths.confirm_report}")
    return 0


def findings_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, is_bundle, update_page, write_findings

    bad = [b for b in args.bundles if not is_bundle(b)]
    if bad:
        return err(f"{bad[0]!r} is no study bundle; make one with mistudy export STUDY "
                    f"--bundle FILE")
    try:
        texts = write_findings(args.bundles, Path(args.out))
    except AnalysisError as exc:
        return err(str(exc))
    for name in texts:
        print(f"wrote {Path(args.out) / (name + '-tables.md')} and its figures")
    if args.update:
        done = update_page(Path(args.update), texts)
        print(f"updated {args.update}: {done or 'no <!-- tables:NAME --> block found'}")
    return 0


def replay_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, format_replay, get_replay_info
    from trainables.pruning import PruneRules

    from .spec import pruner_problems

    raw = {"grace": args.grace, "window": args.window, "acc_drop": args.acc_drop,
           "ce_rise": args.ce_rise, "rungs": list(args.rungs), "median_min": args.median_min,
           "quantile": args.quantile}
    bad = pruner_problems(raw, prefix="--")  # the spec's rule for the same values
    if args.top < 1:
        bad.append(f"--top: {args.top} -- an integer >= 1")
    if bad:
        return err(bad[0])
    rules = PruneRules(**{**raw, "rungs": tuple(args.rungs)})
    try:
        info = get_replay_info(args.study, rules, args.top)
    except AnalysisError as exc:
        return err(str(exc))
    print(format_replay(info, args.format))
    return 0


def paths_command(args: argparse.Namespace) -> int:
    from analysis import AnalysisError, format_paths, get_paths_info

    if args.top < 1:
        return err(f"--top: {args.top} -- an integer >= 1")
    try:
        info = get_paths_info(list(args.studies), args.top)
    except AnalysisError as exc:
        return err(str(exc))
    print(format_paths(info))
    return 0


def reproduce(figures: int | list[int], dataset: str, model: str, seeds: int,
              epochs: int | None, out: Path, input_size: int | None = None, log: Any = print,
              threads: int | None = None) -> list[Any]:
    """``mistudy reproduce``: train (or continue) the runs ``figures`` need, round-robin
    (``trainables.reproduce``), then compute and draw each figure from their records
    (``analysis.draw_reproduction``)."""
    from analysis import NEEDS, draw_reproduction
    from trainables.reproduce import PAPER_EPOCHS, plan_runs, train_runs

    figs = [figures] if isinstance(figures, int) else list(figures)
    epochs = epochs or PAPER_EPOCHS[model]
    size = input_size or (224 if model == "resnet18" else 28)
    out.mkdir(parents=True, exist_ok=True)
    conds = tuple(c for c in ("ce", "reg") if any(c in NEEDS[f] for f in figs))
    plan = plan_runs(dataset, model, seeds, epochs, out, size, conds, threads)
    train_runs([r for rs in plan.values() for r in rs], log)
    return draw_reproduction(figs, {c: [r.result() for r in rs] for c, rs in plan.items()},
                             {c: [r.folder for r in rs] for c, rs in plan.items()},
                             out, dataset, model, size)


def reproduce_command(args: argparse.Namespace) -> int:
    import torch

    from analysis import NEEDS
    from trainables.reproduce import PAPER_EPOCHS, cpu_estimate_seconds

    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        return err(f"--seeds={args.seeds} --epochs={args.epochs} -- allowed: integers >= 1")
    if args.input_size is not None and not 32 <= args.input_size <= 512:
        return err(f"--input-size={args.input_size} -- allowed: 32..512")
    if args.threads is not None and args.threads < 1:
        return err(f"--threads={args.threads} -- allowed: an integer >= 1")
    figs = args.figure
    if args.conditions:
        figs = [f for f in figs if set(NEEDS[f]) <= set(args.conditions)]
        if not figs:
            return err(f"--conditions {' '.join(args.conditions)} draws none of figures "
                        f"{args.figure}; figure 5 needs both ce and reg")
    if args.model == "resnet18" and not torch.cuda.is_available():
        size = args.input_size or 224
        conds = len({c for f in figs for c in NEEDS[f]})
        est = cpu_estimate_seconds("resnet18", size, args.epochs or PAPER_EPOCHS["resnet18"],
                                   args.seeds, conds)
        print(f"warning: ResNet18 at {size}px on the CPU: about {est / 3600:.1f} hours; "
              f"--input-size 32 runs a reduced variant (labelled as such)", file=sys.stderr)
    from trainables.config import ConfigError
    from trainables.errors import DataError, TrialDiverged
    from trainables.locks import FolderLocked

    try:
        results = reproduce(figs, args.dataset, args.model, args.seeds, args.epochs,
                            Path(args.out), args.input_size, threads=args.threads)
    except (ConfigError, DataError, FolderLocked, TrialDiverged) as exc:
        return err(str(exc))
    for res in results:
        print(f"{res.png}\n{res.verdict}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    t_main = time.time()
    from ._folder import record_timings
    from ._ray import shutdown_ray
    from .runner import run_study
    from .spec import load_spec, value_problem

    spec = None
    if not args.resume:
        if bool(args.spec) == bool(args.preset):
            return err("give a spec file or --preset NAME (one of them)")
        spec = load_spec(args.spec, args.preset)
    elif args.spec or args.preset:
        spec = load_spec(args.spec, args.preset)  # must match the stored one (checked)
    from ._folder import study_paths

    paths = study_paths(args.out or f"studies/{spec.name if spec else 'study'}")
    for name in ("cpus_per_trial", "gpus_per_trial", "trials"):  # the spec's own rules
        v = getattr(args, name)
        allowed = None if v is None else value_problem(name, v)
        if allowed:
            return err(f"--{name.replace('_', '-')}={v} -- allowed: {allowed}")
    if args.num_cpus is not None and args.num_cpus < 1:
        return err(f"--num-cpus={args.num_cpus} -- allowed: an integer >= 1")
    # its trial count and epochs are set once the study is settled (run_study opens it)
    progress = [] if args.quiet else [_progress_bar()]
    try:
        done = run_study(spec, paths, resume=args.resume, trials=args.trials,
                         address=args.address, tracking_uri=args.tracking_uri,
                         cpus_per_trial=args.cpus_per_trial,
                         gpus_per_trial=args.gpus_per_trial, num_cpus=args.num_cpus,
                         callbacks=progress)
    finally:
        t_end = time.time()
        shutdown_ray()
    print_summary(*done)
    record_timings(paths.timings, {"main_at": t_main, "main_end_at": t_end,
                                   "ray_shutdown_seconds": time.time() - t_end})
    return 0


def ui_command(args: argparse.Namespace) -> int:
    from trainables.studyfolder import redact

    from ._folder import open_study, study_paths
    from ._ui import port_free, runs_link, serve

    study = open_study(study_paths(args.out))
    meta = study.meta
    uri = meta["tracking_uri"]
    if not uri.startswith("sqlite:"):
        print(f"this study logs to a tracking server; open: "
              f"{runs_link(redact(uri), experiment_id(meta), ensure_shared_view(args.out, meta))}")
        return 0
    if not 1 <= args.port <= 65535:
        return err(f"--port={args.port} -- allowed: 1..65535")
    if not 1 <= args.workers <= 64:
        return err(f"--workers={args.workers} -- allowed: 1..64")
    problem = store_problem(uri)
    if problem:
        return err(problem)
    if not port_free(args.host, args.port):
        return err(f"port {args.port} on {args.host} is in use; choose another with --port")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} serves the study's store (read and write, no "
              f"login) to every machine that can reach this one", file=sys.stderr)
    shared = ensure_shared_view(args.out, meta)
    return serve(uri, meta.get("artifact_location"), args.host, args.port,
                 experiment_id(meta), study.paths.ui_log, shared, args.workers)


def sync_command(args: argparse.Namespace) -> int:
    from ._folder import study_paths
    from ._sync import sync_study

    stats = sync_study(study_paths(args.out))
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
        return err(f"--last-k={args.last_k} -- allowed: {allowed}")
    if not 0 <= args.acc_tolerance <= 1:  # NaN fails this too
        return err(f"--acc-tolerance={args.acc_tolerance} -- allowed: a number in [0, 1]")
    if args.command == "export":
        problem = _export_target_problem(args)
        if problem:
            return err(problem)
        if args.bundle:
            return _bundle_command(args)
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        return err(f"--out {out!r} is a file; give a folder")
    if getattr(args, "top", 1) < 1:
        return err(f"--top={args.top} -- allowed: an integer >= 1")
    try:
        a = analyze(args.study, args.tracking_uri, args.last_k, args.acc_tolerance)
    except AnalysisError as exc:
        return err(str(exc))
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
    from trainables.fileio import UnreadableFile

    from ._folder import study_paths

    folder = Path(args.study)
    if not study_paths(folder).is_study():
        return err(f"{args.study!r} is no study folder (a bundle is made from one)")
    try:
        path = write_bundle(folder, Path(args.bundle))
    except (AnalysisError, UnreadableFile) as exc:  # the folder's files: said as they are
        return err(str(exc))
    except OSError as exc:
        return err(f"cannot write {args.bundle}: {exc.strerror or exc}")
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


