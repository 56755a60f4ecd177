"""Generated tokens per second of the timeline decoder's sampler: the key-value cache against recomputing the prefix.

    .venv/bin/python benchmarks/bench_sampler.py [--context 512] [--width 128] [--rows 64] [--new 128]

Both generate `new` tokens after histories of half the context, for a batch of `rows` futures, with the same static
shapes: the cached sampler (scaling.models.sampler: one prefill, then one step per token that attends through the
cache) and the same loop without a cache (every step runs the full forward pass over the whole context and reads
the logits at each row's last token). Prints tokens per second of each, their ratio and the peak memory; the goal
(issue 36) is 5x or more at a 512-token context on the 2-core CPU.
"""

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from flax import nnx

from scaling.models.decoder import Decoder
from scaling.models.sampler import Sampler, Watch
from scaling.models.shapes import DecoderConfig
from scaling.recipe import Recipe


def recompute_loop(model: Decoder, cache: np.ndarray, lengths: np.ndarray, new: int, seed: int) -> float:
    """Seconds to generate `new` tokens per row by a full forward pass per token (compiled once, not timed)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, tokens, lengths, key):
        model = nnx.merge(graphdef, state)
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        segments = (positions < lengths[:, None]).astype(jnp.int32)
        logits = model(tokens, positions, segments)[jnp.arange(tokens.shape[0]), lengths - 1]
        token = jax.random.categorical(key, logits.at[:, 0].set(-jnp.inf)).astype(jnp.int32)
        return tokens.at[jnp.arange(tokens.shape[0]), lengths].set(token), lengths + 1

    tokens, at = jnp.asarray(cache), jnp.asarray(lengths)
    jax.block_until_ready(step(state, tokens, at, jax.random.key(0)))  # compile
    key = jax.random.key(seed)
    started = time.perf_counter()
    for i in range(new):
        tokens, at = step(state, tokens, at, jax.random.fold_in(key, i))
    jax.block_until_ready(tokens)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--new", type=int, default=128)
    args = parser.parse_args()
    recipe = Recipe(context=args.context)
    config = DecoderConfig(
        vocab_size=args.vocab,
        d_model=args.width,
        n_layers=recipe.layers(args.width),
        n_heads=recipe.heads(args.width),
        d_ff=recipe.d_ff(args.width),
        context=args.context,
    )
    model = Decoder(config, nnx.Rngs(0))
    history = args.context // 2
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, args.vocab, history) for _ in range(args.rows)]
    empty = np.zeros(args.vocab, bool)
    never = Watch(empty, np.zeros(args.vocab, int), empty[None], empty, np.zeros(args.vocab))  # no future ends early
    sampler = Sampler(model, args.rows, args.context)
    sampler.sample(histories, [2] * args.rows, never, args.new, seed=0)  # compile
    started = time.perf_counter()
    futures = sampler.sample(histories, [2] * args.rows, never, args.new, seed=1)
    cached = time.perf_counter() - started
    assert (futures.steps == args.new).all()
    cache = np.zeros((args.rows, args.context), np.int32)
    cache[:, :history] = np.stack(histories)
    recomputed = recompute_loop(model, cache, np.full(args.rows, history, np.int32), args.new, seed=1)
    tokens = args.rows * args.new
    print(machine())
    print(
        f"decoder width {args.width}, {config.n_layers} layers, {config.params_nonembed():,} non-embedding params, "
        f"vocab {args.vocab}, context {args.context}; {args.rows} futures of {args.new} tokens after {history}"
    )
    print(f"cached sampler:     {tokens / cached:10,.0f} tokens/s ({cached:.2f} s, prefill included)")
    print(f"recomputed prefix:  {tokens / recomputed:10,.0f} tokens/s ({recomputed:.2f} s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"speed-up: {recomputed / cached:.1f}x; peak memory {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
