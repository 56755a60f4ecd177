"""Downstream tasks: cohorts and labels in MEDS label form (subject_id, prediction_time, boolean_value).

Every task predicts at a fixed time after an admission (or ICU admission); model inputs use only
events strictly before `prediction_time`, labels only what happens after it. The rules are in
docs/data.md. Admissions pair each HOSPITAL_ADMISSION with the subject's next HOSPITAL_DISCHARGE;
ICU stays pair ICU_ADMISSION with the next ICU_DISCHARGE; death is the subject's first MEDS_DEATH.
"""

from dataclasses import dataclass

import meds
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

LABEL_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")), ("boolean_value", pa.bool_())]
)


@dataclass(frozen=True)
class TaskConfig:
    """Times and thresholds of the built-in tasks."""

    prediction_hours: float = 24.0
    long_stay_days: float = 7.0
    icu_gap_hours: float = 48.0
    # Creatinine (item 50912) as ehrscale writes it (LAB//50912//mg/dL) and as the reference MIMIC-IV MEDS ETL
    # does (LAB//RESULT//50912//mg/dL).
    creatinine_code: str = r"^LAB//(?:RESULT//)?50912//"
    creatinine_threshold: float = 1.3
    creatinine_window_hours: float = 48.0


TASKS = ("in_hospital_mortality", "long_stay", "icu_mortality", "abnormal_creatinine")
BUILT_IN_INPUTS = "before"  # the built-in tasks' models see events strictly before prediction_time
# MEDS-DEV task names that mean a built-in task (docs/data.md lists the differences in definition).
ALIASES = {"mortality/in_icu/first_24h": "icu_mortality"}


# (start, end) code prefixes of a hospital stay and an ICU stay
HOSPITAL_STAY = ("HOSPITAL_ADMISSION//", "HOSPITAL_DISCHARGE//")
ICU_STAY = ("ICU_ADMISSION//", "ICU_DISCHARGE")


def _pairs(events: pl.LazyFrame, start_prefix: str, end_code_prefix: str) -> pl.LazyFrame:
    """Each start event with the same subject's first end event at or after it."""
    starts = (
        events.filter(pl.col("code").str.starts_with(start_prefix)).select("subject_id", start="time").sort("start")
    )
    ends = events.filter(pl.col("code").str.starts_with(end_code_prefix)).select("subject_id", end="time").sort("end")
    return starts.join_asof(
        ends, left_on="start", right_on="end", by="subject_id", strategy="forward", check_sortedness=False
    ).filter(pl.col("end").is_not_null())


