"""Timelines: exact tokens on hand-made events, train-only fitting, windows that never cross patients."""

import json
import shutil

import numpy as np
import polars as pl
import pytest

from scaling.data.dataset import PreparedDataset
from scaling.data.derive import derive
from scaling.data.labbags import BagConfig
from scaling.data.loaders import TimelineLoader, timeline_pieces
from scaling.data.tasks import TaskConfig
from scaling.data.timelines import STATIC_TIME, Timelines, TokenizerConfig, Vocabulary, fit_vocabulary, tokenize
from tests.helpers import at, event_frame

CONFIG = TokenizerConfig(min_code_count=1, min_text_count=1, quantiles=4)


def decoded(events, vocab):
    tokens, times, subjects, lengths, prefix = tokenize(events, vocab)
    return [vocab.tokens[t] for t in tokens], times, lengths, prefix


def test_tokens_of_a_hand_made_timeline():
    events = event_frame(
        [
            (1, None, "GENDER//F", None, None),
            (1, at(days=-365 * 40), "MEDS_BIRTH", None, None),
            (1, at(), "HOSPITAL_ADMISSION//EW EMER.", None, None),
            (1, at(minutes=3), "LAB//50912//mg/dL", 0.8, None),  # 3 minutes: no gap token
            (1, at(minutes=3), "LAB//51487//UNK", None, "NEG"),  # same time: no gap token
            (1, at(minutes=23), "LAB//50912//mg/dL", 2.0, None),  # 20 minutes: 15m-1h
            (1, at(days=2, minutes=23), "LAB//50912//mg/dL", 1.1, None),  # 2 days: 1d-3d
            (1, at(days=400, minutes=23), "MEDICATION//Heparin", None, None),  # 398 days: >6mt twice
            (2, None, "GENDER//M", None, None),
            (2, at(), "LAB//50912//mg/dL", 5.0, None),
        ]
    )
    vocab = fit_vocabulary(events.lazy(), CONFIG)
    tokens, times, lengths, prefix = decoded(events, vocab)
    # Quartiles of 0.8, 1.1, 2.0, 5.0 (linear): 1.025, 1.55, 2.75.
    assert vocab.quantiles.filter(pl.col("code") == "LAB//50912//mg/dL").select(pl.exclude("code")).row(
        0
    ) == pytest.approx((1.025, 1.55, 2.75), rel=1e-6)
    q = {0.8: "Q1", 1.1: "Q2", 2.0: "Q3", 5.0: "Q4"}
    assert tokens[: lengths[0]] == [
        "GENDER//F",
        "AGE//Q1",
        "HOSPITAL_ADMISSION//EW EMER.",
        "LAB//50912//mg/dL",
        q[0.8],
        "LAB//51487//UNK",
        "TXT//NEG",
        "TIME//15m-1h",
        "LAB//50912//mg/dL",
        q[2.0],
        "TIME//1d-3d",
        "LAB//50912//mg/dL",
        q[1.1],
        "TIME//>6mt",
        "TIME//>6mt",
        "MEDICATION//Heparin",
    ]
    assert tokens[lengths[0] :] == ["GENDER//M", "AGE//UNK", "LAB//50912//mg/dL", q[5.0]]  # no birth: unknown age
    assert list(prefix) == [2, 2]
    assert (times[:2] == STATIC_TIME).all() and (np.diff(times[2 : lengths[0]]) >= 0).all()


def test_rare_codes_and_texts_fall_back():
    events = event_frame(
        [(1, at(), "LAB//1//x", None, "POS")]
        + [(1, at(minutes=i), "DIAGNOSIS//ICD//10//I10", None, None) for i in range(3)]
        + [(2, at(), "DIAGNOSIS//ICD//10//Z99", None, None), (2, at(minutes=1), "OTHER//thing", None, None)]
    )
    vocab = fit_vocabulary(
        event_frame([(1, at(minutes=i), "DIAGNOSIS//ICD//10//I10", None, "NEG") for i in range(3)]).lazy(),
        TokenizerConfig(min_code_count=2, min_text_count=2),
    )
    tokens, *_ = decoded(events, vocab)
    assert tokens[:3] == ["AGE//UNK", "UNK//OTHER", "TXT//RARE"]  # LAB category unseen in train: UNK//OTHER
    assert "UNK//DIAGNOSIS" in tokens and "DIAGNOSIS//ICD//10//I10" in tokens


