"""Imputation, Labrador's intrinsic task: the loader's forced mask, the metrics, the regressors on the synthetic
physiology, the record in runs.parquet, and the CLI's errors."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest

from scaling.data.dataset import PreparedDataset
from scaling.data.loaders import BagLoader
from scaling.eval import imputation
from scaling.record import IMPUTATION_FORMAT, ImputationRecord, RunFolder
from scaling.sweep.state import _run_row
from tests.helpers import read_csv_gz


def test_scores_pin_mse_its_error_and_pearson():
    out = imputation.scores(np.array([0.1, 0.4, 0.5, 0.9]), np.array([0.2, 0.4, 0.7, 0.8]))
    assert out["mse"] == pytest.approx((0.01 + 0 + 0.04 + 0.01) / 4)
    assert out["mse_se"] == pytest.approx(np.std([0.01, 0, 0.04, 0.01], ddof=1) / 2)
    assert out["pearson"] == pytest.approx(np.corrcoef([0.1, 0.4, 0.5, 0.9], [0.2, 0.4, 0.7, 0.8])[0, 1])
    assert imputation.scores(np.full(4, 0.5), np.array([0.2, 0.4, 0.7, 0.8]))["pearson"] is None  # constant


def test_summary_pools_bags_and_takes_the_median_item():
    per_item = [{"model": {"pearson": r}} for r in (0.1, 0.5, None, 0.3)]
    squared = {"model": [np.array([0.0, 0.2]), np.array([0.1]), np.array([0.3]), np.array([0.0, 0.0])]}
    out = imputation.summary(per_item, squared)["model"]
    assert out["mse"] == pytest.approx(0.6 / 6) and out["pearson_median"] == pytest.approx(0.3)


def test_the_loader_masks_the_item_asked_for_in_every_bag_that_has_it(prepared):
    dataset = PreparedDataset.open(prepared[0])
    bags, items = dataset.bags("held_out"), dataset.lab_vocabulary().size
    item = imputation.top_items(dataset, 1)[0]
    codes, values = np.asarray(bags.codes), np.asarray(bags.values)
    having = int(np.sum(np.any((codes == item) & ~np.isnan(values), axis=1)))
    loader = BagLoader(bags, items, 8, 128, mask="fixed", shuffle=False, bags_per_row=1, mask_item=item)
    assert len(loader.usable) == having
    batch = loader.batch(0)
    assert (batch.is_masked.sum(axis=1) == 1).all() and (batch.target_code[batch.is_masked] == item).all()
    assert (batch.codes[batch.is_masked] == loader.mask_id).all()  # hidden from the encoder, as in pre-training
    # The regressors' features: the other labs only, never the masked one's value.
    x, y = imputation.bag_features(batch, items)
    assert x.shape == (8, 2 * items) and (x[:, items + item - 1] == 0).all() and len(y) == 8


def test_the_synthetic_labs_share_real_physiology(synth):
    """Hematocrit and hemoglobin, PT and INR, urea and creatinine of one draw move together (synth_labs.AXES); a
    lab with no shared axis (platelets) barely follows hemoglobin."""
    labs = read_csv_gz(synth, "hosp/labevents").filter(pl.col("valuenum").is_not_null())
    wide = (
        labs.with_columns(pl.col("valuenum").cast(pl.Float64).log())
        .pivot(on="itemid", index="specimen_id", values="valuenum", aggregate_function="first")
        .to_pandas()
    )

    def r(a: str, b: str) -> float:
        both = wide[[a, b]].dropna()
        return float(np.corrcoef(both[a], both[b])[0, 1])

    assert r("51221", "51222") > 0.85 and r("51274", "51237") > 0.85 and r("50912", "51006") > 0.6
    assert abs(r("51265", "51222")) < 0.4


def test_regressors_read_the_physiology_and_the_record_reaches_the_table(prepared, tmp_path):
    """On the synthetic data the bag's other labs predict the top items' values (ridge and XGBoost well below the
    item's mean); a record built from them lands in imputation.json and in runs.parquet's columns."""
    dataset = PreparedDataset.open(prepared[0])
    items = imputation.top_items(dataset, 3)
    known = imputation.baseline_predictions(dataset, items)
    assert set(known) == {str(i) for i in items}
    assert (dataset.root / "baselines" / "imputation.json").exists()  # cached with the data, not the run
    scored = []
    for item in items:
        entry = known[str(item)]
        true = np.asarray(entry["true"])
        guesses = {"model": np.asarray(entry["ridge"])} | {n: np.asarray(entry[n]) for n in imputation.BASELINES}
        scored.append(({"item": str(item), "n": len(true)}, true, guesses))
    per_item, overall = imputation.score_items(scored)
    assert overall["ridge"]["mse"] < 0.85 * overall["item_mean"]["mse"]
    assert overall["xgboost"]["mse"] < 0.9 * overall["item_mean"]["mse"]
    record = ImputationRecord(
        split="held_out",
        bags=sum(e["n"] for e in per_item),
        model=overall["model"],
        baselines={n: overall[n] for n in imputation.BASELINES},
        items=per_item,
        seconds=1.0,
    )
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_imputation(record)
    stored = json.loads((folder.path / "imputation.json").read_text())
    assert stored["format"] == IMPUTATION_FORMAT and folder.imputation() == record
    assert not any("subject" in key for key in json.dumps(stored).split('"'))  # aggregates only
    row = _run_row(folder.path, None, (), {}, [])
    assert row["imputation_mse"] == overall["model"]["mse"]
    assert row["imputation_ridge_mse"] == overall["ridge"]["mse"]
    assert row["imputation_xgboost_pearson_median"] == overall["xgboost"]["pearson_median"]


def test_cli_refuses_imputation_for_a_timeline_run_and_with_zero_shot(prepared, tmp_path):
    from scaling.training.loop import train
    from tests.helpers import make_spec

    out = tmp_path / "timeline"
    train(make_spec(prepared[0], tokens=20 * 4 * 128, recipe={"batch_rows": 4}), out, log=lambda _: None)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "scaling", "eval", str(out), *args], capture_output=True, text=True
        )

    refused = cli("--imputation")
    assert refused.returncode != 0 and "only the lab-bag families (labrador, bert) do" in refused.stderr
    assert "Traceback" not in refused.stderr
    both = cli("--imputation", "--zero-shot")
    assert both.returncode != 0 and "one at a time" in both.stderr


def test_impute_scores_the_family_function_on_the_regressors_bags(prepared):
    """`impute` scores what the family's function predicts at each masked slot on the very bags the regressors are
    scored on: a constant 0.5 scores the mean of (0.5 - truth)^2 over the cached truths, and no Pearson r."""
    dataset = PreparedDataset.open(prepared[0])

    def constant(model, batch):
        return jnp.full(batch["codes"].shape, 0.5)

    record = imputation.impute(None, constant, dataset, 128)
    known = imputation.baseline_predictions(dataset, imputation.top_items(dataset))
    truths = np.concatenate([np.asarray(entry["true"]) for entry in known.values()])
    assert record.bags == len(truths) and record.model["mse"] == pytest.approx(np.mean((0.5 - truths) ** 2))
    assert record.model["pearson_median"] is None and {e["item"] for e in record.items} <= set(
        dataset.lab_vocabulary().items
    )
    assert "imputation (" in imputation.describe(record)
