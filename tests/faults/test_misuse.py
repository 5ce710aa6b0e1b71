"""Reliability round 2: misuse of the command line, each reproduced as a user or an attacker
would (issue 13). Every test here failed on the code before the fix it names."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import EPOCHS, tune_epochs, write_idx
from tests.study.conftest import BIN, free_port, mistudy, store_uri, study_runs, tiny_spec

pytestmark = pytest.mark.faults


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith(
        ("warning:", "[", "20"))]  # Ray/MLflow log lines start with [ or a date
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(lines) >= 1 and lines[0].startswith("error:"), res.stderr[-2000:]
    return lines[0]


# ---- 2: path traversal through the spec name ---------------------------------------------
def test_a_spec_name_cannot_leave_the_study_folder(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml", name="../../escape")
    res = mistudy("run", str(spec), "--out", str(tmp_path / "x" / "a"))
    assert "name" in _one_error_line(res)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x" / "a").exists()


# ---- 3: credentials never printed --------------------------------------------------------
def test_ui_does_not_print_tracking_credentials(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({
        "study_id": "abc", "name": "tiny", "experiment": "tiny",
        "tracking_uri": f"http://u:hunter2@127.0.0.1:{free_port()}"}))
    tiny_spec(out / "spec.yaml")
    res = mistudy("ui", "--out", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout + res.stderr and "127.0.0.1" in res.stdout


# ---- 4: YAML alias bomb and huge specs ---------------------------------------------------
def test_alias_bomb_and_huge_spec_are_refused_in_seconds(tmp_path: Path) -> None:
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: x\n")
    assert bomb.stat().st_size < 600
    t0 = time.time()
    res = mistudy("run", str(bomb), "--out", str(tmp_path / "o"), timeout=60)
    assert "expands to more than" in _one_error_line(res) and time.time() - t0 < 30
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\nfixed: {}\n" + "# padding\n" * 200_000)
    res = mistudy("run", str(huge), "--out", str(tmp_path / "o"), timeout=60)
    assert "at most" in _one_error_line(res)


# ---- 6: a malformed tracking URI writes nothing ------------------------------------------
def test_malformed_tracking_uri_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "s"
    spec = tiny_spec(tmp_path / "s.yaml")
    res = mistudy("run", str(spec), "--out", str(out), "--tracking-uri", "foo://bar")
    assert "scheme 'foo' is not supported" in _one_error_line(res)
    assert not (out / "study.json").exists()


def test_a_refused_study_imports_neither_torch_nor_ray_to_say_so(tmp_path: Path) -> None:
    """Recognizing a user's error (exit 2, one line) imported torch for the error classes and
    Ray Tune for the progress bar: 3.5 s for a refusal that needs a tenth of that. Python
    lists every import it makes under PYTHONPROFILEIMPORTTIME."""
    import os
    import re

    spec = tiny_spec(tmp_path / "s.yaml")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    for quiet, unwanted in (([], ("torch",)), (["--quiet"], ("torch", "ray"))):
        res = mistudy("run", str(spec), "--out", str(tmp_path / "o"), "--tracking-uri",
                      "foo://bar", *quiet, env=env)
        imported = {m.group(1) for m in re.finditer(r"^import time:.*\|\s+([\w.]+)$",
                                                     res.stderr, re.M)}
        assert "study.cli" in imported  # the listing is there
        assert res.returncode == 2 and "scheme 'foo' is not supported" in res.stderr
        assert not {m for m in imported if m.split(".")[0] in unwanted}, quiet


# ---- 7: ui on a busy port ----------------------------------------------------------------
def test_ui_on_a_busy_port_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"study_id": "a", "name": "tiny",
                                                "experiment": "tiny", "tracking_uri": "folder"}))
    tiny_spec(out / "spec.yaml")
    # A store must be there (a missing one is refused first, for its own reason).
    with sqlite3.connect(out / "mlflow.db") as db:
        db.execute("CREATE TABLE t (a)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = mistudy("ui", "--out", str(out), "--port", str(port), timeout=60)
    assert f"port {port}" in _one_error_line(res)
    assert not (out / "mlflow-ui.log").exists()  # no server was started


# ---- 9: wrong-shape data -----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["14x14", "label 200"])
def test_wrong_shape_or_label_data_is_refused_before_output(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, n in (("train", 1200), ("t10k", 400)):
        side = 14 if damage == "14x14" and prefix == "t10k" else 28
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, side, side), np.uint8))
        labels = np.arange(n) % 10
        if damage == "label 200" and prefix == "train":
            labels[7] = 200
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "out"
    res = mistudy("train", "--set", f"data_dir={folder}", "--set", "dataset=fashion_mnist",
                  "--set", "train_size=500", "--set", "val_size=100", "--set", "test_size=100",
                  "--set", "batch_size=50", "--set", "epochs=1", "--out", str(out))
    line = _one_error_line(res)
    assert ("(n, 28, 28)" in line) if damage == "14x14" else ("label 200" in line)
    assert not out.exists()


# ---- 11: tracebacks turned into one line --------------------------------------------------
def _in_process(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``mistudy ARGS`` through the same ``main`` (its error boundary) without a new
    interpreter; an exception that escaped the boundary would fail the test here."""
    from study.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def test_known_errors_are_one_line_not_tracebacks(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    spec = tiny_spec(tmp_path / "s.yaml")
    assert "cannot be made a folder" in _one_error_line(
        _in_process(capsys, "run", str(spec), "--out", str(afile / "sub")))
    assert "--num-cpus=-1" in _one_error_line(
        _in_process(capsys, "run", str(spec), "--out", str(tmp_path / "n"), "--num-cpus", "-1"))
    assert "is a file" in _one_error_line(
        _in_process(capsys, "export", str(tmp_path), "--out", str(afile)))
    big = tiny_spec(tmp_path / "big.yaml", seeds=[2**63])
    assert "seeds" in _one_error_line(
        _in_process(capsys, "run", str(big), "--out", str(tmp_path / "b")))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.json").write_text("{not json")
    tiny_spec(broken / "spec.yaml")
    for cmd in (("sync", "--out"), ("ui", "--out")):
        assert "damaged" in _one_error_line(_in_process(capsys, *cmd, str(broken)))
    # and once as a real process, as a user meets it
    assert "damaged" in _one_error_line(mistudy("run", "--resume", "--out", str(broken)))


# ---- 12 and 13: floats as users write them; sanity bounds ---------------------------------
def test_exponent_floats_are_numbers_and_absurd_sizes_are_refused(tmp_path: Path) -> None:
    from study.spec import SpecError, parse_spec
    from trainables.config import ConfigError, TrainConfig, apply_overrides

    assert TrainConfig.from_dict(apply_overrides({}, ["lr=1e-4"])).lr == 1e-4
    spec = yaml.safe_load(tiny_spec(tmp_path / "s.yaml").read_text())
    for bad in ({"trials": 10**12}, {"objective": {"last_k": 5}},
                {"fixed": {**spec["fixed"], "epochs": 100_000}}):
        with pytest.raises(SpecError):
            parse_spec({**spec, **bad})
    with pytest.raises(ConfigError, match="seed"):
        TrainConfig.from_dict({"seed": 2**63})
    res = mistudy("rank", str(tmp_path), "--acc-tolerance", "nan")
    assert "--acc-tolerance=nan" in _one_error_line(res)


# ---- 10: Ctrl-C while Ray starts ----------------------------------------------------------
def _ray_children(pid: int) -> set[int]:
    """The run's descendants that are Ray's (raylet, GCS, dashboard and runtime-env agents)."""
    from study._procs import descendants

    out = set()
    for p in descendants(pid):
        try:
            args = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ray" in args:
            out.add(p)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_ctrl_c_during_ray_start_leaves_no_ray_process(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml")
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out",
                             str(tmp_path / "s"), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.time() + 120
    while time.time() < deadline and len(seen) < 4:  # GCS, raylet and the agents are up
        seen |= _ray_children(proc.pid)
        time.sleep(0.05)
    assert seen, "Ray never started"
    proc.send_signal(signal.SIGINT)  # Ray is still starting its processes
    seen |= _ray_children(proc.pid)
    proc.communicate(timeout=120)
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.5)
    # (a SIGINT that lands after Ray started is Tune's to handle: it stops the trials and
    # saves its state; either way no Ray process may outlive the run)
    assert not [p for p in seen if _alive(p)], "Ray processes outlived the interrupted run"


# ---- 8: impossible resources --------------------------------------------------------------
def test_impossible_resources_are_refused_instead_of_waiting_forever(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml", resources={"cpus_per_trial": 1000})
    t0 = time.time()
    res = mistudy("run", str(spec), "--out", str(tmp_path / "s"), timeout=120)
    assert "cpus_per_trial=1000" in _one_error_line(res) and time.time() - t0 < 60
    assert not (tmp_path / "s").exists()  # refused before anything was written


# ---- 1 and 5: one writer per folder; a copied folder (on the shared real study) ------------
@pytest.mark.slow
def test_a_second_writer_is_refused_and_the_first_records_stay_whole(grown_study: dict) -> None:
    for res in (grown_study["second"], grown_study["racer"]):
        assert res.returncode == 2, res.stderr[-2000:]
        assert f"PID {grown_study['first_pid']}" in res.stderr, res.stderr[-2000:]
    for trial, epochs in tune_epochs(grown_study["out"]).items():
        assert epochs == list(range(EPOCHS)), (trial, epochs)  # none missing, none twice


@pytest.mark.slow
def test_a_copied_folder_works_on_its_own_store(grown_study: dict) -> None:
    copy = grown_study["root"] / "copy"
    shutil.copytree(grown_study["out"], copy)
    original = grown_study["out"] / "mlflow.db"
    stamp = original.stat().st_mtime_ns
    client = MlflowClient(store_uri(copy))
    assert store_uri(copy).endswith(f"{copy.resolve()}/mlflow.db")
    _, children = study_runs(store_uri(copy), "tiny", copy)
    client.delete_run(children[0].info.run_id)  # damage the copy's store only
    res = mistudy("sync", "--out", str(copy))
    assert res.returncode == 0, res.stderr[-2000:]
    _, again = study_runs(store_uri(copy), "tiny", copy)
    assert len(again) == len(children)  # sync put the run back, in the copy
    assert original.stat().st_mtime_ns == stamp  # the original store was not touched
    elsewhere = grown_study["root"] / "elsewhere"
    elsewhere.mkdir()
    rank = subprocess.run([str(BIN / "mistudy"), "rank", str(copy.resolve())], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
    assert rank.returncode == 0, rank.stderr[-2000:]
    assert not (elsewhere / "mlflow.db").exists()
