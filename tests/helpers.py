"""What several test modules share: hand-built MEDS events, run and sweep specs, TOML writing, a Chinchilla-like
table, the ehrscale executable."""

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from scaling.record import RESULT_FORMAT, ResultRecord
from scaling.runspec import RunSpec, parse_spec

EHRSCALE = str(Path(sys.executable).with_name("ehrscale"))
TASK = "long_stay"  # the task the sweep tests evaluate

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


def read_csv_gz(root: Path, name: str, **kwargs) -> pl.DataFrame:
    """A MIMIC-IV table (`hosp/patients`, ...) as strings, as the files hold it."""
    return pl.read_csv(root / f"{name}.csv.gz", infer_schema=False, **kwargs)


def spec_dict(prep, **changes) -> dict:
    """A tiny timeline run on a prepared dataset; `changes` replace keys (tables are merged)."""
    base = {
        "name": "tiny",
        "data": str(prep),
        "family": "timeline",
        "width": 32,
        "tokens": 60 * 16 * 32,
        "recipe": {"context": 32, "batch_rows": 16},
        "train": {"eval_every": 20, "eval_batches": 2, "eval_rows": 64, "checkpoint_every": 10, "log_every": 5},
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return base


def make_spec(prep, **changes) -> RunSpec:
    return parse_spec(spec_dict(prep, **changes), "test")


def sweep_source(prep, runs_root, **changes) -> dict:
    """A tiny two-budget timeline sweep that evaluates TASK; `changes` replace top-level keys."""
    base = {
        "name": "tiny",
        "version": 1,
        "family": "timeline",
        "data": str(prep),
        "runs_root": str(runs_root),
        "budgets": [3e8, 1e9],
        "tasks": [TASK],
        "sizes": {"widths": [16, 24, 32]},
        "recipe": {"context": 32, "batch_rows": 4, "min_steps": 5},
        "train": {"eval_every": 20, "eval_batches": 2, "eval_rows": 64, "checkpoint_every": 5, "log_every": 5},
        "retries": {"failures": 1, "preemptions": 3},
    }
    base.update(changes)
    return base


def write_toml(path: Path, data: dict) -> Path:
    """A spec dict as TOML: its keys, then one table per dict value."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += [f"[{key}]"] + [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al.'s fitted law


def chinchilla_like(seed=0, noise=0.003) -> pl.DataFrame:
    """An IsoFLOP sweep drawn from TRUE at 6 budgets x 9 sizes, with log-normal noise on the loss."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e18, 3e18, 1e19, 3e19, 1e20, 3e20):
        for n in np.geomspace(2e7, 2e9, 9):
            d = budget / (6 * n)
            loss = (TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]) * np.exp(
                rng.normal(0, noise)
            )
            rows.append((n, d, loss, budget))
    return pl.DataFrame(rows, schema=["params", "tokens", "loss", "budget"], orient="row")


FIXED = 1e10  # FLOPs per token that do not grow with N (attention over the context, logits): they dominate small models


def not_six_nd(seed=0, noise=0.002) -> pl.DataFrame:
    """A sweep whose compute is C = (6N + FIXED) D, as exact FLOP counts make small models: far from 6ND."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in (1e18, 3e18, 1e19, 3e19, 1e20):
        for n in np.geomspace(2e7, 2e9, 9):
            per_token = 6 * n + FIXED
            d = budget / per_token
            loss = (TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]) * np.exp(
                rng.normal(0, noise)
            )
            rows.append((n, d, loss, budget * rng.uniform(0.97, 1.03), per_token, budget))
    return pl.DataFrame(rows, schema=["params", "tokens", "loss", "flops", "flops_per_token", "budget"], orient="row")


def with_auroc(frame: pl.DataFrame) -> pl.DataFrame:
    x = np.log10(frame["budget"].to_numpy())
    auroc = 0.5 + 0.3 / (1 + np.exp(-1.5 * (x - 19))) - 0.02 * (frame["loss"].to_numpy() - frame["loss"].min())
    return frame.with_columns(auroc_mortality=pl.Series(auroc))


def with_masked_metrics(frame: pl.DataFrame) -> pl.DataFrame:
    """A Labrador table: masked item accuracy rising as the loss falls, fixed value MSE and Pearson."""
    return frame.with_columns(
        family=pl.lit("labrador"),
        masked_item_accuracy=0.9 - 0.1 * (pl.col("loss") - pl.col("loss").min()),
        value_mse=pl.lit(0.0612),
        value_pearson_median=pl.lit(0.4321),
    )


NUMBERS = {name: 1.0 for name in ("layers", "heads", "seed", "flops", "tokens", "steps", "mfu", "flops_exact")}
RESULT = ResultRecord(  # a finished run's record, for tests of what reads one
    format=RESULT_FORMAT,
    status="ok",
    family="timeline",
    width=16,
    budget=1e12,
    convention="exact",
    flops_per_token=2.0,
    flops_per_token_exact=2.0,
    params=1000,
    params_nonembed=500,
    tokens_per_step=64,
    loss=1.5,
    loss_se=0.01,
    loss_split="tuning",
    loss_sequences=64,
    loss_tokens=4096,
    train_loss=1.6,
    wall_seconds=3.0,
    tokens_per_s=100.0,
    fingerprint="ab",
    **NUMBERS,
)
