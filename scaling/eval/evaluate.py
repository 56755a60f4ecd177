"""Downstream evaluation of a trained run: `ehrscale eval RUN_DIR [--tasks ...]`.

For each task the frozen model gives one vector per cohort row from the events its inputs may use (strictly
before the prediction time, or at or before it for tasks whose `inputs` say so): timeline models the
hidden state at the last token of the history (a long history
keeps the static context and the most recent tokens that fit the context window); lab-bag models the
mean of the embeddings of the subject's bags in the 24 h before the prediction time (rows with no such
bag are counted and reported, and left out of that model's probe). A linear probe is then fitted
and scored (`scaling.eval.probe`), beside the baselines and the oracle (`scaling.eval.baselines`).
Results go into the run's eval.json (`scaling.record`), task by task; result.json, written once by
training, is never touched, and `collect` joins the two. The probe's held-out predictions are written in
the meds-evaluation schema under the prepared dataset's predictions/ folder: they name subjects, so they are
data and never enter a run folder.
"""

import dataclasses
import hashlib
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from flax import nnx

from scaling.data.dataset import PreparedDataset
from scaling.data.labbags import bags_before
from scaling.data.meds_io import SPLITS
from scaling.data.tasks import sample_rows
from scaling.data.timelines import fit_history
from scaling.eval import zero_shot
from scaling.eval.baselines import bag_baselines, baselines, oracle
from scaling.eval.imputation import describe as describe_imputation
from scaling.eval.imputation import impute
from scaling.eval.probe import Split, fit_probe
from scaling.eval.zero_shot_rules import Settings, built_in_rules, read_rules, rule_for
from scaling.families import FAMILIES, Family
from scaling.models.sampler import Sampler
from scaling.record import EvalRecord, ImputationRecord, RunError, RunFolder, TaskEval
from scaling.runspec import RunSpec
from scaling.training.checkpoints import restore_model

BATCH = 128
BAG_SLOTS_STEP = 16  # a probe batch of bags is padded to a multiple of this many slots
PREDICTIONS_FORMAT = 1
# The meds-evaluation prediction schema: MEDS labels plus the model's predicted value and probability.
PREDICTION_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("boolean_value", pa.bool_()),
        ("predicted_boolean_value", pa.bool_()),
        ("predicted_boolean_probability", pa.float32()),
    ]
)


class Embeddings:
    """A model's `embed`, compiled once for all the tasks and splits it serves, and the bag vectors it made.

    nnx.jit walks the module's graph at every call; with the weights split off once, a call costs only its
    compute. A bag's vector depends on the bag alone, so the tasks of one evaluation share them."""

    def __init__(self, model):
        graphdef, state = nnx.split(model)
        compiled = jax.jit(lambda state, *arrays: nnx.merge(graphdef, state).embed(*arrays))
        self.embed = lambda *arrays: np.asarray(compiled(state, *(jnp.asarray(a) for a in arrays)))
        self.bags: dict[tuple[str, int], np.ndarray] = {}  # (split, bag index) -> vector
        self.width = model.config.d_model


