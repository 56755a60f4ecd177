"""Attention over packed rows, with the document mask given as segment ids, in one of several implementations.

A packed row holds several documents (a patient's timeline pieces, or whole lab bags); `segment_ids` [b, t] number
them, and a position attends to the positions of its own segment only (and, `causal`, to none after it). Padding
carries its own id (0 in ehrscale's loaders) and attends among itself, so no row is empty; no real position reads
it. Expressed as segment ids rather than a dense mask, the same rule is what the fused kernels take:

- "xla": einsums with the softmax written out (normalised after the value product), the CPU's choice;
- "reference": the plain form, jax.nn.softmax over the scores, that the tests hold every other one to;
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's flash attention on NVIDIA GPUs (bf16 or
  fp16, head dims up to 128): the segments as a boolean mask, causality as the kernel's own causal mask;
- "splash": the Pallas splash-attention kernel on TPUs, segment ids as the kernel's SegmentIds (on other
  platforms it runs in Pallas' interpret mode: slow, but the same program, which is how the CPU tests check it).

"auto" picks per platform when the step is traced (`choose`). Axis names: b batch, t/s positions, h heads, k head
dim.
"""

import functools

import jax
import jax.numpy as jnp

from scaling.models.shapes import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS

CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128
SPLASH_BLOCK = 128  # the splash kernel's query and key blocks: a row's length must be a multiple


def choose(implementation: str, platform: str, dtype, t: int, head_dim: int) -> str:
    """The implementation "auto" means on `platform` ("cpu", "gpu", "tpu") for these shapes; others as given
    (splash anywhere: off a TPU in Pallas' interpret mode; cuDNN on a GPU only)."""
    if implementation == "cudnn" and platform != "gpu":
        raise ValueError(f"attention 'cudnn' needs an NVIDIA GPU; JAX runs on {platform} here ([train] attention)")
    if implementation != "auto":
        return implementation
    if platform == "gpu" and jnp.dtype(dtype) in CUDNN_DTYPES and head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM:
        return "cudnn"
    if platform == "tpu" and t % SPLASH_BLOCK == 0:
        return "splash"
    return "xla"


def segment_mask(segment_ids: jax.Array, causal: bool) -> jax.Array:
    """[b, t, s]: s is in t's segment (and not after t, when causal)."""
    t = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return same & jnp.tril(jnp.ones((t, t), dtype=bool))[None] if causal else same


def _heads_leading(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """[b, t, h, k] -> [b, h, t, k]: the einsums below with the batch axes leading, as XLA's CPU backend runs
    fastest (measured in the blocks before the implementations were split out)."""
    return tuple(z.transpose(0, 2, 1, 3) for z in arrays)


def mask_operand(segment_ids: jax.Array, causal: bool, implementation: str) -> jax.Array:
    """The mask in the form a (chosen) implementation takes, made once per batch outside the layers' scan: an
    additive bias [b, 1, t, s] for the einsum forms, a boolean mask [b, 1, t, s] of the segments for cuDNN (which
    applies causality itself), the segment ids [b, t] for splash."""
    if implementation in ("xla", "reference"):
        return jnp.where(segment_mask(segment_ids, causal), 0.0, -1e30)[:, None]
    if implementation == "cudnn":
        return segment_mask(segment_ids, causal=False)[:, None]
    return segment_ids.astype(jnp.int32)


def xla_attention(q, k, v, bias, causal: bool, dtype) -> jax.Array:
    """[b, t, h, k] from q, k, v [b, t|s, h, k] and the bias [b, 1, t, s]: the softmax written out and normalised
    after the value product (divide [t, k], not [t, s]), as flash attention does. The same numbers as jax.nn.softmax
    to float rounding, and on XLA's CPU backend its gradient takes half the time (jax.nn.softmax's backward pass was
    half of a small model's step; docs/benchmarks.md). The max is a constant to the gradient: the softmax does not
    depend on it."""
    q, k, v = _heads_leading(q, k, v)
    scores = jnp.einsum("bhtk,bhsk->bhts", q * q.shape[-1] ** -0.5, k).astype(jnp.float32) + bias
    weights = jnp.exp(scores - jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True)))
    attended = jnp.einsum("bhts,bhsk->bhtk", weights.astype(dtype), v).astype(jnp.float32)
    return (attended / jnp.sum(weights, axis=-1)[..., None]).astype(dtype).transpose(0, 2, 1, 3)


