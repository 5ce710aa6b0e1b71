"""Promises 2, 3, 5, 6 with real processes: a diverging trial, the driver SIGKILLed at five
points and resumed each time, the MLflow server stopped and restarted mid-study, and no
secret in any output or param."""

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

from tests.study.conftest import (
    BIN,
    MlflowServer,
    epochs_reported,
    kill_driver_when,
    mistudy,
    require_loopback,
    store_uri,
    study_runs,
    tiny_spec,
    tune_trial_ids,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.cluster]


def _check_one_run_per_trial(out: Path, epochs: int, expect_failed: int = 0) -> list:
    uri = store_uri(out)
    parents, children = study_runs(uri, "tiny", out)
    assert len(parents) == 1
    assert sorted(c.data.tags["mistudy.trial_id"] for c in children) == sorted(
        tune_trial_ids(out))
    client = MlflowClient(uri)
    for c in children:
        if c.info.status == "FAILED":
            continue
        assert c.info.status == "FINISHED"
        for key in ("epoch", "mi_y_yhat", "test_ce", "gap"):
            steps = [m.step for m in client.get_metric_history(c.info.run_id, key)]
            assert sorted(steps) == list(range(epochs)), (c.info.run_name, key, steps)
    failed = {c.info.run_name: c.data.tags.get("mistudy.error", "")[-1500:]
              for c in children if c.info.status == "FAILED"}
    assert len(failed) == expect_failed, failed
    return children


def test_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path: Path) -> None:
    # The power family at a huge SGD step: the loss overflows within the first epochs.
    spec = tiny_spec(tmp_path / "spec.yaml", trials=2,
                     search={"families": {"power": {}}, "alpha": 1.01, "batch_size": [50]},
                     fixed={"optimizer": "sgd", "lr": 1.0e12}, max_failures=0)
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    children = _check_one_run_per_trial(out, 2, expect_failed=3)
    for c in children:
        assert "trial diverged at epoch" in c.data.tags["mistudy.error"]


