"""Several studies in one report: `ehrscale report A.parquet B.parquet ...` (one table per model family).

Each table keeps its own fits (its own fits.json) and its own section, the one-table report with its
headings one level down; before them, a side-by-side section: per family the budgets with an interior
minimum, how the best size moves with compute and the fitted N_opt exponent, the loss, the masked-lab
metrics (lab-bag families) and the downstream AUROC of the lowest-loss run at each budget. Figures put
the families on the same axes of compute (`comparison_figures`). Aggregates only: no identifiers.
"""

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from analysis.downstream import auroc_tasks, frontier, reference_auroc  # noqa: E402
from analysis.fits import Fits  # noqa: E402
from analysis.plots import save_figure  # noqa: E402
from analysis.report import (  # noqa: E402
    MASKED,
    budget_minima,
    has_masked_metrics,
    interval_text,
    number,
    relative_link,
    render,
)
from analysis.table import Table  # noqa: E402

COMPARISON_FIGURES = ("families_optimal_size", "families_auroc", "families_masked_labs")


@dataclass(frozen=True)
class Study:
    """One results table with its fits, named by the family its runs trained."""

    label: str
    table: Table
    fits: Fits
    source: str
    figures: Path | None = None  # this study's `ehrscale plot` folder


def study_label(table: Table, source: Path) -> str:
    """The table's model family (its `family` column), else the name of the folder the table sits in."""
    if "family" in table.frame.columns:
        families = table.frame["family"].drop_nulls().unique().sort().to_list()
        if families:
            return "+".join(families)
    return Path(source).parent.name or Path(source).stem


def _exponent(fits: Fits) -> str:
    if fits.isoflop is None:
        return "n/a (its section says why)"
    law = fits.isoflop.n_opt
    interval = law.as_dict()["interval"]["exponent"]
    return f"{law.exponent:.3f} {interval_text(interval)}" if interval else f"{law.exponent:.3f}"


