"""Approach 3: L(N, D) = E + A / N^alpha + B / D^beta, fitted as Chinchilla did.

log L is fitted by LSE(a - alpha log N, b - beta log D, e) (A = e^a, B = e^b, E = e^e) under a Huber
loss (delta 1e-3) SUMMED over points, minimised with L-BFGS and analytic gradients from Chinchilla's
grid of 4,500 starts (alpha, beta in 0..2, e in -1..1, a, b in 0..25). The starts are optimised
together as one separable problem (one vectorised objective for all of them), then the best few
are polished one by one to convergence. Bootstrap refits (points resampled) start from the fit.
"""

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from analysis.table import Table

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

    @property
    def a(self) -> float:
        """The compute-optimal allocation exponent of N: N_opt proportional to C^(beta / (alpha + beta))."""
        return self.beta / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def optimum(self, compute: float) -> tuple[float, float]:
        """(N_opt, D_opt) at a compute budget, with C = 6 N D."""
        return optimum(self.E, self.A, self.B, self.alpha, self.beta, compute)

    def as_dict(self) -> dict:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "objective": self.objective,
            "allocation": {"a": self.a, "b": 1 - self.a, "G": self.G},
            "intervals": {k: list(v) for k, v in self.intervals.items()},
        }


def optimum(E, A, B, alpha, beta, compute):
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return g * (compute / 6) ** (beta / (alpha + beta)), (compute / 6) ** (alpha / (alpha + beta)) / g


def _polish(theta: np.ndarray, log_n, log_d, log_loss) -> tuple[np.ndarray, float]:
    def f(x):
        value, grad = objective(x[None], log_n, log_d, log_loss)
        return float(value[0]), grad[0]

    result = minimize(f, theta, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    return result.x, float(result.fun)


def _fit_points(
    log_n, log_d, log_loss, starts: np.ndarray, joint_iterations: int = 60, polish: int = 20
) -> tuple[np.ndarray, float]:
    """Best (a, b, e, alpha, beta) from many starts: L-BFGS on all starts at once (one separable problem,
    a few dozen iterations to sort the basins), then the best few polished one by one to convergence."""
    shape = starts.shape

    def joint(x):
        value, grad = objective(x.reshape(shape), log_n, log_d, log_loss)
        return float(value.sum()), grad.ravel()

    result = minimize(joint, starts.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": joint_iterations})
    thetas = result.x.reshape(shape)
    values, _ = objective(thetas, log_n, log_d, log_loss)
    best = None
    for index in np.argsort(values)[:polish]:
        theta, value = _polish(thetas[index], log_n, log_d, log_loss)
        if best is None or value < best[1]:
            best = (theta, value)
    return best


def _natural(theta: np.ndarray) -> np.ndarray:
    a, b, e, alpha, beta = theta
    with np.errstate(over="ignore"):  # a bootstrap refit can run a coefficient off to inf; it is then an outlier draw
        return np.array([np.exp(e), np.exp(a), np.exp(b), alpha, beta])


def fit_parametric(
    table: Table, seed: int = 0, resamples: int = BOOTSTRAP, starts: np.ndarray | None = None
) -> ParametricFit:
    """Approach 3 on every usable row of the table."""
    frame = table.frame
    log_n, log_d, log_loss = (np.log(frame[c].to_numpy()) for c in ("params", "tokens", "loss"))
    theta, value = _fit_points(log_n, log_d, log_loss, start_grid() if starts is None else starts)
    rng = np.random.default_rng(seed)
    draws = []
    # Refits start from the fit and two nudges of it: a resample moves the optimum only a little.
    warm = np.vstack([theta, theta + rng.normal(0, 1.0, (2, 5)) * np.array([0.5, 0.5, 0.05, 0.02, 0.02])])
    for _ in range(resamples):
        pick = rng.integers(0, len(log_n), len(log_n))
        best = min((_polish(w, log_n[pick], log_d[pick], log_loss[pick]) for w in warm), key=lambda t: t[1])
        draws.append(_natural(best[0]))
    draws = np.asarray(draws).reshape(-1, 5)
    names = ("E", "A", "B", "alpha", "beta")
    intervals = {}
    if len(draws):
        intervals = {
            name: tuple(float(x) for x in np.percentile(draws[:, i], [2.5, 97.5])) for i, name in enumerate(names)
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
    )
