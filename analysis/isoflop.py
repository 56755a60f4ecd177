"""Approach 2: parabolas of loss in log N (and in log D) per budget, their vertices, then N_opt = k C^a and D_opt = k' C^b.

A budget is excluded, with a warning naming it and the reason, when it has fewer than 3 points,
its parabola has non-positive curvature, or its minimum lies outside the sampled sizes. Intervals
come from a bootstrap over each budget's points (vertex) and over the budgets (exponents).
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis.table import Table, TableError

MIN_POINTS = 3
BOOTSTRAP = 400


@dataclass(frozen=True)
class Vertex:
    budget: float
    n_opt: float
    d_opt: float
    loss: float
    n_interval: tuple[float, float]
    points: int


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient x C^exponent, fitted in log-log; intervals are 95% bootstrap percentiles."""

    exponent: float
    coefficient: float
    exponent_interval: tuple[float, float]
    coefficient_interval: tuple[float, float]

    def __call__(self, compute: float) -> float:
        return self.coefficient * compute**self.exponent

    def as_dict(self) -> dict:
        """JSON-ready; an interval that cannot be estimated (fewer than 3 budgets) is null."""
        clean = lambda pair: None if any(np.isnan(pair)) else list(pair)  # noqa: E731
        return {
            "exponent": self.exponent,
            "coefficient": self.coefficient,
            "interval": {"exponent": clean(self.exponent_interval), "coefficient": clean(self.coefficient_interval)},
        }


@dataclass(frozen=True)
class IsoflopFit:
    vertices: list[Vertex]
    excluded: list[dict]
    n_opt: PowerLaw
    d_opt: PowerLaw
    bootstrap_n: np.ndarray  # [replicates, 2]: (log coefficient, exponent) of N_opt
    bootstrap_d: np.ndarray
    loss_opt: PowerLaw  # the vertices' loss against compute, L_opt = k C^c (a local power law, no floor)
    bootstrap_loss: np.ndarray


def parabola_vertex(log_x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Fit y = p x^2 + q x + r; the vertex (x*, y*) and curvature p, or None without positive curvature."""
    p, q, r = np.polyfit(log_x, y, 2)
    if p <= 0:
        return None
    x = -q / (2 * p)
    return x, r - q * q / (4 * p), p


def _fit_budget(group: pl.DataFrame, rng: np.random.Generator, resamples: int) -> tuple[Vertex | None, str | None]:
    log_n = np.log(group["params"].to_numpy())
    loss = group["loss"].to_numpy()
    budget = float(group["budget"][0])
    if len(log_n) < MIN_POINTS:
        return None, f"only {len(log_n)} point(s); a parabola needs {MIN_POINTS}"
    if len(np.unique(log_n)) < MIN_POINTS:
        return None, f"only {len(np.unique(log_n))} distinct sizes; a parabola needs {MIN_POINTS}"
    fit = parabola_vertex(log_n, loss)
    if fit is None:
        return None, "non-positive curvature"
    x, y, _ = fit
    if not (log_n.min() <= x <= log_n.max()):
        side = "above the largest" if x > log_n.max() else "below the smallest"
        return None, f"minimum at N = {np.exp(x):.3g}, {side} sampled size: sample further that way"
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, len(log_n), len(log_n))
        if len(np.unique(log_n[pick])) >= MIN_POINTS:
            vertex = parabola_vertex(log_n[pick], loss[pick])
            if vertex is not None:
                draws.append(vertex[0])
    lo, hi = np.percentile(draws, [2.5, 97.5]) if draws else (x, x)
    n_opt = float(np.exp(x))
    # Tokens at the optimum: the vertex of the same budget's parabola in log D; if that one has no
    # interior minimum, the tokens the optimal size spends the budget on.
    log_d = np.log(group["tokens"].to_numpy())
    in_d = parabola_vertex(log_d, loss)
    if in_d is not None and log_d.min() <= in_d[0] <= log_d.max():
        d_opt = float(np.exp(in_d[0]))
    else:
        per = float(np.median(group["flops"].to_numpy() / (group["params"].to_numpy() * group["tokens"].to_numpy())))
        d_opt = budget / (per * n_opt)
    return Vertex(
        budget=budget,
        n_opt=n_opt,
        d_opt=d_opt,
        loss=float(y),
        n_interval=(float(np.exp(lo)), float(np.exp(hi))),
        points=len(log_n),
    ), None


def _power_law(
    compute: np.ndarray, values: np.ndarray, rng: np.random.Generator, resamples: int
) -> tuple[PowerLaw, np.ndarray]:
    """Log-log line; bootstrap over the budgets, which needs at least 3 of them for an interval."""
    slope, intercept = np.polyfit(np.log(compute), np.log(values), 1)
    if len(compute) < 3:
        nan = (float("nan"), float("nan"))
        law = PowerLaw(
            exponent=float(slope), coefficient=float(np.exp(intercept)), exponent_interval=nan, coefficient_interval=nan
        )
        return law, np.array([[intercept, slope]])
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, len(compute), len(compute))
        if len(np.unique(compute[pick])) >= 2:
            s, i = np.polyfit(np.log(compute[pick]), np.log(values[pick]), 1)
            draws.append((i, s))
    draws = np.asarray(draws) if draws else np.array([[intercept, slope]])
    (ilo, ihi), (slo, shi) = np.percentile(draws[:, 0], [2.5, 97.5]), np.percentile(draws[:, 1], [2.5, 97.5])
    law = PowerLaw(
        exponent=float(slope),
        coefficient=float(np.exp(intercept)),
        exponent_interval=(float(slo), float(shi)),
        coefficient_interval=(float(np.exp(ilo)), float(np.exp(ihi))),
    )
    return law, draws


def fit_isoflop(table: Table, seed: int = 0, resamples: int = BOOTSTRAP) -> IsoflopFit:
    """Approach 2 over every budget of the table."""
    rng = np.random.default_rng(seed)
    vertices, excluded = [], []
    for budget in table.budgets:
        group = table.frame.filter(pl.col("budget") == budget)
        vertex, reason = _fit_budget(group, rng, resamples)
        if vertex is None:
            excluded.append({"budget": budget, "reason": reason})
        else:
            vertices.append(vertex)
    if len(vertices) < 2:
        detail = "; ".join(f"{e['budget']:.3g}: {e['reason']}" for e in excluded) or "none excluded"
        raise TableError(
            f"Approach 2 needs at least 2 budgets with an interior minimum, found {len(vertices)} "
            f"(excluded: {detail}). Add budgets, or sizes either side of each budget's best run."
        )
    compute = np.array([v.budget for v in vertices])
    n_law, n_draws = _power_law(compute, np.array([v.n_opt for v in vertices]), rng, resamples)
    d_law, d_draws = _power_law(compute, np.array([v.d_opt for v in vertices]), rng, resamples)
    loss_law, loss_draws = _power_law(compute, np.array([v.loss for v in vertices]), rng, resamples)
    return IsoflopFit(
        vertices=vertices,
        excluded=excluded,
        n_opt=n_law,
        d_opt=d_law,
        bootstrap_n=n_draws,
        bootstrap_d=d_draws,
        loss_opt=loss_law,
        bootstrap_loss=loss_draws,
    )


def predict_interval(draws: np.ndarray, compute: float) -> tuple[float, float] | None:
    """95% interval of a power law's prediction at `compute` from its bootstrap (log coefficient, exponent) draws;
    None when there was nothing to resample (fewer than 3 budgets)."""
    if len(draws) < 2:
        return None
    values = np.exp(draws[:, 0] + draws[:, 1] * np.log(compute))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
