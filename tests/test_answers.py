"""The answers: the optimal size and tokens for a budget, and the next grid around it."""

import pytest
from typer.testing import CliRunner

from analysis.table import prepare
from scaling.cli import app
from tests.helpers import FIXED, chinchilla_like, not_six_nd


def test_next_grid_spans_the_predicted_optimum():
    from analysis.answers import next_grid
    from analysis.cost import CostModel

    grid = next_grid(1e9, 6e19, CostModel.six_n(), sizes=7, span=8)
    sizes = [row["params"] for row in grid]
    assert sizes[3] == pytest.approx(1e9) and sizes[0] == pytest.approx(1e9 / 8) and sizes[-1] == pytest.approx(8e9)
    assert all(row["tokens"] == pytest.approx(6e19 / (6 * row["params"])) for row in grid)
    # under a table's own cost per token (6N + a fixed 1e10), each size's tokens spend the budget under that cost
    table = prepare(not_six_nd())
    for row in next_grid(1e9, 6e19, table.cost, sizes=5, span=8):
        assert row["tokens"] * (6 * row["params"] + FIXED) == pytest.approx(6e19, rel=0.02)


def test_cli_optimal_and_next_grid(tmp_path):
    path = tmp_path / "runs.csv"
    chinchilla_like().write_csv(path)
    result = CliRunner().invoke(app, ["optimal", str(path), "--budget", "1e21", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    assert "Approach 2 (IsoFLOP): N* = " in result.output and "Approach 3 (L(N, D)): N* = " in result.output
    assert "the approaches disagree by" in result.output
    grid = CliRunner().invoke(app, ["next-grid", str(path), "--budget", "1e21", "--sizes", "5"])
    assert grid.exit_code == 0, grid.output
    assert grid.output.count("params ") == 5 and "predicted N* at 1e+21 FLOPs" in grid.output
    spec = CliRunner().invoke(
        app, ["next-grid", str(path), "--budget", "1e21", "--write-spec", str(tmp_path / "n.toml")]
    )
    assert spec.exit_code == 2 and "no sweep.json and plan.json" in spec.output and "--from-spec" in spec.output
