"""MEDS on disk: sharded event writing, the metadata files, subject splits, and validation.

Events are spread over shards by subject while the source streams; each shard is then sorted by
(subject_id, time) on its own, so memory is bounded by the largest shard, not the dataset.
"""

import json
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = (meds.train_split, meds.tuning_split, meds.held_out_split)
_SPLIT_HASH_SEED = 0x5EED


class MedsError(Exception):
    """A MEDS dataset that does not follow the standard; the message names the file and the problem."""


def arrow_schema(extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The event schema on disk: MEDS core columns, then hadm_id."""
    fields = [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("text_value", pa.large_string()),
        ("hadm_id", pa.int64()),
    ]
    return pa.schema(fields + list((extra or {}).items()))


class ShardWriter:
    """Appends events to per-shard part files (one row group per write) under `parts/`."""

    def __init__(self, folder: Path, shards: int):
        self.folder = folder
        self.shards = shards
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[int, pq.ParquetWriter] = {}
        self.schema = arrow_schema()

    def write(self, events: pl.DataFrame) -> None:
        if events.is_empty():
            return
        events = events.with_columns(_shard=pl.col("subject_id") % self.shards)
        for (shard,), part in events.partition_by("_shard", as_dict=True).items():
            writer = self._writers.get(shard)
            if writer is None:
                writer = pq.ParquetWriter(self.folder / f"{shard}.parquet", self.schema, compression="lz4")
                self._writers[shard] = writer
            writer.write_table(part.drop("_shard").to_arrow().cast(self.schema))

    def close(self) -> list[int]:
        for writer in self._writers.values():
            writer.close()
        return sorted(self._writers)


def finalize_shards(parts: Path, data: Path, shards: list[int]) -> tuple[pl.DataFrame, int]:
    """Sort each shard by subject and time into data/<k>.parquet; return code counts and event total."""
    data.mkdir(parents=True, exist_ok=True)
    counts = []
    total = 0
    for shard in shards:
        frame = pl.read_parquet(parts / f"{shard}.parquet")
        # Static facts (null time) first, then time order; code breaks ties so output is deterministic.
        frame = frame.sort(["subject_id", "time", "code"], nulls_last=False)
        pq.write_table(frame.to_arrow().cast(arrow_schema()), data / f"{shard}.parquet", compression="zstd")
        counts.append(frame.group_by("code").agg(count=pl.len(), subject_count=pl.col("subject_id").n_unique()))
        total += frame.height
        (parts / f"{shard}.parquet").unlink()
        del frame
    merged = pl.concat(counts).group_by("code").agg(pl.col("count").sum(), pl.col("subject_count").sum())
    return merged.sort("code"), total


def split_of(subject_ids: pl.Series, seed: int, fractions: tuple[float, float, float]) -> pl.Series:
    """train / tuning / held_out for each subject, from a seeded hash: stable whatever the order or shard."""
    u = (subject_ids.hash(seed=_SPLIT_HASH_SEED + seed) % 1_000_000).cast(pl.Float64) / 1_000_000
    train, tuning = fractions[0], fractions[0] + fractions[1]
    return (
        pl.select(
            pl.when(u < train)
            .then(pl.lit(SPLITS[0]))
            .when(u < tuning)
            .then(pl.lit(SPLITS[1]))
            .otherwise(pl.lit(SPLITS[2]))
            .alias("split")
        ).to_series()
        if len(u)
        else pl.Series("split", [], pl.String)
    )


def write_subject_splits(
    root: Path, subject_ids: pl.Series, seed: int, fractions: tuple[float, float, float]
) -> dict[str, int]:
    subjects = subject_ids.unique().sort()
    frame = pl.DataFrame({"subject_id": subjects, "split": split_of(subjects, seed, fractions)})
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(frame.to_arrow().cast(meds.SubjectSplitSchema.schema()), root / meds.subject_splits_filepath)
    return dict(Counter(frame["split"].to_list()))


def write_codes(root: Path, counts: pl.DataFrame, descriptions: pl.DataFrame) -> int:
    """metadata/codes.parquet: every code in the data with description, parent codes and counts."""
    # Item codes (LAB//<itemid>//<unit>, and the ICU tables' CHART, INPUT, INPUT_START, OUTPUT) are described by
    # their item whatever the unit; other codes by themselves.
    item = pl.col("code").str.extract(r"^((?:LAB|CHART|INPUT|INPUT_START|OUTPUT)//[^/]*//)", 1)
    key = pl.coalesce(item, pl.col("code"))
    joined = counts.with_columns(prefix=key).join(descriptions.unique("prefix", keep="first"), on="prefix", how="left")
    frame = joined.select(
        "code",
        description=pl.coalesce(pl.col("description"), _generic_description()),
        parent_codes=pl.when(pl.col("parent").is_not_null()).then(pl.concat_list(pl.col("parent"))),
        count=pl.col("count").cast(pl.Int64),
        subject_count=pl.col("subject_count").cast(pl.Int64),
    ).sort("code")
    schema = (
        meds.CodeMetadataSchema.schema()
        .append(pa.field("count", pa.int64()))
        .append(pa.field("subject_count", pa.int64()))
    )
    pq.write_table(frame.to_arrow().cast(schema), root / meds.code_metadata_filepath)
    return frame.height


def _generic_description() -> pl.Expr:
    code = pl.col("code")
    rest = code.str.split("//").list.slice(1).list.join(" / ")
    return (
        pl.when(code == "MEDS_BIRTH")
        .then(pl.lit("Birth"))
        .when(code == "MEDS_DEATH")
        .then(pl.lit("Death"))
        .when(code.str.starts_with("GENDER//"))
        .then(pl.concat_str([pl.lit("Gender: "), rest]))
        .when(code.str.starts_with("HOSPITAL_ADMISSION//"))
        .then(pl.concat_str([pl.lit("Hospital admission: "), rest]))
        .when(code.str.starts_with("HOSPITAL_DISCHARGE//"))
        .then(pl.concat_str([pl.lit("Hospital discharge to: "), rest]))
        .when(code.str.starts_with("ICU_ADMISSION//"))
        .then(pl.concat_str([pl.lit("ICU admission: "), rest]))
        .when(code == "ICU_DISCHARGE")
        .then(pl.lit("ICU discharge"))
        .when(code.str.starts_with("TRANSFER_TO//"))
        .then(pl.concat_str([pl.lit("Transfer: "), rest]))
        .when(code.str.starts_with("MEDICATION//"))
        .then(pl.concat_str([pl.lit("Medication: "), rest]))
        .when(code.str.starts_with("MEDICATION_GIVEN//"))
        .then(pl.concat_str([pl.lit("Medication given: "), rest]))
        .when(code.str.starts_with("OMR//"))
        .then(pl.concat_str([pl.lit("Outpatient measurement: "), rest]))
        .when(code.str.starts_with("MICRO//"))
        .then(pl.concat_str([pl.lit("Microbiology: "), rest]))
        .when(code.str.starts_with("DRG//"))
        .then(pl.concat_str([pl.lit("DRG: "), rest]))
        .otherwise(code)
    )


def write_dataset_json(root: Path, name: str, version: str, etl_version: str) -> None:
    metadata = {
        "dataset_name": name,
        "dataset_version": version,
        "etl_name": "ehrscale",
        "etl_version": etl_version,
        "meds_version": meds.__version__,
        "created_at": datetime.now(UTC).isoformat(),
        "raw_source_id_columns": ["hadm_id"],
    }
    meds.DatasetMetadataSchema.validate(metadata)
    (root / meds.dataset_metadata_filepath).write_text(json.dumps(metadata, indent=2) + "\n")


def validate_meds(root: Path) -> dict[str, int]:
    """Check a MEDS folder against the `meds` schemas and its ordering rules; return events per shard."""
    data = root / meds.data_subdirectory
    files = sorted(data.rglob("*.parquet")) if data.is_dir() else []
    if not files:
        raise MedsError(f"{data}: no parquet shards (a MEDS dataset keeps its events in data/*.parquet)")
    rows = {}
    seen_subjects: dict[int, str] = {}
    for path in files:
        schema = pq.read_schema(path)
        # string and large_string hold the same text (polars writes large_string): compare them as one type.
        empty = schema.empty_table()
        empty = empty.cast(
            pa.schema(
                [
                    f.with_type(pa.string())
                    if f.name == "code" and f.type == pa.large_string()
                    else f.with_type(pa.large_string())
                    if f.name == "text_value" and f.type == pa.string()
                    else f
                    for f in schema
                ]
            )
        )
        try:
            meds.DataSchema.validate(empty)
        except Exception as error:
            raise MedsError(f"{path}: not a MEDS data shard: {error}") from error
        check = (
            pl.scan_parquet(path)
            .select(
                rows=pl.len(),
                null_subject=pl.col("subject_id").null_count(),
                null_code=pl.col("code").null_count(),
                unsorted_subject=(pl.col("subject_id").diff() < 0).sum(),
                unsorted_time=(
                    (pl.col("time").diff() < pl.duration(microseconds=0)) & (pl.col("subject_id").diff() == 0)
                ).sum(),
            )
            .collect()
        )
        stats = check.row(0, named=True)
        for column in ("null_subject", "null_code", "unsorted_subject", "unsorted_time"):
            if stats[column]:
                what = column.replace("_", " ")
                raise MedsError(
                    f"{path}: {stats[column]} rows with {what} "
                    "(MEDS needs non-null subject_id and code, sorted by subject_id then time)"
                )
        for subject in pl.scan_parquet(path).select(pl.col("subject_id").unique()).collect().to_series().to_list():
            if subject in seen_subjects:
                raise MedsError(
                    f"{path}: subject {subject} also appears in {seen_subjects[subject]} "
                    "(MEDS keeps a subject in one shard)"
                )
            seen_subjects[subject] = str(path.relative_to(root))
        rows[str(path.relative_to(data))] = stats["rows"]
    splits = root / meds.subject_splits_filepath
    if splits.exists():
        try:
            meds.SubjectSplitSchema.validate(_small_strings(pq.read_table(splits)))
        except Exception as error:
            raise MedsError(f"{splits}: not a MEDS subject split table: {error}") from error
    codes = root / meds.code_metadata_filepath
    if codes.exists():
        try:
            meds.CodeMetadataSchema.validate(_small_strings(pq.read_table(codes)))
        except Exception as error:
            raise MedsError(f"{codes}: not a MEDS code metadata table: {error}") from error
    return rows


# The MEDS event columns as ehrscale keeps them; text_value is optional in MEDS and added (null) when absent.
CORE_TYPES = {
    "subject_id": pa.int64(),
    "time": pa.timestamp("us"),
    "code": pa.string(),
    "numeric_value": pa.float32(),
    "text_value": pa.large_string(),
}
OPTIONAL = ("numeric_value", "text_value")


def normalise_shard(source: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy one MEDS shard with the core columns in ehrscale's types (absent optional ones added as nulls), then
    any extra columns as they are; a hard link when it already is so. Returns (columns added, extra columns)."""
    schema = pq.read_schema(source)
    names = schema.names
    added = [c for c in CORE_TYPES if c not in names]
    extra = [c for c in names if c not in CORE_TYPES]
    target = pa.schema([(c, t) for c, t in CORE_TYPES.items()] + [schema.field(c) for c in extra])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not added and schema.remove_metadata().equals(target):
        _link_or_copy(str(source), str(dest))
        return added, extra
    with pq.ParquetWriter(dest, target, compression="zstd") as writer:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=1 << 20):
            columns = [
                batch.column(c).cast(t) if c in names else pa.nulls(batch.num_rows, t) for c, t in CORE_TYPES.items()
            ]
            writer.write_table(pa.Table.from_arrays(columns + [batch.column(c) for c in extra], schema=target))
    return added, extra


