"""Sweep overhead on the smoke sweep: launch overhead per run and wall time against the ideal.

    .venv/bin/python benchmarks/bench_sweep.py [--spec sweeps/smoke.toml] [--data out/demo/prep] [--budgets ...]

Runs the sweep on a fresh embedded Ray into a temporary runs root, then reports:
- cluster start (ray.init) seconds;
- launch overhead per run: from the driver submitting a run's task to the task's body starting
  (queueing, worker start, argument transfer), mean and max;
- ideal = sum of run times (task bodies: imports, data, compile, training, evaluation) / slots,
  against the sweep's wall time from the first submission to the last end, and their ratio.
Goals: launch overhead <= 2 s per run; wall <= 1.1 x ideal.
"""

import argparse
import dataclasses
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from common import machine

from scaling.sweep.driver import connect, run_sweep
from scaling.sweep.spec import load_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=Path("sweeps/smoke.toml"))
    parser.add_argument("--data", help="prepared dataset (default: the spec's)")
    parser.add_argument("--budgets", type=float, nargs="+", help="override the spec's budgets (cost grows with them)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on 127.0.0.1
    sweep = load_sweep(args.spec)
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    sweep = dataclasses.replace(
        sweep,
        runs_root=str(root),
        data=args.data or sweep.data,
        budgets=tuple(args.budgets) if args.budgets else sweep.budgets,
    )
    print(f"machine: {machine()}")
    started = time.perf_counter()
    connect(None)
    cluster_start = time.perf_counter() - started
    try:
        summary = run_sweep(sweep, log=lambda _: None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    timings = summary.timings
    launch = [t.started - t.submitted for t in timings]
    busy = sum(t.ended - t.started for t in timings)
    ideal = busy / summary.slots
    wall = max(t.ended for t in timings) - min(t.submitted for t in timings)
    print(
        f"sweep {sweep.name}: {len(timings)} runs, budgets {', '.join(f'{b:.3g}' for b in sweep.budgets)}, "
        f"{summary.slots} at a time"
    )
    print(f"cluster start: {cluster_start:.1f} s")
    print(f"launch overhead per run: mean {sum(launch) / len(launch):.2f} s, max {max(launch):.2f} s (goal <= 2 s)")
    print(f"run time: sum {busy:.1f} s, mean {busy / len(timings):.1f} s per run")
    print(
        f"wall from first submission to last end: {wall:.1f} s; ideal (sum / {summary.slots} slots) {ideal:.1f} s; "
        f"ratio {wall / ideal:.3f} (goal <= 1.1)"
    )
    print(f"whole command incl. cluster start and collect: {time.perf_counter() - started:.1f} s")
    print(f"driver peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