def reference_attention(q, k, v, bias, causal: bool, dtype) -> jax.Array:
    """The plain form: jax.nn.softmax over the scaled scores plus the bias [b, 1, t, s], then the value product."""
    q, k, v = _heads_leading(q, k, v)
    scores = jnp.einsum("bhtk,bhsk->bhts", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(scores + bias, axis=-1).astype(dtype)
    return jnp.einsum("bhts,bhsk->bhtk", weights, v).astype(dtype).transpose(0, 2, 1, 3)


def fused_attention(q, k, v, mask, causal: bool, dtype, implementation: str = "cudnn") -> jax.Array:
    """`jax.nn.dot_product_attention` on the BTNH layout the blocks make, with the segments' boolean mask
    [b, 1, t, s] and causality as `is_causal` (cuDNN then skips the blocks above the diagonal). implementation="xla"
    is XLA's composition of the same call: the CPU tests check what cuDNN is given."""
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=implementation)
    return out.astype(dtype)


@functools.cache
def _splash_kernel(heads: int, t: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    blocks = {
        name: SPLASH_BLOCK
        for name in (
            "block_q",
            "block_kv",
            "block_kv_compute",
            "block_q_dkv",
            "block_kv_dkv",
            "block_kv_dkv_compute",
            "block_q_dq",
            "block_kv_dq",
        )
    }
    one = splash.CausalMask((t, t)) if causal else splash.FullMask((t, t))
    return splash.make_splash_mha(
        splash.MultiHeadMask([one] * heads),
        head_shards=1,
        q_seq_shards=1,
        block_sizes=splash.BlockSizes(**blocks),
        interpret=interpret,
    )


def splash_attention(q, k, v, segment_ids, causal: bool, dtype) -> jax.Array:
    """The splash kernel per row (it takes [h, t, k] and the row's SegmentIds), the queries scaled before it."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    b, t, h, d = q.shape
    if t % SPLASH_BLOCK:
        raise ValueError(f"splash attention needs rows of a multiple of {SPLASH_BLOCK} positions, got {t}")
    kernel = _splash_kernel(h, t, causal, interpret=jax.default_backend() != "tpu")
    q, k, v = _heads_leading(q * d**-0.5, k, v)
    rows = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=SegmentIds(s, s)))
    return rows(q.astype(dtype), k.astype(dtype), v.astype(dtype), segment_ids).transpose(0, 2, 1, 3).astype(dtype)


def apply(implementation: str, q, k, v, operand, causal: bool, dtype) -> jax.Array:
    """Attention [b, t, h, k] of q, k, v [b, t|s, h, k] by a chosen implementation, given its mask_operand."""
    if implementation == "xla":
        return xla_attention(q, k, v, operand, causal, dtype)
    if implementation == "reference":
        return reference_attention(q, k, v, operand, causal, dtype)
    if implementation == "cudnn":
        return fused_attention(q, k, v, operand, causal, dtype, "cudnn")
    if implementation == "splash":
        return splash_attention(q, k, v, operand, causal, dtype)
    raise ValueError(f"unknown attention implementation {implementation!r}; one of {', '.join(IMPLEMENTATIONS)}")


def attend(q, k, v, segment_ids, causal: bool, dtype, implementation: str = "auto") -> jax.Array:
    """Attention [b, t, h, k] of q, k, v [b, t|s, h, k] within the segments [b, t], by `implementation`."""
    chosen = choose(implementation, jax.default_backend(), dtype, q.shape[1], q.shape[-1])
    return apply(chosen, q, k, v, mask_operand(segment_ids, causal, chosen), causal, dtype)
