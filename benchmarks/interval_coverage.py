"""How often Approach 2's 95% intervals hold the truth on sweeps shaped like yours.

    .venv/bin/python benchmarks/interval_coverage.py [--table out/demo/runs/demo/5/runs.parquet]
        [--noise 0.003 0.01] [--sweeps 100] [--resamples 200] [--seeds 1]

The truth is the table's own Approach 3 law L(N, D) = E + A / N^alpha + B / D^beta (fitted once), spent
under the table's own cost per token. Each simulated sweep has the table's (budget, size) design, each run's
loss the law's plus Gaussian noise of the given standard deviation (`--seeds K`: each run K times, as a
sweep with K seeds); Approach 2 is fitted to it exactly as
`ehrscale fit` does. The true exponent is the log-log slope of the law's own N_opt over the table's budgets
(the parabolas' bias is part of what is measured). Prints, per noise level, the fitted exponent's mean and
spread, and each interval's coverage and median width, and the per-budget vertex intervals' coverage.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from common import machine

from analysis.isoflop import fit_isoflop
from analysis.parametric import fit_parametric, optimum
from analysis.table import prepare, read

DEFAULT = Path("out/demo/runs/demo/5/runs.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.003, 0.01])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=1, help="runs per (budget, size), each with its own noise")
    args = parser.parse_args()
    table = read(args.table)
    law = fit_parametric(table, resamples=0)
    truth = np.array([[law.E, law.A, law.B, law.alpha, law.beta]])
    budgets = np.array(table.budgets)
    true_n = np.array([optimum(truth, c, table.cost)[0][0] for c in budgets])
    true_exponent = float(np.polyfit(np.log(budgets), np.log(true_n), 1)[0])
    n = np.repeat(table.frame["params"].to_numpy(), args.seeds)
    c = np.repeat(table.frame["budget"].to_numpy(), args.seeds)
    d = table.cost.tokens(n, c)
    clean = law.E + law.A / n**law.alpha + law.B / d**law.beta
    print(f"machine: {machine()}")
    print(
        f"truth: {args.table}'s Approach 3 law (E {law.E:.3f}, alpha {law.alpha:.3f}, beta {law.beta:.3f}); "
        f"{len(budgets)} budgets, {len(n)} runs ({args.seeds} per size); "
        f"true N_opt exponent over the budgets {true_exponent:.3f}"
    )
    print(
        "| loss noise sd | sweeps | exponent mean (sd) | bootstrap: coverage, median width | "
        "Student-t: coverage, median width | vertex intervals: coverage | pooled noise sd (median) | s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for sigma in args.noise:
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        exponents, hits, widths, vertex_hits, vertex_total, noises = (
            [],
            {"boot": 0, "t": 0},
            {"boot": [], "t": []},
            0,
            0,
            [],
        )
        for sweep in range(args.sweeps):
            loss = clean + rng.normal(0, sigma, len(clean))
            frame = pl.DataFrame(
                {
                    "params": n,
                    "tokens": d,
                    "loss": loss,
                    "flops": c,
                    "budget": c,
                    "flops_per_token": table.cost.per_token(n),
                }
            )
            fit = fit_isoflop(prepare(frame), seed=sweep, resamples=args.resamples)
            exponents.append(fit.n_opt.exponent)
            noises.append(getattr(fit, "noise", float("nan")))  # older fits drew no pooled noise
            for name, (lo, hi) in (("boot", fit.n_opt.exponent_interval), ("t", fit.n_opt.exponent_interval_t)):
                hits[name] += lo <= true_exponent <= hi
                widths[name].append(hi - lo)
            for vertex in fit.vertices:
                true_vertex = true_n[list(budgets).index(vertex.budget)]
                vertex_total += 1
                vertex_hits += vertex.n_interval[0] <= true_vertex <= vertex.n_interval[1]
        seconds = time.perf_counter() - start
        print(
            f"| {sigma:g} | {args.sweeps} | {np.mean(exponents):.3f} ({np.std(exponents):.3f}) | "
            f"{hits['boot'] / args.sweeps:.2f}, {np.median(widths['boot']):.3f} | "
            f"{hits['t'] / args.sweeps:.2f}, {np.median(widths['t']):.3f} | {vertex_hits / vertex_total:.2f} | "
            f"{np.median(noises):.4f} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
