"""Where a run's training step goes: its time with each attention, and XLA's ops by kind.

    .venv/bin/python benchmarks/step_profile.py [--spec sweeps/labrador-demo.toml] [--run b1e12-w16-s0 ...]

For each planned run of the sweep: its model, data and jitted AdamW step as `ehrscale sweep run` trains it
(single-threaded XLA, as a sweep's CPU worker), timed with attention "xla" (normalised after the value
product) and "reference" (jax.nn.softmax; scaling/models/attention.py), the two interleaved over the same batches;
then one profile of the step (JAX's profiler, its Perfetto trace) summed by XLA op kind: the op count per step,
the kinds that take the time, and how much goes to ops under 20 us (launch-bound work, not arithmetic).
"""

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import machine

SMALL_OP_US = 20.0


def timed_steps(step, params, opt_state, batches, constants) -> float:
    """Seconds per step over `batches`, from the given state."""
    p, o = params, opt_state
    start = time.perf_counter()
    for batch in batches:
        p, o, loss, _ = step(p, o, batch, constants)
    loss.block_until_ready()
    return (time.perf_counter() - start) / len(batches)


def op_kinds(step, params, opt_state, batches, constants) -> tuple[int, dict[str, float], float]:
    """Ops per step, microseconds per step by op kind, and microseconds per step in ops under SMALL_OP_US."""
    import jax

    with tempfile.TemporaryDirectory(prefix="step-profile-") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            timed_steps(step, params, opt_state, batches, constants)
        trace = json.load(gzip.open(glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)[0]))
    runtime = ("ThunkExecutor", "Pjit", "$", "CommonPjRt", "DevicePut", "Slinky", "Allocate", "ParseArguments")
    per_op = collections.Counter()
    for event in trace["traceEvents"]:
        if event.get("ph") == "X" and not event["name"].startswith(runtime):
            per_op[event["name"]] += event["dur"] / len(batches)
    kinds = collections.Counter()
    for name, us in per_op.items():
        kinds[re.sub(r"[._]?\d+$", "", name)] += us
    return len(per_op), dict(kinds.most_common(6)), sum(us for us in per_op.values() if us < SMALL_OP_US)


def profile(spec_path: Path, run_id: str, steps: int, repeats: int) -> None:
    import jax

    from scaling.sweep.plan import make_plan
    from scaling.sweep.spec import load_sweep
    from scaling.training.measure import step_setup
    from scaling.training.step import schedule_constants

    planned = {r.run_id: r for r in make_plan(load_sweep(spec_path)).runs}
    if run_id not in planned:
        raise SystemExit(f"{spec_path} plans no run {run_id}; it plans {', '.join(planned)}")
    spec = planned[run_id].spec
    setups = {  # the same initial params: the model's seed draws them, whatever computes its attention
        name: step_setup(dataclasses.replace(spec, train=dataclasses.replace(spec.train, attention=implementation)))
        for name, implementation in (("attention", "xla"), ("reference", "reference"))
    }
    task, params, opt_state = setups["attention"].task, setups["attention"].params, setups["attention"].opt_state
    constants = schedule_constants(spec.recipe, spec.recipe.learning_rate(spec.width), steps)
    batches = [task.train_batch(i) for i in range(steps)]
    variants = {name: setup.step() for name, setup in setups.items()}
    for step in variants.values():
        jax.block_until_ready(step(params, opt_state, batches[0], constants))
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            times[name].append(timed_steps(step, params, opt_state, batches, constants))
    losses = {name: float(step(params, opt_state, batches[0], constants)[2]) for name, step in variants.items()}
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(
        f"{spec_path.name} {run_id} ({task.tokens_per_step:,} tokens a step): step {ms['attention']:.2f} ms with "
        f"attention, {ms['reference']:.2f} ms with reference attention ({ms['reference'] / ms['attention']:.2f}x; "
        f"medians of {repeats} x {steps} steps); first loss {losses['attention']:.6f} / {losses['reference']:.6f}"
    )
    count, kinds, small = op_kinds(variants["attention"], params, opt_state, batches, constants)
    total = sum(kinds.values())
    print(
        f"  {count} XLA ops a step; {small / 1e3:.2f} ms in ops under {SMALL_OP_US:.0f} us; the top kinds: "
        + ", ".join(f"{kind} {us / 1e3:.2f} ms" for kind, us in kinds.items())
        + f" ({total / 1e3:.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=Path("sweeps/labrador-demo.toml"))
    parser.add_argument("--run", nargs="+", default=["b1e12-w16-s0"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from scaling.sweep.driver import CPU_SINGLE_THREAD

    # Set before JAX starts: one thread, as `sweep run` sets for a CPU worker.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + CPU_SINGLE_THREAD).strip()
    print(machine())
    for run_id in args.run:
        profile(args.spec, run_id, args.steps, args.repeats)


if __name__ == "__main__":
    main()
