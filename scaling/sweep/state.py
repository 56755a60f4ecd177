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
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scaling.data.atomic import write_json
from scaling.record import eval_columns, read_eval, read_result
from scaling.runspec import SpecError
from scaling.sweep.plan import Plan
from scaling.sweep.spec import SweepSpec

SWEEP_RECORD = "sweep.json"
PLAN_RECORD = "plan.json"
PLAN_FORMAT = 2  # 2: each run's lr_multiplier, flops_spent and trunk; the sweep's trunks
ATTEMPTS = "attempts.json"
RUNS_TABLE = "runs.parquet"
# The parameter count the fits use: the embedding matrices are a lookup, and the logits' cost is in the per-token FLOPs.
FIT_PARAMS = "params_nonembed"
# The columns `runs.parquet` always has (analysis.table reads params, tokens, loss, flops, budget, status,
# flops_per_token, fit_params).
COLUMNS = {
    "run_id": pl.String,
    "family": pl.String,
    "budget": pl.Float64,
    "seed": pl.Int64,
    "width": pl.Int64,
    "layers": pl.Int64,
    "params": pl.Int64,
    "params_nonembed": pl.Int64,
    "fit_params": pl.String,
    "tokens": pl.Int64,
    "steps": pl.Int64,
    "convention": pl.String,
    "flops": pl.Float64,
    "flops_per_token": pl.Float64,
    "flops_exact": pl.Float64,
    "flops_per_token_exact": pl.Float64,
    "lr_multiplier": pl.Float64,
    "peak_lr": pl.Float64,
    "schedule": pl.String,
    "flops_spent": pl.Float64,  # what the run cost the sweep: a branch's own steps and its share of its trunk
    "branch_of": pl.String,
    "branch_step": pl.Int64,
    "loss": pl.Float64,
    "loss_se": pl.Float64,
    "loss_split": pl.String,
    "loss_tokens": pl.Int64,
    "masked_item_accuracy": pl.Float64,  # the lab-bag families' own metrics (scaling/bag_metrics.py)
    "value_mse": pl.Float64,
    "value_pearson_median": pl.Float64,
    "train_loss": pl.Float64,
    "status": pl.String,
    "wall_seconds": pl.Float64,
    "tokens_per_s": pl.Float64,
    "mfu": pl.Float64,
    "preemptions": pl.Int64,
    "failures": pl.Int64,
    "error": pl.String,
    "record_format": pl.Int64,
}


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
        old = json.loads(path.read_text())
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
    path = Path(table).parent / SWEEP_RECORD
    try:
        return json.loads(path.read_text()).get("fit", {}).get("window")
    except (OSError, ValueError, AttributeError):
        return None


def attempts(run_dir: Path) -> dict:
    path = run_dir / ATTEMPTS
    return json.loads(path.read_text()) if path.exists() else {"preemptions": 0, "failures": 0, "errors": []}


def record_attempt(run_dir: Path, kind: str, error: str) -> dict:
    """Count a preemption or a failure of this run, with its error."""
    record = attempts(run_dir)
    record[kind] += 1
    record["errors"] = (record["errors"] + [{"kind": kind, "error": error[-2000:]}])[-10:]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / ATTEMPTS, record)
    return record


def mark_failed(run_dir: Path, error: str) -> None:
    record = attempts(run_dir)
    record["failed"] = error[-2000:]
    write_json(run_dir / ATTEMPTS, record)


def clear_failed(run_dir: Path) -> None:
    """A new `sweep run` tries failed runs again; their counts stay."""
    record = attempts(run_dir)
    if record.pop("failed", None) is not None:
        write_json(run_dir / ATTEMPTS, record)


def settled_tasks(run_dir: Path) -> set[str]:
    """Tasks evaluated already (scored, or found unscorable and reported in eval.json)."""
    return set(read_eval(run_dir))


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
    path = folder / PLAN_RECORD
    if not path.exists() or json.loads(path.read_text()) != json.loads(json.dumps(record)):
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, record)


def read_plan_record(folder: Path) -> dict | None:
    path = Path(folder) / PLAN_RECORD
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class RunFiles:
    """What a run folder holds, read once: attempts.json, spec.json, result.json (current format, with notes on an
    older one) and eval.json's tasks."""

    attempts: dict
    started: dict | None
    result: tuple[dict, list[str]] | None
    evaluated: dict[str, dict]

    @classmethod
    def read(cls, run_dir: Path) -> "RunFiles":
        spec_path = run_dir / "spec.json"
        return cls(
            attempts=attempts(run_dir),
            started=json.loads(spec_path.read_text()) if spec_path.exists() else None,
            result=read_result(run_dir),
            evaluated=read_eval(run_dir),
        )


