"""Bundles whose runs are not what a trial records: refused in one line, exit 2, by every
command that reads a bundle (issue 35, item 14: a config ``{}``, one without a transition, or
``val_gap: "abc"`` were ``KeyError``/``ValueError`` tracebacks in ``rank`` and ``replay``)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from study.cli import main
from tests.study.conftest import mistudy

BUNDLE = Path(__file__).resolve().parents[2] / "docs/findings/closure-mnist.tar.gz"
Runs = list[dict[str, Any]]


def _bundle(tmp_path: Path, damage: Callable[[Runs], None]) -> Path:
    """The committed MNIST bundle with its runs.json damaged by ``damage``."""
    with tarfile.open(BUNDLE) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    runs = json.loads(members["runs.json"])
    damage(runs)
    members["runs.json"] = json.dumps(runs).encode()
    path = tmp_path / "damaged.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _each(key: str, value: Any) -> Callable[[Runs], None]:
    return lambda runs: [r.__setitem__(key, value) for r in runs]  # type: ignore[func-returns-value]


DAMAGES: dict[str, tuple[Callable[[Runs], None], str]] = {
    "every config {}": (_each("config", {}), "has a config without a transition"),
    "one config {}": (lambda rs: rs[5].__setitem__("config", {}),
                      "has a config without a transition"),
    "no transition": (lambda rs: [r["config"].pop("transition") for r in rs],
                      "has a config without a transition"),
    "every val_gap abc": (lambda rs: [rec.__setitem__("val_gap", "abc")
                                      for r in rs for rec in r["records"]],
                          "has val_gap='abc' at epoch 0 (a number or null is allowed)"),
    "one val_gap abc": (lambda rs: rs[3]["records"][2].__setitem__("val_gap", "abc"),
                        "has val_gap='abc' at epoch 2"),
    "a boolean test_ce": (lambda rs: rs[3]["records"][1].__setitem__("test_ce", True),
                          "has test_ce=True at epoch 1"),
    "an unknown family": (lambda rs: rs[3]["config"]["transition"].__setitem__(
        "family", "bogus"), "transition.family='bogus' is unknown"),
    "a batch size of null": (lambda rs: rs[3]["config"].__setitem__("batch_size", None),
                             "batch_size=None is not allowed"),
    "a transition as text": (lambda rs: rs[3]["config"].__setitem__("transition", "power"),
                             "transition='power' must be a mapping"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("command", ["rank", "replay"])
def test_a_run_no_trial_records_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, damage: str) -> None:
    change, said = DAMAGES[damage]
    bundle = _bundle(tmp_path, change)
    assert main([command, str(bundle)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {bundle} is a damaged study bundle: run ") and said in lines[0], lines


def test_the_command_line_says_it_without_a_traceback(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, _each("config", {}))
    for command in ("rank", "replay", "paths"):
        res = mistudy(command, str(bundle))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
