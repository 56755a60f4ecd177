"""A run folder and the records in it: the one module that knows their names, formats and older versions.

JAX-free, so the sweep driver, `collect` and `sweep status` read runs without a prepared dataset.

    <run dir>/
        spec.json       `StartRecord`: the resolved spec, its fingerprint, and the shape and cost training planned
        metrics.jsonl   one row per logged step (`scaling.tracking`)
        checkpoints/    orbax, the last k kept; branch_points/ a trunk's states kept for its branches
        result.json     `ResultRecord`, written once, last and atomically, by training
        eval.json       `EvalRecord`: one `TaskEval` per evaluated task; its held-out predictions name subjects, so
                        they live in the prepared dataset's predictions/ and eval.json keeps only their path
        attempts.json   `Attempts`: preemptions and failures the sweep driver saw

`result.json`, format 2 (`"format": 2`): the fields of `ResultRecord`. Absent from older files, meaning their value
before they were added: lr_multiplier (1), peak_lr (not recorded), schedule ("cosine"), role ("run"), flops_spent
(= flops), microbatch_rows (not recorded). branch_of and branch_step are written for a branch only; the masked-lab
metrics (`scaling.eval.bag_metrics`) for the lab-bag families only.
Format 1 (before the format key): training wrote it, then evaluation rewrote it with its AUROCs; no budget, no exact
per-token cost, no standard error, and `loss` came from 8 x 16 rows of the tuning split. It still reads:
`RunFolder.result` fills what it can and says what it assumed.

`eval.json`, format 2: {"format": 2, "tasks": {task: TaskEval}}; format 1 was the tasks mapping itself.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from scaling.data.atomic import write_json

RESULT_FORMAT = 2
EVAL_FORMAT = 3  # 3: a task's zero_shot entry (format 2 files read the same, without it)
IMPUTATION_FORMAT = 1
SPEC, METRICS, CHECKPOINTS, BRANCH_POINTS = "spec.json", "metrics.jsonl", "checkpoints", "branch_points"
RESULT, EVAL, ATTEMPTS, TRAIN_LOG = "result.json", "eval.json", "attempts.json", "train.log"
IMPUTATION = "imputation.json"


class RunError(Exception):
    """A run that cannot start or be used as asked; the message says why (shown without a traceback)."""


def _from_json(cls, data: dict):
    """A record dataclass from its JSON: missing fields take their defaults (None where a field has none), fields
    this version does not know are kept in `extra`."""
    fields = [f for f in dataclasses.fields(cls) if f.name != "extra"]
    known = {f.name: data[f.name] if f.name in data else _default(f) for f in fields}
    return cls(**known, extra={k: v for k, v in data.items() if k not in known})


def _default(field_: dataclasses.Field):
    if field_.default is not dataclasses.MISSING:
        return field_.default
    return field_.default_factory() if field_.default_factory is not dataclasses.MISSING else None


def _to_json(record, optional: tuple[str, ...] = ()) -> dict:
    """A record as its JSON: every field (those in `optional` only when set), then the fields of a newer writer."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "extra"}
    return {k: v for k, v in fields.items() if not (k in optional and v is None)} | record.extra


@dataclass(frozen=True)
class StartRecord:
    """spec.json: what training was asked to do, written before its first step (a changed spec is refused)."""

    spec: dict  # RunSpec.to_dict()
    result_fields: dict  # the fields the fingerprint hashes, so a refusal can name those that differ
    fingerprint: str
    steps: int | None = None
    tokens_per_step: int | None = None
    params: int | None = None
    params_nonembed: int | None = None
    flops_per_token: float | None = None
    convention: str | None = None
    flops: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int | None:
        return self.steps * self.tokens_per_step if self.steps and self.tokens_per_step else None

    def run_spec(self, source: str):
        from scaling.runspec import parse_spec  # the recipe and the families: only when a spec is needed

        return parse_spec(self.spec, source)


