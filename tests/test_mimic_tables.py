"""The MIMIC-IV tables beyond the core: ICU charts, inputs, outputs, procedures, omr, emar, microbiology, DRGs.

Each is read with its documented codes and times (docs/data.md), every row counted, and a dense code thinned in the
timelines by the documented rule."""

import gzip
import json
import shutil

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.data.csv_stream import SourceError
from scaling.data.prepare import PrepareConfig, prepare
from scaling.data.timelines import TokenizerConfig, find_dense_codes, repeat_gaps, thin_dense
from tests.helpers import at, event_frame, read_csv_gz

TIME = "%Y-%m-%d %H:%M:%S"


def events(prep) -> pl.DataFrame:
    return pl.read_parquet(prep / "events" / "data" / "*.parquet")


def parsed(frame: pl.DataFrame, column: str) -> pl.Series:
    return frame[column].str.strptime(pl.Datetime("us"), TIME)


def test_every_table_is_read_by_default_with_its_codes(prepared, synth):
    prep, manifest = prepared
    assert manifest["source"]["tables"]["asked"] == "all present"
    assert manifest["source"]["tables"]["absent"] == []
    for table in ("icu/chartevents", "hosp/omr", "hosp/emar", "hosp/microbiologyevents", "hosp/drgcodes"):
        assert table in manifest["source"]["tables"]["read"] and manifest["tables"][table]["kept"] > 0, table
    ev = events(prep)
    categories = set(ev["code"].str.split("//").list.first().unique())
    assert {"CHART", "INPUT_START", "INPUT", "OUTPUT", "ICU_PROCEDURE", "OMR", "MEDICATION_GIVEN", "MICRO", "DRG"} <= (
        categories
    )
    codes = pl.read_parquet(prep / "events" / "metadata" / "codes.parquet")
    heart = codes.filter(pl.col("code") == "CHART//220045//bpm").row(0, named=True)
    assert heart["description"] == "Heart Rate (Routine Vital Signs)"


def test_charts_outputs_and_inputs_keep_their_values_and_times(prepared, synth):
    ev = events(prepared[0])
    charts = read_csv_gz(synth, "icu/chartevents").filter(pl.col("itemid") == "220045")
    heart = ev.filter(pl.col("code") == "CHART//220045//bpm").sort("subject_id", "time")
    source = charts.select(
        subject_id=pl.col("subject_id").cast(pl.Int64),
        time=parsed(charts, "charttime"),
        value=pl.col("valuenum").cast(pl.Float32),
    ).sort("subject_id", "time")
    assert heart.height == source.height
    assert (heart["time"] == source["time"]).all()
    np.testing.assert_allclose(heart["numeric_value"].to_numpy(), source["value"].to_numpy())
    # An input's amount is known when it ends: INPUT at endtime with the amount; INPUT_START at starttime.
    inputs = read_csv_gz(synth, "icu/inputevents")
    given = ev.filter(pl.col("code").str.starts_with("INPUT//")).sort("subject_id", "time")
    assert sorted(given["time"].to_list()) == sorted(parsed(inputs, "endtime").to_list())
    assert sorted(given["numeric_value"].to_list()) == sorted(inputs["amount"].cast(pl.Float32).to_list())
    starts = ev.filter(pl.col("code").str.starts_with("INPUT_START//"))
    assert sorted(starts["time"].to_list()) == sorted(parsed(inputs, "starttime").to_list())
    outputs = ev.filter(pl.col("code").str.starts_with("OUTPUT//"))
    assert (
        outputs.height == read_csv_gz(synth, "icu/outputevents").height and outputs["numeric_value"].null_count() == 0
    )


def test_omr_blood_pressure_is_split_and_dated_at_the_end_of_its_day(prepared, synth):
    ev = events(prepared[0])
    omr = read_csv_gz(synth, "hosp/omr").filter(pl.col("result_name") == "Blood Pressure")
    parts = omr["result_value"].str.split("/")
    systolic = ev.filter(pl.col("code") == "OMR//Blood Pressure//SYSTOLIC")
    diastolic = ev.filter(pl.col("code") == "OMR//Blood Pressure//DIASTOLIC")
    assert systolic.height == diastolic.height == omr.height
    assert sorted(systolic["numeric_value"].to_list()) == sorted(parts.list.first().cast(pl.Float32).to_list())
    assert sorted(diastolic["numeric_value"].to_list()) == sorted(parts.list.last().cast(pl.Float32).to_list())
    assert (systolic["time"].dt.strftime("%H:%M:%S") == "23:59:59").all()


