"""The ``mistudy`` command. Subcommands import their heavy dependencies (ray, mlflow, optuna)
only when they run, so ``mistudy train`` works on a box with torch alone."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from trainables.cli import add_train_arguments, train_command
from trainables.records import DEFAULT_LAST_K

from ._commands import (
    analysis_command,
    confirm_command,
    err,
    findings_command,
    paths_command,
    replay_command,
    reproduce_command,
    run_command,
    sync_command,
    ui_command,
)

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
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1: one user; more for a shared UI)")
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


def _number_or_off(text: str) -> float | None:
    """A rule's number, or ``off`` (a NaN or infinity is refused by the spec's rule)."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} -- a number or 'off'") from None


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} -- allowed: integers >= 0 separated by "
                                         f"commas") from None
    if any(v < 0 for v in vals) or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"{text!r} -- allowed: distinct integers >= 0")
    return vals


def _add_findings(sub: Any) -> None:
    p = sub.add_parser("findings", help="regenerate docs/findings.md's tables and figures "
                                        "from study bundles")
    p.add_argument("bundles", nargs="+", help="study bundle files (mistudy export --bundle)")
    p.add_argument("--out", required=True, help="folder for the tables and PNG figures")
    p.add_argument("--update", metavar="PAGE",
                   help="also replace each study's generated block in this markdown page")


def _add_replay(sub: Any) -> None:
    from trainables.pruning import DEFAULT_RULES as d

    p = sub.add_parser("replay", help="run the closure-aware pruner over a recorded study as "
                                      "if live: epochs saved, top schedules kept")
    p.add_argument("study", help="a study bundle or folder")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--top", type=int, default=5, help="the final feasible top K to keep")
    p.add_argument("--grace", type=int, default=d.grace, help=f"default {d.grace}")
    p.add_argument("--window", type=int, default=d.window, help=f"default {d.window}")
    p.add_argument("--acc-drop", type=_number_or_off, default=d.acc_drop,
                   help=f"accuracy guard, a fraction in [0, 1] (default {d.acc_drop}; off)")
    p.add_argument("--ce-rise", type=_number_or_off, default=d.ce_rise,
                   help=f"CE guard in nats (default {d.ce_rise}; off)")
    p.add_argument("--rungs", type=_int_list, default=list(d.rungs), metavar="E,E,...",
                   help=f"the median rule's epochs (default {','.join(map(str, d.rungs))})")
    p.add_argument("--quantile", type=float, default=d.quantile,
                   help=f"prune below this quantile (default {d.quantile})")
    p.add_argument("--median-min", type=int, default=d.median_min,
                   help=f"configurations needed before a rung judges (default {d.median_min})")


def _add_paths(sub: Any) -> None:
    p = sub.add_parser("paths", help="how stable the answer is across search paths: several "
                                     "studies of one spec (sampler seeds), region by region")
    p.add_argument("studies", nargs="+", metavar="STUDY",
                   help="study folders or bundles of one spec with different sampler seeds")
    p.add_argument("--top", type=int, default=5, help="the feasible top K of each path "
                                                      "(confirm each path with --top K)")


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
    _add_paths(sub)
    _add_reproduce(sub)
    return p




def _known_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: one line, exit 2 (anything else is a bug and
    keeps its traceback)."""
    from trainables.config import ConfigError
    from trainables.errors import DataError, TrialDiverged
    from trainables.fileio import UnreadableFile, UnsafeTarget
    from trainables.locks import FolderLocked
    from trainables.pruning import DecisionsError

    from ._folder import StudyError
    from .spec import SpecError

    return (ConfigError, DataError, FolderLocked, TrialDiverged, StudyError, SpecError,
            UnsafeTarget, UnreadableFile, DecisionsError)


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed (`>&-`): print into nothing
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    args = build_parser().parse_args(argv)
    commands = {"train": train_command, "run": run_command, "ui": ui_command,
                "sync": sync_command, "rank": analysis_command, "export": analysis_command,
                "report": analysis_command, "reproduce": reproduce_command,
                "confirm": confirm_command, "findings": findings_command,
                "replay": replay_command, "paths": paths_command}
    from ._lifecycle import StudyInterrupted, exit_code, install_stop_signals

    if args.command in ("run", "confirm", "sync"):
        install_stop_signals()  # SIGTERM / SIGHUP stop like Ctrl-C: state saved, 143 / 129
    try:
        if args.command in ("run", "confirm", "sync", "ui"):
            from ._versions import check_supported

            check_supported()  # Ray's resume patch, MLflow's view state: tested versions only
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
            return err("\n".join(exc.problems))
        if isinstance(exc, _known_errors()):
            return err(str(exc))
        storage = _storage_problem(exc)
        if storage:
            return err(storage)
        from trainables.studyfolder import damaged_database

        folder = getattr(args, "study", None) or getattr(args, "out", None)
        damaged = damaged_database(exc, Path(folder) if isinstance(folder, str) else None)
        if damaged:
            return err(damaged)
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
