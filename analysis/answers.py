"""The questions a researcher asks of the fits: at this budget, how big a model and how many tokens?"""

import numpy as np

from analysis.isoflop import IsoflopFit, predict_interval
from analysis.parametric import ParametricFit, optimum


def optimal(
    isoflop: IsoflopFit | None, parametric: ParametricFit | None, budget: float, auroc_laws: list | None = None
) -> dict:
    """N*, D* (and the loss, from Approach 3; AUROC where laws are given) at a budget, with 95% intervals."""
    answer: dict = {"budget": budget}
    for law in auroc_laws or []:
        point, lo, hi = law.predict(budget)
        answer.setdefault("auroc", {})[law.task] = {"auroc": point, "interval": [lo, hi]}
    if isoflop is not None:
        answer["isoflop"] = {
            "n_opt": isoflop.n_opt(budget),
            "n_opt_interval": predict_interval(isoflop.bootstrap_n, budget),
            "d_opt": isoflop.d_opt(budget),
            "d_opt_interval": predict_interval(isoflop.bootstrap_d, budget),
            "loss": isoflop.loss_opt(budget),
            "loss_interval": predict_interval(isoflop.bootstrap_loss, budget),
        }
    if parametric is not None:
        n, d = parametric.optimum(budget)
        draws = parametric.bootstrap
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # degenerate bootstrap draws: inf/nan
            ns, ds = optimum(draws[:, 0], draws[:, 1], draws[:, 2], draws[:, 3], draws[:, 4], budget)
            losses = draws[:, 0] + draws[:, 1] / ns ** draws[:, 3] + draws[:, 2] / ds ** draws[:, 4]
        answer["parametric"] = {
            "n_opt": n,
            "n_opt_interval": [float(x) for x in np.percentile(ns, [2.5, 97.5])],
            "d_opt": d,
            "d_opt_interval": [float(x) for x in np.percentile(ds, [2.5, 97.5])],
            "loss": parametric.loss(n, d),
            "loss_interval": [float(x) for x in np.percentile(losses, [2.5, 97.5])],
        }
    if isoflop is not None and parametric is not None:
        answer["disagreement"] = {
            "n_opt_ratio": answer["parametric"]["n_opt"] / answer["isoflop"]["n_opt"],
            "d_opt_ratio": answer["parametric"]["d_opt"] / answer["isoflop"]["d_opt"],
        }
    return answer


def next_grid(
    n_opt: float, budget: float, sizes: int = 7, span: float = 8.0, flops_per_param_token: float = 6.0
) -> list[dict]:
    """Sizes for a new budget: geometric, centred on the predicted N_opt, from N_opt / span to N_opt x span."""
    return [
        {"params": float(n), "tokens": float(budget / (flops_per_param_token * n))}
        for n in np.geomspace(n_opt / span, n_opt * span, sizes)
    ]
