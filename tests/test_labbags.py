"""Lab bags: each rule, the eCDF, BERT tokens, and masking in the loader."""

from collections import Counter

import numpy as np
import pytest

from scaling.data.dataset import PreparedDataset
from scaling.data.labbags import (
    LAB_CODE,
    BagConfig,
    Bags,
    BagSplit,
    BagWriter,
    bert_tokens,
    fit_lab_vocabulary,
    left_out_by_rule,
    make_bags,
)
from scaling.data.loaders import BagLoader, pack_bags
from tests.helpers import at, event_frame

# The rules after "which codes are labs", on small item ids: any LAB//<number>//<unit> is a lab here.
CONFIG = BagConfig(lab_codes=LAB_CODE, min_code_count=1, max_labs=4, seed=3)


def labs(subject, minutes, values):
    """One bag: items 1, 2, 3, ... with these values (None = no number) at a time."""
    return [
        (subject, at(minutes=minutes), f"LAB//{i + 1}//u", v, None if v is not None else "___")
        for i, v in enumerate(values)
    ]


def build(rows, config=CONFIG):
    events = event_frame(rows)
    vocab = fit_lab_vocabulary(events.lazy(), config)
    drops = Counter()
    return make_bags(events, vocab, config, drops), drops, vocab


def test_each_rule_drops_and_counts():
    rows = (
        labs(1, 0, [1.0, 2.0])  # two labs: too few
        + labs(1, 10, [1.0, None, None, 4.0])  # half missing: kept (at most 50%)
        + labs(1, 20, [1.0, None, None])  # two thirds missing: dropped
        + labs(1, 30, [5.0, 6.0, 7.0])  # items 1-3: a subset of the previous kept bag (items 1-4): dropped
        + labs(1, 40, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # six labs: subsampled to four
        + labs(2, 0, [1.0, 2.0, 3.0])
    )  # another subject: no previous bag
    bags, drops, _ = build(rows)
    assert drops == {
        "fewer than min_labs": 1,
        "more than max_missing_fraction without a value": 1,
        "subset of the previous bag": 1,
        "bags considered": 6,
        "bags subsampled to max_labs (kept)": 1,
        "labs outside the bag vocabulary": 0,
        "repeated item within a bag": 0,
    }
    assert bags.lengths.tolist() == [4, 4, 3]
    assert bags.subject_ids.tolist() == [1, 1, 2]
    assert bags.codes.shape == (3, 4)
    assert len(set(bags.codes[1].tolist())) == 4 and set(bags.codes[1].tolist()) <= set(range(1, 7))


def test_the_default_rule_takes_hospital_labs_and_counts_what_it_leaves_out():
    """MIMIC-IV's labs by item id, whoever coded them: ehrscale's LAB//<itemid>//<unit>, the reference ETL's LAB//...
    (ICU charts too) and LAB//RESULT//...; an ICU chart item (d_items, 220000 and up) is never a lab."""
    rows = []
    for minute in range(3):
        rows += [
            (1, at(minutes=minute), "LAB//50912//mg/dL", 1.0 + minute, None),  # creatinine
            (1, at(minutes=minute), "LAB//RESULT//50971//mEq/L", 4.0, None),  # potassium (mimic-iv-meds 0.2)
            (1, at(minutes=minute), "LAB//51221//%", 35.0, None),  # haematocrit
            (1, at(minutes=minute), "LAB//220045//bpm", 80.0, None),  # heart rate, charted in the ICU
            (1, at(minutes=minute), "LAB//220277//%", 97.0, None),  # SpO2
            (1, at(minutes=minute), "LAB//1234//u", 1.0, None),  # not a MIMIC-IV lab id
            (1, at(minutes=minute), "LAB//SPECIMEN_COLLECTED//50912", None, None),  # not a result
        ]
    events = event_frame(rows)
    config = BagConfig(min_code_count=1, drop_subsets=False)
    vocab = fit_lab_vocabulary(events.lazy(), config)
    assert vocab.items == ("50912", "50971", "51221")
    bags = make_bags(events, vocab, config, Counter())
    assert bags.lengths.tolist() == [3, 3, 3]
    assert left_out_by_rule(events.lazy(), config) == {
        "ICU charted items (icu/d_items ids 220000-239999)": {"items": 2, "rows": 6},
        "other item ids (outside hosp/d_labitems' 50000-59999)": {"items": 1, "rows": 3},
    }
    assert left_out_by_rule(events.lazy(), CONFIG) == {}  # a pattern takes what it matches


def test_rules_can_be_turned_off():
    rows = labs(1, 0, [1.0, 2.0, 3.0, 4.0]) + labs(1, 10, [1.0, 2.0, 3.0])
    bags, drops, _ = build(rows, BagConfig(lab_codes=LAB_CODE, min_code_count=1, drop_subsets=False))
    assert len(bags.lengths) == 2 and drops["subset of the previous bag"] == 0


def test_ecdf_is_in_unit_interval_and_monotone():
    rows = [(s, at(minutes=s), "LAB//7//u", float(v), None) for s, v in enumerate([5, 1, 3, 3, 9, 7, 2, 3])]
    vocab = fit_lab_vocabulary(event_frame(rows).lazy(), CONFIG)
    grid = np.linspace(-5, 15, 200)
    cdf = vocab.ecdf(np.zeros(len(grid), dtype=np.int64), grid)
    assert (cdf >= 0).all() and (cdf <= 1).all() and (np.diff(cdf) >= 0).all()
    assert vocab.ecdf(np.zeros(3, np.int64), np.array([0.5, 3.0, 9.0])).tolist() == pytest.approx([0.0, 5 / 8, 1.0])
    assert np.isnan(vocab.ecdf(np.zeros(1, np.int64), np.array([np.nan]))[0])


def test_ecdf_of_each_item_is_its_own_share_at_or_below():
    """Several items, one with no number at all: each item's eCDF is the share of its own train values <= v."""
    rng = np.random.default_rng(0)
    values = {"10": rng.integers(0, 20, 300).astype(float), "9": rng.normal(size=200).round(1), "11": []}
    rows = [
        (i, at(minutes=i), f"LAB//{item}//u", float(v), None) for item, vs in values.items() for i, v in enumerate(vs)
    ]
    rows += [(i, at(minutes=i), "LAB//11//u", None, "___") for i in range(5)]
    vocab = fit_lab_vocabulary(event_frame(rows).lazy(), CONFIG)
    assert vocab.items == ("10", "11", "9") and vocab.counts == (300, 5, 200)
    for index, item in enumerate(vocab.items):
        probe = np.array([-1.0, 0.0, 0.5, 7.0, 19.0, 25.0])  # exact in float32, as events store values
        got = vocab.ecdf(np.full(len(probe), index, np.int64), probe)
        if not len(values[item]):
            assert np.isnan(got).all()  # nothing to compare with: no value
            continue
        want = [(np.asarray(values[item], np.float32) <= p).mean() for p in probe]
        assert got.tolist() == pytest.approx(want, abs=1e-6)


def random_bags(rng, n, width, first_subject):
    lengths = rng.integers(1, width + 1, n).astype(np.int32)
    filled = np.arange(width) < lengths[:, None]
    codes = np.where(filled, rng.integers(1, 50, (n, width)), 0).astype(np.int32)
    values = np.where(filled, rng.random((n, width)), np.nan).astype(np.float32)
    values[filled & (rng.random((n, width)) < 0.1)] = np.nan  # labs without a number stay NaN
    subjects = np.arange(first_subject, first_subject + n, dtype=np.int64)
    return Bags(codes, values, lengths, subjects, subjects * 1000)


def test_bag_writer_streams_batches_and_pads_them_like_one_array(tmp_path, monkeypatch):
    """Batches of different widths, written as they come and padded in chunks at the end, give the arrays a
    concatenation padded to the widest batch would; a split without bags gets empty arrays."""
    monkeypatch.setattr(BagWriter, "CHUNK", 7)  # several chunks, one of them partial
    rng = np.random.default_rng(1)
    batches = [random_bags(rng, 20, 5, 0), random_bags(rng, 13, 9, 100), random_bags(rng, 4, 3, 200)]
    split_of = {s: "train" if s % 3 else "tuning" for b in batches for s in b.subject_ids.tolist()}
    writer = BagWriter(tmp_path)
    for batch in batches:
        writer.write(batch, split_of)
    assert writer.close() == {"train": 25, "tuning": 12, "held_out": 0}
    for split in ("train", "tuning"):
        rows = [np.array([split_of[s] == split for s in b.subject_ids.tolist()]) for b in batches]
        width = max(b.codes.shape[1] for b, r in zip(batches, rows) if r.any())
        pad = lambda a, fill: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)  # noqa: E731
        got = BagSplit.open(tmp_path, split)
        np.testing.assert_array_equal(got.codes, np.concatenate([pad(b.codes[r], 0) for b, r in zip(batches, rows)]))
        np.testing.assert_array_equal(
            got.values, np.concatenate([pad(b.values[r], np.nan) for b, r in zip(batches, rows)])
        )
        for name in ("lengths", "subject_ids", "times"):
            want = np.concatenate([getattr(b, name)[r] for b, r in zip(batches, rows)])
            np.testing.assert_array_equal(getattr(got, name), want)
    empty = BagSplit.open(tmp_path, "held_out")
    assert len(empty) == 0 and empty.codes.shape == (0, 0) and empty.values.dtype == np.float32
    assert not list(tmp_path.rglob("_*.bin"))  # the streamed parts are gone


