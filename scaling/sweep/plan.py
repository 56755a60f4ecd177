"""Turn a sweep spec into its runs: sizes per budget, tokens that spend each budget, and warnings.

Learning rates: each `lr_multipliers` entry runs every cell again with the recipe's learning rate times it (run
ids end `-lr<m>` except for 1, so a sweep that adds the axis keeps its existing runs' ids).

WSD branches (`branches = true`, `[recipe] schedule = "wsd"`): the runs of one (width, seed, multiplier) at
several budgets differ only in length, and a WSD run holds its peak learning rate until its cool-down. So one
trunk run (`trunk-w<width>-s<seed>`) trains at the peak to the latest cool-down start and keeps its state at
each; each budget's run then starts from that state at its own cool-down start and decays. Their warmup is
that of the shortest run of the group, in steps (`warmup_steps`), so every branch ends where a run of the
same spec trained from scratch would (to rounding). A width planned at one budget only trains on its own.

Sizes: with `[sizes] widths`, those widths wherever they fit the budget. Otherwise the recipe's
guess (the width whose tokens per non-embedding parameter is closest to `tokens_per_param`)
centres `count` sizes spread evenly in log parameters over `span`x, shifted to stay within the
widths that fit, each snapped to the nearest width of the recipe's ladder not taken yet. `[[sizes.extra]]`
adds the widths it names at the budgets it names, as given (below the recipe's smallest size too).
"""

import dataclasses
import math
from dataclasses import dataclass, field

from scaling.data.dataset import ModelInputs, PreparedDataset
from scaling.families import FAMILIES
from scaling.recipe import Candidate, Recipe, candidates
from scaling.runspec import Branch, RunSpec
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
    refined: bool = False  # added by refinement after the first runs of its budget (trained alone, never a branch)

    @property
    def lr_multiplier(self) -> float:
        return self.spec.recipe.lr_multiplier

    @property
    def flops_spent(self) -> float:
        """The compute this run costs the sweep: all its steps, or a branch's own plus its share of its trunk."""
        return self.candidate.flops * self.spec.steps_spent(self.candidate.steps) / self.candidate.steps


@dataclass(frozen=True)
class Trunk:
    """A WSD trunk: one (width, seed, multiplier) at its peak learning rate up to its branches' latest cool-down."""

    run_id: str
    spec: RunSpec
    steps: int
    flops: float
    branches: tuple[str, ...]  # the run ids that start from it


@dataclass(frozen=True)
class Unit:
    """What one worker trains in order: a run, or a trunk and then its branches."""

    runs: tuple[PlannedRun, ...]
    trunk: Trunk | None = None

    @property
    def name(self) -> str:
        return self.trunk.run_id if self.trunk else self.runs[0].run_id

    @property
    def flops(self) -> float:
        return sum(r.flops_spent for r in self.runs)


@dataclass(frozen=True)
class Plan:
    sweep: SweepSpec
    inputs: ModelInputs
    runs: tuple[PlannedRun, ...]
    warnings: tuple[str, ...]
    trunks: tuple[Trunk, ...] = ()
    ladder: dict[float, tuple[Candidate, ...]] = field(default_factory=dict)  # every width that fits each budget

    @property
    def total_flops(self) -> float:
        """What the runs' FLOPs add up to as separate runs (the grid's compute)."""
        return sum(r.candidate.flops for r in self.runs)

    @property
    def flops_spent(self) -> float:
        """What training the plan costs: less than `total_flops` where branches share trunks."""
        return sum(r.flops_spent for r in self.runs)

    def units(self) -> list[Unit]:
        """The runs grouped as workers train them: each trunk with its branches, every other run alone."""
        by_id = {r.run_id: r for r in self.runs}
        in_trunk = {rid for t in self.trunks for rid in t.branches}
        units = [Unit(tuple(by_id[rid] for rid in t.branches), t) for t in self.trunks]
        return units + [Unit((r,)) for r in self.runs if r.run_id not in in_trunk]


def budget_tag(budget: float) -> str:
    """3e11 -> '3e11', 1.5e12 -> '1.5e12': short, unique for distinct budgets to 3 digits, folder-safe."""
    mantissa, exponent = f"{budget:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def lr_tag(lr_multiplier: float) -> str:
    """'' for the recipe's own learning rate, '-lr0.5' for half of it."""
    return "" if lr_multiplier == 1.0 else f"-lr{lr_multiplier:g}"


def run_id(budget: float, width: int, seed: int, lr_multiplier: float = 1.0) -> str:
    return f"b{budget_tag(budget)}-w{width}-s{seed}{lr_tag(lr_multiplier)}"


def trunk_id(width: int, seed: int, lr_multiplier: float = 1.0) -> str:
    return f"trunk-w{width}-s{seed}{lr_tag(lr_multiplier)}"


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


