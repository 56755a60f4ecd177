"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as Chinchilla did.

log L is fitted by LSE(a - alpha log N, b - beta log D, e) (A = e^a, B = e^b, E = e^e) under a Huber
loss (delta 1e-3) SUMMED over points, minimised with L-BFGS and analytic gradients from Chinchilla's
grid of 4,500 starts (alpha, beta in 0..2, e in -1..1, a, b in 0..25). The starts are optimised
together as one separable problem (one vectorised objective for all of them), then the best few
are polished one by one to convergence. Bootstrap refits (points resampled) start from the fit.

Options: fix the irreducible loss E (`fixed_E`: e is held at log E, the other four are fitted);
leave out the k points the fit explains worst (`exclude_worst`: fit, drop the k largest |residuals|
in log L, refit), with the shift that made in every parameter reported.

The compute-optimal (N, D) at a budget C minimises L(N, D) on the curve c(N) D = C, where c is the
table's own FLOPs per token (`analysis.cost`); with c = 6N that is Chinchilla's closed form
N_opt = G (C/6)^(beta/(alpha+beta)), which `optimum_6nd` keeps for reference.
"""

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from analysis.cost import CostModel
from analysis.table import Table, TableError

HUBER_DELTA = 1e-3
GRID = {
    "alpha": np.linspace(0, 2, 5),
    "beta": np.linspace(0, 2, 5),
    "e": np.linspace(-1, 1, 5),
    "a": np.linspace(0, 25, 6),
    "b": np.linspace(0, 25, 6),
}
BOOTSTRAP = 400


def start_grid() -> np.ndarray:
    """Chinchilla's 4,500 starting points as rows (a, b, e, alpha, beta)."""
    return np.array(
        [
            (a, b, e, al, be)
            for al, be, e, a, b in itertools.product(GRID["alpha"], GRID["beta"], GRID["e"], GRID["a"], GRID["b"])
        ]
    )


def objective(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Summed Huber loss per start and its gradient. theta [S, 5] = (a, b, e, alpha, beta); points on axis 1."""
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    t1 = a - alpha * log_n  # [S, P]
    t2 = b - beta * log_d
    top = np.maximum(np.maximum(t1, t2), e)
    w1, w2, w3 = np.exp(t1 - top), np.exp(t2 - top), np.exp(e - top)
    total = w1 + w2 + w3
    r = top + np.log(total) - log_loss  # the LSE prediction of log L minus the observation
    abs_r = np.abs(r)
    value = np.where(abs_r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (abs_r - 0.5 * HUBER_DELTA)).sum(axis=1)
    dr = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / total  # Huber slope times the softmax normaliser
    g1, g2 = dr * w1, dr * w2
    grad = np.stack(
        [g1.sum(axis=1), g2.sum(axis=1), (dr * w3).sum(axis=1), -(g1 * log_n).sum(axis=1), -(g2 * log_d).sum(axis=1)],
        axis=1,
    )
    return value, grad


@dataclass(frozen=True)
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    intervals: dict[str, tuple[float, float]]
    bootstrap: np.ndarray  # [replicates, 5] of (E, A, B, alpha, beta)
    cost: CostModel = field(default_factory=CostModel.six_n)
    fixed_E: float | None = None
    points: int = 0
    excluded: tuple[dict, ...] = ()  # the points left out by exclude_worst: params, tokens, loss, residual
    shift: dict[str, float] = field(default_factory=dict)  # parameter -> (fit without them) - (fit with all points)

    @property
    def a(self) -> float:
        """The compute-optimal allocation exponent of N: N_opt proportional to C^(beta / (alpha + beta))."""
        return self.beta / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """The allocation's constant; NaN where a fitted exponent or coefficient is negative (no optimum)."""
        base = self.alpha * self.A / (self.beta * self.B)
        return float(base ** (1 / (self.alpha + self.beta))) if base > 0 else float("nan")

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def optimum(self, compute: float) -> tuple[float, float]:
        """(N_opt, D_opt) at a compute budget, spending it under the table's cost per token."""
        n, d = optimum(np.array([[self.E, self.A, self.B, self.alpha, self.beta]]), compute, self.cost)
        return float(n[0]), float(d[0])

    def as_dict(self) -> dict:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "objective": self.objective,
            "fixed_E": self.fixed_E,
            "points": self.points,
            "allocation": {
                "a": self.a,
                "b": 1 - self.a,
                "G": self.G,
                "note": "exponents of N_opt and D_opt in C "
                "under C = 6ND; the answers use the table's own cost per token",
            },
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "excluded": list(self.excluded),
            "shift": self.shift,
        }


