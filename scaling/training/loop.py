"""Train one run: `ehrscale train RUN.toml --out RUN_DIR` (and the same function for sweeps).

The run folder (`scaling.record`) holds `spec.json` (the resolved spec and its fingerprint), `metrics.jsonl`,
`checkpoints/` (orbax, asynchronous, last k kept) and `result.json`, written last and atomically,
after the final checkpoint. Run it again and it resumes from the last checkpoint: batches are a
pure function of (seed, step) and the optimiser state is restored, so the resumed run ends where an
uninterrupted one would. A finished run is not trained again; a changed spec under the same folder
is refused with the fields that differ. A NaN or infinite loss stops the run as `diverged`.
"""

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from scaling.data.dataset import PreparedDataset
from scaling.eval.bag_metrics import masked_lab_metrics
from scaling.families import FAMILIES
from scaling.flops import train_flops_per_token
from scaling.hardware import matmul_peak_flops
from scaling.record import RESULT_FORMAT, ResultRecord, RunError, RunFolder, StartRecord
from scaling.runspec import RunSpec
from scaling.tracking import JsonlMetrics, Trackers
from scaling.training.checkpoints import (
    branch_point,
    branch_point_manager,
    checkpoint_manager,
    restore_newest_readable,
    save,
)
from scaling.training.step import optimizer_state, schedule, schedule_constants, step_functions
from scaling.training.tasks import (
    EVAL_SPLIT,
    NO_ESTIMATE,
    LossEstimate,
    compute_dtype,
    loss_estimate,
    make_task,
    microbatch_count,
)


def enable_compilation_cache(folder: Path) -> None:
    """JAX's persistent compilation cache: runs of a sweep that share a shape compile once."""
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _check_spec(folder: RunFolder, start: StartRecord) -> None:
    """Refuse a run folder that holds a run of another spec, naming the fields that differ."""
    old = folder.start()
    if old is None or old.fingerprint == start.fingerprint:
        return
    new = json.loads(json.dumps(start.result_fields))  # tuples as lists, as stored
    differ = sorted(k for k in set(old.result_fields) | set(new) if old.result_fields.get(k) != new.get(k))
    raise RunError(
        f"{folder.path} holds a run with another spec (fields that differ: {', '.join(differ)}); "
        f"use a new --out or delete {folder.path}"
    )


