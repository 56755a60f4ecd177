"""AUROC against compute: the saturating law, its floor and its interval."""

import polars as pl
import pytest

from analysis.answers import optimal
from analysis.table import prepare
from tests.helpers import chinchilla_like, with_auroc


def test_three_frontier_points_give_an_auroc_law_without_an_interval():
    from analysis.downstream import fit_auroc

    frame = with_auroc(chinchilla_like()).filter(pl.col("budget").is_in([1e18, 1e19, 1e20]))
    law = fit_auroc(prepare(frame), "mortality")
    point, lo, hi = law.predict(1e21)
    assert law.points == 3 and lo is None and hi is None and 0.5 <= point <= 1.0
    law = fit_auroc(prepare(with_auroc(chinchilla_like())), "mortality")
    point, lo, hi = law.predict(1e21)
    assert law.points == 6 and lo < hi


def test_auroc_law_keeps_the_floor_and_predicts_with_an_interval():
    from analysis.downstream import fit_auroc, loss_vs_auroc

    table = prepare(with_auroc(chinchilla_like()))
    law = fit_auroc(table, "mortality", resamples=50)
    assert 0.75 < law.h <= 0.82 and law.points == 6
    point, lo, hi = law.predict(1e22)
    assert lo <= point <= hi and 0.5 <= point <= 1
    assert law.predict(1e10)[0] == pytest.approx(0.5, abs=0.01)  # no compute: chance
    line = loss_vs_auroc(table, "mortality")
    assert line["spearman"] < -0.5  # lower loss, higher AUROC
    assert optimal(None, None, 1e21, [law])["auroc"]["mortality"]["auroc"] == pytest.approx(law.predict(1e21)[0])


def test_auroc_law_on_a_frontier_that_dips_keeps_its_interval_and_caps_each_fit(monkeypatch):
    """A non-monotone frontier (BERT's abnormal_creatinine in the demo) pushes h to its bound; the residual
    bootstrap's degenerate replicates stop at MAX_EVALUATIONS (they took up to 80,000 evaluations, 12 s each)
    and are left out, and the law keeps an interval from the rest."""
    import analysis.downstream as downstream

    calls, per_fit = [0], []
    saturating, fit = downstream.saturating, downstream._fit

    def counting(*args):
        calls[0] += 1
        return saturating(*args)

    def counted_fit(x, y):
        calls[0] = 0
        result = fit(x, y)
        per_fit.append(calls[0])
        return result

    monkeypatch.setattr(downstream, "saturating", counting)
    monkeypatch.setattr(downstream, "_fit", counted_fit)
    budgets, params = [1e11, 3e11, 1e12, 3e12], [1e4, 2e4, 4e4, 8e4]
    frame = pl.DataFrame(
        {
            "params": params,
            "tokens": [b / 6 / p for b, p in zip(budgets, params, strict=True)],
            "loss": [4.9, 4.0, 3.5, 3.4],
            "budget": budgets,
            "auroc_x": [0.831, 0.638, 0.830, 0.853],
        }
    )
    law = downstream.fit_auroc(prepare(frame), "x")
    point, lo, hi = law.predict(1e13)
    assert lo < point < hi and 180 <= len(law.draws) < 200  # a few replicates fail, most are kept
    assert max(per_fit) <= 4 * 2_000 + 10  # 2,000 evaluations of the function and its 3-point Jacobian
