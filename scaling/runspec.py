"""A run's spec: the TOML a user writes, validated, resolved and fingerprinted.

```toml
name = "timeline-w32"
data = "out/demo/prep"        # a prepared dataset
family = "timeline"           # timeline | labrador | bert
width = 32
tokens = 200_000              # planned training tokens (whole steps; the schedule ends there)
seed = 0
tasks = ["in_hospital_mortality"]  # evaluated when the run ends (docs/evaluation.md)
convention = "exact"          # FLOP convention recorded with the run
dtype = "float32"             # compute dtype; "bfloat16" keeps float32 master weights (GPU/TPU)

[recipe]                      # any field of scaling.recipe.Recipe
context = 64

[train]
eval_every = 50
eval_batches = 8
checkpoint_every = 50
keep_checkpoints = 2
log_every = 10
attention = "auto"            # auto | xla | reference | cudnn | splash (scaling/models/attention.py)
microbatch_rows = 0           # rows per forward/backward pass; 0: the batch, or what fits an accelerator's memory

[tracking]                    # curves beside metrics.jsonl (docs/tracking.md)
backends = ["tensorboard"]    # tensorboard | wandb
```

The fingerprint hashes what changes the result (family, shape, data, tokens, optimiser, seed,
dtype); not the cadence of logs, evaluations and checkpoints, nor trackers, nor resources.
"""

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scaling.data.labels import check_name
from scaling.data.tasks import ALIASES
from scaling.eval.zero_shot_rules import RuleError, Settings
from scaling.families import FAMILIES
from scaling.flops import CONVENTIONS
from scaling.models.shapes import ATTENTION_IMPLEMENTATIONS
from scaling.recipe import Recipe, override

# The linear probe learns from at most this many training-split cohort rows (the same seeded sample
# for every run on a dataset). Embedding the whole cohort costs a forward pass per row, as much as
# a small run's training; the probe's AUROC is scored on the whole held-out split either way.
PROBE_TRAIN_ROWS = 10_000


class SpecError(Exception):
    """A run spec with an unknown key or a bad value; the message names the file and the key."""


@dataclass(frozen=True)
class TrainSettings:
    """How a run is carried out, not what it computes (none changes the result beyond float rounding): the cadence
    of logs, evaluations and checkpoints, the attention implementation, the rows of one forward/backward pass."""

    eval_every: int = 100
    eval_batches: int = 8  # rows / 16 of the curve's evaluations every eval_every steps
    eval_rows: int = 1024  # rows (sequences or bags) of the final evaluation: the loss the fits use
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    attention: str = "auto"  # of ATTENTION_IMPLEMENTATIONS (scaling/models/attention.py)
    # Rows of one forward/backward pass; the step accumulates the gradients of batch_rows / microbatch_rows of them.
    # 0: the whole batch on a CPU; on a GPU or TPU the most rows whose step fits the device's memory (train.py).
    microbatch_rows: int = 0


TRACKERS = ("tensorboard", "wandb")
WANDB_MODES = ("offline", "online")


@dataclass(frozen=True)
class Tracking:
    """Where a run's curves go besides its metrics.jsonl, which is always written (does not change the result)."""

    backends: tuple[str, ...] = ()  # of TRACKERS: TensorBoard event files in the run folder, a W&B run
    project: str = "ehrscale"  # the W&B project
    wandb_mode: str = "offline"  # offline: a run folder to `wandb sync` later, no network; online: needs a login
    group: str = ""  # the tracker's group; a sweep's runs get "<sweep name>/v<version>"


@dataclass(frozen=True)
class Branch:
    """Where a WSD branch starts: the state of the trunk run `trunk` (a sibling folder) at `step`, its decay's start.

    `trunk_share_steps` is the part of the trunk's steps this branch is charged with: each stretch of the trunk is
    shared equally by the branches that start after it, so the branches' shares add up to the trunk."""

    trunk: str
    step: int
    trunk_share_steps: float


@dataclass(frozen=True)
class Evaluation:
    """[eval]: how a run is evaluated beyond the probe; not fingerprinted (it changes no weight)."""

    zero_shot: Settings | None = None  # the timeline decoder's futures on the tasks (docs/evaluation.md)

    @property
    def at_run_end(self) -> bool:
        """Whether the run generates its futures when it ends (with runs = "frontier" its sweep chooses)."""
        return self.zero_shot is not None and self.zero_shot.runs == "every"


