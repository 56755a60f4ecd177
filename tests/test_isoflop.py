"""Approach 2: IsoFLOP parabolas and their power laws: known vertices recovered, intervals that cover,
exclusions named, a real sweep reproduced."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.answers import optimal
from analysis.isoflop import fit_isoflop
from analysis.table import TableError, prepare, read
from scaling.cli import app
from tests.helpers import chinchilla_like

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference-data"


def test_student_t_interval_and_two_level_bootstrap_widen_with_vertex_noise():
    rng = np.random.default_rng(3)
    rows = []
    for budget in (1e15, 1e16, 1e17, 1e18):
        n_opt = 0.1 * budget**0.5
        for n in n_opt * np.geomspace(0.1, 10, 7):
            rows.append((n, budget / (6 * n), 2.0 + 0.05 * np.log(n / n_opt) ** 2 + rng.normal(0, 0.01), budget))
    fit = fit_isoflop(
        prepare(pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row")), resamples=300
    )
    law = fit.n_opt
    lo_t, hi_t = law.exponent_interval_t
    assert lo_t < law.exponent < hi_t and law.budgets == 4
    lo, hi = law.exponent_interval
    assert lo < 0.5 < hi
    # resampling the budgets with their minima held fixed (the old interval) is narrower: vertex noise reaches
    # the exponent only through the second level
    compute, log_n = np.log([v.budget for v in fit.vertices]), np.log([v.n_opt for v in fit.vertices])
    picks = [p for p in np.random.default_rng(0).integers(0, 4, (300, 4)) if len(set(p)) >= 2]
    held = np.percentile([np.polyfit(compute[p], log_n[p], 1)[0] for p in picks], [2.5, 97.5])
    assert hi - lo > held[1] - held[0]


def test_isoflop_recovers_known_vertices_and_exponent():
    rng = np.random.default_rng(1)
    rows = []
    for budget in (1e15, 1e16, 1e17, 1e18):
        n_opt = 0.1 * budget**0.5  # the truth: N_opt = 0.1 C^0.5
        for n in n_opt * np.geomspace(0.1, 10, 7):
            loss = 2.0 + 0.05 * np.log(n / n_opt) ** 2 + rng.normal(0, 1e-4)
            rows.append((n, budget / (6 * n), loss, budget))
    fit = fit_isoflop(prepare(pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row")))
    for vertex in fit.vertices:
        assert vertex.n_opt == pytest.approx(0.1 * vertex.budget**0.5, rel=0.02)
        assert vertex.d_opt == pytest.approx(vertex.budget / (6 * vertex.n_opt), rel=1e-3)  # the log-D parabola agrees
        assert vertex.n_interval[0] <= vertex.n_opt <= vertex.n_interval[1]
    assert fit.n_opt.exponent == pytest.approx(0.5, abs=0.01) and fit.d_opt.exponent == pytest.approx(0.5, abs=0.01)
    answer = optimal(fit, None, 1e20)
    assert answer["isoflop"]["n_opt"] == pytest.approx(1e9, rel=0.05)
    assert answer["isoflop"]["loss"] == pytest.approx(2.0, rel=0.01)  # every vertex sits at loss 2.0
    assert answer["isoflop"]["loss_interval"][0] <= answer["isoflop"]["loss"] <= answer["isoflop"]["loss_interval"][1]


def test_budgets_that_cannot_be_fitted_are_excluded_with_a_reason():
    frame = chinchilla_like()
    frame = pl.concat(
        [frame, pl.DataFrame({"params": [1e8, 2e8], "tokens": [1e9, 5e8], "loss": [3.0, 3.1], "budget": [6e17, 6e17]})]
    )
    # A budget sampled only on one side of its optimum: the minimum falls at the edge.
    edge = frame.filter((pl.col("budget") == 3e20) & (pl.col("params") < 3e8))
    frame = pl.concat([frame.filter(pl.col("budget") != 3e20), edge])
    fit = fit_isoflop(prepare(frame), resamples=20)
    reasons = {e["budget"]: e["reason"] for e in fit.excluded}
    assert reasons[6e17] == "only 2 point(s); a parabola needs 3"
    assert "above the largest sampled size: sample further that way" in reasons[3e20]
    with pytest.raises(TableError, match="Approach 2 needs at least 2 budgets with an interior minimum, found 1"):
        fit_isoflop(prepare(frame.filter(pl.col("budget").is_in([1e18, 6e17]))))


@pytest.mark.skipif(
    not (SHARED / "llama3_isoflop_points.csv").exists(), reason="shared reference data not beside the project"
)
def test_llama3_isoflop_points_give_the_published_optimum():
    """Llama 3 (arXiv 2407.21783): at 3.8e25 FLOPs, about 402B parameters and 16.55T tokens."""
    table = read(
        SHARED / "llama3_isoflop_points.csv",
        {"flops": "compute_budget", "tokens": "training_tokens", "loss": "validation_loss"},
    )
    fit = fit_isoflop(table, resamples=50)
    answer = optimal(fit, None, 3.8e25)["isoflop"]
    assert answer["n_opt"] == pytest.approx(402e9, rel=0.25)
    assert answer["d_opt"] == pytest.approx(16.55e12, rel=0.25)


def test_bootstrap_intervals_cover_the_truth_at_about_their_nominal_rate():
    """40 synthetic sweeps with a known vertex per budget and a known exponent (0.5)."""
    vertex_hits = vertex_total = exponent_hits = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        rows = []
        for budget in (1e15, 1e16, 1e17, 1e18, 1e19):
            n_opt = 0.1 * budget**0.5
            for n in n_opt * np.geomspace(0.1, 10, 9):
                rows.append((n, budget / (6 * n), 2.0 + 0.05 * np.log(n / n_opt) ** 2 + rng.normal(0, 0.01), budget))
        fit = fit_isoflop(
            prepare(pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row")),
            seed=seed,
            resamples=200,
        )
        for v in fit.vertices:
            vertex_total += 1
            vertex_hits += v.n_interval[0] <= 0.1 * v.budget**0.5 <= v.n_interval[1]
        exponent_hits += fit.n_opt.exponent_interval[0] <= 0.5 <= fit.n_opt.exponent_interval[1]
        # the replicates' noise is the runs' own, pooled over the budgets' residuals (9 points less 3 per budget,
        # fewer where the window leaves out the far end)
        assert 5 * (7 - 3) <= fit.noise_dof <= 5 * (9 - 3) and fit.noise == pytest.approx(0.01, rel=0.35)
    assert vertex_hits / vertex_total >= 0.85  # nominal 0.95; measured 0.965 (0.935 resampling each budget's points)
    assert exponent_hits / 40 >= 0.75  # five budgets make a coarse bootstrap; measured 1.0


def test_two_budgets_give_laws_without_pretend_intervals():
    frame = chinchilla_like().filter(pl.col("budget").is_in([1e19, 1e20]))
    fit = fit_isoflop(prepare(frame), resamples=50)
    assert fit.n_opt.as_dict()["interval"] == {"exponent": None, "coefficient": None, "exponent_t": None}
    answer = optimal(fit, None, 1e21)["isoflop"]
    assert answer["n_opt_interval"] is None and answer["n_opt"] > 0


def test_a_parabola_fitted_near_its_minimum_is_not_pulled_by_far_runs(tmp_path):
    """Loss is a parabola in log N only near its minimum; far runs (30x away, losing much more) pull an all-points
    fit's vertex off. The default window fits the runs within 10x of the best and draws, not fits, the rest."""
    from analysis.isoflop import WINDOW, near_minimum

    assert WINDOW == 10.0
    rows = []
    for budget in (1e15, 1e16, 1e17, 1e18):
        n_opt = 0.1 * budget**0.5
        for n in n_opt * np.geomspace(1 / 6, 36, 7):  # 2.45x apart; the best run is the third, the far side 36x
            x = np.log(n / n_opt)
            loss = 2.0 + 0.05 * x**2 + 0.5 * (np.exp(max(x - 2.0, 0.0)) - 1)  # beyond 7x above the optimum, steeper
            rows.append((n, budget / (6 * n), loss, budget))
    table = prepare(pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row"))
    near = fit_isoflop(table, resamples=50)
    every = fit_isoflop(table, resamples=50, window=None)
    # the commands' default is the analysis's own (no second constant): without --window, fits.json says WINDOW
    pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row").write_csv(tmp_path / "t.csv")
    said = CliRunner().invoke(app, ["fit", str(tmp_path / "t.csv"), "--json", "--resamples", "10"])
    assert said.exit_code == 0, said.output
    assert json.loads(said.output)["options"]["window"] == WINDOW
    for v_near, v_all in zip(near.vertices, every.vertices, strict=True):
        truth = 0.1 * v_near.budget**0.5
        assert abs(np.log(v_near.n_opt / truth)) < 1e-3 < 0.02 < abs(np.log(v_all.n_opt / truth))
        assert abs(v_near.loss - 2.0) < 0.005 and v_all.loss < 1.9  # below every run's loss: pulled by the far runs
        assert v_near.left_out == 2 and v_all.left_out == 0 and v_near.points == 5
    # fewer than 3 runs within the window: the 3 nearest the best
    assert near_minimum(np.log([1.0, 100.0, 1e4]), np.array([1.0, 2.0, 3.0]), 10.0).tolist() == [True] * 3
    assert near_minimum(np.log([1.0, 100.0, 1e4, 1e6]), np.array([1.0, 2.0, 3.0, 4.0]), 10.0).tolist() == [
        True,
        True,
        True,
        False,
    ]
    path = tmp_path / "runs.parquet"
    table.frame.write_parquet(path)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.md"), "--resamples", "10"])
    assert result.exit_code == 0, result.output
    assert "8 run(s) beyond that are drawn in the figures, not fitted" in (tmp_path / "r.md").read_text()
    result = CliRunner().invoke(app, ["fit", str(path), "--window", "0", "--json", "--resamples", "10"])
    assert json.loads(result.output)["isoflop"]["budgets"][0]["left_out"] == 0
    # A sweep's [fit] window (its sweep.json beside the table) is every command's default; --window still wins.
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "s", "version": "1", "fit": {"window": 3.0}}))
    result = CliRunner().invoke(app, ["fit", str(path), "--json", "--resamples", "10"])
    assert json.loads(result.output)["isoflop"]["budgets"][0]["left_out"] == 4  # 2.45x apart: within 3x, 3 of 7
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.md"), "--resamples", "10"])
    assert "within 3x of its budget's best run's parameters; 16 run(s) beyond" in (tmp_path / "r.md").read_text()
    result = CliRunner().invoke(app, ["fit", str(path), "--window", "10", "--json", "--resamples", "10"])
    assert json.loads(result.output)["isoflop"]["budgets"][0]["left_out"] == 2


def test_a_minimum_is_interior_by_the_runs_its_parabola_is_fitted_to():
    """Labrador's 3e11 budget on the demo: the best run is the second of four sizes and the two largest are still on
    the task's plateau; over all four a parabola turns over, over the fitting window (3x) it has a minimum."""
    from analysis.report import budget_minima

    rows = [
        (n, 3e11 / (6 * n), loss, 3e11) for n, loss in ((16e3, 2.276), (32e3, 2.012), (87e3, 3.283), (283e3, 3.319))
    ]
    table = prepare(pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row"))
    assert budget_minima(table, None)[0]["interior"] is False  # every run: no upward curvature
    assert budget_minima(table, 3.0)[0]["interior"] is True and budget_minima(table, 3.0)[0]["position"] == "inside"
