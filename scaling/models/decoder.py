"""The timeline decoder: a Llama-style causal transformer over patient timelines.

Embedding -> BlockStack (causal, rotary, within-segment attention) -> RMSNorm -> logits through
an unembedding matrix (or the embedding, tied). Packed rows carry `segment_ids`: a token attends
only to earlier tokens of its own segment, so no patient sees another.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.models.shapes import DecoderConfig
from scaling.models.transformer import INIT_STD, BlockStack, rms_norm


class Decoder(nnx.Module):
    """Next-token model over timelines."""

    def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
        self.config = config
        self.embedding = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.vocab_size, config.d_model)))
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((config.d_model,)))
        if not config.tie_embeddings:
            self.unembedding = nnx.Param(
                INIT_STD * jax.random.normal(rngs.params(), (config.d_model, config.vocab_size))
            )

    def hidden(
        self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, dtype=jnp.float32, unroll: bool = False
    ) -> jax.Array:
        """Final-norm hidden states [b, t, d]."""
        x = self.embedding[...][tokens]
        x = self.blocks(x, segment_ids, True, positions, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def __call__(
        self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, dtype=jnp.float32, unroll: bool = False
    ) -> jax.Array:
        """Logits [b, t, vocab] in float32."""
        return self.logits(self.hidden(tokens, positions, segment_ids, dtype, unroll))

    def prefill(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, dtype=jnp.float32):
        """Final-norm hidden states [b, t, d] and every layer's keys and values [l, b, t, h, k]: a sampler's cache."""
        x, keys_values = self.blocks(self.embedding[...][tokens], segment_ids, True, positions, dtype, keys_values=True)
        return rms_norm(x, self.final_norm[...]), keys_values

    def step(self, tokens: jax.Array, at: jax.Array, keys: jax.Array, values: jax.Array, dtype=jnp.float32):
        """Logits [b, vocab] after one new token per row at cache index `at` [b], and the updated caches
        (BlockStack.step)."""
        x, keys, values = self.blocks.step(self.embedding[...][tokens], at, keys, values, dtype)
        return self.logits(rms_norm(x, self.final_norm[...])), keys, values

    def logits(self, h: jax.Array) -> jax.Array:
        """Logits [..., vocab] in float32 of final-norm hidden states [..., d]."""
        out = self.embedding[...].T if self.config.tie_embeddings else self.unembedding[...]
        rows = h.reshape(-1, h.shape[-1])
        logits = jnp.einsum("nd,dv->nv", rows, out.astype(h.dtype))  # 2-D: see BlockStack
        return logits.reshape(*h.shape[:-1], -1).astype(jnp.float32)

    def embed(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array, last: jax.Array) -> jax.Array:
        """One vector per sequence: the hidden state at index `last` [b] (the end of the history)."""
        h = self.hidden(tokens, positions, segment_ids)
        return h[jnp.arange(h.shape[0]), last]


def next_token_loss_rows(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row: summed cross-entropy (nats) over positions where mask is True, and how many there are."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    # The target's log-probability picked by a one-hot product, not a gather: the gather's gradient is a scatter
    # into a zeroed [b, t, vocab] buffer, which made a width-64 step 1.6x slower on XLA's CPU backend (measured;
    # neutral at other widths).
    nll = -jnp.sum(logp * jax.nn.one_hot(targets, logits.shape[-1], dtype=logp.dtype), axis=-1)
    mask = mask.astype(jnp.float32)
    return jnp.sum(nll * mask, axis=1), jnp.sum(mask, axis=1)


def decoder_row_loss(model: Decoder, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """Next-token cross-entropy of the decoder on a packed batch: summed per row, and the row's token count."""
    logits = model(batch["inputs"], batch["positions"], batch["segment_ids"], dtype)
    return next_token_loss_rows(logits, batch["targets"], batch["loss_mask"])


def next_token_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy (nats per token) over positions where mask is True."""
    sums, counts = next_token_loss_rows(logits, targets, mask)
    return jnp.sum(sums) / jnp.maximum(jnp.sum(counts), 1.0)
