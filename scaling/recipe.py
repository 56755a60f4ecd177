"""The size recipe: every opinionated choice of a scaling study in one frozen dataclass per family.

From a width the recipe derives the whole shape (depth, heads, MLP size) and the optimiser settings
(learning rate for the width and batch, warmup, betas, decay). `candidates(budget)` turns a FLOP
budget into runs: for each width, the token count that spends the budget in whole steps.
Defaults come from the CPU feasibility study (shared/reference/cpu-isoflop-feasibility.md):
context 128, 16 rows per step, warmup 5%, cosine to 0.1x (or WSD: warmup, constant, a 1-sqrt
cool-down over the last 20% to 0.1x); lr = c / width at that batch, with c measured per family
(`lr_width_product` in scaling/families.py, docs/models.md).
"""

import dataclasses
import math
from dataclasses import dataclass

from scaling import families
from scaling.flops import Shape, train_flops_per_token
from scaling.models.shapes import DecoderConfig, EncoderConfig

SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt")
# Fields added after runs were first recorded, at the default that reproduces those runs (fingerprint_fields).
ADDED_LATER = {
    "lr_multiplier": 1.0,
    "warmup_steps": 0,
    "schedule": "cosine",
    "decay_fraction": 0.2,
    "decay_shape": "1-sqrt",
}


# A run's FLOPs may miss its budget by this fraction (whole steps, recipe widths); collect recognises an old run's
# budget by the same rule.
BUDGET_TOLERANCE = 0.05


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
    # Bag families: at most this many bags packed in a row. The heads read one masked lab per bag, so they run on
    # bags_per_row slots a row, not context: on the demo's bags (25 labs on average, 5 a row) the heads on every
    # slot were 37-60% of Labrador's FLOPs and 48-69% of BERT's at widths 16-48 (docs/models.md).
    bags_per_row: int = 16
    batch_rows: int = 16  # sequences (or bags) per step
    lr_width_product: float = 0.0  # lr = lr_width_product / width at reference_batch_rows; 0: the family's measured
    reference_batch_rows: int = 16  # lr grows with sqrt(batch / reference)
    lr_multiplier: float = 1.0  # x the rule above: a sweep's lr axis (`lr_multipliers`) sets it per run
    warmup_fraction: float = 0.05
    warmup_steps: int = 0  # > 0: the warmup in steps, whatever the run's length (a WSD trunk's branches share it)
    final_lr_fraction: float = 0.1
    schedule: str = "cosine"  # cosine (to final_lr_fraction at the last step) | wsd (warmup, stable, decay)
    # wsd: the cool-down's share of a run's steps and its shape; Hägele et al. 2024 (arXiv 2405.18392) find a
    # 1-sqrt cool-down over 10-20% of the run matches cosine of the same length.
    decay_fraction: float = 0.2
    decay_shape: str = "1-sqrt"  # linear | 1-sqrt
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    tie_embeddings: bool = False
    min_steps: int = 50
    min_params_nonembed: int = 1_000
    budget_tolerance: float = BUDGET_TOLERANCE
    tokens_per_param: float = (
        20.0  # the guess of the compute-optimal tokens / non-embedding params that centres a sweep's sizes
    )

    def __post_init__(self) -> None:
        if self.family not in families.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(families.FAMILIES)}, got {self.family!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {self.decay_shape!r}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be within [0, 1], got {self.decay_fraction!r}")
        if not (self.lr_multiplier > 0 and math.isfinite(self.lr_multiplier)):
            raise ValueError(f"lr_multiplier must be positive, got {self.lr_multiplier!r}")
        if self.lr_width_product < 0:
            raise ValueError(f"lr_width_product must be positive (or 0: the family's), got {self.lr_width_product!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be 0 (use warmup_fraction) or more, got {self.warmup_steps!r}")
        if self.bags_per_row < 0:
            raise ValueError(f"bags_per_row must be 0 (as many bags as fit) or more, got {self.bags_per_row!r}")

    def fingerprint_fields(self) -> dict:
        """The fields as a fingerprint hashes them: those added after runs were first recorded are left out at their
        default, so a run recorded before they existed keeps its fingerprint."""
        fields = dataclasses.asdict(self)
        fields["lr_width_product"] = self.lr_constant  # the value, however it was set
        if not families.FAMILIES[self.family].data.packs_bags:
            del fields["bags_per_row"]  # no bags: a timeline run is the same whatever it says
        if self.schedule == "cosine":  # the cool-down's settings do not change a cosine run
            fields["decay_fraction"], fields["decay_shape"] = ADDED_LATER["decay_fraction"], ADDED_LATER["decay_shape"]
        return {k: v for k, v in fields.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}

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

    @property
    def lr_constant(self) -> float:
        """lr x width at the reference batch: the spec's `lr_width_product`, else the family's calibrated one."""
        return self.lr_width_product or families.FAMILIES[self.family].lr_width_product

    def learning_rate(self, width: int) -> float:
        rule = self.lr_constant / width * math.sqrt(self.batch_rows / self.reference_batch_rows)
        return rule * self.lr_multiplier

    def warmup(self, steps: int) -> int:
        """Warmup steps of a run of `steps` steps: `warmup_steps` if set, else `warmup_fraction` of the run."""
        warmup = self.warmup_steps or max(1, round(self.warmup_fraction * steps))
        return min(warmup, steps - 1) if steps > 1 else 0

    def decay_start(self, steps: int) -> int:
        """The step a WSD run's cool-down starts (the last `decay_fraction` of its steps); cosine: the warmup's end."""
        if self.schedule == "cosine":
            return self.warmup(steps)
        return max(self.warmup(steps), steps - round(self.decay_fraction * steps))

    def model_config(self, width: int, vocab_size: int) -> DecoderConfig | EncoderConfig:
        """The model a width makes; vocab_size is the token vocabulary (timeline, BERT) or lab items (Labrador)."""
        return families.FAMILIES[self.family].config(self, width, vocab_size)

    def shape(self, width: int, vocab_size: int) -> Shape:
        """The FLOP-counting view of a width's model."""
        config = self.model_config(width, vocab_size)
        family = families.FAMILIES[self.family]
        (params, nonembed), out = family.params(config), vocab_size
        reads = family.data.packs_bags and self.bags_per_row
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
            read_share=min(1.0, self.bags_per_row / self.context) if reads else 1.0,
            read_forward=family.read_forward(config),
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
