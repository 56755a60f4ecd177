"""FLOPs per token under named conventions; every run and fit records which one it used.

Conventions (training FLOPs per token; forward is a third of each):
- `6N`: 6 x all parameters.
- `6N_nonembed`: 6 x parameters outside the embedding and unembedding matrices.
- `6N+attn`: Kaplan et al.: 6 x N_nonembed + 6 x n_layers x context x d_attn (the attention scores).
- `exact`: 3 x the forward count of every matrix product and the main elementwise work, by
  component (`forward_components`). Matches XLA's count of the compiled train step within 10%
  (tests/test_flops.py; table in docs/models.md).
"""

from dataclasses import dataclass

CONVENTIONS = ("6N", "6N_nonembed", "6N+attn", "exact")


@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs from a model: sizes, the sequence length attended over, the output size."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    context: int  # tokens attended over (a timeline window, or a row of packed bags)
    out_size: int  # logits per token: the vocabulary (decoder, BERT) or the lab items (Labrador)
    params: int
    params_nonembed: int
    extra_forward: float = 0.0  # forward FLOPs per token outside the stack and the logits (Labrador's input layers)
    # The output layers run on this share of the tokens: 1 for a decoder (every token predicts the next), the
    # masked slots a row reads for the bag families (bags per row / context); `read_forward` is their FLOPs per
    # read slot beyond the logits (Labrador's heads' hidden layers).
    read_share: float = 1.0
    read_forward: float = 0.0


def forward_components(s: Shape) -> dict[str, float]:
    """Forward FLOPs per token by component (a multiply-add counts 2)."""
    d, f, t, layers = s.d_model, s.d_ff, s.context, s.n_layers
    return {
        "embeddings": 0.0,  # a gather
        "qkv": layers * 2 * 3 * d * d,
        "scores": layers * 2 * t * d,
        "softmax": layers * 5 * s.n_heads * t,  # the mask, max, subtract, exp, sum (the divide is after the values)
        "attention_output": layers * 2 * t * d + layers * 2 * d * d,  # probs x values, then the output projection
        "mlp": layers * (2 * 3 * d * f + 4 * f),  # gate, up, down; SiLU and the product
        "norms_residuals": (2 * layers + 1) * 4 * d + layers * 2 * d,
        "logits": s.read_share * (2 * d * s.out_size + 5 * s.out_size),  # the projection and the loss's softmax
        "family_layers": s.extra_forward + s.read_share * s.read_forward,
    }


def train_flops_per_token(s: Shape, convention: str) -> float:
    """Training FLOPs per token (forward + backward) under a convention."""
    if convention == "6N":
        return 6.0 * s.params
    if convention == "6N_nonembed":
        return 6.0 * s.params_nonembed
    if convention == "6N+attn":
        return 6.0 * s.params_nonembed + 6.0 * s.n_layers * s.context * s.d_model
    if convention == "exact":
        return 3.0 * sum(forward_components(s).values())
    raise ValueError(f"unknown FLOP convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
