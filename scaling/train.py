"""Train one run: `ehrscale train RUN.toml --out RUN_DIR` (and the same function for sweeps).

The run folder holds `spec.json` (the resolved spec and its fingerprint), `metrics.jsonl`,
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
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from scaling.bag_metrics import masked_lab_metrics
from scaling.data.atomic import write_json
from scaling.data.dataset import PreparedDataset
from scaling.data.loaders import BagLoader, TimelineLoader
from scaling.families import FAMILIES, TIMELINES
from scaling.flops import train_flops_per_token
from scaling.hardware import matmul_peak_flops
from scaling.record import RESULT, RESULT_FORMAT
from scaling.runspec import RunSpec, parse_spec
from scaling.step import (
    RunError,
    choose_microbatches,
    device_memory_limit,
    optimizer_state,
    schedule,
    schedule_constants,
    step_bytes,
    step_functions,
)
from scaling.tracking import JsonlMetrics, Trackers

EVAL_ROWS = 16  # rows per evaluation batch, in the split's fixed order: the evaluation set is a function of the dataset
EVAL_SPLIT = "tuning"  # the split every run's loss is measured on (held_out is kept for the downstream probes)


def enable_compilation_cache(folder: Path) -> None:
    """JAX's persistent compilation cache: runs of a sweep that share a shape compile once."""
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclass
class Task:
    """A family's model, loss and data, behind one interface for the loop."""

    model: nnx.Module
    row_loss: Callable  # (model, batch dict, dtype) -> (summed loss per row [b], loss terms per row [b])
    train_batch: Callable[[int], dict]
    eval_batches: list[dict]  # the final evaluation's rows (spec.train.eval_rows), in the split's fixed order
    tokens_per_step: int
    vocab_size: int
    context: int


@dataclass(frozen=True)
class LossEstimate:
    """A loss measured on evaluation rows: the mean per term and its standard error over the rows."""

    mean: float
    se: float
    rows: int
    terms: int  # tokens (timelines) or masked labs (bags)


def loss_estimate(sums: np.ndarray, counts: np.ndarray) -> LossEstimate:
    """Ratio estimate sum(s) / sum(n) over rows, with its delta-method standard error across rows."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    rows = len(sums)
    if rows == 0:
        return LossEstimate(float("nan"), float("nan"), 0, 0)
    mean = sums.sum() / counts.sum()
    se = (
        float(np.sqrt(np.sum((sums - mean * counts) ** 2) / (rows * (rows - 1))) / counts.mean())
        if rows > 1
        else float("nan")
    )
    return LossEstimate(float(mean), se, rows, int(counts.sum()))


def build_model(
    spec: RunSpec, dataset: PreparedDataset, abstract: bool = False, attention: str | None = None
) -> tuple[nnx.Module, int, int]:
    """The run's model initialised from its seed, its vocabulary (or lab items, or BERT tokens) and its context.

    The initialisation is one compiled function: run eagerly, every random draw compiles on its own (seconds a
    run). `abstract` gives the shapes only, for a checkpoint to fill. `attention` overrides the spec's
    implementation (a restored model runs wherever it is restored: "auto")."""
    family = FAMILIES[spec.family]
    family.check_context(dataset, spec.recipe.context)  # the epoch's packing is the loader's, not needed here
    vocab_size = family.vocab_size(dataset)
    config = spec.recipe.model_config(spec.width, vocab_size)
    config = dataclasses.replace(config, attention=attention or spec.train.attention)
    make = lambda: family.model_class()(config, nnx.Rngs(spec.seed))  # noqa: E731
    return (nnx.eval_shape(make) if abstract else nnx.jit(make)()), vocab_size, spec.recipe.context


def _eval_batch_count(spec: RunSpec, steps_per_epoch: int) -> int:
    return min(-(-spec.train.eval_rows // EVAL_ROWS), steps_per_epoch)


TIMELINE_FIELDS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
BAG_FIELDS = (
    "codes",
    "values",
    "is_null",
    "is_masked",
    "segment_ids",
    "target_code",
    "target_value",
    "tokens",
    "target_token",
    "read_slots",
    "read_valid",
)


def make_task(spec: RunSpec, dataset: PreparedDataset) -> Task:
    """The run's model, its family's loss, and batches from the part of the dataset the family trains on."""
    family = FAMILIES[spec.family]
    recipe = spec.recipe
    model, vocab, context = build_model(spec, dataset)
    if family.data == TIMELINES:
        train = TimelineLoader(dataset.timelines("train"), recipe.context, recipe.batch_rows, seed=spec.seed)
        evaluation = TimelineLoader(dataset.timelines(EVAL_SPLIT), recipe.context, EVAL_ROWS, seed=0, shuffle=False)
        fields, tokens_per_step = TIMELINE_FIELDS, recipe.tokens_per_step
    else:
        items = dataset.lab_vocabulary().size
        cap = recipe.bags_per_row  # 0: as many as fit
        train = BagLoader(dataset.bags("train"), items, recipe.batch_rows, context, seed=spec.seed, bags_per_row=cap)
        evaluation = BagLoader(
            dataset.bags(EVAL_SPLIT), items, EVAL_ROWS, context, seed=0, mask="fixed", shuffle=False, bags_per_row=cap
        )
        fields, tokens_per_step = BAG_FIELDS, recipe.tokens_per_step  # a row's slots are its tokens, padding too
    as_dict = lambda b: {f: getattr(b, f) for f in fields}  # noqa: E731
    batches = [as_dict(evaluation.batch(i)) for i in range(_eval_batch_count(spec, evaluation.steps_per_epoch))]
    return Task(
        model=model,
        row_loss=family.loss(),
        train_batch=lambda step: as_dict(train.batch(step)),
        eval_batches=batches,
        tokens_per_step=tokens_per_step,
        vocab_size=vocab,
        context=context,
    )


def microbatch_count(spec: RunSpec, task: Task, graphdef, params, opt_state, constants, dtype) -> int:
    """Passes per step: as [train] microbatch_rows says; else one on a CPU, and on an accelerator the fewest whose
    compiled step fits the device's memory (each count tried is compiled once, and the persistent cache keeps it)."""
    rows = spec.recipe.batch_rows
    if spec.train.microbatch_rows:
        return rows // spec.train.microbatch_rows
    limit = device_memory_limit()
    if limit is None:
        return 1
    batch = task.train_batch(0)

    def bytes_for(passes: int) -> int:
        step = step_functions(task.row_loss, graphdef, spec.recipe, dtype, passes)[1]
        return step_bytes(step.lower(params, opt_state, batch, constants).compile())

    return choose_microbatches(rows, bytes_for, limit)


