"""Learning-rate calibration: each cell's best multiplier, the constant and the width exponent."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.isoflop import fit_isoflop
from analysis.table import prepare
from scaling.cli import app


def test_the_best_learning_rate_of_each_cell_is_fitted_named_and_flagged_at_the_grid_edge(tmp_path):
    """Runs at several lr multipliers: the fit sees each cell's lowest-loss run (and recovers the truth from them),
    the report names the winner per cell, and a winner at the edge of the multipliers tried is a warning."""
    rng = np.random.default_rng(3)
    rows = []
    for budget in (1e15, 1e16, 1e17, 1e18):
        n_opt = 0.1 * budget**0.5
        for n in n_opt * np.geomspace(0.1, 10, 7):
            best_lr = 2.0 if n > n_opt * 3 else 1.0  # the largest sizes want twice the rule's lr
            for m in (0.5, 1.0, 2.0):
                penalty = 0.2 * np.log(m / best_lr) ** 2  # a run away from its best lr loses
                loss = 2.0 + 0.05 * np.log(n / n_opt) ** 2 + penalty + rng.normal(0, 1e-4)
                rows.append((n, budget / (6 * n), loss, budget, m, 0))
    frame = pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget", "lr_multiplier", "seed"], orient="row")
    table = prepare(frame)
    assert table.frame.height == 4 * 7 and len(table.lr_choices) == 4 * 7
    assert {c.best for c in table.lr_choices} == {1.0, 2.0}
    edge = [c for c in table.lr_choices if c.at_edge]
    assert edge and all(c.best == 2.0 and c.params > 3 * 0.1 * c.budget**0.5 for c in edge)
    assert any("best: 1x in" in n and "2x in" in n and "56 other runs left out" in n for n in table.notes)
    assert any("sits at the edge of those tried" in w and "widen lr_multipliers" in w for w in table.warnings)
    fit = fit_isoflop(table)
    assert fit.n_opt.exponent == pytest.approx(0.5, abs=0.02)
    path = tmp_path / "runs.parquet"
    frame.write_parquet(path)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.md"), "--resamples", "10"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.md").read_text()
    assert "## Learning rates" in text and "| loss at 0.5x | loss at 1x | loss at 2x | best |" in text
    assert "| 2x ! |" in text and "| 1x |" in text


def _calibration_table(exponent: float, constant: float = 0.6, seed: int = 0) -> pl.DataFrame:
    """Runs whose best lr is constant / width^exponent, tried at multiples of the rule 1.0 / width."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e11, 1e12):
        for width in (16, 32, 64, 128):
            rule = 1.0 / width
            best = constant / width**exponent
            for m in (0.125, 0.25, 0.5, 1.0, 2.0):
                lr = rule * m
                loss = 2.0 + 0.1 * np.log(lr / best) ** 2 + rng.normal(0, 2e-4)
                rows.append((budget, width, 0, m, lr, loss, "ok"))
    schema = ["budget", "width", "seed", "lr_multiplier", "peak_lr", "loss", "status"]
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_lr_calibration_recovers_the_constant_and_says_whether_one_over_width_holds(tmp_path):
    from analysis.lr import calibrate, vertex

    assert vertex([0.5, 1, 2], [2.1, 2.0, 2.1]) == (pytest.approx(1.0), False)
    assert vertex([0.5, 1, 2], [2.0, 2.1, 2.2]) == (0.5, True)  # the best lies below those tried
    rule = calibrate(_calibration_table(exponent=1.0))
    assert len(rule.cells) == 8 and not any(c.at_edge for c in rule.cells)
    assert rule.factor == pytest.approx(0.6, rel=0.02) and rule.lr_width_product == pytest.approx(0.6, rel=0.02)
    assert rule.factor_interval[0] < 0.6 < rule.factor_interval[1] and rule.width_exponent_holds
    steeper = calibrate(_calibration_table(exponent=1.5, constant=2.4))  # best lr 2.4 / width^1.5: b = -0.5
    assert steeper.slope == pytest.approx(-0.5, abs=0.03) and steeper.width_exponent_holds is False
    path = tmp_path / "runs.csv"
    _calibration_table(exponent=1.0).write_csv(path)
    result = CliRunner().invoke(app, ["lr-fit", str(path)])
    assert result.exit_code == 0, result.output
    assert "8 cells, 8 with an interior best" in result.output and "consistent with 0: 1/width holds" in result.output
    assert "calibrated lr_width_product: 0.6" in result.output
    document = json.loads(CliRunner().invoke(app, ["lr-fit", str(path), "--json"]).output)
    assert document["lr_width_product"] == pytest.approx(0.6, rel=0.02) and len(document["cells"]) == 8
    no_axis = tmp_path / "plain.csv"
    _calibration_table(exponent=1.0).drop("lr_multiplier").write_csv(no_axis)
    result = CliRunner().invoke(app, ["lr-fit", str(no_axis)])
    assert result.exit_code != 0 and "no column 'lr_multiplier'" in result.output
