"""What needs an accelerator, in one prepared run: fused attention against the reference, MFU by width with and
without it, and a demo-sized grid's wall time with one run per GPU against K runs sharing it.

    python3 benchmarks/device_check.py --out DIR                  # on a GPU (or TPU) machine, about 8 minutes
    .venv/bin/python benchmarks/device_check.py --quick --out DIR  # the same steps, small, on this CPU (a dry run)
    .venv/bin/python benchmarks/device_check.py --write-grid sweeps/demo.toml  # benchmarks/demo_grid.json, here

1. Attention: the implementation "auto" picks on this platform (cuDNN on a GPU, splash on a TPU; on a CPU the
   XLA composition of the cuDNN call) against `reference` computed in float32, forward and gradients, on packed
   rows of 512 with padding, causal and not; and a decoder's loss with each.
2. MFU of the timeline decoder (the recipe's shapes) at widths 256-2048, bfloat16 with float32 master weights, with
   attention "xla" (einsums, [b, h, t, s] scores) and the fused one; MFU = exact training FLOPs x tokens/s / an
   8192^2 bfloat16 matmul's rate measured in the same process. Step memory: XLA's accounting of the compiled step.
3. Packing: the units of the demo's timeline grid (benchmarks/demo_grid.json: each WSD trunk with its branches'
   cool-downs, each run alone otherwise; the widths and steps `sweep plan` gives) trained as a sweep trains them,
   one process a unit (start-up, compilation and steps, on random tokens: the loader is not what is measured),
   K at a time with the environment `[resources] gpus = 1/K` gives a worker (scaling.sweep.driver.worker_env).
   The grid's wall time for K = 1 against K = 4 and 8.

Results go to DIR/device_check.json and, as markdown tables, to DIR/device_check.md. Each section is timed and
bounded (--seconds per MFU point, --grid-steps for the grid) so the whole run stays inside a 10-minute lease; it
can run again as it is. On the lent H200 JAX, flax, optax and orbax are installed; polars travels as wheels
(docs/benchmarks.md, "Device check").
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
GRID = Path(__file__).with_name("demo_grid.json")
sys.path.insert(0, str(ROOT))


def packed_segments(rows: int, t: int, seed: int = 0):
    """Segment ids of packed rows: documents of 20 to t/2 positions, the row's tail padding (0)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.zeros((rows, t), np.int32)
    for r in range(rows):
        at, doc = 0, 1
        while at < t - t // 16:
            length = int(rng.integers(20, t // 2))
            out[r, at : min(t - t // 16, at + length)] = doc
            at, doc = at + length, doc + 1
    return out


def check_attention(t: int, quick: bool) -> list[dict]:
    """The fused implementation against the float32 reference, forward and gradient, causal and not."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling.models import attention

    b, h, k = (2, 2, 16) if quick else (4, 8, 64)
    fused = attention.choose("auto", jax.default_backend(), jnp.bfloat16, t, k)
    if fused == "xla":  # no fused kernel here: the XLA composition of the call cuDNN gets
        fused = "cudnn-args"
    rng = np.random.default_rng(0)
    q, kk, v = (jnp.asarray(rng.normal(size=(b, t, h, k)), jnp.float32) for _ in range(3))
    segments = jnp.asarray(packed_segments(b, t))
    rows = []
    for causal in (True, False):

        def run(name, dtype, q, kk, v):
            if name == "cudnn-args":
                operand = attention.mask_operand(segments, causal, "cudnn")
                return attention.fused_attention(q, kk, v, operand, causal, dtype, implementation="xla")
            return attention.attend(q, kk, v, segments, causal, dtype, name)

        def loss(name, dtype):
            return lambda q, kk, v: jnp.sum(run(name, dtype, q.astype(dtype), kk.astype(dtype), v.astype(dtype)) ** 2)

        reference = jax.jit(jax.value_and_grad(loss("reference", jnp.float32), argnums=(0, 1, 2)))(q, kk, v)
        for name, dtype in ((fused, jnp.bfloat16), ("xla", jnp.bfloat16)):
            row = {"implementation": name, "dtype": "bfloat16", "causal": causal}
            try:
                value, grads = jax.jit(jax.value_and_grad(loss(name, dtype), argnums=(0, 1, 2)))(q, kk, v)
                out = run(name, dtype, q.astype(dtype), kk.astype(dtype), v.astype(dtype)).astype(jnp.float32)
                expected = run("reference", jnp.float32, q, kk, v)
                row |= {
                    "max_abs_error": float(jnp.max(jnp.abs(out - expected))),
                    "loss_relative_error": float(abs(value - reference[0]) / abs(reference[0])),
                    "grad_relative_error": max(
                        float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
                        for g, r in zip(grads, reference[1], strict=True)
                    ),
                }
            except Exception as error:  # a kernel that refuses these shapes is a finding, not the end of the check
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def fused_agrees(rows: list[dict]) -> bool:
    """The fused kernel ran and its bfloat16 errors are those of the einsum form in bfloat16 (within 2x, or 1e-2)."""
    by = {(r["implementation"], r["causal"]): r for r in rows}
    fused = [r for r in rows if r["implementation"] != "xla"]
    return all(
        "error" not in r
        and r["grad_relative_error"] <= max(1e-2, 2 * by[("xla", r["causal"])]["grad_relative_error"])
        and r["max_abs_error"] <= max(1e-2, 2 * by[("xla", r["causal"])]["max_abs_error"])
        for r in fused
    )


class DecoderStep(NamedTuple):
    step: Callable  # the jitted step of scaling.training.step.step_functions, in one pass
    params: dict
    opt_state: object
    batch: dict
    constants: object
    flops_per_token: float  # exact training FLOPs
    config: object  # the model's DecoderConfig
    graphdef: object
    recipe: object


def decoder_step(
    width: int, context: int, rows: int, vocab: int, attention: str, dtype_name: str, layers=None
) -> DecoderStep:
    """A timeline decoder's real training step (the recipe's shape for the width) and a random packed batch."""
    import dataclasses

    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from scaling.flops import train_flops_per_token
    from scaling.models.decoder import Decoder, decoder_row_loss
    from scaling.recipe import Recipe
    from scaling.training.step import optimizer_state, schedule_constants, step_functions

    recipe = Recipe(context=context, batch_rows=rows)
    config = dataclasses.replace(recipe.model_config(width, vocab), attention=attention)
    if layers is not None:
        config = dataclasses.replace(config, n_layers=layers)
    graphdef, state = nnx.split(nnx.jit(lambda: Decoder(config, nnx.Rngs(0)))())
    params = nnx.to_pure_dict(state)
    dtype = jnp.dtype(dtype_name)
    step = step_functions(decoder_row_loss, graphdef, recipe, dtype)[1]
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, (rows, context + 1)).astype(np.int32)
    segments = packed_segments(rows, context)
    positions = np.zeros_like(segments)
    for r in range(rows):  # positions restart with each document
        starts = np.r_[0, np.flatnonzero(np.diff(segments[r])) + 1]
        for a, b in zip(starts, [*starts[1:], context], strict=True):
            positions[r, a:b] = np.arange(b - a)
    batch = {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": segments,
        "positions": positions,
        "loss_mask": segments > 0,
    }
    constants = schedule_constants(recipe, recipe.learning_rate(width), 10_000)
    shape = recipe.shape(width, vocab)
    if layers is not None:
        shape = dataclasses.replace(shape, n_layers=layers)
    per_token = train_flops_per_token(shape, "exact")
    return DecoderStep(
        step, params, optimizer_state(recipe, params), batch, constants, per_token, config, graphdef, recipe
    )


def mfu_table(widths, attentions, context: int, rows: int, seconds: float, peak_size: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from scaling.hardware import matmul_peak_flops
    from scaling.training.step import step_bytes

    peak = matmul_peak_flops(n=peak_size, dtype=jnp.bfloat16)
    print(f"bfloat16 matmul peak ({peak_size}^2, this process): {peak / 1e12:.1f} TFLOP/s", flush=True)
    table = []
    for width in widths:
        for name in attentions:
            try:
                step, params, opt, batch, constants, per_token, config, _, _ = decoder_step(
                    width, context, rows, 374, name, "bfloat16"
                )
                compiled = step.lower(params, opt, batch, constants).compile()
                memory = step_bytes(compiled)
                params, opt, loss, _ = compiled(params, opt, batch, constants)
                loss.block_until_ready()
                count, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds or count < 3:
                    params, opt, loss, _ = compiled(params, opt, batch, constants)
                    count += 1
                    if count % 5 == 0:
                        loss.block_until_ready()
                loss.block_until_ready()
                tokens_per_s = count * rows * context / (time.perf_counter() - started)
                row = {
                    "width": width,
                    "layers": config.n_layers,
                    "params": config.params(),
                    "attention": name,
                    "tokens_per_s": tokens_per_s,
                    "tflops": tokens_per_s * per_token / 1e12,
                    "mfu": tokens_per_s * per_token / peak,
                    "step_gib": memory / 2**30,
                    "loss": float(loss),
                }
            except Exception as error:  # an out-of-memory width is a result too
                row = {"width": width, "attention": name, "error": f"{type(error).__name__}: {str(error)[:200]}"}
            jax.clear_caches()
            table.append(row)
            print(json.dumps(row), flush=True)
    return table


def worker(width: int, layers: int, steps: int, context: int, rows: int, vocab: int, dtype: str, attention: str):
    """One grid unit, as a sweep's worker process runs it: JAX start-up, compilation, then `steps` steps."""
    started = time.perf_counter()
    step, params, opt, batch, constants, *_ = decoder_step(width, context, rows, vocab, attention, dtype, layers)
    for _ in range(steps):
        params, opt, loss, _ = step(params, opt, batch, constants)
    loss.block_until_ready()
    print(json.dumps({"width": width, "steps": steps, "seconds": time.perf_counter() - started}))


def run_grid(units: list[dict], grid: dict, k: int, attention: str, dtype: str, python: str) -> dict:
    """Every unit in its own process, k at a time, each with the environment a worker at gpus = 1/k gets."""
    import jax

    from scaling.sweep.driver import worker_env
    from scaling.sweep.spec import Resources

    shared = jax.default_backend() == "gpu" and k > 1
    env = {**os.environ, **(worker_env(Resources(cpus=1, gpus=1 / k)) if shared else {})}

    def one(unit: dict) -> float:
        command = [python, __file__, "--worker", json.dumps({**unit, **grid, "dtype": dtype, "attention": attention})]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"unit {unit['name']} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]

    started = time.perf_counter()
    ordered = sorted(units, key=lambda u: -u["steps"] * u["width"] ** 2)  # longest first, as the driver queues
    with ThreadPoolExecutor(k) as pool:
        seconds = list(pool.map(one, ordered))
    wall = time.perf_counter() - started
    result = {"k": k, "units": len(units), "wall_s": wall, "unit_s_sum": sum(seconds), "env": _shown(env)}
    print(json.dumps(result), flush=True)
    return result


def _shown(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith("XLA_PYTHON_CLIENT")}


def write_grid(spec: Path) -> None:
    """benchmarks/demo_grid.json from a sweep's plan (needs its prepared data): the units a sweep's workers train,
    each with the steps it trains (a trunk's own, then its branches' cool-downs)."""
    from scaling.sweep.plan import make_plan
    from scaling.sweep.spec import load_sweep

    plan = make_plan(load_sweep(spec))
    units = []
    for unit in plan.units():
        own = [r.candidate.steps - (r.spec.branch.step if r.spec.branch else 0) for r in unit.runs]
        first = unit.runs[0].candidate
        units.append(
            {
                "name": unit.name,
                "width": first.width,
                "layers": first.layers,
                "steps": (unit.trunk.steps if unit.trunk else 0) + sum(own),
            }
        )
    grid = {
        "source": f"{spec} ({plan.sweep.name} v{plan.sweep.version})",
        "context": plan.inputs.context,
        "rows": plan.sweep.recipe.batch_rows,
        "vocab": plan.inputs.vocab_size,
        "units": units,
    }
    GRID.write_text(json.dumps(grid, indent=1) + "\n")
    print(f"{GRID}: {len(units)} units, {sum(u['steps'] for u in units):,} steps")


def markdown(result: dict) -> str:
    lines = [f"# Device check\n\n{result['machine']}; JAX {result['jax']} on {result['backend']}\n", "## Attention\n"]
    lines += [
        "| implementation | causal | max abs error | loss rel. error | grad rel. error |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["attention"]:
        if "error" in r:
            lines.append(f"| {r['implementation']} | {r['causal']} | {r['error']} | | |")
            continue
        lines.append(
            f"| {r['implementation']} | {r['causal']} | {r['max_abs_error']:.2e} | {r['loss_relative_error']:.2e} | "
            f"{r['grad_relative_error']:.2e} |"
        )
    lines += ["\n## MFU (bfloat16)\n", "| width | layers | params | attention | tokens/s | TFLOP/s | MFU | step GiB |"]
    lines.append("|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in result["mfu"]:
        if "error" in r:
            lines.append(f"| {r['width']} | | | {r['attention']} | {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['width']} | {r['layers']} | {r['params'] / 1e6:.1f}M | {r['attention']} | "
                f"{r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {r['mfu']:.1%} | {r['step_gib']:.2f} |"
            )
    lines += [
        f"\n## Grid packing (attention {result['grid_attention']}; {result['grid_source']})\n",
        "| runs per GPU | units | wall s | sum of unit s | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    base = result["grid"][0]["wall_s"] if result["grid"] else None
    for r in result["grid"]:
        lines.append(
            f"| {r['k']} | {r['units']} | {r['wall_s']:.1f} | {r['unit_s_sum']:.1f} | {base / r['wall_s']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device-check")))
    parser.add_argument("--quick", action="store_true", help="small shapes, a few units: a dry run on a CPU")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--context", type=int, default=1024, help="tokens a row, for the MFU points")
    parser.add_argument("--rows", type=int, default=32, help="rows a step, for the MFU points")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per MFU point")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 8], help="runs per GPU to compare")
    parser.add_argument("--grid-steps", type=int, default=25_000, help="at most this many steps in the grid")
    parser.add_argument("--write-grid", type=Path, help="write benchmarks/demo_grid.json from this sweep and stop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        unit = json.loads(args.worker)
        worker(**{k: unit[k] for k in ("width", "layers", "steps", "context", "rows", "vocab", "dtype", "attention")})
        return
    if args.write_grid:
        write_grid(args.write_grid)
        return
    import jax
    from common import machine

    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.widths, args.context, args.rows, args.seconds, args.k = [32, 64], 128, 4, 0.5, [1, 2]
        args.grid_steps = 400
    result = {
        "machine": machine(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": str(jax.devices()),
    }
    print(result, flush=True)
    started = time.perf_counter()
    result["attention"] = check_attention(128 if args.quick else 512, args.quick)
    fused = "xla" if jax.default_backend() == "cpu" else ("cudnn" if jax.default_backend() == "gpu" else "splash")
    attentions = ["xla"] if fused == "xla" else ["xla", fused]
    result["mfu"] = mfu_table(
        args.widths, attentions, args.context, args.rows, args.seconds, 512 if args.quick else 8192
    )
    grid = json.loads(GRID.read_text())
    units, total = [], 0
    for unit in sorted(grid["units"], key=lambda u: u["steps"]):  # the grid's shortest units up to --grid-steps
        if args.quick:  # three units of 30 steps: the machinery, not a figure
            unit = {**unit, "steps": min(unit["steps"], 30)}
        if total + unit["steps"] > args.grid_steps or (args.quick and len(units) == 3):
            break
        units.append(unit)
        total += unit["steps"]
    shape = {"context": grid["context"], "rows": grid["rows"], "vocab": grid["vocab"]}
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    result["grid_source"] = grid["source"]
    # the grid's runs take "auto" (the fused kernel) only where it checked out above: packing is what is measured
    result["grid_attention"] = "auto" if fused_agrees(result["attention"]) else "xla"
    result["grid"] = [run_grid(units, shape, k, result["grid_attention"], dtype, sys.executable) for k in args.k]
    result["seconds"] = time.perf_counter() - started
    (args.out / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "device_check.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
