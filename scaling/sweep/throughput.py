"""Measured throughput for a sweep plan's time estimates: from finished runs, or timed on the spot.

Finished runs anywhere under the runs root count when they match the sweep's family, context, rows
per step and dtype; a width no run has measured borrows the FLOP rate of the nearest measured
width. `ehrscale sweep plan --measure` times a few real steps of each width instead. Before anything is
measured, `PRIOR` (a cost model from one machine's runs) gives an estimate, which the sweep driver corrects
by the measured speed of the runs that end.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from scaling.recipe import Candidate
from scaling.record import RESULT, RunFolder, StartRecord
from scaling.sweep.spec import SweepSpec

# Sharing a GPU (`[resources] gpus` below 1): each run's allocator may use GPU_SHARE_USABLE of its share
# (scaling/sweep/driver.py: worker_env); a step's compiled memory gets this much more for the allocator's
# fragmentation and the host's batches in flight; no more than this many runs are suggested per GPU.
STEP_MEMORY_MARGIN = 1.25
MAX_RUNS_PER_GPU = 8


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: dict[int, float] = field(default_factory=dict)  # width -> training tokens/s
    flops_per_s: dict[int, float] = field(default_factory=dict)  # width -> FLOP/s under the sweep's convention
    source: str = ""
    # Timed here (`sweep plan --measure`) only: MFU against this machine's matmul peak in the sweep's dtype, the
    # device memory of each width's compiled step, and passes a step needs to fit (train.microbatch_count).
    mfu: dict[int, float] = field(default_factory=dict)
    step_bytes: dict[int, int] = field(default_factory=dict)
    microbatches: dict[int, int] = field(default_factory=dict)


def _matches(start: StartRecord, sweep: SweepSpec) -> bool:
    spec, recipe = start.spec, start.spec.get("recipe", {})
    return (
        spec.get("family") == sweep.family
        and spec.get("dtype") == sweep.dtype
        and start.convention == sweep.convention
        and recipe.get("context") == sweep.recipe.context
        and recipe.get("batch_rows") == sweep.recipe.batch_rows
    )


def measured_throughput(runs_root: Path, sweep: SweepSpec) -> Throughput:
    """Median tokens/s per width over finished runs under `runs_root` like this sweep's."""
    tokens: dict[int, list[float]] = {}
    flops: dict[int, list[float]] = {}
    runs = 0
    for result_path in Path(runs_root).glob(f"*/*/*/{RESULT}"):
        folder = RunFolder(result_path.parent)
        start, found = folder.start(), folder.result()
        if start is None or found is None:
            continue
        result = found[0]
        if not _matches(start, sweep) or result.status != "ok" or not result.tokens_per_s:
            continue
        width = start.spec["width"]
        tokens.setdefault(width, []).append(result.tokens_per_s)
        flops.setdefault(width, []).append(result.tokens_per_s * result.flops_per_token)
        runs += 1
    if not runs:
        return Throughput()
    return Throughput(
        {w: median(v) for w, v in tokens.items()},
        {w: median(v) for w, v in flops.items()},
        f"{runs} finished runs under {runs_root}",
    )


def timed_throughput(sweep: SweepSpec, widths: list[int], steps: int = 5) -> Throughput:
    """Time `steps` real training steps of each width here and size their memory (imports JAX)."""
    from scaling.runspec import RunSpec
    from scaling.training.measure import measure_step

    measured = {}
    for width in sorted(set(widths)):
        spec = RunSpec(
            name=f"measure-w{width}",
            data=sweep.data,
            width=width,
            tokens=1,
            family=sweep.family,
            seed=0,
            convention=sweep.convention,
            dtype=sweep.dtype,
            recipe=sweep.recipe,
            train=sweep.train,
        )
        measured[width] = measure_step(spec, steps)
    return Throughput(
        {w: m.tokens_per_s for w, m in measured.items()},
        {},
        f"{steps} timed steps per width on this machine",
        mfu={w: m.mfu for w, m in measured.items()},
        step_bytes={w: m.step_bytes for w, m in measured.items()},
        microbatches={w: m.microbatches for w, m in measured.items()},
    )


def runs_per_gpu(step_bytes: int, device_bytes: float, usable: float) -> int:
    """How many runs whose step needs `step_bytes` fit one GPU of `device_bytes` side by side, each allowed `usable`
    of its share (0: not even one; at most MAX_RUNS_PER_GPU)."""
    fit = int(usable * device_bytes // (STEP_MEMORY_MARGIN * step_bytes)) if step_bytes else MAX_RUNS_PER_GPU
    return min(MAX_RUNS_PER_GPU, fit)


def suggested_gpu_share(step_bytes: dict[int, int], device_bytes: float, usable: float) -> tuple[float, int]:
    """`[resources] gpus` for a sweep whose widths' steps need `step_bytes`: one share for all its runs, sized by
    the largest step (1/k for k runs a GPU), and k; (1.0, 0) when the largest does not fit a whole GPU."""
    k = runs_per_gpu(max(step_bytes.values()), device_bytes, usable)
    return (round(1 / k, 4), k) if k else (1.0, 0)


@dataclass(frozen=True)
class CostModel:
    """A run's wall seconds on one CPU core: what every run pays (compiling, its final loss), each task's
    evaluation, a launch cost per step (small models are bound by it, not by their FLOPs), and its FLOPs at a rate."""

    run_seconds: float
    task_seconds: float
    step_seconds: float
    flops_per_second: float

    def fixed(self, tasks: int) -> float:
        """What a run pays besides its steps."""
        return self.run_seconds + tasks * self.task_seconds

    def seconds(self, candidate: Candidate, steps: float, tasks: int) -> float:
        """`steps` of the candidate's (a branch trains fewer than its own) and the run's fixed cost."""
        per_step = self.step_seconds + candidate.flops / candidate.steps / self.flops_per_second
        return self.fixed(tasks) + steps * per_step


# Fitted by benchmarks/cost_model.py to the 67 runs of the built-in study's timeline and Labrador grids on a 2-core
# AMD EPYC, two runs at a time (2026-12-06, docs/benchmarks.md, "make demo in 15 minutes"): within 10-90% of
# [0.56, 1.69] x each run's measured time, the total within 2%; run_seconds is what no run records (the worker's
# imports, loading, compiling: 6% of that sweep's slot time over its 67 runs).
PRIOR = CostModel(run_seconds=2.0, task_seconds=7.2, step_seconds=0.0048, flops_per_second=3.3e10)


def planned_seconds(throughput: Throughput, candidate: Candidate, steps: float, tasks: int) -> float:
    """Wall seconds of a run that trains `steps` of the candidate's steps and evaluates `tasks` tasks: its width's
    measured speed where finished runs give one, else the prior cost model; the prior's fixed cost either way."""
    measured = estimate_seconds(throughput, candidate)
    if measured is None:
        return PRIOR.seconds(candidate, steps, tasks)
    return PRIOR.fixed(tasks) + measured * steps / candidate.steps


def estimate_seconds(throughput: Throughput, candidate: Candidate) -> float | None:
    """Run time of a candidate: its width's measured tokens/s, else the nearest measured width's FLOP rate."""
    if candidate.width in throughput.tokens_per_s:
        return candidate.tokens / throughput.tokens_per_s[candidate.width]
    if throughput.flops_per_s:
        nearest = min(throughput.flops_per_s, key=lambda w: abs(math.log(w / candidate.width)))
        return candidate.flops / throughput.flops_per_s[nearest]
    return None