@dataclass(frozen=True)
class ResultRecord:
    """result.json: what a training run did and measured, written once when it ends (ok or diverged)."""

    format: int
    status: str  # ok | diverged
    family: str
    width: int
    layers: int
    heads: int | None
    seed: int
    budget: float | None  # what the sweep planned it for; None for a lone run
    convention: str
    flops_per_token: float  # under the convention
    flops_per_token_exact: float | None
    flops: float  # flops_per_token x tokens
    flops_exact: float | None
    params: int
    params_nonembed: int
    tokens: int
    steps: int
    tokens_per_step: int | None
    loss: float  # mean per token (timelines) or per masked lab (bags), on loss_split
    loss_se: float | None  # its standard error over the evaluation's sequences
    loss_split: str
    loss_sequences: int | None
    loss_tokens: int | None
    train_loss: float
    wall_seconds: float
    tokens_per_s: float
    mfu: float
    fingerprint: str | None
    lr_multiplier: float = 1.0
    peak_lr: float | None = None  # the schedule's peak
    schedule: str = "cosine"
    role: str = "run"  # or "trunk": a WSD trunk trained for its branches
    microbatch_rows: int | None = None  # rows of one forward/backward pass
    flops_spent: float | None = None  # a branch's own steps and its share of its trunk; a trunk's 0
    branch_of: str | None = None  # a branch's trunk
    branch_step: int | None = None  # and the step it started from
    masked_split: str | None = None  # the lab-bag families' own metrics (scaling.eval.bag_metrics)
    masked_bags: int | None = None
    masked_item_accuracy: float | None = None
    value_mse: float | None = None
    value_pearson_median: float | None = None
    value_pearson_items: int | None = None
    value_by_item: list | None = None
    extra: dict = field(default_factory=dict)

    OPTIONAL = (
        "branch_of",
        "branch_step",
        "masked_split",
        "masked_bags",
        "masked_item_accuracy",
        "value_mse",
        "value_pearson_median",
        "value_pearson_items",
        "value_by_item",
    )

    def to_json(self) -> dict:
        return _to_json(self, self.OPTIONAL)

    def numbers(self) -> dict[str, float]:
        """The record's numbers (what a tracker's summary shows)."""
        fields = self.to_json()
        return {
            k: v for k, v in fields.items() if isinstance(v, int | float) and not isinstance(v, bool) and k != "format"
        }


def _upgrade_result(data: dict) -> tuple[dict, list[str]]:
    """A result.json's fields in the current format, and notes on what an older format made us assume."""
    version = data.get("format", 1)
    if version > RESULT_FORMAT:
        raise ValueError(f"format {version} is newer than this ehrscale reads ({RESULT_FORMAT}); upgrade ehrscale")
    if version > 1:
        return data | {"flops_spent": data.get("flops_spent", data.get("flops"))}, []
    data = {k: v for k, v in data.items() if not k.startswith(("auroc_", "auprc_"))}  # eval.json holds them now
    data.setdefault("loss_split", "tuning")
    if "flops_per_token" in data and data.get("convention") == "exact":
        data.setdefault("flops_per_token_exact", data["flops_per_token"])
    data.setdefault("flops_spent", data.get("flops"))
    note = (
        "format 1 (no standard error of the loss, no planned budget; its loss is the mean over the first 8 x 16 rows "
        "of the tuning split)"
    )
    return data | {"format": 1}, [note]


