"""A sweep's state, read from its run folders: nothing else holds it, so any driver can pick it up.

<runs_root>/<name>/<version>/
    sweep.json          what decides the runs (a changed spec under the same name and version is refused)
    plan.json           the planned runs with their shapes and costs, so runs not started yet are known
                        without the prepared dataset (written by `sweep run`)
    runs.parquet        one row per run (`ehrscale collect`)
    <run id>/           spec.json, metrics.jsonl, checkpoints/, result.json (written once, by training),
                        eval.json (by evaluation), attempts.json (preemptions and failures the driver saw), train.log

`collect` and `sweep status` read only these files: a finished run's numbers are what it wrote
(`scaling.record`), never recomputed from the plan, and the prepared dataset can be gone.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import get_args

import polars as pl

from scaling.data.atomic import write_json
from scaling.recipe import BUDGET_TOLERANCE
from scaling.record import Attempts, EvalRecord, ImputationRecord, ResultRecord, RunFolder, StartRecord
from scaling.runspec import SpecError, check_eval
from scaling.sweep.plan import Plan
from scaling.sweep.spec import SweepSpec

SWEEP_RECORD = "sweep.json"
PLAN_RECORD = "plan.json"
PLAN_FORMAT = 2  # 2: each run's lr_multiplier, flops_spent and trunk; the sweep's trunks
RUNS_TABLE = "runs.parquet"
# The parameter count the fits use: the embedding matrices are a lookup, and the logits' cost is in the per-token FLOPs.
FIT_PARAMS = "params_nonembed"


@dataclass(frozen=True)
class RunRow:
    """One row of runs.parquet, in its column order: its columns are these fields (then one Float64 column per
    evaluation number: `EvalRecord.columns`, `ImputationRecord.columns`). A field that `ResultRecord`,
    `StartRecord` or a plan.json entry also has is copied from them by name (analysis.table reads params, tokens,
    loss, flops, budget, status, flops_per_token, fit_params)."""

    run_id: str
    family: str | None = None
    budget: float | None = None
    seed: int | None = None
    width: int | None = None
    layers: int | None = None
    params: int | None = None
    params_nonembed: int | None = None
    fit_params: str = FIT_PARAMS
    tokens: int | None = None
    steps: int | None = None
    convention: str | None = None
    flops: float | None = None
    flops_per_token: float | None = None
    flops_exact: float | None = None
    flops_per_token_exact: float | None = None
    lr_multiplier: float | None = None
    peak_lr: float | None = None
    schedule: str | None = None
    flops_spent: float | None = None  # what the run cost the sweep: a branch's own steps and its share of its trunk
    branch_of: str | None = None
    branch_step: int | None = None
    loss: float | None = None
    loss_se: float | None = None
    loss_split: str | None = None
    loss_tokens: int | None = None
    masked_item_accuracy: float | None = None  # the lab-bag families' own metrics (scaling/eval/bag_metrics.py)
    value_mse: float | None = None
    value_pearson_median: float | None = None
    train_loss: float | None = None
    status: str | None = None
    wall_seconds: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    preemptions: int | None = None
    failures: int | None = None
    error: str | None = None
    record_format: int | None = None


_DTYPES = {str: pl.String, int: pl.Int64, float: pl.Float64}
COLUMNS = {f.name: _DTYPES[next(t for t in get_args(f.type) or (f.type,) if t in _DTYPES)] for f in fields(RunRow)}
_ROW_FIELDS = set(COLUMNS)


def _shared(record, skip: tuple[str, ...] = ()) -> dict:
    """The fields of a record (a dataclass) that are also table columns, by name."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name in _ROW_FIELDS and f.name not in skip}


@dataclass(frozen=True)
class RunState:
    """Where one run stands: pending, in progress, done, diverged or failed."""

    state: str
    step: int = 0
    steps: int = 0
    preemptions: int = 0
    failures: int = 0
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("done", "diverged")


def check_sweep_record(sweep: SweepSpec, folder: Path, data_hash: str) -> None:
    """Write sweep.json, or refuse a spec that changed what decides the runs since it was written. The record also
    keeps how the sweep's table is fitted (`fit`), which may change: it decides no run."""
    record = {"name": sweep.name, "version": sweep.version, "data_hash": data_hash, **sweep.result_fields()}
    fit = {"fit": {"window": sweep.fit_window}} if sweep.fit_window else {}
    path = folder / SWEEP_RECORD
    if path.exists():
        old = read_sweep_record(folder)
        old_fit = {"fit": old.pop("fit")} if "fit" in old else {}
        differ = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if differ:
            raise SpecError(
                f"{sweep.source}: sweep {sweep.name!r} version {sweep.version!r} in {folder} was run with "
                f"another spec (fields that differ: {', '.join(differ)}); raise 'version' for a new sweep, "
                f"or delete {folder}"
            )
        if old_fit != fit:
            write_json(path, record | fit)
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, record | fit)


def fit_window(table: Path) -> float | None:
    """The [fit] window of the sweep whose runs.parquet `table` is (its sweep.json beside it), or None."""
    try:
        return read_sweep_record(Path(table).parent).get("fit", {}).get("window")
    except (OSError, ValueError, AttributeError):  # unreadable: the fitting commands' own default
        return None


