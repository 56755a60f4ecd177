"""The study in one page: `ehrscale report TABLE --out report.md` writes what a sweep found.

Per budget the IsoFLOP minimum (and whether it is interior: the lowest-loss run is neither the
smallest nor the largest size, and the parabola curves upwards); the fitted laws with 95% intervals
(Approach 2 and Approach 3); the compute-optimal model and tokens at budgets beyond the grid; AUROC
against compute beside XGBoost and the oracle; the figures. Aggregates only: no identifiers.

Every number comes from one `analysis.fits.Fits` (what fits.json holds), so the report's intervals
are the figures' bands; both approaches answer for the table's own compute (`analysis.cost`).
"""

import math
import os
from pathlib import Path

import numpy as np
import polars as pl

from analysis.answers import optimal
from analysis.downstream import AurocLaw, auroc_tasks, frontier, reference_auroc, zero_shot_law_name
from analysis.fits import Fits
from analysis.isoflop import WINDOW, IsoflopFit, near_minimum, parabola_vertex
from analysis.parametric import ParametricFit
from analysis.table import Table

FIGURES = (
    "isoflop_curves",
    "optimal_scaling",
    "loss_frontier",
    "auroc_vs_compute",
    "zero_shot_vs_inference",
    "loss_vs_auroc",
)