def train(
    spec: RunSpec,
    out: Path,
    log: Callable[[str], None] = print,
    peak_flops: float | None = None,
    trackers: Trackers | None = None,
) -> ResultRecord:
    """Train (or resume, or skip if finished) one run; return its result. Each logged step goes to metrics.jsonl
    and to `trackers` (whose owner finishes them)."""
    out = Path(out)
    folder = RunFolder(out)
    dataset = PreparedDataset.open(spec.data)
    for name in spec.tasks:  # a task the dataset lacks fails now, not after training
        dataset.resolve_task(name)
    data_hash = dataset.run_hash
    start_record = StartRecord(spec.to_dict(), spec.result_fields(data_hash), spec.fingerprint(data_hash))
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(folder, start_record)
    finished = folder.result()
    if finished is not None:
        log(f"{out}: finished already; nothing to do")
        return finished[0]

    task = make_task(spec, dataset)
    recipe = spec.recipe
    steps = spec.tokens // task.tokens_per_step
    if steps < 1:
        raise RunError(f"tokens {spec.tokens:,} is less than one step of {task.tokens_per_step:,} tokens")
    shape = dataclasses.replace(recipe, context=task.context).shape(spec.width, task.vocab_size)
    flops_per_token = train_flops_per_token(shape, spec.convention)
    exact_per_token = train_flops_per_token(shape, "exact")
    start_record = dataclasses.replace(
        start_record,
        steps=steps,
        tokens_per_step=task.tokens_per_step,
        params=shape.params,
        params_nonembed=shape.params_nonembed,
        flops_per_token=flops_per_token,
        convention=spec.convention,
        flops=flops_per_token * steps * task.tokens_per_step,
    )
    folder.write_start(start_record)

    devices = jax.devices()
    if recipe.batch_rows % len(devices):
        raise RunError(f"batch_rows {recipe.batch_rows} is not divisible by the {len(devices)} devices")
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    dtype = compute_dtype(spec)
    graphdef, state = nnx.split(task.model)
    params = jax.device_put(nnx.to_pure_dict(state), replicated)
    peak_lr = recipe.learning_rate(spec.width)
    constants = schedule_constants(recipe, peak_lr, steps)
    lr = schedule(recipe, peak_lr, steps)
    opt_state = jax.device_put(optimizer_state(recipe, params), replicated)

    microbatches = microbatch_count(spec, task, graphdef, params, opt_state, constants, dtype)
    if microbatches > 1:
        log(f"{out}: {microbatches} passes of {recipe.batch_rows // microbatches} rows a step")
    _, train_step = step_functions(task.row_loss, graphdef, recipe, dtype, microbatches)
    row_loss = jax.jit(lambda p, batch: task.row_loss(nnx.merge(graphdef, nnx.State(p)), batch, dtype))

    manager = checkpoint_manager(folder, spec.train.keep_checkpoints)
    start = 0
    restored = restore_newest_readable(manager, {"params": params, "opt_state": opt_state}, out, log)
    if restored is None and spec.branch is not None:
        trunk = RunFolder(out.parent / spec.branch.trunk)
        restored = spec.branch.step, branch_point(trunk, spec.branch.step, {"params": params, "opt_state": opt_state})
        log(f"{out}: branching from {spec.branch.trunk} at step {spec.branch.step:,} of {steps:,}")
    elif restored is not None:
        log(f"{out}: resuming from step {restored[0]:,} of {steps:,}")
    if restored is not None:
        start, state = restored
        params = jax.device_put(state["params"], replicated)
        opt_state = jax.device_put(state["opt_state"], replicated)
    points = branch_point_manager(folder) if spec.branch_points else None
    metrics = JsonlMetrics(out, start)

    def log_row(row: dict) -> None:
        """A logged step: into metrics.jsonl, the record, and to the trackers."""
        metrics.log(row)
        if trackers is not None:
            trackers.log(row["step"], row)

    def evaluate(batches: list[dict]) -> LossEstimate:
        parts = [
            row_loss(params, jax.device_put(b, sharded if len(b[next(iter(b))]) % len(devices) == 0 else replicated))
            for b in batches
        ]
        return loss_estimate(
            np.concatenate([np.asarray(p[0]) for p in parts]) if parts else np.zeros(0),
            np.concatenate([np.asarray(p[1]) for p in parts]) if parts else np.zeros(0),
        )

    # On one device the jitted step takes the host batch as it is: its own transfer costs a small step (width 16)
    # 7% less than device_put's; several devices need the batch split across them.
    place = (lambda batch: batch) if len(devices) == 1 else (lambda batch: jax.device_put(batch, sharded))
    peak = peak_flops or matmul_peak_flops(dtype=dtype)  # the peak of the dtype the step computes in
    status, train_loss, final = "ok", float("nan"), NO_ESTIMATE
    started = time.perf_counter()
    window_start, window_tokens = time.perf_counter(), 0
    try:
        for step in range(start, steps):
            batch = place(task.train_batch(step))
            params, opt_state, loss, grad_norm = train_step(params, opt_state, batch, constants)
            window_tokens += task.tokens_per_step
            done = step + 1
            last = done == steps
            if done % spec.train.log_every == 0 or last:
                train_loss = float(loss)
                elapsed = time.perf_counter() - window_start
                tokens_per_s = window_tokens / elapsed
                row = {
                    "step": done,
                    "tokens": done * task.tokens_per_step,
                    "loss": train_loss,
                    "lr": float(lr(step)),
                    "grad_norm": float(grad_norm),
                    "step_time": elapsed / (window_tokens / task.tokens_per_step),
                    "tokens_per_s": tokens_per_s,
                    "mfu": tokens_per_s * exact_per_token / peak,
                }
                if not math.isfinite(train_loss):
                    status = "diverged"
                    log_row(row)
                    log(f"{out}: loss {train_loss} at step {done:,}: diverged")
                    break
                if last:  # the loss the fits use: every evaluation row (spec.train.eval_rows)
                    final = evaluate(task.eval_batches)
                    row["eval_loss"], row["eval_loss_se"] = final.mean, final.se
                elif done % spec.train.eval_every == 0:  # the curve: the first eval_batches of the same rows
                    row["eval_loss"] = evaluate(task.eval_batches[: spec.train.eval_batches]).mean
                log_row(row)
                window_start, window_tokens = time.perf_counter(), 0
            if points is not None and done in spec.branch_points:  # before the step's checkpoint: see _branch_point
                save(points, done, {"params": params, "opt_state": opt_state})
            if done % spec.train.checkpoint_every == 0 or last:
                save(manager, done, {"params": params, "opt_state": opt_state})
    finally:
        metrics.close()
    manager.wait_until_finished()
    manager.close()
    if points is not None:
        points.close()
    wall = time.perf_counter() - started
    trained_tokens = (steps - start) * task.tokens_per_step
    tokens = steps * task.tokens_per_step
    predictor = FAMILIES[spec.family].masked_predictor()
    masked = (  # the lab-bag families' own metrics (scaling/eval/bag_metrics.py)
        masked_lab_metrics(nnx.merge(graphdef, nnx.State(params)), predictor, dataset, task.context)
        if predictor is not None and status == "ok"
        else {}
    )
    result = ResultRecord(
        format=RESULT_FORMAT,
        status=status,
        family=spec.family,
        width=spec.width,
        layers=shape.n_layers,
        heads=shape.n_heads,
        seed=spec.seed,
        budget=spec.budget,
        convention=spec.convention,
        flops_per_token=flops_per_token,
        flops_per_token_exact=exact_per_token,
        flops=flops_per_token * tokens,
        flops_exact=exact_per_token * tokens,
        params=shape.params,
        params_nonembed=shape.params_nonembed,
        tokens=tokens,
        steps=steps,
        tokens_per_step=task.tokens_per_step,
        loss=final.mean,
        loss_se=final.se,
        loss_split=EVAL_SPLIT,
        loss_sequences=final.rows,
        loss_tokens=final.terms,
        train_loss=train_loss,
        wall_seconds=wall,
        tokens_per_s=trained_tokens / wall if wall else 0.0,
        mfu=(trained_tokens / wall) * exact_per_token / peak if wall else 0.0,
        fingerprint=start_record.fingerprint,
        lr_multiplier=recipe.lr_multiplier,
        peak_lr=peak_lr,
        schedule=recipe.schedule,
        role="trunk" if spec.branch_points else "run",
        microbatch_rows=recipe.batch_rows // microbatches,
        flops_spent=flops_per_token * task.tokens_per_step * spec.steps_spent(steps),
        branch_of=spec.branch.trunk if spec.branch is not None else None,
        branch_step=spec.branch.step if spec.branch is not None else None,
        **masked,
    )
    folder.write_result(result)
    log(
        f"{out}: {status}; {EVAL_SPLIT} loss {final.mean:.4f} +- {final.se:.4f} over {final.terms:,} terms "
        f"after {steps:,} steps ({tokens:,} tokens)"
    )
    return result
