"""`ehrscale next-grid TABLE --budget C --write-spec NEW.toml`: the next budget as a sweep you can run.

The sizes the analysis asks for (geometric around the predicted N*) become widths of the sweep's own
recipe: for each, the width whose parameter count (the one the fits used) is nearest, among those
that spend the new budget in whole steps under the sweep's FLOP convention (`scaling.recipe.candidates`).
What the sweep was comes from the spec it was run from (`--from-spec`), else from the records beside
the table (sweep.json and plan.json, written by `sweep run`), so no prepared dataset is needed then.
"""

import dataclasses
import json
import math
import tomllib
from pathlib import Path

from scaling.data.atomic import write_text
from scaling.recipe import Candidate, Recipe, candidates, override
from scaling.runspec import SpecError
from scaling.sweep.plan import budget_tag
from scaling.sweep.spec import load_sweep, parse_sweep
from scaling.sweep.state import PLAN_RECORD, SWEEP_RECORD, read_plan_record, read_sweep_record


class NextGridError(Exception):
    """A next grid that cannot be written; the message says what is missing."""


def _source(table: Path, from_spec: Path | None) -> tuple[dict, Recipe, int, int]:
    """(spec fields to carry over, recipe, vocabulary size, context) of the sweep the table came from."""
    if from_spec is not None:
        try:
            sweep = load_sweep(from_spec)
        except SpecError as error:
            raise NextGridError(str(error)) from None
        from scaling.data.dataset import DatasetError, PreparedDataset
        from scaling.families import FAMILIES

        try:
            inputs = FAMILIES[sweep.family].inputs(
                PreparedDataset.open(sweep.data), sweep.recipe.context, sweep.recipe.bags_per_row
            )
        except DatasetError as error:
            raise NextGridError(f"{from_spec}: its dataset is needed for the vocabulary: {error}") from None
        fields = {
            "name": sweep.name,
            "family": sweep.family,
            "data": sweep.data,
            "runs_root": sweep.runs_root,
            "convention": sweep.convention,
            "seeds": list(sweep.seeds),
            "tasks": list(sweep.tasks),
            "dtype": sweep.dtype,
            "probe_train_rows": sweep.probe_train_rows,
            "train": dataclasses.asdict(sweep.train),
            "resources": dataclasses.asdict(sweep.resources),
            "eval": eval_table(sweep.eval),
        }
        return fields, sweep.recipe, inputs.vocab_size, inputs.context
    folder = Path(table).resolve().parent
    sweep, planned = read_sweep_record(folder), read_plan_record(folder)
    if not (sweep and planned):
        raise NextGridError(
            f"{folder} has no {SWEEP_RECORD} and {PLAN_RECORD} (a sweep's runs.parquet has them beside it): "
            "pass the sweep spec the table came from with --from-spec"
        )
    recipe = override(Recipe(family=sweep["family"]), sweep["recipe"])
    fields = {
        "name": sweep["name"],
        "family": sweep["family"],
        "data": sweep["data"],
        "runs_root": str(folder.parent.parent),
        "convention": sweep["convention"],
        "seeds": sweep["seeds"],
        "tasks": planned.get("tasks", []),
        "dtype": sweep["dtype"],
    }
    return fields, recipe, planned["vocab_size"], planned["context"]


def choose_widths(accepted: list[Candidate], targets: list[float], params_from: str) -> list[Candidate]:
    """For each target size, the nearest accepted width (in log parameters) not taken yet."""
    count = (lambda c: c.params_nonembed) if params_from == "params_nonembed" else (lambda c: c.params)
    chosen: dict[int, Candidate] = {}
    for target in targets:
        free = [c for c in accepted if c.width not in chosen]
        if free:
            best = min(free, key=lambda c: abs(math.log(count(c) / target)))
            chosen[best.width] = best
    return sorted(chosen.values(), key=lambda c: c.width)


def eval_table(evaluation) -> dict:
    """A sweep's [eval] as TOML values: zero_shot's settings that are set, as an inline table."""
    if evaluation.zero_shot is None:
        return {}
    return {"zero_shot": {k: v for k, v in dataclasses.asdict(evaluation.zero_shot).items() if v is not None}}


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)


def render_spec(fields: dict, recipe: Recipe, budget: float, chosen: list[Candidate], source: str) -> str:
    """The sweep spec as TOML: one budget, explicit widths, the recipe fields that differ from its defaults."""
    defaults = Recipe(family=recipe.family)
    changed = {
        f.name: getattr(recipe, f.name)
        for f in dataclasses.fields(Recipe)
        if f.name != "family" and getattr(recipe, f.name) != getattr(defaults, f.name)
    }
    name = f"{fields['name']}-next-{budget_tag(budget)}"
    top = {
        "name": name,
        "version": 1,
        **{k: v for k, v in fields.items() if k not in ("name", "train", "resources", "eval")},
        "budgets": [float(budget)],
    }
    lines = [
        f"# Written by `ehrscale next-grid` from {source}: the budget {budget:.4g} FLOPs with widths around",
        "# the predicted optimum; `ehrscale sweep plan` shows each run's exact FLOPs.",
        "",
    ]
    lines += [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    tables = {
        "sizes": {"widths": [c.width for c in chosen]},
        "recipe": changed,
        "train": fields.get("train", {}),
        "resources": fields.get("resources", {}),
        "eval": fields.get("eval", {}),
    }
    for table, values in tables.items():
        if values:
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_next_sweep(
    table: Path, budget: float, targets: list[float], params_from: str, out: Path, from_spec: Path | None = None
) -> tuple[str, list[Candidate]]:
    """Write the sweep spec for `budget` to `out`; return its text and the runs it makes."""
    fields, recipe, vocab_size, context = _source(table, from_spec)
    sized = dataclasses.replace(recipe, context=context)
    accepted, rejected = candidates(sized, budget, vocab_size, fields["convention"])
    if not accepted:
        reasons = "; ".join(f"width {r.width}: {r.reason}" for r in rejected[:4])
        raise NextGridError(f"no width of the recipe spends {budget:.3g} FLOPs ({reasons})")
    chosen = choose_widths(accepted, targets, params_from)
    text = render_spec(fields, recipe, budget, chosen, str(from_spec or table))
    try:
        parse_sweep(tomllib.loads(text), str(out))  # what we write must load as it is
    except SpecError as error:
        raise NextGridError(f"the spec written would not load: {error}") from None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text(Path(out), text)
    return text, chosen
