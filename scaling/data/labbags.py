"""Lab bags: the labs of one subject at one identical time, as an unordered set (Labrador, BERT).

Which codes are labs is `BagConfig.lab_codes`: "mimic-labs" (the default: MIMIC-IV's hospital laboratory results,
LAB//<itemid>//<unit> with an item id of d_labitems; ICU charted items, which the reference MIMIC-IV MEDS ETL also
codes LAB//, are left out and counted), "numeric" for any MEDS dataset (codes that usually carry a number, measured
together at one time, make the bags), or a regular expression (the item is its first group).

Rules (Labrador's by default, each configurable, each drop counted): only lab items in the bag
vocabulary (at least `min_code_count` train rows), at least `min_labs` labs, at most
`max_missing_fraction` without a number, not a subset of the subject's previous bag; bags longer
than `max_labs` are subsampled with a seeded shuffle. Values become their item's empirical CDF,
fitted on the train split and stored compactly (unique sorted values per item, cumulative share).

Storage, per split, in PREP/labbags/<split>/: `codes.npy` int32 [bags, L] (0 = padding, item index + 1),
`values.npy` float32 [bags, L] (eCDF in [0, 1], NaN = no number), `lengths.npy`, `subject_ids.npy`,
`times.npy` (int64 microseconds; kept in the data folder only).
"""

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from scaling.data.meds_io import SPLITS

PAD = 0


NUMERIC = "numeric"  # BagConfig.lab_codes: the codes that usually carry a number are the labs
MIMIC_LABS = "mimic-labs"  # BagConfig.lab_codes: MIMIC-IV's hospital laboratory results (d_labitems' item ids)
# MIMIC-IV's lab code in ehrscale's events (LAB//<itemid>//<unit>) and in the reference ETL's (LAB//<itemid>//<unit>
# in MEDS_transforms 0.0.9, LAB//RESULT//<itemid>//<unit> in mimic-iv-meds 0.2); the item id is the first group.
LAB_CODE = r"^LAB//(?:RESULT//)?([0-9]+)(?://|$)"
# MIMIC-IV's two item dictionaries do not overlap: hosp/d_labitems holds the laboratory items (5-digit ids,
# 50801-53151 in 3.1), icu/d_items the ICU's charted, input, output and procedure items (6-digit ids from 220000).
# The reference ETL codes chartevents LAB//<itemid>//<unit> like labevents: the item id tells a lab from a vital sign.
HOSPITAL_LAB_IDS = (50000, 59999)
ICU_ITEM_IDS = (220000, 239999)
LEFT_OUT_ICU = "ICU charted items (icu/d_items ids 220000-239999)"
LEFT_OUT_OTHER = "other item ids (outside hosp/d_labitems' 50000-59999)"


@dataclass(frozen=True)
class BagConfig:
    """Every choice that makes a bag; recorded in the manifest.

    `lab_codes` says which codes are labs: "mimic-labs" (the default): codes `LAB_CODE` matches whose item id is a
    hospital lab's (`HOSPITAL_LAB_IDS`), the item id being the item, from ehrscale's reader and from the reference
    MIMIC-IV MEDS ETL alike; "numeric": every code whose train rows carry a number at least `numeric_share` of the
    time, the whole code being the item; or a regular expression (the item is its first group, else the whole
    code)."""

    lab_codes: str = MIMIC_LABS
    numeric_share: float = 0.5
    min_code_count: int = 500
    min_labs: int = 3
    max_missing_fraction: float = 0.5
    drop_subsets: bool = True
    max_labs: int = 90
    seed: int = 0


