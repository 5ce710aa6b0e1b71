"""Kill the driver with SIGKILL mid-study, resume: the study completes, and every trial has
exactly one MLflow run with each epoch logged exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.study.conftest import BIN, mistudy, store_uri, study_runs, tiny_spec, tune_trial_ids

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def epochs_reported(study_dir: Path) -> int:
    exp = study_dir / "ray" / "tiny"
    if not exp.exists():
        return 0
    return sum(len((t / "result.json").read_text().splitlines())
               for t in exp.iterdir() if (t / "result.json").exists())


def kill_driver_when(study_dir: Path, spec: Path | None, min_epochs: int) -> None:
    """Start ``mistudy run SPEC`` (``--resume`` when ``spec`` is None) and SIGKILL the driver,
    then its process group, once ``min_epochs`` results are on disk."""
    args = [str(spec)] if spec is not None else ["--resume"]
    proc = subprocess.Popen([str(BIN / "mistudy"), "run", *args, "--out", str(study_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while epochs_reported(study_dir) < min_epochs:
        assert proc.poll() is None, "the study ended before the kill"
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies without any cleanup
    proc.wait()
    time.sleep(1)
    try:  # then the rest of its machine: the local Ray it started
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_driver_then_resume(tmp_path: Path) -> None:
    epochs = 4
    spec = tiny_spec(tmp_path / "spec.yaml", fixed={"epochs": epochs}, trials=3)
    out = tmp_path / "study"
    kill_driver_when(out, spec, min_epochs=3)
    total = 3 + 1
    assert epochs_reported(out) < total * epochs  # really interrupted
    res = mistudy("run", "--resume", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    uri = store_uri(out)
    parents, children = study_runs(uri, "tiny", out)
    assert len(parents) == 1
    ids = tune_trial_ids(out)
    assert len(ids) == total
    assert sorted(c.data.tags["mistudy.trial_id"] for c in children) == sorted(ids)
    client = MlflowClient(uri)
    for c in children:
        assert c.info.status == "FINISHED"
        for key in ("epoch", "mi_y_yhat", "test_ce"):
            steps = [m.step for m in client.get_metric_history(c.info.run_id, key)]
            assert sorted(steps) == list(range(epochs)), (c.info.run_name, key, steps)