def _planned_entry(r) -> dict:
    c = r.candidate
    return {
        "run_id": r.run_id,
        "budget": r.budget,
        "seed": r.seed,
        "width": c.width,
        "layers": c.layers,
        "params": c.params,
        "params_nonembed": c.params_nonembed,
        "tokens": c.tokens,
        "steps": c.steps,
        "flops": c.flops,
        "flops_per_token": c.flops_per_token,
        "lr_multiplier": r.lr_multiplier,
        "peak_lr": r.spec.recipe.learning_rate(c.width),
        "flops_spent": r.flops_spent,
        "trunk": r.spec.branch.trunk if r.spec.branch else None,
    }


def write_plan_record(plan: Plan, folder: Path) -> None:
    """plan.json: every planned run's shape and cost, so `collect` and `status` list runs not started yet."""
    record = {
        "format": PLAN_FORMAT,
        "name": plan.sweep.name,
        "version": plan.sweep.version,
        "family": plan.sweep.family,
        "convention": plan.sweep.convention,
        "tasks": list(plan.sweep.tasks),
        "vocab_size": plan.inputs.vocab_size,
        "context": plan.inputs.context,
        "runs": [_planned_entry(r) for r in plan.runs],
        "trunks": [
            {
                "run_id": t.run_id,
                "width": t.spec.width,
                "seed": t.spec.seed,
                "steps": t.steps,
                "flops": t.flops,
                "branches": list(t.branches),
            }
            for t in plan.trunks
        ],
    }
    if read_plan_record(folder) != json.loads(json.dumps(record)):  # none yet, or another plan
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / PLAN_RECORD, record)


def read_plan_record(folder: Path) -> dict | None:
    path = Path(folder) / PLAN_RECORD
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class RunRead:
    """What a run folder holds, read once: attempts.json, spec.json, result.json (current format, with notes on an
    older one), eval.json and imputation.json."""

    folder: RunFolder
    attempts: Attempts
    start: StartRecord | None
    result: tuple[ResultRecord, list[str]] | None
    evaluation: EvalRecord
    imputation: ImputationRecord | None = None

    @classmethod
    def of(cls, run_dir: Path) -> "RunRead":
        folder = RunFolder(run_dir)
        return cls(folder, folder.attempts(), folder.start(), folder.result(), folder.evaluation(), folder.imputation())


def run_state(
    run_dir: Path,
    tasks: tuple[str, ...] | list[str] | None = None,
    planned_steps: int = 0,
    read: RunRead | None = None,
    zero_shot: bool | None = None,
) -> RunState:
    """Read a run's state from its folder (or from `read`, already read); `tasks` are those it must evaluate
    (default: its spec's), zero-shot too when `zero_shot` (default: when its spec's [eval] asks it at the run's end)."""
    read = read or RunRead.of(run_dir)
    attempts, start = read.attempts, read.start
    counts = {"preemptions": attempts.preemptions, "failures": attempts.failures}
    steps = start.steps if start and start.steps is not None else planned_steps
    if tasks is None:
        tasks = start.spec.get("tasks", []) if start else []
    if read.result is not None:
        result = read.result[0]
        if result.role == "trunk":  # trained for its branches; no task of its own
            return RunState("done", result.steps, result.steps, **counts)
        if result.status == "diverged":
            return RunState("diverged", result.steps, result.steps, **counts)
        evaluated = read.evaluation.tasks
        if zero_shot is None:
            zero_shot = bool(start) and check_eval(start.spec, str(run_dir)).at_run_end
        if set(tasks) <= set(evaluated) and not (zero_shot and any(evaluated[t].zero_shot is None for t in tasks)):
            return RunState("done", result.steps, result.steps, **counts)
        if attempts.failed is not None:
            return RunState("failed", steps, steps, error=attempts.failed, **counts)
        return RunState("in progress", steps, steps, **counts)  # trained, not evaluated yet
    if attempts.failed is not None:
        return RunState("failed", read.folder.last_checkpoint(), steps, error=attempts.failed, **counts)
    if start:
        return RunState("in progress", read.folder.last_checkpoint(), steps, **counts)
    return RunState("pending", 0, steps, **counts)


def read_sweep_record(folder: Path) -> dict:
    """sweep.json ({} if the folder has none)."""
    path = folder / SWEEP_RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _nearest_budget(flops: float | None, budgets: list[float], tolerance: float) -> float | None:
    """The sweep budget a format-1 run spent (within the recipe's budget tolerance), or None."""
    if not flops or not budgets:
        return None
    best = min(budgets, key=lambda b: abs(b - flops) / b)
    return float(best) if abs(best - flops) <= tolerance * best else None