def timeline_vectors(
    embeddings: Embeddings,
    family: Family,
    dataset: PreparedDataset,
    split: str,
    rows: pl.DataFrame,
    context: int,
    inclusive: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cohort row, the hidden state at the last token of its history, and which rows had a timeline."""
    cuts = rows["prediction_time"].dt.epoch("us").to_numpy()
    histories, prefixes, keep = dataset.timelines(split).histories(rows["subject_id"].to_numpy(), cuts, inclusive)
    # a long history keeps the static context and the most recent tokens
    sequences = [fit_history(h, p, context) for h, p in zip(histories, prefixes, strict=True)]
    vectors = []
    for start in range(0, len(sequences), BATCH):
        chunk = sequences[start : start + BATCH]
        tokens = np.zeros((BATCH, context), np.int32)
        segments = np.zeros((BATCH, context), np.int32)
        last = np.zeros(BATCH, np.int32)
        for r, seq in enumerate(chunk):
            tokens[r, : len(seq)] = seq
            segments[r, : len(seq)] = 1
            last[r] = max(len(seq) - 1, 0)
        positions = np.tile(np.arange(context, dtype=np.int32), (BATCH, 1))
        vectors.append(embeddings.embed(tokens, positions, segments, last)[: len(chunk)])
    return (np.concatenate(vectors) if vectors else np.zeros((0, embeddings.width))), keep


def bag_vectors(
    embeddings: Embeddings,
    family: Family,
    dataset: PreparedDataset,
    split: str,
    rows: pl.DataFrame,
    context: int,
    inclusive: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cohort row, the mean embedding of its bags in the 24 h before the prediction time, and which rows had
    one."""
    bags = dataset.bags(split)
    cache = embeddings.bags
    windows = bags_before(bags, rows, inclusive)
    keep = [len(window) > 0 for window in windows]
    picks = [window for window in windows if len(window)]
    needed = np.unique(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    needed = np.array([b for b in needed if (split, int(b)) not in cache], np.int64)
    # Shortest first, each batch padded to its own longest bag (rounded up to a few shapes, each compiled
    # once): bags are ~25 labs where the longest is ~80, so padding every batch to the longest triples the work.
    lengths = (bags.codes[needed] > 0).sum(axis=1) if len(needed) else np.zeros(0, np.int64)
    order = np.argsort(lengths, kind="stable")
    needed, lengths = needed[order], lengths[order]
    for start in range(0, len(needed), BATCH):
        chunk = needed[start : start + BATCH]
        longest = max(1, int(lengths[start + len(chunk) - 1]))  # sorted: the chunk's last bag is its longest
        width = min(-(-longest // BAG_SLOTS_STEP) * BAG_SLOTS_STEP, bags.codes.shape[1])
        codes = np.zeros((BATCH, width), np.int32)
        values = np.full((BATCH, width), np.nan, np.float32)
        codes[: len(chunk)] = bags.codes[chunk, :width]
        values[: len(chunk)] = bags.values[chunk, :width]
        out = embeddings.embed(*family.probe_input(codes, values))
        for k, bag in enumerate(chunk):
            cache[(split, int(bag))] = out[k]
    rows_out = [np.mean([cache[(split, int(b))] for b in window], axis=0) for window in picks]
    return (np.stack(rows_out) if rows_out else np.zeros((0, embeddings.width))), np.asarray(keep, bool)


def probe_rows(labels: pl.DataFrame, split: str, train_rows: int) -> pl.DataFrame:
    """A split's cohort rows; the training split sampled down to `train_rows` (seed 0, the same for every run;
    0: all)."""
    rows = labels.filter(pl.col("split") == split)
    return sample_rows(rows, train_rows, seed=0) if split == "train" else rows


def representations(
    model: nnx.Module | Embeddings, spec: RunSpec, dataset: PreparedDataset, task: str, train_rows: int | None = None
) -> tuple[dict[str, Split], dict[str, int], pl.DataFrame]:
    """Probe inputs per split; how many cohort rows had no input (lab-bag models without a recent bag); and the
    held_out rows that had one (subject_id, prediction_time, boolean_value), in the order of their features.
    Pass the model's `Embeddings` to share its compiled embed and bag vectors between tasks."""
    embeddings = model if isinstance(model, Embeddings) else Embeddings(model)
    labels = dataset.task(task).join(dataset.splits(), on="subject_id", how="left")
    inclusive = dataset.task_inputs(task) == "at_or_before"
    train_rows = spec.probe_train_rows if train_rows is None else train_rows
    family = FAMILIES[spec.family]
    vectors = family.vectors()  # the family's data kind: a timeline's last hidden state, or its recent bags' mean
    splits, missing = {}, {}
    for split in SPLITS:
        rows = probe_rows(labels, split, train_rows)
        x, keep = vectors(embeddings, family, dataset, split, rows, spec.recipe.context, inclusive)
        y = rows["boolean_value"].to_numpy().astype(np.int64)[keep]
        splits[split] = Split(x=x.astype(np.float64), y=y)
        missing[split] = int((~keep).sum())
        if split == "held_out":
            held_out = rows.filter(pl.Series(keep)).select("subject_id", "prediction_time", "boolean_value")
    return splits, missing, held_out


def predictions_folder(dataset: PreparedDataset, out: Path) -> Path:
    """Where a run's predictions go: the prepared dataset's predictions/ (they name subjects, so they are data and
    stay in the data folder), one folder per run folder."""
    out = Path(out).resolve()
    return dataset.root / "predictions" / f"{out.name}-{hashlib.sha256(str(out).encode()).hexdigest()[:8]}"


def write_predictions(
    path: Path, rows: pl.DataFrame, probability: np.ndarray, task: str, spec: RunSpec, method: str = "linear probe"
) -> None:
    """Held-out predictions in the meds-evaluation schema (predicted value: probability >= 0.5), versioned."""
    frame = rows.with_columns(
        predicted_boolean_value=pl.Series(probability >= 0.5),
        predicted_boolean_probability=pl.Series(probability, dtype=pl.Float32),
    )
    table = frame.to_arrow().cast(PREDICTION_SCHEMA)
    table = table.replace_schema_metadata(
        {"ehrscale_predictions_format": str(PREDICTIONS_FORMAT), "task": task, "model": f"{method}, {spec.family}"}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def tasks_to_evaluate(dataset: PreparedDataset, spec: RunSpec, tasks: tuple[str, ...] | None) -> tuple[str, ...]:
    """The tasks asked for, else the spec's, else every task with labels, by their names in the dataset."""
    tasks = tuple(dataset.resolve_task(t) for t in (tasks or spec.tasks or dataset.task_names(with_labels=True)))
    if not tasks:
        raise RunError(f"{spec.data}: no task has labels; add yours with `ehrscale data prepare ... --labels NAME=DIR`")
    return tasks


def evaluate(
    out: Path,
    tasks: tuple[str, ...] | None = None,
    log=print,
    train_rows: int | None = None,
    predictions: Path | None = None,
) -> EvalRecord:
    """Probe a finished run on its tasks and add them to its eval.json; held-out predictions go to `predictions`
    (default: `predictions_folder`).

    `train_rows` caps the probe's training rows (default: the spec's probe_train_rows; 0: all)."""
    run_folder = RunFolder(out)
    spec, _ = run_folder.finished("evaluate")
    family = FAMILIES[spec.family]
    dataset = PreparedDataset.open(spec.data)
    tasks = tasks_to_evaluate(dataset, spec, tasks)
    model = restore_model(run_folder.path, spec, dataset)
    folder = Path(predictions) if predictions is not None else predictions_folder(dataset, run_folder.path)
    report = run_folder.evaluation()
    embeddings = Embeddings(model)  # one compiled embed for every task; the same bags serve several tasks
    for task in tasks:
        started = time.perf_counter()
        splits, missing, held_out = representations(embeddings, spec, dataset, task, train_rows)
        probe, probability = fit_probe(splits, seed=spec.seed)
        written = None
        if probability is not None:
            path = folder / f"{task}.parquet"
            write_predictions(path, held_out, probability, task, spec)
            written = {"path": str(path), "rows": len(probability)}
        entry = TaskEval(
            probe=probe,
            probe_train_rows=len(splits["train"].y) + missing["train"],
            rows_without_input=missing,
            inputs=dataset.task_inputs(task),
            baselines=baselines(dataset, task),
            baselines_bags=bag_baselines(dataset, task) if family.data.packs_bags else None,
            oracle=oracle(dataset, task),
            seconds=round(time.perf_counter() - started, 2),
            predictions=written,
            zero_shot=report.tasks[task].zero_shot if task in report.tasks else None,  # kept beside the probe
        )
        report = report.with_task(task, entry)
        if entry.scored:
            base = entry.baselines.get("xgboost", {}).get("auroc")
            on_bags = ((entry.baselines_bags or {}).get("xgboost") or {}).get("auroc")
            best = (entry.oracle or {}).get("auroc")
            log(
                f"{task}: AUROC {probe['auroc']:.3f} [{probe['auroc_lo']:.3f}, {probe['auroc_hi']:.3f}]"
                + (f"; XGBoost {base:.3f}" if base is not None else "")
                + (f" (on the same bags {on_bags:.3f})" if on_bags is not None else "")
                + (f"; oracle {best:.3f}" if best is not None else "")
                + (f"; {sum(missing.values())} rows without a recent bag" if sum(missing.values()) else "")
            )
            log(f"  held-out predictions (they name subjects: data, kept with it): {written['path']}")
        else:
            log(f"{task}: {probe['reason']}")
        run_folder.write_evaluation(report)  # after each task: an interrupted evaluation keeps what it scored
    return report


def evaluate_zero_shot(
    out: Path,
    tasks: tuple[str, ...] | None = None,
    settings: Settings = Settings(),
    rules: Path | None = None,
    log=print,
    predictions: Path | None = None,
) -> EvalRecord:
    """Zero-shot AUROC of a finished timeline decoder on its tasks (scaling.eval.zero_shot), added to each task's
    entry in eval.json beside the probe's; held-out risks go to `predictions`/zero_shot/ (default:
    `predictions_folder`). A task without a rule is refused before anything is generated."""
    run_folder = RunFolder(out)
    spec, _ = run_folder.finished("evaluate")
    if not FAMILIES[spec.family].generates:
        raise RunError(
            f"{run_folder.path}: zero-shot evaluation generates timelines, which only the timeline decoder does; "
            f"this is a {spec.family} run (its downstream evaluation is `ehrscale eval` without --zero-shot)"
        )
    dataset = PreparedDataset.open(spec.data)
    tasks = tasks_to_evaluate(dataset, spec, tasks)
    users = read_rules(rules) if rules is not None else {}
    built = built_in_rules(dataset.task_config())
    chosen = {task: rule_for(task, built, users) for task in tasks}  # every task's rule, before any work
    model = restore_model(run_folder.path, spec, dataset)
    sampler = Sampler(model, zero_shot.BATCH_ROWS, spec.recipe.context, settings.temperature, settings.top_k)
    folder = Path(predictions) if predictions is not None else predictions_folder(dataset, run_folder.path)
    report = run_folder.evaluation()
    for task, rule in chosen.items():
        entry, rows, risk = zero_shot.zero_shot_task(sampler, dataset, task, rule, settings)
        if risk is not None:
            path = zero_shot.predictions_path(folder, task)
            write_predictions(path, rows, risk.astype(np.float32), task, spec, "zero-shot futures (Monte Carlo)")
            entry["predictions"] = {"path": str(path), "rows": len(risk)}
        current = report.tasks.get(task) or TaskEval(probe={"status": "not run", "reason": "ehrscale eval RUN"})
        report = report.with_task(task, dataclasses.replace(current, zero_shot=entry))
        run_folder.write_evaluation(report)  # after each task: an interrupted evaluation keeps what it scored
        log(zero_shot.describe(task, entry))
    return report


def evaluate_imputation(out: Path, log=print) -> ImputationRecord:
    """Labrador's intrinsic task on a finished lab-bag run (scaling.eval.imputation), written to imputation.json."""
    run_folder = RunFolder(out)
    spec, _ = run_folder.finished("evaluate")
    imputer = FAMILIES[spec.family].imputer()
    if imputer is None:
        raise RunError(
            f"{run_folder.path}: imputation masks a lab in a bag and predicts its value, which only the lab-bag "
            f"families (labrador, bert) do; this is a {spec.family} run"
        )
    dataset = PreparedDataset.open(spec.data)
    model = restore_model(run_folder.path, spec, dataset)
    try:
        record = impute(model, imputer, dataset, spec.recipe.context, seed=spec.seed)
    except ValueError as error:
        raise RunError(str(error)) from None
    run_folder.write_imputation(record)
    log(describe_imputation(record))
    return record
