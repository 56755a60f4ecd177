"""Benchmark the scaling-law fits on a published sweep: Approach 3 (4,500 starts + 400 bootstrap refits)
and Approach 2 (400 bootstrap replicates), wall time and what each finds.

    .venv/bin/python benchmarks/bench_fit.py [--points ../shared/reference-data/epoch_chinchilla_fig4_points.csv]

Goal: Approach 3 with 4,500 starts plus 400 bootstrap refits on about 250 points in 60 s or less.
The points are Epoch AI's digitisation of Chinchilla's Figure 4 (read from shared/, not copied here).
"""

import argparse
import time
from pathlib import Path

from common import machine

from analysis.isoflop import fit_isoflop
from analysis.parametric import fit_parametric, start_grid
from analysis.table import read

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "epoch_chinchilla_fig4_points.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, default=DEFAULT)
    parser.add_argument("--resamples", type=int, default=400)
    args = parser.parse_args()
    table = read(args.points, {"params": "Model Size", "flops": "Training FLOP"})
    print(f"machine: {machine()}")
    print(
        f"{table.frame.height} points, {len(table.budgets)} budgets; {len(start_grid())} starts; "
        f"{args.resamples} bootstrap refits"
    )
    start = time.perf_counter()
    fit = fit_parametric(table, resamples=0 if args.resamples == 0 else args.resamples)
    seconds = time.perf_counter() - start
    print("| fit | wall s | E | A | B | alpha | beta | a = beta/(alpha+beta) | objective (summed Huber) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| Approach 3 | {seconds:.1f} | {fit.E:.3f} | {fit.A:.1f} | {fit.B:.1f} | {fit.alpha:.3f} | {fit.beta:.3f} | "
        f"{fit.a:.3f} [{fit.intervals['a'][0]:.3f}, {fit.intervals['a'][1]:.3f}] | {fit.objective:.6f} |"
    )
    start = time.perf_counter()
    iso = fit_isoflop(table, resamples=args.resamples)
    seconds = time.perf_counter() - start
    lo, hi = iso.n_opt.exponent_interval
    print(
        f"| Approach 2 | {seconds:.1f} | | | | | | {iso.n_opt.exponent:.3f} [{lo:.3f}, {hi:.3f}] | "
        f"{len(iso.vertices)} budgets used, {len(iso.excluded)} excluded |"
    )


if __name__ == "__main__":
    main()