def side_by_side(studies: list[Study]) -> list[str]:
    """The families on one page: minima, optimum size against compute, loss, masked labs and AUROC."""
    lines = [
        "## Side by side",
        "",
        "| family | runs | budgets | interior minima | best size by budget (params) | N_opt exponent [95%] |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for s in studies:
        minima = budget_minima(s.table, s.fits.options.window)
        best = " -> ".join(f"{m['best_params']:,.0f}{'' if m['interior'] else ' (edge)'}" for m in minima)
        interior = sum(m["interior"] for m in minima)
        lines.append(
            f"| {s.label} | {s.table.frame.height} | {len(minima)} | {interior} | {best} | {_exponent(s.fits)} |"
        )
    lines += [
        "",
        "Along compute, the lowest-loss run of each budget (loss is each family's own: nats per token for the "
        "timeline decoder, per masked lab for the lab-bag models, so losses compare within a family only):",
        "",
        "| family | budget (FLOPs) | params | loss | masked item accuracy | value MSE | median per-item Pearson | "
        "AUROC (task: probe / XGBoost / oracle) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in studies:
        frame = s.table.frame
        tasks = auroc_tasks(s.table)
        for row in frontier(s.table).iter_rows(named=True):
            masked = [number(row.get(c)) for c in MASKED] if all(c in frame.columns for c in MASKED) else ["-"] * 3
            aurocs = []
            for task in tasks:
                references = [
                    number(reference_auroc(s.table, c))
                    for c in (f"xgboost_auroc_{task}", f"oracle_auroc_{task}")
                    if c in frame.columns
                ]
                refs = " / ".join(references)
                aurocs.append(f"{task}: {number(row.get(f'auroc_{task}'))}" + (f" / {refs}" if refs else ""))
            lines.append(
                f"| {s.label} | {row['budget']:.3g} | {row['params']:,.0f} | {row['loss']:.4f} | "
                + " | ".join(masked)
                + f" | {'; '.join(aurocs) or '-'} |"
            )
    lines += [
        "",
        "An edge minimum (the best run is the grid's smallest or largest size) says the budget's optimum lies "
        "outside the sizes tried; Approach 2 fits interior minima only.",
    ]
    return lines


def comparison_figures(studies: list[Study], out: Path) -> list[Path]:
    """Optimum size, AUROC and masked-lab metrics against compute, one line per family."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, s in enumerate(studies):
        minima = budget_minima(s.table, s.fits.options.window)
        inside = [m for m in minima if m["interior"]]
        edge = [m for m in minima if not m["interior"]]
        color = f"C{i}"
        ax.plot([m["budget"] for m in minima], [m["best_params"] for m in minima], color=color, lw=0.8, alpha=0.6)
        ax.scatter([m["budget"] for m in inside], [m["best_params"] for m in inside], color=color, label=s.label)
        ax.scatter([m["budget"] for m in edge], [m["best_params"] for m in edge], facecolors="none", edgecolors=color)
        if s.fits.isoflop is not None:
            law, budgets = s.fits.isoflop.n_opt, [m["budget"] for m in minima]
            grid = [min(budgets) * (max(budgets) / min(budgets)) ** (k / 20) for k in range(21)]
            ax.plot(
                grid,
                [law.coefficient * c**law.exponent for c in grid],
                color=color,
                ls="--",
                label=f"{s.label}: N_opt ~ C^{law.exponent:.2f}",
            )
    _against_compute(ax, "best size (parameters)", "Optimum size against compute (open: at the grid's edge)")
    ax.set_yscale("log")
    paths += save_figure(fig, out, "families_optimal_size")

    pairs = [(s, task) for s in studies for task in auroc_tasks(s.table)]
    if pairs:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for i, (s, task) in enumerate(pairs):
            best = frontier(s.table).filter(pl.col(f"auroc_{task}").is_not_null())
            ax.plot(best["flops"], best[f"auroc_{task}"], marker="o", color=f"C{i}", label=f"{s.label}: {task}")
            xgboost = reference_auroc(s.table, f"xgboost_auroc_{task}")
            if xgboost is not None:
                ax.axhline(xgboost, color=f"C{i}", ls="--", lw=0.8)
        ax.axhline(0.5, color="grey", lw=0.8)
        _against_compute(
            ax, "probe AUROC, lowest-loss run of each budget", "Downstream AUROC against compute (dashed: XGBoost)"
        )
        paths += save_figure(fig, out, "families_auroc")

    bags = [s for s in studies if has_masked_metrics(s.table)]
    if bags:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
        for i, s in enumerate(bags):
            best = frontier(s.table)
            for ax, column in zip(axes, MASKED):
                ax.plot(best["flops"], best[column], marker="o", color=f"C{i}", label=s.label)
        for ax, column in zip(axes, MASKED):
            _against_compute(ax, column.replace("_", " "))
        axes[1].axhline(1 / 12, color="grey", ls=":", lw=0.8)  # a constant 0.5 on eCDF values
        paths += save_figure(fig, out, "families_masked_labs")
    return paths


def _against_compute(ax, ylabel: str, title: str | None = None) -> None:
    """Log compute on x, the families' legend: the axes every comparison figure shares."""
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def render_studies(
    studies: list[Study],
    *,
    title: str,
    report_dir: Path,
    figures: Path | None,
    beyond: tuple[float, ...] = (10.0, 100.0, 1000.0),
) -> str:
    """The report of several studies: the side-by-side section, then each study's own report."""
    lines = [
        f"# {title}",
        "",
        f"{len(studies)} studies: " + ", ".join(f"{s.label} (`{s.source}`)" for s in studies) + ".",
        "",
    ]
    lines += side_by_side(studies) + [""]
    if figures is not None:
        for name in COMPARISON_FIGURES:
            png = Path(figures) / f"{name}.png"
            if png.exists():
                lines.append(f"![{name.replace('_', ' ')}]({relative_link(png, report_dir)})")
        lines.append("")
    for s in studies:
        body = render(
            s.table, s.fits, title=s.label, source=s.source, figures=s.figures, report_dir=report_dir, beyond=beyond
        )
        lines += [("#" + line) if line.startswith("#") else line for line in body.splitlines()] + [""]
    return "\n".join(lines).rstrip() + "\n"
