"""Turn a sweep spec into its runs: sizes per budget, tokens that spend each budget, and warnings.

Sizes: with `[sizes] widths`, those widths wherever they fit the budget. Otherwise the recipe's
guess (the width whose tokens per non-embedding parameter is closest to `tokens_per_param`)
centres `count` sizes spread evenly in log parameters over `span`x, shifted to stay within the
widths that fit, each snapped to the nearest width of the recipe's ladder not taken yet.
"""

import dataclasses
import math
from dataclasses import dataclass

from scaling.data.dataset import ModelInputs, PreparedDataset
from scaling.families import FAMILIES
from scaling.recipe import Candidate, candidates
from scaling.runspec import RunSpec
from scaling.sweep.spec import SweepSpec

MIN_SIZES_FOR_PARABOLA = 3


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    budget: float
    seed: int
    candidate: Candidate
    spec: RunSpec
    epochs: float  # passes over the training split


@dataclass(frozen=True)
class Plan:
    sweep: SweepSpec
    inputs: ModelInputs
    runs: tuple[PlannedRun, ...]
    warnings: tuple[str, ...]

    @property
    def total_flops(self) -> float:
        return sum(r.candidate.flops for r in self.runs)


def budget_tag(budget: float) -> str:
    """3e11 -> '3e11', 1.5e12 -> '1.5e12': short, unique for distinct budgets to 3 digits, folder-safe."""
    mantissa, exponent = f"{budget:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def run_id(budget: float, width: int, seed: int) -> str:
    return f"b{budget_tag(budget)}-w{width}-s{seed}"


def choose_sizes(accepted: list[Candidate], count: int, span: float, tokens_per_param: float) -> list[Candidate]:
    """`count` candidates spread over `span`x non-embedding parameters around the recipe's guess."""
    if not accepted:
        return []
    by_size = sorted(accepted, key=lambda c: c.params_nonembed)
    logs = [math.log(c.params_nonembed) for c in by_size]
    guess = min(by_size, key=lambda c: abs(math.log(c.tokens / c.params_nonembed / tokens_per_param)))
    half = math.log(span) / 2
    centre = (
        min(max(math.log(guess.params_nonembed), logs[0] + half), logs[-1] - half)
        if logs[-1] - logs[0] > 2 * half
        else (logs[0] + logs[-1]) / 2
    )
    targets = [centre] if count == 1 else [centre - half + 2 * half * i / (count - 1) for i in range(count)]
    chosen: set[int] = set()
    for target in sorted(targets, key=lambda t: abs(t - centre)):  # the middle first; each takes the nearest size left
        free = [i for i in range(len(by_size)) if i not in chosen]
        if free:
            chosen.add(min(free, key=lambda i: abs(logs[i] - target)))
    return [by_size[i] for i in sorted(chosen)]


def make_plan(sweep: SweepSpec, dataset: PreparedDataset | None = None) -> Plan:
    """Every run of the sweep, in budget then size then seed order, and what to watch for."""
    dataset = dataset or PreparedDataset.open(sweep.data)
    for name in sweep.tasks:  # a task the dataset lacks fails at planning, not after the sweep's training
        dataset.resolve_task(name)
    inputs = FAMILIES[sweep.family].inputs(dataset, sweep.recipe.context)
    sized = dataclasses.replace(sweep.recipe, context=inputs.context)
    warnings, runs = [], []
    for budget in sorted(sweep.budgets):
        accepted, rejected = candidates(sized, budget, inputs.vocab_size, sweep.convention, sweep.sizes.widths or None)
        if sweep.sizes.widths:
            chosen = accepted
            warnings += [f"budget {budget:.3g}: width {r.width} left out: {r.reason}" for r in rejected]
        else:
            chosen = choose_sizes(accepted, sweep.sizes.count, sweep.sizes.span, sized.tokens_per_param)
            if len(chosen) < sweep.sizes.count:
                warnings.append(
                    f"budget {budget:.3g}: {len(chosen)} of {sweep.sizes.count} sizes fit "
                    f"({len(accepted)} widths of the recipe spend it in at least {sized.min_steps} steps)"
                )
        if len(chosen) < MIN_SIZES_FOR_PARABOLA:
            warnings.append(
                f"budget {budget:.3g}: {len(chosen)} sizes; an IsoFLOP parabola needs {MIN_SIZES_FOR_PARABOLA}"
            )
        for candidate in chosen:
            epochs = candidate.steps * sized.batch_rows / inputs.rows_per_epoch if inputs.rows_per_epoch else math.inf
            if epochs > 1:
                warnings.append(
                    f"{run_id(budget, candidate.width, sweep.seeds[0])}: {candidate.tokens:,} tokens repeat "
                    f"the training data {epochs:.1f} times"
                )
            for seed in sweep.seeds:
                rid = run_id(budget, candidate.width, seed)
                spec = RunSpec(
                    name=rid,
                    data=sweep.data,
                    width=candidate.width,
                    tokens=candidate.tokens,
                    family=sweep.family,
                    seed=seed,
                    convention=sweep.convention,
                    dtype=sweep.dtype,
                    tasks=sweep.tasks,
                    probe_train_rows=sweep.probe_train_rows,
                    budget=budget,
                    recipe=sweep.recipe,
                    train=sweep.train,
                )
                runs.append(
                    PlannedRun(run_id=rid, budget=budget, seed=seed, candidate=candidate, spec=spec, epochs=epochs)
                )
    return Plan(sweep=sweep, inputs=inputs, runs=tuple(runs), warnings=tuple(warnings))
