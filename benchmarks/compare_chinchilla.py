"""Side by side with the `chinchilla` package from PyPI (a scaling-law toolkit) on the same points.

    .venv/bin/python benchmarks/compare_chinchilla.py [--points ...epoch_chinchilla_fig4_points.csv] [--venv DIR]

The package is installed in a separate virtual environment (it is not a dependency of ours). Both fit
L(N, D) = E + A / N^alpha + B / D^beta from Chinchilla's 4,500-start grid with a Huber loss (delta
1e-3) on log loss; the package minimises the MEAN of it with BFGS from each start (in a process pool),
we the SUM with L-BFGS (docs/analysis.md). Each fit is scored with the same summed objective.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine

from analysis.parametric import GRID, fit_parametric, objective
from analysis.table import read

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "epoch_chinchilla_fig4_points.csv"
CHILD = """
import functools, json, sys, time
import pandas as pd
from chinchilla import Chinchilla
from chinchilla._metrics import log_huber
project, grid = sys.argv[1], json.loads(sys.argv[2])
cc = Chinchilla(project, param_grid=grid, loss_fn=functools.partial(log_huber, delta=1e-3), log_level=40)
start = time.perf_counter()
cc.fit(parallel=True)
print(json.dumps({"seconds": time.perf_counter() - start, **{k: float(v) for k, v in cc.params.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=Path, default=DEFAULT)
    parser.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "ehrscale-chinchilla-venv")
    args = parser.parse_args()
    python = args.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "chinchilla==0.2.0"], check=True)
    table = read(args.points, {"params": "Model Size", "flops": "Training FLOP"})
    frame = table.frame
    log_n, log_d, log_loss = (np.log(frame[c].to_numpy()) for c in ("params", "tokens", "loss"))
    project = Path(tempfile.mkdtemp(prefix="chinchilla."))
    frame.select(C="flops", N="params", D="tokens", loss="loss").write_csv(project / "df.csv")
    grid = {
        "e": GRID["e"].tolist(),
        "a": GRID["a"].tolist(),
        "b": GRID["b"].tolist(),
        "alpha": GRID["alpha"].tolist(),
        "beta": GRID["beta"].tolist(),
    }
    result = subprocess.run(
        [str(python), "-c", CHILD, str(project), json.dumps(grid)], capture_output=True, text=True, check=True
    )
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    start = time.perf_counter()
    ours = fit_parametric(table, resamples=0)
    our_seconds = time.perf_counter() - start

    def summed(E, A, B, alpha, beta):
        return float(
            objective(np.array([[np.log(A), np.log(B), np.log(E), alpha, beta]]), log_n, log_d, log_loss)[0][0]
        )

    print(f"machine: {machine()}; {frame.height} points")
    print("| fit | wall s | E | A | B | alpha | beta | summed Huber objective |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| ehrscale (L-BFGS, summed) | {our_seconds:.1f} | {ours.E:.3f} | {ours.A:.1f} | {ours.B:.1f} "
        f"| {ours.alpha:.3f} | "
        f"{ours.beta:.3f} | {summed(ours.E, ours.A, ours.B, ours.alpha, ours.beta):.6f} |"
    )
    print(
        f"| chinchilla 0.2.0 (BFGS, mean) | {theirs['seconds']:.1f} | {theirs['E']:.3f} | {theirs['A']:.1f} "
        f"| {theirs['B']:.1f} | {theirs['alpha']:.3f} | {theirs['beta']:.3f} "
        f"| {summed(theirs['E'], theirs['A'], theirs['B'], theirs['alpha'], theirs['beta']):.6f} |"
    )


if __name__ == "__main__":
    main()
