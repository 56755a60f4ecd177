"""MIMIC-IV -> MEDS: valid MEDS, every row accounted for, clear errors, nothing partial left behind."""

import gzip
import shutil

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.csv_stream import SourceError
from scaling.data.meds_io import validate_meds
from scaling.data.prepare import PrepareConfig, prepare
from tests.helpers import read_csv_gz


def events(prep) -> pl.DataFrame:
    return pl.read_parquet(prep / "events" / "data" / "*.parquet")


def test_outputs_are_valid_meds(prepared):
    prep, manifest = prepared
    root = prep / "events"
    rows = validate_meds(root)
    assert sum(rows.values()) == manifest["counts"]["events"]
    for shard in (root / "data").glob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(shard))
    meds.CodeMetadataSchema.validate(pq.read_table(root / meds.code_metadata_filepath))
    meds.SubjectSplitSchema.validate(pq.read_table(root / meds.subject_splits_filepath))
    import json

    meds.DatasetMetadataSchema.validate(json.loads((root / meds.dataset_metadata_filepath).read_text()))


def test_event_codes_follow_the_mapping(prepared, synth):
    prep, _ = prepared
    ev = events(prep)
    codes = set(ev["code"].unique())
    assert {"MEDS_BIRTH", "MEDS_DEATH", "ICU_DISCHARGE", "LAB//50912//mg/dL", "LAB//51237//UNK"} <= codes
    assert {c.split("//")[0] for c in codes} >= {
        "GENDER",
        "HOSPITAL_ADMISSION",
        "HOSPITAL_DISCHARGE",
        "ICU_ADMISSION",
        "DIAGNOSIS",
        "PROCEDURE",
        "MEDICATION",
        "LAB",
        "TRANSFER_TO",
    }
    assert "HOSPITAL_DISCHARGE//DIED" in codes
    assert any(c.startswith("DIAGNOSIS//ICD//9//") for c in codes) and any(
        c.startswith("DIAGNOSIS//ICD//10//") for c in codes
    )
    # Gender is static (no time); labs carry their number or their text.
    assert (
        ev.filter(pl.col("code").str.starts_with("GENDER//"))["time"].null_count()
        == read_csv_gz(synth, "hosp/patients").height
    )
    labs = ev.filter(pl.col("code").str.starts_with("LAB//"))
    assert (labs["numeric_value"].is_null() == labs["text_value"].is_not_null()).all()
    assert labs.filter(pl.col("text_value") == "___").height > 0
    # Diagnoses are timed at the admission's discharge.
    adm = read_csv_gz(synth, "hosp/admissions").select(
        pl.col("hadm_id").cast(pl.Int64), disch=pl.col("dischtime").str.strptime(pl.Datetime("us"), "%Y-%m-%d %H:%M:%S")
    )
    dx = ev.filter(pl.col("code").str.starts_with("DIAGNOSIS//")).join(adm, on="hadm_id")
    assert (dx["time"] == dx["disch"]).all()


def test_events_sorted_and_subjects_in_one_shard(prepared):
    prep, manifest = prepared
    shards = sorted((prep / "events" / "data").glob("*.parquet"))
    assert len(shards) == 2 == manifest["counts"]["shards"]
    seen = set()
    for shard in shards:
        frame = pl.read_parquet(shard)
        assert frame.equals(frame.sort(["subject_id", "time"], nulls_last=False, maintain_order=True))
        subjects = set(frame["subject_id"].unique())
        assert not subjects & seen
        seen |= subjects


def test_splits_are_by_subject_and_seeded(prepared, tmp_path, synth):
    prep, manifest = prepared
    splits = pl.read_parquet(prep / "events" / meds.subject_splits_filepath)
    assert splits["subject_id"].is_unique().all()
    assert set(splits["subject_id"]) == set(events(prep)["subject_id"].unique())
    share = splits["split"].value_counts(normalize=True)
    train = share.filter(pl.col("split") == "train")["proportion"].item()
    assert 0.72 < train < 0.88
    assert manifest["split"] == {"seed": 0, "fractions": {"train": 0.8, "tuning": 0.1, "held_out": 0.1}}
    other = prepare(PrepareConfig(out=tmp_path / "p", mimic=synth, split_seed=1))
    assert not pl.read_parquet(tmp_path / "p" / "events" / meds.subject_splits_filepath).equals(splits)
    assert other["counts"]["events"] == manifest["counts"]["events"]


