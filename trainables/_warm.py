"""Ray worker setup hook: import what every trial needs before the first trial arrives.

A trial's first seconds in a fresh worker go to imports: torch, and ``torch._dynamo``, which
``torch.optim.Optimizer.__init__`` imports on its first call (about 1.3 s each on a slow
CPU). Ray starts its workers while the driver is still preparing the study, so paying the
imports there takes them off the trials' clock.
"""

from __future__ import annotations


def warm_imports() -> None:
    import torch
    import torch._dynamo  # noqa: F401 - imported by Optimizer.__init__ otherwise

    from . import loop  # noqa: F401 - the trainer, its data and estimator modules

    del torch
