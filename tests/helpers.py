"""Hand-built MEDS events for exact tests."""

from datetime import datetime, timedelta

import polars as pl

T0 = datetime(2150, 1, 1, 8, 0, 0)


def event_frame(rows: list[tuple]) -> pl.DataFrame:
    """(subject_id, time or None, code, numeric_value, text_value) rows -> an events frame sorted like MEDS."""
    frame = pl.DataFrame(
        rows,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.String,
            "numeric_value": pl.Float32,
            "text_value": pl.String,
        },
        orient="row",
    )
    return frame.sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


def at(**offset) -> datetime:
    return T0 + timedelta(**offset)
