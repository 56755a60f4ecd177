"""A run's task: its family's model, loss and batches behind one interface for the loop, and the loss estimate."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.data.dataset import PreparedDataset
from scaling.families import FAMILIES
from scaling.runspec import RunSpec
from scaling.training.step import choose_microbatches, device_memory_limit, step_bytes, step_functions

EVAL_ROWS = 16  # rows per evaluation batch, in the split's fixed order: the evaluation set is a function of the dataset
EVAL_SPLIT = "tuning"  # the split every run's loss is measured on (held_out is kept for the downstream probes)


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


NO_ESTIMATE = LossEstimate(float("nan"), float("nan"), 0, 0)


def loss_estimate(sums: np.ndarray, counts: np.ndarray) -> LossEstimate:
    """Ratio estimate sum(s) / sum(n) over rows, with its delta-method standard error across rows."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    rows = len(sums)
    if rows == 0:
        return NO_ESTIMATE
    mean = sums.sum() / counts.sum()
    se = (
        float(np.sqrt(np.sum((sums - mean * counts) ** 2) / (rows * (rows - 1))) / counts.mean())
        if rows > 1
        else float("nan")
    )
    return LossEstimate(float(mean), se, rows, int(counts.sum()))


def compute_dtype(spec: RunSpec) -> jnp.dtype:
    return jnp.bfloat16 if spec.dtype == "bfloat16" else jnp.float32


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


def make_task(spec: RunSpec, dataset: PreparedDataset) -> Task:
    """The run's model, its family's loss, and batches from the part of the dataset the family trains on."""
    family, recipe = FAMILIES[spec.family], spec.recipe
    model, vocab, context = build_model(spec, dataset)
    train = family.data.loader(dataset, "train", recipe, recipe.batch_rows, spec.seed, evaluation=False)
    evaluation = family.data.loader(dataset, EVAL_SPLIT, recipe, EVAL_ROWS, 0, evaluation=True)
    as_dict = lambda b: {f: getattr(b, f) for f in family.data.batch_fields}  # noqa: E731
    count = min(-(-spec.train.eval_rows // EVAL_ROWS), evaluation.steps_per_epoch)
    return Task(
        model=model,
        row_loss=family.loss(),
        train_batch=lambda step: as_dict(train.batch(step)),
        eval_batches=[as_dict(evaluation.batch(i)) for i in range(count)],
        tokens_per_step=recipe.tokens_per_step,  # a bag row's slots are its tokens, padding too
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
