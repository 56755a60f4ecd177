"""Labrador and the BERT baseline: bidirectional encoders over lab bags (no positions: a bag is a set).

Labrador (Bellamy et al. 2024) embeds each lab as code embedding + Dense(1 -> d)(eCDF value), then
Dense(d) + ReLU and LayerNorm; a masked or null lab's value part is a learned vector instead. Two
heads read the masked slot: a categorical head over lab items and a continuous head (sigmoid) that
also sees the categorical probabilities. Loss = CE(code) + mse_weight x MSE(value).

Where we depart from the paper, on purpose: pre-norm RMSNorm blocks with SwiGLU (the same block
stack as the decoder, so the two families scale alike) instead of post-LN with a ReLU MLP; no
dropout (the scaling runs see each bag about once). Everything else follows the paper.

BERT embeds (code, decile) tokens and predicts the masked token with one cross-entropy head.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.data.labbags import BERT_SLOTS
from scaling.models.shapes import EncoderConfig
from scaling.models.transformer import INIT_STD, BlockStack, rms_norm


def read_at(x: jax.Array, slots: jax.Array) -> jax.Array:
    """x [b, t, ...] at the slots [b, r] of each row: [b, r, ...]."""
    return jnp.take_along_axis(x, slots.reshape(slots.shape + (1,) * (x.ndim - 2)), axis=1)


def one_bag_per_row(codes: jax.Array) -> jax.Array:
    """Segment ids of rows that hold one bag each (the probe's input): 1 on labs, 0 on padding."""
    return (codes > 0).astype(jnp.int32)


class Labrador(nnx.Module):
    """Masked-lab model with a categorical and a continuous head."""

    def __init__(self, config: EncoderConfig, rngs: nnx.Rngs):
        d = config.d_model
        self.config = config
        # The item and the value enter on one scale: Dense(1 -> d) makes a value part of unit scale, and with the
        # transformer's 0.02 the code embedding was drowned by it (width 64, 2.6M tokens: loss 3.18 -> 1.81, masked
        # item accuracy 0.14 -> 0.56 once the code, mask and null vectors start at unit scale too).
        self.code_embedding = nnx.Param(jax.random.normal(rngs.params(), (config.n_items + 3, d)))
        self.value_in = nnx.Linear(1, d, rngs=rngs)
        self.mask_vector = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.null_vector = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.project = nnx.Linear(d, d, rngs=rngs)
        self.project_norm = nnx.LayerNorm(d, rngs=rngs)
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((d,)))
        # The paper's heads, each with a hidden ReLU layer: a linear continuous head cannot make the value depend on
        # which item it reads the value of (a product of the item probabilities and the hidden state).
        self.categorical_hidden = nnx.Linear(d, d, rngs=rngs)
        self.categorical = nnx.Linear(d, config.n_items, rngs=rngs)
        self.continuous_hidden = nnx.Linear(d + config.n_items, d + config.n_items, rngs=rngs)
        self.continuous = nnx.Linear(d + config.n_items, 1, rngs=rngs)

    def hidden(self, codes, values, is_null, is_masked, segment_ids, dtype=jnp.float32, unroll: bool = False):
        """[b, t, d] for codes [b, t] (0 padding), eCDF values [b, t], null and mask flags [b, t], and the bag of
        each slot [b, t]."""
        value_part = self.value_in(values[..., None].astype(jnp.float32))
        value_part = jnp.where(is_null[..., None], self.null_vector[...], value_part)
        value_part = jnp.where(is_masked[..., None], self.mask_vector[...], value_part)
        x = self.code_embedding[...][codes] + value_part
        x = self.project_norm(jax.nn.relu(self.project(x)))
        x = self.blocks(x, segment_ids, False, None, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def __call__(
        self, codes, values, is_null, is_masked, segment_ids, dtype=jnp.float32, unroll: bool = False, read_slots=None
    ):
        """Per slot: item logits [b, t, items] (item k is code k + 1) and the predicted eCDF value [b, t]; with
        `read_slots` [b, r], at those slots only ([b, r, items], [b, r])."""
        h = self.hidden(codes, values, is_null, is_masked, segment_ids, dtype, unroll).astype(jnp.float32)
        h = h if read_slots is None else read_at(h, read_slots)
        logits = self.categorical(jax.nn.relu(self.categorical_hidden(h)))
        read = jax.nn.relu(self.continuous_hidden(jnp.concatenate([h, jax.nn.softmax(logits, axis=-1)], axis=-1)))
        return logits, jax.nn.sigmoid(self.continuous(read))[..., 0]

    def embed(self, codes, values, is_null) -> jax.Array:
        """One vector per bag (one bag per row): the mean over its labs."""
        h = self.hidden(codes, values, is_null, jnp.zeros_like(is_null), one_bag_per_row(codes))
        valid = (codes > 0)[..., None].astype(h.dtype)
        return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def labrador_loss_rows(logits, value, is_masked, target_code, target_value, mse_weight: float = 1.0):
    """Per row: the sums over its masked labs of (CE on the item, mse_weight x squared error of the eCDF value),
    and the number of masked labs (one per bag)."""
    logp = jax.nn.log_softmax(logits, axis=-1)  # [b, t, items]; item k is code k + 1
    ce = -jnp.take_along_axis(logp, jnp.maximum(target_code - 1, 0)[..., None], axis=-1)[..., 0]
    terms = ce + mse_weight * (value - target_value) ** 2
    return jnp.sum(jnp.where(is_masked, terms, 0.0), axis=1), jnp.sum(is_masked, axis=1).astype(jnp.float32)


def labrador_row_loss(model: Labrador, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """Labrador's loss on packed rows of masked bags: per bag, the masked item's cross-entropy plus the weighted
    squared error of its value; per row, the sum over its bags and their count. The heads run at the masked
    slots only (`read_slots`)."""
    b, slots = batch, batch["read_slots"]
    logits, value = model(
        b["codes"], b["values"], b["is_null"], b["is_masked"], b["segment_ids"], dtype, read_slots=slots
    )
    return labrador_loss_rows(
        logits,
        value,
        b["read_valid"],
        read_at(b["target_code"], slots),
        read_at(b["target_value"], slots),
        model.config.mse_weight,
    )


def labrador_masked_predictions(model: Labrador, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per slot [b, t]: the most likely item (1-based code) and the predicted eCDF value; read at the masked slots."""
    logits, value = model(batch["codes"], batch["values"], batch["is_null"], batch["is_masked"], batch["segment_ids"])
    return jnp.argmax(logits, axis=-1) + 1, value


class Bert(nnx.Module):
    """BERT baseline on (code, decile) tokens; `n_items` is the token vocabulary (mask token included)."""

    def __init__(self, config: EncoderConfig, rngs: nnx.Rngs):
        self.config = config
        self.embedding = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.n_items, config.d_model)))
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((config.d_model,)))
        self.head = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.d_model, config.n_items)))

    def hidden(self, tokens, segment_ids, dtype=jnp.float32, unroll: bool = False) -> jax.Array:
        x = self.embedding[...][tokens]
        x = self.blocks(x, segment_ids, False, None, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def __call__(self, tokens, segment_ids, dtype=jnp.float32, unroll: bool = False, read_slots=None) -> jax.Array:
        """Token logits per slot [b, t, vocab]; with `read_slots` [b, r], at those slots only [b, r, vocab]."""
        h = self.hidden(tokens, segment_ids, dtype, unroll)
        h = h if read_slots is None else read_at(h, read_slots)
        b, t, d = h.shape
        logits = jnp.einsum("nd,dv->nv", h.reshape(b * t, d), self.head[...].astype(h.dtype))  # 2-D: see BlockStack
        return logits.reshape(b, t, -1).astype(jnp.float32)

    def embed(self, tokens) -> jax.Array:
        """One vector per bag (one bag per row): the mean over its labs."""
        h = self.hidden(tokens, one_bag_per_row(tokens))
        valid = (tokens > 0)[..., None].astype(h.dtype)
        return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def bert_loss_rows(logits, is_masked, target_token):
    """Per row: the sum over its masked labs of the masked token's cross-entropy, and their number."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, target_token[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(is_masked, ce, 0.0), axis=1), jnp.sum(is_masked, axis=1).astype(jnp.float32)


def bert_row_loss(model: Bert, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """BERT's masked-token cross-entropy on packed rows: per row, the sum over its bags and their count. The logits
    are computed at the masked slots only (`read_slots`)."""
    slots = batch["read_slots"]
    logits = model(batch["tokens"], batch["segment_ids"], dtype, read_slots=slots)
    return bert_loss_rows(logits, batch["read_valid"], read_at(batch["target_token"], slots))


def bert_masked_predictions(model: Bert, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per slot [b, t], read at the masked slots: the item of the most likely token (1-based code; 0 for a non-item
    token), and the value read off the true item's ten decile tokens: the expected decile midpoint under their
    renormalised probabilities."""
    logits = model(batch["tokens"], batch["segment_ids"])
    top = jnp.argmax(logits, axis=-1)
    n_items = (logits.shape[-1] - 2) // BERT_SLOTS
    item = jnp.where((top >= 1) & (top <= n_items * BERT_SLOTS), (top - 1) // BERT_SLOTS + 1, 0)
    first = 1 + (jnp.maximum(batch["target_code"], 1) - 1) * BERT_SLOTS  # the true item's decile-0 token
    deciles = jnp.take_along_axis(logits, first[..., None] + jnp.arange(10), axis=-1)
    midpoints = (jnp.arange(10) + 0.5) / 10
    return item, jnp.sum(jax.nn.softmax(deciles, axis=-1) * midpoints, axis=-1)
