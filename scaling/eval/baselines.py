"""Baselines on the same inputs as the models: count and last-value features, XGBoost and logistic regression.

For each task row, every event the task's inputs may use (strictly before the prediction time for the
built-in tasks, at or before it for MEDS label tasks unless told otherwise) is summarised per code among the
`TOP_CODES` most frequent train codes: how often it occurred, and, for codes with numbers, its last
value. Computed once per dataset and task and cached in PREP/baselines/<task>.json (aggregates only).
For the lab-bag families, the same two models also learn from exactly what those models read: the items'
last eCDF values and counts over the subject's bags in the 24 h before the prediction time
(PREP/baselines/<task>.bags.json).
Also here: the oracle, the true risks the synthetic MIMIC-IV keeps in `oracle/`.
"""

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from scaling.data.atomic import write_text
from scaling.data.dataset import PreparedDataset
from scaling.data.labbags import bags_before
from scaling.data.meds_io import SPLITS
from scaling.eval.probe import Split, class_counts, score, too_small

TOP_CODES = 200


def features(dataset: PreparedDataset, labels: pl.DataFrame, inclusive: bool = False) -> tuple[pl.DataFrame, list[str]]:
    """Per label row: count per top code and last value per numeric top code, from the static events and the
    events before the prediction time (at or before it when `inclusive`)."""
    events = pl.scan_parquet(sorted((dataset.root / "events" / "data").rglob("*.parquet")))
    train = dataset.splits().filter(pl.col("split") == SPLITS[0]).select("subject_id").lazy()
    top = (
        events.join(train, on="subject_id", how="semi")
        .group_by("code")
        .agg(n=pl.len(), numeric=pl.col("numeric_value").is_not_null().any())
        .sort(["n", "code"], descending=[True, False])
        .head(TOP_CODES)
        .collect()
    )
    rows = labels.with_row_index("row").lazy()
    # Static events (null time) are always seen, as they are by the models (the timeline's static context).
    timed = pl.col("time") <= pl.col("prediction_time") if inclusive else pl.col("time") < pl.col("prediction_time")
    seen = pl.col("time").is_null() | timed
    past = (
        rows.join(events.filter(pl.col("code").is_in(top["code"].implode())), on="subject_id", how="inner")
        .filter(seen)
        .sort("time")
    )
    agg = past.group_by("row", "code").agg(count=pl.len(), last=pl.col("numeric_value").drop_nulls().last()).collect()
    counts = agg.pivot(on="code", index="row", values="count")
    numeric_codes = top.filter("numeric")["code"].to_list()
    last = agg.filter(pl.col("code").is_in(numeric_codes)).pivot(on="code", index="row", values="last")
    last = last.rename({c: f"last:{c}" for c in last.columns if c != "row"})
    frame = labels.with_row_index("row").join(counts, on="row", how="left").join(last, on="row", how="left")
    columns = [c for c in frame.columns if c not in ("row", "subject_id", "prediction_time", "boolean_value")]
    count_columns = [c for c in columns if not c.startswith("last:")]
    frame = frame.with_columns([pl.col(c).fill_null(0) for c in count_columns])
    return frame, columns


def _splits(dataset: PreparedDataset, frame: pl.DataFrame, columns: list[str]) -> dict[str, Split]:
    joined = frame.join(dataset.splits(), on="subject_id", how="left")
    out = {}
    for split in SPLITS:
        part = joined.filter(pl.col("split") == split)
        out[split] = Split(
            x=part.select(columns).to_numpy().astype(np.float64), y=part["boolean_value"].to_numpy().astype(np.int64)
        )
    return out