def _check_spec(out: Path, spec_record: dict) -> None:
    path = out / "spec.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old["fingerprint"] != spec_record["fingerprint"]:
        new = json.loads(json.dumps(spec_record["result_fields"]))  # tuples as lists, as stored
        differ = sorted(k for k in set(old["result_fields"]) | set(new) if old["result_fields"].get(k) != new.get(k))
        raise RunError(
            f"{out} holds a run with another spec (fields that differ: {', '.join(differ)}); "
            f"use a new --out or delete {out}"
        )


def train(
    spec: RunSpec,
    out: Path,
    log: Callable[[str], None] = print,
    peak_flops: float | None = None,
    trackers: Trackers | None = None,
) -> dict:
    """Train (or resume, or skip if finished) one run; return its result. Each logged step goes to metrics.jsonl
    and to `trackers` (whose owner finishes them)."""
    out = Path(out)
    dataset = PreparedDataset.open(spec.data)
    for name in spec.tasks:  # a task the dataset lacks fails now, not after training
        dataset.resolve_task(name)
    data_hash = (
        dataset.manifest["source"]["content_hash"] + "/" + json.dumps(dataset.manifest.get("tokenizer"), sort_keys=True)
    )
    record = {
        "spec": spec.to_dict(),
        "result_fields": spec.result_fields(data_hash),
        "fingerprint": spec.fingerprint(data_hash),
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, record)
    if (out / RESULT).exists():
        log(f"{out}: finished already; nothing to do")
        return json.loads((out / RESULT).read_text())

    task = make_task(spec, dataset)
    recipe = spec.recipe
    steps = spec.tokens // task.tokens_per_step
    if steps < 1:
        raise RunError(f"tokens {spec.tokens:,} is less than one step of {task.tokens_per_step:,} tokens")
    shape = dataclasses.replace(recipe, context=task.context).shape(spec.width, task.vocab_size)
    flops_per_token = train_flops_per_token(shape, spec.convention)
    exact_per_token = train_flops_per_token(shape, "exact")
    record.update(
        {
            "steps": steps,
            "tokens_per_step": task.tokens_per_step,
            "params": shape.params,
            "params_nonembed": shape.params_nonembed,
            "flops_per_token": flops_per_token,
            "convention": spec.convention,
            "flops": flops_per_token * steps * task.tokens_per_step,
        }
    )
    write_json(out / "spec.json", record)

    devices = jax.devices()
    if recipe.batch_rows % len(devices):
        raise RunError(f"batch_rows {recipe.batch_rows} is not divisible by the {len(devices)} devices")
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
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

    manager = ocp.CheckpointManager(
        out.resolve() / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=spec.train.keep_checkpoints, enable_async_checkpointing=True),
    )
    start = 0
    restored = _restore_newest_readable(manager, {"params": params, "opt_state": opt_state}, out, log)
    if restored is None and spec.branch is not None:
        restored = spec.branch.step, _branch_point(out.parent / spec.branch.trunk, spec.branch.step, params, opt_state)
        log(f"{out}: branching from {spec.branch.trunk} at step {spec.branch.step:,} of {steps:,}")
    elif restored is not None:
        log(f"{out}: resuming from step {restored[0]:,} of {steps:,}")
    if restored is not None:
        start, state = restored
        params = jax.device_put(state["params"], replicated)
        opt_state = jax.device_put(state["opt_state"], replicated)
    points = _branch_point_manager(out) if spec.branch_points else None
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
    status, train_loss, final = "ok", float("nan"), LossEstimate(float("nan"), float("nan"), 0, 0)
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
                points.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
            if done % spec.train.checkpoint_every == 0 or last:
                manager.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
    finally:
        metrics.close()
    manager.wait_until_finished()
    manager.close()
    if points is not None:
        points.close()
    wall = time.perf_counter() - started
    trained_tokens = (steps - start) * task.tokens_per_step
    tokens = steps * task.tokens_per_step
    result = {
        "format": RESULT_FORMAT,
        "status": status,
        "family": spec.family,
        "width": spec.width,
        "layers": shape.n_layers,
        "heads": shape.n_heads,
        "seed": spec.seed,
        "budget": spec.budget,
        "convention": spec.convention,
        "flops_per_token": flops_per_token,
        "flops_per_token_exact": exact_per_token,
        "flops": flops_per_token * tokens,
        "flops_exact": exact_per_token * tokens,
        "params": shape.params,
        "params_nonembed": shape.params_nonembed,
        "tokens": tokens,
        "steps": steps,
        "tokens_per_step": task.tokens_per_step,
        "loss": final.mean,
        "loss_se": final.se,
        "loss_split": EVAL_SPLIT,
        "loss_sequences": final.rows,
        "loss_tokens": final.terms,
        "train_loss": train_loss,
        "wall_seconds": wall,
        "tokens_per_s": trained_tokens / wall if wall else 0.0,
        "mfu": (trained_tokens / wall) * exact_per_token / peak if wall else 0.0,
        "fingerprint": record["fingerprint"],
        "lr_multiplier": recipe.lr_multiplier,
        "peak_lr": peak_lr,
        "schedule": recipe.schedule,
        "role": "trunk" if spec.branch_points else "run",
        "microbatch_rows": recipe.batch_rows // microbatches,
        "flops_spent": flops_per_token * task.tokens_per_step * spec.steps_spent(steps),
    }
    if spec.branch is not None:
        result.update({"branch_of": spec.branch.trunk, "branch_step": spec.branch.step})
    predictor = FAMILIES[spec.family].masked_predictor()
    if predictor is not None and status == "ok":  # the lab-bag families' own metrics (scaling/bag_metrics.py)
        result.update(masked_lab_metrics(nnx.merge(graphdef, nnx.State(params)), predictor, dataset, task.context))
    write_json(out / RESULT, result)
    log(
        f"{out}: {status}; {EVAL_SPLIT} loss {final.mean:.4f} +- {final.se:.4f} over {final.terms:,} terms "
        f"after {steps:,} steps ({tokens:,} tokens)"
    )
    return result


