"""Compute under the table's own FLOPs per token: the cost model, and answers that spend the budget under it."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.parametric import fit_parametric
from analysis.table import prepare
from scaling.cli import app
from tests.helpers import FIXED, TRUE, chinchilla_like, not_six_nd


def test_both_answers_spend_the_budget_under_the_tables_own_cost(tmp_path):
    """N* and D* at a budget cost that budget under the table's FLOPs per token, not under 6ND."""
    path = tmp_path / "runs.csv"
    not_six_nd().write_csv(path)
    for budget in (3e19, 1e21):
        result = CliRunner().invoke(app, ["optimal", str(path), "--budget", str(budget), "--json", "--resamples", "20"])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)  # only JSON
        assert answer["budget"] == budget and answer["compute"]["assumed_6nd"] is False
        for name in ("isoflop", "parametric"):
            a = answer[name]
            spent = (6 * a["n_opt"] + FIXED) * a["d_opt"]
            assert spent == pytest.approx(budget, rel=0.05), name
            assert a["spends"] == pytest.approx(budget, rel=0.05)
            assert a["n_opt_interval"][0] <= a["n_opt"] <= a["n_opt_interval"][1]
            assert a["d_opt_interval"][0] <= a["d_opt"] <= a["d_opt_interval"][1]
    # Approach 3's optimum is the minimum of the true L on that curve (the closed form assumes 6ND and misses it)
    n_grid = np.geomspace(1e7, 1e11, 20001)
    truth = TRUE["E"] + TRUE["A"] / n_grid ** TRUE["alpha"] + TRUE["B"] / (3e19 / (6 * n_grid + FIXED)) ** TRUE["beta"]
    fit = fit_parametric(prepare(not_six_nd()), resamples=10)
    assert fit.optimum(3e19)[0] == pytest.approx(n_grid[np.argmin(truth)], rel=0.15)


def test_a_table_without_flops_says_6nd_is_assumed(tmp_path):
    path = tmp_path / "runs.csv"
    chinchilla_like().drop("budget").write_csv(path)
    result = CliRunner().invoke(app, ["optimal", str(path), "--budget", "1e21", "--json", "--resamples", "20"])
    answer = json.loads(result.output)
    assert answer["compute"]["assumed_6nd"] is True and answer["compute"]["rule"] == "C = 6 N D"
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["compute"]["assumed_6nd"] is True
    assert any("C = 6ND assumed" in note for note in saved["notes"])
    a = answer["parametric"]
    assert 6 * a["n_opt"] * a["d_opt"] == pytest.approx(1e21, rel=0.01)


def test_cost_model_interpolates_between_sizes_and_holds_its_ratio_beyond():
    table = prepare(not_six_nd())
    for n in (2e7, 1.3e8, 2e9):
        assert float(table.cost.per_token(n)) == pytest.approx(6 * n + FIXED, rel=0.02)
    # beyond the table's sizes the end segments continue as lines in N: exact for a cost of the form 6N + m
    for n in (1e6, 2e10, 2e12):
        assert float(table.cost.per_token(n)) == pytest.approx(6 * n + FIXED, rel=0.01)
    # one size only: c(N)/N is held
    single = prepare(not_six_nd().filter(pl.col("params") == pl.col("params").min()))
    assert float(single.cost.per_token(2e8)) == pytest.approx(float(single.cost.per_token(2e7)) * 10, rel=1e-6)
