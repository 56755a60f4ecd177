"""The size recipe: every opinionated choice of a scaling study in one frozen dataclass per family.

From a width the recipe derives the whole shape (depth, heads, MLP size) and the optimiser settings
(learning rate for the width and batch, warmup, betas, decay). `candidates(budget)` turns a FLOP
budget into runs: for each width, the token count that spends the budget in whole steps.
Defaults come from the CPU feasibility study (shared/reference/cpu-isoflop-feasibility.md):
context 128, 16 rows per step, lr = 1.0 / width at that batch, warmup 5%, cosine to 0.1x.
"""

import dataclasses
import math
from dataclasses import dataclass

from scaling import families
from scaling.flops import Shape, train_flops_per_token
from scaling.models.shapes import DecoderConfig, EncoderConfig

FAMILIES = tuple(families.FAMILIES)  # scaling/families.py: what differs between families


@dataclass(frozen=True)
class Recipe:
    """Shape and optimiser rules; override any field from a sweep spec (`dataclasses.replace`)."""

    family: str = "timeline"
    widths: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
    width_per_layer: int = 48  # depth = max(1, round(width / width_per_layer))
    max_layers: int = 48
    target_heads: int = 4  # head size = width / target_heads, kept within [min_head_dim, max_head_dim] (and <= width)
    # Each head costs a [rows, t, t] softmax whatever its size: on the CPU, 16-wide heads made widths 48-64
    # 2x slower per step than 32-wide ones (27.9 vs 13.2 ms at width 48, single-threaded).
    min_head_dim: int = 32
    max_head_dim: int = 64  # wider heads keep the attention einsums efficient (46% vs 37% MFU at width 256 here)
    mlp_ratio: float = 8 / 3  # SwiGLU hidden size = mlp_ratio x width, rounded up to a multiple of 8
    context: int = 128  # timeline window, or the slots of a row of packed bags (the longest bag must fit)
    batch_rows: int = 16  # sequences (or bags) per step
    lr_width_product: float = 1.0  # lr = lr_width_product / width at reference_batch_rows
    reference_batch_rows: int = 16  # lr grows with sqrt(batch / reference)
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    tie_embeddings: bool = False
    min_steps: int = 50
    min_params_nonembed: int = 1_000
    budget_tolerance: float = 0.05
    tokens_per_param: float = (
        20.0  # the guess of the compute-optimal tokens / non-embedding params that centres a sweep's sizes
    )

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_rows * self.context

    def layers(self, width: int) -> int:
        return int(min(self.max_layers, max(1, round(width / self.width_per_layer))))

    def head_dim(self, width: int) -> int:
        return int(min(width, self.max_head_dim, max(self.min_head_dim, width // self.target_heads)))

    def heads(self, width: int) -> int:
        return max(1, width // self.head_dim(width))

    def d_ff(self, width: int) -> int:
        return int(math.ceil(self.mlp_ratio * width / 8) * 8)

    def learning_rate(self, width: int) -> float:
        return self.lr_width_product / width * math.sqrt(self.batch_rows / self.reference_batch_rows)

    def model_config(self, width: int, vocab_size: int) -> DecoderConfig | EncoderConfig:
        """The model a width makes; vocab_size is the token vocabulary (timeline, BERT) or lab items (Labrador)."""
        return families.FAMILIES[self.family].config(self, width, vocab_size)

    def shape(self, width: int, vocab_size: int) -> Shape:
        """The FLOP-counting view of a width's model."""
        config = self.model_config(width, vocab_size)
        family = families.FAMILIES[self.family]
        (params, nonembed), out = family.params(config), vocab_size
        return Shape(
            d_model=width,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            d_ff=config.d_ff,
            context=self.context,
            out_size=out,
            params=params,
            params_nonembed=nonembed,
            extra_forward=family.extra_forward(config),
        )


@dataclass(frozen=True)
class Candidate:
    """One run of an IsoFLOP grid: a width and the tokens (whole steps) that spend the budget."""

    width: int
    layers: int
    heads: int
    params: int
    params_nonembed: int
    flops_per_token: float
    steps: int
    tokens: int
    flops: float
    learning_rate: float


@dataclass(frozen=True)
class Rejected:
    width: int
    reason: str


def candidates(
    recipe: Recipe, budget: float, vocab_size: int, convention: str = "exact", widths: tuple[int, ...] | None = None
) -> tuple[list[Candidate], list[Rejected]]:
    """Runs whose FLOPs hit `budget` within the recipe's tolerance in whole steps; the rest with a reason."""
    accepted, rejected = [], []
    for width in widths or recipe.widths:
        shape = recipe.shape(width, vocab_size)
        per_token = train_flops_per_token(shape, convention)
        steps = round(budget / (per_token * recipe.tokens_per_step))
        flops = steps * recipe.tokens_per_step * per_token
        if shape.params_nonembed < recipe.min_params_nonembed:
            rejected.append(Rejected(width, f"too small: {shape.params_nonembed:,} non-embedding parameters"))
        elif steps < recipe.min_steps:
            rejected.append(Rejected(width, f"too few steps: {steps} < {recipe.min_steps}"))
        elif abs(flops - budget) > recipe.budget_tolerance * budget:
            rejected.append(Rejected(width, f"whole steps miss the budget by {abs(flops - budget) / budget:.1%}"))
        else:
            accepted.append(
                Candidate(
                    width=width,
                    layers=shape.n_layers,
                    heads=shape.n_heads,
                    params=shape.params,
                    params_nonembed=shape.params_nonembed,
                    flops_per_token=per_token,
                    steps=steps,
                    tokens=steps * recipe.tokens_per_step,
                    flops=flops,
                    learning_rate=recipe.learning_rate(width),
                )
            )
    return accepted, rejected


def override(recipe: Recipe, changes: dict) -> Recipe:
    """A recipe with some fields replaced; unknown fields are named."""
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown recipe field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dataclasses.replace(recipe, **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
