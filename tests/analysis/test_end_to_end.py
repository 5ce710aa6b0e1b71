"""On the shared tiny real study: rank -> export -> `mistudy train --config` reproduces the
exported trial's numbers; the HTML report renders in a real headless Chromium."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis import analyze
from tests.study.conftest import mistudy
from trainables.records import RECORD_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture
def finished_study(grown_study: dict) -> Path:
    """The session's shared real study (tests/conftest.py): 4 configurations x seeds 0 and 1
    plus baselines, 2 epochs, grown from 2 configurations by a second Tune experiment."""
    return Path(grown_study["out"])


def test_rank_export_and_rerun_reproduces_the_trial(finished_study: Path, tmp_path: Path
                                                    ) -> None:
    def written() -> tuple:
        arts = finished_study / "mlartifacts"
        return ((finished_study / "mlflow.db").stat().st_mtime_ns,
                sorted((str(p), p.stat().st_mtime_ns) for p in arts.rglob("*")))

    before = written()
    res = mistudy("rank", str(finished_study), "--last-k", "2", "--format", "markdown")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("| rank | schedule | val_closure")
    assert written() == before  # rank only reads (issue 21, item 10)
    res = mistudy("rank", str(finished_study), "--last-k", "2", "--log")
    assert res.returncode == 0, res.stderr
    a = analyze(str(finished_study), last_k=2)
    assert len(a.ranking) == 4 and (a.ranking.n_seeds == 2).all()
    # The ranking is logged to the parent run.
    client = MlflowClient(a.data.tracking_uri)
    assert {"ranking.csv", "ranking.md"} <= {x.path for x in
                                             client.list_artifacts(a.data.parent_run_id)}
    out = tmp_path / "best"
    res = mistudy("export", str(finished_study), "--top", "1", "--out", str(out),
                  "--last-k", "2", "--include-flagged")
    assert res.returncode == 0, res.stderr
    exported = sorted(out.glob("01-*.yaml"))
    cfg_path = next(p for p in exported if not p.name.endswith(".study.yaml"))
    spec_path = next(p for p in exported if p.name.endswith(".study.yaml"))
    from study.spec import load_spec

    assert load_spec(str(spec_path)).trials == 1  # a new study takes it as it is
    cfg = yaml.safe_load(cfg_path.read_text())
    rerun = tmp_path / "rerun"
    res = mistudy("train", "--config", str(cfg_path), "--out", str(rerun), "--quiet")
    assert res.returncode == 0, res.stderr
    with open(rerun / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    run_id = a.ranking.run_ids.iloc[0][0]
    assert client.get_run(run_id).data.params["seed"] == str(cfg["seed"])
    for key in RECORD_KEYS:
        if key == "epoch_seconds":
            continue
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [float(r[key]) for r in rows] == pytest.approx([m.value for m in logged],
                                                              rel=1e-9, abs=1e-12), key


def test_report_renders_in_headless_chromium(finished_study: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "make setup installs Debian's chromium for this test"
    out = tmp_path / "report"
    res = mistudy("report", str(finished_study), "--out", str(out))
    assert res.returncode == 0, res.stderr
    page = out / "report.html"
    for png in ("trajectories.png", "transitions.png", "grad_norm.png", "pareto.png"):
        assert (out / png).stat().st_size > 5000
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'class="dataframe ranking"' in dom and dom.count("<img") == 5  # + closure by family
    assert dom.count("<tr") >= 5  # header + four schedules
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))[..., :3]  # (H, W, 3) in [0, 1]
    colored = (img.max(axis=2) - img.min(axis=2)) > 0.25  # plot lines, not text or white
    assert colored.mean() > 0.002, "the figures did not render"
    assert np.any(img < 0.2)  # text


def test_rank_into_a_closed_pipe_stops_quietly(finished_study: Path) -> None:
    """`mistudy rank ... | head`: when the reader is gone before the table is printed, rank
    ends as a Unix tool killed by SIGPIPE would (exit 141), without a traceback."""
    from tests.study.conftest import BIN

    proc = subprocess.Popen([str(BIN / "mistudy"), "rank", str(finished_study)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # no reader left: the first print meets a broken pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and "Traceback" not in err, err
