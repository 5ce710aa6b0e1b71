"""Ray for a study: environment, start (local on loopback, or an existing cluster), stop, and
the resource check that refuses a trial no node could ever run."""

from __future__ import annotations

import os
import sys
from typing import Any

from ._folder import StudyError

__all__ = ["ray_environment", "init_ray", "shutdown_ray", "slots", "check_resources",
           "check_local_cpus", "allow_pending_trials"]


def ray_environment(address: str | None) -> None:
    """Set before ray is first imported (Ray reads these at import time)."""
    if address is None:
        # A local Ray binds to loopback only (Ray resolves 127.0.0.1 to a routable address
        # unless its multi-node support is off, which a single local node does not need).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # No idle workers prestarted for the driver: a study's trials run with the job's
        # worker setup hook (init_ray), so Ray starts their workers apart and the prestarted
        # ones only cost their imports (~0.5 CPU-s each, one per CPU).
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # JSON logger only
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start (or join) Ray. Interrupted while starting -- Ctrl-C, SIGTERM -- it stops what it
    had started (dashboard and runtime-env agents included) before the interrupt goes on."""
    import logging

    import ray

    if ray.is_initialized():
        return
    # Ray's notice that a local cluster turned token authentication on (its default) reaches
    # the terminal of every study through logging's last-resort handler; not the user's news.
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False,
                              "include_dashboard": False}
    if os.environ.get("MISTUDY_WARM_WORKERS", "1") == "1":
        kwargs["runtime_env"] = {"worker_process_setup_hook": "trainables._warm.warm_imports"}
    try:
        if address is None:
            # "local": always a new local instance, never a cluster `ray start` left running.
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                     **kwargs)
        else:
            kwargs.pop("include_dashboard")
            ray.init(address=address, **kwargs)
    except BaseException:
        shutdown_ray()
        raise


def shutdown_ray() -> None:
    """Stop the local Ray this process started (or leave a cluster it joined). A command
    refused before Ray started never imported it, and does not now (~0.3 CPU-s)."""
    if "ray" not in sys.modules:
        return
    import ray

    try:
        ray.shutdown()
    except Exception:
        pass


def slots(cpus: float, gpus: float) -> int:
    """Trials the cluster can run at once with these per-trial resources."""
    import ray

    res = ray.cluster_resources()
    n = res.get("CPU", 1) / cpus
    if gpus > 0:
        n = min(n, res.get("GPU", 0) / gpus)
    return max(1, int(n))


def check_resources(cpus: float, gpus: float) -> None:
    """A trial asking for more than the largest node has would wait forever (Tune only warns
    after a minute): refused now, naming what the cluster has."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    best_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    best_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus > best_cpu:
        raise StudyError(f"cpus_per_trial={cpus:g} but the largest Ray node has {best_cpu:g} "
                         f"CPUs; allowed: at most {best_cpu:g}")
    if gpus > best_gpu:
        raise StudyError(f"gpus_per_trial={gpus:g} but the largest Ray node has {best_gpu:g} "
                         f"GPUs; allowed: at most {best_gpu:g}")


def check_local_cpus(cpus: float, num_cpus: int | None) -> None:
    """The same refusal for a local Ray, before Ray starts or anything is written."""
    have = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
    if cpus > have:
        raise StudyError(f"cpus_per_trial={cpus:g} but this machine's Ray has {have} CPUs; "
                         f"allowed: at most {have} (or --address a cluster with more)")


def local_gpus() -> int:
    """The GPUs a local Ray would see (it honours ``CUDA_VISIBLE_DEVICES``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:
        return 0


def check_local_gpus(gpus: float) -> None:
    """``gpus_per_trial`` on a machine without that many GPUs: refused before Ray starts or
    anything is written (Ray would only refuse once the study folder exists)."""
    if gpus > 0:
        have = local_gpus()
        if gpus > have:
            raise StudyError(f"gpus_per_trial={gpus:g} but this machine has {have} GPU(s); "
                             f"allowed: at most {have} (or --address a cluster with GPUs)")


def allow_pending_trials(cpus: float, gpus: float) -> None:
    """Tune starts one trial at a time when a searcher is used (one pending placement group);
    a trial's actor takes seconds to start, so slots sat idle. Allow one pending trial per
    slot the cluster has."""
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(slots(cpus, gpus)))
