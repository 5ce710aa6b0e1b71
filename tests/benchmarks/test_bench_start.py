"""The start-cost benchmark counts a command's CPU from /proc: checked against what a child
process says it used (its own ``time.process_time``), including a grandchild it leaves
behind, as Ray's daemons are left behind by a study's driver."""

from __future__ import annotations

import sys

from benchmarks.bench_start import measure

BUSY = ("import time, subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', "
        "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass\\n"
        "print(time.process_time(), flush=True)'], stdout=sys.stdout)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.8: pass\n"
        "g.wait()\n"
        "print(time.process_time(), flush=True)\n")


def test_cpu_of_a_command_and_the_process_it_starts_is_counted() -> None:
    res = measure([sys.executable, "-c", BUSY], env={})
    # the parent ~0.8 s plus the child ~0.6 s of busy loop, plus two interpreter starts;
    # sampling every 0.1 s loses at most the last tenth of a second of each
    assert 1.3 <= res["cpu_s"] <= 2.2, res
    assert res["wall_s"] >= 0.8
    assert res["processes"] == 2



def test_a_process_marked_in_its_environment_counts_only_while_the_command_runs(
        tmp_path) -> None:
    """A Ray cluster started before the command: its CPU before the command is not the
    command's; what it uses meanwhile is."""
    import os
    import subprocess
    import time

    go = tmp_path / "go"
    burn = ("import time, pathlib\n"
            "t = time.process_time()\n"
            "while time.process_time() - t < 0.5: pass\n"  # before the command: not counted
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
            "t = time.process_time()\n"
            "while time.process_time() - t < 0.6: pass\n")  # while it runs: counted
    other = subprocess.Popen([sys.executable, "-c", burn],
                             env={**os.environ, "MARK": "cluster-xyz"})
    try:
        time.sleep(1.5)  # its first 0.5 CPU-s are spent
        command = (f"import pathlib, time; pathlib.Path({str(go)!r}).touch(); "
                   "time.sleep(2.0)")
        res = measure([sys.executable, "-c", command], env={}, also=b"MARK=cluster-xyz")
    finally:
        other.wait(timeout=30)
    # 0.6 s of the marked process, plus the command's interpreter start
    assert 0.55 <= res["cpu_s"] <= 1.0, res
    assert res["processes"] == 2
