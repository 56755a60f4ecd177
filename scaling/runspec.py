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
```

The fingerprint hashes what changes the result (family, shape, data, tokens, optimiser, seed,
dtype); not the cadence of logs, evaluations and checkpoints, nor resources.
"""

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from scaling.data.tasks import TASKS
from scaling.flops import CONVENTIONS
from scaling.recipe import FAMILIES, Recipe, override


# The linear probe learns from at most this many training-split cohort rows (the same seeded sample
# for every run on a dataset). Embedding the whole cohort costs a forward pass per row, as much as
# a small run's training; the probe's AUROC is scored on the whole held-out split either way.
PROBE_TRAIN_ROWS = 10_000


class SpecError(Exception):
    """A run spec with an unknown key or a bad value; the message names the file and the key."""


@dataclass(frozen=True)
class TrainSettings:
    """Cadence of logs, evaluations and checkpoints (does not change the result)."""

    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10


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
    recipe: Recipe = field(default_factory=Recipe)
    train: TrainSettings = field(default_factory=TrainSettings)

    def result_fields(self, data_hash: str) -> dict:
        """What the fingerprint covers."""
        return {
            "family": self.family,
            "width": self.width,
            "tokens": self.tokens,
            "seed": self.seed,
            "dtype": self.dtype,
            "convention": self.convention,
            "data": data_hash,
            "recipe": dataclasses.asdict(self.recipe),
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
}


def parse_spec(source: dict, where: str) -> RunSpec:
    """A validated RunSpec from parsed TOML; `where` names the file in messages."""
    unknown = sorted(set(source) - set(_TOP) - {"recipe", "train"})
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP))}, [recipe], [train])"
        )
    for key in ("name", "data", "width", "tokens"):
        if key not in source:
            raise SpecError(f"{where}: missing key '{key}'")
    for key, kind in _TOP.items():
        if key in source and (not isinstance(source[key], kind) or isinstance(source[key], bool)):
            raise SpecError(f"{where}: '{key}' must be {kind.__name__}, got {source[key]!r}")
    if source.get("family", "timeline") not in FAMILIES:
        raise SpecError(f"{where}: 'family' must be one of {', '.join(FAMILIES)}, got {source['family']!r}")
    if source.get("convention", "exact") not in CONVENTIONS:
        raise SpecError(f"{where}: 'convention' must be one of {', '.join(CONVENTIONS)}, got {source['convention']!r}")
    if source.get("dtype", "float32") not in ("float32", "bfloat16"):
        raise SpecError(f"{where}: 'dtype' must be float32 or bfloat16, got {source['dtype']!r}")
    for key in ("width", "tokens"):
        if source[key] < 1:
            raise SpecError(f"{where}: '{key}' must be positive, got {source[key]}")
    if source.get("probe_train_rows", 0) < 0:
        raise SpecError(f"{where}: 'probe_train_rows' must be 0 (all) or more, got {source['probe_train_rows']}")
    try:
        recipe = override(Recipe(family=source.get("family", "timeline")), source.get("recipe", {}))
    except (ValueError, TypeError) as error:
        raise SpecError(f"{where}: [recipe]: {error}") from error
    train_fields = {f.name for f in dataclasses.fields(TrainSettings)}
    bad = sorted(set(source.get("train", {})) - train_fields)
    if bad:
        raise SpecError(f"{where}: [train]: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(train_fields))})")
    for key, value in source.get("train", {}).items():
        if not isinstance(value, int) or value < 1:
            raise SpecError(f"{where}: [train] '{key}' must be a positive integer, got {value!r}")
    unknown_tasks = sorted(set(source.get("tasks", [])) - set(TASKS))
    if unknown_tasks:
        raise SpecError(f"{where}: unknown task(s) {', '.join(unknown_tasks)} (tasks: {', '.join(TASKS)})")
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in source.items() if k in _TOP}
    return RunSpec(**top, recipe=recipe, train=TrainSettings(**source.get("train", {})))


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
