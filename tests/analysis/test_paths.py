"""``mistudy paths``: the answer across search paths, checked on the committed bundles (three
real paths of the MNIST closure spec, ordered search, pruned: docs/findings.md) against numbers
computed here from each bundle's own ranking and confirmation, and on regions by their
definition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from analysis import analyze, confirmation, get_paths_info, region_of

ROOT = Path(__file__).resolve().parents[2] / "docs" / "findings"
PATHS = [str(ROOT / "paths" / f"mnist-paths-s{s}.tar.gz") for s in (0, 1, 2)]
SEARCH = {"families": {"power": {"exponent": [0.1, 2.0]}, "linear": {"duration": [2, 30]}},
          "alpha": [1.01, 3.0], "batch_size": [64, 128]}


def test_a_region_is_the_family_its_listed_parameters_third_alpha_third_and_batch() -> None:
    cfg = {"transition": {"family": "power", "exponent": 1.9}, "alpha": 1.2, "batch_size": 64}
    assert region_of(cfg, SEARCH) == "power exponent high α low b64"
    cfg = {"transition": {"family": "linear", "duration": 3, "floor": 0.5}, "alpha": 2.0,
           "batch_size": 128}
    # duration is listed by the spec: it names the region (floor is declared first)
    assert region_of(cfg, SEARCH) == "linear duration low α mid b128"


def test_the_paths_table_counts_each_paths_feasible_top_k() -> None:
    info = get_paths_info(PATHS, k=5)
    assert info.seeds == [0, 1, 2]
    # the enqueued schedule, confirmed by all three paths on the same fresh seeds and split
    # draws, has the same numbers in each: the runs repeat (a disagreement would be listed)
    assert info.disagreements == []
    for study, top in zip(PATHS, info.tops, strict=True):
        a = analyze(study, phase="search")
        ok = a.ranking[a.ranking.feasible]
        assert top == list(ok.schedule.head(5))  # the ranking's own rule
    # each region's count = the paths with one of its schedules in their top 5
    for r in info.regions.to_dict("records"):
        hits = [any(s in set(r["schedules"]) for s in top) for top in info.tops]
        assert r["paths"] == sum(hits)
    assert sum(len(r["schedules"]) for r in info.regions.to_dict("records")) == \
        len({s for t in info.tops for s in t})
    # the union's confirmed numbers are the paths' own confirmations
    union = info.union.set_index("schedule")
    for study in PATHS:
        c = confirmation(study)
        for row in c.table.to_dict("records"):
            if row["schedule"] in union.index:
                assert union.loc[row["schedule"], "confirmed"] == \
                    row["confirmed_test_gap_reduction"]
    # the paper's schedule (enqueued: in every path) holds in all three
    assert union.loc["power p=0.5 α=1.01 b64", "paths"] == 3


def test_paths_needs_two_studies_and_says_so_in_one_line() -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "mistudy"), "paths", PATHS[0]],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "two or more" in res.stderr
