"""Open a prepared dataset (the folder `ehrscale data prepare` writes) and check it is whole."""

import json
from dataclasses import dataclass
from pathlib import Path

import meds
import numpy as np
import polars as pl

from scaling.data.labbags import BagSplit, LabVocabulary
from scaling.data.tasks import TaskConfig
from scaling.data.timelines import Timelines, Vocabulary

MANIFEST = "manifest.json"
FORMAT = "ehrscale-prepared/1"
# Each part and one file it cannot be without.
PARTS = {
    "events": f"events/{meds.subject_splits_filepath}",
    "vocabulary": "vocab/vocab.parquet",
    "timelines": "timelines/train/offsets.npy",
    "lab bags": "labbags/train/codes.npy",
    "tasks": "tasks/in_hospital_mortality.parquet",
}


@dataclass(frozen=True)
class ModelInputs:
    """What a model family sees of a dataset: its vocabulary, its context, and one epoch of training data."""

    vocab_size: int  # timeline tokens, lab items (Labrador) or (item, decile) tokens (BERT)
    context: int  # the timeline window, or the slots of a row of packed bags
    rows_per_epoch: float  # training windows (timeline) or rows of packed bags per pass over the train split


class DatasetError(Exception):
    """A prepared dataset that is missing a part or has another format; the message says how to rebuild."""


def _rebuild(root: Path, manifest: dict | None) -> str:
    source = (manifest or {}).get("source", {})
    flag = {"mimic": "--mimic", "meds": "--meds"}.get(source.get("kind", ""), "--mimic")
    return f"rebuild it with `ehrscale data prepare {flag} {source.get('path', 'SOURCE')} --out {root} --overwrite`"


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset: its manifest and accessors for each part."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path) -> "PreparedDataset":
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise DatasetError(f"{root}: no {MANIFEST}, so not a prepared dataset; {_rebuild(root, None)}")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise DatasetError(
                f"{root}: written in format {manifest.get('format')!r}, this ehrscale reads {FORMAT!r}; "
                f"{_rebuild(root, manifest)}"
            )
        for part, file in PARTS.items():
            if not (root / file).exists():
                raise DatasetError(f"{root}: the {part} part is missing ({root / file}); {_rebuild(root, manifest)}")
        return cls(root=root, manifest=manifest)

    @property
    def run_hash(self) -> str:
        """What a run's fingerprint records of its data: the source's content, and how it was tokenised."""
        tokenizer = json.dumps(self.manifest.get("tokenizer"), sort_keys=True)
        return self.manifest["source"]["content_hash"] + "/" + tokenizer

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.load(self.root / "vocab")

    def timelines(self, split: str) -> Timelines:
        return Timelines.open(self.root / "timelines", split, self.vocabulary().dtype)

    def lab_vocabulary(self) -> LabVocabulary:
        return LabVocabulary.load(self.root / "labbags")

    def bags(self, split: str) -> BagSplit:
        return BagSplit.open(self.root / "labbags", split)

    def timeline_tokens(self, split: str) -> int:
        """Tokens in a split's timelines (without opening them)."""
        return int(np.load(self.root / "timelines" / split / "offsets.npy")[-1])

    def task_names(self, with_labels: bool = False) -> tuple[str, ...]:
        """The dataset's tasks (built-in, then the user's), optionally only those with at least one label."""
        tasks = self.manifest["tasks"]["labels"]
        return tuple(n for n, t in tasks.items() if not with_labels or any(v["n"] for v in t["by_split"].values()))

    def resolve_task(self, name: str) -> str:
        """A task's name in this dataset (a MEDS-DEV alias becomes the built-in task it names)."""
        name = self.manifest["tasks"].get("aliases", {}).get(name, name)
        if name not in self.manifest["tasks"]["labels"]:
            aliases = self.manifest["tasks"].get("aliases", {})
            known = ", ".join([*self.task_names(), *(f"{a} (= {t})" for a, t in aliases.items())])
            raise DatasetError(
                f"{self.root}: no task {name!r} (tasks: {known}); add your own with "
                "`ehrscale data prepare ... --labels NAME=DIR`"
            )
        return name

    def task_inputs(self, name: str) -> str:
        """Which events a task's inputs may use: "before" or "at_or_before" its prediction_time."""
        return self.manifest["tasks"]["labels"][self.resolve_task(name)].get("inputs", "before")

    def task_config(self) -> TaskConfig:
        """The task settings the built-in tasks were labelled with (the manifest's; defaults where it has none)."""
        config = self.manifest["tasks"].get("config", {})
        return TaskConfig(**{k: v for k, v in config.items() if k in TaskConfig.__dataclass_fields__})

    def task(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.root / "tasks" / f"{self.resolve_task(name)}.parquet")

    def splits(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "events" / meds.subject_splits_filepath)

    def codes(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "events" / meds.code_metadata_filepath)
