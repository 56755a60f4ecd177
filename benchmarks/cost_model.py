"""Fit the sweep driver's prior cost model (scaling/sweep/throughput.py: PRIOR) to the runs a sweep finished.

    .venv/bin/python benchmarks/cost_model.py out/demo/runs [--families timeline,labrador,bert]

Each run's time is its training (result.json's wall_seconds) and its evaluation (train.log, from the run's `ok`
line to its last); the steps it trained itself (a branch: its cool-down; a trunk: all its steps) and their FLOPs
come from result.json. What no run records (a worker's JAX import, data loading, compiling) is left out: the driver
corrects the model by the measured speed as runs end. A non-negative least-squares fit of
    seconds = run_seconds + task_seconds x tasks + step_seconds x steps + FLOPs / flops_per_second
prints the constants, each family's total against the model's, and the spread of the per-run ratio.
"""

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from scaling.record import RESULT, TRAIN_LOG, RunFolder


def _evaluation(log: Path) -> float:
    """Seconds from the run's `ok` line (training and its final loss done) to its last line (evaluation done)."""
    stamps, ok = [], None
    for line in log.read_text().splitlines():
        try:
            stamps.append(datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        if ": ok;" in line:
            ok = stamps[-1]
    return (stamps[-1] - ok).total_seconds() if ok is not None else 0.0


def rows(root: Path, families: set[str] | None) -> list[dict]:
    found = []
    for path in sorted(root.glob(f"*/*/*/{RESULT}")):
        folder = RunFolder(path.parent)
        got = folder.result()
        start = folder.start()
        if got is None or start is None or not (path.parent / TRAIN_LOG).exists():
            continue
        result = json.loads(path.read_text())
        seconds = (result.get("wall_seconds") or 0.0) + _evaluation(path.parent / TRAIN_LOG)
        if families and result["family"] not in families:
            continue
        steps = result["steps"] - (result.get("branch_step") or 0)
        tasks = 0 if result["status"] == "trunk" else len(start.spec.get("tasks", []))
        found.append(
            {
                "family": result["family"],
                "seconds": seconds,
                "tasks": tasks,
                "steps": steps,
                "flops": steps * result["flops"] / result["steps"],
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_root", type=Path)
    parser.add_argument("--families", help="comma-separated; default: every family found")
    args = parser.parse_args()
    families = set(args.families.split(",")) if args.families else None
    data = rows(args.runs_root, families)
    if not data:
        raise SystemExit(f"no finished runs with a train.log under {args.runs_root}")
    a = np.array([[1.0, r["tasks"], r["steps"], r["flops"]] for r in data])
    y = np.array([r["seconds"] for r in data])
    coef, _ = nnls(a, y)
    run, task, step, per_flop = coef
    print(f"{len(data)} runs under {args.runs_root}")
    print(
        f"run_seconds={run:.2f}, task_seconds={task:.2f}, step_seconds={step:.5f}, "
        f"flops_per_second={1 / per_flop if per_flop else float('inf'):.3g}"
    )
    model = a @ coef
    for family in sorted({r["family"] for r in data}):
        mask = np.array([r["family"] == family for r in data])
        print(f"{family}: {mask.sum()} runs, measured {y[mask].sum():.0f} s, model {model[mask].sum():.0f} s")
    ratio = y / np.maximum(model, 1e-9)
    print(
        f"measured / model per run: median {np.median(ratio):.2f}, 10-90% [{np.quantile(ratio, 0.1):.2f}, "
        f"{np.quantile(ratio, 0.9):.2f}]; total {y.sum():.0f} s against {model.sum():.0f} s"
    )


if __name__ == "__main__":
    main()
