"""Learning-rate calibration (`ehrscale lr-fit RUNS`): each cell's best learning rate, and the rule that gives it.

A calibration sweep (`sweeps/lr-calibration.toml`) runs each (budget, width, seed) cell at several multiples
of the recipe's rule, lr = lr_width_product / width. Per cell, the best multiplier m* is the vertex of a
parabola in log(multiplier) through the lowest loss and its two neighbours; when the lowest loss is at the
smallest or largest multiplier tried, m* is that multiplier and the cell is flagged (the best lies beyond).
Then over the interior cells, log m* = a + b log(width):

- b = 0 means the rule's 1/width holds and only its constant is off: lr_width_product x exp(a');
  a' is the mean of log m* (b held at 0), with its Student-t interval;
- b != 0 (its 95% interval excludes 0) means the best lr goes as 1 / width^(1 - b).
"""

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from analysis.isoflop import parabola_vertex


class LrError(Exception):
    """A table the calibration cannot use; the message says what is missing."""


@dataclass(frozen=True)
class CellOptimum:
    budget: float
    width: int
    seed: int | None
    multipliers: tuple[float, ...]
    losses: tuple[float, ...]
    best: float  # m*: the parabola's vertex, or the edge multiplier
    at_edge: bool
    rule_lr: float | None  # the rule's lr (multiplier 1) for this width, when the table records peak_lr

    @property
    def best_lr(self) -> float | None:
        return None if self.rule_lr is None else self.rule_lr * self.best


@dataclass(frozen=True)
class LrRule:
    cells: tuple[CellOptimum, ...]
    factor: float  # x lr_width_product, with the 1/width rule kept (b = 0)
    factor_interval: tuple[float, float] | None
    slope: float | None  # b: d log m* / d log width
    slope_interval: tuple[float, float] | None
    lr_width_product: float | None  # the calibrated constant, when the table records each run's peak lr

    @property
    def interior(self) -> list[CellOptimum]:
        return [c for c in self.cells if not c.at_edge]

    @property
    def width_exponent_holds(self) -> bool | None:
        """Whether 1/width is consistent with the data (b's interval holds 0); None without an interval."""
        if self.slope_interval is None:
            return None
        return bool(self.slope_interval[0] <= 0.0 <= self.slope_interval[1])


def vertex(multipliers: list[float], losses: list[float]) -> tuple[float, bool]:
    """The best multiplier of one cell and whether it sits at the edge of those tried."""
    order = np.argsort(multipliers)
    m, loss = np.asarray(multipliers, float)[order], np.asarray(losses, float)[order]
    i = int(np.argmin(loss))
    if len(m) < 3 or i in (0, len(m) - 1):
        return float(m[i]), len(m) > 1
    x = np.log(m[i - 1 : i + 2])
    fit = parabola_vertex(x, loss[i - 1 : i + 2])
    if fit is None:  # three points around a minimum always curve up; guard against ties
        return float(m[i]), False
    return float(np.exp(np.clip(fit[0], x[0], x[-1]))), False


def cell_optima(frame: pl.DataFrame) -> list[CellOptimum]:
    """The best multiplier of each (budget, width, seed) cell of a results table."""
    for column in ("width", "lr_multiplier", "loss", "budget"):
        if column not in frame.columns:
            raise LrError(f"no column '{column}': a calibration table comes from a sweep with lr_multipliers")
    if "status" in frame.columns:
        frame = frame.filter(pl.col("status") == "ok")
    frame = frame.filter(pl.col("loss").is_finite())
    cell = ["budget", "width"] + (["seed"] if "seed" in frame.columns else [])
    cells = []
    for _, rows in frame.sort(cell + ["lr_multiplier"]).group_by(cell, maintain_order=True):
        multipliers, losses = rows["lr_multiplier"].to_list(), rows["loss"].to_list()
        if len(set(multipliers)) < 2:
            continue
        best, edge = vertex(multipliers, losses)
        rule_lr = None
        if "peak_lr" in rows.columns and rows["peak_lr"].is_not_null().all():
            rule_lr = float(np.median(rows["peak_lr"].to_numpy() / rows["lr_multiplier"].to_numpy()))
        first = rows.row(0, named=True)
        cells.append(
            CellOptimum(
                budget=float(first["budget"]),
                width=int(first["width"]),
                seed=first.get("seed"),
                multipliers=tuple(multipliers),
                losses=tuple(losses),
                best=best,
                at_edge=edge,
                rule_lr=rule_lr,
            )
        )
    if not cells:
        raise LrError("no cell with runs at two or more lr multipliers")
    return cells


def fit_rule(cells: list[CellOptimum]) -> LrRule:
    """The constant's factor (1/width kept) and the width slope of log m*, over the interior cells."""
    interior = [c for c in cells if not c.at_edge]
    logs = np.log([c.best for c in interior])
    widths = np.log([c.width for c in interior])
    factor = float(np.exp(logs.mean())) if len(logs) else math.nan
    factor_interval = None
    if len(logs) >= 2:
        half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
        factor_interval = (float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)))
    slope, slope_interval = None, None
    if len(np.unique(widths)) >= 2:
        fit = stats.linregress(widths, logs)
        slope = float(fit.slope)
        if len(logs) >= 3:
            half = stats.t.ppf(0.975, len(logs) - 2) * fit.stderr
            slope_interval = (float(slope - half), float(slope + half))
    products = [c.rule_lr * c.width for c in interior if c.rule_lr is not None]
    product = float(np.median(products)) * factor if products and math.isfinite(factor) else None
    return LrRule(tuple(cells), factor, factor_interval, slope, slope_interval, product)


def calibrate(frame: pl.DataFrame) -> LrRule:
    return fit_rule(cell_optima(frame))


def summary_lines(rule: LrRule) -> list[str]:
    """What the calibration says, for the command line and the docs."""
    lines = [
        f"{len(rule.cells)} cells, {len(rule.interior)} with an interior best"
        + (
            f"; {len(rule.cells) - len(rule.interior)} at the edge of the multipliers tried (widen them)"
            if len(rule.interior) < len(rule.cells)
            else ""
        )
    ]
    for c in rule.cells:
        tried = ", ".join(f"{m:g}x {loss:.4f}" for m, loss in zip(c.multipliers, c.losses, strict=True))
        lr = f" (lr {c.best_lr:.3g})" if c.best_lr is not None else ""
        lines.append(
            f"  budget {c.budget:.3g} width {c.width}{'' if c.seed is None else f' seed {c.seed}'}: {tried} -> best "
            f"{c.best:.3g}x{lr}{' (edge)' if c.at_edge else ''}"
        )
    if not rule.interior:
        return lines + ["no interior best: nothing to fit; widen lr_multipliers"]
    interval = f" (95% [{rule.factor_interval[0]:.3g}, {rule.factor_interval[1]:.3g}])" if rule.factor_interval else ""
    lines.append(f"best multiplier with lr = c / width kept: {rule.factor:.3g}x{interval}")
    if rule.slope is not None:
        spread = f" (95% [{rule.slope_interval[0]:.3g}, {rule.slope_interval[1]:.3g}])" if rule.slope_interval else ""
        verdict = {
            True: "consistent with 0: 1/width holds",
            False: f"not 0: the best lr goes as 1 / width^{1 - rule.slope:.2f}",
            None: "too few cells for an interval",
        }[rule.width_exponent_holds]
        lines.append(f"slope of log(best multiplier) on log(width): {rule.slope:.3g}{spread}, {verdict}")
    if rule.lr_width_product is not None:
        lines.append(f"calibrated lr_width_product: {rule.lr_width_product:.3g} (at the sweep's batch)")
    return lines