def test_manifest_accounts_for_every_row(prepared, synth):
    _, manifest = prepared
    assert manifest["source"]["content_hash"].startswith("sha256:")
    for name, count in manifest["tables"].items():
        assert count["read"] == count["kept"] + sum(count["dropped"].values()), name
        assert count["read"] == read_csv_gz(synth, name).height, name  # clean data: every row read and kept
        if name == "hosp/emar":  # but only the administrations of emar's charted doses become events
            not_given = read_csv_gz(synth, name).filter(pl.col("event_txt") != "Administered").height
            assert count["dropped"] == {"not an administration (event_txt)": not_given} and not_given > 0
        else:
            assert count["dropped"] == {}, name
    assert manifest["counts"]["subjects"] == read_csv_gz(synth, "hosp/patients").height


def test_codes_metadata_has_descriptions(prepared):
    prep, manifest = prepared
    codes = pl.read_parquet(prep / "events" / meds.code_metadata_filepath)
    assert codes.height == manifest["counts"]["codes"]
    assert codes["count"].sum() == manifest["counts"]["events"]
    creat = codes.filter(pl.col("code") == "LAB//50912//mg/dL").row(0, named=True)
    assert creat["description"] == "Creatinine (Blood, Chemistry)"
    dx = codes.filter(pl.col("code") == "DIAGNOSIS//ICD//10//I10").row(0, named=True)
    assert dx["description"] == "Essential (primary) hypertension" and dx["parent_codes"] == ["ICD10CM/I10"]
    assert codes["description"].null_count() == 0


def _rewrite(path, edit) -> None:
    with gzip.open(path, "rt", newline="") as handle:
        text = handle.read()
    with gzip.open(path, "wt", newline="") as handle:
        handle.write(edit(text))


@pytest.fixture()
def broken(synth, tmp_path):
    """The synthetic MIMIC-IV with bad rows planted in labevents, admissions and diagnoses."""
    root = tmp_path / "broken"
    shutil.copytree(synth, root)
    labs = read_csv_gz(synth, "hosp/labevents")
    subject = labs["subject_id"][0]
    good = f"900000001,{subject},,1,50912,,2150-01-01 10:00:00,,1.0,1.0,mg/dL,0.5,1.2,,,"
    bad_lines = [
        good.replace("2150-01-01 10:00:00", "2180-13-45 25:00:00"),  # impossible time
        good.replace("2150-01-01 10:00:00", ""),  # no time
        good.replace(",50912,", ",99999,"),  # unknown item
        good.replace(f",{subject},", ",19999999,"),  # unknown subject
        good.replace(f",{subject},", ",,"),  # no subject
        good.replace(",1.0,1.0,", ",1.2345,abc,"),  # non-numeric valuenum: value read as the number instead
        good.replace(",1.0,1.0,", ',5",,'),  # a quote inside an unquoted field: kept as text
        "900000009,123,,2",  # truncated line
        good[:-1] + '"unclosed comment, never ends',  # stray quote at the end of the file
    ]
    _rewrite(root / "hosp/labevents.csv.gz", lambda t: t + "\n".join(bad_lines) + "\n")
    adm = read_csv_gz(synth, "hosp/admissions")
    first = ",".join("" if v is None else str(v) for v in adm.row(0))
    _rewrite(
        root / "hosp/admissions.csv.gz",
        lambda t: (
            t
            + first
            + "\n"  # duplicate hadm_id
            + first.replace(str(adm["hadm_id"][0]), "29999998").replace(adm["admittime"][0], "yesterday")
            + "\n"
        ),
    )
    _rewrite(root / "hosp/diagnoses_icd.csv.gz", lambda t: t + f"{subject},29999999,1,I10,10\n")
    return root


