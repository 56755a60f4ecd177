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


def padding_mask(valid: jax.Array) -> jax.Array:
    """[b, t, s]: attend to real labs only; a padding slot attends to itself so its row stays finite."""
    t = valid.shape[1]
    return (valid[:, None, :] & valid[:, :, None]) | jnp.eye(t, dtype=bool)[None]


class Labrador(nnx.Module):
    """Masked-lab model with a categorical and a continuous head."""

    def __init__(self, config: EncoderConfig, rngs: nnx.Rngs):
        d = config.d_model
        self.config = config
        self.code_embedding = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.n_items + 3, d)))
        self.value_in = nnx.Linear(1, d, rngs=rngs)
        self.mask_vector = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (d,)))
        self.null_vector = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (d,)))
        self.project = nnx.Linear(d, d, rngs=rngs)
        self.project_norm = nnx.LayerNorm(d, rngs=rngs)
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((d,)))
        self.categorical = nnx.Linear(d, config.n_items, rngs=rngs)
        self.continuous = nnx.Linear(d + config.n_items, 1, rngs=rngs)

    def hidden(self, codes, values, is_null, is_masked, dtype=jnp.float32, unroll: bool = False) -> jax.Array:
        """[b, t, d] for codes [b, t] (0 padding), eCDF values [b, t], null and mask flags [b, t]."""
        value_part = self.value_in(values[..., None].astype(jnp.float32))
        value_part = jnp.where(is_null[..., None], self.null_vector[...], value_part)
        value_part = jnp.where(is_masked[..., None], self.mask_vector[...], value_part)
        x = self.code_embedding[...][codes] + value_part
        x = self.project_norm(jax.nn.relu(self.project(x)))
        x = self.blocks(x, padding_mask(codes > 0), None, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def __call__(self, codes, values, is_null, is_masked, dtype=jnp.float32, unroll: bool = False):
        """Per slot: item logits [b, t, items] (item k is code k + 1) and the predicted eCDF value [b, t]."""
        h = self.hidden(codes, values, is_null, is_masked, dtype, unroll).astype(jnp.float32)
        logits = self.categorical(h)
        value = jax.nn.sigmoid(self.continuous(jnp.concatenate([h, jax.nn.softmax(logits, axis=-1)], axis=-1)))[..., 0]
        return logits, value

    def embed(self, codes, values, is_null) -> jax.Array:
        """One vector per bag: the mean over its labs."""
        h = self.hidden(codes, values, is_null, jnp.zeros_like(is_null))
        valid = (codes > 0)[..., None].astype(h.dtype)
        return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def labrador_loss_rows(logits, value, is_masked, target_code, target_value, mse_weight: float = 1.0):
    """Per bag: (CE on the masked lab's item, squared error of its eCDF value)."""
    slot = jnp.argmax(is_masked, axis=1)
    rows = jnp.arange(logits.shape[0])
    logp = jax.nn.log_softmax(logits[rows, slot], axis=-1)
    return -logp[rows, target_code - 1], (value[rows, slot] - target_value) ** 2


def labrador_row_loss(model: Labrador, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """Labrador's loss on a batch of masked bags: per bag, the masked item's cross-entropy plus the weighted
    squared error of its value; one term per bag."""
    logits, value = model(batch["codes"], batch["values"], batch["is_null"], batch["is_masked"], dtype)
    ce, se = labrador_loss_rows(logits, value, batch["is_masked"], batch["target_code"], batch["target_value"])
    return ce + model.config.mse_weight * se, jnp.ones_like(ce)


def labrador_masked_predictions(model: Labrador, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per bag: the most likely item of the masked lab (1-based code) and the predicted eCDF value."""
    logits, value = model(batch["codes"], batch["values"], batch["is_null"], batch["is_masked"])
    slot = jnp.argmax(batch["is_masked"], axis=1)
    rows = jnp.arange(logits.shape[0])
    return jnp.argmax(logits[rows, slot], axis=-1) + 1, value[rows, slot]


def labrador_loss(logits, value, is_masked, target_code, target_value, mse_weight: float = 1.0):
    """CE on the masked lab's item + mse_weight x MSE on its eCDF value, averaged over bags."""
    ce, se = labrador_loss_rows(logits, value, is_masked, target_code, target_value)
    ce, mse = jnp.mean(ce), jnp.mean(se)
    return ce + mse_weight * mse, (ce, mse)


class Bert(nnx.Module):
    """BERT baseline on (code, decile) tokens; `n_items` is the token vocabulary (mask token included)."""

    def __init__(self, config: EncoderConfig, rngs: nnx.Rngs):
        self.config = config
        self.embedding = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.n_items, config.d_model)))
        self.blocks = BlockStack(config.stack, rngs)
        self.final_norm = nnx.Param(jnp.ones((config.d_model,)))
        self.head = nnx.Param(INIT_STD * jax.random.normal(rngs.params(), (config.d_model, config.n_items)))

    def hidden(self, tokens, dtype=jnp.float32, unroll: bool = False) -> jax.Array:
        x = self.embedding[...][tokens]
        x = self.blocks(x, padding_mask(tokens > 0), None, dtype, unroll)
        return rms_norm(x, self.final_norm[...])

    def __call__(self, tokens, dtype=jnp.float32, unroll: bool = False) -> jax.Array:
        h = self.hidden(tokens, dtype, unroll)
        b, t, d = h.shape
        logits = jnp.einsum("nd,dv->nv", h.reshape(b * t, d), self.head[...].astype(h.dtype))  # 2-D: see BlockStack
        return logits.reshape(b, t, -1).astype(jnp.float32)

    def embed(self, tokens) -> jax.Array:
        h = self.hidden(tokens)
        valid = (tokens > 0)[..., None].astype(h.dtype)
        return jnp.sum(h * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)


