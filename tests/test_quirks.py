"""What real records carry besides the patient's story: exact duplicates dropped, impossible numbers removed, events
outside their admission and without one counted and kept; each counted in the manifest with what was done."""

import polars as pl
import pytest

from scaling.data import quirks
from scaling.data.quirks import Audit
from tests.helpers import at, event_frame


def with_admissions(rows: list[tuple]) -> pl.DataFrame:
    """Event rows with a sixth field, hadm_id (None: no admission)."""
    frame = event_frame([row[:5] for row in rows])
    return frame.with_columns(hadm_id=pl.Series([row[5] for row in rows], dtype=pl.Int64))


ROWS = [
    (1, None, "GENDER//F", None, None, None),
    (1, at(hours=-3), "MEDICATION//Ceftriaxone", None, None, 20),  # started in the ED, before admission
    (1, at(hours=0), "HOSPITAL_ADMISSION//EW EMER.", None, None, 20),
    (1, at(hours=5), "LAB//50912//mg/dL", 1.25, None, 20),
    (1, at(hours=5), "LAB//50912//mg/dL", 1.25, None, 20),  # an exact duplicate
    (1, at(hours=5), "LAB//50912//mg/dL", 1.5, None, 20),  # same time, another number: not a duplicate
    (1, at(hours=6), "LAB//220045//bpm", 88.0, None, 20),
    (1, at(hours=7), "LAB//220045//bpm", 880.0, None, 20),  # no heart beats 880 times a minute
    (1, at(hours=48), "HOSPITAL_DISCHARGE//HOME", None, None, 20),
    (1, at(hours=50), "MEDICATION//Ceftriaxone", None, None, 20),  # entered after discharge
    (1, at(days=30), "BMI (kg/m2)", None, "4649.4", None),  # the public demo's outpatient BMI, as text
    (1, at(days=30), "Weight (Lbs)", None, "165.34", None),  # a number written as text
    (1, at(days=30), "Blood Pressure", None, "127/48", None),  # text that is no number stays text
    (1, at(days=31), "OMR//BMI (kg/m2)", 27.5, None, None),
    (1, at(days=40), "LAB//50912//mg/dL", 1.0, None, None),  # an outpatient lab
    (1, at(days=40), "LAB//52033//UNK", None, "ART.", None),
    (1, at(days=40), "LAB//52033//UNK", None, "ART.", None),  # a duplicate text result
]


def test_duplicates_are_dropped_implausible_numbers_removed_and_the_rest_counted():
    audit = Audit()
    events = audit.check(with_admissions(ROWS))
    assert events.columns == list(quirks.EVENT)  # hadm_id was only for the checks
    assert events.height == len(ROWS) - 2
    labs = events.filter(pl.col("code") == "LAB//50912//mg/dL")["numeric_value"].to_list()
    assert sorted(labs) == [1.0, 1.25, 1.5]
    heart = events.filter(pl.col("code") == "LAB//220045//bpm")
    assert heart["numeric_value"].to_list() == [88.0, None]  # the event stays, its number goes
    bmi = events.filter(pl.col("code").str.contains("BMI"))
    assert bmi["numeric_value"].to_list() == [None, 27.5] and bmi["text_value"].to_list() == [None, None]
    weight = events.filter(pl.col("code") == "Weight (Lbs)")
    assert weight["numeric_value"].to_list() == [pytest.approx(165.34)] and weight["text_value"].to_list() == [None]
    assert events.filter(pl.col("code") == "Blood Pressure")["text_value"].to_list() == ["127/48"]

    section = audit.section()
    assert section["duplicate_events"]["total"] == 2
    assert section["duplicate_events"]["by_category"] == {"LAB": 2}
    assert section["numbers_in_text"]["by_category"] == {"BMI (kg": 1, "OTHER": 1}
    implausible = section["implausible_values"]
    assert implausible["total"] == 2
    assert implausible["by_quantity"]["heart rate (bpm)"] == {"range": [0, 350], "checked": 2, "removed": 1}
    assert implausible["by_quantity"]["BMI (kg/m2)"] == {"range": [5, 150], "checked": 2, "removed": 1}
    admissions = section["admissions"]
    assert admissions["before_admission"] == {"MEDICATION": 1}
    assert admissions["after_discharge"] == {"MEDICATION": 1}
    # (the reference ETL names omr codes without a prefix: "BMI (kg/m2)" falls in the category before its "/")
    assert admissions["without_admission"] == {"BMI (kg": 1, "LAB": 2, "OMR": 1, "OTHER": 2}  # after the duplicate went
    line = quirks.summary(section)
    assert line.startswith(
        "events: 2 duplicate events dropped; 2 numbers written as text read as numbers; 2 implausible"
    )
    assert (
        "heart rate (bpm) outside [0, 350] 1" in line and "kept 1 events before their admission (MEDICATION 1)" in line
    )


def test_counts_add_up_over_shards_and_a_source_without_admissions_says_so():
    audit = Audit()
    frame = with_admissions(ROWS)
    for subject in (1, 2):  # one shard at a time, each holding whole subjects
        audit.check(frame.with_columns(subject_id=pl.lit(subject, pl.Int64)))
    section = audit.section()
    assert section["duplicate_events"]["total"] == 4 and section["implausible_values"]["total"] == 4
    assert section["admissions"]["before_admission"] == {"MEDICATION": 2}
    plain = Audit()
    out = plain.check(event_frame([row[:5] for row in ROWS]))
    assert out.height == len(ROWS) - 2
    assert plain.section()["admissions"] == {"done": "not checked: the events have no hadm_id column"}
    assert "not checked: the events have no hadm_id column" in quirks.summary(plain.section())
