"""What live tracking costs a run: the same demo-sized run trained with no tracker, with TensorBoard, with W&B offline.

    .venv/bin/python benchmarks/tracking_overhead.py [--data out/demo/prep] [--width 32] [--steps 600] [--repeats 5]

Runs one after another in this process, as a sweep worker trains them (W&B's service starts once per process: its
first run pays for it, and that start is reported apart). The order of the three settings rotates each repeat.
Three figures a setting:
- the time the run's own thread spends inside tracker calls (opening, each logged step, the end), against the run's
  wall time: what tracking adds to the run itself, measured directly, free of the machine's noise;
- the CPU seconds W&B's service process (wandb-core) used meanwhile, which a 2-core machine shares with training;
- wall times (fastest and median of the repeats), against the untracked runs': on this machine they vary by 10-40%
  from run to run, more than tracking costs, so they bound it rather than measure it.
"""

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
from common import machine

from scaling import tracking
from scaling.run import run
from scaling.runspec import parse_spec

SETTINGS = {"none": [], "tensorboard": ["tensorboard"], "wandb (offline)": ["wandb"]}
inside = defaultdict(float)  # seconds the training thread spent in tracker calls, for the run being timed


def timed(method):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            inside["now"] += time.perf_counter() - started

    return wrapper


for _name in ("__init__", "log", "finish"):
    setattr(tracking.Trackers, _name, timed(getattr(tracking.Trackers, _name)))


def spec(data: str, width: int, steps: int, backends: list[str], name: str):
    return parse_spec(
        {
            "name": name,
            "data": data,
            "width": width,
            "tokens": steps * 16 * 128,
            "recipe": {"context": 128, "batch_rows": 16},
            "train": {"log_every": 20, "eval_every": 100, "checkpoint_every": 200},
            "tracking": {"backends": backends, "group": "tracking-overhead"},
        },
        "benchmark",
    )


def service_cpu_seconds() -> float:
    """CPU seconds used so far by this process's W&B service (wandb-core) children."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "wandb" in child.name():
                times = child.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="out/demo/prep")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    walls, shares, service = defaultdict(list), defaultdict(list), defaultdict(list)
    with tempfile.TemporaryDirectory() as root:
        run(spec(args.data, args.width, 50, [], "warm-up"), Path(root) / "warm-up", log=lambda _: None)  # compile
        started = time.perf_counter()
        run(spec(args.data, args.width, 50, ["wandb"], "wandb-start"), Path(root) / "wandb-start", log=print)
        first_wandb = time.perf_counter() - started
        names = list(SETTINGS)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                folder = Path(root) / f"{name.split()[0]}-{repeat}"
                inside["now"], cpu_before = 0.0, service_cpu_seconds()
                started = time.perf_counter()
                result = run(spec(args.data, args.width, args.steps, SETTINGS[name], folder.name), folder, log=print)
                wall = time.perf_counter() - started
                assert result["status"] == "ok"
                walls[name].append(wall)
                shares[name].append(inside["now"] / wall)
                service[name].append(service_cpu_seconds() - cpu_before)
    print(
        f"width {args.width}, {args.steps} steps a run (a log row every 20 steps), {args.repeats} repeats; W&B's "
        f"first run in this process (its service starting, 50 steps): {first_wandb:.1f} s"
    )
    fastest, median = min(walls["none"]), statistics.median(walls["none"])
    print(
        "| tracking | in tracker calls (of the run's wall) | W&B service CPU s a run | fastest wall s | median wall s |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in SETTINGS:
        low, middle = min(walls[name]), statistics.median(walls[name])
        print(
            f"| {name} | {100 * statistics.median(shares[name]):.2f}% (max {100 * max(shares[name]):.2f}%) "
            f"| {statistics.median(service[name]):.2f} | {low:.2f} ({100 * (low / fastest - 1):+.1f}%) "
            f"| {middle:.2f} ({100 * (middle / median - 1):+.1f}%) |"
        )


if __name__ == "__main__":
    main()
