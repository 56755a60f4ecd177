"""Opening a prepared dataset: missing parts and other formats fail with how to rebuild."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.dataset import DatasetError, PreparedDataset


def test_missing_part_names_it_and_the_rebuild_command(prepared, tmp_path):
    copy = tmp_path / "prep"
    shutil.copytree(prepared[0], copy)
    shutil.rmtree(copy / "labbags")
    with pytest.raises(
        DatasetError,
        match=r"the lab bags part is missing .*rebuild it with "
        r"`ehrscale data prepare --mimic .* --out .*prep --overwrite`",
    ):
        PreparedDataset.open(copy)


def test_other_format_version_is_refused(prepared, tmp_path):
    copy = tmp_path / "prep"
    shutil.copytree(prepared[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format"] = "ehrscale-prepared/0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        DatasetError, match=r"format 'ehrscale-prepared/0', this ehrscale reads 'ehrscale-prepared/1'; rebuild"
    ):
        PreparedDataset.open(copy)
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        PreparedDataset.open(tmp_path)


def test_inspect_prints_statistics_and_a_readable_timeline(prepared):
    result = CliRunner().invoke(app, ["data", "inspect", str(prepared[0]), "--tokens", "40"])
    assert result.exit_code == 0, result.output
    assert "timeline tokens" in result.output and "task in_hospital_mortality" in result.output
    assert "timeline of held_out subject #0" in result.output
    assert "(Gender: " in result.output and "Blood, " in result.output  # codes come with their descriptions
    bad = CliRunner().invoke(app, ["data", "inspect", str(prepared[0]), "--index", "100000"])
    assert bad.exit_code == 2 and "the held_out split has" in bad.output


def test_events_only_stops_after_meds(synth, tmp_path):
    from scaling.data.prepare import PrepareConfig, prepare

    manifest = prepare(PrepareConfig(out=tmp_path / "p", mimic=synth, events_only=True))
    assert "timelines" not in manifest and (tmp_path / "p" / "events" / "data").is_dir()
    assert not (tmp_path / "p" / "timelines").exists()
    with pytest.raises(DatasetError, match="the vocabulary part is missing"):
        PreparedDataset.open(tmp_path / "p")
