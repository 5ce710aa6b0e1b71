"""Reading never hangs and never guesses (issue 35, items 4, 8, 12, 16): a FIFO, link or
folder where mistudy reads a study folder's or a bundle's file ends the command within seconds
with one line naming the file (exit 2); a damaged or deleted ``pruning.json`` is said in one
line and rebuilt from Optuna's PRUNED trials; a bundle's bytes after its members are never
decompressed."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import optuna
import pytest

from tests.study.conftest import mistudy, tiny_spec

pytestmark = [pytest.mark.faults]
REPO = Path(__file__).resolve().parents[2]


def _folder(tmp: Path, **over: object) -> Path:
    """A study folder as ``mistudy run`` writes it before Ray starts (spec.yaml, study.json)."""
    from study._folder import new_meta, write_new_study
    from study.spec import load_spec
    from trainables.studyfolder import StudyPaths

    spec = load_spec(str(tiny_spec(tmp / "spec.yaml", **over)))
    out = tmp / "s"
    out.mkdir()
    write_new_study(StudyPaths(out), spec, new_meta(spec, None))
    return out


def _one_line(res: object, name: str, started: float) -> None:
    # A read that waits on a FIFO never returns (no writer comes): the command would run into
    # its 30 s timeout. Returning well before it is the proof; the bound leaves room for a
    # command's start on a loaded 2-core machine (5.3 s seen in a full suite run, ~1.5 s quiet).
    assert time.time() - started < 20, "took too long: it waited on the file"
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])  # type: ignore[attr-defined]
    lines = res.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in res.stderr, lines  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["study.json", "spec.yaml"])
@pytest.mark.parametrize("command", ["sync", "rank"])
def test_a_fifo_in_a_study_folder_is_named_not_waited_on(tmp_path: Path, name: str,
                                                         command: str) -> None:
    out = _folder(tmp_path)
    (out / name).unlink()
    os.mkfifo(out / name)
    t0 = time.time()
    args = ["sync", "--out", str(out)] if command == "sync" else ["rank", str(out)]
    _one_line(mistudy(*args, timeout=30), name, t0)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder"])
def test_pruning_json_as_no_regular_file_stops_a_resume_before_ray(tmp_path: Path,
                                                                  kind: str) -> None:
    """Item 4 (a FIFO blocked Tune's scheduler) and item 16 (a link or folder: ``UnsafeTarget``
    or ``IsADirectoryError`` tracebacks, exit 1): one line naming it, before Ray starts."""
    out = _folder(tmp_path, scheduler="closure")
    target = tmp_path / "decisions.json"
    target.write_text('{"pruned": {}, "reached": {}, "passed": {}}')
    {"fifo": lambda p: os.mkfifo(p), "symlink": lambda p: p.symlink_to(target),
     "folder": lambda p: p.mkdir()}[kind](out / "pruning.json")
    t0 = time.time()
    _one_line(mistudy("run", "--resume", "--out", str(out), "--quiet", timeout=30),
              "pruning.json", t0)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_bundle_that_is_no_regular_file_is_named(tmp_path: Path, kind: str) -> None:
    bundle = tmp_path / "b.tar.gz"
    os.mkfifo(bundle) if kind == "fifo" else bundle.mkdir()
    t0 = time.time()
    _one_line(mistudy("rank", str(bundle), timeout=30), "b.tar.gz", t0)


def test_bytes_after_a_bundles_members_are_never_decompressed(tmp_path: Path) -> None:
    """The committed bundle with 256 MiB of zeros appended as a junk member (compressed to
    about 256 KiB): replay reads the members and stops, in about the time of the bundle
    alone (decompressing the junk alone takes seconds here)."""
    src = REPO / "docs/findings/closure-mnist.tar.gz"
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(src, "r:gz") as tin, tarfile.open(bomb, "w:gz", compresslevel=1) as tout:
        for m in tin.getmembers():
            tout.addfile(m, tin.extractfile(m))
        junk = tarfile.TarInfo("junk.bin")
        junk.size = 256 * 2**20
        tout.addfile(junk, io.BytesIO(bytes(junk.size)))
    assert bomb.stat().st_size < 8 * 2**20  # a small file that decompresses big
    t0 = time.time()
    plain = mistudy("replay", str(src), "--format", "json")
    t_plain = time.time() - t0
    t0 = time.time()
    res = mistudy("replay", str(bomb), "--format", "json")
    t_bomb = time.time() - t0
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(plain.stdout) | {"study": str(bomb)}
    assert t_bomb < t_plain + 1.5, (t_bomb, t_plain)


def _pruned_study(tmp: Path) -> tuple[Path, str]:
    out = _folder(tmp, scheduler="closure")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}",
                                direction="maximize")
    for n in range(3):
        t = study.ask()
        t.suggest_float("alpha", 1.0, 2.0)
        if n == 1:
            t.report(-0.25, step=5)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, 0.1 * n)
    return out, "tiny"


@pytest.mark.parametrize("damage", ["truncated", "deleted", "wrong types"])
def test_damaged_decisions_are_said_and_rebuilt_from_optuna(tmp_path: Path, damage: str,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    from study.runner import _check_decisions
    from trainables.pruning import read_decisions
    from trainables.studyfolder import StudyPaths

    out, name = _pruned_study(tmp_path)
    paths = StudyPaths(out)
    good = {"pruned": {"1": [5, "accuracy guard", -0.25]}, "reached": {}, "passed": {}}
    if damage == "truncated":
        paths.pruning.write_text(json.dumps(good)[:25])
    elif damage == "wrong types":
        paths.pruning.write_text(json.dumps({**good, "pruned": {"1": ["five", 3, "x"]}}))
    _check_decisions(paths, name)
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "pruning.json" in said[0] and "rebuilt 1" in said[0], said
    assert read_decisions(paths.pruning)["pruned"] == {"1": [5, "rebuilt from optuna.db",
                                                             -0.25]}


def test_sound_or_absent_decisions_are_left_alone(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from study.runner import _check_decisions
    from trainables.studyfolder import StudyPaths

    out = _folder(tmp_path, scheduler="closure")
    _check_decisions(StudyPaths(out), "tiny")  # a study killed before its first decision
    assert not (out / "pruning.json").exists() and capsys.readouterr().out == ""


@pytest.mark.parametrize("kind", ["symlink", "folder"])
def test_decisions_that_are_no_regular_file_are_refused(tmp_path: Path, kind: str) -> None:
    from study._folder import StudyError
    from study.runner import _check_decisions
    from trainables.studyfolder import StudyPaths

    out, name = _pruned_study(tmp_path)
    target = tmp_path / "elsewhere.json"
    target.write_text('{"pruned": {}, "reached": {}, "passed": {}}')
    if kind == "symlink":
        (out / "pruning.json").symlink_to(target)
    else:
        (out / "pruning.json").mkdir()
    with pytest.raises(StudyError, match="pruning.json"):
        _check_decisions(StudyPaths(out), name)