def make_plan(
    sweep: SweepSpec, dataset: PreparedDataset | None = None, refined: dict[float, tuple[int, ...]] | None = None
) -> Plan:
    """Every run of the sweep, in budget then size then seed order, and what to watch for; `refined` adds the
    widths refinement chose per budget (scaling/sweep/refine.py)."""
    dataset = dataset or PreparedDataset.open(sweep.data)
    for name in sweep.tasks:  # a task the dataset lacks fails at planning, not after the sweep's training
        dataset.resolve_task(name)
    family, recipe = FAMILIES[sweep.family], sweep.recipe
    inputs = family.inputs(dataset, recipe.context, recipe.bags_per_row)
    sized = dataclasses.replace(recipe, context=inputs.context)
    warnings, runs, ladder = [], [], {}
    if family.data.packs_bags and recipe.bags_per_row:  # a cap that splits rows spends slots on padding
        uncapped = family.inputs(dataset, recipe.context).rows_per_epoch
        if inputs.rows_per_epoch > 1.02 * uncapped:
            warnings.append(
                f"[recipe] bags_per_row = {recipe.bags_per_row} packs the train bags into "
                f"{inputs.rows_per_epoch / uncapped - 1:.0%} more rows than no cap: raise it"
            )
    for budget in sorted(sweep.budgets):
        accepted, rejected = candidates(sized, budget, inputs.vocab_size, sweep.convention, sweep.sizes.widths or None)
        ladder[budget] = tuple(
            candidates(sized, budget, inputs.vocab_size, sweep.convention)[0] if sweep.sizes.widths else accepted
        )
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
        chosen += _extra_sizes(sweep, sized, budget, inputs.vocab_size, {c.width for c in chosen}, warnings)
        extra = set((refined or {}).get(budget, ())) - {c.width for c in chosen}
        added = {c.width for c in ladder[budget] if c.width in extra}
        chosen = sorted(list(chosen) + [c for c in ladder[budget] if c.width in added], key=lambda c: c.params)
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
                for multiplier in sweep.lr_multipliers:
                    rid = run_id(budget, candidate.width, seed, multiplier)
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
                        recipe=dataclasses.replace(sweep.recipe, lr_multiplier=sweep.recipe.lr_multiplier * multiplier),
                        train=sweep.train,
                        tracking=dataclasses.replace(sweep.tracking, group=f"{sweep.name}/v{sweep.version}"),
                        eval=sweep.eval,
                    )
                    planned = PlannedRun(
                        run_id=rid,
                        budget=budget,
                        seed=seed,
                        candidate=candidate,
                        spec=spec,
                        epochs=epochs,
                        refined=candidate.width in added,
                    )
                    runs.append(planned)
    trunks: list[Trunk] = []
    if sweep.branches:
        runs, trunks = branch_runs(runs)
    return Plan(
        sweep=sweep,
        inputs=inputs,
        runs=tuple(runs),
        warnings=tuple(warnings),
        trunks=tuple(trunks),
        ladder=ladder,
    )


def _extra_sizes(
    sweep: SweepSpec, sized: Recipe, budget: float, vocab_size: int, taken: set[int], warnings: list[str]
) -> list[Candidate]:
    """The [[sizes.extra]] widths at this budget that spend it in whole steps, as given: the recipe's smallest size
    guards the automatic choice, not a width asked for by name. Those that cannot spend it are warned about."""
    widths = tuple(w for w in sweep.sizes.extra_widths(budget) if w not in taken)
    if not widths:
        return []
    accepted, rejected = candidates(
        dataclasses.replace(sized, min_params_nonembed=0), budget, vocab_size, sweep.convention, widths
    )
    warnings += [f"budget {budget:.3g}: extra width {r.width} left out: {r.reason}" for r in rejected]
    return accepted


def branch_runs(runs: list[PlannedRun]) -> tuple[list[PlannedRun], list[Trunk]]:
    """The runs with every (width, seed, multiplier) at two or more budgets turned into branches of one trunk."""
    groups: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        if not r.refined:  # a trunk's branch points are fixed when it trains; refinement comes after
            groups.setdefault((r.candidate.width, r.seed, r.lr_multiplier), []).append(r)
    replaced: dict[str, PlannedRun] = {}
    trunks = []
    for (width, seed, multiplier), group in groups.items():
        if len(group) < 2:
            continue
        recipe = group[0].spec.recipe
        warmup = recipe.warmup_steps or recipe.warmup(min(r.candidate.steps for r in group))
        shared = dataclasses.replace(recipe, warmup_steps=warmup)
        starts = {r.run_id: shared.decay_start(r.candidate.steps) for r in group}
        points = sorted(set(starts.values()))
        tid = trunk_id(width, seed, multiplier)
        for r in group:
            branch = Branch(trunk=tid, step=starts[r.run_id], trunk_share_steps=_trunk_share(starts, r.run_id))
            replaced[r.run_id] = dataclasses.replace(r, spec=dataclasses.replace(r.spec, recipe=shared, branch=branch))
        first = group[0]
        per_step = first.candidate.flops / first.candidate.steps
        trunk_spec = dataclasses.replace(
            first.spec,
            name=tid,
            tokens=points[-1] * first.candidate.tokens // first.candidate.steps,
            tasks=(),
            budget=None,
            recipe=dataclasses.replace(shared, decay_fraction=0.0),  # the peak to its end: no cool-down of its own
            branch_points=tuple(points),
        )
        trunks.append(Trunk(tid, trunk_spec, points[-1], per_step * points[-1], tuple(r.run_id for r in group)))
    return [replaced.get(r.run_id, r) for r in runs], trunks


def _trunk_share(starts: dict[str, int], run: str) -> float:
    """A branch's share of the trunk: each stretch between consecutive branch points is split equally among the
    branches that start at or after its end."""
    points = sorted(starts.values())
    share, previous = 0.0, 0
    for i, point in enumerate(points):
        if point > starts[run]:
            break
        share += (point - previous) / (len(points) - i)
        previous = point
    return share
