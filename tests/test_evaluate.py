"""Downstream evaluation: the probe, its interval, baselines cached, too-small cohorts, no leakage."""

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from scaling.data.dataset import PreparedDataset
from scaling.eval import baselines as baselines_module
from scaling.eval.evaluate import representations
from scaling.eval.probe import Split, auroc_interval, linear_probe
from scaling.runspec import parse_spec
from scaling.training.tasks import build_model


def planted(n: int, rng: np.random.Generator, strength: float = 2.0):
    x = rng.normal(size=(n, 8))
    risk = 1 / (1 + np.exp(-(strength * x[:, 0] - 1.0)))
    return x, (rng.random(n) < risk).astype(np.int64), risk


def test_probe_finds_a_planted_signal_and_the_oracle_bounds_it():
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 3000), ("tuning", 800), ("held_out", 1500)):
        x, y, risk = planted(n, rng)
        splits[name] = Split(x, y)
        if name == "held_out":
            oracle_risk = risk
    result = linear_probe(splits)
    assert result["status"] == "ok" and result["auroc"] > 0.8
    oracle, _, oracle_hi = auroc_interval(splits["held_out"].y, oracle_risk)
    assert result["auroc"] <= oracle_hi and abs(result["auroc"] - oracle) < 0.03
    noise = {k: Split(np.random.default_rng(1).normal(size=s.x.shape), s.y) for k, s in splits.items()}
    assert abs(linear_probe(noise)["auroc"] - 0.5) < 0.06


def test_interval_contains_the_estimate_and_narrows_with_more_patients():
    rng = np.random.default_rng(3)
    widths = []
    for n in (200, 2000):
        _, y, risk = planted(n, rng)
        point, lo, hi = auroc_interval(y, risk + rng.normal(0, 0.2, n), seed=0)
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    assert auroc_interval(y, risk, seed=5) == auroc_interval(y, risk, seed=5)  # seeded


def test_bootstrap_interval_is_the_auroc_of_each_resample():
    """The vectorised bootstrap equals scikit-learn's AUROC over the same resamples, ties included."""
    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.3
    risk = np.round(rng.normal(size=300) + y, 1)  # rounded: many tied scores, some across the classes
    picks = np.random.default_rng(7).integers(0, 300, (200, 300))  # what auroc_interval draws with seed 7
    aucs = [roc_auc_score(y[p], risk[p]) for p in picks if 0 < y[p].sum() < 300]
    point, lo, hi = auroc_interval(y, risk, seed=7, resamples=200)
    assert point == roc_auc_score(y, risk)
    want_lo, want_hi = np.percentile(aucs, [2.5, 97.5])
    assert lo == pytest.approx(min(want_lo, point), abs=1e-12) and hi == pytest.approx(max(want_hi, point), abs=1e-12)


def test_too_small_cohort_is_reported_with_counts():
    rng = np.random.default_rng(0)
    y = np.zeros(100, np.int64)
    y[:15] = 1
    splits = {name: Split(rng.normal(size=(100, 3)), y) for name in ("train", "tuning", "held_out")}
    result = linear_probe(splits)
    assert result["status"] == "too small"
    assert (
        result["reason"]
        == "too small to score: the train split has 15 positives and 85 negatives (at least 20 of each are needed)"
    )
    assert result["counts"]["held_out"] == {"positives": 15, "negatives": 85}