def check_eval(source: dict, where: str) -> Evaluation:
    """The [eval] table: `zero_shot = { futures = 16, ... }` (any field of Settings), for the timeline family only."""
    table = source.get("eval", {})
    if not isinstance(table, dict) or set(table) - {"zero_shot"}:
        raise SpecError(f"{where}: [eval] takes one key, zero_shot = {{ futures = 16, ... }}; got {table!r}")
    zero_shot = table.get("zero_shot")
    if zero_shot is None:
        return Evaluation()
    if source.get("family", "timeline") != "timeline":
        raise SpecError(f"{where}: [eval] zero_shot: only the timeline decoder generates futures")
    kinds = {f.name: f.type for f in dataclasses.fields(Settings)}
    unknown = sorted(set(zero_shot) - set(kinds)) if isinstance(zero_shot, dict) else ["(not a table)"]
    if unknown:
        raise SpecError(f"{where}: [eval] zero_shot: unknown key(s) {', '.join(unknown)} (known: {', '.join(kinds)})")
    try:
        return Evaluation(Settings(**zero_shot))
    except (RuleError, TypeError) as error:
        raise SpecError(f"{where}: [eval] zero_shot: {error}") from None


@dataclass(frozen=True)
class RunSpec:
    name: str
    data: str
    width: int
    tokens: int
    family: str = "timeline"
    seed: int = 0
    convention: str = "exact"
    dtype: str = "float32"
    tasks: tuple[str, ...] = ()  # downstream tasks evaluated when the run ends
    probe_train_rows: int = PROBE_TRAIN_ROWS  # the probe's training rows, a seeded sample (0: all); not fingerprinted
    budget: float | None = None  # the FLOP budget a sweep planned this run for (recorded, not fingerprinted)
    # WSD branches (scaling/sweep/plan.py), not fingerprinted: a branch ends where a run from scratch would.
    branch: Branch | None = None  # start from a trunk's state instead of step 0
    branch_points: tuple[int, ...] = ()  # a trunk's: the steps whose state it keeps for its branches
    recipe: Recipe = field(default_factory=Recipe)
    train: TrainSettings = field(default_factory=TrainSettings)
    tracking: Tracking = field(default_factory=Tracking)
    eval: Evaluation = field(default_factory=Evaluation)

    def steps_spent(self, steps: int) -> float:
        """The steps of a run of `steps` steps that its compute pays for: all of them; a branch's own plus its share
        of its trunk's; none of a trunk's (its branches carry them, so a sweep's compute is the sum over its runs)."""
        if self.branch_points:
            return 0.0
        if self.branch is not None:
            return steps - self.branch.step + self.branch.trunk_share_steps
        return float(steps)

    def result_fields(self, data_hash: str) -> dict:
        """What the fingerprint covers (the family's model revision from 2 on: runs of revision 1 keep theirs)."""
        revision = FAMILIES[self.family].revision
        return ({"model_revision": revision} if revision > 1 else {}) | {
            "family": self.family,
            "width": self.width,
            "tokens": self.tokens,
            "seed": self.seed,
            "dtype": self.dtype,
            "convention": self.convention,
            "data": data_hash,
            "recipe": self.recipe.fingerprint_fields(),
        }

    def fingerprint(self, data_hash: str) -> str:
        text = json.dumps(self.result_fields(data_hash), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TOP = {
    "name": str,
    "data": str,
    "width": int,
    "tokens": int,
    "family": str,
    "seed": int,
    "convention": str,
    "dtype": str,
    "tasks": list,
    "probe_train_rows": int,
    "budget": float,
    "branch": dict,
    "branch_points": list,
}
_REQUIRED = ("name", "data", "width", "tokens")
DTYPES = ("float32", "bfloat16")


def type_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def type_ok(value, kind) -> bool:
    """TOML's types: a bool is not an int, an int is a float."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def check_table(where: str, table: str, values, kinds: dict, check) -> dict:
    """A [table] of scalars: a table, known keys, right types, values that pass `check`."""
    if not isinstance(values, dict):
        raise SpecError(f"{where}: '{table}' must be a table ([{table}]), got {values!r}")
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise SpecError(f"{where}: [{table}]: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(kinds))})")
    for key, value in values.items():
        if not type_ok(value, kinds[key]):
            raise SpecError(f"{where}: [{table}] '{key}' must be {type_name(kinds[key])}, got {value!r}")
        problem = check(key, value)
        if problem:
            raise SpecError(f"{where}: [{table}] '{key}' {problem}, got {value!r}")
    return values


def recipe_kinds() -> dict:
    """The TOML type of each [recipe] field, from the Recipe dataclass's defaults."""
    kinds = {}
    for f in dataclasses.fields(Recipe):
        if f.name == "family":  # the spec's own top-level key
            continue
        default = getattr(Recipe(), f.name)
        kinds[f.name] = list if isinstance(default, tuple) else (float if isinstance(default, float) else type(default))
    return kinds


def canonical_tasks(tasks) -> tuple[str, ...]:
    """Task names with MEDS-DEV aliases of built-in tasks replaced by the built-in name (what eval.json keys)."""
    return tuple(ALIASES.get(t, t) for t in tasks)


def check_tracking(where: str, values) -> Tracking:
    """The [tracking] table: known backends, W&B's mode."""

    def check(key, value):
        if key == "backends" and not all(b in TRACKERS for b in value):
            return f"must list backends among {', '.join(TRACKERS)} (metrics.jsonl is always written)"
        if key == "wandb_mode" and value not in WANDB_MODES:
            return f"must be {' or '.join(WANDB_MODES)}"
        return None

    kinds = {"backends": list, "project": str, "wandb_mode": str, "group": str}
    values = check_table(where, "tracking", values, kinds, check)
    return Tracking(**{k: tuple(dict.fromkeys(v)) if k == "backends" else v for k, v in values.items()})


def _check_train(key: str, value) -> str | None:
    if key == "attention":
        return None if value in ATTENTION_IMPLEMENTATIONS else f"must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}"
    if key == "microbatch_rows":
        return "must be 0 (chosen from memory) or a positive integer" if value < 0 else None
    return "must be a positive integer" if value < 1 else None


def check_common(source: dict, where: str) -> tuple[Recipe, TrainSettings, Tracking]:
    """What run and sweep specs share, checked one way for both: family, convention, dtype, tasks, probe rows,
    and the [recipe], [train] and [tracking] tables."""
    if source.get("family", "timeline") not in FAMILIES:
        raise SpecError(f"{where}: 'family' must be one of {', '.join(FAMILIES)}, got {source['family']!r}")
    if source.get("convention", "exact") not in CONVENTIONS:
        raise SpecError(f"{where}: 'convention' must be one of {', '.join(CONVENTIONS)}, got {source['convention']!r}")
    if source.get("dtype", "float32") not in DTYPES:
        raise SpecError(f"{where}: 'dtype' must be {' or '.join(DTYPES)}, got {source['dtype']!r}")
    tasks = source.get("tasks", [])
    if not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"{where}: 'tasks' must be a list of task names, got {tasks!r}")
    for task in tasks:  # whether the dataset has it is checked when the dataset is opened
        reason = check_name(task)
        if reason:
            raise SpecError(f"{where}: 'tasks': {reason}")
    if source.get("probe_train_rows", 0) < 0:
        raise SpecError(f"{where}: 'probe_train_rows' must be 0 (all) or more, got {source['probe_train_rows']!r}")
    train = check_table(
        where,
        "train",
        source.get("train", {}),
        {f.name: type(f.default) for f in dataclasses.fields(TrainSettings)},
        _check_train,
    )
    try:
        recipe = override(
            Recipe(family=source.get("family", "timeline")),
            check_table(where, "recipe", source.get("recipe", {}), recipe_kinds(), lambda k, v: None),
        )
    except (ValueError, TypeError) as error:
        raise SpecError(f"{where}: [recipe]: {error}") from error
    micro = train.get("microbatch_rows", 0)
    if micro and (micro > recipe.batch_rows or recipe.batch_rows % micro):
        raise SpecError(
            f"{where}: [train] 'microbatch_rows' must divide [recipe] batch_rows ({recipe.batch_rows}), got {micro}"
        )
    return recipe, TrainSettings(**train), check_tracking(where, source.get("tracking", {}))


