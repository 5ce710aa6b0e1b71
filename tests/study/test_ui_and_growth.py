"""The shared real study (``grown_study`` in tests/conftest.py): growing it, the MLflow layout a
user compares schedules in, and the UI in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import EPOCHS, optuna_trials
from tests.study.conftest import BIN, free_port, mistudy, store_uri, study_runs, tiny_spec
from trainables.records import run_name

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_growing_keeps_history_samples_new_configs_and_runs_no_baseline_twice(
        grown_study: dict) -> None:
    out = grown_study["out"]
    after = optuna_trials(out)
    assert sorted(after) == [0, 1, 2, 3]
    for n, (value, params) in grown_study["optuna_before"].items():
        assert after[n] == (value, params)  # the first two trials' values unchanged
    assert len({json.dumps(p, sort_keys=True) for _, p in after.values()}) == 4  # no re-sample
    parents, children = study_runs(store_uri(out), "tiny", out)
    assert len(parents) == 1
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    base = [c for c in children if c.data.tags["mistudy.baseline"] == "true"]
    searched = [c for c in children if c.data.tags["mistudy.baseline"] == "false"]
    assert len(base) == 2 and len(searched) == 4 * 2  # 4 configurations x 2 seeds
    assert len({c.data.tags["mistudy.trial_id"] for c in children}) == len(children)
    assert sorted(c.data.tags["mistudy.optuna_trial"] for c in searched) == \
        sorted(str(n) for n in range(4) for _ in range(2))
    assert (out / "ray" / "tiny-more1").is_dir()
    # the end-of-study summary lists the best trials of every experiment (issue 13, item 14)
    # (one line per configuration told to Optuna: 2 after the first run, 4 once grown)
    for res, n in ((grown_study["grown"].stdout, 4), (grown_study["first_stdout"], 2)):
        best = [ln for ln in res.splitlines() if ln.startswith("  ") and "val_ce=" in ln]
        assert len(best) == n, res[-2000:]


def test_changing_the_spec_on_resume_is_refused(grown_study: dict) -> None:
    other = tiny_spec(grown_study["root"] / "other.yaml", trials=2, seeds=[0, 1, 2])
    res = mistudy("run", str(other), "--resume", "--out", str(grown_study["out"]))
    assert res.returncode == 2 and "only --trials may change" in res.stderr
    res = mistudy("run", "--resume", "--out", str(grown_study["out"]), "--trials", "3")
    assert res.returncode == 2 and "--trials=3" in res.stderr


def test_runs_carry_readable_names_a_schedule_tag_and_sortable_summaries(
        grown_study: dict) -> None:
    out = grown_study["out"]
    client = MlflowClient(store_uri(out))
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    _, children = study_runs(store_uri(out), "tiny", out)
    by_config: dict[str, set[str]] = {}
    for c in children:
        cfg = {k: json.loads(v) if re.fullmatch(r"-?[\d.e+-]+", v) else v
               for k, v in c.data.params.items()}
        tr = {k.split(".", 1)[1]: v for k, v in cfg.items() if k.startswith("transition.")}
        config = {"transition": tr, "alpha": cfg["alpha"], "batch_size": cfg["batch_size"],
                  "seed": cfg["seed"], "mistudy_baseline": c.data.tags["mistudy.baseline"]
                  == "true"}
        assert c.info.run_name == run_name(config)
        assert c.info.run_name.endswith(f" b50 s{cfg['seed']}")
        key = c.data.tags.get("mistudy.optuna_trial", "baseline")
        by_config.setdefault(key, set()).add(c.data.tags["schedule"])
        gaps = sorted(client.get_metric_history(c.info.run_id, "gap"), key=lambda m: m.step)
        assert c.data.metrics["final_gap"] == pytest.approx(
            sum(m.value for m in gaps) / len(gaps), rel=1e-12)  # last_k = epochs = 2
    assert all(len(tags) == 1 for tags in by_config.values())  # seeds share the tag
    assert len({next(iter(t)) for t in by_config.values()}) == len(by_config)
    # gap closure against the matched baseline (same seed), computed here from the histories
    hist = {c.info.run_id: {m.step: m.value for m in client.get_metric_history(
        c.info.run_id, "gap")} for c in children}
    base = {c.data.params["seed"]: hist[c.info.run_id] for c in children
            if c.data.tags["mistudy.baseline"] == "true"}
    for c in children:
        if c.data.tags["mistudy.baseline"] == "true":
            continue
        gb = sum(base[c.data.params["seed"]].values()) / EPOCHS
        gt = sum(hist[c.info.run_id].values()) / EPOCHS
        if gb > 0:
            assert c.data.metrics["gap_closure"] == pytest.approx((gb - gt) / gb, rel=1e-9)
    parent, _ = study_runs(store_uri(out), "tiny", out)
    arts = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {"ranking.csv", "ranking.md"} <= arts
    assert {"best_val_closure", "best_test_closure"} & set(parent[0].data.metrics)


def _tree(pid: int) -> list[int]:
    from study._procs import descendants

    return [pid, *descendants(pid)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_ui_link_opens_the_charted_trial_runs_and_sigterm_stops_everything(
        grown_study: dict, tmp_path: Path) -> None:
    from study._ui import port_free

    port = free_port()
    out = str(grown_study["out"])
    proc = subprocess.Popen([str(BIN / "mistudy"), "ui", "--out", out, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree: list[int] = []
    try:
        line = ""
        deadline = time.time() + 180
        while time.time() < deadline and "MLflow UI:" not in line:
            line = proc.stdout.readline() if proc.stdout else ""
            tree = sorted(set(tree) | set(_tree(proc.pid)))
        link = line.split("MLflow UI: ", 1)[1].strip()
        assert "#/experiments/" in link and "compareRunsMode=CHART" in link
        assert "viewStateShareKey=" in link  # the stored view: schedules beside baselines
        dom = ""
        for attempt in range(3):  # a loaded machine can need more than one page load
            dom = _chromium(link, tmp_path / str(attempt), "--dump-dom", port)
            if 'title="mi_y_yhat"' in dom:
                break
        assert "Welcome to MLflow" not in dom and "Traces 0" not in dom  # not the GenAI view
        _, children = study_runs(store_uri(grown_study["out"]), "tiny", grown_study["out"])
        for c in children[:3]:
            assert c.info.run_name in dom  # readable names, listed flat (not collapsed)
        a = dom.index('title="mi_y_yhat"')
        b = dom.index("(mi_y_yhat)", a)
        assert re.search(r'class="js-line" d="M[\d.]+,[\d.]+L', dom[a:b]), \
            "no line drawn in the mi_y_yhat chart"
        # the chart's legend: the top schedule and a matched CE baseline charted together
        legend = re.findall(r">([^<>]+) \(mi_y_yhat\)<", dom[a:dom.index('title="mi_y_x"')])
        assert any(n.startswith("CE ") for n in legend), legend
        assert any(not n.startswith("CE ") for n in legend), legend
        assert dom.index('title="mi_y_yhat"') < dom.index('title="dpi_margin"')  # MI first
        tree = sorted(set(tree) | set(_tree(proc.pid)))
        assert len(tree) >= 3  # mistudy, the MLflow server, its workers
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.3)
    assert not [p for p in tree if _alive(p)], "processes of the UI tree left after SIGTERM"
    assert port_free("127.0.0.1", port)
    assert proc.returncode == 0


def _chromium(url: str, tmp: Path, what: str, port: int) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: `make data` installs it (apt)")
    tmp.mkdir(parents=True, exist_ok=True)
    # a random free port can be one Chromium blocks (ERR_UNSAFE_PORT, e.g. 5061): allow it
    res = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                          f"--explicitly-allowed-ports={port}",
                          f"--user-data-dir={tmp / 'chrome'}", "--window-size=1400,5000",
                          "--virtual-time-budget=60000", what, url],
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "HOME": str(tmp)})
    return res.stdout