@dataclass(frozen=True)
class LabVocabulary:
    """Bag item vocabulary (lab item codes) and the per-item eCDF, fitted on train."""

    items: tuple[str, ...]  # e.g. "50912": the item id part of LAB//<itemid>//<unit>
    counts: tuple[int, ...]
    ecdf_values: np.ndarray  # float64, unique sorted values of all items, concatenated
    ecdf_cdf: np.ndarray  # float32, share of train values <= each value
    ecdf_offsets: np.ndarray  # int64 [items + 1]

    @property
    def size(self) -> int:
        """Item codes 1..size; 0 is padding. Labrador's mask and null ids are size + 1 and size + 2."""
        return len(self.items)

    def ecdf(self, item_index: np.ndarray, values: np.ndarray) -> np.ndarray:
        """eCDF of each value within its item (item_index 0-based); NaN stays NaN."""
        out = np.full(values.shape, np.nan, dtype=np.float32)
        for i in np.unique(item_index):
            rows = np.flatnonzero((item_index == i) & ~np.isnan(values))
            lo, hi = self.ecdf_offsets[i], self.ecdf_offsets[i + 1]
            if hi == lo or not rows.size:
                continue
            pos = np.searchsorted(self.ecdf_values[lo:hi], values[rows], side="right")
            cdf = np.concatenate([[0.0], self.ecdf_cdf[lo:hi]])
            out[rows] = cdf[pos]
        return out

    def save(self, folder: Path, config: BagConfig) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"item": self.items, "count": self.counts}).write_parquet(folder / "lab_vocab.parquet")
        np.save(folder / "ecdf_values.npy", self.ecdf_values)
        np.save(folder / "ecdf_cdf.npy", self.ecdf_cdf)
        np.save(folder / "ecdf_offsets.npy", self.ecdf_offsets)
        (folder / "bags.json").write_text(json.dumps({"config": asdict(config), "items": self.size}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "LabVocabulary":
        frame = pl.read_parquet(folder / "lab_vocab.parquet")
        return cls(
            items=tuple(frame["item"]),
            counts=tuple(frame["count"]),
            ecdf_values=np.load(folder / "ecdf_values.npy"),
            ecdf_cdf=np.load(folder / "ecdf_cdf.npy"),
            ecdf_offsets=np.load(folder / "ecdf_offsets.npy"),
        )


def check_lab_codes(config: BagConfig) -> str | None:
    """Why `lab_codes` cannot be used (not a valid regular expression), or None."""
    if config.lab_codes in (NUMERIC, MIMIC_LABS):
        return None
    try:
        re.compile(config.lab_codes)
        pl.select(pl.lit("").str.contains(config.lab_codes))  # polars' own regex dialect must take it too
    except (re.error, pl.exceptions.ComputeError) as error:
        reason = str(error).splitlines()[0]
        return f"--bag-codes {config.lab_codes!r} is not 'mimic-labs', 'numeric' or a regular expression: {reason}"
    return None


def lab_rows(events: pl.LazyFrame, config: BagConfig, numeric_codes: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Timed lab events as (subject_id, time, item, value), by the `lab_codes` rule; with "numeric", the labs
    are `numeric_codes` (chosen on train by `numeric_codes_of`)."""
    timed = events.filter(pl.col("time").is_not_null())
    if config.lab_codes == NUMERIC:
        labs = timed.filter(pl.col("code").is_in(list(numeric_codes))).with_columns(item=pl.col("code"))
    elif config.lab_codes == MIMIC_LABS:
        labs = timed.filter(pl.col("code").str.contains(LAB_CODE)).with_columns(
            item=pl.col("code").str.extract(LAB_CODE)
        )
        labs = labs.filter(pl.col("item").cast(pl.Int64).is_between(*HOSPITAL_LAB_IDS))
    else:
        grouped = re.compile(config.lab_codes).groups > 0
        item = pl.col("code").str.extract(config.lab_codes, 1) if grouped else pl.col("code")
        labs = timed.filter(pl.col("code").str.contains(config.lab_codes)).with_columns(item=item)
    return labs.select("subject_id", "time", "item", value=pl.col("numeric_value").cast(pl.Float64))


def describe_rule(config: BagConfig) -> str:
    """What the lab rule takes, in words (printed by `data prepare`, kept in the manifest)."""
    if config.lab_codes == MIMIC_LABS:
        low, high = HOSPITAL_LAB_IDS
        return (
            f"mimic-labs: MIMIC-IV's hospital labs, LAB//<itemid>//<unit> with a hosp/d_labitems item id ({low}-{high})"
        )
    if config.lab_codes == NUMERIC:
        return f"numeric: codes whose train rows carry a number at least {config.numeric_share:g} of the time"
    return f"the pattern {config.lab_codes!r}"


def left_out_by_rule(events: pl.LazyFrame, config: BagConfig) -> dict[str, dict[str, int]]:
    """Lab-coded events (`LAB_CODE`) the "mimic-labs" rule leaves out, by reason: distinct items and rows (all
    splits). Empty for the other rules, which take what they match."""
    if config.lab_codes != MIMIC_LABS:
        return {}
    item = pl.col("code").str.extract(LAB_CODE).cast(pl.Int64)
    reason = (
        pl.when(item.is_between(*HOSPITAL_LAB_IDS))
        .then(pl.lit(None, pl.String))
        .when(item.is_between(*ICU_ITEM_IDS))
        .then(pl.lit(LEFT_OUT_ICU))
        .otherwise(pl.lit(LEFT_OUT_OTHER))
    )
    codes = events.filter(pl.col("time").is_not_null()).group_by("code").agg(rows=pl.len()).collect(engine="streaming")
    left = (
        codes.filter(pl.col("code").str.contains(LAB_CODE))  # the pattern once per distinct code, not per event
        .with_columns(item=item, reason=reason)
        .filter(pl.col("reason").is_not_null())
        .group_by("reason")
        .agg(items=pl.col("item").n_unique(), rows=pl.col("rows").sum())
        .sort("reason")
    )
    return {r: {"items": int(i), "rows": int(n)} for r, i, n in left.iter_rows()}


def numeric_codes_of(train: pl.LazyFrame, config: BagConfig) -> tuple[str, ...]:
    """Codes whose timed train rows carry a number at least `numeric_share` of the time."""
    shares = (
        train.filter(pl.col("time").is_not_null())
        .group_by("code")
        .agg(share=pl.col("numeric_value").is_not_null().mean())
        .filter(pl.col("share") >= config.numeric_share)
        .collect(engine="streaming")
    )
    return tuple(sorted(shares["code"].to_list()))


def fit_lab_vocabulary(train: pl.LazyFrame, config: BagConfig) -> LabVocabulary:
    numeric = numeric_codes_of(train, config) if config.lab_codes == NUMERIC else ()
    labs = lab_rows(train, config, numeric)
    counts = (
        labs.group_by("item")
        .agg(count=pl.len())
        .filter(pl.col("count") >= config.min_code_count)
        .collect(engine="streaming")
        .sort("item")
    )
    items = counts["item"].to_list()
    # Distinct values and their counts (a streaming aggregation): memory follows the distinct values, not the rows.
    distinct = (
        labs.filter(pl.col("item").is_in(items) & pl.col("value").is_not_null() & pl.col("value").is_finite())
        .group_by("item", "value")
        .agg(n=pl.len())
        .collect(engine="streaming")
        .sort("item", "value")
    )
    index = {item: i for i, item in enumerate(items)}
    item_of = distinct["item"].replace_strict(index, return_dtype=pl.Int64).to_numpy()  # sorted as `items` are
    offsets = np.searchsorted(item_of, np.arange(len(items) + 1), side="left").astype(np.int64)
    n = distinct["n"].to_numpy()
    cdf = np.zeros(len(n), dtype=np.float32)
    for i in range(len(items)):  # the share of an item's train values at or below each distinct value
        lo, hi = offsets[i], offsets[i + 1]
        cdf[lo:hi] = np.cumsum(n[lo:hi]) / max(n[lo:hi].sum(), 1)
    return LabVocabulary(
        items=tuple(items),
        counts=tuple(counts["count"].to_list()),
        ecdf_values=distinct["value"].to_numpy(),
        ecdf_cdf=cdf,
        ecdf_offsets=offsets,
    )


@dataclass(frozen=True)
class Bags:
    """Bags of one batch of subjects, padded to the longest bag (at most max_labs)."""

    codes: np.ndarray
    values: np.ndarray
    lengths: np.ndarray
    subject_ids: np.ndarray
    times: np.ndarray


def make_bags(events: pl.DataFrame, vocab: LabVocabulary, config: BagConfig, drops: Counter) -> Bags:
    """Events of whole subjects -> bags after every rule; drop counts added to `drops`."""
    index = pl.DataFrame({"item": list(vocab.items), "code": np.arange(1, vocab.size + 1, dtype=np.int32)})
    labs = lab_rows(events.lazy(), config, vocab.items).collect()
    drops["labs outside the bag vocabulary"] += labs.height - labs.join(index, on="item", how="semi").height
    labs = labs.join(index, on="item", how="inner")
    # One lab per item within a bag (a repeated item keeps its first row).
    before = labs.height
    labs = labs.unique(["subject_id", "time", "code"], keep="first", maintain_order=True)
    drops["repeated item within a bag"] += before - labs.height
    bags = (
        labs.sort("subject_id", "time", "code")
        .group_by("subject_id", "time", maintain_order=True)
        .agg("code", "value", n=pl.len(), missing=pl.col("value").is_null().sum())
    )
    total = bags.height
    keep = bags["n"].to_numpy() >= config.min_labs
    drops["fewer than min_labs"] += int((~keep).sum())
    too_missing = bags["missing"].to_numpy() > config.max_missing_fraction * bags["n"].to_numpy()
    drops["more than max_missing_fraction without a value"] += int((keep & too_missing).sum())
    keep &= ~too_missing
    bags = bags.filter(pl.Series(keep))
    if config.drop_subsets and bags.height:
        subset = _subset_of_previous(bags, vocab.size)
        drops["subset of the previous bag"] += int(subset.sum())
        bags = bags.filter(pl.Series(~subset))
    drops["bags considered"] += total
    lengths = bags["n"].to_numpy().astype(np.int32)
    over = lengths > config.max_labs
    drops["bags subsampled to max_labs (kept)"] += int(over.sum())
    width = int(min(config.max_labs, lengths.max())) if len(lengths) else 0
    codes = np.zeros((bags.height, width), dtype=np.int32)
    values = np.full((bags.height, width), np.nan, dtype=np.float32)
    flat_codes = bags["code"].explode().to_numpy().astype(np.int32)
    flat_values = vocab.ecdf(flat_codes - 1, bags["value"].explode().fill_null(np.nan).to_numpy().astype(np.float64))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng([config.seed, int(bags["subject_id"][0]) if bags.height else 0])
    for row in np.flatnonzero(~over):
        s, n = starts[row], lengths[row]
        codes[row, :n] = flat_codes[s : s + n]
        values[row, :n] = flat_values[s : s + n]
    for row in np.flatnonzero(over):
        pick = np.sort(rng.permutation(lengths[row])[: config.max_labs]) + starts[row]
        codes[row] = flat_codes[pick]
        values[row] = flat_values[pick]
    lengths = np.minimum(lengths, config.max_labs).astype(np.int32)
    return Bags(
        codes=codes,
        values=values,
        lengths=lengths,
        subject_ids=bags["subject_id"].to_numpy(),
        times=bags["time"].dt.epoch("us").to_numpy(),
    )


def _subset_of_previous(bags: pl.DataFrame, n_items: int) -> np.ndarray:
    """Whether each bag's item set is a subset of the same subject's previous bag, with item bitsets."""
    words = (n_items + 64) // 64
    bits = np.zeros((bags.height, words), dtype=np.uint64)
    rows = np.repeat(np.arange(bags.height), bags["n"].to_numpy())
    codes = bags["code"].explode().to_numpy().astype(np.int64)
    np.bitwise_or.at(bits, (rows, codes // 64), np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64)))
    subject = bags["subject_id"].to_numpy()
    same = np.concatenate([[False], subject[1:] == subject[:-1]])
    previous = np.roll(bits, 1, axis=0)
    return same & np.all((bits & ~previous) == 0, axis=1)


class BagWriter:
    """Appends each batch's bags to per-split files as they come, and pads them into the .npy arrays at the end in
    chunks: memory is bounded by a batch and a chunk, not by the number of bags (about 4M on full MIMIC-IV)."""

    FIELDS = {"codes": np.int32, "values": np.float32, "lengths": np.int32, "subject_ids": np.int64, "times": np.int64}
    CHUNK = 1 << 18  # bags padded at a time in close()

    def __init__(self, folder: Path):
        self.folder = folder
        self._files = {}
        self._width = dict.fromkeys(SPLITS, 0)  # the widest batch a split had rows in (the padded width)
        for split in SPLITS:
            (folder / split).mkdir(parents=True, exist_ok=True)
            self._files[split] = {name: open(folder / split / f"_{name}.bin", "wb") for name in self.FIELDS}

    def write(self, bags: Bags, split_of: dict[int, str]) -> None:
        splits = np.array([split_of.get(int(s), "") for s in bags.subject_ids])
        for split in SPLITS:
            rows = np.flatnonzero(splits == split)
            if not rows.size:
                continue
            self._width[split] = max(self._width[split], bags.codes.shape[1])
            files = self._files[split]
            filled = np.arange(bags.codes.shape[1]) < bags.lengths[rows, None]  # the labs, without the padding
            bags.codes[rows][filled].astype(np.int32).tofile(files["codes"])
            bags.values[rows][filled].astype(np.float32).tofile(files["values"])
            for name in ("lengths", "subject_ids", "times"):
                getattr(bags, name)[rows].astype(self.FIELDS[name]).tofile(files[name])

    def close(self) -> dict[str, int]:
        stats = {}
        for split in SPLITS:
            out, width = self.folder / split, self._width[split]
            for handle in self._files[split].values():
                handle.close()
            lengths = np.fromfile(out / "_lengths.bin", dtype=self.FIELDS["lengths"])
            np.save(out / "lengths.npy", lengths)
            for name in ("subject_ids", "times"):  # one number per bag, as lengths: small enough to load
                np.save(out / f"{name}.npy", np.fromfile(out / f"_{name}.bin", dtype=self.FIELDS[name]))
            starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            for name, fill in (("codes", PAD), ("values", np.nan)):
                dtype, shape = self.FIELDS[name], (len(lengths), width)
                if not starts[-1]:  # no bag (a memory map cannot be empty)
                    np.save(out / f"{name}.npy", np.full(shape, fill, dtype=dtype))
                    continue
                flat = np.memmap(out / f"_{name}.bin", dtype=dtype, mode="r")
                padded = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
                for lo in range(0, len(lengths), self.CHUNK):
                    hi = min(lo + self.CHUNK, len(lengths))
                    block = np.full((hi - lo, width), fill, dtype=dtype)
                    block[np.arange(width) < lengths[lo:hi, None]] = flat[starts[lo] : starts[hi]]
                    padded[lo:hi] = block
                padded.flush()
                del padded, flat
            for name in self.FIELDS:
                (out / f"_{name}.bin").unlink()
            stats[split] = int(len(lengths))
        return stats


@dataclass(frozen=True)
class BagSplit:
    """One split's bags, loaded (memory-mapped)."""

    codes: np.ndarray
    values: np.ndarray
    lengths: np.ndarray
    subject_ids: np.ndarray
    times: np.ndarray

    @classmethod
    def open(cls, folder: Path, split: str) -> "BagSplit":
        base = folder / split
        return cls(
            **{
                name: np.load(base / f"{name}.npy", mmap_mode="r")
                for name in ("codes", "values", "lengths", "subject_ids", "times")
            }
        )

    def __len__(self) -> int:
        return len(self.lengths)


BERT_SLOTS = 11  # BERT tokens per item: ten eCDF deciles and "no value"


BAG_WINDOW_US = 24 * 3600 * 1_000_000  # a prediction reads the subject's bags of the 24 h before it


def bags_before(bags: BagSplit, rows: pl.DataFrame, inclusive: bool) -> list[np.ndarray]:
    """For each (subject_id, prediction_time) row, the indices of the subject's bags in the 24 h before the
    prediction time (up to and including it when `inclusive`), in time order."""
    subjects, times = np.asarray(bags.subject_ids), np.asarray(bags.times)
    order = np.lexsort((times, subjects))
    subjects, times = subjects[order], times[order]
    windows = []
    for subject, cut in zip(rows["subject_id"].to_numpy(), rows["prediction_time"].dt.epoch("us").to_numpy()):
        lo, hi = np.searchsorted(subjects, subject, "left"), np.searchsorted(subjects, subject, "right")
        seen = times[lo:hi] <= cut if inclusive else times[lo:hi] < cut
        windows.append(order[lo:hi][seen & (times[lo:hi] >= cut - BAG_WINDOW_US)])
    return windows


def bert_tokens(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """BERT baseline tokens: (code, decile of eCDF) -> 1 + (code - 1) * 11 + decile; a missing value -> decile slot 10.

    0 stays padding; the mask token comes after the last item's tokens (`bert_vocab_size`)."""
    decile = np.where(np.isnan(values), 10, np.minimum((np.nan_to_num(values) * 10).astype(np.int64), 9))
    return np.where(codes > 0, 1 + (codes.astype(np.int64) - 1) * BERT_SLOTS + decile, 0).astype(np.int32)


def bert_vocab_size(items: int) -> int:
    """Padding, 11 tokens per item, then the mask token (id 1 + items * 11)."""
    return 1 + items * BERT_SLOTS + 1
