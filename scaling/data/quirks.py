"""What real records carry besides the patient's story, found and counted the same way on every source.

PREP/events keeps the events as the source had them (MIMIC-IV's CSVs through ehrscale's reader, or any MEDS
dataset, the reference MIMIC-IV ETL's output included). The timelines, lab bags and tasks are made from them after
these checks, shard by shard (a subject is whole in one shard), and `data prepare` counts each in the manifest's
`quirks` section with what was done:

- exact duplicate events (same subject, time, code, number and text: all a model sees of an event) are dropped,
  one kept: a repeated identical token carries nothing, and the reference ETL drops identical rows too;
- a number written as text (the reference ETL keeps outpatient BMI, weight and height only as text, and a lab's
  value where it has no valuenum) is read as the number it is, counted: otherwise each distinct number would be
  a text token of its own;
- a number outside its quantity's physiological range (`PLAUSIBLE`: a BMI of 4649.4) is removed from its event,
  which is kept: an entry error would otherwise become a value token and a lab eCDF's top;
- events of an admission timed before it began or after it ended (prescriptions started in the emergency
  department, orders entered after discharge) and timed events without an admission (outpatient labs and visits)
  are counted and kept: they happened, and their times say when, so no prediction sees them early.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl

from scaling.data.timelines import category

EVENT = ("subject_id", "time", "code", "numeric_value", "text_value")  # what a model reads of an event
ADMISSION, DISCHARGE = "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE"


@dataclass(frozen=True)
class Plausible:
    """The physiological range of one quantity; `codes` is a regular expression over event codes."""

    name: str
    codes: str
    low: float
    high: float


def _icu_items(*itemids: int) -> str:
    """MIMIC-IV ICU items as ehrscale codes them (CHART//<itemid>//<unit>) and as the reference ETL does (LAB//...)."""
    return rf"^(?:CHART|LAB)//(?:{'|'.join(map(str, itemids))})(?://|$)"


# Wide on purpose: only values no living patient has are removed (the outpatient record's BMI of 4649.4 is one).
PLAUSIBLE = (
    Plausible("BMI (kg/m2)", r"^(?:OMR//)?BMI \(kg/m2\)$", 5, 150),  # the lowest adult BMIs reported are about 7
    Plausible("weight (lbs)", r"^(?:OMR//)?Weight \(Lbs\)$", 1, 1500),
    Plausible("height (inches)", r"^(?:OMR//)?Height \(Inches\)$", 8, 110),
    Plausible("outpatient blood pressure (mmHg)", r"^OMR//Blood Pressure.*//(?:SYSTOLIC|DIASTOLIC)$", 10, 400),
    Plausible("heart rate (bpm)", _icu_items(220045), 0, 350),
    Plausible("respiratory rate (/min)", _icu_items(220210), 0, 150),
    Plausible("SpO2 (%)", _icu_items(220277), 0, 100),
    Plausible("temperature (F)", _icu_items(223761), 60, 115),
    Plausible("temperature (C)", _icu_items(223762), 15, 46),
    Plausible("blood pressure (mmHg)", _icu_items(220050, 220051, 220052, 220179, 220180, 220181), 0, 400),
    Plausible("weight (kg)", _icu_items(224639, 226512), 0.2, 700),
    Plausible("height (cm)", _icu_items(226730), 20, 280),
)


class Audit:
    """Checks shard after shard (`check`), adding up what it found; `section()` is the manifest's `quirks`."""

    def __init__(self) -> None:
        self.duplicates: Counter = Counter()  # by category
        self.numbers_in_text: Counter = Counter()  # by category
        self.checked: Counter = Counter()  # numbers checked against each range
        self.removed: Counter = Counter()  # numbers removed, by range
        self.before_admission: Counter = Counter()  # by category
        self.after_discharge: Counter = Counter()
        self.without_admission: Counter = Counter()
        self.has_admissions = True  # every shard had a hadm_id column

    def check(self, events: pl.DataFrame) -> pl.DataFrame:
        """One shard's events (EVENT columns, and hadm_id where the source has it) -> the events models are made
        from (EVENT columns): duplicates dropped, numbers in text read, implausible numbers removed; the rest
        counted."""
        duplicate = _repeats(events)
        self.duplicates.update(_by_category(events.filter(duplicate)))
        events = events.filter(~duplicate)
        if "hadm_id" in events.columns:
            self._count_admissions(events)
        else:
            self.has_admissions = False
        return self._remove_implausible(self._read_numbers_in_text(events.select(EVENT)))

    def _read_numbers_in_text(self, events: pl.DataFrame) -> pl.DataFrame:
        number = pl.col("text_value").str.strip_chars().cast(pl.Float64, strict=False)
        written = pl.col("numeric_value").is_null() & number.is_finite().fill_null(False)
        self.numbers_in_text.update(_by_category(events.filter(written)))
        return events.with_columns(
            numeric_value=pl.when(written).then(number.cast(pl.Float32)).otherwise("numeric_value"),
            text_value=pl.when(written).then(None).otherwise("text_value"),
        )

    def _remove_implausible(self, events: pl.DataFrame) -> pl.DataFrame:
        codes = events.select(pl.col("code").unique())["code"]
        ranges = [(r, codes.filter(codes.str.contains(r.codes))) for r in PLAUSIBLE]
        ranges = [(r, matched) for r, matched in ranges if len(matched)]
        if not ranges:
            return events
        bounds = pl.DataFrame(
            [(code, r.name, r.low, r.high) for r, matched in ranges for code in matched],
            schema={"code": pl.String, "_range": pl.String, "_low": pl.Float64, "_high": pl.Float64},
            orient="row",
        )
        flagged = events.join(bounds, on="code", how="left", maintain_order="left")
        value = pl.col("numeric_value").cast(pl.Float64)
        outside = pl.col("_range").is_not_null() & value.is_not_null() & ~value.is_between("_low", "_high")
        checked = flagged.filter(pl.col("_range").is_not_null() & value.is_not_null())
        self.checked.update(dict(checked.group_by("_range").len().iter_rows()))
        self.removed.update(dict(flagged.filter(outside).group_by("_range").len().iter_rows()))
        return flagged.with_columns(numeric_value=pl.when(outside).then(None).otherwise("numeric_value")).select(EVENT)

    def _count_admissions(self, events: pl.DataFrame) -> None:
        timed = events.filter(pl.col("time").is_not_null())
        code = pl.col("code")
        spans = (
            timed.filter(pl.col("hadm_id").is_not_null())
            .group_by("hadm_id")
            .agg(
                _admit=pl.col("time").filter(code.str.starts_with(ADMISSION)).min(),
                _disch=pl.col("time").filter(code.str.starts_with(DISCHARGE)).max(),
            )
        )
        bounds = code.str.starts_with(ADMISSION) | code.str.starts_with(DISCHARGE)  # the span itself
        linked = timed.filter(pl.col("hadm_id").is_not_null() & ~bounds).join(spans, on="hadm_id", how="inner")
        self.before_admission.update(_by_category(linked.filter(pl.col("time") < pl.col("_admit"))))
        self.after_discharge.update(_by_category(linked.filter(pl.col("time") > pl.col("_disch"))))
        self.without_admission.update(_by_category(timed.filter(pl.col("hadm_id").is_null())))

    def section(self) -> dict:
        """The manifest's `quirks`: each finding's counts and what was done about it."""
        ranges = {r.name: r for r in PLAUSIBLE}
        sorted_counts = lambda counter: dict(sorted(counter.items()))  # noqa: E731
        section = {
            "duplicate_events": {
                "done": "dropped, one kept (same subject, time, code, number and text)",
                "total": sum(self.duplicates.values()),
                "by_category": sorted_counts(self.duplicates),
            },
            "numbers_in_text": {
                "done": "read as numbers (a text value that is a plain number, where the event has no number)",
                "total": sum(self.numbers_in_text.values()),
                "by_category": sorted_counts(self.numbers_in_text),
            },
            "implausible_values": {
                "done": "the number removed, the event kept",
                "total": sum(self.removed.values()),
                "by_quantity": {
                    name: {
                        "range": [ranges[name].low, ranges[name].high],
                        "checked": n,
                        "removed": self.removed.get(name, 0),
                    }
                    for name, n in sorted(self.checked.items())
                },
            },
        }
        if not self.has_admissions:
            section["admissions"] = {"done": "not checked: the events have no hadm_id column"}
            return section
        section["admissions"] = {
            "done": "kept: the events happened when their times say (before admission: the emergency department; "
            "after discharge: late orders and results)",
            "before_admission": sorted_counts(self.before_admission),
            "after_discharge": sorted_counts(self.after_discharge),
            "without_admission": sorted_counts(self.without_admission),
        }
        return section


def _repeats(events: pl.DataFrame) -> pl.Series:
    """Whether each event repeats an earlier one exactly (EVENT columns). Rows are compared in full only where
    their hashes repeat: a struct of the whole shard would take three times the memory of the events."""
    maybe = np.flatnonzero(events.select(EVENT).hash_rows().is_duplicated().to_numpy())
    repeats = np.zeros(events.height, dtype=bool)
    if maybe.size:
        candidates = events[maybe].select(EVENT)  # in their order, so the first of equal rows is kept
        repeats[maybe] = (~candidates.select(pl.struct(EVENT).is_first_distinct()).to_series()).to_numpy()
    return pl.Series(repeats)


def _by_category(events: pl.DataFrame) -> dict[str, int]:
    """Events counted by category (worked out once per distinct code)."""
    per_code = events.group_by("code").len()
    return dict(per_code.group_by(category(pl.col("code"))).agg(pl.col("len").sum()).iter_rows())


def summary(section: dict) -> str:
    """One line for the end of `data prepare`."""
    duplicates = section["duplicate_events"]
    implausible = section["implausible_values"]
    parts = [
        f"{duplicates['total']:,} duplicate events dropped",
        f"{section['numbers_in_text']['total']:,} numbers written as text read as numbers",
    ]
    removed = [
        f"{name} outside [{q['range'][0]:g}, {q['range'][1]:g}] {q['removed']:,}"
        for name, q in implausible["by_quantity"].items()
        if q["removed"]
    ]
    parts.append(
        f"{implausible['total']:,} implausible values removed" + (f" ({'; '.join(removed)})" if removed else "")
    )
    admissions = section["admissions"]
    if "before_admission" in admissions:
        top = lambda counts: ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])  # noqa: E731
        for key, label in (
            ("before_admission", "before their admission"),
            ("after_discharge", "after their discharge"),
            ("without_admission", "without an admission"),
        ):
            counts = admissions[key]
            parts.append(f"kept {sum(counts.values()):,} events {label}" + (f" ({top(counts)})" if counts else ""))
    else:
        parts.append(admissions["done"])
    return "events: " + "; ".join(parts)
