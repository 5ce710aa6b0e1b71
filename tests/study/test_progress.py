"""A running study's progress: one line per event when piped (read from a real study's output),
one tqdm bar on a terminal, and the ETA's arithmetic."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from study._progress import StudyProgress, eta_seconds

LINE = re.compile(r"^\[ *\d+s\] (start|epoch|done|FAILED) +(.+?) \| (\d+) finished, (\d+) "
                  r"running, (\d+) pending, (\d+) failed, ETA (\S+)$")


def test_eta_is_the_remaining_epochs_times_the_mean_epoch_over_the_slots() -> None:
    assert eta_seconds([], {"a": 1}, 3, 4, 2) is None  # nothing measured yet
    # running: 3 + 1 epochs left; pending: 2 trials x 4 epochs; mean epoch 3 s; 2 at once
    assert eta_seconds([2.0, 4.0], {"a": 1, "b": 3}, 2, 4, 2) == pytest.approx(12 * 3.0 / 2)
    assert eta_seconds([5.0], {"a": 9}, 0, 4, 1) == 0  # a trial past its budget adds nothing


@pytest.mark.slow
def test_a_piped_study_prints_every_event_once_with_consistent_counts(grown_study: dict
                                                                      ) -> None:
    # The shared study's first writer ran piped: 2 configurations x seeds 0, 1 + 2 baselines.
    events = [m.groups() for ln in grown_study["first_stdout"].splitlines()
              if (m := LINE.match(ln))]
    total, epochs = 6, 2
    seen: dict[str, list[str]] = {}
    finished = 0
    for kind, text, *counts in events:
        if kind == "epoch":
            name, label = text.rsplit(" ", 1)
        else:
            name, label = text.split(":")[0], kind
        seen.setdefault(name, []).append(label)
        fin, run, pend, failed = map(int, counts[:4])
        assert fin + run + pend + failed == total, (kind, text, counts)
        finished += kind == "done"
        assert fin == finished  # the count moves exactly at a trial's "done" line
    assert len(seen) == total, sorted(seen)
    for name, kinds in seen.items():  # start, each epoch in order, done: once each
        assert kinds == ["start", *(f"{e}/{epochs}" for e in range(1, epochs + 1)), "done"], \
            (name, kinds)
    assert events[-1][2:] == ("6", "0", "0", "0", "0m00s")


def _trial(tid: str, family: str, **last: float) -> SimpleNamespace:
    """What the callback reads of a Tune trial: its id, config and last result."""
    config = {"transition": {"family": family, **({"exponent": 0.5} if family == "power"
                                                  else {})},
              "alpha": 1.01, "batch_size": 50, "seed": 0,
              "mistudy_baseline": family == "constant"}
    return SimpleNamespace(trial_id=tid, config=config, last_result=last)


def test_the_terminal_bar_counts_trials_and_names_the_running_ones() -> None:
    out = io.StringIO()
    p = StudyProgress(total=2, epochs=3, stream=out, tty=True)
    a, b = _trial("a", "power"), _trial("b", "constant")
    p.on_trial_start(0, [], a)
    p.on_trial_start(0, [], b)
    p.on_trial_result(0, [], a, {"epochs_done": 1, "epoch_seconds": 2.0})
    text = out.getvalue().split("\r")[-1]
    assert re.search(r"\|[ █▏▎▍▌▋▊▉#0-9]{20}\| 0/2", text), text  # the fixed-width bar
    assert "], 0 finished, 2 running, 0 pending, 0 failed" in text
    assert "power p=0.5 α=1.01 b50 s0 epoch 1/3" in text and "CE b50 s0 epoch 0/3" in text
    assert "ETA 0m05s" in text  # (2 + 3) epochs left x 2 s over 2 trials at once
    for t in (a, b):
        t.last_result = {"gap": 0.1, "test_acc": 0.9}
        p.on_trial_complete(0, [], t)
    assert "start  power p=0.5 α=1.01 b50 s0\n" in out.getvalue()  # a line above the bar
    assert "done   CE b50 s0: gap 0.1000, test acc 0.900\n" in out.getvalue()
    last = out.getvalue().split("\r")[-1]
    assert "2/2" in last and last.rstrip().endswith("ETA 0m00s")  # no dangling separator
    assert " , " not in out.getvalue()
    p.on_experiment_end([])