def test_bert_tokens_are_code_and_decile():
    codes = np.array([[1, 2, 2, 0]])
    values = np.array([[0.05, 0.95, np.nan, np.nan]], dtype=np.float32)
    assert bert_tokens(codes, values).tolist() == [[1 + 0, 1 + 11 + 9, 1 + 11 + 10, 0]]
    assert bert_tokens(np.array([[3]]), np.array([[1.0]])).tolist() == [[1 + 22 + 9]]  # eCDF 1.0 is the top decile


def test_loader_packs_whole_bags_and_masks_one_non_null_lab_each(prepared):
    dataset = PreparedDataset.open(prepared[0])
    bags = dataset.bags("train")
    n_items = dataset.lab_vocabulary().size
    loader = BagLoader(bags, n_items, rows=8, context=128, seed=0)
    batch = loader.batch(0)
    assert batch.codes.shape == (8, 128)
    lengths, packed = [], 0
    for row in range(8):
        segments = batch.segment_ids[row]
        assert (segments[segments > 0] == np.repeat(*np.unique(segments[segments > 0], return_counts=True))).all()
        for bag in np.unique(segments[segments > 0]):  # a bag: contiguous, one masked non-null lab
            slots = np.flatnonzero(segments == bag)
            assert slots.tolist() == list(range(slots[0], slots[-1] + 1))
            assert batch.is_masked[row, slots].sum() == 1
            lengths.append(len(slots))
        packed += (segments > 0).sum()
    assert sorted(lengths) == sorted(np.asarray(bags.lengths)[loader._packing(0)[0][: len(lengths)]].tolist())
    assert packed / batch.codes.size > 0.7  # packing: mostly labs, not padding (bags here average ~25 labs)
    assert (batch.codes[batch.segment_ids == 0] == 0).all() and not batch.is_masked[batch.segment_ids == 0].any()
    assert not (batch.is_masked & batch.is_null).any()
    assert (batch.codes[batch.is_masked] == n_items + 1).all()
    assert (batch.tokens[batch.is_masked] == 1 + n_items * 11).all()
    assert (batch.values[batch.is_masked] == 0).all() and (batch.values[batch.is_null] == 0).all()
    target_value, target_code = batch.target_value[batch.is_masked], batch.target_code[batch.is_masked]
    assert ((target_value >= 0) & (target_value <= 1)).all()
    assert (target_code >= 1).all() and (target_code <= n_items).all()
    assert (batch.target_code[~batch.is_masked] == 0).all()
    again = BagLoader(bags, n_items, 8, 128, seed=0).batch(5)  # resumable: a pure function of (seed, step)
    assert np.array_equal(loader.batch(5).codes, again.codes)
    with pytest.raises(ValueError, match=r"raise \[recipe\] context to at least"):
        BagLoader(bags, n_items, 8, context=int(np.max(bags.lengths)) - 1)


