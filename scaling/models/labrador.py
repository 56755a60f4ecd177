"""Labrador and the BERT baseline: bidirectional encoders over lab bags (no positions: a bag is a set).

Labrador (Bellamy et al. 2024) embeds each lab as code embedding + Dense(1 -> d)(eCDF value), then
Dense(d) + ReLU and LayerNorm; a masked or null lab's value part is a learned vector instead. Two
heads read the masked slot: a categorical head over lab items and a continuous head (sigmoid) that
also sees the categorical probabilities. Loss = CE(code) + VALUE_WEIGHT x MSE(value).

Where we depart from the paper, on purpose (docs/models.md, "Labrador's value"):
- pre-norm RMSNorm blocks with SwiGLU (the same block stack as the decoder, so the families scale alike)
  instead of post-LN with a ReLU MLP; no dropout (the scaling runs see each bag about once);
- each item's value also enters along a direction of its own (v x u[item]): through the shared
  Dense(1 -> d) a value is told from another item's only by the ReLU's gating, and once attention averages
  the bag, too little is left of which lab said what for the masked value to be read;
- the continuous head's output is one unit per item, mixed by the item it is asked for (one-hot) or the
  categorical head's probabilities; in training it is asked for the true item (teacher forcing), so the
  value is learnt while the item is still being learnt; evaluation reads it with the predicted probabilities;
- the value's squared error weighs VALUE_WEIGHT: at 1 (the paper's) its gradient is about 30x smaller than the
  item's cross-entropy and no run on the built-in data learnt the value at all.

BERT embeds (code, decile) tokens and predicts the masked token with one cross-entropy head.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.data.labbags import BERT_SLOTS
from scaling.models.shapes import VALUE_WEIGHT, EncoderConfig
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
        self.value_directions = nnx.Param(jax.random.normal(rngs.params(), (config.n_items + 3, d)))
        self.mask_vector = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.null_vector = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.project = nnx.Linear(d, d, rngs=rngs)
        self.project_norm = nnx.LayerNorm(d, rngs=rngs)
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((d,)))
        # The paper's heads, each with a hidden ReLU layer; the continuous head's output is one unit per item, mixed
        # by the item read (the value must depend on which item it is the value of: a product of the item and h).
        self.categorical_hidden = nnx.Linear(d, d, rngs=rngs)
        self.categorical = nnx.Linear(d, config.n_items, rngs=rngs)
        self.continuous_hidden = nnx.Linear(d + config.n_items, d, rngs=rngs)
        self.continuous = nnx.Linear(d, config.n_items, rngs=rngs)

    def hidden(self, codes, values, is_null, is_masked, segment_ids, dtype=jnp.float32, unroll: bool = False):
        """[b, t, d] for codes [b, t] (0 padding), eCDF values [b, t], null and mask flags [b, t], and the bag of
        each slot [b, t]."""
        v = values[..., None].astype(jnp.float32)
        value_part = self.value_in(v) + v * self.value_directions[...][codes]
        value_part = jnp.where(is_null[..., None], self.null_vector[...], value_part)
        value_part = jnp.where(is_masked[..., None], self.mask_vector[...], value_part)
        x = self.code_embedding[...][codes] + value_part
        x = self.project_norm(jax.nn.relu(self.project(x)))
        x = self.blocks(x, segment_ids, False, None, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def value(self, h: jax.Array, item_weights: jax.Array) -> jax.Array:
        """The continuous head: the eCDF value [...] of the item given by `item_weights` [..., items] (a one-hot, or
        the categorical head's probabilities), read from the hidden state h [..., d]."""
        read = jax.nn.relu(self.continuous_hidden(jnp.concatenate([h, item_weights], axis=-1)))
        return jax.nn.sigmoid(jnp.einsum("...i,...i->...", item_weights, self.continuous(read)))

    def __call__(
        self,
        codes,
        values,
        is_null,
        is_masked,
        segment_ids,
        dtype=jnp.float32,
        unroll: bool = False,
        read_slots=None,
        told_items=None,
    ):
        """Per slot: item logits [b, t, items] (item k is code k + 1) and the predicted eCDF value [b, t]; with
        `read_slots` [b, r], at those slots only ([b, r, items], [b, r]). The value is that of the most probable
        items (the head mixes its items by the predicted probabilities), or, with `told_items` (1-based codes, the
        shape of the values), of the item told."""
        h = self.hidden(codes, values, is_null, is_masked, segment_ids, dtype, unroll).astype(jnp.float32)
        h = h if read_slots is None else read_at(h, read_slots)
        logits = self.categorical(jax.nn.relu(self.categorical_hidden(h)))
        if told_items is None:
            weights = jax.nn.softmax(logits, axis=-1)
        else:
            weights = jax.nn.one_hot(jnp.maximum(told_items - 1, 0), self.config.n_items, dtype=h.dtype)
        return logits, self.value(h, weights)

    def embed(self, codes, values, is_null) -> jax.Array:
        """One vector per bag (one bag per row): the mean over its labs."""
        h = self.hidden(codes, values, is_null, jnp.zeros_like(is_null), one_bag_per_row(codes))
        valid = (codes > 0)[..., None].astype(h.dtype)
        return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def labrador_loss_rows(logits, value, is_masked, target_code, target_value, mse_weight: float = VALUE_WEIGHT):
    """Per row: the sums over its masked labs of (CE on the item, mse_weight x squared error of the eCDF value),
    and the number of masked labs (one per bag)."""
    logp = jax.nn.log_softmax(logits, axis=-1)  # [b, t, items]; item k is code k + 1
    ce = -jnp.take_along_axis(logp, jnp.maximum(target_code - 1, 0)[..., None], axis=-1)[..., 0]
    terms = ce + mse_weight * (value - target_value) ** 2
    return jnp.sum(jnp.where(is_masked, terms, 0.0), axis=1), jnp.sum(is_masked, axis=1).astype(jnp.float32)


def labrador_row_loss(model: Labrador, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """Labrador's loss on packed rows of masked bags: per bag, the masked item's cross-entropy plus the weighted
    squared error of its value, the value head told the true item (teacher forcing); per row, the sum over its
    bags and their count. The heads run at the masked slots only (`read_slots`)."""
    b, slots = batch, batch["read_slots"]
    target_code = read_at(b["target_code"], slots)
    logits, value = model(
        b["codes"],
        b["values"],
        b["is_null"],
        b["is_masked"],
        b["segment_ids"],
        dtype,
        read_slots=slots,
        told_items=target_code,
    )
    return labrador_loss_rows(
        logits, value, b["read_valid"], target_code, read_at(b["target_value"], slots), model.config.mse_weight
    )


def labrador_masked_predictions(model: Labrador, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per slot [b, t]: the most likely item (1-based code) and the predicted eCDF value, not told the item; read
    at the masked slots."""
    logits, value = model(batch["codes"], batch["values"], batch["is_null"], batch["is_masked"], batch["segment_ids"])
    return jnp.argmax(logits, axis=-1) + 1, value


def labrador_imputed_values(model: Labrador, batch: dict) -> jax.Array:
    """Per slot [b, t]: the eCDF value of the masked lab told its item (imputation: which lab is asked for is
    known); read at the masked slots."""
    b = batch
    _, value = model(
        b["codes"], b["values"], b["is_null"], b["is_masked"], b["segment_ids"], told_items=b["target_code"]
    )
    return value


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


def bert_imputed_values(model: Bert, batch: dict) -> jax.Array:
    """Per slot [b, t]: the masked lab's value told its item, read off the item's decile tokens (as
    `bert_masked_predictions`)."""
    return bert_masked_predictions(model, batch)[1]