def test_microbiology_results_appear_when_stored_not_when_drawn(prepared, synth):
    ev = events(prepared[0])
    micro = read_csv_gz(synth, "hosp/microbiologyevents")
    tests = ev.filter(pl.col("code").str.starts_with("MICRO//TEST//"))
    assert tests.height == micro.unique(["micro_specimen_id", "test_name"]).height
    assert set(tests["time"].to_list()) == set(parsed(micro, "charttime").to_list())
    results = ev.filter(pl.col("code").str.contains(r"^MICRO//(NO_GROWTH|ORGANISM|SUSCEPTIBILITY)//"))
    assert set(results["time"].to_list()) == set(parsed(micro, "storetime").to_list())
    tested = micro.filter(pl.col("ab_name").is_not_null())
    susceptibility = ev.filter(pl.col("code").str.starts_with("MICRO//SUSCEPTIBILITY//"))
    assert susceptibility.height == tested.height
    assert sorted(susceptibility["text_value"].to_list()) == sorted(tested["interpretation"].to_list())
    # Drawn for the infections: the share of admissions with a positive culture is highest for sepsis and UTIs.
    organisms = ev.filter(pl.col("code").str.starts_with("MICRO//ORGANISM//"))
    assert organisms.height == micro.filter(pl.col("org_name").is_not_null()).unique("micro_specimen_id").height


def test_drgs_are_timed_at_discharge_and_emar_keeps_administrations(prepared, synth):
    ev = events(prepared[0])
    adm = read_csv_gz(synth, "hosp/admissions").select(
        pl.col("hadm_id").cast(pl.Int64), disch=parsed(read_csv_gz(synth, "hosp/admissions"), "dischtime")
    )
    drg = ev.filter(pl.col("code").str.starts_with("DRG//HCFA//")).join(adm, on="hadm_id")
    assert drg.height == read_csv_gz(synth, "hosp/drgcodes").height and (drg["time"] == drg["disch"]).all()
    given = ev.filter(pl.col("code").str.starts_with("MEDICATION_GIVEN//"))
    assert given.height == read_csv_gz(synth, "hosp/emar").filter(pl.col("event_txt") == "Administered").height


def _append(path, lines: list[str]) -> None:
    with gzip.open(path, "rt", newline="") as handle:
        text = handle.read()
    with gzip.open(path, "wt", newline="") as handle:
        handle.write(text + "\n".join(lines) + "\n")