def _deaths(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.filter(pl.col("code") == meds.death_code).group_by("subject_id").agg(death=pl.col("time").min())


def _label_frame(frame: pl.DataFrame, label: pl.Expr) -> pl.DataFrame:
    return (
        frame.select(
            pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us")), boolean_value=label
        )
        .unique(["subject_id", "prediction_time"], keep="first")
        .sort("subject_id", "prediction_time")
    )


def build_tasks(events: pl.LazyFrame, config: TaskConfig) -> tuple[dict[str, pl.DataFrame], dict[str, dict[str, int]]]:
    """All task label frames, and per task the cohort exclusions by reason."""
    # One streaming pass keeps the few events the tasks look at (stays, deaths, creatinine): memory follows them.
    needed = pl.any_horizontal(
        *(pl.col("code").str.starts_with(prefix) for prefix in (*HOSPITAL_STAY, *ICU_STAY)),
        pl.col("code") == meds.death_code,
        pl.col("code").str.contains(config.creatinine_code) & pl.col("numeric_value").is_not_null(),
    )
    events = (
        events.filter(needed).select("subject_id", "time", "code", "numeric_value").collect(engine="streaming").lazy()
    )
    deaths = _deaths(events)
    predict = pl.duration(hours=config.prediction_hours)
    admissions = (
        _pairs(events, *HOSPITAL_STAY)
        .join(deaths, on="subject_id", how="left")
        .with_columns(prediction_time=pl.col("start") + predict)
        .collect()
    )
    exclusions: dict[str, dict[str, int]] = {}
    # In hospital at the prediction time: discharged after it, and not dead at or before it.
    gone = pl.col("end") <= pl.col("prediction_time")
    dead = pl.col("death").is_not_null() & (pl.col("death") <= pl.col("prediction_time"))
    cohort = admissions.filter(~gone & ~dead)
    hospital_exclusions = {
        "discharged by the prediction time": admissions.filter(gone & ~dead).height,
        "died by the prediction time": admissions.filter(dead).height,
    }
    labels = {}
    labels["in_hospital_mortality"] = _label_frame(
        cohort, pl.col("death").is_not_null() & (pl.col("death") <= pl.col("end"))
    )
    exclusions["in_hospital_mortality"] = hospital_exclusions
    labels["long_stay"] = _label_frame(
        cohort, (pl.col("end") - pl.col("start")) > pl.duration(days=config.long_stay_days)
    )
    exclusions["long_stay"] = hospital_exclusions

    # ICU mortality: predict 24 h into the stay; the stay must outlast the gap (alive and in the ICU at 48 h).
    stays = (
        _pairs(events, *ICU_STAY)
        .join(deaths, on="subject_id", how="left")
        .with_columns(
            prediction_time=pl.col("start") + predict, gap_end=pl.col("start") + pl.duration(hours=config.icu_gap_hours)
        )
        .collect()
    )
    short = pl.col("end") <= pl.col("gap_end")
    died_early = pl.col("death").is_not_null() & (pl.col("death") <= pl.col("gap_end"))
    labels["icu_mortality"] = _label_frame(
        stays.filter(~short & ~died_early), pl.col("death").is_not_null() & (pl.col("death") <= pl.col("end"))
    )
    exclusions["icu_mortality"] = {
        "died within the gap": stays.filter(died_early).height,
        "left the ICU within the gap": stays.filter(short & ~died_early).height,
    }

    # Abnormal creatinine: some creatinine > threshold in (prediction, prediction + window]; needs a measurement there.
    window = pl.duration(hours=config.creatinine_window_hours)
    creat = events.filter(
        pl.col("code").str.contains(config.creatinine_code) & pl.col("numeric_value").is_not_null()
    ).select("subject_id", t="time", v="numeric_value")
    measured = (
        cohort.lazy()
        .join(creat, on="subject_id", how="inner")
        .filter((pl.col("t") > pl.col("prediction_time")) & (pl.col("t") <= pl.col("prediction_time") + window))
        .group_by("subject_id", "prediction_time")
        .agg(high=(pl.col("v") > config.creatinine_threshold).any())
        .collect()
    )
    labels["abnormal_creatinine"] = _label_frame(measured, pl.col("high"))
    exclusions["abnormal_creatinine"] = {
        **hospital_exclusions,
        "no creatinine in the window": cohort.height - measured.height,
    }
    return labels, exclusions


def sample_rows(rows: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded sample of `n` cohort rows, in their order (all of them when `n` is 0 or at least their number)."""
    if 0 < n < rows.height:
        return rows.with_row_index("_row").sample(n, seed=seed).sort("_row").drop("_row")
    return rows


def write_tasks(folder, labels: dict[str, pl.DataFrame], splits: pl.DataFrame) -> dict[str, dict]:
    """tasks/<task>.parquet in MEDS label form (a task path like a/b/c in folders); per task counts by split."""
    summary = {}
    for name, frame in labels.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frame.to_arrow().cast(LABEL_SCHEMA), folder / f"{name}.parquet")
        by_split = (
            frame.join(splits, on="subject_id", how="left")
            .group_by("split")
            .agg(n=pl.len(), positives=pl.col("boolean_value").sum())
        )
        summary[name] = {
            row["split"]: {"n": row["n"], "positives": int(row["positives"])} for row in by_split.iter_rows(named=True)
        }
    return summary
