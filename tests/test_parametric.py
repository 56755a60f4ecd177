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


def test_a_fit_with_a_negative_exponent_has_no_allocation_and_writes_nan_not_a_complex_number():
    """A tiny sweep can fit alpha < 0 (the loss grows with size); the allocation's constant is then undefined."""
    import json

    import numpy as np

    from analysis.parametric import ParametricFit

    fit = ParametricFit(
        E=0.0, A=3.7e-11, B=4.5, alpha=-2.17, beta=0.015, objective=0.0, intervals={}, bootstrap=np.zeros((0, 5))
    )
    assert np.isnan(fit.G)
    assert json.loads(json.dumps({"G": fit.G}, default=float))["G"] != 0  # NaN survives JSON; a complex did not
    assert (
        TRUE["alpha"] > 0
        and ParametricFit(**{**TRUE, "objective": 0.0, "intervals": {}, "bootstrap": np.zeros((0, 5))}).G > 0
    )
