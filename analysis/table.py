"""Read a results table (parquet or CSV) into the columns the fits need, with clear errors.

Needs `params`, `tokens`, `loss`; uses `flops`, `flops_per_token`, `budget`, `status`, `family`,
`fit_params`, `loss_se` and `auroc_<task>` when present. Column names can be mapped
(`{"params": "Model Size"}`); without a mapping, a `fit_params` column (ours: `params_nonembed`) names
the parameter count the fits use. Every row left out is counted by reason in the notes: a status
other than `ok` (an empty status counts as "missing"), an exact duplicate. Missing `flops` is
`budget` if there is one, else 6 x params x tokens (said in the notes: C = 6ND is then assumed);
missing `budget` groups runs whose FLOPs agree within a tolerance (in log space), with a warning
when that leaves a budget of one run.

A table with runs at several learning rates (an `lr_multiplier` column with more than one value) keeps the
lowest-loss run of each (budget, size, seed) cell: the fits see each size at its best learning rate, and
`Table.lr_choices` says which multiplier won each cell and whether it sits at the edge of those tried.

Compute comes from the table (`analysis.cost`): each run's FLOPs per token is `flops / tokens`,
so answers spend a budget under the same convention the runs spent it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from analysis.cost import CostModel

REQUIRED = ("params", "tokens", "loss")
# Without a budget column, runs whose FLOPs agree within this fraction share a budget (--budget-tolerance).
BUDGET_GROUPING = 0.1


class TableError(Exception):
    """A results table the analysis cannot use; the message names the column and what is wrong."""


@dataclass(frozen=True)
class LrChoice:
    """The learning-rate multiplier whose run had the lowest loss in one (budget, size, seed) cell."""

    budget: float
    params: float
    seed: int | None
    best: float
    tried: tuple[float, ...]
    losses: tuple[float, ...]  # in the order of `tried`

    @property
    def at_edge(self) -> bool:
        """The best is the smallest or largest tried: the true best may lie outside the grid."""
        return len(self.tried) > 1 and self.best in (min(self.tried), max(self.tried))


@dataclass(frozen=True)
class Table:
    """The usable rows, how compute is counted, and notes on what was left out and why."""

    frame: pl.DataFrame  # params, tokens, loss, flops, budget (+ family, loss_se, auroc_* when present)
    cost: CostModel
    notes: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)
    flops_from: str = "flops column"
    params_from: str = "params"
    loss_label: str = "loss"
    lr_choices: tuple[LrChoice, ...] = ()

    @property
    def budgets(self) -> list[float]:
        return sorted(self.frame["budget"].unique().to_list())


def read(
    path: Path,
    columns: dict[str, str] | None = None,
    budget_tolerance: float = BUDGET_GROUPING,
    loss_units: dict[str, str] | None = None,
) -> Table:
    """Load, rename, validate and group a results table; `loss_units` names each family's loss unit (the caller's
    family registry: the analysis knows no family)."""
    return prepare(read_frame(path), str(path), columns, budget_tolerance, loss_units)


def read_frame(path: Path) -> pl.DataFrame:
    """A results table's rows as they are, or a TableError naming the file."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    if path.is_dir():
        raise TableError(f"{path}: a folder, not a results table (.parquet or .csv)")
    try:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise TableError(
            f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'CSV'}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    return frame


def _fit_params(frame: pl.DataFrame, renames: dict[str, str]) -> str | None:
    """The table's own choice of parameter count (`fit_params`), when the user mapped none."""
    if "params" in renames.values() or "fit_params" not in frame.columns:
        return None
    named = frame["fit_params"].drop_nulls().unique().to_list()
    return named[0] if len(named) == 1 and named[0] in frame.columns and named[0] != "params" else None


