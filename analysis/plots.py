"""Figures of a results table and its fits (`analysis.fits`: the replicates the report quotes), as PNG and SVG.

Axes say what the table holds: the loss as the table describes it (`Table.loss_label`), the
parameter count the fits use, compute under the table's own FLOPs per token."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from analysis.downstream import (  # noqa: E402
    ZERO_SHOT,
    AurocLaw,
    auroc_tasks,
    frontier,
    inference_curves,
    reference_auroc,
    saturating,
    zero_shot_law_name,
    zero_shot_tasks,
)
from analysis.fits import Fits  # noqa: E402
from analysis.isoflop import IsoflopFit, predict_interval  # noqa: E402
from analysis.parametric import ParametricFit  # noqa: E402
from analysis.table import Table  # noqa: E402


def save_figure(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.tight_layout()
    for path in paths:  # "tight": a title or a legend beside the axes is kept whole, never cut at the edge
        fig.savefig(path, dpi=150, bbox_inches="tight")
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
        if "loss_se" in group.columns and group["loss_se"].is_not_null().any():  # 95% error bars of each run's loss
            ax.errorbar(
                n,
                loss,
                yerr=1.96 * group["loss_se"].fill_null(0.0).to_numpy(),
                fmt="none",
                color=colors[budget],
                lw=0.8,
            )
        if budget in vertices:  # the parabola over the runs it was fitted to; runs beyond its window hollow
            v = vertices[budget]
            lo, hi = v.fitted_range
            far = (n < lo * (1 - 1e-9)) | (n > hi * (1 + 1e-9))
            ax.scatter(n[far], loss[far], s=18, facecolors="white", edgecolors=colors[budget], zorder=3)
            grid = np.geomspace(lo, hi, 100)
            ax.plot(grid, np.polyval(v.parabola, np.log(grid)), color=colors[budget], lw=1)
            ax.plot([v.n_opt], [v.loss], marker="*", color=colors[budget], ms=12, mec="black", mew=0.5)
    ax.set_xscale("log")
    ax.set_xlabel(f"parameters N ({table.params_from})")
    ax.set_ylabel(table.loss_label)
    ax.set_title("IsoFLOP curves: the loss of each size at a fixed compute budget", fontsize=10)
    # The symbols' key beside the budgets' colours, outside the axes so that no curve hides behind it.
    ax.plot([], [], "k-", lw=1, label="parabola in log N (fitted runs)")
    ax.plot([], [], "*", color="grey", ms=10, mec="black", mew=0.5, ls="none", label="its minimum")
    ax.scatter([], [], s=18, facecolors="white", edgecolors="grey", label="run outside the fit window")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(fig, out, "isoflop_curves")


def optimal_scaling(fit: IsoflopFit, parametric: ParametricFit | None, out: Path) -> list[Path]:
    """N_opt(C) and D_opt(C) as the answers give them: Approach 2's N* law and D* = C / c(N*), Approach 3's optimum."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    budgets = np.array([v.budget for v in fit.vertices])
    grid = np.geomspace(budgets.min() / 3, budgets.max() * 100, 60)
    n_star = np.array([fit.n_opt(c) for c in grid])
    bands = np.array([predict_interval(fit.bootstrap_n, c) for c in grid]) if len(fit.bootstrap_n) >= 2 else None
    for index, (ax, label, values) in enumerate(
        (
            (axes[0], "parameters N_opt", [v.n_opt for v in fit.vertices]),
            (axes[1], "tokens D_opt", [v.d_opt for v in fit.vertices]),
        )
    ):
        curve = n_star if index == 0 else fit.cost.tokens(n_star, grid)
        if bands is not None:
            band = bands if index == 0 else np.sort(fit.cost.tokens(bands, grid[:, None]), axis=1)
            ax.fill_between(grid, band[:, 0], band[:, 1], color="C0", alpha=0.2, label="95% bootstrap band")
        law = fit.n_opt if index == 0 else fit.d_opt
        ax.plot(
            grid,
            curve,
            color="C0",
            label=f"Approach 2: {law.coefficient:.3g} C^{law.exponent:.3f}"
            + ("" if index == 0 else " (D* = C / c(N*))"),
        )
        if parametric is not None:
            ax.plot(
                grid,
                [parametric.optimum(c)[index] for c in grid],
                color="C3",
                ls="--",
                label="Approach 3: min L(N, D) on c(N) D = C",
            )
        ax.scatter(budgets, values, color="black", zorder=3, s=20, label="IsoFLOP minima")
        ax.axvline(budgets.max(), color="grey", lw=0.8, ls=":", label="largest budget (extrapolated beyond)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # The axes follow the answers, not the band: a band of many decades (few budgets) runs off the plot.
        shown = np.concatenate([np.asarray(values, float), np.asarray(curve, float)])
        shown = shown[np.isfinite(shown) & (shown > 0)]
        if len(shown):
            ax.set_ylim(shown.min() / 30, shown.max() * 30)
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[0].set_title("compute-optimal model size", fontsize=10)
    axes[1].set_title("compute-optimal training tokens", fontsize=10)
    return save_figure(fig, out, "optimal_scaling")


def loss_frontier(table: Table, parametric: ParametricFit | None, out: Path) -> list[Path]:
    """Every run's loss against its compute, the best per budget, and Approach 3's frontier (same compute)."""
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
    ax.set_ylabel(table.loss_label)
    ax.set_title("loss against compute")
    ax.legend(fontsize=8)
    return save_figure(fig, out, "loss_frontier")


def _zero_shot_points(ax, table: Table, task: str, law: AurocLaw | None) -> None:
    """The decoder's zero-shot AUROC along the frontier, with its interval and its law, beside the probe's."""
    column = f"{ZERO_SHOT}{task}"
    best = frontier(table).filter(pl.col(column).is_not_null())
    yerr = [best[column] - best[f"{column}_lo"], best[f"{column}_hi"] - best[column]]
    ax.errorbar(best["flops"], best[column], yerr=yerr, fmt="s", color="C2", ms=4, label="zero-shot (futures)")
    if law is not None:
        grid = np.geomspace(best["flops"].min() / 3, best["flops"].max() * 100, 60)
        ax.plot(grid, saturating(np.log10(grid), law.h, law.k, law.x0), color="C2", ls="-.", label="zero-shot fit")


def zero_shot_inference(table: Table, out: Path) -> list[Path]:
    """Zero-shot AUROC against inference compute (futures x tokens x forward FLOPs), one line per training budget:
    what more futures buy at each training budget (CoMET's question)."""
    by_task = {t: curves for t in zero_shot_tasks(table) if (curves := inference_curves(table, t))}
    if not by_task:
        return []
    fig, axes = plt.subplots(1, len(by_task), figsize=(4.5 * len(by_task), 4), squeeze=False)
    for ax, (task, curves) in zip(axes[0], by_task.items()):
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(curves)))
        for colour, curve in zip(colours, curves):
            ax.plot(curve["flops"], curve["auroc"], marker="o", ms=3, color=colour, label=f"C = {curve['budget']:.2g}")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # less than a decade wide: minor labels would overlap
        ax.set_xlabel("inference compute per prediction (FLOPs)")
        ax.set_ylabel(f"zero-shot AUROC, {task.replace('_', ' ')}")
        ax.set_title("more futures, per training budget", fontsize=9)
        ax.legend(fontsize=7, title="training budget", title_fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return save_figure(fig, out, "zero_shot_vs_inference")


def auroc_figures(table: Table, laws: tuple[AurocLaw, ...], lines: tuple[dict, ...], out: Path) -> list[Path]:
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
        law = next((law for law in laws if law.task == task), None)
        if law is not None:
            grid = np.geomspace(best["flops"].min() / 3, best["flops"].max() * 100, 60)
            ax.plot(
                grid,
                saturating(np.log10(grid), law.h, law.k, law.x0),
                color="C0",
                label=f"saturating fit (ceiling {law.h:.3f})",
            )
        if task in zero_shot_tasks(table):
            _zero_shot_points(ax, table, task, next((w for w in laws if w.task == zero_shot_law_name(task)), None))
        for column, style, name in (
            (f"xgboost_auroc_{task}", "--", "XGBoost"),
            (f"oracle_auroc_{task}", ":", "oracle"),
        ):
            value = reference_auroc(table, column)
            if value is not None:
                ax.axhline(value, color="black", ls=style, lw=1, label=name)
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(f"AUROC, {task.replace('_', ' ')}")
        ax.legend(fontsize=7)
    paths += save_figure(fig, out, "auroc_vs_compute")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = table.frame.filter(pl.col(f"auroc_{task}").is_not_null())
        ax.scatter(rows["loss"], rows[f"auroc_{task}"], color="C1", s=14, label="runs")
        line = next((line for line in lines if line["task"] == task), None)
        if line is not None:
            grid = np.linspace(rows["loss"].min(), rows["loss"].max(), 20)
            ax.plot(
                grid,
                line["intercept"] + line["slope"] * grid,
                color="C1",
                label=f"fit; Spearman {line['spearman']:.2f}",
            )
        ax.set_xlabel(table.loss_label)
        ax.set_ylabel(f"AUROC, {task.replace('_', ' ')}")
        ax.legend(fontsize=7)
    paths += save_figure(fig, out, "loss_vs_auroc")
    return paths


def plot_all(table: Table, fits: Fits, out: Path) -> list[Path]:
    """Every figure the table supports; returns the files written."""
    paths = isoflop_curves(table, fits.isoflop, out)
    if fits.isoflop is not None:
        paths += optimal_scaling(fits.isoflop, fits.parametric, out)
    paths += loss_frontier(table, fits.parametric, out)
    paths += auroc_figures(table, fits.auroc_laws, fits.loss_lines, out)
    paths += zero_shot_inference(table, out)
    return paths
