"""A real study with a local Ray: every trial lands as one nested MLflow run with full
per-epoch histories, artifacts and tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.study.conftest import mistudy, store_uri, study_runs, tiny_spec, tune_trial_ids
from trainables import RECORD_KEYS, TrainConfig
from trainables.records import DEFAULT_LAST_K, SUMMARY_METRICS

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def check_study_store(uri: str, study_dir: Path, epochs: int) -> list:
    parents, children = study_runs(uri, "tiny", study_dir)
    assert len(parents) == 1
    trial_ids = tune_trial_ids(study_dir)
    assert sorted(c.data.tags["mistudy.trial_id"] for c in children) == sorted(trial_ids)
    client = MlflowClient(uri)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED"
        # the epoch records and the summary columns, no Ray bookkeeping noise
        extra = set(child.data.metrics) - set(RECORD_KEYS)
        assert set(RECORD_KEYS) <= set(child.data.metrics) and extra <= set(SUMMARY_METRICS)
        assert {"final_gap", "final_test_acc"} <= extra
        gaps = sorted(client.get_metric_history(child.info.run_id, "gap"), key=lambda m: m.step)
        last_k = min(DEFAULT_LAST_K, epochs)
        assert child.data.metrics["final_gap"] == pytest.approx(
            sum(m.value for m in gaps[-last_k:]) / last_k, rel=1e-12)
        for key in RECORD_KEYS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(epochs)), (key, steps)
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "metrics.csv", "trajectories.png"} <= arts
    return children


def test_local_study_records_every_trial(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "spec.yaml")
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "best configurations by val_ce" in res.stdout and "mistudy ui --out" in res.stdout
    meta = json.loads((out / "study.json").read_text())
    assert meta["tracking_uri"] == "folder"  # the folder's own store, wherever it moves
    meta["tracking_uri"] = store_uri(out)
    assert meta["tracking_uri"] == f"sqlite:///{(out / 'mlflow.db').resolve()}"
    children = check_study_store(meta["tracking_uri"], out, epochs=2)
    assert len(children) == 4 + 1  # four searched trials and the matched CE baseline
    base = [c for c in children if c.data.tags["mistudy.baseline"] == "true"]
    assert len(base) == 1 and base[0].data.params["transition.family"] == "constant"
    for c in children:
        tags = c.data.tags
        assert tags["mistudy.node"] == "127.0.0.1" and tags["mistudy.device"] == "cpu"
        assert tags["mistudy.dataset"] == "fashion_mnist" and tags["mistudy.family"]
        assert c.data.params["epochs"] == "2" and "kernel.horizon" in c.data.params
    # The logged config is a complete training config that `mistudy train` takes as it is.
    client = MlflowClient(meta["tracking_uri"])
    path = client.download_artifacts(children[0].info.run_id, "config.yaml", str(tmp_path))
    TrainConfig.from_dict(yaml.safe_load(Path(path).read_text()))
    # Each trial drew its own plot in its last checkpoint (the driver only uploads it): the
    # logged PNG is that file, byte for byte, and its history covers every epoch.
    drawn = {p.read_bytes() for p in out.glob("ray/*/*/checkpoint_*/trajectories.png")}
    assert len(drawn) == len(children)
    for c in children:
        png = client.download_artifacts(c.info.run_id, "trajectories.png", str(tmp_path / "a"))
        assert Path(png).read_bytes() in drawn
    # and the driver drew none (the copy would be byte-identical: the count tells them apart)
    assert json.loads((out / "timings.json").read_text())["driver_plots"] == 0
    for hist in out.glob("ray/*/*/checkpoint_*/history.json"):
        assert [r["epoch"] for r in json.loads(hist.read_text())] == \
            list(range(len(json.loads(hist.read_text()))))
    # A second run into the same folder is refused: nothing is duplicated.
    again = mistudy("run", str(spec), "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr


def test_study_against_a_real_mlflow_server(tmp_path: Path, mlflow_server) -> None:
    spec = tiny_spec(tmp_path / "spec.yaml")
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out), "--tracking-uri", mlflow_server.uri)
    assert res.returncode == 0, res.stderr[-3000:]
    children = check_study_store(mlflow_server.uri, out, epochs=2)
    assert len(children) == 5
    assert not (out / "mlflow.db").exists()


def test_unreachable_tracking_server_exits_2_before_anything(tmp_path: Path) -> None:
    from tests.study.conftest import free_port

    spec = tiny_spec(tmp_path / "spec.yaml")
    res = mistudy("run", str(spec), "--out", str(tmp_path / "s"),
                  "--tracking-uri", f"http://127.0.0.1:{free_port()}", timeout=120)
    assert res.returncode == 2 and "unreachable" in res.stderr
    assert not (tmp_path / "s").exists()


def test_ui_serves_the_study_store_on_loopback(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    from tests.study.conftest import BIN, free_port, wait_http

    out = tmp_path / "study"
    out.mkdir()
    (out / "spec.yaml").write_text(tiny_spec(tmp_path / "spec.yaml").read_text())
    uri = f"sqlite:///{out / 'mlflow.db'}"
    (out / "study.json").write_text(json.dumps({"study_id": "x", "name": "tiny",
                                                "experiment": "tiny", "tracking_uri": uri}))
    MlflowClient(uri).create_experiment("tiny")
    port = free_port()
    proc = subprocess.Popen([str(BIN / "mistudy"), "ui", "--out", str(out), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=300)  # a loaded machine
        t0 = time.time()
        import urllib.request

        body = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name"
            f"?experiment_name=tiny", timeout=10).read()
        assert b'"name": "tiny"' in body or b'"name":"tiny"' in body
        assert time.time() - t0 < 10
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_asha_study_stops_searched_trials_on_the_epoch_clock_and_spares_baselines(
        tmp_path: Path) -> None:
    # ASHA (grace 1 epoch, factor 2) halves the searched trials at each rung by val_ce;
    # the matched baselines always run every epoch (gap closure needs them whole).
    epochs = 4
    spec = tiny_spec(tmp_path / "spec.yaml", fixed={"epochs": epochs}, trials=6,
                     scheduler="asha", asha={"grace_period": 1, "reduction_factor": 2})
    out = tmp_path / "study"
    res = mistudy("run", str(spec), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    lengths = {}
    for trial in (out / "ray" / "tiny").iterdir():
        if (trial / "result.json").exists():
            rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
            assert [r["epochs_done"] for r in rows] == [r["epoch"] + 1 for r in rows]
            lengths[trial.name] = (rows[0]["mistudy_baseline"], len(rows))
    assert len(lengths) == 7
    assert all(n == epochs for base, n in lengths.values() if base)
    searched = sorted(n for base, n in lengths.values() if not base)
    assert searched[0] < epochs, searched  # at least one stopped at a rung
    assert searched[-1] == epochs  # the best went the distance