def test_quantiles_and_vocabulary_see_only_the_train_split(prepared, tmp_path):
    prep, _ = prepared
    events = tmp_path / "events"
    shutil.copytree(prep / "events", events)
    held_out = pl.read_parquet(events / "metadata" / "subject_splits.parquet").filter(pl.col("split") != "train")[
        "subject_id"
    ]
    for shard in (events / "data").glob("*.parquet"):
        frame = pl.read_parquet(shard)
        changed = frame.with_columns(
            numeric_value=pl.when(pl.col("subject_id").is_in(held_out.implode()))
            .then(pl.col("numeric_value") * 100)
            .otherwise("numeric_value"),
            code=pl.when(pl.col("subject_id").is_in(held_out.implode()) & (pl.col("code") == "GENDER//F"))
            .then(pl.lit("GENDER//X"))
            .otherwise("code"),
        )
        changed.write_parquet(shard)
    out = tmp_path / "derived"
    derive(events, out, TokenizerConfig(), BagConfig(), TaskConfig())
    assert pl.read_parquet(out / "vocab" / "quantiles.parquet").equals(
        pl.read_parquet(prep / "vocab" / "quantiles.parquet")
    )
    assert pl.read_parquet(out / "vocab" / "vocab.parquet").equals(pl.read_parquet(prep / "vocab" / "vocab.parquet"))
    for name in ("ecdf_values.npy", "ecdf_cdf.npy"):
        assert np.array_equal(np.load(out / "labbags" / name), np.load(prep / "labbags" / name))
    # Held-out timelines did change (their values now sit in the top quantile).
    dataset = PreparedDataset.open(prep)
    before = dataset.timelines("held_out")
    after = Timelines.open(out / "timelines", "held_out", dataset.vocabulary().dtype)
    assert not np.array_equal(np.asarray(before.tokens), np.asarray(after.tokens))


def test_a_vocabulary_prepared_when_dense_codes_were_named_still_loads(prepared, tmp_path):
    """Prepared datasets from before the dense codes were found from the data (their tokenizer.json names
    `dense_categories` and lists no `dense_codes`) still open."""
    folder = tmp_path / "vocab"
    shutil.copytree(prepared[0] / "vocab", folder)
    meta = json.loads((folder / "tokenizer.json").read_text())
    meta.pop("dense_codes")
    meta["config"]["dense_categories"] = ["CHART", "OUTPUT"]
    (folder / "tokenizer.json").write_text(json.dumps(meta))
    old, new = Vocabulary.load(folder), Vocabulary.load(prepared[0] / "vocab")
    assert old.dense_codes == () and old.config == new.config and old.tokens == new.tokens