@dataclass(frozen=True)
class StepSetup:
    """A run's task, its split model, fresh params and optimizer state, and its compute dtype: what timing or
    sizing a step needs, without a run folder."""

    spec: RunSpec
    task: Task
    graphdef: object
    params: dict
    opt_state: object
    dtype: jnp.dtype

    def step(self, microbatches: int = 1) -> Callable:
        return step_functions(self.task.row_loss, self.graphdef, self.spec.recipe, self.dtype, microbatches)[1]


def step_setup(spec: RunSpec) -> StepSetup:
    task = make_task(spec, PreparedDataset.open(spec.data))
    graphdef, state = nnx.split(task.model)
    params = nnx.to_pure_dict(state)
    dtype = jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32
    return StepSetup(spec, task, graphdef, params, optimizer_state(spec.recipe, params), dtype)


@dataclass(frozen=True)
class StepMeasurement:
    """A width's step on this machine: training tokens/s, MFU against the measured matmul peak, and memory."""

    tokens_per_s: float
    mfu: float
    step_bytes: int  # device memory the compiled step needs (step.step_bytes)
    microbatches: int


def measure_step(spec: RunSpec, steps: int = 5) -> StepMeasurement:
    """Time `steps` real training steps of a run's shape (after one compiling step) and size its memory; nothing is
    saved."""
    setup = step_setup(spec)
    task, params, opt_state = setup.task, setup.params, setup.opt_state
    constants = schedule_constants(spec.recipe, spec.recipe.learning_rate(spec.width), steps + 1)
    microbatches = microbatch_count(spec, task, setup.graphdef, params, opt_state, constants, setup.dtype)
    train_step = setup.step(microbatches).lower(params, opt_state, task.train_batch(0), constants).compile()
    memory = step_bytes(train_step)
    params, opt_state, loss, _ = train_step(params, opt_state, task.train_batch(0), constants)
    loss.block_until_ready()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        params, opt_state, loss, _ = train_step(params, opt_state, task.train_batch(step), constants)
    loss.block_until_ready()
    tokens_per_s = steps * task.tokens_per_step / (time.perf_counter() - started)
    shape = dataclasses.replace(spec.recipe, context=task.context).shape(spec.width, task.vocab_size)
    mfu = tokens_per_s * train_flops_per_token(shape, "exact") / matmul_peak_flops(dtype=setup.dtype)
    return StepMeasurement(tokens_per_s, mfu, memory, microbatches)


