"""One width's training step timed and sized on this machine, for `sweep plan --measure`: nothing is saved."""

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
from flax import nnx

from scaling.data.dataset import PreparedDataset
from scaling.flops import train_flops_per_token
from scaling.hardware import matmul_peak_flops
from scaling.runspec import RunSpec
from scaling.training.step import optimizer_state, schedule_constants, step_bytes, step_functions
from scaling.training.tasks import Task, compute_dtype, make_task, microbatch_count


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
    return StepSetup(spec, task, graphdef, params, optimizer_state(spec.recipe, params), compute_dtype(spec))


@dataclass(frozen=True)
class StepMeasurement:
    """A width's step on this machine: training tokens/s, MFU against the measured matmul peak, and memory."""

    tokens_per_s: float
    mfu: float
    step_bytes: int  # device memory the compiled step needs (step.step_bytes)
    microbatches: int


def measure_step(spec: RunSpec, steps: int = 5) -> StepMeasurement:
    """Time `steps` real training steps of a run's shape (after one compiling step) and size its memory."""
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