@pytest.mark.faults
def test_bad_rows_of_the_new_tables_are_counted_by_reason(synth, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth, root)
    adm = read_csv_gz(synth, "hosp/admissions").row(0, named=True)
    sid, hadm = adm["subject_id"], adm["hadm_id"]
    t = "2150-01-01 10:00:00"
    _append(
        root / "icu/chartevents.csv.gz",
        [
            f"{sid},{hadm},1,,{t},,220045,80,80,bpm,0",  # fine
            f"{sid},{hadm},1,,{t},,,80,80,bpm,0",  # no itemid
            f"{sid},{hadm},1,,2150-13-01 99:00:00,,220045,80,80,bpm,0",  # impossible time
            f"19999999,{hadm},1,,{t},,220045,80,80,bpm,0",  # unknown subject
            f"{sid},{hadm},1,,{t},,220045,81,eighty,bpm,0",  # garbled valuenum: the value read instead
            f"{sid},{hadm},1,,{t},,220048,SR (Sinus Rhythm),,,0",  # a category: text
        ],
    )
    _append(root / "hosp/omr.csv.gz", [f"{sid},2150-01-01,1,Blood Pressure,120/", f"{sid},,1,Weight (Lbs),170"])
    _append(
        root / "hosp/emar.csv.gz",
        [
            f"{sid},{hadm},e1,1,p,r,,{t},Heparin,Not Given,{t},{t}",
            f"{sid},{hadm},e2,1,p,r,,{t},Heparin,Applied,{t},{t}",
        ],
    )
    micro = "1,{sid},{hadm},77,,2150-01-01 00:00:00,{t},70012,BLOOD CULTURE,1,,{stored},90201,{test},,,,,,,,,,,"
    _append(
        root / "hosp/microbiologyevents.csv.gz",
        [
            micro.format(sid=sid, hadm=hadm, t=t, stored="", test='"Blood Culture, Routine"'),  # never stored
            micro.format(sid=sid, hadm=hadm, t=t, stored=t, test=""),  # no test name
        ],
    )
    _append(root / "hosp/drgcodes.csv.gz", [f"{sid},29999999,HCFA,871,SEPSIS,,", f"{sid},{hadm},HCFA,,SEPSIS,,"])
    _append(
        root / "icu/inputevents.csv.gz",
        [",".join([sid, hadm, "1", "", t, "", t, "225158", "250", "ml"] + [""] * 16)],  # no endtime: no end event
    )
    manifest = prepare(PrepareConfig(out=tmp_path / "prep", mimic=root, events_only=True))
    tables = manifest["tables"]
    assert tables["icu/chartevents"]["dropped"] == {
        "missing itemid": 1,
        "unparseable charttime": 1,
        "unknown subject": 1,
    }
    assert tables["icu/chartevents"]["warnings"] == {"valuenum not a number (value parsed instead)": 1}
    assert tables["hosp/omr"]["dropped"] == {"missing chartdate": 1}
    assert tables["hosp/omr"]["warnings"] == {"blood pressure not systolic/diastolic (kept as text)": 1}
    not_given = read_csv_gz(synth, "hosp/emar").filter(pl.col("event_txt") != "Administered").height
    assert tables["hosp/emar"]["dropped"] == {"not an administration (event_txt)": not_given + 1}
    assert tables["hosp/microbiologyevents"]["dropped"] == {"missing test_name": 1}
    assert tables["hosp/microbiologyevents"]["warnings"] == {
        "no storetime or storedate (result not timed, left out)": 1
    }
    assert tables["hosp/drgcodes"]["dropped"] == {"unknown admission": 1, "missing drg_code": 1}
    assert tables["icu/inputevents"]["warnings"] == {"missing or unparseable endtime (no end event)": 1}
    for name, count in tables.items():
        assert count["read"] == count["kept"] + sum(count["dropped"].values()), name
        assert "malformed line" not in count["dropped"], name  # the planted rows are well-formed CSV
    ev = events(tmp_path / "prep")
    planted = ev.filter((pl.col("code") == "CHART//220045//bpm") & (pl.col("time") == at(hours=2)))
    assert sorted(planted["numeric_value"].to_list()) == [80.0, 81.0]
    rhythm = ev.filter((pl.col("text_value") == "SR (Sinus Rhythm)") & (pl.col("time") == at(hours=2)))
    assert rhythm["code"].to_list() == ["CHART//220048//UNK"]
    assert ev.filter(pl.col("code") == "OMR//Blood Pressure")["text_value"].to_list() == ["120/"]
    heparin = ev.filter((pl.col("code") == "MEDICATION_GIVEN//Heparin") & (pl.col("time") == at(hours=2)))
    assert heparin.height == 1  # "Applied" kept, "Not Given" not


def test_tables_option_chooses_what_is_read(synth, tmp_path):
    out = tmp_path / "prep"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            "--mimic",
            str(synth),
            "--out",
            str(out),
            "--events-only",
            "--tables",
            "labevents,chartevents",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["tables"]["read"] == ["hosp/labevents", "icu/chartevents"]
    assert manifest["source"]["tables"]["asked"] == ["labevents", "chartevents"]
    assert set(manifest["tables"]) == {
        "hosp/patients",
        "hosp/admissions",
        "hosp/d_labitems",
        "icu/d_items",
        "hosp/labevents",
        "icu/chartevents",
    }
    categories = set(events(out)["code"].str.split("//").list.first().unique())
    assert categories == {
        "GENDER",
        "MEDS_BIRTH",
        "MEDS_DEATH",
        "HOSPITAL_ADMISSION",
        "HOSPITAL_DISCHARGE",
        "LAB",
        "CHART",
    }
    with pytest.raises(SourceError, match="--tables chooses MIMIC-IV tables"):
        prepare(PrepareConfig(out=tmp_path / "x", meds=out / "events", tables=("labevents",)))