def run_state(
    run_dir: Path,
    tasks: tuple[str, ...] | list[str] | None = None,
    planned_steps: int = 0,
    files: RunFiles | None = None,
) -> RunState:
    """Read a run's state from its folder (or from `files` already read); `tasks` are those it must evaluate
    (default: its spec's)."""
    files = files or RunFiles.read(run_dir)
    record, started = files.attempts, files.started
    counts = {"preemptions": record["preemptions"], "failures": record["failures"]}
    steps = started["steps"] if started and "steps" in started else planned_steps
    if tasks is None:
        tasks = (started or {}).get("spec", {}).get("tasks", [])
    if files.result is not None:
        result = files.result[0]
        if result["role"] == "trunk":  # trained for its branches; no task of its own
            return RunState("done", result["steps"], result["steps"], **counts)
        if result["status"] == "diverged":
            return RunState("diverged", result["steps"], result["steps"], **counts)
        if set(tasks) <= set(files.evaluated):
            return RunState("done", result["steps"], result["steps"], **counts)
        if "failed" in record:
            return RunState("failed", steps, steps, error=record["failed"], **counts)
        return RunState("in progress", steps, steps, **counts)  # trained, not evaluated yet
    if "failed" in record:
        return RunState("failed", _last_step(run_dir), steps, error=record["failed"], **counts)
    if started:
        return RunState("in progress", _last_step(run_dir), steps, **counts)
    return RunState("pending", 0, steps, **counts)


def _last_step(run_dir: Path) -> int:
    """The last checkpointed step (what a resumed run starts from)."""
    folder = run_dir / "checkpoints"
    if not folder.exists():
        return 0
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)


def _sweep_budgets(folder: Path) -> list[float]:
    path = folder / SWEEP_RECORD
    return json.loads(path.read_text()).get("budgets", []) if path.exists() else []


def _nearest_budget(flops: float | None, budgets: list[float]) -> float | None:
    """The sweep budget a format-1 run spent (within 5%, the recipe's tolerance), or None."""
    if not flops or not budgets:
        return None
    best = min(budgets, key=lambda b: abs(b - flops) / b)
    return float(best) if abs(best - flops) <= 0.05 * best else None


def _run_row(run_dir: Path, planned: dict | None, tasks, budgets: list[float], notes: list[str]) -> dict:
    """One run's row from what it wrote (result.json, eval.json, spec.json, attempts.json); the plan only for what
    a run not started has not written."""
    files = RunFiles.read(run_dir)
    state = run_state(run_dir, tasks, (planned or {}).get("steps", 0), files)
    started = files.started
    row: dict = {
        "run_id": run_dir.name,
        "status": {"done": "ok"}.get(state.state, state.state),
        "preemptions": state.preemptions,
        "failures": state.failures,
        "error": state.error or None,
        "fit_params": FIT_PARAMS,
    }
    if planned:  # what the plan intended; replaced below by what the run itself recorded
        row.update(
            {
                k: planned[k]
                for k in (
                    "budget",
                    "seed",
                    "width",
                    "layers",
                    "params",
                    "params_nonembed",
                    "tokens",
                    "steps",
                    "flops",
                    "flops_per_token",
                    "lr_multiplier",
                    "peak_lr",
                    "flops_spent",
                )
                if k in planned
            }
        )
        row["branch_of"] = planned.get("trunk")
    recorded_budget = False
    if started:
        spec = started.get("spec", {})
        row.update(
            {
                "family": spec.get("family"),
                "seed": spec.get("seed"),
                "width": spec.get("width"),
                "convention": started.get("convention"),
                "params": started.get("params"),
                "params_nonembed": started.get("params_nonembed"),
                "steps": started.get("steps"),
                "flops": started.get("flops"),
                "flops_per_token": started.get("flops_per_token"),
            }
        )
        if started.get("steps") and started.get("tokens_per_step"):
            row["tokens"] = started["steps"] * started["tokens_per_step"]
        if spec.get("budget") is not None:
            row["budget"], recorded_budget = spec["budget"], True
    found = files.result
    if found is not None:
        result, result_notes = found
        notes += result_notes
        row.update(
            {
                k: result[k]
                for k in (
                    "family",
                    "width",
                    "layers",
                    "params",
                    "params_nonembed",
                    "tokens",
                    "steps",
                    "convention",
                    "flops",
                    "flops_per_token",
                    "flops_exact",
                    "flops_per_token_exact",
                    "loss",
                    "loss_se",
                    "loss_split",
                    "loss_tokens",
                    "masked_item_accuracy",
                    "value_mse",
                    "value_pearson_median",
                    "train_loss",
                    "wall_seconds",
                    "tokens_per_s",
                    "mfu",
                    "seed",
                    "lr_multiplier",
                    "peak_lr",
                    "schedule",
                    "flops_spent",
                    "branch_of",
                    "branch_step",
                )
                if result.get(k) is not None
            }
        )
        row["record_format"] = result["format"]
        if result["role"] == "trunk" and row["status"] == "ok":  # trained for its branches; no point of a fit
            row["status"] = "trunk"
        if result.get("budget") is not None:
            row["budget"] = result["budget"]
        elif not recorded_budget and row.get("budget") is not None:
            notes.append("no budget in the run's own record: the sweep's plan.json gives it")
        elif not recorded_budget:
            row["budget"] = _nearest_budget(row.get("flops"), budgets)
            if row["budget"] is not None:
                notes.append(
                    "no budget in the run's own record: the budget of sweep.json within 5% of its FLOPs is taken"
                )
    row.update(eval_columns(files.evaluated))
    return row


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
    budgets = _sweep_budgets(folder)
    notes: list[str] = []
    run_dirs = (
        sorted(p for p in folder.iterdir() if p.is_dir() and ((p / "spec.json").exists() or p.name in planned))
        if folder.exists()
        else []
    )
    seen = {p.name for p in run_dirs}
    rows = [_run_row(p, planned.get(p.name), tasks, budgets, notes) for p in run_dirs]
    rows += [_run_row(folder / rid, r, tasks, budgets, notes) for rid, r in planned.items() if rid not in seen]
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