def bert_loss_rows(logits, is_masked, target_token):
    """Per bag: cross-entropy of the masked token."""
    slot = jnp.argmax(is_masked, axis=1)
    rows = jnp.arange(logits.shape[0])
    logp = jax.nn.log_softmax(logits[rows, slot], axis=-1)
    return -logp[rows, target_token]


def bert_row_loss(model: Bert, batch: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """BERT's masked-token cross-entropy per bag; one term per bag."""
    ce = bert_loss_rows(model(batch["tokens"], dtype), batch["is_masked"], batch["target_token"])
    return ce, jnp.ones_like(ce)


def bert_masked_predictions(model: Bert, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Per bag: the item of the most likely token at the mask (1-based code; 0 for a non-item token), and the value
    read off the true item's ten decile tokens: the expected decile midpoint under their renormalised probabilities."""
    logits = model(batch["tokens"])
    slot = jnp.argmax(batch["is_masked"], axis=1)
    rows = jnp.arange(logits.shape[0])
    at_mask = logits[rows, slot]  # [bags, vocabulary]
    top = jnp.argmax(at_mask, axis=-1)
    n_items = (logits.shape[-1] - 2) // BERT_SLOTS
    item = jnp.where((top >= 1) & (top <= n_items * BERT_SLOTS), (top - 1) // BERT_SLOTS + 1, 0)
    first = 1 + (batch["target_code"] - 1) * BERT_SLOTS  # the true item's decile-0 token
    deciles = jnp.take_along_axis(at_mask, first[:, None] + jnp.arange(10)[None, :], axis=1)
    midpoints = (jnp.arange(10) + 0.5) / 10
    return item, jnp.sum(jax.nn.softmax(deciles, axis=-1) * midpoints, axis=-1)


def bert_loss(logits, is_masked, target_token):
    """Cross-entropy of the masked token, averaged over bags."""
    return jnp.mean(bert_loss_rows(logits, is_masked, target_token))
