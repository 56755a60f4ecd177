"""The user's own tasks: MEDS label files -> a task of the prepared dataset (`data prepare --labels NAME=DIR`).

A label file follows the MEDS label schema: `subject_id`, `prediction_time`, `boolean_value` (and optionally
`integer_value`, `float_value`, `categorical_value`). ehrscale evaluates boolean tasks; every row it cannot use
is counted by reason, never dropped silently: a subject the dataset does not have, a prediction time before
the subject's first timed event or after its last, a row without a boolean value, a duplicate (one kept) or
two rows at one time that disagree (both dropped).

Which events a model may see is a per-task setting, `inputs`: "at_or_before" (MEDS's convention, the default
for label files: data at the prediction time may be used) or "before" (strictly before, the built-in tasks'
rule).
"""

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from scaling.data.csv_stream import SourceError
from scaling.data.tasks import ALIASES, TASKS

INPUTS = ("at_or_before", "before")
LABEL_INPUTS = "at_or_before"  # MEDS: a model may use the data at or before prediction_time
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
OTHER_VALUES = ("integer_value", "float_value", "categorical_value")


@dataclass(frozen=True)
class LabelSource:
    """A task from MEDS label files: its name, where the files are, and which events its inputs may use."""

    name: str
    path: Path
    inputs: str = LABEL_INPUTS


def check_name(name: str) -> str | None:
    """Why a task name cannot be used, or None. MEDS-DEV's task paths (mortality/in_icu/first_24h) are fine."""
    if not NAME.match(name) or ".." in name.split("/"):
        return (
            f"task name {name!r}: use letters, digits, '_', '.', '-', with '/' between parts "
            "(like MEDS-DEV's mortality/in_icu/first_24h)"
        )
    return None


def parse_labels_option(values: list[str], inputs: list[str]) -> tuple[LabelSource, ...]:
    """`--labels NAME=DIR` (repeatable) and `--label-inputs NAME=before|at_or_before` into LabelSources."""
    sources = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SourceError(f"--labels {value!r}: give NAME=DIR (a task name, then the folder of its label files)")
        reason = check_name(name)
        if reason:
            raise SourceError(f"--labels {value!r}: {reason}")
        if name in sources:
            raise SourceError(f"--labels: task {name!r} given twice")
        if name in TASKS or name in ALIASES:
            raise SourceError(f"--labels {value!r}: {name!r} is a built-in task's name; give yours another")
        sources[name] = LabelSource(name=name, path=Path(path))
    for value in inputs:
        name, sep, rule = value.partition("=")
        if not sep or rule not in INPUTS:
            raise SourceError(f"--label-inputs {value!r}: give NAME={' or NAME='.join(INPUTS)}")
        if name not in sources:
            raise SourceError(f"--label-inputs {value!r}: no --labels task named {name!r}")
        sources[name] = LabelSource(name=name, path=sources[name].path, inputs=rule)
    return tuple(sources.values())


def label_files(source: LabelSource) -> list[Path]:
    """The parquet files of a label source (a file, or a folder searched recursively), columns checked."""
    path = source.path
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if not path.exists():
        raise SourceError(f"--labels {source.name}={path}: no such file or folder")
    if not files:
        raise SourceError(f"--labels {source.name}={path}: no .parquet label files in it")
    for file in files:
        try:
            schema = pq.read_schema(file)
        except Exception as error:  # pyarrow raises several kinds for a file that is not parquet
            raise SourceError(f"{file}: not a parquet file ({error})") from error
        for column in ("subject_id", "prediction_time"):
            if column not in schema.names:
                raise SourceError(
                    f"{file}: no column '{column}' (MEDS labels need subject_id, prediction_time and boolean_value; "
                    f"it has {', '.join(schema.names)})"
                )
        if "boolean_value" not in schema.names:
            others = [c for c in OTHER_VALUES if c in schema.names]
            raise SourceError(
                f"{file}: no column 'boolean_value'"
                + (f" (it has {', '.join(others)} only): ehrscale evaluates boolean tasks" if others else "")
            )
    return files


def _read(file: Path) -> pl.DataFrame:
    """One label file's rows, types checked, with a note of any other value the row carries."""
    frame = pl.read_parquet(file)
    types = {
        "subject_id": frame.schema["subject_id"].is_integer(),
        "prediction_time": isinstance(frame.schema["prediction_time"], pl.Datetime),
    }
    label = frame.schema["boolean_value"]
    if label != pl.Boolean:
        zero_one = label.is_integer() and frame["boolean_value"].drop_nulls().is_in([0, 1]).all()
        types["boolean_value"] = zero_one
    for column, ok in types.items():
        if not ok:
            kind = frame.schema[column]
            raise SourceError(f"{file}: column '{column}' has type {kind}, which MEDS labels do not use there")
    other = [c for c in OTHER_VALUES if c in frame.columns]
    return frame.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").dt.replace_time_zone(None).cast(pl.Datetime("us")),
        pl.col("boolean_value").cast(pl.Boolean),
        other_value=pl.any_horizontal([pl.col(c).is_not_null() for c in other]) if other else pl.lit(False),
    )


def read_labels(source: LabelSource, spans: pl.DataFrame) -> tuple[pl.DataFrame, int, dict[str, int]]:
    """A label source's usable rows, the rows read, and the rows dropped by reason.

    `spans`: subject_id, first, last (the subject's first and last timed event)."""
    rows = pl.concat([_read(f) for f in label_files(source)])
    dropped: dict[str, int] = {}

    def drop(reason: str, bad: pl.Expr) -> None:
        nonlocal rows
        n = rows.filter(bad).height
        if n:
            dropped[reason] = dropped.get(reason, 0) + n
        rows = rows.filter(~bad)

    read = rows.height
    drop("no subject_id or prediction_time", pl.col("subject_id").is_null() | pl.col("prediction_time").is_null())
    drop("a non-boolean value only (integer, float or categorical)", pl.col("boolean_value").is_null() & "other_value")
    drop("no boolean_value", pl.col("boolean_value").is_null())
    rows = rows.join(spans, on="subject_id", how="left")
    drop("subject not in the dataset", pl.col("known").is_null())
    drop("subject has no timed events", pl.col("first").is_null())
    drop("prediction_time before the subject's first event", pl.col("prediction_time") < pl.col("first"))
    drop("prediction_time after the subject's last event", pl.col("prediction_time") > pl.col("last"))
    keys = ["subject_id", "prediction_time"]
    rows = rows.select(*keys, "boolean_value")  # from here no nulls: every filter below sees true or false
    conflicting = pl.col("boolean_value").n_unique().over(keys) > 1
    drop("labels that disagree at one subject and time (all dropped)", conflicting)
    duplicates = rows.height - rows.unique(keys).height
    if duplicates:
        dropped["duplicate rows (one kept)"] = duplicates
    rows = rows.unique(keys, keep="first").sort(keys)
    return rows, read, dropped


def subject_spans(events: pl.LazyFrame) -> pl.DataFrame:
    """Each subject's first and last timed event (subjects with only static events: nulls)."""
    return (
        events.group_by("subject_id").agg(first=pl.col("time").min(), last=pl.col("time").max(), known=pl.lit(True))
    ).collect(engine="streaming")
