"""Approach 3: L(N, D) fitted: known parameters recovered, E fixed, the worst points left out."""

import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.parametric import fit_parametric
from analysis.table import TableError, prepare
from scaling.cli import app
from tests.helpers import TRUE, chinchilla_like


def test_fixed_E_and_excluding_the_worst_points():
    frame = chinchilla_like()
    fixed = fit_parametric(prepare(frame), resamples=10, fixed_E=1.69)
    assert fixed.E == pytest.approx(1.69) and "E" not in fixed.intervals
    assert abs(fixed.alpha - TRUE["alpha"]) < 0.03 and abs(fixed.beta - TRUE["beta"]) < 0.03
    with pytest.raises(TableError, match="fixed E must be positive and below"):
        fit_parametric(prepare(frame), resamples=10, fixed_E=100.0)
    # five outliers pull the fit; leaving out the five worst-fitted points takes them out, and the shift is reported
    spoiled = frame.with_columns(
        loss=pl.when(pl.int_range(pl.len()).is_in([3, 17, 30, 41, 50])).then(pl.col("loss") * 1.25).otherwise("loss")
    )
    cleaned = fit_parametric(prepare(spoiled), resamples=10, exclude_worst=5)
    assert len(cleaned.excluded) == 5 and cleaned.points == frame.height - 5
    planted = {(round(frame["params"][i]), round(frame["tokens"][i])) for i in (3, 17, 30, 41, 50)}
    assert {(round(p["params"]), round(p["tokens"])) for p in cleaned.excluded} == planted
    spoilt = fit_parametric(prepare(spoiled), resamples=10)
    assert cleaned.shift["alpha"] == pytest.approx(cleaned.alpha - spoilt.alpha, abs=1e-6)
    assert abs(cleaned.alpha - TRUE["alpha"]) < 0.02 and abs(cleaned.beta - TRUE["beta"]) < 0.02
    result = CliRunner().invoke(app, ["fit", "/nonexistent.csv"])
    assert result.exit_code == 2 and "no such file" in result.output


def test_parametric_fit_recovers_known_parameters():
    fit = fit_parametric(prepare(chinchilla_like()), resamples=20)
    assert abs(fit.alpha - TRUE["alpha"]) < 0.02 and abs(fit.beta - TRUE["beta"]) < 0.02
    assert abs(fit.a - TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])) < 0.02
    assert fit.E == pytest.approx(TRUE["E"], rel=0.03)
    assert fit.intervals["alpha"][0] <= fit.alpha <= fit.intervals["alpha"][1]
