"""A sweep spec (`sweeps/*.toml`): an IsoFLOP grid as data, validated before anything runs.

```toml
name = "demo"                  # runs go to <runs_root>/<name>/<version>/<run id>/
version = 1
family = "timeline"            # timeline | labrador | bert
data = "out/demo/prep"         # a prepared dataset (relative paths: from where the command runs)
runs_root = "out/demo/runs"    # a local folder or shared storage that every worker sees
budgets = [1e11, 3e11, 1e12]   # training FLOPs, under `convention`
convention = "exact"
seeds = [0]
lr_multipliers = [1.0]         # x the recipe's learning rate: [0.5, 1, 2] runs each cell three times
branches = false               # with [recipe] schedule = "wsd": one trunk per (size, seed), a cool-down per budget
tasks = ["in_hospital_mortality"]
probe_train_rows = 10000       # the probe learns from a seeded sample of this many training rows (0: all)
dtype = "float32"              # default: bfloat16 when [resources] asks for gpus or tpus, else float32

[sizes]                        # per budget: `count` widths spanning `span`x in non-embedding
count = 5                      # parameters around the recipe's guess ...
span = 30.0
# widths = [16, 24, 32, 48]    # ... or explicit widths
refine = 0                     # up to this many sizes added per budget until its best run is bracketed
bracket = 3.0                  # ... by a size on each side within this factor in parameters
[[sizes.extra]]                # widths added at some budgets, taken as given (below the recipe's smallest
budgets = [1e11]               # size too): the small side Approach 3 needs to see the size term
widths = [8, 12]

[recipe]                       # any field of scaling.recipe.Recipe
[train]                        # cadence of logs, evaluations, checkpoints (scaling.runspec.TrainSettings)
[tracking]                     # backends = ["tensorboard", "wandb"]: each run's curves (docs/tracking.md)
[resources]                    # per run: cpus, gpus, tpus (chips), accelerator_type
[retries]                      # preemptions (worker lost) and failures (an error), counted apart
[eval]                         # zero_shot = { futures = 16, runs = "frontier" }: futures (docs/evaluation.md)
```

Nothing in a spec executes. Every message names the file and the key.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from scaling.recipe import Recipe
from scaling.runspec import (
    PROBE_TRAIN_ROWS,
    Evaluation,
    SpecError,
    Tracking,
    TrainSettings,
    canonical_tasks,
    check_common,
    check_eval,
    check_table,
    read_toml,
    type_name,
    type_ok,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Sizes:
    """Model sizes per budget: `count` widths over `span`x parameters around the guess, or explicit widths."""

    count: int = 5
    span: float = 30.0
    widths: tuple[int, ...] = ()
    refine: int = 0  # at most this many sizes added per budget to bracket its best run (scaling/sweep/refine.py)
    bracket: float = 3.0  # bracketed: the best run has a size on each side within this factor in parameters
    extra: tuple["ExtraSizes", ...] = ()  # widths added at some budgets ([[sizes.extra]])

    def extra_widths(self, budget: float) -> tuple[int, ...]:
        """The widths [[sizes.extra]] adds at this budget."""
        return tuple(sorted({w for e in self.extra if budget in e.budgets for w in e.widths}))


@dataclass(frozen=True)
class ExtraSizes:
    """Widths added at some budgets beyond the automatic choice, taken as given (the recipe's smallest size does not
    apply): e.g. sizes below each small budget's minimum, which Approach 3 needs to measure the size term."""

    budgets: tuple[float, ...]
    widths: tuple[int, ...]


GPU_SHARE_USABLE = 0.9  # of a run's GPU share (gpus below 1) that its XLA allocator may use (driver.worker_env)


@dataclass(frozen=True)
class Resources:
    """What one run asks of the cluster; never part of a run's fingerprint."""

    cpus: float = 1.0
    gpus: float = 0.0
    tpus: int = 0  # TPU chips on one host
    accelerator_type: str = ""  # e.g. "A100", "H100", "TPU-V5LITEPOD" (Ray's accelerator_type)

    @property
    def shares_gpu(self) -> bool:
        return 0 < self.gpus < 1


@dataclass(frozen=True)
class Retries:
    """How often a run is tried again: after a lost worker (preemption) and after an error (failure)."""

    preemptions: int = 5
    failures: int = 1


