"""MIMIC-IV (v2.2, v3.x; .csv or .csv.gz) -> MEDS events, one table at a time, counting every row.

Each table is a `TableRule`: the columns it needs, the checks that drop a row (first failing reason
wins) and the events a kept row becomes. The mapping of every code is in docs/data.md.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import polars as pl

EVENT_SCHEMA = {
    "subject_id": pl.Int64,
    "time": pl.Datetime("us"),
    "code": pl.String,
    "numeric_value": pl.Float32,
    "text_value": pl.String,
    "hadm_id": pl.Int64,
}
HINT = "Pass --mimic the MIMIC-IV folder that holds hosp/ and icu/ (v2.2 or v3.x, .csv or .csv.gz)."
UNKNOWN = "UNK"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # MIMIC-IV writes every timestamp this way


@dataclass
class TableCount:
    """Rows of one source table: read = kept + sum(dropped); warnings are kept rows with a repaired field."""

    read: int = 0
    kept: int = 0
    events: int = 0
    dropped: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)

    def add_malformed(self, lines: int) -> None:
        """Lines the CSV parser skipped (wrong number of fields): read, and dropped for that reason."""
        self.read += lines
        if lines:
            self.dropped["malformed line"] += lines

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "events": self.events,
            "warnings": dict(sorted(self.warnings.items())),
        }


def parse_time(column: str) -> pl.Expr:
    """A MIMIC-IV timestamp text column as Datetime(us); null where it does not parse."""
    return pl.col(column).str.to_datetime(TIME_FORMAT, time_unit="us", strict=False)


def parse_date_end(column: str) -> pl.Expr:
    """A date column at 23:59:59 of its day, so a dated fact is never visible before it could be known."""
    day = pl.col(column).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    return day.cast(pl.Datetime("us")) + pl.duration(hours=23, minutes=59, seconds=59)


def _finite(number: pl.Expr) -> pl.Expr:
    return pl.when(number.is_finite()).then(number)


def parse_int(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Int64, strict=False)


def time_checks(column: str) -> list[tuple[str, pl.Expr]]:
    """Checks on a time column parsed into `_<column>`."""
    return [(f"missing {column}", pl.col(column).is_null()), (f"unparseable {column}", pl.col(f"_{column}").is_null())]


def subject_checks(known: pl.Series | None) -> list[tuple[str, pl.Expr]]:
    """Checks on subject_id parsed into `_subject`."""
    checks = [
        ("missing subject_id", pl.col("subject_id").is_null()),
        ("unparseable subject_id", pl.col("_subject").is_null()),
    ]
    if known is not None:
        checks.append(("unknown subject", ~pl.col("_subject").is_in(known.implode())))
    return checks


def classify(
    frame: pl.DataFrame, parsed: dict[str, pl.Expr], checks: list[tuple[str, pl.Expr]], count: TableCount
) -> pl.DataFrame:
    """Parse columns once (`_subject`, `_<time column>`, ...), count rows by their first failing check, keep the
    rest."""
    frame = frame.with_columns(_subject=parse_int("subject_id"), **parsed)
    count.read += frame.height
    if not checks:
        count.kept += frame.height
        return frame
    reason = pl.when(checks[0][1]).then(pl.lit(checks[0][0]))
    for name, bad in checks[1:]:
        reason = reason.when(bad).then(pl.lit(name))
    frame = frame.with_columns(_drop=reason.otherwise(None))
    for name, n in frame.group_by("_drop").len().iter_rows():
        if name is not None:
            count.dropped[name] += n
    kept = frame.filter(pl.col("_drop").is_null()).drop("_drop")
    count.kept += kept.height
    return kept


def events(
    frame: pl.DataFrame,
    time: pl.Expr,
    code: pl.Expr,
    numeric: pl.Expr | None = None,
    text: pl.Expr | None = None,
    hadm: pl.Expr | None = None,
) -> pl.DataFrame:
    """Rows -> MEDS events with the project's event columns."""
    return frame.select(
        subject_id=pl.col("_subject"),
        time=time,
        code=code,
        numeric_value=numeric if numeric is not None else pl.lit(None, pl.Float32),
        text_value=text if text is not None else pl.lit(None, pl.String),
        hadm_id=hadm if hadm is not None else pl.lit(None, pl.Int64),
    ).cast(EVENT_SCHEMA)


