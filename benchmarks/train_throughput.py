"""Training throughput and MFU of the timeline decoder for widths 64 to 512.

    .venv/bin/python benchmarks/train_throughput.py [--widths 64 128 256 512] [--context 128] [--batch-rows 16]

MFU = (exact training FLOPs per token x tokens/s) / the f32 matmul peak measured in this same
process. The step is the real one of `scaling.train` (AdamW, clipping, the packed-row model), fed a
fixed random batch so the data loader is not what is measured (its own figures: bench_tokenize.py).
Peak memory is the process's max RSS at the end.
"""

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import machine
from flax import nnx

from scaling.flops import train_flops_per_token
from scaling.hardware import matmul_peak_flops
from scaling.models.decoder import Decoder, next_token_loss
from scaling.recipe import Recipe
from scaling.train import optimizer, schedule


def measure(recipe: Recipe, width: int, vocab: int, steps: int) -> tuple[float, float, dict]:
    config = recipe.model_config(width, vocab)
    graphdef, state = nnx.split(Decoder(config, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    tx = optimizer(recipe, schedule(recipe, recipe.learning_rate(width), 1000))
    opt_state = tx.init(params)

    @jax.jit
    def step(p, o, tokens, segments):
        def loss(p):
            logits = nnx.merge(graphdef, nnx.State(p))(tokens, jnp.cumsum(segments, axis=1) - 1, segments)
            return next_token_loss(logits, tokens, segments > 0)
        value, grads = jax.value_and_grad(loss)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, vocab, (recipe.batch_rows, recipe.context)), jnp.int32)
    segments = jnp.ones_like(tokens)
    params, opt_state, loss = step(params, opt_state, tokens, segments)  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, tokens, segments)
    loss.block_until_ready()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * recipe.tokens_per_step / seconds
    return tokens_per_s, train_flops_per_token(recipe.shape(width, vocab), "exact"), {"layers": config.n_layers, "heads": config.n_heads, "params": config.params()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-rows", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=374)
    parser.add_argument("--seconds", type=float, default=10.0, help="rough time per width")
    args = parser.parse_args()
    recipe = Recipe(context=args.context, batch_rows=args.batch_rows)
    peak = matmul_peak_flops()
    print(f"machine: {machine()}; devices: {jax.devices()}")
    print(f"f32 matmul peak (2048^2, this process): {peak / 1e9:.0f} GFLOP/s; context {args.context}, {args.batch_rows} rows per step")
    print("| width | layers | heads | params | tokens/s | GFLOP/s (exact) | MFU |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for width in args.widths:
        probe, per_token, _ = measure(recipe, width, args.vocab, steps=3)
        steps = max(5, int(args.seconds * probe / recipe.tokens_per_step))
        tokens_per_s, per_token, info = measure(recipe, width, args.vocab, steps)
        achieved = tokens_per_s * per_token
        print(f"| {width} | {info['layers']} | {info['heads']} | {info['params']:,} | {tokens_per_s:,.0f} | "
              f"{achieved / 1e9:.1f} | {achieved / peak:.1%} |", flush=True)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