def _run_row(run_dir: Path, planned: dict | None, tasks, sweep: dict, notes: list[str]) -> dict:
    """One run's row from what it wrote (result.json, eval.json, spec.json, attempts.json); the plan only for what
    a run not started has not written."""
    read = RunRead.of(run_dir)
    state = run_state(run_dir, tasks, (planned or {}).get("steps", 0), read)
    row = asdict(RunRow(run_dir.name)) | {
        "status": {"done": "ok"}.get(state.state, state.state),
        "preemptions": state.preemptions,
        "failures": state.failures,
        "error": state.error or None,
    }
    if planned:  # what the plan intended; replaced below by what the run itself recorded
        row |= {k: v for k, v in planned.items() if k in _ROW_FIELDS and k != "run_id"}
        row["branch_of"] = planned.get("trunk")
    recorded_budget = False
    if read.start is not None:
        start = read.start
        row |= {k: start.spec.get(k) for k in ("family", "seed", "width")} | _shared(start)
        if start.tokens:
            row["tokens"] = start.tokens
        if start.spec.get("budget") is not None:
            row["budget"], recorded_budget = start.spec["budget"], True
    if read.result is not None:
        result, result_notes = read.result
        notes += result_notes
        row |= {k: v for k, v in _shared(result, skip=("status", "budget")).items() if v is not None}
        row["record_format"] = result.format
        if result.role == "trunk" and row["status"] == "ok":  # trained for its branches; no point of a fit
            row["status"] = "trunk"
        if result.budget is not None:
            row["budget"] = result.budget
        elif not recorded_budget and row.get("budget") is not None:
            notes.append("no budget in the run's own record: the sweep's plan.json gives it")
        elif not recorded_budget:
            tolerance = sweep.get("recipe", {}).get("budget_tolerance", BUDGET_TOLERANCE)
            row["budget"] = _nearest_budget(row.get("flops"), sweep.get("budgets", []), tolerance)
            if row["budget"] is not None:
                notes.append(
                    "no budget in the run's own record: the budget of sweep.json within "
                    f"{tolerance:.0%} of its FLOPs is taken"
                )
    return row | read.evaluation.columns() | (read.imputation.columns() if read.imputation is not None else {})


def collect(
    folder: Path, spec_tasks: tuple[str, ...] | None = None, plan: Plan | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """One row per run: every run folder under `folder` (what it wrote), then the planned runs not started yet
    (from plan.json, or `plan` when given). Returns the table and notes on what older records made us assume."""
    folder = Path(folder)
    record = read_plan_record(folder)
    planned = {r["run_id"]: r for r in (record or {}).get("runs", [])}
    if plan is not None:  # a sweep not run yet (no plan.json): its planned runs, all pending
        planned = {r.run_id: _planned_entry(r) for r in plan.runs} | planned
    tasks = spec_tasks if spec_tasks is not None else tuple((record or {}).get("tasks", ()))
    family = (record or {}).get("family") or (plan.sweep.family if plan else None)
    convention = (record or {}).get("convention") or (plan.sweep.convention if plan else None)
    sweep = read_sweep_record(folder)
    notes: list[str] = []
    run_dirs = (
        sorted(p for p in folder.iterdir() if p.is_dir() and (RunFolder(p).started or p.name in planned))
        if folder.exists()
        else []
    )
    seen = {p.name for p in run_dirs}
    rows = [_run_row(p, planned.get(p.name), tasks, sweep, notes) for p in run_dirs]
    rows += [_run_row(folder / rid, r, tasks, sweep, notes) for rid, r in planned.items() if rid not in seen]
    for row in rows:  # a run not started has written neither: the sweep's
        row["family"] = row.get("family") or family
        row["convention"] = row.get("convention") or convention
    rows.sort(key=lambda r: (r.get("budget") or 0.0, r.get("params") or 0, r.get("seed") or 0, r["run_id"]))
    extra = sorted({k for row in rows for k in row} - set(COLUMNS))
    schema = COLUMNS | {k: pl.Float64 for k in extra}
    return pl.DataFrame([{k: row.get(k) for k in schema} for row in rows], schema=schema), _summarise(notes)


def _summarise(notes: list[str]) -> list[str]:
    """Each kind of note once, with the number of runs it concerns."""
    counts: dict[str, int] = {}
    for note in notes:
        counts[note] = counts.get(note, 0) + 1
    return [f"{n} run(s): {note}" for note, n in counts.items()]


def _same_table(path: Path, frame: pl.DataFrame) -> bool:
    try:
        return pl.read_parquet(path).equals(frame)
    except Exception:  # unreadable or another schema: write it again
        return False


def write_runs_table(
    folder: Path, out: Path | None = None, spec_tasks: tuple[str, ...] | None = None, plan: Plan | None = None
) -> tuple[Path, pl.DataFrame, list[str]]:
    """Collect and write runs.parquet atomically (in the sweep folder unless `out` says otherwise)."""
    frame, notes = collect(folder, spec_tasks, plan)
    out = Path(out) if out else Path(folder) / RUNS_TABLE
    if out.suffix == ".parquet" and out.exists() and _same_table(out, frame):
        return out, frame, notes  # unchanged: keep the file (and its time, which `make demo` compares)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix == ".csv":
        frame.write_csv(partial)
    else:
        frame.write_parquet(partial)
    partial.replace(out)
    return out, frame, notes
