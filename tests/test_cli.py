"""The `ehrscale` command as a user types it."""

import json

from typer.testing import CliRunner

from scaling import __version__
from scaling.cli import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "data" in result.output
    assert runner.invoke(app, ["--version"]).output.strip() == __version__


def test_synth_then_prepare(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "m"), "--patients", "40", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "hosp/labevents.csv.gz" in result.output
    again = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "m"), "--patients", "40"])
    assert again.exit_code == 2 and "exists and is not empty" in again.output and "Traceback" not in again.output
    result = runner.invoke(app, ["data", "prepare", "--mimic", str(tmp_path / "m"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    # The summary printed is the manifest's.
    labs = manifest["tables"]["hosp/labevents"]
    assert f"{labs['read']:,}" in result.output and "hosp/labevents" in result.output
    assert f"{manifest['counts']['subjects']:,} subjects" in result.output


def test_bad_arguments_get_a_clear_message(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "m"), "--patients", "0"])
    assert result.exit_code == 2 and "--patients" in result.output
    result = runner.invoke(
        app, ["data", "prepare", "--mimic", str(tmp_path), "--out", str(tmp_path / "p"), "--split", "0.8,0.3"]
    )
    assert result.exit_code == 2 and "--split" in result.output
