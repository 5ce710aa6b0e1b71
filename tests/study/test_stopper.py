"""The saturation criterion (paper §5.3), the stopper built on it, and ASHA sparing baselines."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from study._schedulers import BaselineSafeASHA, SaturationStopper
from trainables.saturation import saturation_epoch


def test_saturation_epoch_by_hand() -> None:
    mi = [1.0, 2.0, 2.5, 2.51, 2.515, 2.516, 2.6]
    # relative changes: 1, .25, .004, .002, .0004, .033 -> three in a row below 1% end at 5
    assert saturation_epoch(mi, window=3, rel_tol=0.01) == 5
    assert saturation_epoch(mi, window=2, rel_tol=0.01) == 4
    assert saturation_epoch(mi, window=5, rel_tol=0.01) is None
    grads = [1, 1, 1, 0.5, 0.5, 0.001, 0.001]
    assert saturation_epoch(mi, grads, window=2, rel_tol=0.01, grad_tol=0.01) is None
    assert saturation_epoch(mi, grads, window=1, rel_tol=0.01, grad_tol=0.01) == 5


def test_stopper_stops_saturated_trials_but_never_baselines() -> None:
    stop = SaturationStopper(window=2, rel_tol=0.01)
    mi = [1.0, 2.0, 2.001, 2.002]
    decisions = [stop("t", {"mi_y_yhat": v, "mi_grad_norm": 1.0}) for v in mi]
    assert decisions == [False, False, False, True]
    base = [stop("b", {"mi_y_yhat": v, "mi_grad_norm": 1.0, "mistudy_baseline": 1})
            for v in mi]
    assert not any(base) and not stop.stop_all()


def _rung_decisions(asha: AsyncHyperBandScheduler) -> dict[str, str]:
    """Six searched trials reach epoch 1 with a good val CE, then a searched trial and a
    baseline with a far worse one: the two worst at ASHA's first rung."""
    out = {}
    trials = [SimpleNamespace(config={}, trial_id=f"t{i}") for i in range(6)] + [
        SimpleNamespace(config={}, trial_id="bad"),
        SimpleNamespace(config={"mistudy_baseline": True}, trial_id="base")]
    for t in trials:
        asha.on_trial_add(None, t)
    for i, t in enumerate(trials[:6]):
        out[t.trial_id] = asha.on_trial_result(None, t, {"val_ce": 1.0 + 0.01 * i,
                                                          "training_iteration": 1})
    for t in trials[6:]:
        out[t.trial_id] = asha.on_trial_result(None, t, {"val_ce": 99.0,
                                                         "training_iteration": 1})
    return out


def test_asha_never_stops_a_baseline() -> None:
    kw = {"metric": "val_ce", "mode": "min", "max_t": 10, "grace_period": 1,
          "reduction_factor": 2}
    plain = _rung_decisions(AsyncHyperBandScheduler(**kw))
    # the control: plain ASHA stops both (so this test needs the override to pass)
    assert plain["bad"] == plain["base"] == TrialScheduler.STOP
    safe = _rung_decisions(BaselineSafeASHA(**kw))
    assert safe["bad"] == TrialScheduler.STOP  # it still prunes searched trials
    assert safe["base"] == TrialScheduler.CONTINUE
    assert all(safe[f"t{i}"] == plain[f"t{i}"] for i in range(6))