@dataclass(frozen=True)
class TaskEval:
    """One task's evaluation of a run: the probe (scaling.eval.probe), the baselines and the oracle (their own dicts,
    scaling.eval.baselines), and where its held-out predictions went."""

    probe: dict
    probe_train_rows: int | None = None
    rows_without_input: dict | None = None  # per split: cohort rows the model had no input for
    inputs: str | None = None  # before | at_or_before the prediction time
    baselines: dict = field(default_factory=dict)
    baselines_bags: dict | None = None  # lab-bag families: the same bags' values
    oracle: dict | None = None
    seconds: float | None = None
    predictions: dict | None = None  # {"path", "rows"}: in the prepared dataset, never in the run folder
    zero_shot: dict | None = None  # the decoder's futures (scaling.eval.zero_shot), when evaluated zero-shot
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return _to_json(self, ("baselines_bags", "predictions", "zero_shot"))

    @property
    def scored(self) -> bool:
        return self.probe.get("status") == "ok"

    def columns(self, task: str) -> dict[str, float]:
        """This task's results-table columns: the probe's AUROC (its interval, AUPRC), XGBoost's and the oracle's."""
        probe = self.probe
        columns = (
            {
                f"auroc_{task}": probe["auroc"],
                f"auroc_{task}_lo": probe["auroc_lo"],
                f"auroc_{task}_hi": probe["auroc_hi"],
                f"auprc_{task}": probe["auprc"],
            }
            if self.scored
            else {}
        )
        on_bags = (self.baselines_bags or {}).get
        named = (
            (f"xgboost_auroc_{task}", ((self.baselines or {}).get("xgboost") or {}).get("auroc")),
            (f"xgboost_bags_auroc_{task}", (on_bags("xgboost") or {}).get("auroc")),
            (f"logistic_bags_auroc_{task}", (on_bags("logistic") or {}).get("auroc")),
            (f"oracle_auroc_{task}", (self.oracle or {}).get("auroc")),
        )
        zero_shot = self.zero_shot or {}
        if zero_shot.get("status") == "ok":
            named += (
                (f"zero_shot_auroc_{task}", zero_shot["auroc"]),
                (f"zero_shot_auroc_{task}_lo", zero_shot["auroc_lo"]),
                (f"zero_shot_auroc_{task}_hi", zero_shot["auroc_hi"]),
                (f"zero_shot_rollout_auroc_{task}", zero_shot["rollout"]["auroc"]),
                (f"zero_shot_ece_{task}", zero_shot["monte_carlo"]["ece"]),
                (f"zero_shot_completed_{task}", zero_shot["completed"]),
                (f"zero_shot_tokens_per_future_{task}", zero_shot["tokens_per_future"]),
                # the rule read on the actual futures: the most zero-shot can give (absent before it was recorded)
                (f"zero_shot_rule_auroc_{task}", (zero_shot.get("rule_on_actual_futures") or {}).get("auroc")),
                *(
                    (f"zero_shot_auroc_{task}_futures{n}", auroc)
                    for n, auroc in zero_shot["monte_carlo"]["auroc_by_futures"].items()
                ),
            )
        return columns | {k: v for k, v in named if v is not None}


@dataclass(frozen=True)
class EvalRecord:
    """eval.json: the evaluated tasks of a run."""

    tasks: dict[str, TaskEval] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": EVAL_FORMAT, "tasks": {name: entry.to_json() for name, entry in self.tasks.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "EvalRecord":
        tasks = data["tasks"] if data.get("format", 1) >= 2 else data
        return cls({name: _from_json(TaskEval, entry) for name, entry in tasks.items()})

    def with_task(self, name: str, entry: TaskEval) -> "EvalRecord":
        return EvalRecord(self.tasks | {name: entry})

    def columns(self) -> dict[str, float]:
        return {k: v for name, entry in self.tasks.items() for k, v in entry.columns(name).items()}


@dataclass(frozen=True)
class ImputationRecord:
    """imputation.json: a lab-bag model's intrinsic task (scaling.eval.imputation): each of the most frequent items
    masked in held-out bags and its value predicted, told the item; per item and over all, the model's MSE and
    Pearson r on the eCDF scale beside the item's mean, a ridge and an XGBoost regressor on the bag's other labs."""

    split: str
    bags: int  # masked bags scored, all items together
    model: dict  # {"mse", "mse_se", "pearson_median"}: over every scored bag; the median over items
    baselines: dict  # name -> the same for item_mean, ridge, xgboost
    items: list  # per item: {"item", "n", "model": {"mse", "pearson"}, <baseline>: {...}}
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": IMPUTATION_FORMAT} | _to_json(self)

    @classmethod
    def from_json(cls, data: dict) -> "ImputationRecord":
        version = data.get("format", 1)
        if version > IMPUTATION_FORMAT:
            raise ValueError(f"format {version} is newer than this ehrscale reads ({IMPUTATION_FORMAT})")
        return _from_json(cls, {k: v for k, v in data.items() if k != "format"})

    def columns(self) -> dict[str, float]:
        """The results table's columns: the model's imputation MSE and median Pearson r, and each baseline's."""
        out = {"imputation_mse": self.model["mse"], "imputation_pearson_median": self.model["pearson_median"]}
        for name, entry in self.baselines.items():
            out[f"imputation_{name}_mse"] = entry["mse"]
            out[f"imputation_{name}_pearson_median"] = entry["pearson_median"]
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Attempts:
    """attempts.json: what the sweep driver saw go wrong with a run (its last 10 errors), and whether it gave up."""

    preemptions: int = 0
    failures: int = 0
    errors: tuple = ()
    failed: str | None = None  # the error it gave up on; a new `sweep run` clears it, the counts stay

    def to_json(self) -> dict:
        data = {"preemptions": self.preemptions, "failures": self.failures, "errors": list(self.errors)}
        return data | ({"failed": self.failed} if self.failed is not None else {})


