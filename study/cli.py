"""The ``mistudy`` command. Subcommands import their heavy dependencies (ray, mlflow, optuna)
only when they run, so ``mistudy train`` works on a box with torch alone."""

from __future__ import annotations

import argparse
import sys

from trainables.cli import add_train_arguments, train_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mistudy",
        description="Hyperparameter studies for cross-entropy regularized with mutual "
                    "information: L = f(epoch)·CE − (1 − f(epoch))·I(Y;Ŷ).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train one config, show MI per epoch"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return train_command(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