def code_of(*parts: str | pl.Expr) -> pl.Expr:
    """`A//B//C` from literal and column parts; a null part becomes UNK."""
    exprs = [pl.lit(p) if isinstance(p, str) else p.fill_null(UNKNOWN) for p in parts]
    return pl.concat_str(exprs, separator="//")


def item_checks() -> list[tuple[str, pl.Expr]]:
    """Checks on an itemid column parsed into `_item`."""
    return [("missing itemid", pl.col("itemid").is_null()), ("unparseable itemid", pl.col("_item").is_null())]


def number_or_text(frame: pl.DataFrame, number: str, text: str | None, count: TableCount) -> pl.DataFrame:
    """`_number` from the column `number` (finite), else from `text` read as a number (counted as a warning);
    `_text` where there is no number."""
    frame = frame.with_columns(_number=_finite(pl.col(number).cast(pl.Float32, strict=False)))
    garbled = pl.col(number).is_not_null() & pl.col("_number").is_null()
    bad = frame.filter(garbled).height
    if text is None:
        if bad:
            count.warnings[f"{number} not a number (kept without a value)"] += bad
        return frame.with_columns(_text=pl.lit(None, pl.String))
    if bad:
        count.warnings[f"{number} not a number ({text} parsed instead)"] += bad
        fallback = _finite(pl.col(text).cast(pl.Float32, strict=False))
        frame = frame.with_columns(_number=pl.when(garbled).then(fallback).otherwise(pl.col("_number")))
    return frame.with_columns(_text=pl.when(pl.col("_number").is_null()).then(pl.coalesce(text, number)))


def with_discharge(frame: pl.DataFrame, hadm_times: pl.DataFrame) -> pl.DataFrame:
    """The rows with `_hadm` and their admission's discharge time `disch` (null for an unknown admission)."""
    return frame.with_columns(_hadm=parse_int("hadm_id")).join(
        hadm_times, left_on="_hadm", right_on="hadm_id", how="left"
    )


def discharge_checks() -> list[tuple[str, pl.Expr]]:
    """Checks on rows timed at their admission's discharge (`with_discharge`)."""
    return [("missing hadm_id", pl.col("hadm_id").is_null()), ("unknown admission", pl.col("disch").is_null())]


@dataclass(frozen=True)
class TableRule:
    """How one streamed MIMIC-IV table becomes events."""

    name: str
    columns: tuple[str, ...]
    convert: Callable[[pl.DataFrame, TableCount], pl.DataFrame]


@dataclass
class Context:
    """What the small tables tell the big ones: known subjects, admissions, lab items."""

    subjects: pl.Series
    admissions: pl.DataFrame  # hadm_id, admit, disch
    lab_items: pl.Series


def patient_events(patients: pl.DataFrame, count: TableCount, died_in_hospital: pl.Series) -> pl.DataFrame:
    """patients -> GENDER//<g> (static), MEDS_BIRTH, MEDS_DEATH from dod (unless an admission gives deathtime)."""
    parsed = {"_birth_year": parse_int("anchor_year") - parse_int("anchor_age"), "_dod": parse_date_end("dod")}
    checks = subject_checks(None) + [
        ("unparseable anchor_age or anchor_year", pl.col("_birth_year").is_null()),
        ("duplicate subject", pl.col("_subject").is_first_distinct().not_()),
    ]
    kept = classify(patients, parsed, checks, count)
    bad_dod = kept.filter(pl.col("dod").is_not_null() & pl.col("_dod").is_null()).height
    if bad_dod:
        count.warnings["unparseable dod (no death event)"] += bad_dod
    gender = events(
        kept.filter(pl.col("gender").is_not_null()),
        pl.lit(None, pl.Datetime("us")),
        code_of("GENDER", pl.col("gender")),
    )
    birth = events(kept, pl.datetime(pl.col("_birth_year"), 1, 1).cast(pl.Datetime("us")), pl.lit("MEDS_BIRTH"))
    dead = kept.filter(pl.col("_dod").is_not_null() & ~pl.col("_subject").is_in(died_in_hospital.implode()))
    return pl.concat([gender, birth, events(dead, pl.col("_dod"), pl.lit("MEDS_DEATH"))])


