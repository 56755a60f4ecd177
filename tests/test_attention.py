"""Attention within segments: every implementation against the plain softmax, and the choice per platform."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.models import attention
from scaling.models.decoder import Decoder, DecoderConfig
from scaling.models.labrador import Labrador
from scaling.models.shapes import EncoderConfig


def plain(q, k, v, segment_ids, causal):
    """Softmax attention written out here, so a change to any implementation cannot pass unnoticed: q, k, v
    [b, t, h, k]; t attends to s when both are in one segment (and s <= t when causal)."""
    t = q.shape[1]
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]
    if causal:
        allowed = allowed & (jnp.arange(t)[None, :, None] >= jnp.arange(t)[None, None, :])
    scores = jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(q.shape[-1])
    probs = jax.nn.softmax(jnp.where(allowed[:, None], scores, -jnp.inf), axis=-1)
    return jnp.einsum("bhts,bshk->bthk", probs, v)


def packed(b: int, t: int, rng) -> jax.Array:
    """Segment ids of packed rows: documents 1, 2, ... of random lengths, then padding (0)."""
    rows = []
    for _ in range(b):
        lengths = rng.integers(3, t // 3, size=t)
        ids = np.repeat(np.arange(1, t + 1), lengths)[: t - int(rng.integers(1, t // 4))]
        rows.append(np.pad(ids, (0, t - len(ids))))
    return jnp.asarray(np.stack(rows), jnp.int32)


def by(implementation: str):
    """An implementation as the blocks call it; "cudnn-args": jax.nn.dot_product_attention given what cuDNN is given,
    run by XLA (cuDNN itself needs an NVIDIA GPU)."""
    if implementation == "cudnn-args":
        return lambda q, k, v, s, causal, dtype: attention.fused_attention(
            q, k, v, attention.mask_operand(s, causal, "cudnn"), causal, dtype, implementation="xla"
        )
    return lambda q, k, v, s, causal, dtype: attention.attend(q, k, v, s, causal, dtype, implementation)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "implementation", ["xla", "reference", "cudnn-args", pytest.param("splash", marks=pytest.mark.slow)]
)
def test_every_implementation_is_the_softmax_within_segments_with_its_gradient(implementation, causal):
    """Forward and gradient to float rounding, on packed rows with padding; splash runs its TPU kernel in Pallas'
    interpret mode here (rows of 128: its block)."""
    rng = np.random.default_rng(0)
    b, t, h, d = 2, 128, 2, 16
    q, k, v = (jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32) for _ in range(3))
    segments = packed(b, t, rng)
    assert (segments == 0).any() and len(np.unique(segments)) > 4
    ours = lambda q, k, v: by(implementation)(q, k, v, segments, causal, jnp.float32)  # noqa: E731
    theirs = lambda q, k, v: plain(q, k, v, segments, causal)  # noqa: E731
    np.testing.assert_allclose(ours(q, k, v), theirs(q, k, v), atol=2e-5)
    cotangent = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cotangent), argnums=(0, 1, 2))(q, k, v) for f in (ours, theirs)]
    for mine, plain_grad in zip(*grads, strict=True):
        np.testing.assert_allclose(mine, plain_grad, atol=1e-4)
    assert ours(q, k, v).dtype == jnp.float32


def test_a_position_never_reads_another_segment():
    """Changing another document's (or the padding's) keys and values leaves a document's output as it was."""
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 16, 2, 8)), jnp.float32) for _ in range(3))
    segments = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 4], jnp.int32)
    other = segments[0] != 1
    k2, v2 = k.at[:, other].add(3.0), v.at[:, other].add(3.0)
    for implementation in ("xla", "reference"):
        for causal in (True, False):
            a = attention.attend(q, k, v, segments, causal, jnp.float32, implementation)
            b = attention.attend(q, k2, v2, segments, causal, jnp.float32, implementation)
            np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
            assert not np.allclose(a[:, 5:], b[:, 5:])


def test_auto_picks_the_fused_kernel_where_it_applies_and_the_einsums_elsewhere():
    choose = attention.choose
    assert choose("auto", "cpu", jnp.bfloat16, 128, 64) == "xla"
    assert choose("auto", "gpu", jnp.bfloat16, 128, 64) == "cudnn"
    assert choose("auto", "gpu", jnp.float16, 100, 128) == "cudnn"
    assert choose("auto", "gpu", jnp.float32, 128, 64) == "xla"  # cuDNN's flash attention is bf16/fp16 only
    assert choose("auto", "gpu", jnp.bfloat16, 128, 12) == "xla"  # head dims in multiples of 8
    assert choose("auto", "gpu", jnp.bfloat16, 128, 256) == "xla"  # up to 128
    assert choose("auto", "tpu", jnp.float32, 256, 16) == "splash"
    assert choose("auto", "tpu", jnp.bfloat16, 100, 64) == "xla"  # rows of whole 128-blocks only
    assert choose("reference", "gpu", jnp.bfloat16, 128, 64) == "reference"
    with pytest.raises(ValueError, match=r"attention 'cudnn' needs an NVIDIA GPU; JAX runs on cpu here"):
        choose("cudnn", "cpu", jnp.bfloat16, 128, 64)
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attention.attend(*(jnp.zeros((1, 4, 1, 8)),) * 3, jnp.ones((1, 4), jnp.int32), True, jnp.float32, "flash")


@pytest.mark.slow  # 10-13 s: two models compiled twice
@pytest.mark.parametrize("implementation", ["reference", "splash"])
def test_models_compute_the_same_with_every_implementation(implementation):
    """The decoder and Labrador take the implementation from their config: the same outputs as with "xla"."""
    rng = np.random.default_rng(2)
    t = 128
    segments = packed(2, t, rng)
    tokens = jnp.asarray(rng.integers(1, 30, size=(2, t)), jnp.int32)
    positions = jnp.asarray(np.tile(np.arange(t), (2, 1)), jnp.int32)
    values, null = jnp.asarray(rng.random((2, t)), jnp.float32), jnp.zeros((2, t), bool)
    outputs = {}
    for name in ("xla", implementation):
        config = DecoderConfig(vocab_size=30, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=t)
        decoder = Decoder(dataclasses.replace(config, attention=name), nnx.Rngs(0))
        encoder = Labrador(
            EncoderConfig(n_items=29, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=t, attention=name),
            nnx.Rngs(0),
        )
        outputs[name] = (
            decoder(tokens, positions, segments),
            encoder(tokens, values, null, null, segments)[0],
        )
    for ours, theirs in zip(outputs[implementation], outputs["xla"], strict=True):
        np.testing.assert_allclose(ours, theirs, atol=2e-4)