@dataclass(frozen=True)
class RunFolder:
    """A run folder: its paths, typed reads of its records, atomic writes."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path.resolve() / CHECKPOINTS

    @property
    def branch_points(self) -> Path:
        return self.path.resolve() / BRANCH_POINTS

    @property
    def started(self) -> bool:
        return self.spec_path.exists()

    @property
    def trained(self) -> bool:
        return (self.path / RESULT).exists()

    def start(self) -> StartRecord | None:
        """spec.json, or None before training started."""
        if not self.spec_path.exists():
            return None
        data = json.loads(self.spec_path.read_text())
        return _from_json(StartRecord, {"spec": {}, "result_fields": {}} | data)  # a damaged one still compares

    def write_start(self, record: StartRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.spec_path, _to_json(record))

    def result(self) -> tuple[ResultRecord, list[str]] | None:
        """result.json in the current format, and notes on what an older format made us assume; None if unfinished."""
        path = self.path / RESULT
        if not path.exists():
            return None
        try:
            data, notes = _upgrade_result(json.loads(path.read_text()))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        return _from_json(ResultRecord, data), notes

    def write_result(self, record: ResultRecord) -> None:
        write_json(self.path / RESULT, record.to_json())

    def evaluation(self) -> EvalRecord:
        """eval.json (empty if nothing was evaluated), whatever its format."""
        path = self.path / EVAL
        return EvalRecord.from_json(json.loads(path.read_text())) if path.exists() else EvalRecord()

    def write_evaluation(self, record: EvalRecord) -> None:
        write_json(self.path / EVAL, record.to_json())

    def imputation(self) -> ImputationRecord | None:
        """imputation.json, or None before `ehrscale eval --imputation` (or a bag run's end) wrote it."""
        path = self.path / IMPUTATION
        if not path.exists():
            return None
        try:
            return ImputationRecord.from_json(json.loads(path.read_text()))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def write_imputation(self, record: ImputationRecord) -> None:
        write_json(self.path / IMPUTATION, record.to_json())

    def settled_tasks(self) -> set[str]:
        """Tasks evaluated already (scored, or found unscorable and reported in eval.json)."""
        return set(self.evaluation().tasks)

    def zero_shot_tasks(self) -> set[str]:
        """Tasks whose zero-shot evaluation is in eval.json (scored or found unscorable)."""
        return {name for name, entry in self.evaluation().tasks.items() if entry.zero_shot is not None}

    def metrics(self) -> list[dict]:
        """metrics.jsonl's rows ([] before the first logged step)."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def attempts(self) -> Attempts:
        path = self.path / ATTEMPTS
        if not path.exists():
            return Attempts()
        data = json.loads(path.read_text())
        return Attempts(data["preemptions"], data["failures"], tuple(data.get("errors", ())), data.get("failed"))

    def _write_attempts(self, record: Attempts) -> Attempts:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / ATTEMPTS, record.to_json())
        return record

    def record_attempt(self, kind: str, error: str) -> Attempts:
        """Count a preemption or a failure of this run, with its error."""
        old = self.attempts()
        errors = (old.errors + ({"kind": kind, "error": error[-2000:]},))[-10:]
        counts = {kind: getattr(old, kind) + 1}
        return self._write_attempts(dataclasses.replace(old, errors=errors, **counts))

    def mark_failed(self, error: str) -> None:
        self._write_attempts(dataclasses.replace(self.attempts(), failed=error[-2000:]))

    def clear_failed(self) -> None:
        """A new `sweep run` tries failed runs again; their counts stay."""
        old = self.attempts()
        if old.failed is not None:
            self._write_attempts(dataclasses.replace(old, failed=None))

    def last_checkpoint(self) -> int:
        """The last checkpointed step (what a resumed run starts from); 0 if none."""
        folder = self.path / CHECKPOINTS
        if not folder.exists():
            return 0
        return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)

    def finished(self, purpose: str):
        """The RunSpec and result of a run whose training finished ok, or a RunError saying why it cannot be used
        to `purpose` (evaluate, export)."""
        found = self.result()
        if found is None:
            raise RunError(f"{self.path}: no {RESULT}, so the run has not finished; train it before you {purpose} it")
        result = found[0]
        if result.status != "ok":
            raise RunError(f"{self.path}: the run is {result.status}; nothing to {purpose}")
        return self.start().run_spec(str(self.spec_path)), result