def _restore(manager: ocp.CheckpointManager, step: int, like: dict) -> dict:
    """The state saved at `step`, read into the shapes and dtypes of `like`."""
    return manager.restore(step, args=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, like)))


def _restore_newest_readable(manager: ocp.CheckpointManager, like: dict, out: Path, log) -> tuple[int, dict] | None:
    """(step, state) of the newest checkpoint that reads back; unreadable newer ones are deleted with a warning
    (a crash mid-write, a damaged disk), so the run resumes from the one before. None: start from step 0."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return step, _restore(manager, step, like)
        except Exception as error:  # orbax/tensorstore raise many kinds; any unreadable checkpoint is skipped
            reason = str(error).splitlines()[0][:200] if str(error) else ""
            log(
                f"warning: {out}: the checkpoint at step {step:,} cannot be read ({type(error).__name__}: {reason}); "
                "deleting it and falling back to the one before"
            )
            manager.delete(step)
    return None


BRANCH_POINTS = "branch_points"  # a trunk's kept states, one per branch, never rotated out


def _branch_point_manager(run_dir: Path) -> ocp.CheckpointManager:
    # Synchronous, and written before the regular checkpoint of the same step: a trunk that resumes from a later
    # checkpoint therefore has every earlier branch point on disk.
    options = ocp.CheckpointManagerOptions(max_to_keep=None, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(run_dir).resolve() / BRANCH_POINTS, options=options)


def _branch_point(trunk_dir: Path, step: int, params, opt_state) -> dict:
    """The trunk's state at `step`, or a RunError saying what is missing."""
    if not (trunk_dir / BRANCH_POINTS).is_dir():
        raise RunError(f"{trunk_dir} holds no trunk states ({BRANCH_POINTS}/); train the trunk before its branches")
    manager = _branch_point_manager(trunk_dir)
    try:
        if step not in manager.all_steps():
            raise RunError(
                f"{trunk_dir} has no state at step {step:,} for this branch (kept: "
                f"{', '.join(f'{s:,}' for s in sorted(manager.all_steps())) or 'none'}); train the trunk first, or "
                f"delete {trunk_dir} to train it again"
            )
        return _restore(manager, step, {"params": params, "opt_state": opt_state})
    finally:
        manager.close()


def finished_run(out: Path, purpose: str) -> tuple[RunSpec, dict]:
    """The spec and result of a run folder whose training finished ok, or a RunError saying why it cannot be
    used to `purpose` (evaluate, export)."""
    out = Path(out)
    if not (out / RESULT).exists():
        raise RunError(f"{out}: no result.json, so the run has not finished; train it before you {purpose} it")
    record = json.loads((out / "spec.json").read_text())
    spec = parse_spec(record["spec"], str(out / "spec.json"))
    result = json.loads((out / RESULT).read_text())
    if result["status"] != "ok":
        raise RunError(f"{out}: the run is {result['status']}; nothing to {purpose}")
    return spec, result


def restore_model(out: Path, spec: RunSpec, dataset: PreparedDataset) -> nnx.Module:
    """The run's model with the weights of its last checkpoint, its attention chosen for this platform."""
    model, _, _ = build_model(spec, dataset, abstract=True, attention="auto")
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    abstract = {  # shapes only: nothing computed
        "params": params,
        "opt_state": jax.eval_shape(lambda p: optimizer_state(spec.recipe, p), params),
    }
    manager = ocp.CheckpointManager(Path(out).resolve() / "checkpoints")
    latest = manager.latest_step()
    if latest is None:
        raise RunError(f"{out}: no checkpoint to evaluate")
    restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
    manager.close()
    return nnx.merge(graphdef, nnx.State(restored["params"]))
