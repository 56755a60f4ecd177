"""A run's training step: AdamW after clipping, its learning-rate schedule as the step's argument, gradients
accumulated over micro-batches, and the device memory a compiled step needs.

Imports JAX and optax only (the recipe is read by attribute), so benchmarks and device checks can build the step
from a model alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from scaling.record import RunError

if TYPE_CHECKING:
    from scaling.recipe import Recipe


SHAPE_CODES = {"cosine": 0.0, "linear": 1.0, "1-sqrt": 2.0}  # the schedule's shape, as a number the step takes


def schedule_constants(recipe: Recipe, peak_lr: float, steps: int) -> jax.Array:
    """(peak, warmup steps, total steps, final lr, decay start, shape) of a run's schedule, as an array the compiled
    step takes.

    As an argument, not constants inside the step, they leave the compiled step the same for every run of a
    width (and either schedule), so runs at other budgets reuse it from the compilation cache."""
    shape = SHAPE_CODES["cosine" if recipe.schedule == "cosine" else recipe.decay_shape]
    final = peak_lr * recipe.final_lr_fraction
    values = [peak_lr, recipe.warmup(steps), steps, final, recipe.decay_start(steps), shape]
    return jnp.array(values, jnp.float32)


def lr_at(count, constants: jax.Array) -> jax.Array:
    """Linear warmup from 0, then the decay from the decay start to the final lr at the last step: cosine (its decay
    starts when the warmup ends), or WSD's cool-down, linear or 1-sqrt, after a stable stretch at the peak."""
    peak, warmup, steps, final, start, shape = (constants[i] for i in range(6))
    count = jnp.asarray(count, jnp.float32)
    progress = jnp.clip((count - start) / jnp.maximum(steps - start, 1.0), 0.0, 1.0)
    cosine = final + (peak - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    linear = peak + (final - peak) * progress
    one_minus_sqrt = final + (peak - final) * (1.0 - jnp.sqrt(progress))
    decayed = jnp.where(shape == 0, cosine, jnp.where(shape == 1, linear, one_minus_sqrt))
    return jnp.where(count < warmup, peak * count / jnp.maximum(warmup, 1.0), decayed)


_lr_at_compiled = jax.jit(lr_at)  # for the log: eagerly, each of its operations would compile on its own


def schedule(recipe: Recipe, peak_lr: float, steps: int) -> optax.Schedule:
    """The lr at each step: `lr_at` with the run's constants."""
    constants = schedule_constants(recipe, peak_lr, steps)
    return lambda count: _lr_at_compiled(count, constants)


def optimizer_state(recipe: Recipe, params):
    """AdamW's initial state for `params` (its structure does not depend on the schedule's numbers)."""
    return optimizer(recipe, schedule(recipe, 1.0, 1)).init(params)


def optimizer(recipe: Recipe, lr: optax.Schedule) -> optax.GradientTransformation:
    """AdamW (decay on matrices only) after global-norm clipping."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(recipe.grad_clip),
        optax.adamw(lr, b1=recipe.beta1, b2=recipe.beta2, weight_decay=recipe.weight_decay, mask=decay_mask),
    )


def mean_over_terms(sums: jax.Array, counts: jax.Array) -> jax.Array:
    """A batch's mean loss per term from its per-row sums and term counts."""
    return jnp.sum(sums) / jnp.maximum(jnp.sum(counts), 1.0)


def step_functions(
    row_loss: Callable, graphdef, recipe: Recipe, dtype, microbatches: int = 1
) -> tuple[Callable, Callable]:
    """The mean loss of pure params on a batch, and the jitted AdamW step (params, opt state, batch, schedule
    constants) -> (params, opt state, loss, grad norm). With `microbatches` > 1 the step runs the batch's rows in
    that many passes and adds up their gradients (of the summed loss, divided by all the batch's loss terms at the
    end): the same gradient as one pass, in a fraction of its activation memory."""

    def loss_of(p, batch):
        return mean_over_terms(*row_loss(nnx.merge(graphdef, nnx.State(p)), batch, dtype))

    def summed(p, batch):
        sums, counts = row_loss(nnx.merge(graphdef, nnx.State(p)), batch, dtype)
        return jnp.sum(sums), jnp.sum(counts)

    def accumulated(p, batch):
        parts = jax.tree.map(lambda x: x.reshape((microbatches, x.shape[0] // microbatches) + x.shape[1:]), batch)

        def one(carry, part):
            (total, terms), grads = carry
            (part_sum, part_terms), part_grads = jax.value_and_grad(summed, has_aux=True)(p, part)
            return ((total + part_sum, terms + part_terms), jax.tree.map(jnp.add, grads, part_grads)), None

        start = ((jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)), jax.tree.map(jnp.zeros_like, p))
        ((total, terms), grads), _ = jax.lax.scan(one, start, parts)
        terms = jnp.maximum(terms, 1.0)
        return total / terms, jax.tree.map(lambda g: g / terms, grads)

    @jax.jit
    def train_step(p, o, batch, constants):
        loss, grads = accumulated(p, batch) if microbatches > 1 else jax.value_and_grad(loss_of)(p, batch)
        tx = optimizer(recipe, lambda count: lr_at(count, constants))  # the state is the same as `optimizer`'s
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss, optax.tree.norm(grads)

    return loss_of, train_step


def step_bytes(compiled) -> int:
    """Device memory a compiled step (`train_step.lower(...).compile()`) needs at once: its inputs, the outputs not
    written over its inputs, and its temporaries (XLA's own accounting of the program, on every backend)."""
    memory = compiled.memory_analysis()
    return int(
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes
        + memory.temp_size_in_bytes
    )


def device_memory_limit() -> int | None:
    """Bytes the first device lets this process allocate (a GPU's share under XLA_PYTHON_CLIENT_MEM_FRACTION); None
    on a CPU, whose memory is the machine's."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def choose_microbatches(batch_rows: int, bytes_for: Callable[[int], int], limit: int, headroom: float = 0.9) -> int:
    """The fewest passes (a divisor of batch_rows) whose step needs at most `headroom` of `limit` bytes, given the
    bytes of a step in that many passes; RunError when even one row per pass does not fit."""
    passes = [m for m in range(1, batch_rows + 1) if batch_rows % m == 0]
    for m in passes:
        if bytes_for(m) <= headroom * limit:
            return m
    raise RunError(
        f"a step does not fit the device's {limit / 2**30:.1f} GiB even one row at a time "
        f"({bytes_for(passes[-1]) / 2**30:.1f} GiB): a smaller width, a shorter context, or a larger share of the "
        "device ([resources] gpus)"
    )