def prepare(
    frame: pl.DataFrame,
    name: str = "table",
    columns: dict[str, str] | None = None,
    budget_tolerance: float = BUDGET_GROUPING,
    loss_units: dict[str, str] | None = None,
) -> Table:
    renames = {source: target for target, source in (columns or {}).items()}
    chosen = _fit_params(frame, renames)
    if chosen:
        renames[chosen] = "params"
    missing_sources = [s for s in renames if s not in frame.columns]
    if missing_sources:
        raise TableError(
            f"{name}: no column {', '.join(repr(s) for s in missing_sources)} to map "
            f"(columns: {', '.join(frame.columns)})"
        )
    # A mapped column replaces a column of the target's name (runs.parquet has both params and params_nonembed).
    replaced = [target for source, target in renames.items() if target in frame.columns and target not in renames]
    frame = frame.drop(replaced).rename(renames)
    params_from = next((s for s, t in renames.items() if t == "params"), "params")
    notes, warnings = [], []
    if chosen:
        notes.append(f"parameters = {chosen} (the table's fit_params column)")
    flops_from = "flops column"
    if "flops" not in frame.columns and "budget" in frame.columns:
        frame = frame.with_columns(flops=pl.col("budget"))
        flops_from = "budget column"
        notes.append("flops = budget: the table has no flops column")
    if "tokens" not in frame.columns and {"flops", "flops_per_token"} <= set(frame.columns):
        frame = frame.with_columns(tokens=pl.col("flops") / pl.col("flops_per_token"))
        notes.append("tokens = flops / flops_per_token: the table has no tokens column")
    if "params" not in frame.columns and {"flops", "tokens"} <= set(frame.columns):
        frame = frame.with_columns(params=pl.col("flops") / (6 * pl.col("tokens")))
        notes.append("params = flops / (6 x tokens): the table has no params column (C = 6ND assumed)")
    if "tokens" not in frame.columns and {"flops", "params"} <= set(frame.columns):
        frame = frame.with_columns(tokens=pl.col("flops") / (6 * pl.col("params")))
        notes.append("tokens = flops / (6 x params): the table has no tokens column (C = 6ND assumed)")
    for column in REQUIRED:
        if column not in frame.columns:
            raise TableError(
                f"{name}: missing column '{column}' (columns: {', '.join(frame.columns)}); "
                f"map one with --{column}-col NAME"
            )
    if "status" in frame.columns:
        frame = frame.with_columns(pl.col("status").cast(pl.String).fill_null("missing").replace("", "missing"))
        bad = frame.filter(pl.col("status") != "ok")
        if bad.height:
            reasons = ", ".join(f"{s}: {n}" for s, n in bad.group_by("status").len().sort("status").iter_rows())
            notes.append(f"left out {bad.height} run(s) whose status is not ok ({reasons})")
        frame = frame.filter(pl.col("status") == "ok")
    if "flops" not in frame.columns:
        frame = frame.with_columns(flops=6.0 * pl.col("params") * pl.col("tokens"))
        flops_from = "6 x params x tokens"
        notes.append("flops = 6 x params x tokens: the table has no flops column (C = 6ND assumed)")
    numeric = ["params", "tokens", "loss", "flops"] + [
        c for c in ("budget", "flops_per_token", "loss_se") if c in frame.columns
    ]
    frame = frame.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in numeric])
    for column in ("params", "tokens", "loss", "flops", "budget", "flops_per_token"):
        if column not in frame.columns:
            continue
        bad = frame.filter(pl.col(column).is_null() | ~pl.col(column).is_finite() | (pl.col(column) <= 0)).height
        if bad:
            raise TableError(
                f"{name}: column '{column}' has {bad} row(s) that are missing, NaN, infinite or not positive"
            )
    if frame.height == 0:
        raise TableError(f"{name}: no usable rows" + (f" ({'; '.join(notes)})" if notes else ""))
    key = ["params", "tokens", "loss", "flops"] + [c for c in ("budget", "seed", "lr_multiplier") if c in frame.columns]
    duplicated = frame.height - frame.unique(subset=key).height
    if duplicated:
        frame = frame.unique(subset=key, keep="first", maintain_order=True)
        warnings.append(
            f"left out {duplicated} exact duplicate row(s) (same params, tokens, loss and FLOPs): "
            "a run counted twice narrows every interval without new information"
        )
    if "budget" not in frame.columns:
        budgets, singles = _group_budgets(frame["flops"].to_numpy(), budget_tolerance)
        frame = frame.with_columns(budget=budgets)
        notes.append(f"budgets grouped from flops within {budget_tolerance:.0%} (--budget-tolerance)")
        if singles:
            warnings.append(
                f"grouping FLOPs within {budget_tolerance:.0%} leaves {len(singles)} budget(s) of a single run "
                f"({', '.join(f'{b:.3g}' for b in singles)}): if those runs belong to a neighbouring budget, "
                "raise --budget-tolerance"
            )
    frame, lr_choices = best_learning_rates(frame, notes, warnings)
    cost, cost_note = CostModel.from_frame(frame, flops_from)
    notes.append(cost_note)
    return Table(
        frame=frame,
        cost=cost,
        notes=tuple(notes),
        warnings=tuple(warnings),
        flops_from=flops_from,
        params_from=params_from,
        loss_label=_loss_label(frame, renames, loss_units or {}),
        lr_choices=tuple(lr_choices),
    )


