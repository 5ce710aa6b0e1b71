"""Loading a study from MLflow: 200 trial runs × 100 epochs × every record key, SQLite store,
each run finished as the tracker finishes it (its records also as a metrics.csv artifact, which
the analysis reads in one go; unfinished runs are read from their metric histories)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from trainables.records import RECORD_KEYS, ROLE_TRIAL, TAGS, write_metrics


def run(trials: int = 200, epochs: int = 100) -> dict[str, Any]:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from analysis import load_study

    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{Path(d) / 'm.db'}"
        client = MlflowClient(uri)
        exp = client.create_experiment("load", artifact_location=Path(d).as_uri())
        t0 = time.perf_counter()
        per_batch = 1000 // len(RECORD_KEYS)  # MLflow takes 1000 metrics per call
        for i in range(trials):
            rid = client.create_run(exp, tags={TAGS.role: ROLE_TRIAL,
                                               TAGS.trial_id: f"t{i}"}).info.run_id
            client.log_batch(rid, params=[Param("seed", str(i))])
            for e0 in range(0, epochs, per_batch):
                client.log_batch(rid, metrics=[Metric(k, float(e), 0, e) for e in
                                               range(e0, min(epochs, e0 + per_batch))
                                               for k in RECORD_KEYS])
            csv = Path(d) / "metrics.csv"
            write_metrics(csv, [{k: float(e) for k in RECORD_KEYS} | {"epoch": e}
                                for e in range(epochs)])
            client.log_artifact(rid, str(csv))
            client.set_terminated(rid)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = load_study("load", uri)
        t_load = time.perf_counter() - t0
    return {"trials": trials, "epochs": epochs, "points": trials * epochs * len(RECORD_KEYS),
            "write_s": t_write, "load_s": t_load, "rows": len(data.history)}
