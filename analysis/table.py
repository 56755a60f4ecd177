"""Read a results table (parquet or CSV) into the columns the fits need, with clear errors.

Needs `params`, `tokens`, `loss`; uses `flops`, `budget`, `status`, `family` and `auroc_<task>` when
present. Column names can be mapped (`{"params": "Model Size"}`). Rows whose status is not `ok` are
left out with a note. Missing `flops` is 6 x params x tokens; missing `budget` groups runs whose
FLOPs agree within a tolerance (in log space).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

REQUIRED = ("params", "tokens", "loss")


class TableError(Exception):
    """A results table the analysis cannot use; the message names the column and what is wrong."""


@dataclass(frozen=True)
class Table:
    """The usable rows, and notes on what was left out and why."""

    frame: pl.DataFrame  # params, tokens, loss, flops, budget (+ family, auroc_* when present)
    notes: tuple[str, ...] = field(default_factory=tuple)
    flops_from: str = "flops column"

    @property
    def budgets(self) -> list[float]:
        return sorted(self.frame["budget"].unique().to_list())


def read(path: Path, columns: dict[str, str] | None = None, budget_tolerance: float = 0.1) -> Table:
    """Load, rename, validate and group a results table."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=10_000)
    return prepare(frame, str(path), columns, budget_tolerance)


def prepare(
    frame: pl.DataFrame, name: str = "table", columns: dict[str, str] | None = None, budget_tolerance: float = 0.1
) -> Table:
    renames = {source: target for target, source in (columns or {}).items()}
    missing_sources = [s for s in renames if s not in frame.columns]
    if missing_sources:
        raise TableError(
            f"{name}: no column {', '.join(repr(s) for s in missing_sources)} to map (columns: {', '.join(frame.columns)})"
        )
    # A mapped column replaces a column of the target's name (runs.parquet has both params and params_nonembed).
    replaced = [target for source, target in renames.items() if target in frame.columns and target not in renames]
    frame = frame.drop(replaced).rename(renames)
    notes = []
    flops_from = "flops column"
    if "flops" not in frame.columns and "budget" in frame.columns:
        frame = frame.with_columns(flops=pl.col("budget"))
        flops_from = "budget column"
        notes.append("flops = budget: the table has no flops column")
    if "params" not in frame.columns and {"flops", "tokens"} <= set(frame.columns):
        frame = frame.with_columns(params=pl.col("flops") / (6 * pl.col("tokens")))
        notes.append("params = flops / (6 x tokens): the table has no params column")
    if "tokens" not in frame.columns and {"flops", "params"} <= set(frame.columns):
        frame = frame.with_columns(tokens=pl.col("flops") / (6 * pl.col("params")))
        notes.append("tokens = flops / (6 x params): the table has no tokens column")
    for column in REQUIRED:
        if column not in frame.columns:
            raise TableError(
                f"{name}: missing column '{column}' (columns: {', '.join(frame.columns)}); "
                f"map one with --{column}-col NAME"
            )
    if "status" in frame.columns:
        bad = frame.filter(pl.col("status") != "ok")
        if bad.height:
            reasons = ", ".join(f"{s}: {n}" for s, n in bad.group_by("status").len().sort("status").iter_rows())
            notes.append(f"left out {bad.height} run(s) whose status is not ok ({reasons})")
        frame = frame.filter(pl.col("status") == "ok")
    if "flops" not in frame.columns:
        frame = frame.with_columns(flops=6.0 * pl.col("params") * pl.col("tokens"))
        flops_from = "6 x params x tokens"
        notes.append("flops = 6 x params x tokens: the table has no flops column")
    numeric = ["params", "tokens", "loss", "flops"] + (["budget"] if "budget" in frame.columns else [])
    frame = frame.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in numeric])
    for column in numeric:
        bad = frame.filter(pl.col(column).is_null() | pl.col(column).is_nan() | (pl.col(column) <= 0)).height
        if bad:
            raise TableError(f"{name}: column '{column}' has {bad} row(s) that are missing, NaN or not positive")
    if "budget" not in frame.columns:
        frame = frame.with_columns(budget=_group_budgets(frame["flops"].to_numpy(), budget_tolerance))
        notes.append(f"budgets grouped from flops within {budget_tolerance:.0%}")
    if frame.height == 0:
        raise TableError(f"{name}: no usable rows")
    return Table(frame=frame, notes=tuple(notes), flops_from=flops_from)


def _group_budgets(flops: np.ndarray, tolerance: float) -> np.ndarray:
    """Runs whose FLOPs are within `tolerance` of their neighbour in log space share a budget (the group's median)."""
    order = np.argsort(flops)
    logs = np.log(flops[order])
    group = np.concatenate([[0], np.cumsum(np.diff(logs) > np.log1p(tolerance))])
    budgets = np.empty_like(flops)
    for g in np.unique(group):
        members = order[group == g]
        budgets[members] = float(np.median(flops[members]))
    return budgets
