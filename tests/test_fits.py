"""fits.json: one fit read by every command, where it is written, what --json prints, no JAX."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from analysis.table import prepare
from scaling.cli import app
from tests.helpers import chinchilla_like, with_auroc


@pytest.mark.slow  # 31 s: every command on one table (the default suite keeps under 10 minutes on 2 cores)
def test_one_fit_read_by_every_command(tmp_path):
    """fit writes fits.json keyed by the table; optimal, plot and report read it while current, refit when not."""
    from analysis.fits import FITS_FORMAT

    path = tmp_path / "runs.csv"
    with_auroc(chinchilla_like()).write_csv(path)
    fitted = CliRunner().invoke(app, ["fit", str(path), "--resamples", "30"])
    assert fitted.exit_code == 0, fitted.output
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["format"] == FITS_FORMAT and len(saved["key"]) == 64 and saved["options"]["resamples"] == 30
    stamp = (tmp_path / "fits.json").stat().st_mtime_ns
    answer = CliRunner().invoke(app, ["optimal", str(path), "--budget", "1e22", "--json"])
    figures = CliRunner().invoke(app, ["plot", str(path), "--out", str(tmp_path / "figs")])
    report = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.md")])
    assert answer.exit_code == figures.exit_code == report.exit_code == 0
    assert (tmp_path / "fits.json").stat().st_mtime_ns == stamp  # nobody refitted
    assert "read the current fits" in figures.output
    # the report quotes the same intervals fits.json holds
    text = (tmp_path / "r.md").read_text()
    exponent = saved["isoflop"]["n_opt"]["interval"]["exponent"]
    assert f"[{exponent[0]:.3g}, {exponent[1]:.3g}] (two-level bootstrap)" in text and saved["key"][:12] in text
    noise = saved["isoflop"]["vertex_noise"]
    assert noise["dof"] > 0 and f"residual noise pooled over the fitted budgets: sd {noise['sd']:.4f}" in text
    a = json.loads(answer.output)["isoflop"]
    draws = np.asarray(saved["isoflop"]["bootstrap"]["n_opt"])
    assert a["n_opt_interval"] == pytest.approx(
        list(np.percentile(np.exp(draws[:, 0] + draws[:, 1] * np.log(1e22)), [2.5, 97.5]))
    )
    # a changed table is refitted (and said so); so is another option
    with_auroc(chinchilla_like(seed=5)).write_csv(path)
    again = CliRunner().invoke(app, ["plot", str(path), "--out", str(tmp_path / "figs"), "--resamples", "30"])
    assert "wrote " + str(tmp_path / "fits.json") in again.output
    assert json.loads((tmp_path / "fits.json").read_text())["key"] != saved["key"]


def test_fits_json_goes_to_the_current_folder_when_the_tables_is_read_only(tmp_path, monkeypatch):
    import analysis.fits

    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "runs.csv"
    chinchilla_like().write_csv(path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # the test runs as root, who may write anywhere: the rule is checked with the folder reported read-only
    real = os.access
    monkeypatch.setattr(analysis.fits.os, "access", lambda p, mode: False if Path(p) == shared else real(p, mode))
    result = CliRunner().invoke(app, ["fit", str(path), "--resamples", "10"])
    assert result.exit_code == 0, result.output
    assert (work / "fits.json").exists() and not (shared / "fits.json").exists()
    assert f"in the current folder ({shared} is not writable)" in result.output
    explicit = CliRunner().invoke(app, ["fit", str(path), "--resamples", "10", "--fits", str(tmp_path / "mine.json")])
    assert explicit.exit_code == 0 and (tmp_path / "mine.json").exists()


def test_fit_method_all_falls_back_to_approach_3_and_labels_follow_the_table(tmp_path):
    rows = [
        (n, 1e12 / (6 * n), 3.0 - 0.1 * np.log(n) + 0.01 * np.log(1e12 / (6 * n)) ** 0, b)
        for b in (1e12, 1e13)
        for n in (1e3, 3e3, 1e4, 3e4, 1e5)
    ]
    path = tmp_path / "flat.csv"
    pl.DataFrame(rows, schema=["params", "tokens", "validation_loss", "budget"], orient="row").write_csv(path)
    result = CliRunner().invoke(app, ["fit", str(path), "--resamples", "10", "--loss-col", "validation_loss"])
    assert result.exit_code == 0, result.output
    assert "Approach 2 not available" in result.output and "Approach 3: L = " in result.output
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert "error" in saved["isoflop"] and "parametric" in saved and saved["loss"] == "validation_loss"
    only = CliRunner().invoke(app, ["fit", str(path), "--method", "isoflop", "--loss-col", "validation_loss"])
    assert only.exit_code == 2 and "Approach 2 needs at least 2 budgets" in only.output
    frame = pl.DataFrame(
        {
            "params": [1.0, 2.0],
            "tokens": [1.0, 1.0],
            "loss": [1.0, 1.0],
            "family": ["timeline"] * 2,
            "loss_split": ["tuning"] * 2,
            "budget": [1.0, 1.0],
        }
    )
    # the unit is the family registry's (scaling.families.LOSS_UNITS, which the commands pass): analysis knows none
    assert prepare(frame).loss_label == "tuning loss"
    assert prepare(frame, loss_units={"timeline": "nats per token"}).loss_label == "tuning loss (nats per token)"
    chinchilla_like().with_columns(family=pl.lit("timeline"), loss_split=pl.lit("tuning")).write_csv(
        tmp_path / "ours.csv"
    )
    said = CliRunner().invoke(app, ["fit", str(tmp_path / "ours.csv"), "--json", "--resamples", "10"])
    assert json.loads(said.output)["loss"] == "tuning loss (nats per token)"


def test_cli_fit_json_prints_only_json(tmp_path):
    path = tmp_path / "runs.csv"
    chinchilla_like().write_csv(path)
    result = CliRunner().invoke(app, ["fit", str(path), "--method", "isoflop", "--json", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) >= {"n_opt", "d_opt", "budgets"} and set(data["n_opt"]) >= {"exponent", "coefficient", "interval"}
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["flops_from"] == "budget column" and "isoflop" in saved
    assert saved["flop_convention"] == "not recorded in the table"
    with_auroc(chinchilla_like()).write_csv(path)
    CliRunner().invoke(app, ["fit", str(path), "--method", "isoflop", "--resamples", "20"])
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["downstream"]["auroc_vs_compute"][0]["task"] == "mortality" and saved["downstream"]["loss_vs_auroc"]
    bad = CliRunner().invoke(app, ["fit", str(path), "--loss-col", "nope"])
    assert bad.exit_code == 2 and "no column 'nope' to map" in bad.output


def test_analysis_imports_no_jax():
    code = (
        "import sys, analysis.table, analysis.isoflop, analysis.parametric, analysis.answers, analysis.fits, "
        "analysis.report, analysis.plots; assert 'jax' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_json_output_carries_what_the_console_would_say(tmp_path):
    """A table with exact duplicate rows: the warning printed without --json is in every command's --json too."""
    table = chinchilla_like()
    pl.concat([table, table.head(5)]).write_csv(tmp_path / "dup.csv")
    warning = "left out 5 exact duplicate row(s)"
    runs = {
        "fit": ["fit", str(tmp_path / "dup.csv"), "--json", "--resamples", "10"],
        "fit --method": ["fit", str(tmp_path / "dup.csv"), "--json", "--method", "isoflop", "--resamples", "10"],
        "optimal": ["optimal", str(tmp_path / "dup.csv"), "--json", "--budget", "1e21"],
    }
    for name, args in runs.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (name, result.output)
        said = json.loads(result.output)
        assert any(text.startswith(warning) for text in said["warnings"]), name
        assert isinstance(said["notes"], list), name
    plain = CliRunner().invoke(app, ["fit", str(tmp_path / "dup.csv"), "--resamples", "10"])
    assert warning in plain.output