@pytest.mark.faults
def test_broken_rows_are_counted_by_reason(broken, synth, tmp_path):
    manifest = prepare(PrepareConfig(out=tmp_path / "prep", mimic=broken))
    labs = manifest["tables"]["hosp/labevents"]
    n = read_csv_gz(synth, "hosp/labevents").height
    assert labs["dropped"] == {
        "unparseable charttime": 1,
        "missing charttime": 1,
        "unknown itemid": 1,
        "unknown subject": 1,
        "missing subject_id": 1,
        "malformed line": 2,
    }
    assert labs["read"] == n + 9 and labs["kept"] == n + 2
    assert labs["warnings"] == {"valuenum not a number (value parsed instead)": 1}
    adm = manifest["tables"]["hosp/admissions"]
    assert adm["dropped"] == {"duplicate hadm_id": 1, "unparseable admittime": 1}
    assert manifest["tables"]["hosp/diagnoses_icd"]["dropped"] == {"unknown admission": 1}
    for name, count in manifest["tables"].items():
        assert count["read"] == count["kept"] + sum(count["dropped"].values()), name
    ev = events(tmp_path / "prep")
    assert ev.filter((pl.col("numeric_value") - 1.2345).abs() < 1e-5).height == 1
    assert ev.filter(pl.col("text_value") == '5"').height == 1


def test_plain_csv_and_upper_case_columns_are_read(synth, tmp_path, prepared):
    root = tmp_path / "plain"
    shutil.copytree(synth, root)
    for path in list(root.rglob("*.csv.gz")):
        with gzip.open(path, "rb") as src, open(path.with_suffix(""), "wb") as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
    labs = root / "hosp/labevents.csv"
    text = labs.read_text()
    header, rest = text.split("\n", 1)
    labs.write_text(header.upper() + "\n" + rest)
    manifest = prepare(PrepareConfig(out=tmp_path / "prep", mimic=root, shards=2))
    assert manifest["counts"]["events"] == prepared[1]["counts"]["events"]
    assert events(tmp_path / "prep").equals(events(prepared[0]))


def test_column_order_and_extra_columns_do_not_matter(synth, tmp_path, prepared):
    """Releases differ in extra columns and order (v2.2 vs v3.x): only the needed columns are read, by name."""
    root = tmp_path / "v3"
    shutil.copytree(synth, root)
    admissions = read_csv_gz(synth, "hosp/admissions")
    shuffled = admissions.select(list(reversed(admissions.columns))).with_columns(new_v3_column=pl.lit("x"))
    with gzip.open(root / "hosp/admissions.csv.gz", "wb") as handle:
        shuffled.write_csv(handle)
    prepare(PrepareConfig(out=tmp_path / "prep", mimic=root, shards=2))
    assert events(tmp_path / "prep").equals(events(prepared[0]))


@pytest.mark.faults
def test_missing_file_names_the_file_and_what_to_pass(synth, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(synth, root)
    (root / "hosp/admissions.csv.gz").unlink()
    with pytest.raises(
        SourceError,
        match=r"missing table hosp/admissions: neither .*admissions.csv.gz nor .*admissions.csv exists\. "
        r"Pass --mimic",
    ):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind


@pytest.mark.faults
def test_a_table_asked_for_must_be_there_and_an_absent_one_is_recorded(synth, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(synth, root)
    (root / "hosp/prescriptions.csv.gz").unlink()
    with pytest.raises(SourceError, match=r"--tables asks for hosp/prescriptions, which the source does not have"):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root, tables=("labevents", "prescriptions")))
    with pytest.raises(SourceError, match=r"--tables: unknown table\(s\) notes; the tables ehrscale reads are icu"):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root, tables=("notes",)))
    manifest = prepare(PrepareConfig(out=tmp_path / "out", mimic=root, events_only=True))
    assert manifest["source"]["tables"]["absent"] == ["hosp/prescriptions"]
    assert "hosp/prescriptions" not in manifest["tables"] and "hosp/prescriptions" not in manifest["source"]["files"]
    assert not events(tmp_path / "out").filter(pl.col("code").str.starts_with("MEDICATION//")).height


@pytest.mark.faults
def test_missing_column_names_the_file_and_the_column(synth, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(synth, root)
    _rewrite(root / "hosp/labevents.csv.gz", lambda t: t.replace(",valuenum,", ",valuenumber,", 1))
    with pytest.raises(SourceError, match=r"labevents.csv.gz: missing column 'valuenum' \(the file has: .*valuenumber"):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root))
    assert not (tmp_path / "out").exists()


