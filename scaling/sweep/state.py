"""A sweep's state, read from its run folders: nothing else holds it, so any driver can pick it up.

<runs_root>/<name>/<version>/
    sweep.json          what decides the runs (a changed spec under the same name and version is refused)
    runs.parquet        one row per run (`ehrscale collect`)
    <run id>/           spec.json, metrics.jsonl, checkpoints/, result.json (last), eval.json,
                        attempts.json (preemptions and failures the driver saw), train.log
"""

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scaling.data.atomic import write_json
from scaling.runspec import SpecError
from scaling.sweep.plan import Plan, PlannedRun
from scaling.sweep.spec import SweepSpec

SWEEP_RECORD = "sweep.json"
ATTEMPTS = "attempts.json"
RUNS_TABLE = "runs.parquet"
# The columns `runs.parquet` always has (analysis.table reads params, tokens, loss, flops, budget, status).
COLUMNS = {
    "run_id": pl.String,
    "family": pl.String,
    "budget": pl.Float64,
    "seed": pl.Int64,
    "width": pl.Int64,
    "layers": pl.Int64,
    "params": pl.Int64,
    "params_nonembed": pl.Int64,
    "tokens": pl.Int64,
    "steps": pl.Int64,
    "flops": pl.Float64,
    "convention": pl.String,
    "loss": pl.Float64,
    "train_loss": pl.Float64,
    "status": pl.String,
    "wall_seconds": pl.Float64,
    "tokens_per_s": pl.Float64,
    "mfu": pl.Float64,
    "preemptions": pl.Int64,
    "failures": pl.Int64,
    "error": pl.String,
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
    """Write sweep.json, or refuse a spec that changed what decides the runs since it was written."""
    record = {"name": sweep.name, "version": sweep.version, "data_hash": data_hash, **sweep.result_fields()}
    path = folder / SWEEP_RECORD
    if path.exists():
        old = json.loads(path.read_text())
        differ = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if differ:
            raise SpecError(
                f"{sweep.source}: sweep {sweep.name!r} version {sweep.version!r} in {folder} was run with "
                f"another spec (fields that differ: {', '.join(differ)}); raise 'version' for a new sweep, "
                f"or delete {folder}"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


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
    path = run_dir / "eval.json"
    return set(json.loads(path.read_text())) if path.exists() else set()


def run_state(run_dir: Path, planned: PlannedRun) -> RunState:
    """Read a run's state from its folder."""
    record = attempts(run_dir)
    counts = {"preemptions": record["preemptions"], "failures": record["failures"]}
    steps = planned.candidate.steps
    result_path = run_dir / "result.json"
    if result_path.exists():
        result = json.loads(result_path.read_text())
        if result["status"] == "diverged":
            return RunState("diverged", result["steps"], result["steps"], **counts)
        if set(planned.spec.tasks) <= settled_tasks(run_dir):
            return RunState("done", result["steps"], result["steps"], **counts)
        if "failed" in record:
            return RunState("failed", steps, steps, error=record["failed"], **counts)
        return RunState("in progress", steps, steps, **counts)  # trained, not evaluated yet
    if "failed" in record:
        return RunState("failed", _last_step(run_dir), steps, error=record["failed"], **counts)
    if (run_dir / "spec.json").exists():
        return RunState("in progress", _last_step(run_dir), steps, **counts)
    return RunState("pending", 0, steps, **counts)


def _last_step(run_dir: Path) -> int:
    """The last checkpointed step (what a resumed run starts from)."""
    folder = run_dir / "checkpoints"
    if not folder.exists():
        return 0
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)


def collect(plan: Plan, folder: Path) -> pl.DataFrame:
    """One row per planned run with the columns the analysis reads; runs not finished have status pending/failed."""
    rows = []
    for planned in plan.runs:
        run_dir = folder / planned.run_id
        state = run_state(run_dir, planned)
        c = planned.candidate
        row = {
            "run_id": planned.run_id,
            "family": plan.sweep.family,
            "budget": planned.budget,
            "seed": planned.seed,
            "width": c.width,
            "layers": c.layers,
            "params": c.params,
            "params_nonembed": c.params_nonembed,
            "tokens": c.tokens,
            "steps": c.steps,
            "flops": c.flops,
            "convention": plan.sweep.convention,
            "loss": None,
            "train_loss": None,
            "status": {"done": "ok"}.get(state.state, state.state),
            "wall_seconds": None,
            "tokens_per_s": None,
            "mfu": None,
            "preemptions": state.preemptions,
            "failures": state.failures,
            "error": state.error or None,
        }
        result_path = run_dir / "result.json"
        if result_path.exists():
            result = json.loads(result_path.read_text())
            row.update({k: result[k] for k in ("loss", "train_loss", "wall_seconds", "tokens_per_s", "mfu")})
            row.update({k: v for k, v in result.items() if k.startswith(("auroc_", "auprc_"))})
        row.update(_reference_aurocs(run_dir / "eval.json"))
        rows.append(row)
    extra = sorted({k for row in rows for k in row} - set(COLUMNS))
    schema = COLUMNS | {k: pl.Float64 for k in extra}
    return pl.DataFrame(rows, schema=schema)


def _reference_aurocs(path: Path) -> dict[str, float]:
    """XGBoost's and the oracle's held-out AUROC per task (the same for every run on a dataset), from eval.json."""
    if not path.exists():
        return {}
    found = {}
    for task, entry in json.loads(path.read_text()).items():
        xgboost = ((entry.get("baselines") or {}).get("xgboost") or {}).get("auroc")
        oracle = (entry.get("oracle") or {}).get("auroc")
        found.update(
            {k: v for k, v in ((f"xgboost_auroc_{task}", xgboost), (f"oracle_auroc_{task}", oracle)) if v is not None}
        )
    return found


def _same_table(path: Path, frame: pl.DataFrame) -> bool:
    try:
        return pl.read_parquet(path).equals(frame)
    except Exception:  # unreadable or another schema: write it again
        return False


def write_runs_table(plan: Plan, folder: Path, out: Path | None = None) -> tuple[Path, pl.DataFrame]:
    """Collect and write runs.parquet atomically (in the sweep folder unless `out` says otherwise)."""
    frame = collect(plan, folder)
    out = Path(out) if out else folder / RUNS_TABLE
    if out.suffix == ".parquet" and out.exists() and _same_table(out, frame):
        return out, frame  # unchanged: keep the file (and its time, which `make demo` compares)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix == ".csv":
        frame.write_csv(partial)
    else:
        frame.write_parquet(partial)
    partial.replace(out)
    return out, frame