@dataclass(frozen=True)
class SweepSpec:
    name: str
    version: str
    family: str
    data: str
    budgets: tuple[float, ...]
    runs_root: str = "runs"
    convention: str = "exact"
    seeds: tuple[int, ...] = (0,)
    lr_multipliers: tuple[float, ...] = (1.0,)
    branches: bool = False  # WSD trunks and cool-down branches (scaling/sweep/plan.py)
    tasks: tuple[str, ...] = ()
    probe_train_rows: int = PROBE_TRAIN_ROWS
    dtype: str = "float32"
    sizes: Sizes = field(default_factory=Sizes)
    recipe: Recipe = field(default_factory=Recipe)
    train: TrainSettings = field(default_factory=TrainSettings)
    tracking: Tracking = field(default_factory=Tracking)  # each run's tracker runs, grouped "<name>/v<version>"
    resources: Resources = field(default_factory=Resources)
    retries: Retries = field(default_factory=Retries)
    eval: Evaluation = field(default_factory=Evaluation)  # zero-shot: every run, or the frontier
    # [fit] window: how `ehrscale fit` (and plot, report, optimal) fits this sweep's table when no --window is given:
    # each IsoFLOP parabola on the runs within this factor of its budget's best run's N (None: the analysis's 10x).
    # Not in result_fields: it changes no run.
    fit_window: float | None = None
    source: str = ""  # the file it came from, for messages

    def folder(self, runs_root: str | Path | None = None) -> Path:
        return Path(runs_root or self.runs_root) / self.name / self.version

    def result_fields(self) -> dict:
        """What decides the sweep's runs (a change under the same name and version is refused)."""
        sizes = dataclasses.asdict(self.sizes)
        fields = {
            "family": self.family,
            "data": self.data,
            "budgets": list(self.budgets),
            "convention": self.convention,
            "seeds": list(self.seeds),
            "dtype": self.dtype,
            "sizes": _plain(
                {k: v for k, v in sizes.items() if k not in ("refine", "bracket", "extra")}
                | ({"refine": self.sizes.refine, "bracket": self.sizes.bracket} if self.sizes.refine else {})
                | ({"extra": sizes["extra"]} if self.sizes.extra else {})
            ),
            "recipe": _plain(self.recipe.fingerprint_fields()),
        }
        if self.lr_multipliers != (1.0,):  # absent before the lr axis: a sweep.json from then still matches
            fields["lr_multipliers"] = list(self.lr_multipliers)
        if self.branches:
            fields["branches"] = True
        return fields


