"""The paper's §5.3 criterion: ``I(Y;Ŷ)`` has saturated -- learning activity has ended.

Saturated at epoch ``e`` when, over the ``window`` epochs ending at ``e``, every relative change
``|I_t - I_{t-1}| / max(|I_{t-1}|, eps)`` is below ``rel_tol`` and, when ``grad_tol`` is set,
every ``mi_grad_norm`` is below ``grad_tol``. Shared by the study's stopper and the analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["saturation_epoch", "SATURATION_KEYS", "saturation_settings"]

# the stopper settings the criterion reads (a spec's ``stopper:`` also has min_epochs, when to
# start stopping): the stopper, the MLflow tag and the ranking read them with this one rule
SATURATION_KEYS = ("window", "rel_tol", "grad_tol")


def saturation_settings(stopper: Any) -> dict[str, Any]:
    """The criterion's settings in a spec's ``stopper:`` mapping (anything else: none)."""
    return {k: stopper[k] for k in SATURATION_KEYS if k in stopper} \
        if isinstance(stopper, dict) else {}


def saturation_epoch(
    mi: Sequence[float],
    grad_norm: Sequence[float] | None = None,
    *,
    window: int = 3,
    rel_tol: float = 0.01,
    grad_tol: float | None = None,
) -> int | None:
    """The first epoch at which ``I(Y;Ŷ)`` counts as saturated, or ``None``."""
    if window < 1:
        raise ValueError(f"window={window!r} must be an integer >= 1")
    for e in range(window, len(mi)):
        steps = range(e - window + 1, e + 1)
        flat = all(abs(mi[t] - mi[t - 1]) / max(abs(mi[t - 1]), 1e-12) < rel_tol for t in steps)
        still = grad_tol is None or (
            grad_norm is not None and all(grad_norm[t] < grad_tol for t in steps)
        )
        if flat and still:
            return e
    return None