def best_learning_rates(
    frame: pl.DataFrame, notes: list[str], warnings: list[str]
) -> tuple[pl.DataFrame, list[LrChoice]]:
    """The lowest-loss run of each (budget, size, seed) cell when the table tried several lr multipliers."""
    if "lr_multiplier" not in frame.columns or frame["lr_multiplier"].drop_nulls().n_unique() < 2:
        return frame, []
    frame = frame.with_columns(pl.col("lr_multiplier").cast(pl.Float64).fill_null(1.0))
    cell = ["budget", "params"] + (["seed"] if "seed" in frame.columns else [])
    choices = []
    for _, rows in frame.sort("lr_multiplier").group_by(cell, maintain_order=True):
        best = rows.row(int(rows["loss"].arg_min()), named=True)
        choices.append(
            LrChoice(
                budget=best["budget"],
                params=best["params"],
                seed=best.get("seed"),
                best=best["lr_multiplier"],
                tried=tuple(rows["lr_multiplier"].to_list()),
                losses=tuple(rows["loss"].to_list()),
            )
        )
    kept = frame.sort("loss").unique(subset=cell, keep="first", maintain_order=True).sort(["budget", "params"])
    wins: dict[float, int] = {}
    for c in choices:
        wins[c.best] = wins.get(c.best, 0) + 1
    notes.append(
        f"learning rates: kept the lowest-loss run of each of {len(choices)} (budget, size"
        + (", seed" if "seed" in cell else "")
        + f") cells over lr multipliers {', '.join(f'{m:g}' for m in sorted(frame['lr_multiplier'].unique()))}; "
        + "best: "
        + ", ".join(f"{m:g}x in {n}" for m, n in sorted(wins.items()))
        + f" ({frame.height - kept.height} other runs left out)"
    )
    edges = [c for c in choices if c.at_edge]
    if edges:
        warnings.append(
            f"the best learning rate sits at the edge of those tried in {len(edges)} of {len(choices)} cells ("
            + "; ".join(f"budget {c.budget:.3g}, {c.params:,.0f} params: {c.best:g}x" for c in edges[:5])
            + ("; ..." if len(edges) > 5 else "")
            + "): the best may lie beyond, so widen lr_multipliers there"
        )
    return kept, choices


def _loss_label(frame: pl.DataFrame, renames: dict[str, str], loss_units: dict[str, str]) -> str:
    """The loss axis as the table describes it: the split and unit our runs record, or the column's own name."""
    source = next((s for s, t in renames.items() if t == "loss"), None)
    if source:
        return source
    families = frame["family"].drop_nulls().unique().to_list() if "family" in frame.columns else []
    splits = frame["loss_split"].drop_nulls().unique().to_list() if "loss_split" in frame.columns else []
    unit = loss_units.get(families[0]) if len(families) == 1 else None
    where = f"{splits[0]} loss" if len(splits) == 1 else "loss"
    return f"{where} ({unit})" if unit else where


def _group_budgets(flops: np.ndarray, tolerance: float) -> tuple[np.ndarray, list[float]]:
    """Runs whose FLOPs are within `tolerance` of their neighbour in log space share a budget (the group's median);
    also the budgets that hold a single run."""
    order = np.argsort(flops)
    logs = np.log(flops[order])
    group = np.concatenate([[0], np.cumsum(np.diff(logs) > np.log1p(tolerance))])
    budgets = np.empty_like(flops)
    singles = []
    for g in np.unique(group):
        members = order[group == g]
        budgets[members] = float(np.median(flops[members]))
        if len(members) == 1:
            singles.append(float(flops[members[0]]))
    return budgets, singles