def _fit_score(model_name: str, splits: dict[str, Split], seed: int) -> dict:
    train, held_out = splits["train"], splits["held_out"]
    if model_name == "xgboost":
        model = XGBClassifier(
            n_estimators=300,
            max_depth=4,
            learning_rate=0.05,
            subsample=0.8,
            colsample_bytree=0.8,
            random_state=seed,
            n_jobs=2,
            eval_metric="logloss",
        )
        model.fit(train.x, train.y)
        return score(held_out.y, model.predict_proba(held_out.x)[:, 1], seed)
    # Logistic regression: missing last values take the train median, plus a missing indicator.
    with warnings.catch_warnings():  # a feature no train row has (an item never in a bag) takes 0, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nan_to_num(np.nanmedian(train.x, axis=0))

    def prepare(x):
        missing = np.isnan(x)
        return np.hstack([np.where(missing, median, x), missing.astype(np.float64)])

    best = None
    for c in (1e-3, 1e-2, 1e-1, 1.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        model.fit(prepare(train.x), train.y)
        tuning = score(splits["tuning"].y, model.predict_proba(prepare(splits["tuning"].x))[:, 1], seed)["auroc"]
        if best is None or tuning > best[0]:
            best = (tuning, model)
    return score(held_out.y, best[1].predict_proba(prepare(held_out.x))[:, 1], seed)


def cached(dataset: PreparedDataset, name: str, compute: Callable[[], dict | None]) -> dict | None:
    """PREP/baselines/<name>.json, or `compute()` written there (null for None); written atomically, as sweep
    workers evaluating side by side may read it while another writes it."""
    cache = dataset.root / "baselines" / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    result = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_text(cache, json.dumps(result, indent=2) + "\n")
    return result


def baselines(dataset: PreparedDataset, task: str, seed: int = 0) -> dict:
    """XGBoost and logistic regression on count and last-value features; cached per dataset and task."""

    def compute() -> dict:
        frame, columns = features(dataset, dataset.task(task), dataset.task_inputs(task) == "at_or_before")
        return _score(_splits(dataset, frame, columns), seed, features=len(columns))

    return cached(dataset, task, compute)


def _score(splits: dict[str, Split], seed: int, **facts) -> dict:
    """XGBoost and logistic regression scored on the splits (or why they are too small), beside `facts` about the
    features."""
    reason = too_small(splits)
    if reason:
        return {"status": "too small", "reason": reason, "counts": class_counts(splits)}
    return {
        "status": "ok",
        **facts,
        "xgboost": _fit_score("xgboost", splits, seed),
        "logistic": _fit_score("logistic", splits, seed),
    }


def bag_features(
    dataset: PreparedDataset, rows: pl.DataFrame, split: str, inclusive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The lab-bag models' inputs as features: per row, each lab item's last eCDF value (NaN if none) and its count
    over the subject's bags in the 24 h before the prediction time; and which rows had such a bag (the others,
    as for the bag models' probes, are left out)."""
    bags = dataset.bags(split)
    items = dataset.lab_vocabulary().size
    windows = bags_before(bags, rows, inclusive)
    keep = np.array([len(w) > 0 for w in windows], dtype=bool)
    x = np.full((int(keep.sum()), 2 * items), np.nan)
    for out, window in enumerate(w for w in windows if len(w)):
        codes, values = np.asarray(bags.codes[window]).ravel(), np.asarray(bags.values[window]).ravel()
        lab = codes > 0
        x[out, items:] = np.bincount(codes[lab] - 1, minlength=items)
        valued = lab & ~np.isnan(values)
        latest_first = (codes[valued] - 1)[::-1]  # bags come in time order: the last value of an item wins
        item, at = np.unique(latest_first, return_index=True)
        x[out, item] = values[valued][::-1][at]
    return x, keep


def bag_baselines(dataset: PreparedDataset, task: str, seed: int = 0) -> dict | None:
    """XGBoost and logistic regression on the same bags the lab-bag models read (`bag_features`), on the rows
    that have one; cached per dataset and task. None when the dataset has no lab bags."""
    if not dataset.lab_vocabulary().size:
        return None

    def compute() -> dict:
        labels = dataset.task(task).join(dataset.splits(), on="subject_id", how="left")
        inclusive = dataset.task_inputs(task) == "at_or_before"
        splits, without = {}, {}
        for split in SPLITS:
            rows = labels.filter(pl.col("split") == split)
            x, keep = bag_features(dataset, rows, split, inclusive)
            splits[split] = Split(x=x, y=rows["boolean_value"].to_numpy().astype(np.int64)[keep])
            without[split] = int((~keep).sum())
        return _score(splits, seed, features=splits["train"].x.shape[1], rows_without_a_bag=without)

    return cached(dataset, f"{task}.bags", compute)


ORACLE = {  # task -> (oracle file, risk column, the time the prediction hours count from)
    "in_hospital_mortality": ("admissions", "risk_in_hospital_mortality", "admittime"),
    "long_stay": ("admissions", "risk_long_stay", "admittime"),
    "abnormal_creatinine": ("admissions", "risk_abnormal_creatinine", "admittime"),
    "icu_mortality": ("icustays", "risk_icu_mortality", "intime"),
}


def oracle(dataset: PreparedDataset, task: str, seed: int = 0) -> dict | None:
    """AUROC of the synthetic data's true risks on held_out (None when the source has no oracle/); cached per
    dataset and task like the baselines (scored for every run it took 0.7 s a task)."""
    return cached(dataset, f"{task}.oracle", lambda: _oracle(dataset, task, seed))


def _oracle(dataset: PreparedDataset, task: str, seed: int) -> dict | None:
    source = Path(dataset.manifest["source"]["path"])
    if task not in ORACLE or dataset.manifest["source"]["kind"] != "mimic":
        return None
    name, column, start = ORACLE[task]
    path = source / "oracle" / f"{name}.csv.gz"
    if not path.exists():
        return None
    hours = dataset.manifest["tasks"]["config"]["prediction_hours"]
    risks = pl.read_csv(path, columns=["subject_id", start, column], schema_overrides={start: pl.String}).select(
        pl.col("subject_id").cast(pl.Int64),
        prediction_time=pl.col(start).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us") + pl.duration(hours=hours),
        risk=pl.col(column).cast(pl.Float64),
    )
    held_out = dataset.task(task).join(dataset.splits().filter(pl.col("split") == "held_out"), on="subject_id")
    joined = held_out.join(risks, on=["subject_id", "prediction_time"], how="inner")
    if (
        joined.height < held_out.height
        or min(joined["boolean_value"].sum(), joined.height - joined["boolean_value"].sum()) < 1
    ):
        return None
    return score(joined["boolean_value"].to_numpy().astype(np.int64), joined["risk"].to_numpy(), seed)
