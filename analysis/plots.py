"""Figures of a results table and its fits, each as PNG and SVG."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from analysis.downstream import auroc_tasks, fit_auroc, frontier, loss_vs_auroc, saturating  # noqa: E402
from analysis.isoflop import IsoflopFit, predict_interval  # noqa: E402
from analysis.parametric import ParametricFit  # noqa: E402
from analysis.table import Table  # noqa: E402


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def _budget_colors(budgets: list[float]):
    cmap = plt.get_cmap("viridis")
    return {b: cmap(i / max(len(budgets) - 1, 1)) for i, b in enumerate(budgets)}


def isoflop_curves(table: Table, fit: IsoflopFit | None, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _budget_colors(table.budgets)
    vertices = {v.budget: v for v in (fit.vertices if fit else [])}
    for budget in table.budgets:
        group = table.frame.filter(pl.col("budget") == budget).sort("params")
        n, loss = group["params"].to_numpy(), group["loss"].to_numpy()
        ax.scatter(n, loss, color=colors[budget], s=18, label=f"C = {budget:.2g} FLOPs")
        if budget in vertices and len(n) >= 3:
            p = np.polyfit(np.log(n), loss, 2)
            grid = np.geomspace(n.min(), n.max(), 100)
            ax.plot(grid, np.polyval(p, np.log(grid)), color=colors[budget], lw=1)
            v = vertices[budget]
            ax.plot([v.n_opt], [v.loss], marker="*", color=colors[budget], ms=12, mec="black", mew=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("held-out loss (nats per token)")
    ax.set_title("IsoFLOP curves: parabola in log N per budget; * = fitted minimum")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out, "isoflop_curves")


def optimal_scaling(fit: IsoflopFit, parametric: ParametricFit | None, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    budgets = np.array([v.budget for v in fit.vertices])
    grid = np.geomspace(budgets.min() / 3, budgets.max() * 100, 60)
    for ax, law, draws, values, label in (
        (axes[0], fit.n_opt, fit.bootstrap_n, [v.n_opt for v in fit.vertices], "parameters N_opt"),
        (axes[1], fit.d_opt, fit.bootstrap_d, [v.d_opt for v in fit.vertices], "tokens D_opt"),
    ):
        if len(draws) >= 2:
            bands = np.array([predict_interval(draws, c) for c in grid])
            ax.fill_between(grid, bands[:, 0], bands[:, 1], color="C0", alpha=0.2, label="95% bootstrap band")
        ax.plot(
            grid, [law(c) for c in grid], color="C0", label=f"Approach 2: {law.coefficient:.3g} C^{law.exponent:.3f}"
        )
        if parametric is not None:
            index = 0 if label.startswith("parameters") else 1
            ax.plot(
                grid,
                [parametric.optimum(c)[index] for c in grid],
                color="C3",
                ls="--",
                label=f"Approach 3: C^{parametric.a if index == 0 else 1 - parametric.a:.3f}",
            )
        ax.scatter(budgets, values, color="black", zorder=3, s=20, label="IsoFLOP minima")
        ax.axvline(budgets.max(), color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[0].set_title("compute-optimal size (right of the dotted line: extrapolated)", fontsize=9)
    axes[1].set_title("compute-optimal tokens", fontsize=9)
    return _save(fig, out, "optimal_scaling")


def loss_frontier(table: Table, parametric: ParametricFit | None, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(table.frame["flops"], table.frame["loss"], color="grey", s=10, alpha=0.6, label="runs")
    best = frontier(table)
    ax.plot(best["flops"], best["loss"], "o-", color="C0", label="best run per budget")
    if parametric is not None:
        grid = np.geomspace(table.frame["flops"].min(), table.frame["flops"].max() * 100, 60)
        ax.plot(
            grid,
            [parametric.loss(*parametric.optimum(c)) for c in grid],
            color="C3",
            ls="--",
            label=f"Approach 3 frontier (E = {parametric.E:.3f})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("held-out loss (nats per token)")
    ax.set_title("loss against compute")
    ax.legend(fontsize=8)
    return _save(fig, out, "loss_frontier")


def auroc_figures(table: Table, out: Path) -> list[Path]:
    tasks = auroc_tasks(table)
    if not tasks:
        return []
    paths = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        best = frontier(table).filter(pl.col(f"auroc_{task}").is_not_null())
        ax.scatter(best["flops"], best[f"auroc_{task}"], color="C0", zorder=3, label="best run per budget")
        if f"auroc_{task}_lo" in best.columns:
            ax.errorbar(
                best["flops"],
                best[f"auroc_{task}"],
                yerr=[
                    best[f"auroc_{task}"] - best[f"auroc_{task}_lo"],
                    best[f"auroc_{task}_hi"] - best[f"auroc_{task}"],
                ],
                fmt="none",
                color="C0",
            )
        law = fit_auroc(table, task)
        if law is not None:
            grid = np.geomspace(best["flops"].min() / 3, best["flops"].max() * 100, 60)
            ax.plot(
                grid,
                saturating(np.log10(grid), law.h, law.k, law.x0),
                color="C0",
                label=f"saturating fit (ceiling {law.h:.3f})",
            )
        for column, style, name in (
            (f"xgboost_auroc_{task}", "--", "XGBoost"),
            (f"oracle_auroc_{task}", ":", "oracle"),
        ):
            if column in table.frame.columns and table.frame[column].drop_nulls().len():
                ax.axhline(float(table.frame[column].drop_nulls()[0]), color="black", ls=style, lw=1, label=name)
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(f"AUROC, {task.replace('_', ' ')}")
        ax.legend(fontsize=7)
    paths += _save(fig, out, "auroc_vs_compute")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = table.frame.filter(pl.col(f"auroc_{task}").is_not_null())
        ax.scatter(rows["loss"], rows[f"auroc_{task}"], color="C1", s=14, label="runs")
        line = loss_vs_auroc(table, task)
        if line is not None:
            grid = np.linspace(rows["loss"].min(), rows["loss"].max(), 20)
            ax.plot(
                grid,
                line["intercept"] + line["slope"] * grid,
                color="C1",
                label=f"fit; Spearman {line['spearman']:.2f}",
            )
        ax.set_xlabel("held-out loss (nats per token)")
        ax.set_ylabel(f"AUROC, {task.replace('_', ' ')}")
        ax.legend(fontsize=7)
    paths += _save(fig, out, "loss_vs_auroc")
    return paths


def plot_all(table: Table, isoflop: IsoflopFit | None, parametric: ParametricFit | None, out: Path) -> list[Path]:
    """Every figure the table supports; returns the files written."""
    paths = isoflop_curves(table, isoflop, out)
    if isoflop is not None:
        paths += optimal_scaling(isoflop, parametric, out)
    paths += loss_frontier(table, parametric, out)
    paths += auroc_figures(table, out)
    return paths
