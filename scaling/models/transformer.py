"""A stack of pre-norm transformer blocks with stacked weights, run with `jax.lax.scan`.

Every block's weights carry a leading layer axis, so one block is traced and compiled whatever the
depth. Blocks: RMSNorm -> multi-head attention (rotary positions optional) -> residual, RMSNorm ->
SwiGLU MLP -> residual. No biases. Axis names in einsums: b batch, t/s positions, n = b*t rows,
d model, h heads, k head dim, f MLP hidden, l layers.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.models import attention
from scaling.models.shapes import StackConfig

INIT_STD = 0.02


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * scale).astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotate pairs of the head dim by position-dependent angles. x: [b, t, h, k], positions: [b, t]."""
    half = x.shape[-1] // 2
    freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[..., None, None].astype(jnp.float32) * freq  # [b, t, 1, half]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class BlockStack(nnx.Module):
    """n_layers pre-norm blocks; weights stacked on a leading layer axis."""

    def __init__(self, config: StackConfig, rngs: nnx.Rngs):
        c, n = config, config.n_layers
        self.config = config
        self.attn_norm = nnx.Param(jnp.ones((n, c.d_model)))
        self.wq = _normal(rngs, (n, c.d_model, c.n_heads, c.head_dim), INIT_STD)
        self.wk = _normal(rngs, (n, c.d_model, c.n_heads, c.head_dim), INIT_STD)
        self.wv = _normal(rngs, (n, c.d_model, c.n_heads, c.head_dim), INIT_STD)
        # Output projections start smaller with depth (GPT-2's residual scaling).
        out_std = INIT_STD / (2 * n) ** 0.5
        self.wo = _normal(rngs, (n, c.n_heads, c.head_dim, c.d_model), out_std)
        self.mlp_norm = nnx.Param(jnp.ones((n, c.d_model)))
        self.w_gate = _normal(rngs, (n, c.d_model, c.d_ff), INIT_STD)
        self.w_up = _normal(rngs, (n, c.d_model, c.d_ff), INIT_STD)
        self.w_down = _normal(rngs, (n, c.d_ff, c.d_model), out_std)

    def weights(self) -> dict[str, jax.Array]:
        """The stacked weights [l, ...] by name."""
        names = ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down")
        return {name: getattr(self, name)[...] for name in names}

    def __call__(
        self,
        x: jax.Array,
        segment_ids: jax.Array,
        causal: bool,
        positions: jax.Array | None = None,
        dtype: jnp.dtype = jnp.float32,
        unroll: bool = False,
        keys_values: bool = False,
    ):
        """x: [b, t, d]; a position attends within its segment of `segment_ids` [b, t] (and, `causal`, to no later
        position), by the implementation `config.attention` names (scaling/models/attention.py).

        `unroll=True` inlines every layer: compile time grows with depth, but XLA's cost analysis
        (which counts a loop body once) then sees every layer; used to check the FLOP count.
        `keys_values=True` also returns every layer's keys and values [l, b, t, h, k] (rotated): a sampler's cache."""
        c = self.config
        b, t, d = x.shape
        chosen = attention.choose(c.attention, jax.default_backend(), dtype, t, c.head_dim)
        mask = attention.mask_operand(segment_ids, causal, chosen)  # once, outside the layers' scan

        def block(x, w):
            w = cast_weights(w, dtype)
            q, k, v = project_qkv(x, w, c, positions, b, t)
            attended = attention.apply(chosen, q, k, v, mask, causal, dtype).reshape(b * t, c.n_heads, c.head_dim)
            return finish_block(x, attended, w), ((k, v) if keys_values else None)

        x, kv = jax.lax.scan(
            block, x.reshape(b * t, d).astype(dtype), self.weights(), unroll=c.n_layers if unroll else 1
        )
        return (x.reshape(b, t, d), kv) if keys_values else x.reshape(b, t, d)

    def step(self, x: jax.Array, at: jax.Array, keys: jax.Array, values: jax.Array, dtype=jnp.float32):
        """One new position per row, attending through a key-value cache: x [b, d] is the input at cache index (and
        rotary position) `at` [b]; keys and values [l, b, s, h, k] hold the row's earlier positions. The new position
        attends to indices <= its own, as the causal mask of `__call__` lets it. Returns its output [b, d] and the
        caches with its key and value written at `at` (an index past the cache is dropped: a finished row)."""
        c = self.config
        b, s = x.shape[0], keys.shape[2]
        rows = jnp.arange(b)
        visible = jnp.arange(s)[None, :] <= at[:, None]  # [b, s]

        def block(x, layer):
            w, k_cache, v_cache = layer
            w = cast_weights(w, dtype)
            q, k, v = project_qkv(x, w, c, at[:, None], b, 1)
            k_cache = k_cache.at[rows, at].set(k[:, 0].astype(k_cache.dtype), mode="drop")
            v_cache = v_cache.at[rows, at].set(v[:, 0].astype(v_cache.dtype), mode="drop")
            scores = jnp.einsum("bhk,bshk->bhs", q[:, 0], k_cache.astype(dtype)).astype(jnp.float32)
            scores = jnp.where(visible[:, None, :], scores * c.head_dim**-0.5, -1e30)
            weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
            attended = jnp.einsum("bhs,bshk->bhk", weights, v_cache.astype(dtype))
            return finish_block(x, attended, w), (k_cache, v_cache)

        x, (keys, values) = jax.lax.scan(block, x.astype(dtype), (self.weights(), keys, values))
        return x, keys, values


def cast_weights(w: dict, dtype) -> dict:
    """One layer's weights with the projections in `dtype` (the norms' scales stay float32)."""
    return {name: value if name.endswith("norm") else value.astype(dtype) for name, value in w.items()}


# Dense projections act on [b*t, d] rows: XLA's CPU backend runs the weight gradients of 2-D matmuls (one contracting
# axis) much faster than those of [b, t, d] einsums.
def project_qkv(x: jax.Array, w: dict, c: StackConfig, positions: jax.Array | None, b: int, t: int):
    """One block's queries, keys and values [b, t, h, k] from its input rows x [b*t, d] (rotated by `positions`)."""
    h = rms_norm(x, w["attn_norm"])
    q = jnp.einsum("nd,dhk->nhk", h, w["wq"]).reshape(b, t, c.n_heads, c.head_dim)
    k = jnp.einsum("nd,dhk->nhk", h, w["wk"]).reshape(b, t, c.n_heads, c.head_dim)
    v = jnp.einsum("nd,dhk->nhk", h, w["wv"]).reshape(b, t, c.n_heads, c.head_dim)
    if c.rotary:
        q, k = rotary(q, positions, c.rope_theta), rotary(k, positions, c.rope_theta)
    return q, k, v


def finish_block(x: jax.Array, attended: jax.Array, w: dict) -> jax.Array:
    """The rest of a block on rows x [n, d], given its attention [n, h, k]: output projection and residual, then the
    SwiGLU MLP and residual."""
    x = x + jnp.einsum("nhk,hkd->nd", attended, w["wo"])
    h = rms_norm(x, w["mlp_norm"])
    gated = jax.nn.silu(jnp.einsum("nd,df->nf", h, w["w_gate"])) * jnp.einsum("nd,df->nf", h, w["w_up"])
    return x + jnp.einsum("nf,fd->nd", gated, w["w_down"])