def number(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def interval_text(pair, digits: int = 3) -> str:
    return f"[{number(pair[0], digits)}, {number(pair[1], digits)}]" if pair else "(no interval: too few points)"


def budget_minima(table: Table, window: float | None = WINDOW) -> list[dict]:
    """Per budget: the lowest-loss run, its rank among the sizes, and whether the minimum is interior (inside the
    sizes, with a parabola through the runs of the fitting window curving up)."""
    rows = []
    for budget in table.budgets:
        group = table.frame.filter(pl.col("budget") == budget).sort("params")
        params, loss = group["params"].to_numpy(), group["loss"].to_numpy()
        best = int(np.argmin(loss))
        near = near_minimum(np.log(params), loss, window)
        curved = len(np.unique(params[near])) >= 3 and parabola_vertex(np.log(params[near]), loss[near]) is not None
        se = group["loss_se"].to_numpy() if "loss_se" in group.columns else np.full(len(loss), np.nan)
        rows.append(
            {
                "budget": budget,
                "sizes": len(params),
                "best_params": float(params[best]),
                "best_tokens": float(group["tokens"][best]),
                "best_loss": float(loss[best]),
                "best_loss_se": float(se[best]) if se[best] is not None else float("nan"),
                "gaps": np.abs(np.diff(loss)).tolist(),
                "ses": [float(x) for x in se if x is not None],
                "interior": curved and 0 < best < len(params) - 1,
                "position": "smallest" if best == 0 else "largest" if best == len(params) - 1 else "inside",
            }
        )
    return rows


def _isoflop_section(iso: IsoflopFit | None, minima: list[dict], window: float | None) -> list[str]:
    vertex = {v.budget: v for v in (iso.vertices if iso else [])}
    lines = [
        "## IsoFLOP minima",
        "",
        "| budget (FLOPs) | sizes | best run: params | tokens | loss +- 1.96 SE | minimum | parabola N* [95%] |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for m in minima:
        v = vertex.get(m["budget"])
        where = "interior" if m["interior"] else f"at the {m['position']} size"
        error = f" +- {1.96 * m['best_loss_se']:.4f}" if math.isfinite(m["best_loss_se"]) else ""
        lines.append(
            f"| {m['budget']:.3g} | {m['sizes']} | {m['best_params']:,.0f} | {m['best_tokens']:,.0f} | "
            f"{m['best_loss']:.4f}{error} | {where} | "
            f"{number(v.n_opt) + ' ' + interval_text(v.n_interval) if v else 'excluded'} |"
        )
    interior = [m for m in minima if m["interior"]]
    optima = [m["best_params"] for m in interior]
    grows = len(optima) >= 2 and all(b >= a for a, b in zip(optima, optima[1:])) and optima[-1] > optima[0]
    lines += [
        "",
        f"Interior minima at {len(interior)} of {len(minima)} budgets; the best interior size "
        + (
            "grows with compute"
            if grows
            else "does not grow steadily with compute"
            if len(optima) >= 2
            else "cannot show a trend with fewer than 2 interior budgets"
        )
        + (f" ({' -> '.join(f'{n:,.0f}' for n in optima)} parameters)." if optima else "."),
    ]
    far = sum(v.left_out for v in iso.vertices) if iso else 0
    if far:
        lines.append(
            f"- each parabola is fitted to the runs within {window:g}x of its budget's best run's parameters; "
            f"{far} run(s) beyond that are drawn in the figures, not fitted (`--window`, docs/analysis.md)"
        )
    if iso and iso.noise_dof:
        lines.append(
            f"- the parabola N* intervals and the laws' bootstrap draw each budget's losses around its parabola with "
            f"the residual noise pooled over the fitted budgets: sd {iso.noise:.4f} ({iso.noise_dof} df)"
        )
    elif iso:
        lines.append(
            "- every fitted budget has exactly 3 runs: no residual measures the noise, so each budget's N* is "
            "held fixed in the bootstrap (sample a fourth size per budget for intervals that include it)"
        )
    for item in iso.excluded if iso else []:
        lines.append(f"- budget {item['budget']:.3g} left out of Approach 2: {item['reason']}")
    ses = [x for m in minima for x in m["ses"] if math.isfinite(x)]
    gaps = [x for m in minima for x in m["gaps"]]
    if ses and gaps:
        lines += [
            "",
            f"Each run's loss has a standard error over its evaluation sequences of {np.median(ses):.4f} (median; "
            f"{min(ses):.4f} to {max(ses):.4f}); the loss gap between neighbouring sizes of a budget is "
            f"{np.median(gaps):.4f} (median; smallest {min(gaps):.4f}). Every run is scored on the same rows, "
            "so the error of a difference between two runs is smaller still.",
        ]
    return lines


def _laws_section(iso: IsoflopFit | None, parametric: ParametricFit | None, iso_error: str | None) -> list[str]:
    lines = ["## Fitted laws (95% intervals)", ""]
    if iso is None:
        lines.append(
            "- Approach 2 (IsoFLOP parabolas): not available"
            + (f": {iso_error}" if iso_error else " (fewer than 2 budgets with an interior minimum).")
        )
    else:
        for name, law, what in (
            ("N_opt", iso.n_opt, "parameters"),
            ("D_opt", iso.d_opt, "tokens"),
            ("L_opt", iso.loss_opt, "loss"),
        ):
            interval = law.as_dict()["interval"]
            t = (
                f", Student-t {interval_text(interval['exponent_t'])} ({law.budgets - 2} df)"
                if interval["exponent_t"]
                else ""
            )
            lines.append(
                f"- Approach 2: {name} = {law.coefficient:.3g} x C^{law.exponent:.3f} ({what}); exponent "
                f"{interval_text(interval['exponent'])} (two-level bootstrap){t}"
            )
    if parametric is not None:
        p, iv = parametric, parametric.intervals
        e = f"E fixed at {p.fixed_E:g}" if p.fixed_E is not None else f"E {interval_text(iv.get('E'))}"
        lines.append(
            f"- Approach 3: L(N, D) = {p.E:.3f} + {p.A:.4g} / N^{p.alpha:.3f} + {p.B:.4g} / D^{p.beta:.3f}; "
            f"{e}, alpha {interval_text(iv.get('alpha'))}, beta {interval_text(iv.get('beta'))}; "
            f"under C = 6ND N_opt would grow as C^{p.a:.3f} {interval_text(iv.get('a'))}"
        )
        if p.excluded:
            lines.append(
                f"- Approach 3 leaves out its {len(p.excluded)} worst-fitted point(s); that moved "
                + ", ".join(f"{k} by {v:+.3g}" for k, v in p.shift.items())
            )
    return lines


def _lr_section(table: Table) -> list[str]:
    """Which lr multiplier won each cell, when the sweep tried several (analysis.table.best_learning_rates)."""
    if not table.lr_choices:
        return []
    tried = sorted({m for c in table.lr_choices for m in c.tried})
    lines = [
        "## Learning rates",
        "",
        "Each (budget, size) cell ran at several multiples of the recipe's learning rate; the fits use the "
        "lowest-loss run of each cell. A best multiplier at the edge of those tried (!) may not be the best.",
        "",
        "| budget | params | seed | " + " | ".join(f"loss at {m:g}x" for m in tried) + " | best |",
        "|---|---|---|" + "---|" * len(tried) + "---|",
    ]
    for c in table.lr_choices:
        losses = dict(zip(c.tried, c.losses, strict=True))
        lines.append(
            f"| {c.budget:.3g} | {c.params:,.0f} | {'' if c.seed is None else c.seed} | "
            + " | ".join(number(losses.get(m), 4) if m in losses else "" for m in tried)
            + f" | {c.best:g}x{' !' if c.at_edge else ''} |"
        )
    return lines + [""]


def _compute_section(table: Table) -> list[str]:
    cost = table.cost
    lines = ["## Compute", ""]
    if cost.assumed_6nd:
        return lines + ["The table has no FLOPs: every answer assumes C = 6 N D."]
    ratios = np.exp(np.array(cost.log_c) - np.array(cost.log_n)) / 6
    lines.append(
        f"Budgets are spent as the runs spent them: FLOPs per token c(N) from {cost.source}, "
        f"{ratios[0]:.2f} x 6N at the smallest size and {ratios[-1]:.2f} x 6N at the largest "
        f"(N = `{table.params_from}`). "
        "Both approaches below answer for that same compute: D* = C / c(N*) (c interpolated between the "
        "table's sizes, continued linearly in N beyond them)."
    )
    return lines


def _beyond_section(iso, parametric, laws: list[AurocLaw], budgets: list[float], cost) -> list[str]:
    lines = [
        "## Compute-optimal model and tokens beyond the grid",
        "",
        "| budget (FLOPs) | N* (Approach 2) [95%] | D* (Approach 2) [95%] | N* (Approach 3) [95%] "
        "| D* (Approach 3) [95%] "
        "| loss (Approach 3) [95%] |" + "".join(f" AUROC {law.task} [95%] |" for law in laws),
        "|---:|---:|---:|---:|---:|---:|" + "---:|" * len(laws),
    ]
    agreement = []
    for budget in budgets:
        answer = optimal(iso, parametric, budget, laws, cost)
        cells = [f"{budget:.3g}"]
        for name in ("isoflop", "parametric"):
            a = answer.get(name)
            cells += (
                [
                    f"{number(a['n_opt'])} {interval_text(a['n_opt_interval'])}",
                    f"{number(a['d_opt'])} {interval_text(a['d_opt_interval'])}",
                ]
                if a
                else ["n/a", "n/a"]
            )
        a = answer.get("parametric")
        cells.append(f"{a['loss']:.3f} {interval_text(a['loss_interval'], 4)}" if a else "n/a")
        for law in laws:
            value = answer["auroc"][law.task]
            cells.append(f"{value['auroc']:.3f} {interval_text(value['interval'])}")
        lines.append("| " + " | ".join(cells) + " |")
        if "disagreement" in answer:
            agreement.append((budget, answer["disagreement"]["n_opt_ratio"], answer["disagreement"]["d_opt_ratio"]))
    lines.append("")
    if agreement:
        lines.append(
            "For the same compute the approaches differ by "
            + "; ".join(f"{n:.2f}x in N* and {d:.2f}x in D* at {b:.3g}" for b, n, d in agreement)
            + " (Approach 3 over Approach 2)."
        )
    lines += [
        "Extrapolations: the further past the largest budget of the grid, the less the intervals (which "
        "only resample the grid's runs) cover what can go wrong."
    ]
    return lines


def _auroc_section(table: Table, laws: list[AurocLaw]) -> list[str]:
    tasks = auroc_tasks(table)
    if not tasks:
        return ["## Downstream", "", "No AUROC in the table: the sweep evaluated no tasks."]
    best = frontier(table)
    lines = ["## AUROC against compute (the lowest-loss run of each budget)", ""]
    for task in tasks:
        xgb, xgb_bags, logistic_bags, oracle = (
            reference_auroc(table, c)
            for c in (
                f"xgboost_auroc_{task}",
                f"xgboost_bags_auroc_{task}",
                f"logistic_bags_auroc_{task}",
                f"oracle_auroc_{task}",
            )
        )
        zero = f"zero_shot_auroc_{task}" in best.columns
        head = "| budget (FLOPs) | params | loss | probe AUROC [95%] |" + (" zero-shot AUROC [95%] |" if zero else "")
        lines += [f"### {task}", "", head, "|---:|---:|---:|---:|" + ("---:|" if zero else "")]
        for row in best.iter_rows(named=True):
            cells = [_auroc_cell(row, f"auroc_{task}")] + (
                [_auroc_cell(row, f"zero_shot_auroc_{task}")] if zero else []
            )
            lines.append(
                f"| {row['budget']:.3g} | {row['params']:,.0f} | {row['loss']:.4f} | " + " | ".join(cells) + " |"
            )
        refs = []
        if xgb is not None:
            refs.append(f"XGBoost on count features {xgb:.3f}")
        if xgb_bags is not None:
            refs.append(f"XGBoost on the same bags' values {xgb_bags:.3f}")
        if logistic_bags is not None:
            refs.append(f"logistic regression on them {logistic_bags:.3f}")
        if oracle is not None:
            refs.append(f"the oracle (the generator's hidden state) {oracle:.3f}")
        lines += [
            "",
            ("Beside: " + "; ".join(refs) + " (same held-out rows).") if refs else "No baselines in the table.",
        ]
        for name, what in ((task, "probe"), (zero_shot_law_name(task), "zero-shot")):
            law = next((law for law in laws if law.task == name), None)
            if law is not None:
                lines.append(
                    f"Saturating law of the {what} AUROC along the frontier: AUROC = 0.5 + ({law.h:.3f} - 0.5) / "
                    f"(1 + exp(-{law.k:.3g} (log10 C - {law.x0:.3g}))), {law.points} budgets."
                )
        if zero:
            ceiling = reference_auroc(table, f"zero_shot_rule_auroc_{task}")
            lines.append(
                "Zero-shot: the decoder's own futures after each prediction time, the Monte Carlo share that reach the "
                "outcome, on a seeded sample of the held-out rows (docs/evaluation.md); zero_shot_vs_inference.png "
                "shows what more futures buy per budget."
                + (
                    f" The task's rule read on the patients' actual futures scores {ceiling:.3f}: the most a perfect "
                    "generator could reach with it."
                    if ceiling is not None
                    else ""
                )
            )
        lines.append("")
    return lines


def _auroc_cell(row: dict, column: str) -> str:
    """An AUROC and its interval, as the report's tables show them."""
    auroc = row.get(column)
    if auroc is None:
        return "n/a"
    spread = interval_text((row[f"{column}_lo"], row[f"{column}_hi"])) if row.get(f"{column}_lo") is not None else ""
    return f"{auroc:.3f} {spread}".rstrip()


MASKED = ("masked_item_accuracy", "value_mse", "value_pearson_median")  # the lab-bag families' own metrics


def has_masked_metrics(table: Table) -> bool:
    """Whether the table's runs measured the lab-bag families' masked-lab metrics (timelines do not)."""
    frame = table.frame
    return all(c in frame.columns for c in MASKED) and not frame["masked_item_accuracy"].drop_nulls().is_empty()


IMPUTATION = ("imputation_mse", "imputation_pearson_median")  # told the item (scaling/eval/imputation.py)
IMPUTATION_BASELINES = (("item_mean", "the item's mean"), ("ridge", "ridge"), ("xgboost", "XGBoost"))


def _masked_section(table: Table) -> list[str]:
    """The lab-bag families' masked-lab metrics and imputation along the compute-optimal frontier (none for
    timelines)."""
    if not has_masked_metrics(table):
        return []
    frame = table.frame
    imputed = "imputation_mse" in frame.columns and not frame["imputation_mse"].drop_nulls().is_empty()
    extra = " imputation MSE | imputation median Pearson |" if imputed else ""
    lines = [
        "## Masked labs (the lowest-loss run of each budget, held-out bags)",
        "",
        "| budget (FLOPs) | params | loss | masked item accuracy | value MSE (eCDF) | median per-item Pearson |"
        + extra,
        "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if imputed else ""),
    ]
    for row in frontier(table).iter_rows(named=True):
        cells = [number(row[c]) for c in MASKED + (IMPUTATION if imputed else ())]
        lines.append(f"| {row['budget']:.3g} | {row['params']:,.0f} | {row['loss']:.4f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "A constant prediction of 0.5 scores a value MSE of 1/12 = 0.0833 and no correlation (docs/models.md). "
        "The value columns read the masked lab not told its item (the pre-training task); imputation tells it.",
        "",
    ]
    if imputed:
        known = frame.filter(pl.col("imputation_mse").is_not_null()).row(0, named=True)
        named = [
            f"{label} MSE {known[f'imputation_{name}_mse']:.4f}"
            + (
                f", r {known[f'imputation_{name}_pearson_median']:.3f}"
                if known.get(f"imputation_{name}_pearson_median") is not None
                else ""
            )
            for name, label in IMPUTATION_BASELINES
            if known.get(f"imputation_{name}_mse") is not None
        ]
        lines += [
            "Imputation (`ehrscale eval RUN --imputation`): the most frequent items masked in held-out bags, the model "
            "told which; on the same bags, regressors on the bag's other labs: " + "; ".join(named) + ".",
            "",
        ]
    return lines


def render(
    table: Table,
    fits: Fits,
    *,
    title: str,
    source: str,
    figures: Path | None,
    report_dir: Path,
    beyond: tuple[float, ...] = (10.0, 100.0, 1000.0),
) -> str:
    """The report as markdown."""
    frame = table.frame
    iso, parametric, laws = fits.isoflop, fits.parametric, list(fits.auroc_laws)
    minima = budget_minima(table, fits.options.window)
    conventions = sorted(frame["convention"].drop_nulls().unique().to_list()) if "convention" in frame.columns else []
    top = max(table.budgets)
    lines = [
        f"# {title}",
        "",
        f"From `{source}`: {frame.height} finished runs over {len(table.budgets)} budgets "
        f"({', '.join(f'{b:.3g}' for b in table.budgets)} FLOPs"
        + (f", {', '.join(conventions)} convention" if conventions else "")
        + f"); parameters = `{table.params_from}`; "
        f"loss = {table.loss_label}. Fits: fits.json key `{fits.key[:12]}`, {fits.resamples} bootstrap replicates.",
    ]
    lines += [f"- note: {note}" for note in table.notes]
    lines += [f"- warning: {warning}" for warning in table.warnings]
    lines += (
        [""]
        + _compute_section(table)
        + [""]
        + _lr_section(table)
        + _isoflop_section(iso, minima, fits.options.window)
        + [""]
    )
    lines += _laws_section(iso, parametric, fits.isoflop_error) + [""]
    lines += (
        _beyond_section(iso, parametric, laws, [top * k for k in beyond], table.cost)
        + [""]
        + _masked_section(table)
        + _auroc_section(table, laws)
    )
    if figures is not None:
        lines += ["## Figures", ""]
        for name in FIGURES:
            png = figures / f"{name}.png"
            if png.exists():
                lines.append(f"![{name.replace('_', ' ')}]({relative_link(png, report_dir)})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def relative_link(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())