def parse_spec(source: dict, where: str) -> RunSpec:
    """A validated RunSpec from parsed TOML (or a run folder's spec.json); `where` names the file in messages."""
    unknown = sorted(set(source) - set(_TOP) - {"recipe", "train", "tracking", "eval"})
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_TOP))}, [recipe], [train], [tracking], [eval])"
        )
    for key in _REQUIRED:
        if key not in source:
            raise SpecError(f"{where}: missing key '{key}'")
    for key, kind in _TOP.items():
        if key in source and source[key] is not None and not type_ok(source[key], kind):
            raise SpecError(f"{where}: '{key}' must be {type_name(kind)}, got {source[key]!r}")
    for key in ("width", "tokens"):
        if source[key] < 1:
            raise SpecError(f"{where}: '{key}' must be positive, got {source[key]}")
    if source.get("budget") is not None and not source["budget"] > 0:
        raise SpecError(f"{where}: 'budget' must be a positive FLOP count, got {source['budget']!r}")
    recipe = source.get("recipe", {})
    if isinstance(recipe, dict) and recipe.get("family") == source.get("family", "timeline"):  # as spec.json stores it
        source = {**source, "recipe": {k: v for k, v in recipe.items() if k != "family"}}
    recipe, train, tracking = check_common(source, where)
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in source.items() if k in _TOP}
    if top.get("budget") is not None:
        top["budget"] = float(top["budget"])
    if "tasks" in top:
        top["tasks"] = canonical_tasks(top["tasks"])
    if top.get("branch") is not None:
        try:
            top["branch"] = Branch(**top["branch"])
        except TypeError as error:
            raise SpecError(f"{where}: 'branch' must have trunk, step and trunk_share_steps: {error}") from None
    return RunSpec(**top, recipe=recipe, train=train, tracking=tracking, eval=check_eval(source, where))


def read_toml(path: Path, kind: str = "spec") -> dict:
    """A TOML file parsed, or a SpecError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: a folder, not a {kind} (.toml)") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None


def load_spec(path: Path) -> RunSpec:
    return parse_spec(read_toml(path, "run spec"), str(path))
