"""Model configurations and their parameter counts, in plain Python (no JAX).

The recipe, the sweep planner and the sweep driver size models from these without importing JAX,
so a driver never touches an accelerator; the modules in this package build the models from them.
"""

from dataclasses import dataclass

# How attention is computed (scaling/models/attention.py): "auto" picks per platform; all give the same numbers to
# float rounding, so the choice is an execution setting ([train] attention), not part of a run's fingerprint.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "reference", "cudnn", "splash")


@dataclass(frozen=True)
class StackConfig:
    """Shape of a block stack."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    rotary: bool = True
    rope_theta: float = 10_000.0
    attention: str = "auto"  # an implementation of scaling/models/attention.py; the same numbers to float rounding

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.rotary and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got {self.head_dim}")

    def params(self) -> int:
        """Weights of the stack: per layer two norms, Q K V O, three MLP matrices."""
        d, f = self.d_model, self.d_ff
        return self.n_layers * (2 * d + 4 * d * d + 3 * d * f)


@dataclass(frozen=True)
class DecoderConfig:
    """Everything that fixes the decoder's parameter tree and compute."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    context: int
    tie_embeddings: bool = False
    attention: str = "auto"  # StackConfig.attention

    @property
    def stack(self) -> StackConfig:
        return StackConfig(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            rotary=True,
            attention=self.attention,
        )

    def params(self) -> int:
        """All weights: embedding, blocks, final norm, unembedding unless tied."""
        unembed = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        return self.vocab_size * self.d_model + self.stack.params() + self.d_model + unembed

    def params_nonembed(self) -> int:
        """Weights outside the embedding and unembedding matrices (Kaplan's N)."""
        return self.stack.params() + self.d_model


# The value term's weight in Labrador's loss: a constant prediction's MSE on eCDF values is 1/12, against an item
# cross-entropy of 1-5 nats. Measured at width 48 (docs/models.md, "Labrador's value"): 12 learnt nothing in 4,000
# steps, 30 reached MSE 0.064 told the item (the ridge ceiling 0.050), 100 learnt the value faster, the item slower.
VALUE_WEIGHT = 30.0


@dataclass(frozen=True)
class EncoderConfig:
    """An encoder over bags: `n_items` lab items (Labrador) or BERT tokens, and the slots of a row of packed bags."""

    n_items: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    context: int  # slots per row of packed bags
    mse_weight: float = VALUE_WEIGHT  # Labrador's value term
    attention: str = "auto"  # StackConfig.attention

    @property
    def stack(self) -> StackConfig:
        return StackConfig(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            rotary=False,
            attention=self.attention,
        )


def labrador_params(c: EncoderConfig) -> tuple[int, int]:
    """(all, non-embedding) parameters of Labrador; the code embedding table is the embedding."""
    d = c.d_model
    table = (c.n_items + 3) * d  # padding, items, mask, null
    value = d + d + 2 * d  # Dense(1 -> d) weight and bias, the mask and null vectors
    directions = (c.n_items + 3) * d  # each item's own value direction, a table like the code embedding
    project = d * d + d + 2 * d  # Dense(d) + bias, LayerNorm scale and bias
    read = d + c.n_items  # the continuous head reads the hidden state and the item probabilities
    categorical = d * d + d + d * c.n_items + c.n_items  # hidden Dense(d) + ReLU, then Dense(items)
    continuous = read * d + d + d * c.n_items + c.n_items  # hidden Dense(d) + ReLU, then Dense(items), mixed by item
    nonembed = value + project + c.stack.params() + d + categorical + continuous  # d: the final norm
    return table + directions + nonembed, nonembed


def labrador_extra_forward(c: EncoderConfig) -> float:
    """Forward FLOPs per slot of Labrador's input layers: the value input (shared and the item's own direction)
    and the projection (+ ReLU, LayerNorm)."""
    d = c.d_model
    return float(2 * d + 2 * d + 2 * d * d + d + 8 * d)


def labrador_read_forward(c: EncoderConfig) -> float:
    """Forward FLOPs per read (masked) slot of Labrador's heads beyond the item logits: the categorical head's hidden
    layer, the item probabilities, and the continuous head's hidden layer, per-item output, mix and sigmoid."""
    d, read = c.d_model, c.d_model + c.n_items
    return float(2 * d * d + d + 5 * c.n_items + 2 * read * d + d + 2 * d * c.n_items + 2 * c.n_items + 4)


def bert_params(c: EncoderConfig) -> tuple[int, int]:
    """(all, non-embedding) parameters of BERT on bag tokens; `n_items` is the token vocabulary here."""
    d = c.d_model
    table = c.n_items * d
    nonembed = c.stack.params() + d + d * c.n_items
    return table + nonembed, nonembed