def test_driver_sigkilled_at_five_points_then_resumed(tmp_path: Path) -> None:
    # The driver dies without cleanup before any result, then ever later; each time the
    # study resumes. At the end: one MLflow run per Tune trial, each epoch of each metric
    # logged exactly once (this also covers the single kill-and-resume of earlier rounds).
    epochs, trials = 4, 3
    spec = tiny_spec(tmp_path / "spec.yaml", fixed={"epochs": epochs}, trials=trials)
    out = tmp_path / "study"
    total = (trials + 1) * epochs
    cmd = [str(BIN / "mistudy"), "run", str(spec), "--out", str(out)]
    kills = 0
    for target in (0, 2, 5, 8, 11):  # before any result (trial start), then ever later
        log = open(tmp_path / f"driver-{target}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        start = epochs_reported(out)
        deadline = time.time() + 240
        while epochs_reported(out) < max(target, start + (0 if target == 0 else 1)):
            if proc.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.05 if target == 0 else 0.2)
        if target == 0:
            time.sleep(6)  # Ray is up, trials are starting
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        cmd = [str(BIN / "mistudy"), "run", "--resume", "--out", str(out)]
        assert epochs_reported(out) < total or kills >= 3
    logs = {p.name: p.read_text()[-1500:] for p in tmp_path.glob("driver-*.log")}
    assert kills >= 5, logs
    res = mistudy("run", "--resume", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    children = _check_one_run_per_trial(out, epochs)
    assert len(children) == trials + 1


def _resumable_trial(exp: Path) -> tuple[str, list[int]]:
    """A trial the newest saved state resumes from a checkpoint, and that checkpoint's epochs."""
    state = sorted(exp.glob("experiment_state-*.json"))[-1]
    for entry in json.loads(state.read_text())["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        name = (meta.get("last_result") or {}).get("checkpoint_dir_name")
        if trial["status"] != "TERMINATED" and name:
            history = exp / trial["relative_logdir"] / name / "history.json"
            return trial["trial_id"], [r["epoch"] for r in json.loads(history.read_text())]
    raise AssertionError(f"no trial of {state.name} resumes from a checkpoint")


def _forget_epochs(out: Path, exp: Path, trial_id: str, epochs: set[int]) -> None:
    """What a driver killed before Tune copied its records leaves: the trial's result.json and
    the searcher's saved history without ``epochs``, and MLflow without them (its run)."""
    results = exp / trial_id / "result.json"
    kept = [ln for ln in results.read_text().splitlines()
            if json.loads(ln)["epoch"] not in epochs]
    results.write_text("".join(ln + "\n" for ln in kept))
    searcher = sorted(exp.glob("searcher-state-*.pkl"))[-1]
    state = json.loads(searcher.read_text())
    for e in epochs:
        state["histories"].get(trial_id, {}).pop(str(e), None)
    searcher.write_text(json.dumps(state))
    client = MlflowClient(store_uri(out))
    for run in study_runs(store_uri(out), "tiny", out)[1]:
        if run.data.tags["mistudy.trial_id"] == trial_id:
            client.delete_run(run.info.run_id)


def _one_configuration(path: Path, epochs: int, last_k: int) -> Path:
    """A study of one searched configuration and its matched baseline, told the validation gap
    reduction over the last ``last_k`` epochs."""
    return tiny_spec(path, fixed={"epochs": epochs}, trials=1,
                     search={"families": {"power": {}}, "alpha": 1.01, "batch_size": [50]},
                     objective={"metric": "val_gap_reduction", "mode": "max", "last_k": last_k})


def _assert_every_epoch_once_and_told(out: Path, epochs: int, last_k: int) -> None:
    """Every epoch once in MLflow and in Tune's results of a one-configuration study, and the
    value Optuna was told equal to the gap reduction recomputed from those results."""
    _check_one_run_per_trial(out, epochs)
    runs = {}
    for folder in (out / "ray" / "tiny").iterdir():
        if (folder / "result.json").is_file():
            by_epoch = {json.loads(ln)["epoch"]: json.loads(ln)
                        for ln in (folder / "result.json").read_text().splitlines()}
            assert sorted(by_epoch) == list(range(epochs)), (folder.name, sorted(by_epoch))
            runs[folder.name] = [by_epoch[e] for e in range(epochs)]
    base = next(r for r in runs.values() if r[-1].get("mistudy_baseline"))
    searched = next(r for r in runs.values() if not r[-1].get("mistudy_baseline"))

    def window(records: list, key: str) -> float:
        return sum(r[key] for r in records[-last_k:]) / last_k

    told = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert told.trials[0].value == pytest.approx(
        window(base, "val_gap") - window(searched, "val_gap"), rel=1e-9, abs=1e-12)


def test_epochs_only_a_checkpoint_holds_are_recovered_on_resume(tmp_path: Path) -> None:
    # Tune copies each trial's result.json and the searcher's state into the study folder after
    # the fact, with the experiment state; workers upload checkpoints at once. A driver killed
    # mid-copy leaves a state naming a checkpoint ahead of every record (CI saw a finished run
    # without its last epoch): the trial resumes after epochs nobody recorded. Made certain
    # here: after a kill, a resumable trial's last checkpointed epochs are forgotten as that
    # copy forgets them. On resume they come back from the checkpoint: in Tune's results, in
    # MLflow (each epoch once) and in the value told to Optuna.
    epochs, last_k = 4, 2
    spec = _one_configuration(tmp_path / "spec.yaml", epochs, last_k)
    out = tmp_path / "study"
    exp = out / "ray" / "tiny"
    kill_driver_when(out, spec, min_epochs=3)
    trial_id, held = _resumable_trial(exp)
    forgotten = set(held[-2:])
    _forget_epochs(out, exp, trial_id, forgotten)
    res = mistudy("run", "--resume", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"trial {trial_id}'s results lacked epoch(s) " in res.stdout, res.stdout[-3000:]
    _assert_every_epoch_once_and_told(out, epochs, last_k)


def _tear_newest_state(exp: Path) -> str:
    """Cut the newest saved experiment state in half, as a kill during Tune's copy leaves it;
    returns its session."""
    state = sorted(exp.glob("experiment_state-*.json"))[-1]
    data = state.read_bytes()
    state.write_bytes(data[:len(data) // 2])
    return state.name[len("experiment_state-"):-len(".json")]


def test_a_state_torn_by_a_kill_is_restored_or_set_aside(tmp_path: Path) -> None:
    # Tune copies its state files into the study folder in place: a kill mid-copy leaves one
    # cut short, and every later resume failed with a JSON traceback. Session 1 is killed and
    # its state torn: session 2 restores it from the driver's own copy (still on this machine)
    # and is killed in turn; its state is torn and its driver's copy hidden: session 3 sets it
    # aside and resumes from session 1's. At the end: every epoch once, and the told value
    # recomputed from the complete records. A resumed driver also copies Tune's tuner.pkl back
    # with each save (CI saw a kill leave it empty: EOFError on every resume): session 2's
    # kill empties it too, and session 3 restores it from the copy mistudy keeps.
    from study._resume import CUT, TUNER_COPY, TUNER_FILE, driver_copy

    epochs, last_k = 6, 2
    spec = _one_configuration(tmp_path / "spec.yaml", epochs, last_k)
    out = tmp_path / "study"
    exp = out / "ray" / "tiny"
    kill_driver_when(out, spec, min_epochs=3)
    first = _tear_newest_state(exp)
    kill_driver_when(out, None, min_epochs=epochs_reported(out) + 3,
                     log=tmp_path / "session2.log")
    assert f"session {first} was {CUT}; restored from the driver's copy" in \
        (tmp_path / "session2.log").read_text()
    second = _tear_newest_state(exp)
    assert second != first
    original = driver_copy(exp, second)
    assert original is not None
    whole_tuner = (exp / TUNER_FILE).read_bytes()
    assert (exp / TUNER_COPY).read_bytes() == whole_tuner
    (exp / TUNER_FILE).write_bytes(b"")
    original.rename(original.with_name("driver_artifacts.hidden"))
    try:
        res = mistudy("run", "--resume", "--out", str(out))
    finally:
        original.with_name("driver_artifacts.hidden").rename(original)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"session {second} was {CUT} and the driver's copy is gone; set " \
        "aside, resuming from the state before" in res.stdout, res.stdout[-3000:]
    assert f"tiny/{TUNER_FILE} was {CUT}; restored from " in res.stdout
    assert (exp / TUNER_FILE).read_bytes() == whole_tuner
    assert (exp / f".torn-experiment_state-{second}.json").is_file()
    _assert_every_epoch_once_and_told(out, epochs, last_k)


def _states(out: Path) -> set[Path]:
    exp = out / "ray" / "tiny"
    return set(exp.glob("experiment_state-*.json")) | set(exp.glob("search_gen_state-*.json"))


def test_resume_from_a_stale_state_whose_checkpoints_tune_deleted(tmp_path: Path) -> None:
    # Tune deletes a trial's oldest checkpoint (num_to_keep=2) before its next state snapshot
    # names the newer one; a driver killed in between resumes from a state naming a deleted
    # folder. Made certain here: session 1 is killed early, session 2 runs each trial on by
    # several epochs (Tune deletes what session 1's state named) and is killed, and session
    # 2's state files are removed, so session 3 resumes from session 1's stale state.
    epochs = 20  # room for session 2's 12 epochs (2 trials) with some left for session 3
    spec = tiny_spec(tmp_path / "spec.yaml", fixed={"epochs": epochs}, trials=1)
    out = tmp_path / "study"
    kill_driver_when(out, spec, min_epochs=4)
    first = _states(out)
    at = epochs_reported(out)
    assert at < 2 * epochs
    kill_driver_when(out, None, min_epochs=at + 12)
    assert epochs_reported(out) < 2 * epochs, "session 2 finished the study before the kill"
    for stale in _states(out) - first:
        stale.unlink()
    res = mistudy("run", "--resume", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "which Tune had deleted; restarting it from checkpoint_" in res.stdout, res.stdout
    children = _check_one_run_per_trial(out, epochs)
    assert len(children) == 2


def test_mlflow_server_stopped_and_restarted_mid_study(tmp_path: Path) -> None:
    require_loopback()
    server = MlflowServer(tmp_path / "server")
    server.start()
    epochs = 5
    spec = tiny_spec(tmp_path / "spec.yaml", fixed={"epochs": epochs}, trials=3)
    out = tmp_path / "study"
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", str(spec), "--out", str(out),
                             "--tracking-uri", server.uri], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while epochs_reported(out) < 2:
            assert proc.poll() is None
            time.sleep(0.2)
        server.stop()
        down_at = epochs_reported(out)
        while epochs_reported(out) < down_at + 4 and proc.poll() is None:
            time.sleep(0.2)
        assert epochs_reported(out) > down_at  # the study kept running without MLflow
        server.start()  # same port, same store
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        uri = server.uri
        parents, children = study_runs(uri, "tiny", out)
        assert len(children) == 4
        client = MlflowClient(uri)
        for c in children:
            for key in ("epoch", "mi_y_yhat", "gap"):
                steps = [m.step for m in client.get_metric_history(c.info.run_id, key)]
                assert sorted(steps) == list(range(epochs)), (key, steps)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.stop()


def test_no_secret_is_printed_or_logged(tmp_path: Path, ray_cluster, mlflow_server) -> None:
    secret = "hunter2-s3cr3t"
    uri = mlflow_server.uri.replace("http://", f"http://alice:{secret}@")
    spec = tiny_spec(tmp_path / "spec.yaml", trials=1, fixed={"epochs": 1})
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out), "--address", ray_cluster.address,
                  "--tracking-uri", uri, env=ray_cluster.env)
    assert res.returncode == 0, res.stderr[-3000:]
    token = ray_cluster.env["RAY_AUTH_TOKEN"]
    for text in (res.stdout, res.stderr):
        assert secret not in text and token not in text
    _, children = study_runs(mlflow_server.uri, "tiny", out)
    for c in children:
        blob = json.dumps({**c.data.params, **c.data.tags})
        assert secret not in blob and token not in blob