def _small_strings(table: pa.Table) -> pa.Table:
    """large_string (what polars writes) as string, also inside lists: the same text, compared as one type."""
    fields = [
        f.with_type(pa.string())
        if f.type == pa.large_string()
        else f.with_type(pa.list_(pa.string()))
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def copy_meds(source: Path, dest: Path) -> dict[str, list[str]]:
    """Copy a MEDS folder's data/ (normalised shard by shard, nested folders kept) and metadata/; report the
    optional columns added and the extra columns kept, each with the shards concerned."""
    seen: dict[str, list[str]] = {"added": [], "extra": []}
    for path in sorted((source / meds.data_subdirectory).rglob("*.parquet")):
        relative = path.relative_to(source)
        added, extra = normalise_shard(path, dest / relative)
        seen["added"] += [c for c in added if c not in seen["added"]]
        seen["extra"] += [c for c in extra if c not in seen["extra"]]
    if (source / "metadata").is_dir():
        shutil.copytree(source / "metadata", dest / "metadata", copy_function=_link_or_copy)
    return seen


def complete_codes(root: Path, counts: pl.DataFrame) -> tuple[int, int]:
    """Rewrite metadata/codes.parquet to cover every code in the data (with counts): the dataset's own rows
    where it has them (its descriptions and parent codes), a generic description otherwise. Returns
    (codes in the data, codes the dataset described)."""
    path = root / meds.code_metadata_filepath
    schema = {"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)}
    own = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=schema)
    # description and parent_codes are optional in MEDS: absent, they are nulls
    own = own.select(
        [pl.col(c).cast(t) if c in own.columns else pl.lit(None, dtype=t).alias(c) for c, t in schema.items()]
    ).unique("code", keep="first")
    described = counts.join(own, on="code", how="semi").height
    frame = (
        counts.join(own, on="code", how="left")
        .select(
            "code",
            description=pl.coalesce(pl.col("description"), _generic_description()),
            parent_codes="parent_codes",
            count=pl.col("count").cast(pl.Int64),
            subject_count=pl.col("subject_count").cast(pl.Int64),
        )
        .sort("code")
    )
    schema = (
        meds.CodeMetadataSchema.schema()
        .append(pa.field("count", pa.int64()))
        .append(pa.field("subject_count", pa.int64()))
    )
    if path.exists():
        path.unlink()  # may be a hard link to the source's file: never write through it
    pq.write_table(frame.to_arrow().cast(schema), path)
    return frame.height, described


def _link_or_copy(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