def _synthetic_timelines(lengths, prefix=2) -> Timelines:
    """Subject i's tokens are 1000 * (i + 1) + position, so any token names its subject."""
    tokens = np.concatenate([1000 * (i + 1) + np.arange(n) for i, n in enumerate(lengths)]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Timelines(
        tokens=tokens,
        times=np.zeros(len(tokens), np.int64),
        offsets=offsets,
        subject_ids=np.arange(len(lengths)),
        prefix_lengths=np.full(len(lengths), prefix, np.int32),
    )


def test_windows_never_cross_patients_and_cover_every_token():
    lengths = [3, 40, 7, 1, 90, 16, 2, 33]
    timelines = _synthetic_timelines(lengths)
    loader = TimelineLoader(timelines, context=16, batch_size=2, seed=5)
    seen = set()
    for step in range(loader.steps_per_epoch):
        batch = loader.batch(step)
        for row in range(2):
            for seg in set(batch.segment_ids[row].tolist()) - {0}:
                at_seg = batch.segment_ids[row] == seg
                owners = set((batch.inputs[row][at_seg] // 1000).tolist())
                assert len(owners) == 1  # one patient per segment
                positions = batch.positions[row][at_seg]
                assert positions[0] == 0 and (np.diff(positions) == 1).all()
            # A target counts only inside its segment: input and target belong to the same patient.
            masked = batch.loss_mask[row]
            assert (batch.inputs[row][masked] // 1000 == batch.targets[row][masked] // 1000).all()
            assert not masked[batch.segment_ids[row] == 0].any()
            seen |= set(batch.targets[row][masked].tolist())
    pieces = timeline_pieces(timelines, 16)
    assert pieces[:, 0].tolist().count(3) == 0  # a one-token subject has nothing to predict
    # Every token after a subject's first is a target in some window, except where a piece boundary falls.
    total_targets = sum(n - 1 for n in lengths if n >= 2)
    assert len(seen) >= total_targets - 2 * len(pieces)


def test_continuation_windows_start_with_the_static_context():
    timelines = _synthetic_timelines([50], prefix=3)
    pieces = timeline_pieces(timelines, 16)
    assert pieces[:, 1].tolist() == [0, 17, 31, 45]  # 17 tokens, then 14 new tokens each after the 3-token prefix
    loader = TimelineLoader(timelines, context=16, batch_size=1, shuffle=False)
    second = loader.batch(1)
    assert second.inputs[0][:4].tolist() == [1000, 1001, 1002, 1017]


def test_loader_is_resumable_and_seeded(prepared):
    dataset = PreparedDataset.open(prepared[0])
    train = dataset.timelines("train")
    a = TimelineLoader(train, context=64, batch_size=4, seed=1)
    b = TimelineLoader(train, context=64, batch_size=4, seed=1)
    step = a.steps_per_epoch + 3  # in the second epoch
    assert np.array_equal(a.batch(step).inputs, b.batch(step).inputs)
    assert not np.array_equal(a.batch(3).inputs, a.batch(step).inputs)  # epochs are reshuffled
    c = TimelineLoader(train, context=64, batch_size=4, seed=2)
    assert not np.array_equal(a.batch(0).inputs, c.batch(0).inputs)
    batch = a.batch(0)
    assert batch.inputs.shape == (4, 64) and batch.inputs.dtype == np.int32
    assert batch.loss_mask.mean() > 0.9  # packing leaves little padding


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="too little data for one batch"):
        TimelineLoader(_synthetic_timelines([5]), context=16, batch_size=4)


def test_each_epoch_is_planned_once(monkeypatch):
    """Past the first epoch a batch must not re-pack epochs (it once re-planned two per step: 10x slower)."""
    loader = TimelineLoader(_synthetic_timelines([3, 40, 7, 90, 16, 33] * 4), context=16, batch_size=2, seed=5)
    planned = []
    original = TimelineLoader._piece_length
    monkeypatch.setattr(TimelineLoader, "_piece_length", lambda self: planned.append(1) or original(self))
    first = [loader.batch(step).inputs for step in range(3 * loader.steps_per_epoch)]
    assert len(planned) == 2  # epochs 1 and 2, once each (epoch 0 was planned when the loader was made)
    fresh = TimelineLoader(_synthetic_timelines([3, 40, 7, 90, 16, 33] * 4), context=16, batch_size=2, seed=5)
    assert all(np.array_equal(a, fresh.batch(step).inputs) for step, a in enumerate(first))  # same batches as before


def test_quantiles_from_value_counts_are_polars_linear_quantiles_to_the_bit():
    """The vocabulary's value deciles come from distinct values and their counts (bounded memory); they must be the
    very edges polars' own quantile gives on every row, in float32."""
    from scaling.data.timelines import value_quantiles

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(40, 180, 5000), rng.normal(1.2, 0.4, 3000).round(2), [7.0]])
    codes = ["HR"] * 5000 + ["CREAT"] * 3000 + ["ONE"]
    frame = pl.DataFrame({"code": codes, "numeric_value": pl.Series(values, dtype=pl.Float32)})
    probs = [i / 10 for i in range(1, 10)]
    expected = (
        frame.group_by("code")
        .agg([pl.col("numeric_value").quantile(p, "linear").alias(f"q{i + 1}") for i, p in enumerate(probs)])
        .sort("code")
    )
    assert value_quantiles(frame.lazy(), probs).equals(expected)
