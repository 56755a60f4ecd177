"""Slow: the whole ingestion at a few thousand patients, several shards, run twice."""

import polars as pl
import pytest

from scaling.data.meds_io import validate_meds
from scaling.data.prepare import PrepareConfig, prepare
from scaling.data.synthetic import write_synthetic_mimic


@pytest.mark.slow
def test_ingestion_at_scale_is_valid_complete_and_deterministic(tmp_path):
    write_synthetic_mimic(tmp_path / "m", 5000, seed=11)
    first = prepare(PrepareConfig(out=tmp_path / "a", mimic=tmp_path / "m", shards=5))
    second = prepare(PrepareConfig(out=tmp_path / "b", mimic=tmp_path / "m", shards=5))
    rows = validate_meds(tmp_path / "a" / "events")
    assert len(rows) == 5 and sum(rows.values()) == first["counts"]["events"]
    assert first["counts"]["subjects"] == 5000
    for name, count in first["tables"].items():
        assert count["read"] == count["kept"] + sum(count["dropped"].values()), name
    assert first["tables"]["hosp/labevents"]["read"] > 2_000_000
    for shard in sorted((tmp_path / "a" / "events" / "data").glob("*.parquet")):
        assert pl.read_parquet(shard).equals(pl.read_parquet(tmp_path / "b" / "events" / "data" / shard.name))
    assert first["source"]["content_hash"] == second["source"]["content_hash"]
    # Timelines, bags and labels are the same too.
    for part in (
        "timelines/train/tokens.bin",
        "timelines/held_out/times.bin",
        "labbags/train/codes.npy",
        "labbags/tuning/values.npy",
        "tasks/abnormal_creatinine.parquet",
        "vocab/quantiles.parquet",
    ):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part
    assert first["timelines"] == second["timelines"] and first["bags"] == second["bags"]


@pytest.mark.slow
def test_train_then_evaluate_on_two_thousand_patients(tmp_path):
    """A run whose spec lists tasks ends with AUROCs in eval.json, beside XGBoost and the oracle."""
    import json

    from scaling.record import EVAL_FORMAT, RunFolder
    from scaling.run import run
    from scaling.runspec import parse_spec

    write_synthetic_mimic(tmp_path / "m", 2000, seed=5)
    prepare(PrepareConfig(out=tmp_path / "p", mimic=tmp_path / "m"))
    spec = parse_spec(
        {
            "name": "e2e",
            "data": str(tmp_path / "p"),
            "width": 32,
            "tokens": 150 * 16 * 64,
            "tasks": ["in_hospital_mortality", "long_stay"],
            "recipe": {"context": 64},
            "train": {"eval_every": 50, "checkpoint_every": 50},
        },
        "test",
    )
    result = run(spec, tmp_path / "run", log=lambda _: None)
    assert result.status == "ok" and "auroc_long_stay" not in result.to_json()  # result.json is training's alone
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["format"] == EVAL_FORMAT
    report = RunFolder(tmp_path / "run").evaluation()
    columns = report.columns()
    for task in ("in_hospital_mortality", "long_stay"):
        assert columns[f"auroc_{task}_lo"] <= columns[f"auroc_{task}"] <= columns[f"auroc_{task}_hi"]
        assert 0 < columns[f"auprc_{task}"] < 1
        assert 0.5 < report.tasks[task].baselines["xgboost"]["auroc"] <= 1
        assert report.tasks[task].oracle["auroc"] > 0.7
        assert report.tasks[task].probe["n"] > 100
