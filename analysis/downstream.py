"""Downstream laws: AUROC against compute (floor 0.5, saturating in log C) and loss against AUROC.

AUROC(C) = 0.5 + (h - 0.5) x sigmoid(k (log10 C - x0)): 0.5 at no compute, rising to a ceiling h.
It is fitted to the compute-optimal frontier: at each budget, the run with the lowest loss; its
interval comes from a residual bootstrap, and only from 4 frontier points on.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import curve_fit
from scipy.stats import pearsonr, spearmanr

from analysis.table import Table

BOOTSTRAP = 200
# A fit not done in this many evaluations is one of the degenerate replicates (a non-monotone frontier pushing h to
# its bound), left out of the interval as one that fails; at 20,000 a few of them took 12 s each (a 92 s fit).
MAX_EVALUATIONS = 2_000


def saturating(log_c: np.ndarray, h: float, k: float, x0: float) -> np.ndarray:
    return 0.5 + (h - 0.5) / (1 + np.exp(-k * (log_c - x0)))


@dataclass(frozen=True)
class AurocLaw:
    task: str
    h: float
    k: float
    x0: float
    draws: np.ndarray  # [replicates, 3]
    points: int

    def predict(self, compute: float) -> tuple[float, float | None, float | None]:
        """AUROC at a budget and its 95% bootstrap interval (None where the points cannot support one)."""
        x = np.log10(compute)
        point = float(saturating(x, self.h, self.k, self.x0))
        if len(self.draws) < 2:
            return point, None, None
        lo, hi = np.percentile(saturating(x, self.draws[:, 0], self.draws[:, 1], self.draws[:, 2]), [2.5, 97.5])
        return point, float(lo), float(hi)

    def as_dict(self) -> dict:
        return {
            "task": self.task,
            "form": "0.5 + (h - 0.5) / (1 + exp(-k (log10 C - x0)))",
            "h": self.h,
            "k": self.k,
            "x0": self.x0,
            "points": self.points,
            "draws": np.asarray(self.draws).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "AurocLaw":
        return cls(
            task=data["task"],
            h=data["h"],
            k=data["k"],
            x0=data["x0"],
            draws=np.asarray(data["draws"], dtype=float).reshape(-1, 3),
            points=data["points"],
        )


def auroc_tasks(table: Table) -> list[str]:
    return sorted(
        c.removeprefix("auroc_")
        for c in table.frame.columns
        if c.startswith("auroc_") and not c.endswith(("_lo", "_hi"))
    )


ZERO_SHOT = "zero_shot_auroc_"  # the timeline decoder's own futures (scaling.eval.zero_shot), beside the probe's


def zero_shot_tasks(table: Table) -> list[str]:
    """Tasks with a zero-shot AUROC column (`zero_shot_auroc_<task>`, not its interval or per-futures columns)."""
    return sorted(
        c.removeprefix(ZERO_SHOT)
        for c in table.frame.columns
        if c.startswith(ZERO_SHOT) and not c.endswith(("_lo", "_hi")) and "_futures" not in c
    )


def zero_shot_law_name(task: str) -> str:
    """The name a zero-shot AUROC law goes by in fits.json and the report, beside the probe's (`task`)."""
    return f"{task} (zero-shot)"


def reference_auroc(table: Table, column: str) -> float | None:
    """A baseline's AUROC (XGBoost, logistic regression, the oracle): one number per task, on every run's row;
    None when the table has no such column or no value in it."""
    if column not in table.frame.columns:
        return None
    values = table.frame[column].drop_nulls()
    return float(values[0]) if len(values) else None


def frontier(table: Table) -> pl.DataFrame:
    """At each budget, the run with the lowest loss."""
    return frontier_rows(table.frame)


def frontier_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """At each budget, the row with the lowest loss (the sweep driver picks the runs to generate futures with)."""
    return frame.sort("loss").group_by("budget", maintain_order=True).first().sort("budget")


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    try:
        params, _ = curve_fit(
            saturating,
            x,
            y,
            p0=(max(y.max(), 0.55), 1.0, float(np.median(x))),
            bounds=([0.5, 0.0, x.min() - 10], [1.0, 20.0, x.max() + 10]),
            maxfev=MAX_EVALUATIONS,
        )
        return tuple(float(p) for p in params)
    except (RuntimeError, ValueError):
        return None


def fit_auroc(
    table: Table, task: str, seed: int = 0, resamples: int = BOOTSTRAP, zero_shot: bool = False
) -> AurocLaw | None:
    """The saturating law of a task's AUROC (the probe's, or with `zero_shot` the futures') along the frontier;
    None with fewer than 3 frontier points.

    Three parameters through 3 points is an exact fit with nothing left to estimate its error: it gets no
    interval. From 4 points on, a residual bootstrap gives one: the fit's residuals (scaled by
    sqrt(n / (n - 3)) for the parameters fitted) resampled onto its predictions, and refitted."""
    column = f"{ZERO_SHOT}{task}" if zero_shot else f"auroc_{task}"
    points = frontier(table).filter(pl.col(column).is_not_null())
    if points.height < 3:
        return None
    x, y = np.log10(points["flops"].to_numpy()), points[column].to_numpy().astype(float)
    fitted = _fit(x, y)
    if fitted is None:
        return None
    rng = np.random.default_rng(seed)
    draws = []
    if len(x) >= 4:
        predicted = saturating(x, *fitted)
        residuals = (y - predicted) * np.sqrt(len(x) / (len(x) - 3))
        draws = [
            d for d in (_fit(x, predicted + rng.choice(residuals, len(x))) for _ in range(resamples)) if d is not None
        ]
    return AurocLaw(
        task=zero_shot_law_name(task) if zero_shot else task,
        h=fitted[0],
        k=fitted[1],
        x0=fitted[2],
        draws=np.asarray(draws).reshape(-1, 3),
        points=len(x),
    )


def inference_curves(table: Table, task: str) -> list[dict]:
    """For each frontier run with zero-shot AUROC by number of futures: its budget, and the AUROC against inference
    compute per prediction time = futures x generated tokens per future x forward FLOPs per token (a third of the
    training convention's FLOPs per token: the forward pass of its forward and backward)."""
    prefix = f"{ZERO_SHOT}{task}_futures"
    counts = sorted(int(c.removeprefix(prefix)) for c in table.frame.columns if c.startswith(prefix))
    tokens = f"zero_shot_tokens_per_future_{task}"
    if not counts or tokens not in table.frame.columns or "flops_per_token" not in table.frame.columns:
        return []
    curves = []
    for row in frontier(table).iter_rows(named=True):
        aurocs = [row.get(f"{prefix}{n}") for n in counts]
        if row.get(tokens) is None or any(a is None for a in aurocs):
            continue
        per_future = row[tokens] * row["flops_per_token"] / 3
        curves.append({"budget": row["budget"], "flops": [n * per_future for n in counts], "auroc": aurocs})
    return curves


def loss_vs_auroc(table: Table, task: str) -> dict | None:
    """A line of AUROC on loss over all runs with both, and the correlations."""
    rows = table.frame.filter(pl.col(f"auroc_{task}").is_not_null())
    if rows.height < 3:
        return None
    loss, auroc = rows["loss"].to_numpy(), rows[f"auroc_{task}"].to_numpy().astype(float)
    slope, intercept = np.polyfit(loss, auroc, 1)
    return {
        "task": task,
        "slope": float(slope),
        "intercept": float(intercept),
        "points": int(rows.height),
        "pearson": float(pearsonr(loss, auroc)[0]),
        "spearman": float(spearmanr(loss, auroc)[0]),
    }
