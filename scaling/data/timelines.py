"""Patient timelines: MEDS events -> one token sequence per subject (the decoder family's data).

A timeline is the subject's static context (static codes such as gender, then an age-at-first-event
quantile token) followed by its events in time order. Each event is a code token, preceded by
time-interval tokens when time has passed since the previous event and followed by a value token:
a per-code quantile token (Q1..Q10) for a number, a text token for a text result. Quantiles, age
bins, the vocabulary and frequent texts are all fitted on the train split only.

Storage, per split, in PREP/timelines/<split>/: `tokens.bin` (uint16 or uint32), `times.bin` (int64
microseconds since 1970 of each token; static tokens carry INT64_MIN), `offsets.npy` (int64,
subjects + 1), `subject_ids.npy`, `prefix_lengths.npy` (static context tokens per subject).
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from scaling.data.meds_io import SPLITS

STATIC_TIME = np.iinfo(np.int64).min
MINUTE_US = 60_000_000


@dataclass(frozen=True)
class IntervalScheme:
    """Time-gap tokens: a gap in [bounds[i], bounds[i+1]) minutes gets labels[i]; past the last bound the
    last token repeats once per `repeat_minutes`, at most `max_repeat` times. Gaps under bounds[0]: none."""

    name: str = "ethos13"
    bounds_minutes: tuple[float, ...] = (5, 15, 60, 120, 360, 720, 1440, 4320, 10080, 20160, 43200, 129600, 259200)
    labels: tuple[str, ...] = (
        "5m-15m",
        "15m-1h",
        "1h-2h",
        "2h-6h",
        "6h-12h",
        "12h-1d",
        "1d-3d",
        "3d-1w",
        "1w-2w",
        "2w-1mt",
        "1mt-3mt",
        "3mt-6mt",
        ">6mt",
    )
    repeat_minutes: float = 259200
    max_repeat: int = 10

    def __post_init__(self) -> None:
        if len(self.bounds_minutes) != len(self.labels) or list(self.bounds_minutes) != sorted(self.bounds_minutes):
            raise ValueError("interval scheme: one label per bound, bounds increasing")


@dataclass(frozen=True)
class TokenizerConfig:
    """Every choice that shapes the token stream; recorded in the manifest."""

    quantiles: int = 10
    min_code_count: int = 10  # on train; rarer codes become UNK//<category>
    min_text_count: int = 20  # on train; rarer text results share TXT//RARE
    intervals: IntervalScheme = field(default_factory=IntervalScheme)
    drop_codes: tuple[str, ...] = ("MEDS_BIRTH",)  # birth is carried by the age token
    # Dense codes, found from the data whatever they are named: a code whose train events recur, per subject, at a
    # median gap of at most `dense_minutes` (vital signs charted hourly or more often) keeps only its first event in
    # each clock window of `dense_minutes` in a timeline, so an ICU stay's charting cannot crowd the rest out of the
    # context. Hospital labs (daily, or every few hours in the ICU) are not dense at the default.
    dense_minutes: float = 60.0  # 0: no code is dense, every event is kept


SPECIALS = ("PAD", "AGE//UNK", "TXT//RARE", "UNK//OTHER")


def category(code: pl.Expr) -> pl.Expr:
    """The first part of a code: before the first `//` (MEDS's usual separator: LAB, DIAGNOSIS, ...), else before
    the first `/` (OMOP-style vocabularies: LOINC, SNOMED, ...); a code with neither has no category (OTHER)."""
    return (
        pl.when(code.str.contains("//", literal=True))
        .then(code.str.split("//").list.first())
        .when(code.str.contains("/", literal=True))
        .then(code.str.split("/").list.first())
        .otherwise(pl.lit("OTHER"))
    )


@dataclass(frozen=True)
class Vocabulary:
    """Token strings and ids, fitted on the train split."""

    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    kinds: tuple[str, ...]
    quantiles: pl.DataFrame  # code, q1..q{n-1}
    age_bounds: tuple[float, ...]
    config: TokenizerConfig
    dense_codes: tuple[str, ...] = ()  # the codes thinned in timelines (`find_dense_codes`), sorted

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.size <= np.iinfo(np.uint16).max else np.dtype(np.uint32)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"token_id": np.arange(self.size), "token": self.tokens, "kind": self.kinds, "count": self.counts}
        )

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.frame().write_parquet(folder / "vocab.parquet")
        self.quantiles.write_parquet(folder / "quantiles.parquet")
        (folder / "tokenizer.json").write_text(
            json.dumps(
                {
                    "config": asdict(self.config),
                    "age_bounds": list(self.age_bounds),
                    "vocab_size": self.size,
                    "dtype": self.dtype.name,
                    "dense_codes": list(self.dense_codes),
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def load(cls, folder: Path) -> "Vocabulary":
        meta = json.loads((folder / "tokenizer.json").read_text())
        frame = pl.read_parquet(folder / "vocab.parquet")
        cfg = meta["config"]
        # Prepared before dense codes were found from the data, `dense_categories` named them (CHART, OUTPUT), and
        # `dense_codes` is absent; before that, nothing was thinned (`dense_minutes` absent: 0).
        config = TokenizerConfig(
            **{
                **{k: v for k, v in cfg.items() if k in TokenizerConfig.__dataclass_fields__},
                "intervals": IntervalScheme(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["intervals"].items()}
                ),
                "drop_codes": tuple(cfg["drop_codes"]),
                "dense_minutes": cfg.get("dense_minutes", 0.0),
            }
        )
        return cls(
            tokens=tuple(frame["token"]),
            counts=tuple(frame["count"]),
            kinds=tuple(frame["kind"]),
            quantiles=pl.read_parquet(folder / "quantiles.parquet"),
            age_bounds=tuple(meta["age_bounds"]),
            config=config,
            dense_codes=tuple(meta.get("dense_codes", ())),
        )


def _age_years(events: pl.LazyFrame) -> pl.LazyFrame:
    """Age at first timed event per subject (null where there is no birth event)."""
    birth = events.filter(pl.col("code") == "MEDS_BIRTH").group_by("subject_id").agg(birth=pl.col("time").min())
    first = (
        events.filter(pl.col("time").is_not_null() & (pl.col("code") != "MEDS_BIRTH"))
        .group_by("subject_id")
        .agg(first=pl.col("time").min())
    )
    return first.join(birth, on="subject_id", how="left").select(
        "subject_id", age=(pl.col("first") - pl.col("birth")).dt.total_days() / 365.25
    )


def value_quantiles(numeric: pl.LazyFrame, probs: list[float]) -> pl.DataFrame:
    """Per code, the linear-interpolated quantiles (numpy's and polars' "linear") of its numeric values at `probs`:
    columns code, q1, q2, ...

    Computed from each code's distinct values and their counts (a streaming aggregation), so memory follows the
    distinct values, not the rows: charted vital signs repeat a few hundred values millions of times."""
    counts = (
        numeric.group_by("code", pl.col("numeric_value").cast(pl.Float32).alias("value"))
        .agg(n=pl.len())
        .collect(engine="streaming")
        .sort("code", "value")
    )
    columns = {f"q{i + 1}": [] for i in range(len(probs))}
    schema = {"code": pl.String, **dict.fromkeys(columns, pl.Float32)}
    if counts.is_empty():
        return pl.DataFrame(schema=schema)
    codes = counts["code"].unique(maintain_order=True).to_list()
    bounds = np.flatnonzero(np.r_[True, counts["code"].to_numpy()[1:] != counts["code"].to_numpy()[:-1], True])
    values, n = counts["value"].to_numpy(), counts["n"].to_numpy()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        v, above = values[start:end], np.cumsum(n[start:end])  # above[j]: rows with rank < above[j] have value <= v[j]
        for i, p in enumerate(probs):
            position = p * (above[-1] - 1)
            lo, hi = math.floor(position), math.ceil(position)
            low, high = v[np.searchsorted(above, lo, side="right")], v[np.searchsorted(above, hi, side="right")]
            # In float32, as polars interpolates a Float32 column: the same edges to the last bit.
            columns[f"q{i + 1}"].append(low + (high - low) * np.float32(position - lo))
    return pl.DataFrame({"code": codes, **columns}, schema=schema)


def fit_vocabulary(train: pl.LazyFrame, config: TokenizerConfig, dense_codes: tuple[str, ...] = ()) -> Vocabulary:
    """Fit codes, frequent texts, per-code quantiles and age bins on train-split events (streaming aggregations:
    memory follows the distinct codes, texts and values, not the events); `dense_codes` (from `find_dense_codes`) are
    recorded with them."""
    timed = train.filter(~pl.col("code").is_in(config.drop_codes))
    counts = timed.group_by("code").agg(count=pl.len()).collect(engine="streaming").sort("code")
    kept = counts.filter(pl.col("count") >= config.min_code_count)
    texts = (
        timed.filter(pl.col("numeric_value").is_null() & pl.col("text_value").is_not_null())
        .group_by("text_value")
        .agg(count=pl.len())
        .filter(pl.col("count") >= config.min_text_count)
        .collect(engine="streaming")
        .sort("text_value")
    )
    # An unknown-code token per category common enough on train; rarer categories share UNK//OTHER.
    by_category = counts.group_by(category(pl.col("code")).alias("category")).agg(pl.col("count").sum())
    categories = sorted(
        set(by_category.filter(pl.col("count") >= config.min_code_count)["category"].to_list()) - {"OTHER"}
    )
    probs = [i / config.quantiles for i in range(1, config.quantiles)]
    numeric = timed.filter(pl.col("numeric_value").is_not_null() & pl.col("code").is_in(kept["code"].implode()))
    quantiles = value_quantiles(numeric, probs)
    ages = _age_years(train).collect(engine="streaming")["age"].drop_nulls()
    age_bounds = tuple(float(ages.quantile(p, "linear")) for p in probs) if len(ages) else ()
    n = config.intervals
    tokens = (
        list(SPECIALS) + [f"TIME//{label}" for label in n.labels] + [f"Q{i}" for i in range(1, config.quantiles + 1)]
    )
    tokens += [f"AGE//Q{i}" for i in range(1, config.quantiles + 1)] + [f"UNK//{c}" for c in categories]
    kinds = ["special"] * len(SPECIALS) + ["interval"] * len(n.labels) + ["quantile"] * config.quantiles
    kinds += ["age"] * config.quantiles + ["unknown"] * len(categories)
    token_counts = [0] * len(tokens)
    tokens += kept["code"].to_list()
    kinds += ["code"] * kept.height
    token_counts += kept["count"].to_list()
    tokens += [f"TXT//{t}" for t in texts["text_value"]]
    kinds += ["text"] * texts.height
    token_counts += texts["count"].to_list()
    return Vocabulary(
        tokens=tuple(tokens),
        counts=tuple(token_counts),
        kinds=tuple(kinds),
        quantiles=quantiles,
        age_bounds=age_bounds,
        config=config,
        dense_codes=tuple(sorted(dense_codes)),
    )


def repeat_gaps(events: pl.DataFrame, config: TokenizerConfig) -> pl.DataFrame:
    """Per code: how often one subject's events of it follow each other (`gaps`, positive time gaps only) and how
    many of those gaps are at most `dense_minutes` (`short`). Counts, so shards add up exactly."""
    timed = events.filter(pl.col("time").is_not_null()).select("subject_id", "code", "time")
    ordered = timed.sort("subject_id", "code", "time")
    same = (pl.col("subject_id") == pl.col("subject_id").shift(1)) & (pl.col("code") == pl.col("code").shift(1))
    gap = pl.col("time").dt.epoch("us") - pl.col("time").dt.epoch("us").shift(1)
    return (
        ordered.with_columns(gap=pl.when(same).then(gap))
        .filter(pl.col("gap") > 0)
        .group_by("code")
        .agg(gaps=pl.len(), short=(pl.col("gap") <= int(config.dense_minutes * MINUTE_US)).sum())
    )


def find_dense_codes(gaps: list[pl.DataFrame], config: TokenizerConfig) -> tuple[str, ...]:
    """The codes charted densely on train (from each train shard's `repeat_gaps`): the median gap between one
    subject's events of the code is at most `dense_minutes` (half its gaps or more are), over at least
    `min_code_count` gaps."""
    if config.dense_minutes <= 0 or not gaps:
        return ()
    total = pl.concat(gaps).group_by("code").agg(pl.col("gaps").sum(), pl.col("short").sum())
    dense = total.filter((pl.col("gaps") >= config.min_code_count) & (2 * pl.col("short") >= pl.col("gaps")))
    return tuple(sorted(dense["code"].to_list()))


def thin_dense(events: pl.DataFrame, config: TokenizerConfig, dense_codes: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """The events a timeline keeps of `dense_codes`: per subject and code, the first event of each clock window of
    `dense_minutes` (aligned to the epoch); and how many were left out. Events are sorted by subject then time, so
    the first in a window is the earliest."""
    if not dense_codes or config.dense_minutes <= 0:
        return events, 0
    window = pl.col("time").dt.epoch("us") // int(config.dense_minutes * MINUTE_US)
    dense = pl.col("code").is_in(pl.Series(dense_codes, dtype=pl.String).implode()) & pl.col("time").is_not_null()
    first = pl.struct("subject_id", "code", window).is_first_distinct()  # a hash pass: 7x faster than a window `over`
    kept = events.filter(~dense | first)
    return kept, events.height - kept.height


def tokenize(
    events: pl.DataFrame, vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events of whole subjects (sorted by subject, time; dense codes thinned by `thin_dense`) -> (tokens, times,
    subject_ids, lengths, prefix_lengths)."""
    cfg = vocab.config
    ids = pl.DataFrame({"token": vocab.tokens, "id": np.arange(vocab.size, dtype=np.int64)})
    lookup = dict(zip(vocab.tokens, range(vocab.size)))
    events = events.sort("subject_id", maintain_order=True)
    age = _age_years(events.lazy()).collect()
    events = events.filter(~pl.col("code").is_in(cfg.drop_codes))
    # Code tokens: known codes, else the unknown token of their category (worked out once per distinct code).
    code_ids = (
        events.select(pl.col("code").unique())
        .join(ids, left_on="code", right_on="token", how="left")
        .join(
            ids.rename({"id": "_unk"}),
            left_on=pl.concat_str([pl.lit("UNK//"), category(pl.col("code"))]),
            right_on="token",
            how="left",
        )
        .select("code", id=pl.coalesce("id", "_unk", pl.lit(lookup["UNK//OTHER"])))
    )
    code_id = events["code"].replace_strict(code_ids["code"], code_ids["id"], return_dtype=pl.Int64).to_numpy()
    # Value tokens: the quantile bin of a number within its code; a text result's own token or TXT//RARE.
    q_cols = [c for c in vocab.quantiles.columns if c != "code"]
    with_q = events.select("code", "numeric_value", "text_value").join(
        vocab.quantiles, on="code", how="left", maintain_order="left"
    )
    above = (
        pl.sum_horizontal([(pl.col("numeric_value") > pl.col(c)).cast(pl.Int64) for c in q_cols])
        if q_cols
        else pl.lit(0)
    )
    texts = ids.filter(pl.col("token").str.starts_with("TXT//")).with_columns(pl.col("token").str.slice(5))
    value = with_q.select(
        bin=pl.when(pl.col("numeric_value").is_not_null() & pl.col(q_cols[0] if q_cols else "code").is_not_null()).then(
            above
        ),
        has_text=pl.col("numeric_value").is_null() & pl.col("text_value").is_not_null(),
        text_value="text_value",
    )
    text_id = value.join(texts, left_on="text_value", right_on="token", how="left", maintain_order="left")["id"]
    value_id = np.where(value["bin"].is_not_null().to_numpy(), lookup["Q1"] + value["bin"].fill_null(0).to_numpy(), -1)
    value_id = np.where(value["has_text"].to_numpy(), text_id.fill_null(lookup["TXT//RARE"]).to_numpy(), value_id)

    subject = events["subject_id"].to_numpy()
    time_us = events["time"].dt.epoch("us").fill_null(STATIC_TIME).to_numpy()
    static = time_us == STATIC_TIME
    # Age token after the static events: one per subject.
    subjects, first_index = np.unique(subject, return_index=True)
    age = pl.DataFrame({"subject_id": subjects}).join(age, on="subject_id", how="left")["age"].to_numpy()
    bounds = np.asarray(vocab.age_bounds)
    age_id = np.where(
        np.isnan(age.astype(float)),
        lookup["AGE//UNK"],
        lookup["AGE//Q1"] + np.searchsorted(bounds, np.nan_to_num(age.astype(float)), side="left"),
    )
    # Gaps before each timed event (none for the first timed event of a subject, or at equal times).
    prev_time = np.roll(time_us, 1)
    same_subject = np.concatenate([[False], subject[1:] == subject[:-1]])
    gap_min = np.where(same_subject & ~static & (prev_time != STATIC_TIME), (time_us - prev_time) / MINUTE_US, 0.0)
    iv = cfg.intervals
    bounds_min = np.asarray(iv.bounds_minutes)
    gap_bin = np.searchsorted(bounds_min, gap_min, side="right") - 1
    n_gap = np.where(gap_bin < 0, 0, 1)
    last = gap_bin == len(bounds_min) - 1
    n_gap = np.where(last, np.minimum(np.floor(gap_min / iv.repeat_minutes), iv.max_repeat).astype(np.int64), n_gap)
    gap_id = lookup[f"TIME//{iv.labels[0]}"] + np.maximum(gap_bin, 0)
    has_value = value_id >= 0
    # The age token is inserted as a pseudo-event after each subject's static events.
    n_static = np.bincount(np.searchsorted(subjects, subject[static]), minlength=len(subjects))
    insert_at = first_index + n_static
    code_id = np.insert(code_id, insert_at, age_id)
    time_us = np.insert(time_us, insert_at, STATIC_TIME)
    n_gap = np.insert(n_gap, insert_at, 0)
    gap_id = np.insert(gap_id, insert_at, 0)
    has_value = np.insert(has_value, insert_at, False)
    value_id = np.insert(value_id, insert_at, -1)
    subject = np.insert(subject, insert_at, subjects)
    # Expand events into tokens: [gap x n_gap] code [value].
    per_event = n_gap + 1 + has_value
    start = np.cumsum(per_event) - per_event
    tokens = np.empty(per_event.sum(), dtype=np.int64)
    gap_pos = np.repeat(start, n_gap) + (np.arange(n_gap.sum()) - np.repeat(np.cumsum(n_gap) - n_gap, n_gap))
    tokens[gap_pos] = np.repeat(gap_id, n_gap)
    tokens[start + n_gap] = code_id
    tokens[(start + n_gap + 1)[has_value]] = value_id[has_value]
    times = np.repeat(time_us, per_event)
    token_subject = np.repeat(subject, per_event)
    lengths = np.bincount(np.searchsorted(subjects, token_subject), minlength=len(subjects))
    prefix = n_static + 1
    return tokens.astype(vocab.dtype), times, subjects, lengths, prefix


class TimelineWriter:
    """Appends tokenised subjects to per-split files."""

    def __init__(self, folder: Path, dtype: np.dtype):
        self.folder = folder
        self.dtype = dtype
        self._files = {}
        self._meta = {s: {"subject_ids": [], "lengths": [], "prefix": []} for s in SPLITS}
        for split in SPLITS:
            (folder / split).mkdir(parents=True, exist_ok=True)
            self._files[split] = (open(folder / split / "tokens.bin", "wb"), open(folder / split / "times.bin", "wb"))

    def write(self, tokens, times, subjects, lengths, prefix, split_of: dict[int, str]) -> None:
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        splits = np.array([split_of.get(int(s), "") for s in subjects])  # other splits: not written
        for split in SPLITS:
            rows = np.flatnonzero(splits == split)
            if not rows.size:
                continue
            index = np.concatenate([np.arange(bounds[r], bounds[r + 1]) for r in rows])
            tok_file, time_file = self._files[split]
            tokens[index].astype(self.dtype).tofile(tok_file)
            times[index].astype(np.int64).tofile(time_file)
            self._meta[split]["subject_ids"].append(subjects[rows])
            self._meta[split]["lengths"].append(lengths[rows])
            self._meta[split]["prefix"].append(prefix[rows])

    def close(self) -> dict[str, dict[str, int]]:
        stats = {}
        for split in SPLITS:
            for handle in self._files[split]:
                handle.close()
            meta = self._meta[split]
            lengths = np.concatenate(meta["lengths"]) if meta["lengths"] else np.zeros(0, np.int64)
            np.save(self.folder / split / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            np.save(
                self.folder / split / "subject_ids.npy",
                np.concatenate(meta["subject_ids"]) if meta["subject_ids"] else np.zeros(0, np.int64),
            )
            np.save(
                self.folder / split / "prefix_lengths.npy",
                (np.concatenate(meta["prefix"]) if meta["prefix"] else np.zeros(0)).astype(np.int32),
            )
            stats[split] = {"subjects": int(len(lengths)), "tokens": int(lengths.sum())}
        return stats


@dataclass(frozen=True)
class Timelines:
    """One split's timelines, memory-mapped."""

    tokens: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    subject_ids: np.ndarray
    prefix_lengths: np.ndarray

    @classmethod
    def open(cls, folder: Path, split: str, dtype: np.dtype) -> "Timelines":
        base = folder / split
        n = np.load(base / "offsets.npy")[-1]

        def memmap(name: str, dt) -> np.ndarray:
            return np.memmap(base / name, dtype=dt, mode="r", shape=(int(n),)) if n else np.zeros(0, dt)

        return cls(
            tokens=memmap("tokens.bin", dtype),
            times=memmap("times.bin", np.int64),
            offsets=np.load(base / "offsets.npy"),
            subject_ids=np.load(base / "subject_ids.npy"),
            prefix_lengths=np.load(base / "prefix_lengths.npy"),
        )

    def __len__(self) -> int:
        return len(self.subject_ids)

    def subject(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return np.asarray(self.tokens[lo:hi]), np.asarray(self.times[lo:hi])

    def history(self, index: int, cut_us: int, inclusive: bool = False) -> np.ndarray:
        """The subject's tokens before a time, or at or before it when `inclusive` (static context always in)."""
        tokens, times = self.subject(index)
        return tokens[times <= cut_us] if inclusive else tokens[times < cut_us]

    def future(self, index: int, cut_us: int, inclusive: bool = False) -> np.ndarray:
        """The subject's tokens that its `history` at this time leaves out: what actually came after."""
        tokens, times = self.subject(index)
        return tokens[times > cut_us] if inclusive else tokens[times >= cut_us]

    def histories(
        self,
        subject_ids: np.ndarray,
        cuts_us: np.ndarray,
        inclusive: bool = False,
        future: bool = False,
    ) -> tuple[list[np.ndarray], list[int], np.ndarray]:
        """Per cohort row (a subject and a cut): its history (`history`; with `future`, what came after instead),
        its static context's length, and which rows' subjects have a timeline here (the lists hold those rows
        only)."""
        index = {int(s): i for i, s in enumerate(self.subject_ids)}
        keep = np.array([int(s) in index for s in subject_ids], bool)
        read = self.future if future else self.history
        out, prefixes = [], []
        for subject, cut in zip(np.asarray(subject_ids)[keep], np.asarray(cuts_us)[keep], strict=True):
            i = index[int(subject)]
            out.append(read(i, int(cut), inclusive))
            prefixes.append(int(self.prefix_lengths[i]))
        return out, prefixes, keep


def fit_history(history: np.ndarray, prefix: int, room: int) -> np.ndarray:
    """A history in at most `room` tokens: its static context (`prefix` tokens) and its latest tokens, as a long
    timeline's pieces were given to training (the probe and the sampler cut it so)."""
    if len(history) <= room:
        return history
    if prefix >= room:
        raise ValueError(f"a static context of {prefix} tokens leaves no room in {room}")
    return np.concatenate([history[:prefix], history[len(history) - (room - prefix) :]])
