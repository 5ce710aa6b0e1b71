"""Reliability round 3 (issue 21): each defect an adversarial pass found, reproduced the way it
was found. Every test here failed on the code before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.analysis.test_rank import log_trial
from tests.study.conftest import BIN, free_port, mistudy, tiny_spec

pytestmark = pytest.mark.faults


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert lines, res.stderr[-2000:]
    return lines[0]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- 3: a symlinked or special .lock ---------------------------------------------------------
@pytest.mark.parametrize("command", [("sync", "--out"), ("run", "--resume", "--out")])
def test_a_symlinked_lock_never_truncates_its_target(tmp_path: Path, command: tuple) -> None:
    victim = tmp_path / "victim"
    victim.write_text("DATA\n")
    folder = tmp_path / "sym"
    folder.mkdir()
    (folder / ".lock").symlink_to(victim)
    res = mistudy(*command, str(folder))
    assert "symbolic link" in _one_error_line(res)
    assert victim.read_text() == "DATA\n"


def test_a_lock_that_is_no_regular_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "fifo"
    folder.mkdir()
    os.mkfifo(folder / ".lock")
    res = mistudy("sync", "--out", str(folder), timeout=60)  # must not block on the FIFO
    assert "not a regular file" in _one_error_line(res)


# ---- 9: GPUs checked before anything is written ----------------------------------------------
def test_gpus_the_machine_lacks_are_refused_before_writing(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([str(BIN / "mistudy"), "run", str(spec), "--out", str(tmp_path / "s"),
                          "--gpus-per-trial", "1"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert "gpus_per_trial=1" in _one_error_line(res) and "0 GPU" in res.stderr
    assert not (tmp_path / "s" / "study.json").exists()


# ---- 11, 13: the UI's store and links --------------------------------------------------------
def _ui_folder(tmp_path: Path) -> Path:
    out = tmp_path / "study"
    out.mkdir()
    (out / "spec.yaml").write_text(tiny_spec(tmp_path / "spec.yaml").read_text())
    (out / "study.json").write_text(json.dumps({"study_id": "x", "name": "tiny",
                                                "experiment": "tiny", "tracking_uri": "folder"}))
    return out


def test_ui_refuses_a_missing_or_truncated_store(tmp_path: Path) -> None:
    out = _ui_folder(tmp_path)
    res = mistudy("ui", "--out", str(out), "--port", str(free_port()))
    assert "missing" in _one_error_line(res) and not (out / "mlflow.db").exists()
    (out / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 10)
    res = mistudy("ui", "--out", str(out), "--port", str(free_port()))
    assert "damaged" in _one_error_line(res)


def test_links_bracket_ipv6_and_never_point_at_a_wildcard() -> None:
    from study._ui import local_host, url_base

    assert url_base("::1", 5613) == "http://[::1]:5613"
    assert url_base("127.0.0.1", 5613) == "http://127.0.0.1:5613"
    assert local_host("0.0.0.0") == "127.0.0.1" and local_host("::") == "::1"


# ---- 4: SIGKILL of `mistudy ui` ends its server ------------------------------------------------
@pytest.mark.slow
def test_sigkill_of_the_ui_ends_the_mlflow_server(tmp_path: Path) -> None:
    out = _ui_folder(tmp_path)
    MlflowClient(f"sqlite:///{out / 'mlflow.db'}").create_experiment("tiny")
    port = free_port()
    proc = subprocess.Popen([str(BIN / "mistudy"), "ui", "--out", str(out), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from study._procs import descendants

    line, tree = "", set()
    deadline = time.time() + 240
    while time.time() < deadline and "MLflow UI:" not in line:
        line = proc.stdout.readline() if proc.stdout else ""
        tree |= set(descendants(proc.pid))
    assert "MLflow UI:" in line, "the server never came up"
    tree |= set(descendants(proc.pid))
    assert len(tree) >= 2  # the guardian, the server and its workers
    proc.kill()  # SIGKILL: no handler of ours runs
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.3)
    assert not [p for p in tree if _alive(p)], "the server outlived a SIGKILLed `mistudy ui`"


# ---- 12: export never mixes with other files ------------------------------------------------
def test_export_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    res = mistudy("export", "whatever", "--out", str(target))
    assert "holds files that no export wrote" in _one_error_line(res)
    assert (target / "notes.txt").read_text() == "mine"
    res = mistudy("export", "whatever")
    assert "--out FOLDER" in _one_error_line(res)


# ---- 14: YAML 1.1 numbers and every problem at once -----------------------------------------
def test_set_reads_numbers_as_yaml_1_2_and_reports_every_problem(tmp_path: Path) -> None:
    res = mistudy("train", "--set", "lr=0x10", "--set", "epochs=1_000", "--set",
                  "batch_size=017", "--out", str(tmp_path / "t"))
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 3, res.stderr
    assert "lr='0x10'" in res.stderr and "epochs='1_000'" in res.stderr
    assert "batch_size='017'" in res.stderr
    spec = tiny_spec(tmp_path / "s.yaml", fixed={"epochs": 0, "lr": -1.0})
    res = mistudy("run", str(spec), "--out", str(tmp_path / "s"))
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 2, res.stderr
    assert not (tmp_path / "s").exists()


# ---- 7, 8: a full disk and a read-only folder ------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"this machine forbids mounts ({res.stderr.strip()[:80]})")


@pytest.mark.slow
def test_a_full_disk_ends_the_study_in_one_line(tmp_path: Path) -> None:
    full = tmp_path / "full"
    _mount_tmpfs(full, "3m")
    try:
        spec = tiny_spec(tmp_path / "s.yaml", trials=1)
        res = mistudy("run", str(spec), "--out", str(full / "d"), "--quiet", timeout=600)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 2 and errors and "disk is full" in errors[-1], \
            res.stderr[-2000:]
        timings = full / "d" / "timings.json"
        assert not timings.exists() or json.loads(timings.read_text())  # never a torn file
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_a_read_only_study_folder_is_one_line_for_every_command(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "spec.yaml").write_text(tiny_spec(tmp_path / "spec.yaml").read_text())
    (src / "study.json").write_text(json.dumps(
        {"study_id": "s1", "name": "tiny", "experiment": "tiny", "tracking_uri": "folder"}))
    client = MlflowClient(f"sqlite:///{src / 'mlflow.db'}")
    exp = client.create_experiment("tiny", artifact_location=(tmp_path / "art").as_uri())
    # runs to report and export: the read-only folder is the only thing in the way
    for tid, family, baseline, gap in (("b0", "constant", True, 0.2), ("p0", "power", False, 0.1)):
        log_trial(client, exp, tid, family=family, seed=0, batch=64, gap=gap, acc=0.9,
                  baseline=baseline)
    study = tmp_path / "ro"
    study.mkdir()
    res = subprocess.run(["mount", "--bind", str(src), str(study)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"this machine forbids mounts ({res.stderr.strip()[:80]})")
    try:  # a read-only bind mount, as a received folder on a read-only share would be
        subprocess.run(["mount", "-o", "remount,bind,ro", str(study)], check=True)
        for args in (("sync", "--out", str(study)), ("run", "--resume", "--out", str(study)),
                     ("report", str(study), "--out", str(study / "rep")),
                     ("export", str(study), "--out", str(study / "exp"))):
            res = mistudy(*args, timeout=300)
            assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
            # the refusal is the read-only folder's, said in one line naming it
            (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
            assert "read-only" in line.lower() and str(study) in line, (args, line)
    finally:
        subprocess.run(["umount", "-l", str(study)], check=False)


# ---- 2, 5: signals stop like Ctrl-C; 1: --resume finishes every extension --------------------
def _wait_for(pattern: str, root: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not list(root.glob(pattern)):
        time.sleep(0.2)
    assert list(root.glob(pattern)), f"nothing matched {pattern} in {timeout} s"


def _statuses(out: Path) -> tuple[list[str], list[str], list[str]]:
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parent = [r.info.status for r in runs if r.data.tags.get("mistudy.role") == "parent"]
    trials = [r.info.status for r in runs if r.data.tags.get("mistudy.role") == "trial"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
        states = [t.state.name for t in st.trials]
    except KeyError:
        states = []
    return parent, trials, states


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_saves_the_state_exits_128_plus_and_resumes(
        tmp_path: Path, sig: int, code: int) -> None:
    spec = tiny_spec(tmp_path / "s.yaml", trials=2, fixed={"epochs": 3})
    out = tmp_path / "s"
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for("ray/tiny/*/result.json", out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    assert "mistudy run --resume --out" in err and "Fatal Python error" not in err
    parent, trials, _ = _statuses(out)
    assert parent == ["KILLED"]  # never FINISHED while trials are left
    if sig == signal.SIGHUP:
        return  # the same stop path as SIGTERM (one handler); its resume is checked there
    res = mistudy("run", "--resume", "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    parent, trials, states = _statuses(out)
    assert parent == ["FINISHED"] and trials == ["FINISHED"] * (2 + 1)
    assert states == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_a_grow_killed_midway_is_finished_by_resume(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "s.yaml", trials=1)
    out = tmp_path / "s"
    assert mistudy("run", str(spec), "--out", str(out), "--quiet",
                   timeout=600).returncode == 0
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", "--resume", "--out", str(out),
                             "--trials", "3", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for("ray/tiny-more1/*/result.json", out)
    proc.kill()  # SIGKILL: nothing of ours runs; Ray's processes are left behind
    proc.communicate(timeout=60)
    res = mistudy("run", "--resume", "--out", str(out), "--quiet", timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    parent, trials, states = _statuses(out)
    assert states == ["COMPLETE"] * 3 or (states.count("COMPLETE") >= 3
                                          and "RUNNING" not in states), states
    assert trials == ["FINISHED"] * len(trials) and len(trials) >= 3 + 1
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    for r in client.search_runs([exp.experiment_id], "tags.`mistudy.role` = 'trial'"):
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "gap")]
        assert sorted(steps) == [0, 1], (r.info.run_name, steps)  # every epoch, once
