"""The machine's measured matmul peak: the denominator of every MFU figure."""

import time
from functools import cache

import jax
import jax.numpy as jnp


@cache
def matmul_peak_flops(n: int = 2048, repeats: int = 5, trials: int = 3, dtype=jnp.float32) -> float:
    """FLOP/s of a large square matmul on the default device, measured once per process.

    The best of a few trials: a busy neighbour can only slow a trial down, never speed it up."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best
