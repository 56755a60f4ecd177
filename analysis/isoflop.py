"""Approach 2: parabolas of loss in log N per budget, their vertices, then N_opt = k C^a and D_opt = k' C^b.

Each budget's parabola is fitted to the runs near its best one: those within `window`x of the lowest-loss
run's N (default 10x either side, `--window`; the 3 nearest when fewer are that close). A parabola is a
local model of the minimum: far points (a 30x grid's largest size can lose 2x more) pull its vertex and
curvature away from the minimum they are meant to locate. Far points stay in the table and the figures,
drawn but not fitted; `window = None` (`--window 0`) fits every point.

A budget is excluded, with a warning naming it and the reason, when it has fewer than 3 points,
its parabola has non-positive curvature, or its minimum lies outside the sampled sizes. Each
budget's D_opt is the tokens its N_opt spends the budget on under the table's own cost per token
(`analysis.cost`): D_opt = C / c(N_opt).

Intervals: a budget's vertex from a parametric bootstrap of its parabola: the fitted losses plus noise at
the residual standard deviation pooled over every fitted budget, refitted (each replicate's minimum bounded
by the budget's sampled sizes, `bounded_minimum`). Pooled, because a budget has 4-5 points near its
minimum: resampling those points with replacement mostly draws 3 distinct ones (an exact parabola through
noise) or the same 4, and the vertex intervals came out 0.3% or 6x wide by chance. The laws' intervals
from a two-level bootstrap: resample the budgets, and for each one drawn take one of its own vertex
replicates, so the uncertainty of every minimum reaches the exponent (holding the minima fixed made the
interval too narrow). Beside it, a Student-t interval of the log-log slope. Their coverage on simulated
demo-sized sweeps (`benchmarks/interval_coverage.py`, docs/analysis.md): the bootstrap is conservative,
the Student-t interval short of 95% where the parabola's own bias is as large as the noise.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
from scipy import stats

from analysis.cost import CostModel
from analysis.table import Table, TableError

MIN_POINTS = 3
BOOTSTRAP = 400
WINDOW = 10.0  # a budget's parabola is fitted to runs within this factor of its best run's N


def near_minimum(log_n: np.ndarray, loss: np.ndarray, window: float | None) -> np.ndarray:
    """Which points a budget's parabola is fitted to: within `window`x of the lowest-loss point's N in log space, or
    the MIN_POINTS nearest when fewer are that close; every point when `window` is None."""
    if window is None or len(log_n) <= MIN_POINTS:
        return np.ones(len(log_n), bool)
    distance = np.abs(log_n - log_n[int(np.argmin(loss))])
    keep = distance <= np.log(window) + 1e-9
    if len(np.unique(log_n[keep])) < MIN_POINTS:
        nearest = np.sort(np.unique(distance))[:MIN_POINTS]
        keep = distance <= nearest[-1]
    return keep


@dataclass(frozen=True)
class Vertex:
    budget: float
    n_opt: float
    d_opt: float
    loss: float
    n_interval: tuple[float, float]
    points: int  # the runs the parabola was fitted to
    left_out: int = 0  # the budget's runs beyond the window (drawn, not fitted)
    parabola: tuple[float, float, float] = (0.0, 0.0, 0.0)  # loss = p (ln N)^2 + q ln N + r
    fitted_range: tuple[float, float] = (0.0, 0.0)  # the smallest and largest N fitted
    # inner bootstrap replicates of (log N_opt, loss at the vertex); not serialised
    draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)), repr=False, compare=False)

    def as_dict(self) -> dict:
        return {
            "budget": self.budget,
            "n_opt": self.n_opt,
            "d_opt": self.d_opt,
            "loss": self.loss,
            "n_interval": list(self.n_interval),
            "points": self.points,
            "left_out": self.left_out,
            "parabola": list(self.parabola),
            "fitted_range": list(self.fitted_range),
        }


def _clean(pair) -> list | None:
    return None if pair is None or any(np.isnan(pair)) else [float(x) for x in pair]


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient x C^exponent, fitted in log-log; 95% intervals from the two-level bootstrap, and Student-t."""

    exponent: float
    coefficient: float
    exponent_interval: tuple[float, float]
    coefficient_interval: tuple[float, float]
    exponent_interval_t: tuple[float, float] = (float("nan"), float("nan"))
    budgets: int = 0

    def __call__(self, compute: float) -> float:
        return self.coefficient * compute**self.exponent

    def as_dict(self) -> dict:
        """JSON-ready; an interval that cannot be estimated (fewer than 3 budgets) is null."""
        return {
            "exponent": self.exponent,
            "coefficient": self.coefficient,
            "budgets": self.budgets,
            "interval": {
                "exponent": _clean(self.exponent_interval),
                "coefficient": _clean(self.coefficient_interval),
                "exponent_t": _clean(self.exponent_interval_t),
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PowerLaw":
        nan = (float("nan"), float("nan"))
        pair = lambda key: tuple(data["interval"].get(key) or nan)  # noqa: E731
        return cls(
            exponent=data["exponent"],
            coefficient=data["coefficient"],
            exponent_interval=pair("exponent"),
            coefficient_interval=pair("coefficient"),
            exponent_interval_t=pair("exponent_t"),
            budgets=data.get("budgets", 0),
        )


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
    cost: CostModel = field(default_factory=CostModel.six_n)
    noise: float = 0.0  # the loss noise the vertex replicates were drawn with (pooled residual sd)
    noise_dof: int = 0  # its degrees of freedom; 0: no residual, the vertices are held fixed


def parabola_vertex(log_x: np.ndarray, y: np.ndarray) -> tuple[float, float, tuple[float, float, float]] | None:
    """Fit y = p x^2 + q x + r; the vertex (x*, y*) and the coefficients (p, q, r), or None without positive
    curvature."""
    p, q, r = (float(c) for c in np.polyfit(log_x, y, 2))
    if p <= 0:
        return None
    x = -q / (2 * p)
    return x, r - q * q / (4 * p), (p, q, r)


def bounded_minimum(log_x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """The minimum of the fitted parabola over [lo, hi]: its vertex clipped to the range, or the lower end
    when it curves downwards. A bootstrap replicate of a budget's minimum: the budget's sampled sizes bound it
    (a budget whose own vertex lies outside them is excluded), so one flat resample cannot put it at 1e50."""
    p, q, r = np.polyfit(log_x, y, 2)
    if p > 0:
        x = float(np.clip(-q / (2 * p), lo, hi))
    else:
        x = lo if np.polyval((p, q, r), lo) <= np.polyval((p, q, r), hi) else hi
    return x, float(np.polyval((p, q, r), x))


def _fit_budget(
    group: pl.DataFrame, cost: CostModel, window: float | None
) -> tuple[tuple[Vertex, np.ndarray, np.ndarray] | None, str | None]:
    """A budget's parabola and vertex (no replicates yet), with the (ln N, loss) it was fitted to; or why not."""
    log_n = np.log(group["params"].to_numpy())
    loss = group["loss"].to_numpy()
    budget = float(group["budget"][0])
    keep = near_minimum(log_n, loss, window)
    left_out = int((~keep).sum())
    log_n, loss = log_n[keep], loss[keep]
    if len(log_n) < MIN_POINTS:
        return None, f"only {len(log_n)} point(s); a parabola needs {MIN_POINTS}"
    if len(np.unique(log_n)) < MIN_POINTS:
        return None, f"only {len(np.unique(log_n))} distinct sizes; a parabola needs {MIN_POINTS}"
    fit = parabola_vertex(log_n, loss)
    if fit is None:
        return None, "non-positive curvature"
    x, y, coefficients = fit
    if not (log_n.min() <= x <= log_n.max()):
        side = "above the largest" if x > log_n.max() else "below the smallest"
        return None, f"minimum at N = {np.exp(min(x, 700.0)):.3g}, {side} sampled size: sample further that way"
    n_opt = float(np.exp(x))
    vertex = Vertex(
        budget=budget,
        n_opt=n_opt,
        d_opt=float(cost.tokens(n_opt, budget)),
        loss=float(y),
        n_interval=(n_opt, n_opt),
        points=len(log_n),
        left_out=left_out,
        parabola=coefficients,
        fitted_range=(float(np.exp(log_n.min())), float(np.exp(log_n.max()))),
    )
    return (vertex, log_n, loss), None


def pooled_noise(fitted: list[tuple[Vertex, np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """The loss noise around the budgets' parabolas: residual standard deviation pooled over budgets, and its
    degrees of freedom (points less 3 per budget); (0, 0) when every budget has exactly 3 points."""
    squares = sum(float(((loss - np.polyval(v.parabola, log_n)) ** 2).sum()) for v, log_n, loss in fitted)
    dof = sum(len(log_n) - MIN_POINTS for _, log_n, _ in fitted)
    return (float(np.sqrt(squares / dof)), dof) if dof else (0.0, 0)


def _vertex_draws(vertex: Vertex, log_n: np.ndarray, noise: float, rng: np.random.Generator, resamples: int) -> Vertex:
    """The vertex with its replicates: the parabola's losses plus Gaussian noise at `noise`, refitted."""
    if noise <= 0 or resamples <= 0:
        return vertex
    fitted = np.polyval(vertex.parabola, log_n)
    lo, hi = log_n.min(), log_n.max()
    draws = np.array(
        [bounded_minimum(log_n, fitted + rng.normal(0, noise, len(log_n)), lo, hi) for _ in range(resamples)]
    )
    low, high = np.exp(np.percentile(draws[:, 0], [2.5, 97.5]))
    return replace(vertex, n_interval=(float(low), float(high)), draws=draws)


def _t_interval(log_c: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """95% Student-t interval of the log-log slope (n - 2 degrees of freedom); NaN below 3 budgets."""
    n = len(log_c)
    if n < 3:
        return float("nan"), float("nan")
    result = stats.linregress(log_c, log_y)
    half = stats.t.ppf(0.975, n - 2) * result.stderr
    return float(result.slope - half), float(result.slope + half)


def _power_law(compute: np.ndarray, values: np.ndarray, draws: np.ndarray) -> PowerLaw:
    """Log-log line through the vertices; intervals from the two-level draws [replicates, 2] (intercept, slope)."""
    slope, intercept = np.polyfit(np.log(compute), np.log(values), 1)
    nan = (float("nan"), float("nan"))
    if len(compute) < 3 or len(draws) < 2:
        return PowerLaw(
            exponent=float(slope),
            coefficient=float(np.exp(intercept)),
            exponent_interval=nan,
            coefficient_interval=nan,
            budgets=len(compute),
        )
    (ilo, ihi), (slo, shi) = np.percentile(draws[:, 0], [2.5, 97.5]), np.percentile(draws[:, 1], [2.5, 97.5])
    with np.errstate(
        over="ignore"
    ):  # a coefficient's bound can be beyond float range on a wild sweep: inf, said as such
        ilo, ihi = float(np.exp(ilo)), float(np.exp(ihi))
    return PowerLaw(
        exponent=float(slope),
        coefficient=float(np.exp(intercept)),
        exponent_interval=(float(slo), float(shi)),
        coefficient_interval=(ilo, ihi),
        exponent_interval_t=_t_interval(np.log(compute), np.log(values)),
        budgets=len(compute),
    )


def _two_level_draws(
    vertices: list[Vertex], cost: CostModel, rng: np.random.Generator, resamples: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intercept, slope) replicates of the N, D and loss laws: budgets resampled, each with one of its own
    vertex replicates."""
    k = len(vertices)
    compute = np.array([v.budget for v in vertices])
    point = [np.array([[np.log(v.n_opt), v.loss]]) for v in vertices]
    inner = [v.draws if len(v.draws) else p for v, p in zip(vertices, point)]
    out = {"n": [], "d": [], "loss": []}
    if k < 3:
        return tuple(np.zeros((0, 2)) for _ in out)
    for _ in range(resamples):
        pick = rng.integers(0, k, k)
        if len(np.unique(pick)) < 2:
            continue
        chosen = np.array([inner[i][rng.integers(0, len(inner[i]))] for i in pick])
        log_c = np.log(compute[pick])
        log_n, loss = chosen[:, 0], chosen[:, 1]
        log_d = np.log(cost.tokens(np.exp(log_n), compute[pick]))
        for key, y in (("n", log_n), ("d", log_d), ("loss", np.log(np.maximum(loss, 1e-300)))):
            s, i = np.polyfit(log_c, y, 1)
            out[key].append((i, s))
    return tuple(np.asarray(out[key]).reshape(-1, 2) for key in ("n", "d", "loss"))


def fit_isoflop(table: Table, seed: int = 0, resamples: int = BOOTSTRAP, window: float | None = WINDOW) -> IsoflopFit:
    """Approach 2 over every budget of the table, each parabola fitted within `window`x of the budget's best run."""
    rng = np.random.default_rng(seed)
    fitted, excluded = [], []
    for budget in table.budgets:
        fit, reason = _fit_budget(table.frame.filter(pl.col("budget") == budget), table.cost, window)
        if fit is None:
            excluded.append({"budget": budget, "reason": reason})
        else:
            fitted.append(fit)
    noise, noise_dof = pooled_noise(fitted)
    vertices = [_vertex_draws(vertex, log_n, noise, rng, resamples) for vertex, log_n, _ in fitted]
    if len(vertices) < 2:
        detail = "; ".join(f"{e['budget']:.3g}: {e['reason']}" for e in excluded) or "none excluded"
        raise TableError(
            f"Approach 2 needs at least 2 budgets with an interior minimum, found {len(vertices)} "
            f"(excluded: {detail}). Add budgets, or sizes either side of each budget's best run."
        )
    compute = np.array([v.budget for v in vertices])
    n_draws, d_draws, loss_draws = _two_level_draws(vertices, table.cost, rng, resamples)
    return IsoflopFit(
        vertices=vertices,
        excluded=excluded,
        n_opt=_power_law(compute, np.array([v.n_opt for v in vertices]), n_draws),
        d_opt=_power_law(compute, np.array([v.d_opt for v in vertices]), d_draws),
        bootstrap_n=n_draws,
        bootstrap_d=d_draws,
        loss_opt=_power_law(compute, np.array([v.loss for v in vertices]), loss_draws),
        bootstrap_loss=loss_draws,
        cost=table.cost,
        noise=noise,
        noise_dof=noise_dof,
    )


def predict_interval(draws: np.ndarray, compute: float) -> tuple[float, float] | None:
    """95% interval of a power law's prediction at `compute` from its bootstrap (log coefficient, exponent) draws;
    None when there was nothing to resample (fewer than 3 budgets)."""
    if len(draws) < 2:
        return None
    with np.errstate(over="ignore"):
        values = np.exp(draws[:, 0] + draws[:, 1] * np.log(compute))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
