"""`ehrscale export RUN_DIR --out DIR`: a trained model as files other tools read, with its model card; and back.

DIR holds:
- `model.safetensors`: every weight as float32, named by its path in the model ("blocks.wq", "embedding", ...);
- `config.json`: the export format, the family, the model's configuration (what rebuilds it), parameter counts and
  the training run's facts (budget, tokens, loss);
- `tokenizer/`: what turns data into the model's input, copied from the prepared dataset: for timelines the
  vocabulary (MEDS codes and their token ids), the value deciles per code and the tokenizer settings; for lab bags
  the lab items, their eCDFs (each item's train values and cumulative shares) and the bag settings;
- `README.md`: the model card: the model, the data it saw (counts only), the input it expects, the training budget,
  loss and downstream AUROC with intervals, and the data-use terms of its source.

`load_exported(DIR)` (or `ehrscale export --load DIR`) rebuilds the nnx model from DIR alone.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from scaling.data.atomic import write_json
from scaling.data.dataset import PreparedDataset
from scaling.families import FAMILIES
from scaling.models.shapes import DecoderConfig, EncoderConfig
from scaling.record import EvalRecord, ResultRecord, RunError, RunFolder
from scaling.training.checkpoints import restore_model

EXPORT_FORMAT = "ehrscale-export/1"
WEIGHTS, CONFIG, CARD, TOKENIZER = "model.safetensors", "config.json", "README.md", "tokenizer"
CONFIG_CLASSES = {"DecoderConfig": DecoderConfig, "EncoderConfig": EncoderConfig}
SYNTHETIC_TERMS = (
    "Synthetic data from ehrscale's built-in MIMIC-IV generator: no patient's data was used; no restrictions."
)
MIMIC_TERMS = (
    "Trained on MIMIC-IV, under the PhysioNet Credentialed Health Data License 1.5.0 and its Data Use Agreement: "
    "share these weights and tokenizer files only as those terms allow (PhysioNet's rules for models trained on "
    "credentialed data), never with the data itself."
)


def export_run(run_dir: Path, out: Path, data_terms: str | None = None) -> Path:
    """Write `out` (weights, config, tokenizer files, model card) from a finished run folder."""
    run_dir, out = Path(run_dir), Path(out)
    run_folder = RunFolder(run_dir)
    spec, result = run_folder.finished("export")
    dataset = PreparedDataset.open(spec.data)
    model = restore_model(run_dir, spec, dataset)
    family = FAMILIES[spec.family]
    state = nnx.to_pure_dict(nnx.state(model))
    weights = {".".join(map(str, k)): np.asarray(v, np.float32) for k, v in flatten_dict(state).items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, out / WEIGHTS, metadata={"format": EXPORT_FORMAT, "family": spec.family})
    config = {
        "format": EXPORT_FORMAT,
        "family": spec.family,
        "config_class": type(model.config).__name__,
        "model_config": dataclasses.asdict(model.config),
        "dtype": "float32",  # the weights; the run computed in compute_dtype (bfloat16 keeps float32 master weights)
        "compute_dtype": spec.dtype,
        "params": result.params,
        "params_nonembed": result.params_nonembed,
        "training": {
            k: getattr(result, k) for k in ("budget", "tokens", "steps", "flops", "convention", "loss", "loss_se")
        },
        "recipe": dataclasses.asdict(spec.recipe),
        "fingerprint": result.fingerprint,
    }
    write_json(out / CONFIG, config)
    tokenizer = out / TOKENIZER
    tokenizer.mkdir(exist_ok=True)
    for name in family.data.tokenizer_files:
        shutil.copy2(dataset.root / name, tokenizer / Path(name).name)
    (out / CARD).write_text(model_card(spec, result, run_folder.evaluation(), dataset, config, data_terms))
    return out


def load_exported(folder: Path) -> nnx.Module:
    """The model an export folder describes, with its weights (nothing else is read)."""
    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise RunError(f"{folder}: not an export folder (it needs {CONFIG} and {WEIGHTS}: `ehrscale export RUN --out`)")
    config = json.loads((folder / CONFIG).read_text())
    if config.get("format") != EXPORT_FORMAT:
        raise RunError(f"{folder / CONFIG}: format {config.get('format')!r}, this ehrscale reads {EXPORT_FORMAT}")
    model_config = CONFIG_CLASSES[config["config_class"]](**config["model_config"])
    make = lambda: FAMILIES[config["family"]].model_class()(model_config, nnx.Rngs(0))  # noqa: E731
    graphdef, state = nnx.split(nnx.eval_shape(make))
    weights = load_file(folder / WEIGHTS)
    expected = {".".join(map(str, k)): v for k, v in flatten_dict(nnx.to_pure_dict(state)).items()}
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise RunError(f"{folder / WEIGHTS}: weights missing {missing} and unexpected {extra} for {config['family']}")
    for name, array in weights.items():
        if array.shape != expected[name].shape:
            raise RunError(
                f"{folder / WEIGHTS}: {name} has shape {array.shape}, the config makes {expected[name].shape}"
            )
    tree = unflatten_dict({tuple(_key(p) for p in k.split(".")): jax.numpy.asarray(v) for k, v in weights.items()})
    nnx.replace_by_pure_dict(state, tree)
    return nnx.merge(graphdef, state)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _source(dataset: PreparedDataset) -> str:
    source = dataset.manifest["source"]
    if source.get("kind") == "mimic":
        synthetic = (Path(source.get("path", "")) / "oracle").exists()
        return "ehrscale's synthetic MIMIC-IV" if synthetic else "MIMIC-IV (its hosp and icu files)"
    return f"a MEDS dataset ({source.get('kind', 'unknown')})"


def _key(part: str):
    return int(part) if part.isdigit() else part


def data_terms_of(dataset: PreparedDataset) -> str:
    """The data-use terms a dataset's source implies: synthetic (it has the generator's oracle), MIMIC-IV, or the
    user's own MEDS data (whose terms ehrscale cannot know)."""
    source = dataset.manifest["source"]
    if source.get("kind") == "mimic":
        return SYNTHETIC_TERMS if (Path(source.get("path", "")) / "oracle").exists() else MIMIC_TERMS
    return (
        "Trained on a MEDS dataset whose terms ehrscale does not know: the terms of that dataset govern these "
        "weights; state them with `ehrscale export --data-terms`."
    )