def admission_events(
    admissions: pl.DataFrame, count: TableCount, subjects: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """admissions -> HOSPITAL_ADMISSION//<type>, HOSPITAL_DISCHARGE//<location>, MEDS_DEATH at deathtime."""
    parsed = {
        "_hadm": parse_int("hadm_id"),
        "_admittime": parse_time("admittime"),
        "_dischtime": parse_time("dischtime"),
        "_deathtime": parse_time("deathtime"),
    }
    checks = subject_checks(subjects) + [
        ("missing hadm_id", pl.col("hadm_id").is_null()),
        ("unparseable hadm_id", pl.col("_hadm").is_null()),
        ("duplicate hadm_id", pl.col("_hadm").is_first_distinct().not_()),
        *time_checks("admittime"),
        *time_checks("dischtime"),
    ]
    kept = classify(admissions, parsed, checks, count)
    backwards = kept.filter(pl.col("_dischtime") < pl.col("_admittime")).height
    if backwards:
        count.warnings["dischtime before admittime (kept)"] += backwards
    hadm = pl.col("_hadm")
    out = pl.concat(
        [
            events(kept, pl.col("_admittime"), code_of("HOSPITAL_ADMISSION", pl.col("admission_type")), hadm=hadm),
            events(kept, pl.col("_dischtime"), code_of("HOSPITAL_DISCHARGE", pl.col("discharge_location")), hadm=hadm),
            events(
                kept.filter(pl.col("_deathtime").is_not_null()), pl.col("_deathtime"), pl.lit("MEDS_DEATH"), hadm=hadm
            ),
        ]
    )
    table = kept.select(
        hadm_id=hadm,
        subject_id=pl.col("_subject"),
        admit=pl.col("_admittime"),
        disch=pl.col("_dischtime"),
        died=pl.col("_deathtime").is_not_null(),
    )
    return out, table


def rules(ctx: Context) -> list[TableRule]:
    """The streamed tables, in the order they are read."""
    known = subject_checks(ctx.subjects)
    hadm_times = ctx.admissions.select("hadm_id", "disch")
    hadm = pl.col("_hadm")

    def icustays(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {"_hadm": parse_int("hadm_id"), "_intime": parse_time("intime"), "_outtime": parse_time("outtime")}
        kept = classify(frame, parsed, known + time_checks("intime") + time_checks("outtime"), count)
        return pl.concat(
            [
                events(kept, pl.col("_intime"), code_of("ICU_ADMISSION", pl.col("first_careunit")), hadm=hadm),
                events(kept, pl.col("_outtime"), pl.lit("ICU_DISCHARGE"), hadm=hadm),
            ]
        )

    def transfers(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {"_hadm": parse_int("hadm_id"), "_intime": parse_time("intime")}
        kept = classify(frame, parsed, known + time_checks("intime"), count)
        return events(
            kept, pl.col("_intime"), code_of("TRANSFER_TO", pl.col("eventtype"), pl.col("careunit")), hadm=hadm
        )

    def diagnoses(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        # MIMIC-IV gives diagnoses no time: they are billed at discharge, so they are timed there.
        frame = with_discharge(frame, hadm_times)
        checks = (
            known
            + discharge_checks()
            + [
                ("missing icd_code", pl.col("icd_code").is_null()),
                ("missing icd_version", pl.col("icd_version").is_null()),
            ]
        )
        kept = classify(frame, {}, checks, count)
        return events(
            kept, pl.col("disch"), code_of("DIAGNOSIS", "ICD", pl.col("icd_version"), pl.col("icd_code")), hadm=hadm
        )

    def procedures(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        frame = with_discharge(frame, hadm_times)
        checks = (
            known
            + time_checks("chartdate")
            + [
                ("missing icd_code", pl.col("icd_code").is_null()),
                ("missing icd_version", pl.col("icd_version").is_null()),
            ]
        )
        kept = classify(frame, {"_chartdate": parse_date_end("chartdate")}, checks, count)
        # End of the procedure's day, but never after the discharge of its admission.
        time = pl.min_horizontal(pl.col("_chartdate"), pl.col("disch"))
        return events(kept, time, code_of("PROCEDURE", "ICD", pl.col("icd_version"), pl.col("icd_code")), hadm=hadm)

    def prescriptions(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {"_hadm": parse_int("hadm_id"), "_starttime": parse_time("starttime")}
        checks = known + time_checks("starttime") + [("missing drug", pl.col("drug").is_null())]
        kept = classify(frame, parsed, checks, count)
        return events(kept, pl.col("_starttime"), code_of("MEDICATION", pl.col("drug")), hadm=hadm)

    def labevents(frame: pl.DataFrame, count: TableCount) -> pl.DataFrame:
        parsed = {
            "_hadm": parse_int("hadm_id"),
            "_charttime": parse_time("charttime"),
            "_item": parse_int("itemid"),
        }
        checks = (
            known
            + time_checks("charttime")
            + item_checks()
            + [("unknown itemid", ~pl.col("_item").is_in(ctx.lab_items.implode()))]
        )
        # A garbled valuenum falls back to `value` read as a number.
        kept = number_or_text(classify(frame, parsed, checks, count), "valuenum", "value", count)
        return events(
            kept,
            pl.col("_charttime"),
            code_of("LAB", pl.col("itemid"), pl.col("valueuom")),
            numeric=pl.col("_number"),
            text=pl.col("_text"),
            hadm=hadm,
        )

    convert = {
        "icu/icustays": icustays,
        "hosp/transfers": transfers,
        "hosp/diagnoses_icd": diagnoses,
        "hosp/procedures_icd": procedures,
        "hosp/prescriptions": prescriptions,
        "hosp/labevents": labevents,
    }
    return [TableRule(name, columns, convert[name]) for name, columns in STREAMED_COLUMNS.items()]


# Streamed tables and the columns they need, in the order they are read.
STREAMED_COLUMNS = {
    "icu/icustays": ("subject_id", "hadm_id", "first_careunit", "intime", "outtime"),
    "hosp/transfers": ("subject_id", "hadm_id", "eventtype", "careunit", "intime"),
    "hosp/diagnoses_icd": ("subject_id", "hadm_id", "icd_code", "icd_version"),
    "hosp/procedures_icd": ("subject_id", "hadm_id", "chartdate", "icd_code", "icd_version"),
    "hosp/prescriptions": ("subject_id", "hadm_id", "starttime", "drug"),
    "hosp/labevents": ("subject_id", "hadm_id", "itemid", "charttime", "value", "valuenum", "valueuom"),
}
# Small tables, read whole before the streamed ones: always needed.
PATIENTS_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year", "dod")
ADMISSIONS_COLUMNS = (
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "deathtime",
    "admission_type",
    "discharge_location",
)
# Dictionaries, each read when the table it describes is.
DICTIONARY_COLUMNS = {
    "hosp/d_labitems": ("itemid", "label", "fluid", "category"),
    "hosp/d_icd_diagnoses": ("icd_code", "icd_version", "long_title"),
    "hosp/d_icd_procedures": ("icd_code", "icd_version", "long_title"),
}


def code_descriptions(dictionaries: dict[str, pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """(code prefix, description, parent codes) frames from the d_ tables read, matched to event codes later."""
    labs = dictionaries.get("hosp/d_labitems")
    if labs is not None:
        yield labs.select(
            prefix=pl.concat_str([pl.lit("LAB//"), pl.col("itemid"), pl.lit("//")]),
            description=pl.concat_str(
                [
                    pl.col("label"),
                    pl.lit(" ("),
                    pl.col("fluid").fill_null(""),
                    pl.lit(", "),
                    pl.col("category").fill_null(""),
                    pl.lit(")"),
                ]
            ),
            parent=pl.lit(None, pl.String),
        )
    for name, kind, system in (
        ("hosp/d_icd_diagnoses", "DIAGNOSIS", "CM"),
        ("hosp/d_icd_procedures", "PROCEDURE", "PCS"),
    ):
        table = dictionaries.get(name)
        if table is None:
            continue
        version = pl.col("icd_version")
        code = pl.col("icd_code")
        system_name = (
            pl.when(version == "9")
            .then(pl.lit("ICD9" + ("CM" if kind == "DIAGNOSIS" else "Proc")))
            .otherwise(pl.lit("ICD10" + system))
        )
        yield table.select(
            prefix=pl.concat_str([pl.lit(f"{kind}//ICD//"), version, pl.lit("//"), code]),
            description=pl.col("long_title"),
            parent=pl.concat_str([system_name, pl.lit("/"), code]),
        )
