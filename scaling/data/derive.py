"""PREP/events -> the model-ready parts of a prepared dataset: vocabulary, timelines, lab bags, tasks.

A first pass checks each shard (scaling/data/quirks.py: exact duplicates dropped, numbers written as text read,
implausible numbers removed, events outside their admission counted) into temporary model events, and counts how
densely each code recurs.
Fitting (vocabulary, quantiles, age bins, dense codes, lab eCDFs) sees the train split only; everything else is
applied shard by shard, so memory is bounded by one shard.
"""

import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq

from scaling.data import labbags, labels, quirks, tasks, timelines
from scaling.data.csv_stream import SourceError
from scaling.data.meds_io import SPLITS

MODEL_EVENTS = ".model_events"  # PREP/.model_events/<k>.parquet while derive runs: the checked events


def check_events(
    shards: list[Path], folder: Path, train_ids: pl.DataFrame, tokenizer: timelines.TokenizerConfig
) -> tuple[list[Path], dict, tuple[str, ...]]:
    """Each shard checked (`quirks.Audit`) into folder/<k>.parquet; returns those files, the manifest's `quirks`
    section and the dense codes (`timelines.find_dense_codes`, from the train subjects' events)."""
    folder.mkdir(parents=True, exist_ok=True)
    audit, gaps, checked = quirks.Audit(), [], []
    for number, shard in enumerate(shards):
        extra = ["hadm_id"] if "hadm_id" in pq.read_schema(shard).names else []
        events = audit.check(pl.read_parquet(shard, columns=[*quirks.EVENT, *extra]))
        gaps.append(timelines.repeat_gaps(events.join(train_ids, on="subject_id", how="semi"), tokenizer))
        checked.append(folder / f"{number}.parquet")
        events.write_parquet(checked[-1])
    return checked, audit.section(), timelines.find_dense_codes(gaps, tokenizer)


def derive(
    events_root: Path,
    prep: Path,
    tokenizer: timelines.TokenizerConfig,
    bags: labbags.BagConfig,
    task_config: tasks.TaskConfig,
    step=lambda text: None,
    label_sources: tuple[labels.LabelSource, ...] = (),
) -> dict:
    """Write PREP/vocab, PREP/timelines, PREP/labbags, PREP/tasks; return their manifest sections."""
    splits = pl.read_parquet(events_root / meds.subject_splits_filepath)
    train_ids = splits.filter(pl.col("split") == SPLITS[0]).select("subject_id")
    step("checking the events: duplicates, implausible values, admissions, charting rates")
    shards, quirk_counts, dense = check_events(
        sorted((events_root / meds.data_subdirectory).rglob("*.parquet")), prep / MODEL_EVENTS, train_ids, tokenizer
    )
    all_events = pl.scan_parquet(shards)
    train = all_events.join(train_ids.lazy(), on="subject_id", how="semi")

    step("fitting the vocabulary, quantiles and lab eCDFs on the train split")
    vocab = timelines.fit_vocabulary(train, tokenizer, dense)
    vocab.save(prep / "vocab")
    lab_vocab = labbags.fit_lab_vocabulary(train, bags)
    lab_vocab.save(prep / "labbags", bags)
    left_out = labbags.left_out_by_rule(all_events, bags)

    split_of = dict(zip(splits["subject_id"].to_list(), splits["split"].to_list()))
    timeline_writer = timelines.TimelineWriter(prep / "timelines", vocab.dtype)
    bag_writer = labbags.BagWriter(prep / "labbags")
    bag_drops: Counter = Counter()
    thinned = 0
    for number, shard in enumerate(shards, start=1):
        step(f"tokenising shard {number} of {len(shards)}")
        events = pl.read_parquet(shard)
        sparse, thinned_here = timelines.thin_dense(events, tokenizer, vocab.dense_codes)
        thinned += thinned_here
        timeline_writer.write(*timelines.tokenize(sparse, vocab), split_of=split_of)
        if lab_vocab.size:
            bag_writer.write(labbags.make_bags(events, lab_vocab, bags, bag_drops), split_of)
    timeline_stats = timeline_writer.close()
    bag_stats = bag_writer.close()
    bag_note = None
    if not lab_vocab.size:
        bag_note = (
            f"no lab bags: no code matches the lab rule ({labbags.describe_rule(bags)}) with at least "
            f"{bags.min_code_count:,} train rows; pass --bag-codes numeric (codes that usually carry a number) "
            "or a pattern for your codes"
        )
    elif not sum(bag_stats.values()):
        bag_note = (
            f"no lab bags: {lab_vocab.size} lab item(s), but never {bags.min_labs} or more measured at one time "
            "(see --bag-min-labs)"
        )

    step("building task labels")
    task_labels, exclusions = tasks.build_tasks(all_events, task_config)
    info = {name: {"source": "built-in", "inputs": tasks.BUILT_IN_INPUTS} for name in task_labels}
    if label_sources:
        spans = labels.subject_spans(all_events)
        for source in label_sources:
            step(f"reading the labels of {source.name} from {source.path}")
            frame, read, dropped = labels.read_labels(source, spans)
            if frame.is_empty():
                raise SourceError(
                    f"--labels {source.name}={source.path}: none of its {read:,} rows can be used ("
                    + ", ".join(f"{k}: {v:,}" for k, v in dropped.items())
                    + ")"
                )
            task_labels[source.name] = frame
            exclusions[source.name] = dropped
            info[source.name] = {
                "source": "labels",
                "path": str(source.path.resolve()),
                "inputs": source.inputs,
                "rows_read": read,
            }
    task_stats = tasks.write_tasks(prep / "tasks", task_labels, splits)
    shutil.rmtree(prep / MODEL_EVENTS)
    return {
        "quirks": quirk_counts,
        "tokenizer": {
            **asdict(tokenizer),
            "vocab_size": vocab.size,
            "token_dtype": vocab.dtype.name,
            "dense_code_count": len(vocab.dense_codes),  # the codes themselves: vocab/tokenizer.json
            "dense_events_left_out": thinned,
        },
        "timelines": timeline_stats,
        "bags": {
            "config": asdict(bags),
            "rule": labbags.describe_rule(bags),
            "left_out_by_rule": left_out,
            "items": lab_vocab.size,
            "considered": bag_drops.pop("bags considered", 0),
            "bags_by_split": bag_stats,
            "subsampled_to_max_labs": bag_drops.pop("bags subsampled to max_labs (kept)", 0),
            "dropped": dict(sorted(bag_drops.items())),
            **({"note": bag_note} if bag_note else {}),
        },
        "tasks": {
            "config": asdict(task_config),
            "labels": {
                name: {**info[name], "by_split": task_stats[name], "excluded": exclusions[name]} for name in task_labels
            },
            "aliases": dict(tasks.ALIASES),
        },
    }
