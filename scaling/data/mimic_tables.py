"""The MIMIC-IV tables read beyond the core eleven: ICU charts, inputs, outputs and procedures, the outpatient
measurements (omr), the administrations (emar), microbiology and DRG codes. Same contract as `scaling.data.mimic`:
each table is a `TableRule` that counts every row (read = kept + dropped by reason) and maps kept rows to events.

Times are chosen so that no event is visible before it could be known: a result at the time it was stored
(microbiology), an amount given at the end of its infusion, a dated measurement at the end of its day. The codes and
what each carries are listed in docs/data.md, "The ICU and other tables".
"""

from collections.abc import Callable

import polars as pl

from scaling.data.csv_stream import SourceError
from scaling.data.mimic import (
    DICTIONARY_COLUMNS,
    STREAMED_COLUMNS,
    Context,
    TableCount,
    TableRule,
    _finite,
    classify,
    code_of,
    discharge_checks,
    events,
    item_checks,
    number_or_text,
    parse_date_end,
    parse_int,
    parse_time,
    subject_checks,
    time_checks,
    with_discharge,
)
from scaling.data.mimic import rules as core_rules

# emar's event_txt values that mean the dose reached the patient (the other ~20 values, such as "Not Given",
# "Hold Dose", "Stopped", "Flushed", "Documented in O.R. Holding", are orders and their fates, not doses).
ADMINISTERED = (
    "Administered",
    "Administered Bolus from IV Drip",
    "Administered in Other Location",
    "Applied",
    "Confirmed",
    "Delayed Administered",
    "Delayed Applied",
    "Delayed Started",
    "Partial Administered",
    "Restarted",
    "Started",
)