def test_read_slots_are_each_rows_masked_slots_and_bags_per_row_caps_a_row(prepared):
    dataset = PreparedDataset.open(prepared[0])
    bags, n_items = dataset.bags("train"), dataset.lab_vocabulary().size
    for cap in (None, 3):
        batch = BagLoader(bags, n_items, rows=8, context=128, seed=0, bags_per_row=cap).batch(0)
        assert batch.read_slots.shape == (8, cap or 128)
        for row in range(8):
            bags_here = int(batch.segment_ids[row].max())
            assert bags_here <= (cap or 128)
            # In bag order, the masked slot of each bag of the row; the rest is padding, never read.
            assert batch.read_slots[row, :bags_here].tolist() == np.flatnonzero(batch.is_masked[row]).tolist()
            assert batch.read_valid[row].tolist() == [True] * bags_here + [False] * (
                batch.read_slots.shape[1] - bags_here
            )
    # Three bags of ~25 labs fill 128 slots less well: the cap costs rows, and the plan counts them the same way.
    assert pack_bags(np.asarray(bags.lengths), 128, 3)[0][-1] > pack_bags(np.asarray(bags.lengths), 128)[0][-1]
    assert pack_bags(np.array([3, 3, 3, 3, 3]), 128, 2)[0].tolist() == [0, 0, 1, 1, 2]


def test_fixed_mask_stays_epoch_mask_moves(prepared):
    dataset = PreparedDataset.open(prepared[0])
    bags, n_items = dataset.bags("train"), dataset.lab_vocabulary().size
    for mode, same in (("fixed", True), ("epoch", False)):
        loader = BagLoader(bags, n_items, rows=8, context=128, seed=0, mask=mode, shuffle=False)
        first, later = loader.batch(0), loader.batch(loader.steps_per_epoch)
        assert np.array_equal(first.is_masked, later.is_masked) == same
    with pytest.raises(ValueError, match="mask must be"):
        BagLoader(bags, n_items, 8, 128, mask="sometimes")