def optimum_6nd(E, A, B, alpha, beta, compute):
    """Chinchilla's closed form under C = 6 N D."""
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return g * (compute / 6) ** (beta / (alpha + beta)), (compute / 6) ** (alpha / (alpha + beta)) / g


def optimum(
    params: np.ndarray, compute: float, cost: CostModel, span: float = 14.0, steps: int = 1401
) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) per row of params [R, 5] = (E, A, B, alpha, beta): the minimum of L(N, C / c(N)) over N.

    A grid in log N of +-span around the 6ND optimum, then a finer grid around the best point; NaN where a
    (degenerate bootstrap) law has no interior minimum in that range."""
    E, A, B, alpha, beta = (params[:, i : i + 1] for i in range(5))
    with np.errstate(all="ignore"):
        centre = np.log(optimum_6nd(E, A, B, alpha, beta, compute)[0])
        centre = np.where(np.isfinite(centre), centre, 0.0)

        def loss(log_n):
            n = np.exp(log_n)
            value = E + A / n**alpha + B / cost.tokens(n, compute) ** beta
            return np.where(np.isfinite(value), value, np.inf)

        grid = centre + np.linspace(-span, span, steps)[None, :]
        values = loss(grid)
        best = np.argmin(values, axis=1)
        rows = np.arange(len(grid))
        step = 2 * span / (steps - 1)
        fine = grid[rows, best][:, None] + np.linspace(-step, step, 201)[None, :]
        log_n = fine[rows, np.argmin(loss(fine), axis=1)]
        edge = (best == 0) | (best == steps - 1) | ~np.isfinite(values[rows, best])
        n = np.where(edge, np.nan, np.exp(log_n))
        return n, cost.tokens(n, compute)


def _polish(theta: np.ndarray, log_n, log_d, log_loss, fixed_e: float | None = None) -> tuple[np.ndarray, float]:
    def f(x):
        value, grad = objective(x[None], log_n, log_d, log_loss)
        return float(value[0]), grad[0]

    bounds = None if fixed_e is None else [(None, None), (None, None), (fixed_e, fixed_e), (None, None), (None, None)]
    result = minimize(
        f, theta, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12}
    )
    return result.x, float(result.fun)


def _fit_points(
    log_n,
    log_d,
    log_loss,
    starts: np.ndarray,
    joint_iterations: int = 60,
    polish: int = 20,
    fixed_e: float | None = None,
) -> tuple[np.ndarray, float]:
    """Best (a, b, e, alpha, beta) from many starts: L-BFGS on all starts at once (one separable problem,
    a few dozen iterations to sort the basins), then the best few polished one by one to convergence.
    With `fixed_e`, e is held there (bounds of zero width) and the starts that differ only in e are one."""
    if fixed_e is not None:
        starts = np.unique(np.column_stack([starts[:, :2], np.full(len(starts), fixed_e), starts[:, 3:]]), axis=0)
    shape = starts.shape
    bounds = (
        None
        if fixed_e is None
        else [(None, None), (None, None), (fixed_e, fixed_e), (None, None), (None, None)] * shape[0]
    )

    def joint(x):
        value, grad = objective(x.reshape(shape), log_n, log_d, log_loss)
        return float(value.sum()), grad.ravel()

    result = minimize(
        joint, starts.ravel(), jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": joint_iterations}
    )
    thetas = result.x.reshape(shape)
    values, _ = objective(thetas, log_n, log_d, log_loss)
    best = None
    for index in np.argsort(values)[:polish]:
        theta, value = _polish(thetas[index], log_n, log_d, log_loss, fixed_e)
        if best is None or value < best[1]:
            best = (theta, value)
    return best


def _natural(theta: np.ndarray) -> np.ndarray:
    a, b, e, alpha, beta = theta
    with np.errstate(over="ignore"):  # a bootstrap refit can run a coefficient off to inf; it is then an outlier draw
        return np.array([np.exp(e), np.exp(a), np.exp(b), alpha, beta])


def _residuals(theta: np.ndarray, log_n, log_d, log_loss) -> np.ndarray:
    a, b, e, alpha, beta = theta
    predicted = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    return predicted - log_loss


def fit_parametric(
    table: Table,
    seed: int = 0,
    resamples: int = BOOTSTRAP,
    starts: np.ndarray | None = None,
    fixed_E: float | None = None,
    exclude_worst: int = 0,
) -> ParametricFit:
    """Approach 3 on every usable row of the table (less the `exclude_worst` worst-fitted ones); E fixed if given."""
    frame = table.frame
    log_n, log_d, log_loss = (np.log(frame[c].to_numpy()) for c in ("params", "tokens", "loss"))
    if fixed_E is not None and not (np.isfinite(fixed_E) and 0 < fixed_E < float(np.exp(log_loss.min()))):
        raise TableError(
            f"a fixed E must be positive and below the table's lowest loss "
            f"({float(np.exp(log_loss.min())):.4g}), got {fixed_E}"
        )
    fixed_e = None if fixed_E is None else float(np.log(fixed_E))
    if exclude_worst < 0 or exclude_worst > len(log_n) - 6:
        raise TableError(
            f"excluding {exclude_worst} point(s) of {len(log_n)} leaves too few to fit 5 parameters "
            "(at most the number of points less 6)"
        )
    grid = start_grid() if starts is None else starts
    theta, value = _fit_points(log_n, log_d, log_loss, grid, fixed_e=fixed_e)
    excluded, shift = [], {}
    if exclude_worst:
        residuals = _residuals(theta, log_n, log_d, log_loss)
        worst = np.argsort(-np.abs(residuals))[:exclude_worst]
        excluded = [
            {
                "params": float(np.exp(log_n[i])),
                "tokens": float(np.exp(log_d[i])),
                "loss": float(np.exp(log_loss[i])),
                "residual_log_loss": float(residuals[i]),
            }
            for i in worst
        ]
        keep = np.setdiff1d(np.arange(len(log_n)), worst)
        before = _natural(theta)
        log_n, log_d, log_loss = log_n[keep], log_d[keep], log_loss[keep]
        theta, value = _fit_points(log_n, log_d, log_loss, grid, fixed_e=fixed_e)
        after = _natural(theta)
        shift = {name: float(after[i] - before[i]) for i, name in enumerate(("E", "A", "B", "alpha", "beta"))}
        shift["a"] = float(after[4] / (after[3] + after[4]) - before[4] / (before[3] + before[4]))
    rng = np.random.default_rng(seed)
    draws = []
    # Refits start from the fit and two nudges of it: a resample moves the optimum only a little.
    nudges = rng.normal(0, 1.0, (2, 5)) * np.array([0.5, 0.5, 0.0 if fixed_e is not None else 0.05, 0.02, 0.02])
    warm = np.vstack([theta, theta + nudges])
    for _ in range(resamples):
        pick = rng.integers(0, len(log_n), len(log_n))
        best = min((_polish(w, log_n[pick], log_d[pick], log_loss[pick], fixed_e) for w in warm), key=lambda t: t[1])
        draws.append(_natural(best[0]))
    draws = np.asarray(draws).reshape(-1, 5)
    names = ("E", "A", "B", "alpha", "beta")
    intervals = {}
    if len(draws):
        intervals = {
            name: tuple(float(x) for x in np.percentile(draws[:, i], [2.5, 97.5]))
            for i, name in enumerate(names)
            if not (name == "E" and fixed_e is not None)
        }
        allocation = draws[:, 4] / (draws[:, 3] + draws[:, 4])
        intervals["a"] = tuple(float(x) for x in np.percentile(allocation, [2.5, 97.5]))
    E, A, B, alpha, beta = _natural(theta)
    return ParametricFit(
        E=float(E),
        A=float(A),
        B=float(B),
        alpha=float(alpha),
        beta=float(beta),
        objective=value,
        intervals=intervals,
        bootstrap=draws,
        cost=table.cost,
        fixed_E=fixed_E,
        points=len(log_n),
        excluded=tuple(excluded),
        shift=shift,
    )