def test_a_dense_code_keeps_its_first_event_per_window():
    rows = [(1, at(minutes=m), "CHART//220045//bpm", 80.0 + m, None) for m in range(0, 180, 15)]  # every 15 min
    rows += [(1, at(minutes=m), "LAB//50912//mg/dL", 1.0, None) for m in range(0, 180, 15)]  # not among the dense
    rows += [(2, at(minutes=5), "CHART//220045//bpm", 70.0, None), (2, None, "GENDER//F", None, None)]
    frame = event_frame(rows)
    config = TokenizerConfig(dense_minutes=60)
    kept, left_out = thin_dense(frame, config, ("CHART//220045//bpm",))
    heart = kept.filter((pl.col("subject_id") == 1) & pl.col("code").str.starts_with("CHART"))
    # T0 is 08:00: the windows are the clock hours 08, 09, 10, and the first reading of each is kept.
    assert heart["numeric_value"].to_list() == [80.0, 140.0, 200.0]
    assert kept.filter(pl.col("code").str.starts_with("LAB")).height == 12
    assert kept.filter(pl.col("subject_id") == 2).height == 2
    assert left_out == 9 == frame.height - kept.height
    assert thin_dense(frame, TokenizerConfig(dense_minutes=0), ("CHART//220045//bpm",))[0].equals(frame)
    assert thin_dense(frame, config, ())[1] == 0


def test_dense_codes_are_found_by_how_often_they_recur_whatever_their_name():
    """The median gap between one subject's events of a code decides, on any source's coding: hourly charts (as
    CHART//... from ehrscale's reader, LAB//2xxxxx from the reference ETL) are dense, daily labs are not."""
    rows = []
    for subject in (1, 2, 3):
        rows += [(subject, at(minutes=60 * h), "LAB//220045//bpm", 80.0, None) for h in range(12)]  # hourly
        rows += [(subject, at(minutes=45 * h), "CHART//220277//%", 97.0, None) for h in range(12)]  # 45 min
        rows += [(subject, at(minutes=24 * 60 * d), "LAB//50912//mg/dL", 1.0, None) for d in range(5)]  # daily
        # Every 30 min for 2 hours, then daily: half its gaps or more are long, so its median is (not dense).
        rows += [(subject, at(minutes=m), "LAB//50813//mmol/L", 2.0, None) for m in (0, 30, 60, 1440, 2880, 4320)]
    frame = event_frame(rows)
    config = TokenizerConfig(dense_minutes=60, min_code_count=10)
    gaps = repeat_gaps(frame, config)
    assert dict(gaps.select("code", "gaps").iter_rows())["LAB//220045//bpm"] == 33  # 11 gaps a subject
    assert find_dense_codes([gaps], config) == ("CHART//220277//%", "LAB//220045//bpm")
    # Shards add up: the same rows split in two give the same codes; too few gaps give none.
    halves = [repeat_gaps(frame.filter(pl.col("subject_id") == s), config) for s in (1, 2, 3)]
    assert find_dense_codes(halves, config) == find_dense_codes([gaps], config)
    assert find_dense_codes([gaps], TokenizerConfig(dense_minutes=60, min_code_count=40)) == ()
    assert find_dense_codes([gaps], TokenizerConfig(dense_minutes=0)) == ()
    daily = TokenizerConfig(dense_minutes=24 * 60, min_code_count=10)  # a window of a day: daily labs are dense too
    assert "LAB//50912//mg/dL" in find_dense_codes([repeat_gaps(frame, daily)], daily)


def test_the_first_icu_day_is_decoded(prepared):
    result = CliRunner().invoke(app, ["data", "inspect", str(prepared[0]), "--icu-day", "--tokens", "400"])
    assert result.exit_code == 0, result.output
    assert "the first 24 h of an ICU stay of held_out subject #" in result.output
    assert "ICU_ADMISSION//" in result.output and "CHART//220045//bpm (Heart Rate (Routine Vital Signs)) [Q" in (
        result.output
    )