def _plain(value):
    """Tuples as lists, as JSON stores them, so a stored record compares equal to a fresh one."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_TOP = {
    "name": str,
    "version": (int, str),
    "family": str,
    "data": str,
    "budgets": list,
    "runs_root": str,
    "convention": str,
    "seeds": list,
    "lr_multipliers": list,
    "branches": bool,
    "tasks": list,
    "probe_train_rows": int,
    "dtype": str,
}
_TABLES = ("sizes", "recipe", "train", "tracking", "resources", "retries", "fit", "eval")
_REQUIRED = ("name", "version", "family", "data", "budgets")


def parse_sweep(source: dict, where: str) -> SweepSpec:
    """A validated SweepSpec from parsed TOML; `where` names the file in messages."""
    unknown = sorted(set(source) - set(_TOP) - set(_TABLES))
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_TOP))}, {', '.join(f'[{t}]' for t in _TABLES)})"
        )
    for key in _REQUIRED:
        if key not in source:
            raise SpecError(f"{where}: missing key '{key}'")
    for key, kind in _TOP.items():
        if key in source and not type_ok(source[key], kind):
            raise SpecError(f"{where}: '{key}' must be {type_name(kind)}, got {source[key]!r}")
    name, version = source["name"], str(source["version"])
    for key, value in (("name", name), ("version", version)):
        if not NAME.match(value):
            raise SpecError(
                f"{where}: '{key}' must be letters, digits, '_', '-' or '.' (it names a folder), got {value!r}"
            )
    budgets = source["budgets"]
    if not budgets or not all(type_ok(b, float) and math.isfinite(b) and b > 0 for b in budgets):
        raise SpecError(f"{where}: 'budgets' must be a non-empty list of positive FLOP counts, got {budgets!r}")
    if len(set(budgets)) != len(budgets):
        raise SpecError(f"{where}: 'budgets' repeats a budget: {budgets!r}")
    seeds = source.get("seeds", [0])
    if not seeds or not all(type_ok(s, int) and s >= 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: 'seeds' must be a non-empty list of distinct non-negative integers, got {seeds!r}")
    recipe, train, tracking = check_common(source, where)
    multipliers = source.get("lr_multipliers", [1.0])
    if (
        not multipliers
        or not all(type_ok(m, float) and math.isfinite(m) and m > 0 for m in multipliers)
        or len(set(multipliers)) != len(multipliers)
    ):
        raise SpecError(
            f"{where}: 'lr_multipliers' must be a non-empty list of distinct positive numbers, got {multipliers!r}"
        )
    if "lr_multipliers" in source and recipe.lr_multiplier != 1.0:
        raise SpecError(f"{where}: set 'lr_multipliers' or [recipe] 'lr_multiplier', not both")
    if source.get("branches", False) and recipe.schedule != "wsd":
        raise SpecError(
            f"{where}: 'branches = true' needs [recipe] schedule = \"wsd\" (cool-downs branch from a constant "
            f"learning rate), got schedule {recipe.schedule!r}"
        )
    sizes = check_table(
        where,
        "sizes",
        source.get("sizes", {}),
        {"count": int, "span": float, "widths": list, "refine": int, "bracket": float, "extra": list},
        lambda k, v: _size_problem(k, v),
    )
    if "widths" in sizes and ({"count", "span"} & set(sizes)):
        raise SpecError(f"{where}: [sizes] takes either 'widths' or 'count' and 'span', not both")
    sizes["extra"] = [_parse_extra_sizes(where, i, entry, budgets) for i, entry in enumerate(sizes.get("extra", []))]
    resources = check_table(
        where,
        "resources",
        source.get("resources", {}),
        {"cpus": float, "gpus": float, "tpus": int, "accelerator_type": str, "hosts": int},
        _resource_problem,
    )
    retries = check_table(
        where,
        "retries",
        source.get("retries", {}),
        {"preemptions": int, "failures": int},
        lambda k, v: "must be 0 or more" if v < 0 else None,
    )
    resources.pop("hosts", None)  # 1, checked above
    fit = check_table(
        where,
        "fit",
        source.get("fit", {}),
        {"window": float},
        lambda k, v: None if math.isfinite(v) and v > 1 else "must be a factor above 1 in parameters",
    )
    return SweepSpec(
        name=name,
        version=version,
        family=source["family"],
        data=source["data"],
        budgets=tuple(float(b) for b in budgets),
        runs_root=source.get("runs_root", "runs"),
        convention=source.get("convention", "exact"),
        seeds=tuple(seeds),
        lr_multipliers=tuple(float(m) for m in multipliers),
        branches=source.get("branches", False),
        tasks=canonical_tasks(source.get("tasks", [])),
        probe_train_rows=source.get("probe_train_rows", PROBE_TRAIN_ROWS),
        dtype=source.get("dtype", default_dtype(Resources(**resources))),
        sizes=Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()}),
        recipe=recipe,
        train=train,
        tracking=tracking,
        resources=Resources(**resources),
        retries=Retries(**retries),
        fit_window=float(fit["window"]) if "window" in fit else None,
        eval=check_eval(source, where),
        source=where,
    )


def _parse_extra_sizes(where: str, index: int, entry, budgets: list) -> ExtraSizes:
    """One [[sizes.extra]] table: budgets of the sweep, distinct positive widths."""
    name = f"{where}: [[sizes.extra]] number {index + 1}"
    if not isinstance(entry, dict) or set(entry) != {"budgets", "widths"}:
        raise SpecError(f"{name} must have exactly the keys 'budgets' and 'widths', got {entry!r}")
    widths, chosen = entry["widths"], entry["budgets"]
    if not isinstance(widths, list) or _size_problem("widths", widths):
        raise SpecError(f"{name}: 'widths' must be a non-empty list of distinct positive integers, got {widths!r}")
    sweep_budgets = {float(b) for b in budgets}
    if not isinstance(chosen, list) or not chosen or not all(type_ok(b, float) for b in chosen):
        raise SpecError(f"{name}: 'budgets' must be a non-empty list of the sweep's budgets, got {chosen!r}")
    missing = [b for b in chosen if float(b) not in sweep_budgets]
    if missing:
        raise SpecError(
            f"{name}: 'budgets' {missing} are not budgets of the sweep "
            f"({', '.join(f'{b:g}' for b in sorted(sweep_budgets))})"
        )
    return ExtraSizes(budgets=tuple(float(b) for b in chosen), widths=tuple(widths))


def _size_problem(key: str, value) -> str | None:
    if key == "count" and value < 1:
        return "must be 1 or more"
    if key == "span" and not (math.isfinite(value) and value >= 1):
        return "must be a ratio of 1 or more"
    if key == "refine" and value < 0:
        return "must be 0 (off) or more"
    if key == "bracket" and not (math.isfinite(value) and value > 1):
        return "must be a ratio above 1"
    if key == "widths" and (
        not value or not all(type_ok(w, int) and w > 0 for w in value) or len(set(value)) != len(value)
    ):
        return "must be a non-empty list of distinct positive integers"
    return None


def _resource_problem(key: str, value) -> str | None:
    if key in ("cpus", "gpus", "tpus") and (value < 0 or not math.isfinite(value)):
        return "must be 0 or more"
    if key == "cpus" and value == 0:
        return "must be more than 0"
    if key == "gpus" and value > 1 and value != int(value):
        return "must be a fraction below 1 (runs sharing a GPU) or a whole number"
    if key == "hosts" and value != 1:
        return "must be 1: a run spans one host (multi-host TPU slices are not supported yet)"
    return None


def default_dtype(resources: Resources) -> str:
    """A sweep's compute dtype when its spec names none: bfloat16 on GPUs and TPUs (float32 master weights and
    optimizer state, float32 softmax and norms: scaling/models/transformer.py), float32 on CPUs, where bfloat16
    matmuls are no faster."""
    return "bfloat16" if resources.gpus or resources.tpus else "float32"


def load_sweep(path: Path) -> SweepSpec:
    return parse_sweep(read_toml(path, "sweep spec"), str(path))
