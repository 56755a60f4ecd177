"""Reading a results table: bad rows left out and counted, a wrong column named."""

import numpy as np
import polars as pl
import pytest

from analysis.table import TableError, prepare
from tests.helpers import chinchilla_like


def test_input_hygiene_inf_duplicates_empty_status_and_singletons():
    frame = chinchilla_like()
    with pytest.raises(TableError, match="column 'loss' has 1 row\\(s\\) that are missing, NaN, infinite"):
        prepare(frame.with_columns(loss=pl.when(pl.int_range(pl.len()) == 0).then(float("inf")).otherwise("loss")))
    doubled = prepare(pl.concat([frame, frame.head(4)]))
    assert doubled.frame.height == frame.height and any("4 exact duplicate row(s)" in w for w in doubled.warnings)
    statuses = prepare(
        frame.with_columns(status=pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.lit("ok")))
    )
    assert "left out 2 run(s) whose status is not ok (missing: 2)" in statuses.notes
    # a FLOP spread wider than the tolerance splits a budget: warned, and --budget-tolerance mends it
    jitter = pl.Series(np.where(np.arange(frame.height) % 9 == 4, 1.15, 1.0))  # one run per budget 15% over
    spread = frame.drop("budget").with_columns(flops=6 * pl.col("params") * pl.col("tokens") * jitter)
    narrow = prepare(spread, budget_tolerance=0.1)
    assert any("budget(s) of a single run" in w for w in narrow.warnings) and len(narrow.budgets) == 12
    wide = prepare(spread, budget_tolerance=0.2)
    assert not wide.warnings and len(wide.budgets) == 6


def test_bad_input_names_the_column_and_the_rows():
    frame = chinchilla_like()
    with pytest.raises(TableError, match="missing column 'loss'.*--loss-col"):
        prepare(frame.drop("loss"), "runs.csv")
    with pytest.raises(
        TableError, match="runs.csv: column 'params' has 2 row\\(s\\) that are missing, NaN, infinite or not positive"
    ):
        prepare(
            frame.with_columns(params=pl.when(pl.int_range(pl.len()) < 2).then(-1.0).otherwise("params")), "runs.csv"
        )
    with pytest.raises(TableError, match="no column 'Model Size' to map"):
        prepare(frame, "runs.csv", {"params": "Model Size"})
    table = prepare(
        frame.with_columns(status=pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("diverged")).otherwise(pl.lit("ok")))
    )
    assert "left out 3 run(s) whose status is not ok (diverged: 3)" in table.notes
    assert table.frame.height == frame.height - 3
    # a mapped column replaces one of the same name (runs.parquet has params and params_nonembed)
    mapped = prepare(
        frame.with_columns(params_nonembed=pl.col("params") / 2), "runs.parquet", {"params": "params_nonembed"}
    )
    assert mapped.frame["params"].to_list() == (frame["params"] / 2).to_list()
