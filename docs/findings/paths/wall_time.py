"""The ordered search's wall time against the asynchronous one's on the committed MNIST closure
spec (docs/performance.md §2d): both specs run one after the other on this machine with nothing
else running, 2 slots each, timed as a user sees it (the `mistudy run` command) and as Tune's
fit (the study's timings.json). Slot use comes from utilization.py on the same folders.

Usage: .venv/bin/python docs/findings/paths/wall_time.py WORK_DIR   (writes wall-time.json)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from utilization import utilization  # noqa: E402  (this folder's script)

REPO = HERE.parents[2]
SPECS = {"ordered": "mnist-ordered.yaml", "async": "mnist-async.yaml"}


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, dict[str, float]] = {}
    for name, spec in SPECS.items():
        out = work / f"wall-{name}"
        t0 = time.perf_counter()
        subprocess.run([str(REPO / ".venv/bin/mistudy"), "run", str(HERE / spec), "--out",
                        str(out), "--quiet", "--num-cpus", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        timings = json.loads((out / "timings.json").read_text())
        used = utilization(out)  # slot time busy, from Tune's own records
        result[name] = {"command_s": round(wall, 1), "fit_s": round(timings["fit_seconds"], 1),
                        "utilization": used["utilization"],
                        "busy_slot_s": round(used["busy_slot_s"], 1)}
        print(name, result[name], flush=True)
    result["ratio_ordered_over_async"] = {
        k: round(result["ordered"][k] / result["async"][k], 3) for k in ("command_s", "fit_s")}
    (HERE / "wall-time.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
