"""Refinement: sizes added to a budget until its best run is bracketed (`[sizes] refine = K`).

A grid planned around a guess may miss a budget's minimum (the best run at the smallest or largest size)
or sample it sparsely. When `refine` is above 0, `sweep run` trains the planned runs, then for each budget:

- the best run (lowest loss over its seeds and lr multipliers) at the smallest or largest size: add the next
  width of the recipe's ladder beyond it that fits the budget;
- otherwise, a neighbour further than `bracket`x away in non-embedding parameters: add the ladder's width
  nearest their geometric midpoint (strictly between them);

and trains what it added, round after round, until every budget is bracketed, nothing fits, or `refine`
sizes were added to it. The widths added are recorded in the sweep folder's `refined.json`, so a
restarted sweep plans them again; they train alone (never as WSD branches: a trunk's branch points are
fixed when it trains).
"""

import json
import math
from pathlib import Path

import polars as pl

from scaling.data.atomic import write_json
from scaling.sweep.plan import Plan

REFINED = "refined.json"
REFINED_FORMAT = 1


def read_refined(folder: Path) -> dict[float, tuple[int, ...]]:
    path = Path(folder) / REFINED
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    return {float(b): tuple(w) for b, w in record["budgets"].items()}


def write_refined(folder: Path, refined: dict[float, tuple[int, ...]]) -> None:
    record = {"format": REFINED_FORMAT, "budgets": {repr(b): list(w) for b, w in sorted(refined.items())}}
    write_json(Path(folder) / REFINED, record)


def next_widths(plan: Plan, frame: pl.DataFrame) -> dict[float, int]:
    """The width to add to each budget that is not bracketed yet (and has refinements left)."""
    sizes = plan.sweep.sizes
    refined = {}
    planned: dict[float, set[int]] = {}
    for r in plan.runs:
        planned.setdefault(r.budget, set()).add(r.candidate.width)
        refined.setdefault(r.budget, set())
        if r.refined:
            refined[r.budget].add(r.candidate.width)
    finished = frame.filter(pl.col("status") == "ok")
    additions = {}
    for budget, widths in planned.items():
        if len(refined[budget]) >= sizes.refine:
            continue
        rows = finished.filter(pl.col("budget") == budget)
        if rows.filter(pl.col("width").is_in(list(widths)))["width"].n_unique() < len(widths):
            continue  # some planned size has no loss yet (failed, diverged): nothing to refine on
        best = (
            rows.group_by("width").agg(pl.col("loss").min(), pl.col("params_nonembed").first()).sort("params_nonembed")
        )
        width = _bracketing_width(best, plan.ladder[budget], widths, sizes.bracket)
        if width is not None:
            additions[budget] = width
    return additions


def _bracketing_width(best: pl.DataFrame, ladder, planned: set[int], bracket: float) -> int | None:
    """The ladder width that brackets the lowest-loss size further, or None when it is bracketed (or nothing fits)."""
    params = best["params_nonembed"].to_list()
    i = int(best["loss"].arg_min())
    free = [c for c in ladder if c.width not in planned]
    below = [c for c in free if c.params_nonembed < params[0]]
    above = [c for c in free if c.params_nonembed > params[-1]]
    if i == 0 and below:
        return max(below, key=lambda c: c.params_nonembed).width
    if i == len(params) - 1 and above:
        return min(above, key=lambda c: c.params_nonembed).width
    if i in (0, len(params) - 1):
        return None  # at the ladder's end (or the budget's): nothing fits beyond it
    for lo, hi in ((params[i - 1], params[i]), (params[i], params[i + 1])):
        if hi / lo > bracket:
            between = [c for c in free if lo < c.params_nonembed < hi]
            if between:
                middle = math.sqrt(lo * hi)
                return min(between, key=lambda c: abs(math.log(c.params_nonembed / middle))).width
    return None
