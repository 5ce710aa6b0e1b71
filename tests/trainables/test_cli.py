from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainables.records import RECORD_KEYS

TINY = ["--set", "dataset=fashion_mnist", "--set", "train_size=500", "--set", "val_size=100",
        "--set", "test_size=100", "--set", "batch_size=50", "--set", "epochs=2",
        "--set", "device=cpu"]


def mistudy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mistudy")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_writes_config_and_metrics_and_reruns_identically(tmp_path: Path) -> None:
    out = tmp_path / "a"
    res = mistudy("train", *TINY, "--set", "transition.family=exponential",
                  "--set", "transition.rate=0.3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "I(Y;Ŷ)" in res.stdout  # the live table
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["transition"] == {"family": "exponential", "rate": 0.3}
    assert cfg["data_source"].startswith("idx:")
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 2 and list(rows[0]) == list(RECORD_KEYS)
    again = tmp_path / "b"
    res = mistudy("train", "--config", str(out / "config.yaml"), "--out", str(again), "--quiet")
    assert res.returncode == 0, res.stderr
    strip = lambda rs: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rs]  # noqa
    assert strip(_rows(again / "metrics.csv")) == strip(rows)


def test_python_dash_m_trainables_works_without_the_study_package(tmp_path: Path) -> None:
    # GPU boxes may lack ray/mlflow/optuna: block them and train anyway.
    code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('ray', 'mlflow', 'optuna')];"
            "from trainables.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "train", *TINY, "--set", "epochs=1",
                          "--out", str(tmp_path), "--quiet"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(_rows(tmp_path / "metrics.csv")) == 1


@pytest.mark.parametrize("override, fragment", [
    ("alpha=0", "alpha=0"),
    ("transition.family=wobble", "transition.family='wobble'"),
    ("model=vgg", "model='vgg'"),
    ("dataset=cifar", "dataset='cifar'"),
    ("transition.exponent=-1", "transition.exponent=-1"),
    ("batch_size=5", "batch_size=5"),
    ("epochs=0", "epochs=0"),
    ("nope=1", "unknown config key 'nope'"),
    ("data_dir=/nonexistent", "batch_size=50"),
])
def test_bad_input_exits_2_with_one_line_before_training(tmp_path: Path, override: str,
                                                         fragment: str) -> None:
    out = tmp_path / "out"
    if override.startswith("data_dir"):
        # A missing data folder falls through to the other sources; with a batch larger than
        # any split it must still fail before training.
        args = [*TINY, "--set", "batch_size=5000", "--set", "train_size=4000", "--set", override]
        fragment = "batch_size=5000"
    else:
        args = [*TINY, "--set", override]
    res = mistudy("train", *args, "--out", str(out), timeout=120)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], res.stderr
    assert not out.exists()


def test_a_diverging_train_ends_with_one_line_and_no_non_finite_row(tmp_path: Path) -> None:
    # lr written as users write it (YAML 1.1 would read 1e6 as a string): it diverges
    res = mistudy("train", *TINY, "--set", "lr=1e6", "--out", str(tmp_path), "--quiet")
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "diverged at epoch" in errors[0] and "Traceback" not in res.stderr
    for row in _rows(tmp_path / "metrics.csv"):  # the epochs before it, all finite
        assert all(float(v) == float(v) and abs(float(v)) != float("inf")
                   for v in row.values() if v != "")


def test_a_killed_train_continues_to_the_numbers_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL after the first epoch's row; the same command again continues from the
    checkpoint and ends with the rows of a run never stopped (the second computation)."""
    import os
    import signal
    import time

    args = [*TINY, "--set", "epochs=3", "--quiet"]
    whole = tmp_path / "whole"
    assert mistudy("train", *args, "--out", str(whole)).returncode == 0
    cut = tmp_path / "cut"
    exe = Path(sys.executable).with_name("mistudy")
    proc = subprocess.Popen([str(exe), "train", *args, "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # state.pt is the checkpoint's last file (history.json comes first): a kill between the two
    # would leave no checkpoint to continue from
    while time.time() < deadline and not (cut / "state.pt").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (cut / "state.pt").exists() and len(_rows(cut / "metrics.csv")) < 3
    res = mistudy("train", *args, "--out", str(cut))
    assert res.returncode == 0 and "continuing" in res.stderr, res.stderr
    strip = lambda rs: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rs]  # noqa
    assert strip(_rows(cut / "metrics.csv")) == strip(_rows(whole / "metrics.csv"))
    assert not (cut / "state.pt").exists() and not (cut / "history.json").exists()
    # an unfinished run is continued only by its own config
    (cut / "state.pt").write_bytes(b"x")
    other = mistudy("train", *TINY, "--set", "epochs=4", "--quiet", "--out", str(cut))
    assert other.returncode == 2 and "another config" in other.stderr


def test_a_damaged_checkpoint_or_a_second_train_ends_in_one_line(tmp_path: Path) -> None:
    """Issue 27: a truncated state.pt, a history.json of the wrong shape, and two `train` on
    one --out each end in one line, exit 2 (the checkpoint is read weights-only: no code)."""
    import os
    import shutil
    import signal
    import time

    args = [*TINY, "--set", "epochs=40", "--quiet"]
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("mistudy")
    proc = subprocess.Popen([str(exe), "train", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (out / "state.pt").exists():
            time.sleep(0.05)
        second = mistudy("train", *args, "--out", str(out))  # the first still runs
        assert second.returncode == 2 and "in use by another mistudy process" in second.stderr
        assert f"PID {proc.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.copy(out / "history.json", tmp_path / "history.json")
    for damage, said in ((lambda: (out / "history.json").write_text('{"a": 1}'), "no records"),
                         (lambda: (shutil.copy(tmp_path / "history.json", out),
                                   (out / "state.pt").write_bytes(b"\x80\x02garbage")),
                          "damaged")):
        damage()
        res = mistudy("train", *args, "--out", str(out))
        assert res.returncode == 2 and said in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