def model_card(
    spec, result: ResultRecord, evaluation: EvalRecord, dataset: PreparedDataset, config: dict, data_terms
) -> str:
    """The README.md of an export: what the model is, what it saw (counts), what it reads, what it cost, how it did."""
    family = FAMILIES[spec.family]
    manifest = dataset.manifest
    counts = manifest["counts"]
    model_config = config["model_config"]
    inputs, seen = family.data.card(manifest, model_config, family)
    lines = [
        f"# ehrscale {spec.family} model, width {spec.width}",
        "",
        f"{family.description[0].upper()}{family.description[1:]}. "
        f"{_count(model_config['n_layers'], 'layer')}, width {spec.width}, {_count(model_config['n_heads'], 'head')}; "
        f"{result.params:,} parameters ({result.params_nonembed:,} outside the embeddings). "
        "Exported by ehrscale from one run of a scaling study.",
        "",
        "## Data it saw",
        "",
        f"{seen}, from a dataset of {counts['subjects']:,} subjects ({counts['subjects_by_split']['train']:,} train, "
        f"{counts['subjects_by_split']['tuning']:,} tuning, {counts['subjects_by_split']['held_out']:,} held out; "
        f"{counts['events']:,} events). Source: {_source(dataset)}. Counts only: no "
        "subject, admission or stay identifier is in this folder.",
        "",
        "## Input it expects",
        "",
        inputs,
        "",
        "## Training",
        "",
        f"{result.tokens:,} tokens in {result.steps:,} steps ({result.tokens_per_step:,} a step), "
        f"{result.flops:.3g} FLOPs ({result.convention} convention), {spec.recipe.schedule} schedule, peak lr "
        f"{result.peak_lr:.3g}, AdamW. Budget {f'{spec.budget:.3g} FLOPs' if spec.budget else 'none set'}.",
        "",
        "## Results",
        "",
        f"Loss on the {result.loss_split} split: {result.loss:.4f} +- {result.loss_se:.4f} "
        f"({family.loss_unit}, over {result.loss_tokens:,} terms).",
    ]
    if result.masked_item_accuracy is not None:
        lines.append(
            f"Masked lab: item accuracy {result.masked_item_accuracy:.3f}, value MSE {result.value_mse:.4f}, "
            f"median per-item Pearson r {result.value_pearson_median:.3f}."
        )
    scored = [(task, entry) for task, entry in sorted(evaluation.tasks.items()) if entry.scored]
    if scored:
        lines += ["", "| task | probe AUROC (95% CI) | XGBoost | oracle |", "|---|---|---|---|"]
        for task, entry in scored:
            probe = entry.probe
            xgb = entry.baselines.get("xgboost", {}).get("auroc")
            oracle = (entry.oracle or {}).get("auroc")
            lines.append(
                f"| {task} | {probe['auroc']:.3f} [{probe['auroc_lo']:.3f}, {probe['auroc_hi']:.3f}] | "
                f"{'' if xgb is None else f'{xgb:.3f}'} | {'' if oracle is None else f'{oracle:.3f}'} |"
            )
    lines += [
        "",
        "## Data-use terms",
        "",
        data_terms or data_terms_of(dataset),
        "",
        "## Loading",
        "",
        "```python",
        "from scaling.export import load_exported",
        "",
        "model = load_exported('this folder')  # a flax nnx module; config.json says what it is",
        "```",
        "",
        f"Or any safetensors reader: `{WEIGHTS}` holds float32 arrays named by their path in the model.",
        "",
    ]
    return "\n".join(lines)