# The tables of this module and the columns each needs, in the order they are read (after the core tables).
MORE_COLUMNS = {
    "icu/chartevents": ("subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
    "icu/inputevents": (
        "subject_id",
        "hadm_id",
        "itemid",
        "starttime",
        "endtime",
        "amount",
        "amountuom",
        "rate",
        "rateuom",
    ),
    "icu/outputevents": ("subject_id", "hadm_id", "itemid", "charttime", "value", "valueuom"),
    "icu/procedureevents": ("subject_id", "hadm_id", "itemid", "starttime", "endtime"),
    "hosp/omr": ("subject_id", "chartdate", "result_name", "result_value"),
    "hosp/emar": ("subject_id", "hadm_id", "charttime", "medication", "event_txt"),
    "hosp/microbiologyevents": (
        "subject_id",
        "hadm_id",
        "micro_specimen_id",
        "chartdate",
        "charttime",
        "test_name",
        "storedate",
        "storetime",
        "org_name",
        "ab_name",
        "interpretation",
    ),
    "hosp/drgcodes": ("subject_id", "hadm_id", "drg_type", "drg_code"),
}
# Every streamed table, core first, in the order they are read; the dictionary each needs; icu/d_items, read when
# present for the descriptions of the ICU tables' items.
TABLES = {**STREAMED_COLUMNS, **MORE_COLUMNS}
DICTIONARY_OF = {
    "hosp/labevents": "hosp/d_labitems",
    "hosp/diagnoses_icd": "hosp/d_icd_diagnoses",
    "hosp/procedures_icd": "hosp/d_icd_procedures",
}
ITEMS = "icu/d_items"
ITEMS_COLUMNS = ("itemid", "label", "category")
ITEM_TABLES = ("icu/chartevents", "icu/inputevents", "icu/outputevents", "icu/procedureevents")


def choose_tables(asked: tuple[str, ...] | None, present: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(the streamed tables to read, in reading order; the known tables absent from the source). `asked`: names as
    `hosp/labevents` or `labevents`, each of which must be present; None: every known table that is present."""
    absent = [t for t in TABLES if not present(t)]
    if asked is None:
        return [t for t in TABLES if t not in absent], absent
    short = {t.split("/")[1]: t for t in TABLES}
    unknown = [a for a in asked if a not in TABLES and a not in short]
    if unknown:
        raise SourceError(
            f"--tables: unknown table(s) {', '.join(unknown)}; the tables ehrscale reads are "
            + ", ".join(t.split("/")[1] for t in TABLES)
        )
    wanted = {short.get(a, a) for a in asked}
    missing = [t for t in absent if t in wanted]
    if missing:
        raise SourceError(
            f"--tables asks for {', '.join(missing)}, which the source does not have (neither .csv.gz nor .csv); "
            "leave --tables out to read every table present"
        )
    return [t for t in TABLES if t in wanted], absent


def dictionaries_for(tables: list[str]) -> dict[str, tuple[str, ...]]:
    """The dictionaries the chosen tables need, with their columns."""
    return {DICTIONARY_OF[t]: DICTIONARY_COLUMNS[DICTIONARY_OF[t]] for t in tables if t in DICTIONARY_OF}


def all_rules(ctx: Context, tables: list[str]) -> list[TableRule]:
    """The rules of the chosen tables, in reading order."""
    return [r for r in core_rules(ctx) + rules(ctx) if r.name in tables]


def _ended(kept: pl.DataFrame, count: TableCount) -> pl.DataFrame:
    """The rows with an end time `_endtime` (an end event each); the others counted as a warning."""
    ended = kept.filter(pl.col("_endtime").is_not_null())
    if ended.height < kept.height:
        count.warnings["missing or unparseable endtime (no end event)"] += kept.height - ended.height
    return ended


def rules(ctx: Context) -> list[TableRule]:
    """The rules of this module's tables, in MORE_COLUMNS' order."""
    known = subject_checks(ctx.subjects)
    hadm = pl.col("_hadm")
    hadm_times = ctx.admissions.select("hadm_id", "disch")

    def chartevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {"_hadm": parse_int("hadm_id"), "_charttime": parse_time("charttime"), "_item": parse_int("itemid")}
        kept = number_or_text(
            classify(frame, parsed, known + time_checks("charttime") + item_checks(), count),
            "valuenum",
            "value",
            count,
        )
        code = code_of("CHART", pl.col("itemid"), pl.col("valueuom"))
        return events(kept, pl.col("_charttime"), code, numeric=pl.col("_number"), text=pl.col("_text"), hadm=hadm)

    def inputevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        # The start carries the rate (known when it starts); the amount given is known when the input ends.
        parsed = {
            "_hadm": parse_int("hadm_id"),
            "_starttime": parse_time("starttime"),
            "_endtime": parse_time("endtime"),
            "_item": parse_int("itemid"),
            "_rate": _finite(pl.col("rate").cast(pl.Float32, strict=False)),
            "_amount": _finite(pl.col("amount").cast(pl.Float32, strict=False)),
        }
        kept = classify(frame, parsed, known + time_checks("starttime") + item_checks(), count)
        rated = pl.col("_rate").is_not_null()
        start = events(
            kept,
            pl.col("_starttime"),
            code_of("INPUT_START", pl.col("itemid"), pl.when(rated).then(pl.col("rateuom"))),
            numeric=pl.col("_rate"),
            hadm=hadm,
        )
        end = events(
            _ended(kept, count),
            pl.col("_endtime"),
            code_of("INPUT", pl.col("itemid"), pl.col("amountuom")),
            numeric=pl.col("_amount"),
            hadm=hadm,
        )
        return pl.concat([start, end])

    def outputevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {"_hadm": parse_int("hadm_id"), "_charttime": parse_time("charttime"), "_item": parse_int("itemid")}
        kept = number_or_text(
            classify(frame, parsed, known + time_checks("charttime") + item_checks(), count), "value", None, count
        )
        code = code_of("OUTPUT", pl.col("itemid"), pl.col("valueuom"))
        return events(kept, pl.col("_charttime"), code, numeric=pl.col("_number"), hadm=hadm)

    def procedureevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {
            "_hadm": parse_int("hadm_id"),
            "_starttime": parse_time("starttime"),
            "_endtime": parse_time("endtime"),
            "_item": parse_int("itemid"),
        }
        kept = classify(frame, parsed, known + time_checks("starttime") + item_checks(), count)
        start = events(kept, pl.col("_starttime"), code_of("ICU_PROCEDURE", "START", pl.col("itemid")), hadm=hadm)
        end = events(
            _ended(kept, count), pl.col("_endtime"), code_of("ICU_PROCEDURE", "END", pl.col("itemid")), hadm=hadm
        )
        return pl.concat([start, end])

    def omr(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        # Dated, not timed: at the end of the day. "120/80" blood pressures become a systolic and a diastolic event.
        checks = known + time_checks("chartdate") + [("missing result_name", pl.col("result_name").is_null())]
        kept = classify(frame, {"_chartdate": parse_date_end("chartdate")}, checks, count)
        pressure = pl.col("result_name").str.starts_with("Blood Pressure")
        parts = pl.col("result_value").str.extract_groups(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")
        kept = kept.with_columns(_parts=parts)
        split = pressure & pl.col("_parts").struct.field("1").is_not_null()
        odd = kept.filter(pressure & ~split).height
        if odd:
            count.warnings["blood pressure not systolic/diastolic (kept as text)"] += odd
        time = pl.col("_chartdate")
        pressures = kept.filter(split)
        out = [
            events(
                pressures,
                time,
                code_of("OMR", pl.col("result_name"), side),
                numeric=pl.col("_parts").struct.field(group).cast(pl.Float32),
            )
            for side, group in (("SYSTOLIC", "1"), ("DIASTOLIC", "2"))
        ]
        single = kept.filter(~split).with_columns(
            _number=_finite(pl.col("result_value").cast(pl.Float32, strict=False))
        )
        out.append(
            events(
                single,
                time,
                code_of("OMR", pl.col("result_name")),
                numeric=pl.col("_number"),
                text=pl.when(pl.col("_number").is_null()).then(pl.col("result_value")),  # e.g. eGFR ">60"
            )
        )
        return pl.concat(out)

    def emar(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        checks = (
            known
            + time_checks("charttime")
            + [
                ("missing medication", pl.col("medication").is_null()),
                (
                    "not an administration (event_txt)",
                    ~pl.col("event_txt").is_in(ADMINISTERED) | pl.col("event_txt").is_null(),
                ),
            ]
        )
        kept = classify(frame, {"_hadm": parse_int("hadm_id"), "_charttime": parse_time("charttime")}, checks, count)
        return events(kept, pl.col("_charttime"), code_of("MEDICATION_GIVEN", pl.col("medication")), hadm=hadm)

    def microbiologyevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        # The test when its specimen was taken; what it found when the result was stored (days later).
        parsed = {
            "_hadm": parse_int("hadm_id"),
            "_taken": pl.coalesce(parse_time("charttime"), parse_date_end("chartdate")),
            "_stored": pl.coalesce(parse_time("storetime"), parse_date_end("storedate")),
        }
        checks = known + [
            ("missing charttime and chartdate", pl.col("charttime").is_null() & pl.col("chartdate").is_null()),
            ("unparseable charttime and chartdate", pl.col("_taken").is_null()),
            ("missing test_name", pl.col("test_name").is_null()),
        ]
        kept = classify(frame, parsed, checks, count)
        specimen = [pl.col("_subject"), pl.col("micro_specimen_id")]
        tests = kept.unique([*specimen, "test_name"], keep="first", maintain_order=True)
        out = [events(tests, pl.col("_taken"), code_of("MICRO", "TEST", pl.col("test_name")), hadm=hadm)]
        stored = kept.filter(pl.col("_stored").is_not_null())
        unstored = kept.height - stored.height
        if unstored:
            count.warnings["no storetime or storedate (result not timed, left out)"] += unstored
        growth = pl.col("org_name").is_not_null()
        no_growth = stored.filter(~growth).unique([*specimen, "test_name"], keep="first", maintain_order=True)
        out.append(events(no_growth, pl.col("_stored"), code_of("MICRO", "NO_GROWTH", pl.col("test_name")), hadm=hadm))
        organisms = stored.filter(growth).unique([*specimen, "org_name"], keep="first", maintain_order=True)
        out.append(events(organisms, pl.col("_stored"), code_of("MICRO", "ORGANISM", pl.col("org_name")), hadm=hadm))
        tested = stored.filter(growth & pl.col("ab_name").is_not_null())
        out.append(
            events(
                tested,
                pl.col("_stored"),
                code_of("MICRO", "SUSCEPTIBILITY", pl.col("ab_name")),
                text=pl.col("interpretation").fill_null("UNK"),
                hadm=hadm,
            )
        )
        return pl.concat(out)

    def drgcodes(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        # A DRG is assigned for billing at discharge: timed there, like diagnoses.
        frame = with_discharge(frame, hadm_times)
        checks = known + discharge_checks() + [("missing drg_code", pl.col("drg_code").is_null())]
        kept = classify(frame, {}, checks, count)
        return events(kept, pl.col("disch"), code_of("DRG", pl.col("drg_type"), pl.col("drg_code")), hadm=hadm)

    convert = {
        "icu/chartevents": chartevents,
        "icu/inputevents": inputevents,
        "icu/outputevents": outputevents,
        "icu/procedureevents": procedureevents,
        "hosp/omr": omr,
        "hosp/emar": emar,
        "hosp/microbiologyevents": microbiologyevents,
        "hosp/drgcodes": drgcodes,
    }
    return [TableRule(name, columns, convert[name]) for name, columns in MORE_COLUMNS.items()]


def item_descriptions(items: pl.DataFrame) -> pl.DataFrame:
    """(prefix, description, parent) rows from icu/d_items for the codes of the ICU tables."""
    label = pl.concat_str([pl.col("label"), pl.lit(" ("), pl.col("category").fill_null(""), pl.lit(")")])
    frames = [
        items.select(prefix=pl.concat_str([pl.lit(f"{kind}//"), pl.col("itemid"), pl.lit("//")]), description=label)
        for kind in ("CHART", "INPUT", "INPUT_START", "OUTPUT")
    ]
    frames += [
        items.select(prefix=pl.concat_str([pl.lit(f"ICU_PROCEDURE//{edge}//"), pl.col("itemid")]), description=label)
        for edge in ("START", "END")
    ]
    return pl.concat(frames).with_columns(parent=pl.lit(None, pl.String))