@pytest.mark.faults
def test_cli_reports_user_errors_without_traceback(tmp_path):
    result = CliRunner().invoke(
        app, ["data", "prepare", "--mimic", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "no such folder" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["data", "prepare", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "give exactly one source" in result.output


def test_existing_output_is_refused_unless_overwrite(prepared, synth):
    prep, _ = prepared
    with pytest.raises(SourceError, match="already exists; pass --overwrite"):
        prepare(PrepareConfig(out=prep, mimic=synth))


def test_meds_source_is_validated_and_used_as_is(prepared, tmp_path):
    prep, manifest = prepared
    out = tmp_path / "from_meds"
    again = prepare(PrepareConfig(out=out, meds=prep / "events"))
    assert again["source"]["kind"] == "meds"
    assert again["counts"]["events"] == manifest["counts"]["events"]
    assert again["split"] == {"source": "the dataset's own metadata/subject_splits.parquet"}
    assert events(out).equals(events(prep))


def test_meds_source_without_metadata_gets_splits(prepared, tmp_path):
    prep, manifest = prepared
    source = tmp_path / "bare"
    shutil.copytree(prep / "events" / "data", source / "data")
    out = prepare(PrepareConfig(out=tmp_path / "o", meds=source, split_seed=3))
    assert out["split"]["seed"] == 3
    assert out["notes"] == [
        "extra column(s) hadm_id kept in the events, not used",
        "metadata/subject_splits.parquet was missing: written from the split seed",
        "metadata/codes.parquet was missing: written from the data",
        "metadata/dataset.json was missing: written",
    ]
    validate_meds(tmp_path / "o" / "events")


def test_invalid_meds_is_refused_with_the_file(prepared, tmp_path):
    source = tmp_path / "bad"
    (source / "data").mkdir(parents=True)
    pl.DataFrame({"subject_id": ["a"], "time": [None], "code": ["x"]}).write_parquet(source / "data" / "0.parquet")
    with pytest.raises(SourceError, match=r"0.parquet: not a MEDS data shard"):
        prepare(PrepareConfig(out=tmp_path / "o", meds=source))
    unsorted = tmp_path / "unsorted"
    (unsorted / "data").mkdir(parents=True)
    pl.read_parquet(prepared[0] / "events" / "data" / "0.parquet").reverse().write_parquet(
        unsorted / "data" / "0.parquet"
    )
    with pytest.raises(SourceError, match="sorted by subject_id then time"):
        prepare(PrepareConfig(out=tmp_path / "o2", meds=unsorted))


@pytest.mark.faults
def test_truncated_gzip_is_a_clear_error(synth, tmp_path):
    root = tmp_path / "cut"
    shutil.copytree(synth, root)
    path = root / "hosp/labevents.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"labevents.csv.gz: cannot be read past row [\d,]+"):
        prepare(PrepareConfig(out=tmp_path / "out", mimic=root))
    assert not (tmp_path / "out").exists()


def test_reading_ahead_gives_every_batch_in_order_and_stops_with_the_reader(synth, monkeypatch):
    """The read-ahead thread yields the same rows as reading in line, and a reader that stops early stops it."""
    import threading

    from scaling.data import csv_stream

    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 1 << 16)  # many small batches
    table = csv_stream.open_table(synth, "hosp/labevents", ("labevent_id", "valuenum"), "")
    malformed = [0]
    streamed = pl.concat(list(csv_stream.stream(table, ("labevent_id", "valuenum"), malformed)))
    whole = pl.read_csv(synth / "hosp/labevents.csv.gz", columns=["labevent_id", "valuenum"], infer_schema=False)
    assert streamed.equals(whole) and malformed == [0]
    batches = csv_stream.stream(table, ("labevent_id",), [0])
    assert next(batches).height < whole.height and next(batches).height
    batches.close()  # stopping after two batches, with more read ahead
    assert not [t for t in threading.enumerate() if t.name == "ehrscale-csv-read-ahead"]