def test_baselines_and_the_oracle_are_computed_once_and_reused(prepared, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "prep"
    shutil.copytree(prepared[0], copy)
    dataset = PreparedDataset.open(copy)
    first = baselines_module.baselines(dataset, "long_stay")
    assert (copy / "baselines" / "long_stay.json").exists()
    oracle = baselines_module.oracle(dataset, "long_stay")
    assert oracle["auroc"] > 0.5 and (copy / "baselines" / "long_stay.oracle.json").exists()
    monkeypatch.setattr(baselines_module, "features", lambda *a: pytest.fail("features recomputed"))
    monkeypatch.setattr(baselines_module, "score", lambda *a: pytest.fail("oracle scored again"))
    assert baselines_module.baselines(dataset, "long_stay") == first
    assert baselines_module.oracle(dataset, "long_stay") == oracle


def test_baseline_features_use_only_the_past(prepared):
    dataset = PreparedDataset.open(prepared[0])
    labels = dataset.task("in_hospital_mortality").head(30)
    frame, columns = baselines_module.features(dataset, labels)
    earlier = labels.with_columns(prediction_time=pl.col("prediction_time") - pl.duration(days=3650))
    before, before_columns = baselines_module.features(dataset, earlier)

    def events_counted(f, cols):
        return f.select([c for c in cols if not c.startswith("last:")]).to_numpy().sum()

    # Ten years earlier only the static gender and the birth are seen: every other count comes from the past.
    assert events_counted(before, before_columns) == 60
    assert before.select(pl.col("GENDER//M") + pl.col("GENDER//F")).to_series().to_list() == [1] * 30
    assert events_counted(frame, columns) > 30 * 10
    assert frame.height == 30 and len(columns) > 20


def test_changing_events_after_prediction_changes_no_representation(prepared):
    dataset = PreparedDataset.open(prepared[0])
    spec = parse_spec(
        {"name": "e", "data": str(prepared[0]), "width": 16, "tokens": 1000, "recipe": {"context": 64}}, "test"
    )
    model, _, _ = build_model(spec, dataset)
    task = "in_hospital_mortality"
    before, _, _ = representations(model, spec, dataset, task)
    original = dataset.timelines
    cut_by_subject = dict(dataset.task(task).group_by("subject_id").agg(pl.col("prediction_time").min()).iter_rows())

    def altered(split):
        t = original(split)
        tokens = np.array(t.tokens)
        for i, subject in enumerate(t.subject_ids):
            cut = cut_by_subject.get(int(subject))
            if cut is not None:
                lo, hi = t.offsets[i], t.offsets[i + 1]
                later = np.asarray(t.times[lo:hi]) >= np.datetime64(cut, "us").astype(np.int64)
                tokens[lo:hi][later] = 5  # anything at or after the first prediction time changes
        return replace(t, tokens=tokens)

    object.__setattr__(dataset, "timelines", altered)
    after, _, _ = representations(model, spec, dataset, task)
    rows = dataset.task(task).join(dataset.splits(), on="subject_id")
    for split in before:
        first_rows = (
            rows.filter(pl.col("split") == split)
            .with_row_index("i")
            .join(
                pl.DataFrame({"subject_id": list(cut_by_subject), "first": list(cut_by_subject.values())}),
                on="subject_id",
            )
        )
        first = first_rows.filter(pl.col("prediction_time") == pl.col("first"))["i"].to_numpy()
        assert np.allclose(before[split].x[first], after[split].x[first], atol=1e-5)


def test_eval_needs_a_finished_run(tmp_path):
    from scaling.eval.evaluate import evaluate
    from scaling.record import RunError

    with pytest.raises(RunError, match="no result.json, so the run has not finished"):
        evaluate(tmp_path)


@pytest.mark.parametrize("family", ["labrador", "bert"])
def test_bag_vectors_padded_per_batch_equal_the_bags_embedded_at_full_width(prepared, family):
    """The probe embeds bags shortest first, each batch padded to its own longest bag, and keeps each bag's
    vector for the next task: the vectors are those of every bag padded to the longest, averaged per row."""
    from scaling.data.labbags import bags_before
    from scaling.eval.evaluate import BAG_SLOTS_STEP, Embeddings, bag_vectors
    from scaling.families import FAMILIES

    dataset = PreparedDataset.open(prepared[0])
    spec = parse_spec({"name": "b", "data": str(prepared[0]), "family": family, "width": 16, "tokens": 1000}, "t")
    model, _, context = build_model(spec, dataset)
    rows = (
        dataset.task("in_hospital_mortality").join(dataset.splits(), on="subject_id").filter(pl.col("split") == "train")
    )
    embeddings = Embeddings(model)
    x, keep = bag_vectors(embeddings, FAMILIES[family], dataset, "train", rows, context, inclusive=False)
    bags = dataset.bags("train")
    windows = [w for w in bags_before(bags, rows, False) if len(w)]
    assert keep.sum() == len(windows) > 20 and len(embeddings.bags) == len(np.unique(np.concatenate(windows)))
    lengths = (bags.codes > 0).sum(axis=1)[np.unique(np.concatenate(windows))]
    assert len(np.unique(-(-lengths // BAG_SLOTS_STEP))) > 1  # batches of several padded widths
    full = {}
    for window in windows[:20]:
        for b in window:
            codes, values = bags.codes[b : b + 1], bags.values[b : b + 1]
            full[int(b)] = np.asarray(model.embed(*FAMILIES[family].probe_input(codes, values)))[0]
    expected = np.stack([np.mean([full[int(b)] for b in w], axis=0) for w in windows[:20]])
    assert np.allclose(x[:20], expected, atol=1e-5)
    cached = len(embeddings.bags)  # a second task's rows over the same bags embed nothing new
    again, _ = bag_vectors(embeddings, FAMILIES[family], dataset, "train", rows.head(50), context, inclusive=False)
    assert len(embeddings.bags) == cached and np.allclose(again, x[: len(again)], atol=1e-6)
