"""Training throughput and MFU of the timeline decoder for widths 64 to 512.

    .venv/bin/python benchmarks/train_throughput.py [--widths 64 128 256 512] [--context 128] [--batch-rows 16]
        [--dtype float32]

MFU = (exact training FLOPs per token x tokens/s) / the matmul peak (of --dtype) measured in this
same process. The step is the real one of `scaling.training.step.step_functions` (the decoder's loss,
AdamW, clipping), fed a fixed random packed batch so the data loader is not what is measured (its
own figures: bench_tokenize.py). Peak memory is the process's max RSS at the end (host memory).
"""

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from flax import nnx

from scaling.flops import train_flops_per_token
from scaling.hardware import matmul_peak_flops
from scaling.models.decoder import Decoder, decoder_row_loss
from scaling.recipe import Recipe
from scaling.training.step import optimizer_state, schedule_constants, step_functions


def measure(recipe: Recipe, width: int, vocab: int, steps: int, dtype=jnp.float32) -> tuple[float, float, dict]:
    config = recipe.model_config(width, vocab)
    graphdef, state = nnx.split(Decoder(config, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    constants = schedule_constants(recipe, recipe.learning_rate(width), 1000)
    opt_state = optimizer_state(recipe, params)
    _, step = step_functions(decoder_row_loss, graphdef, recipe, dtype)

    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, vocab, (recipe.batch_rows, recipe.context + 1)), jnp.int32)
    ones = jnp.ones((recipe.batch_rows, recipe.context), jnp.int32)
    batch = {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": ones,
        "positions": jnp.cumsum(ones, axis=1) - 1,
        "loss_mask": ones > 0,
    }
    params, opt_state, loss, _ = step(params, opt_state, batch, constants)  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss, _ = step(params, opt_state, batch, constants)
    loss.block_until_ready()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * recipe.tokens_per_step / seconds
    return (
        tokens_per_s,
        train_flops_per_token(recipe.shape(width, vocab), "exact"),
        {"layers": config.n_layers, "heads": config.n_heads, "params": config.params()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-rows", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=374)
    parser.add_argument("--seconds", type=float, default=10.0, help="rough time per width")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype (bf16: f32 master weights)"
    )
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmul that measures the peak")
    args = parser.parse_args()
    recipe = Recipe(context=args.context, batch_rows=args.batch_rows)
    dtype = jnp.dtype(args.dtype)
    peak = matmul_peak_flops(n=args.peak_size, dtype=dtype)
    print(f"machine: {machine()}; devices: {jax.devices()}")
    print(
        f"{args.dtype} matmul peak ({args.peak_size}^2, this process): {peak / 1e9:,.0f} GFLOP/s; "
        f"context {args.context}, {args.batch_rows} rows per step"
    )
    print("| width | layers | heads | params | tokens/s | GFLOP/s (exact) | MFU |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for width in args.widths:
        probe, per_token, _ = measure(recipe, width, args.vocab, 3, dtype)
        steps = max(5, int(args.seconds * probe / recipe.tokens_per_step))
        tokens_per_s, per_token, info = measure(recipe, width, args.vocab, steps, dtype)
        achieved = tokens_per_s * per_token
        print(
            f"| {width} | {info['layers']} | {info['heads']} | {info['params']:,} | {tokens_per_s:,.0f} | "
            f"{achieved / 1e9:.1f} | {achieved / peak:.1%} |",
            flush=True,
        )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
