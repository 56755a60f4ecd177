"""`ehrscale data prepare`: a source (MIMIC-IV or MEDS) -> one prepared-dataset folder.

Layout of PREP:
    events/data/<shard>.parquet      MEDS events, sorted by subject then time
    events/metadata/codes.parquet    descriptions, parent codes, counts
    events/metadata/dataset.json
    events/metadata/subject_splits.parquet
    manifest.json                    source, content hash, split seed, counts, rows dropped by reason

Everything is written to a temporary sibling folder and renamed at the end, so a failed run
leaves no partial PREP behind.
"""

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq

from scaling import __version__
from scaling.data import csv_stream, meds_io, mimic, mimic_tables
from scaling.data.atomic import publish, temporary_sibling
from scaling.data.csv_stream import SourceError
from scaling.data.dataset import FORMAT, MANIFEST
from scaling.data.derive import derive
from scaling.data.labbags import BagConfig, check_lab_codes
from scaling.data.labels import LabelSource, label_files
from scaling.data.tasks import TaskConfig
from scaling.data.timelines import TokenizerConfig

EVENTS = "events"
TARGET_EVENTS_PER_SHARD = 4_000_000
BYTES_PER_EVENT_GZ = 12  # about 12 bytes of gzipped CSV per lab or chart row: sizes the shards up front
BIG_TABLES = ("hosp/labevents", "icu/chartevents")  # the tables that decide how many events there will be


@dataclass(frozen=True)
class PrepareConfig:
    """What `data prepare` was asked to do (recorded in the manifest)."""

    out: Path
    mimic: Path | None = None
    meds: Path | None = None
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    shards: int | None = None
    overwrite: bool = False
    dataset_name: str = "MIMIC-IV"
    tokenizer: TokenizerConfig = TokenizerConfig()
    bags: BagConfig = BagConfig()
    tasks: TaskConfig = TaskConfig()
    events_only: bool = False  # stop after the MEDS events (no timelines, bags or tasks)
    labels: tuple[LabelSource, ...] = ()  # the user's tasks from MEDS label files (--labels NAME=DIR)
    tables: tuple[str, ...] | None = None  # MIMIC-IV tables to read beside patients and admissions; None: all present


class Reporter:
    """Progress callbacks; the CLI gives a rich progress bar, tests and library calls give nothing."""

    def table(self, name: str, total_bytes: int) -> Callable[[int], None]:
        return lambda n: None

    def step(self, text: str) -> None:
        pass


