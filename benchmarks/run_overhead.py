"""Where one run's time goes besides its training steps: set-up, compiling, evaluations, the probes.

    .venv/bin/python benchmarks/run_overhead.py [--spec sweeps/labrador-demo.toml] [--run b1e11-w16-s0]

Runs one planned run of a sweep end to end (`scaling.run.run`: train, then each task's probe), each pass
in a fresh process as a sweep's worker would be, into temporary folders: first with an empty compilation
cache (the first run of a width in a sweep), then the same width at another budget of the sweep with the
cache the first filled (as a sweep's later runs of that width find it). Prints per pass: the whole run;
the training steps alone (steps x the median step time that metrics.jsonl logged); the rest of training
(data, model, compiling, evaluation of the loss, checkpoints, the masked-lab metrics); and the downstream
evaluation (embedding the probe's inputs, the probe, cached baselines) per task. Single-threaded XLA, as
a sweep's CPU worker runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine


def one_pass(spec_path: Path, run_id: str, out: Path, cache: Path) -> dict:
    """Run the run in this process; return its phase times."""
    from scaling.record import RunFolder
    from scaling.run import run
    from scaling.sweep.plan import make_plan
    from scaling.sweep.spec import load_sweep
    from scaling.training.loop import enable_compilation_cache

    planned = {r.run_id: r for r in make_plan(load_sweep(spec_path)).runs}
    enable_compilation_cache(cache)
    started = time.perf_counter()
    run(planned[run_id].spec, out, log=lambda message: None)
    total = time.perf_counter() - started
    result = json.loads((out / "result.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    step = statistics.median(m["step_time"] for m in metrics if "eval_loss" not in m)
    tasks = {task: entry.seconds for task, entry in RunFolder(out).evaluation().tasks.items()}
    return {
        "run": run_id,
        "total": total,
        "steps": result["steps"],
        "step_seconds": result["steps"] * step,
        "tasks": tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=Path("sweeps/labrador-demo.toml"))
    parser.add_argument("--run", default="b1e11-w16-s0")
    parser.add_argument("--_pass", nargs=2, help=argparse.SUPPRESS)  # internal: OUT CACHE, one pass in this process
    args = parser.parse_args()
    if args._pass:
        print(json.dumps(one_pass(args.spec, args.run, Path(args._pass[0]), Path(args._pass[1]))))
        return
    machine()
    from scaling.sweep.plan import make_plan
    from scaling.sweep.spec import load_sweep

    plan = make_plan(load_sweep(args.spec))
    first = next((r for r in plan.runs if r.run_id == args.run), None)
    if first is None:
        raise SystemExit(f"{args.spec} plans no run {args.run}; it plans {', '.join(r.run_id for r in plan.runs)}")
    other = next(
        (r for r in plan.runs if r.candidate.width == first.candidate.width and r.budget != first.budget), first
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as tmp:
        cache = Path(tmp) / "jax_cache"
        for name, run_id in (("cold cache", first.run_id), ("warm cache", other.run_id)):
            out = Path(tmp) / name.replace(" ", "-")
            command = [
                sys.executable,
                __file__,
                "--spec",
                str(args.spec),
                "--run",
                run_id,
                "--_pass",
                str(out),
                str(cache),
            ]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            p = json.loads(done.stdout.strip().splitlines()[-1])
            evaluation = sum(p["tasks"].values())
            training_rest = p["total"] - p["step_seconds"] - evaluation
            print(
                f"{args.spec.name} {p['run']}, {name}: whole run {p['total']:.1f} s = {p['steps']:,} steps "
                f"{p['step_seconds']:.1f} s + the rest of training {training_rest:.1f} s + evaluation "
                f"{evaluation:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in p['tasks'].items())})"
            )


if __name__ == "__main__":
    main()
