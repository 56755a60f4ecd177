"""The questions a researcher asks of the fits: at this budget, how big a model and how many tokens?

Both approaches answer for the same compute: the table's own FLOPs per token (`analysis.cost`).
Approach 2's N* is its power law at C, and D* = C / c(N*); Approach 3's (N*, D*) is the minimum of
L(N, D) on c(N) D = C. Each answer says what its N* and D* cost under that model (`spends`).
"""

import numpy as np

from analysis.cost import CostModel
from analysis.isoflop import IsoflopFit, predict_interval
from analysis.parametric import ParametricFit, optimum


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    return [float(x) for x in np.percentile(values, [2.5, 97.5])] if len(values) >= 2 else None


def _isoflop_answer(isoflop: IsoflopFit, budget: float) -> dict:
    cost = isoflop.cost
    n = isoflop.n_opt(budget)
    d = float(cost.tokens(n, budget))
    n_interval = predict_interval(isoflop.bootstrap_n, budget)
    d_interval = None
    if n_interval is not None:  # D* = C / c(N*) falls as N* grows: the interval's ends swap
        d_interval = sorted(float(cost.tokens(x, budget)) for x in n_interval)
    return {
        "n_opt": n,
        "n_opt_interval": list(n_interval) if n_interval else None,
        "d_opt": d,
        "d_opt_interval": d_interval,
        "loss": isoflop.loss_opt(budget),
        "loss_interval": _list(predict_interval(isoflop.bootstrap_loss, budget)),
        "spends": float(cost.per_token(n) * d),
    }


def _list(pair):
    return list(pair) if pair else None


def _parametric_answer(parametric: ParametricFit, budget: float) -> dict:
    n, d = parametric.optimum(budget)
    draws = parametric.bootstrap
    ns, ds = optimum(draws, budget, parametric.cost) if len(draws) else (np.zeros(0), np.zeros(0))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # degenerate bootstrap draws: inf/nan
        losses = draws[:, 0] + draws[:, 1] / ns ** draws[:, 3] + draws[:, 2] / ds ** draws[:, 4] if len(draws) else ns
    return {
        "n_opt": n,
        "n_opt_interval": _interval(ns),
        "d_opt": d,
        "d_opt_interval": _interval(ds),
        "loss": parametric.loss(n, d) if np.isfinite(n) else float("nan"),
        "loss_interval": _interval(losses),
        "spends": float(parametric.cost.per_token(n) * d) if np.isfinite(n) else float("nan"),
        "no_minimum_draws": int(np.sum(~np.isfinite(ns))),
    }


def optimal(
    isoflop: IsoflopFit | None,
    parametric: ParametricFit | None,
    budget: float,
    auroc_laws: list | None = None,
    cost: CostModel | None = None,
) -> dict:
    """N*, D* (and the loss; AUROC where laws are given) at a budget, with 95% intervals, from both approaches."""
    cost = cost or (isoflop.cost if isoflop else parametric.cost if parametric else CostModel.six_n())
    answer: dict = {"budget": budget, "compute": cost.as_dict() | {"points": len(cost.log_n)}}
    for law in auroc_laws or []:
        point, lo, hi = law.predict(budget)
        answer.setdefault("auroc", {})[law.task] = {"auroc": point, "interval": None if lo is None else [lo, hi]}
    if isoflop is not None:
        answer["isoflop"] = _isoflop_answer(isoflop, budget)
    if parametric is not None:
        answer["parametric"] = _parametric_answer(parametric, budget)
    if isoflop is not None and parametric is not None:
        answer["disagreement"] = {
            "n_opt_ratio": answer["parametric"]["n_opt"] / answer["isoflop"]["n_opt"],
            "d_opt_ratio": answer["parametric"]["d_opt"] / answer["isoflop"]["d_opt"],
        }
    return answer


def next_grid(n_opt: float, budget: float, cost: CostModel, sizes: int = 7, span: float = 8.0) -> list[dict]:
    """Sizes for a new budget: geometric, centred on the predicted N_opt, from N_opt / span to N_opt x span,
    each with the tokens that spend the budget under the table's cost per token."""
    return [
        {"params": float(n), "tokens": float(cost.tokens(n, budget)), "flops_per_token": float(cost.per_token(n))}
        for n in np.geomspace(n_opt / span, n_opt * span, sizes)
    ]
