"""How busy a study kept its slots: from each trial's ``result.json`` (Tune's own records), the
time each trial trained (first epoch's start to last epoch's end) against slots x the search's
wall time. The ordered search's cost is the slot time it leaves idle while a configuration
waits for the ones its draw depends on; a machine loaded by other work slows trials and wall
time alike, so this fraction is comparable where raw wall times are not.

Usage: python docs/findings/paths/utilization.py STUDY_DIR [STUDY_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def utilization(folder: Path) -> dict[str, float]:
    timings = json.loads((folder / "timings.json").read_text())
    spans = []
    for exp in sorted((folder / "ray").iterdir()):
        if not exp.is_dir() or exp.name.endswith("-confirm"):
            continue
        for trial in exp.iterdir():
            path = trial / "result.json"
            if not path.is_file():
                continue
            rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
            if rows:
                start = rows[0]["timestamp"] - rows[0]["time_this_iter_s"]
                spans.append((start, rows[-1]["timestamp"], len(rows)))
    first = min(s for s, _, _ in spans)
    last = max(e for _, e, _ in spans)
    slots = int(timings.get("slots", 2))
    busy = sum(e - s for s, e, _ in spans)
    return {"trials": len(spans), "epochs": sum(n for _, _, n in spans),
            "search_wall_s": last - first, "fit_s": timings.get("fit_seconds", float("nan")),
            "slots": slots, "busy_slot_s": busy, "utilization": busy / (slots * (last - first))}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                               for k, v in utilization(Path(arg)).items()}))