def content_hash(files: list[Path], root: Path) -> str:
    """sha256 over each file's relative name and bytes: identifies the exact source read."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise SourceError(f"--split fractions must be three non-negative numbers adding up to 1, got {fractions}")


def prepare(config: PrepareConfig, reporter: Reporter | None = None) -> dict:
    """Run the ingestion; return the manifest it wrote."""
    reporter = reporter or Reporter()
    if (config.mimic is None) == (config.meds is None):
        raise SourceError("give exactly one source: --mimic DIR (MIMIC-IV csv/csv.gz) or --meds DIR (a MEDS dataset)")
    _check_fractions(config.split_fractions)
    # Everything that can be checked before reading the source is checked first: a mistake fails in a second.
    reason = check_lab_codes(config.bags)
    if reason:
        raise SourceError(reason)
    if config.tables is not None and config.meds is not None:
        raise SourceError("--tables chooses MIMIC-IV tables (with --mimic); a MEDS source is read whole")
    if config.labels and config.events_only:
        raise SourceError("--labels needs the whole preparation: drop --events-only")
    for source in config.labels:
        label_files(source)
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise SourceError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    tmp = temporary_sibling(out)
    started = time.perf_counter()
    try:
        if config.mimic is not None:
            manifest = _from_mimic(config, tmp, reporter)
        else:
            manifest = _from_meds(config, tmp, reporter)
        if not config.events_only:
            manifest.update(
                derive(tmp / EVENTS, tmp, config.tokenizer, config.bags, config.tasks, reporter.step, config.labels)
            )
        manifest["elapsed_seconds"] = round(time.perf_counter() - started, 2)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _read_whole(root: Path, name: str, columns: tuple[str, ...], reporter: Reporter, counts: dict) -> pl.DataFrame:
    table = csv_stream.open_table(root, name, columns, mimic.HINT)
    malformed = [0]
    frames = list(csv_stream.stream(table, columns, malformed, reporter.table(name, table.path.stat().st_size)))
    frame = pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.String for c in columns})
    counts.setdefault(name, mimic.TableCount()).add_malformed(malformed[0])
    return frame


def _from_mimic(config: PrepareConfig, tmp: Path, reporter: Reporter) -> dict:
    root = Path(config.mimic)
    if not root.is_dir():
        raise SourceError(f"--mimic {root}: no such folder. {mimic.HINT}")
    counts: dict[str, mimic.TableCount] = {}
    present = lambda name: any((root / f"{name}{suffix}").is_file() for suffix in (".csv.gz", ".csv"))  # noqa: E731
    chosen, absent = mimic_tables.choose_tables(config.tables, present)
    dictionary_columns = mimic_tables.dictionaries_for(chosen)
    if present(mimic_tables.ITEMS) and set(chosen) & set(mimic_tables.ITEM_TABLES):
        dictionary_columns[mimic_tables.ITEMS] = mimic_tables.ITEMS_COLUMNS  # descriptions of the ICU items
    needed = {
        **dictionary_columns,
        "hosp/patients": mimic.PATIENTS_COLUMNS,
        "hosp/admissions": mimic.ADMISSIONS_COLUMNS,
        **{name: mimic_tables.TABLES[name] for name in chosen},
    }
    # Check every file and header before reading anything, so a wrong folder fails in a second.
    tables = {name: csv_stream.open_table(root, name, cols, mimic.HINT) for name, cols in needed.items()}
    reporter.step("hashing source files")
    source_hash = content_hash([t.path for t in tables.values()], root)

    reporter.step(f"reading and converting {len(tables)} tables")
    dictionaries = {}
    for name, cols in dictionary_columns.items():
        frame = _read_whole(root, name, cols, reporter, counts)
        count = counts[name]
        count.read += frame.height
        count.kept += frame.height
        dictionaries[name] = frame
    labitems = dictionaries.get("hosp/d_labitems", pl.DataFrame({"itemid": []}, schema={"itemid": pl.String}))
    lab_items = labitems.select(mimic.parse_int("itemid")).to_series().drop_nulls()

    patients = _read_whole(root, "hosp/patients", mimic.PATIENTS_COLUMNS, reporter, counts)
    subjects = patients.select(mimic.parse_int("subject_id")).to_series().drop_nulls().unique()
    admissions_raw = _read_whole(root, "hosp/admissions", mimic.ADMISSIONS_COLUMNS, reporter, counts)
    admission_events, admissions = mimic.admission_events(admissions_raw, counts["hosp/admissions"], subjects)
    patient_events = mimic.patient_events(
        patients, counts["hosp/patients"], admissions.filter("died")["subject_id"].unique()
    )
    del admissions_raw, patients

    big = [tables[name].path for name in BIG_TABLES if name in tables]
    size = sum(path.stat().st_size for path in big)
    per_byte = BYTES_PER_EVENT_GZ * (1 if all(path.suffix == ".gz" for path in big) else 8)
    shards = config.shards or max(1, min(512, round(size / per_byte / TARGET_EVENTS_PER_SHARD)))
    writer = meds_io.ShardWriter(tmp / "parts", shards)
    for name, frame in (("hosp/patients", patient_events), ("hosp/admissions", admission_events)):
        writer.write(frame)
        counts[name].events += frame.height
    del patient_events, admission_events

    ctx = mimic.Context(subjects=subjects, admissions=admissions, lab_items=lab_items)
    for rule in mimic_tables.all_rules(ctx, chosen):
        table = tables[rule.name]
        count = counts.setdefault(rule.name, mimic.TableCount())
        malformed = [0]
        for batch in csv_stream.stream(
            table, rule.columns, malformed, reporter.table(rule.name, table.path.stat().st_size)
        ):
            out = rule.convert(batch, count)
            count.events += out.height
            writer.write(out)
        count.add_malformed(malformed[0])

    reporter.step(f"sorting {shards} shard(s) by subject and time")
    shard_ids = writer.close()
    events_root = tmp / EVENTS
    code_counts, total_events = meds_io.finalize_shards(tmp / "parts", events_root / meds.data_subdirectory, shard_ids)
    shutil.rmtree(tmp / "parts")
    subject_ids = (
        pl.concat(
            [
                pl.scan_parquet(p).select("subject_id").unique()
                for p in (events_root / meds.data_subdirectory).glob("*.parquet")
            ]
        )
        .collect()
        .to_series()
        if shard_ids
        else pl.Series("subject_id", [], pl.Int64)
    )
    split_counts = meds_io.write_subject_splits(events_root, subject_ids, config.split_seed, config.split_fractions)
    described = list(mimic.code_descriptions(dictionaries))
    if mimic_tables.ITEMS in dictionaries:
        described.append(mimic_tables.item_descriptions(dictionaries[mimic_tables.ITEMS]))
    descriptions = (
        pl.concat(described)
        if described
        else pl.DataFrame(schema={"prefix": pl.String, "description": pl.String, "parent": pl.String})
    )
    n_codes = meds_io.write_codes(events_root, code_counts, descriptions)
    meds_io.write_dataset_json(events_root, config.dataset_name, "unknown", __version__)
    for name, count in counts.items():
        assert count.read == count.kept + sum(count.dropped.values()), f"row accounting broken for {name}"
    return {
        "format": FORMAT,
        "source": {
            "kind": "mimic",
            "path": str(root.resolve()),
            "content_hash": f"sha256:{source_hash}",
            "files": {n: str(t.path.relative_to(root)) for n, t in tables.items()},
            "tables": {
                "asked": list(config.tables) if config.tables is not None else "all present",
                "read": chosen,
                "absent": absent,
            },
        },
        "split": {
            "seed": config.split_seed,
            "fractions": dict(zip(meds_io.SPLITS, config.split_fractions, strict=True)),
        },
        "counts": {
            "subjects": len(subject_ids),
            "subjects_by_split": split_counts,
            "events": total_events,
            "codes": n_codes,
            "shards": len(shard_ids),
        },
        "tables": {name: counts[name].as_dict() for name in sorted(counts)},
        "ehrscale_version": __version__,
    }


def _from_meds(config: PrepareConfig, tmp: Path, reporter: Reporter) -> dict:
    root = Path(config.meds)
    if not root.is_dir():
        raise SourceError(f"--meds {root}: no such folder (give the MEDS root that holds data/ and metadata/)")
    reporter.step("validating the MEDS dataset")
    try:
        rows = meds_io.validate_meds(root)
    except meds_io.MedsError as error:
        raise SourceError(str(error)) from error
    files = sorted((root / meds.data_subdirectory).rglob("*.parquet")) + sorted((root / "metadata").glob("*"))
    source_hash = content_hash([f for f in files if f.is_file()], root)
    events_root = tmp / EVENTS
    reporter.step("copying the events (core columns in ehrscale's types)")
    columns = meds_io.copy_meds(root, events_root)
    notes = []
    if columns["added"]:
        notes.append(f"optional column(s) {', '.join(columns['added'])} absent from the data: added as nulls")
    if columns["extra"]:
        notes.append(f"extra column(s) {', '.join(columns['extra'])} kept in the events, not used")
    data_files = sorted((events_root / meds.data_subdirectory).rglob("*.parquet"))
    counts = (
        pl.concat(
            [
                pl.scan_parquet(p).group_by("code").agg(count=pl.len(), subject_count=pl.col("subject_id").n_unique())
                for p in data_files
            ]
        )
        .collect()
        .group_by("code")
        .agg(pl.col("count").sum(), pl.col("subject_count").sum())
    )
    subject_ids = (
        pl.concat([pl.scan_parquet(p).select("subject_id").unique() for p in data_files]).collect().to_series()
    )
    split, split_counts, split_notes = _meds_splits(events_root, subject_ids, config)
    notes += split_notes
    had_codes = (events_root / meds.code_metadata_filepath).exists()
    n_codes, described = meds_io.complete_codes(events_root, counts)
    if not had_codes:
        notes.append("metadata/codes.parquet was missing: written from the data")
    elif described < n_codes:
        notes.append(
            f"metadata/codes.parquet described {described:,} of the {n_codes:,} codes in the data: "
            "the rest were added with generic descriptions"
        )
    if not (events_root / meds.dataset_metadata_filepath).exists():
        meds_io.write_dataset_json(events_root, root.name, "unknown", __version__)
        notes.append("metadata/dataset.json was missing: written")
    return {
        "format": FORMAT,
        "source": {"kind": "meds", "path": str(root.resolve()), "content_hash": f"sha256:{source_hash}"},
        "split": split,
        "counts": {
            "subjects": len(subject_ids),
            "subjects_by_split": split_counts,
            "events": sum(rows.values()),
            "codes": n_codes,
            "shards": len(rows),
        },
        "tables": {
            f"data/{name}": {"read": n, "kept": n, "dropped": {}, "events": n, "warnings": {}}
            for name, n in rows.items()
        },
        "notes": notes,
        "ehrscale_version": __version__,
    }


def _meds_splits(events_root: Path, subject_ids: pl.Series, config: PrepareConfig) -> tuple[dict, dict, list[str]]:
    """The dataset's own splits where it has them (subjects it leaves out get the seeded split); ours otherwise.

    Returns the manifest's split section, subjects per split, and notes."""
    path = events_root / meds.subject_splits_filepath
    ours = {"seed": config.split_seed, "fractions": dict(zip(meds_io.SPLITS, config.split_fractions, strict=True))}
    if not path.exists():
        counts = meds_io.write_subject_splits(events_root, subject_ids, config.split_seed, config.split_fractions)
        return ours, counts, ["metadata/subject_splits.parquet was missing: written from the split seed"]
    own = pl.read_parquet(path, columns=["subject_id", "split"]).unique("subject_id", keep="first")
    notes = []
    missing = pl.DataFrame({"subject_id": subject_ids}).join(own, on="subject_id", how="anti")["subject_id"]
    if len(missing):
        notes.append(
            f"{len(missing):,} subject(s) with events are not in metadata/subject_splits.parquet: "
            f"given the seeded split (seed {config.split_seed})"
        )
        extra = pl.DataFrame(
            {"subject_id": missing, "split": meds_io.split_of(missing, config.split_seed, config.split_fractions)}
        )
        own = pl.concat([own, extra]).sort("subject_id")
        path.unlink()  # may be a hard link to the source's file
        pq.write_table(own.to_arrow().cast(meds.SubjectSplitSchema.schema()), path)
    counts = {k: v for k, v in own.group_by("split").len().sort("split").iter_rows()}
    other = {k: v for k, v in counts.items() if k not in meds_io.SPLITS}
    if other:
        notes.append(
            "subjects in split(s) other than train, tuning and held_out are kept in the events but left out of "
            "timelines, bags and evaluation: " + ", ".join(f"{k} {v:,}" for k, v in other.items())
        )
    section = {"source": "the dataset's own metadata/subject_splits.parquet"}
    return (section | ({"seed_for_missing": ours} if len(missing) else {})), counts, notes
