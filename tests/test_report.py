"""The report: minima, laws, answers past the grid, baselines; several families side by side."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.isoflop import fit_isoflop
from analysis.table import prepare
from scaling.cli import app
from tests.helpers import chinchilla_like, with_auroc, with_masked_metrics


@pytest.mark.faults
def test_report_states_minima_laws_answers_beyond_the_grid_and_baselines(tmp_path):
    from analysis.report import budget_minima

    frame = with_auroc(chinchilla_like()).with_columns(
        xgboost_auroc_mortality=pl.lit(0.7712), oracle_auroc_mortality=pl.lit(0.8123)
    )
    # A diverged run is left out with a note, and a budget whose best run is its smallest size is not interior.
    frame = pl.concat([frame, frame.head(1).with_columns(loss=pl.lit(float("nan")))], how="vertical").with_columns(
        status=pl.Series(["ok"] * frame.height + ["diverged"])
    )
    path = tmp_path / "runs.parquet"
    frame.write_parquet(path)
    figures = tmp_path / "figs"
    assert CliRunner().invoke(app, ["plot", str(path), "--out", str(figures), "--resamples", "20"]).exit_code == 0
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(path),
            "--out",
            str(tmp_path / "out" / "report.md"),
            "--figures",
            str(figures),
            "--resamples",
            "20",
            "--beyond",
            "10,100",
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "report.md").read_text()
    minima = budget_minima(prepare(frame.filter(pl.col("status") == "ok")))
    interior = sum(m["interior"] for m in minima)
    assert interior >= 4 and f"Interior minima at {interior} of 6 budgets" in text and "grows with compute" in text
    assert "left out 1 run(s) whose status is not ok (diverged: 1)" in text
    fit = fit_isoflop(prepare(frame.filter(pl.col("status") == "ok")), resamples=20)
    assert f"N_opt = {fit.n_opt.coefficient:.3g} x C^{fit.n_opt.exponent:.3f}" in text
    for budget in (3e21, 3e22):  # 10x and 100x the largest budget
        row = next(line for line in text.splitlines() if line.startswith(f"| {budget:.3g} |"))
        assert f"{fit.n_opt(budget):.3g} [" in row  # Approach 2's N* with its interval
    assert "XGBoost on count features 0.771" in text and "the oracle (the generator's hidden state) 0.812" in text
    assert "![isoflop curves](../figs/isoflop_curves.png)" in text
    assert "subject" not in text.lower()


def test_report_on_a_table_without_interior_minima_says_so(tmp_path):
    rows = [(n, 1e12 / (6 * n), 3.0 - 0.1 * np.log(n), b) for b in (1e12, 1e13) for n in (1e3, 3e3, 1e4)]
    path = tmp_path / "flat.csv"
    pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row").write_csv(path)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.md"), "--resamples", "10"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.md").read_text()
    assert "Interior minima at 0 of 2 budgets" in text and "Approach 2 (IsoFLOP parabolas): not available" in text


def test_a_lab_bag_report_shows_the_masked_metrics_and_the_same_bags_baselines():
    from analysis.fits import FitOptions, fit_table
    from analysis.report import render

    def fit_all(table, resamples):
        return fit_table(table, FitOptions(method="isoflop", resamples=resamples), key="test")

    frame = with_masked_metrics(with_auroc(chinchilla_like())).with_columns(
        xgboost_bags_auroc_mortality=pl.lit(0.8234),
        logistic_bags_auroc_mortality=pl.lit(0.7344),
    )
    table = prepare(frame)
    text = render(table, fit_all(table, resamples=10), title="t", source="s", figures=None, report_dir=Path("."))
    section = text[text.index("## Masked labs") : text.index("## AUROC")]
    rows = [line for line in section.splitlines() if line.startswith("| 1e+") or line.startswith("| 3e+")]
    assert len(rows) == 6 and all("| 0.0612 | 0.432 |" in row for row in rows)  # one row per budget: its best run
    assert "XGBoost on the same bags' values 0.823; logistic regression on them 0.734" in text
    assert "imputation MSE" not in section  # no run imputed: no such columns
    imputed = prepare(
        frame.with_columns(
            imputation_mse=0.07 - 0.001 * pl.col("loss"),
            imputation_pearson_median=pl.lit(0.3456),
            imputation_item_mean_mse=pl.lit(0.0799),
            imputation_ridge_mse=pl.lit(0.0521),
            imputation_ridge_pearson_median=pl.lit(0.582),
            imputation_xgboost_mse=pl.lit(0.0507),
        )
    )
    text = render(imputed, fit_all(imputed, resamples=10), title="t", source="s", figures=None, report_dir=Path("."))
    section = text[text.index("## Masked labs") : text.index("## AUROC")]
    rows = [line for line in section.splitlines() if line.startswith("| 1e+") or line.startswith("| 3e+")]
    assert len(rows) == 6 and all("| 0.0612 | 0.432 | 0.06" in row and row.endswith("| 0.346 |") for row in rows)
    assert "the item's mean MSE 0.0799; ridge MSE 0.0521, r 0.582; XGBoost MSE 0.0507." in section
    assert "## Masked labs" not in render(
        prepare(chinchilla_like()),
        fit_all(prepare(chinchilla_like()), resamples=10),
        title="t",
        source="s",
        figures=None,
        report_dir=Path("."),
    )  # a timeline table has no such section


@pytest.mark.slow  # 19 s
def test_several_tables_report_each_family_and_put_them_side_by_side(tmp_path):
    """`plot` and `report` with one table per family: each family's own section and figures, then the comparison."""

    timeline = with_auroc(chinchilla_like()).with_columns(family=pl.lit("timeline"))
    labrador = with_masked_metrics(with_auroc(chinchilla_like(seed=1))).with_columns(
        xgboost_auroc_mortality=pl.lit(0.7712),
        oracle_auroc_mortality=pl.lit(0.8123),
    )
    paths = []
    for name, frame in (("timeline-grid", timeline), ("labrador-grid", labrador)):
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name / "runs.parquet"))
        frame.write_parquet(paths[-1])
    figures, report = tmp_path / "figs", tmp_path / "report.md"
    result = CliRunner().invoke(app, ["plot", *paths, "--out", str(figures), "--resamples", "10"])
    assert result.exit_code == 0, result.output
    for name in ("families_optimal_size", "families_auroc", "families_masked_labs"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
    for family in ("timeline", "labrador"):  # each family's own figures in its folder, its fits beside its table
        assert (figures / family / "isoflop_curves.png").exists()
        assert (tmp_path / f"{family}-grid" / "fits.json").exists()
    result = CliRunner().invoke(
        app, ["report", *paths, "--figures", str(figures), "--out", str(report), "--resamples", "10"]
    )
    assert result.exit_code == 0, result.output
    text = report.read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings.index("## Side by side") < headings.index("## timeline") < headings.index("## labrador")
    assert (
        "### IsoFLOP minima" in headings
        and "### Masked labs (the lowest-loss run of each budget, held-out bags)" in headings
    )
    side = text[text.index("## Side by side") : text.index("## timeline")]
    for label, frame in (("timeline", timeline), ("labrador", labrador)):
        fit = fit_isoflop(prepare(frame), resamples=10)
        row = next(line for line in side.splitlines() if line.startswith(f"| {label} | 54 | 6 |"))
        assert f"| {fit.n_opt.exponent:.3f} [" in row  # the family's own N_opt exponent with its interval
    frontier_rows = [line for line in side.splitlines() if line.startswith("| labrador | 1e+18")]
    assert len(frontier_rows) == 1 and "| 0.0612 | 0.432 |" in frontier_rows[0]
    assert "mortality: " in frontier_rows[0] and "/ 0.771 / 0.812" in frontier_rows[0]
    assert "![families optimal size](figs/families_optimal_size.png)" in text
    assert "![isoflop curves](figs/labrador/isoflop_curves.png)" in text
    two = CliRunner().invoke(app, ["report", paths[0], paths[0], "--out", str(report), "--resamples", "10"])
    assert two.exit_code != 0 and "a second table of timeline" in two.output
