"""The names a config may use, torch-free: a spec, the CLI and the analysis validate against
them without importing torch (the modules that implement them import these, not the other
way round)."""

from __future__ import annotations

__all__ = ["DATASETS", "VAL_SOURCES", "MODEL_NAMES", "STRATEGIES", "METHODS",
           "MAX_TRACE_ORDER", "integer_order"]

DATASETS = ("mnist", "fashion_mnist")
VAL_SOURCES = ("test_file", "train_file")  # where an IDX dataset's validation split comes from
MODEL_NAMES = ("resnet18", "shallow")  # trainables.models.MODELS builds them
STRATEGIES = ("alignment", "silverman", "fixed")  # kernel-width strategies (kernel_width.py)
METHODS = ("auto", "eigen", "trace")  # how the estimator computes an entropy
MAX_TRACE_ORDER = 8  # tr(A^n) by products up to here (n = 8: three products)


def integer_order(alpha: float, method: str = "auto") -> int | None:
    """The integer ``n`` when the estimator's trace path computes order ``alpha`` (``method``
    "auto": an integer in [2, MAX_TRACE_ORDER], 2.0 included; "eigen": never; "trace":
    required)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {list(METHODS)}")
    n = int(alpha) if float(alpha).is_integer() and 2 <= alpha <= MAX_TRACE_ORDER else None
    if method == "trace" and n is None:
        raise ValueError(f"alpha={alpha!r}: the trace path needs an integer order in "
                         f"[2, {MAX_TRACE_ORDER}]")
    return None if method == "eigen" else n
