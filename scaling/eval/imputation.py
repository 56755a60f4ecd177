"""Labrador's intrinsic task, imputation: each of the most frequent lab items masked in held-out bags and its value
predicted, the model told which item it is asked for.

For each of the `TOP_ITEMS` items with the most values in the held-out bags, every held-out bag (at most
`BAGS_PER_ITEM`) where the item has a value is read with that lab masked (its item and value hidden from the
encoder, as in pre-training), and the model predicts the value on the eCDF scale: Labrador's continuous head told
the item; BERT's expected decile midpoint over the item's ten decile tokens. Beside it, three regressors learn the
same value from the same bag's other labs (their eCDF values and which are present) on the train split's bags:
the item's mean, a ridge regression and XGBoost, one per item. Per item: MSE and Pearson r; over all: the MSE of
every scored bag (with its standard error) and the median of the items' Pearson r. The regressors depend only on
the dataset: cached in PREP/baselines/imputation.json (aggregates only).
"""

import json
import math
import time

import jax
import numpy as np
from flax import nnx
from sklearn.linear_model import Ridge
from xgboost import XGBRegressor

from scaling.data.dataset import PreparedDataset
from scaling.data.loaders import BagLoader, maskable_bags
from scaling.eval.baselines import cached
from scaling.record import ImputationRecord

SPLIT = "held_out"
FIT_SPLIT = "train"
TOP_ITEMS = 10
BAGS_PER_ITEM = 1024  # held-out bags scored per item, at most
FIT_BAGS_PER_ITEM = 4096  # train bags the regressors learn from per item, at most
ROWS = 64  # bags a batch, one a row
BASELINES = ("item_mean", "ridge", "xgboost")
MODEL_FIELDS = ("codes", "values", "is_null", "is_masked", "segment_ids", "tokens", "target_code")


def top_items(dataset: PreparedDataset, k: int = TOP_ITEMS) -> list[int]:
    """The 1-based codes of the k items with the most values in the held-out bags (ties: the lower code)."""
    bags = dataset.bags(SPLIT)
    codes, values = np.asarray(bags.codes), np.asarray(bags.values)
    counts = np.bincount(codes[(codes > 0) & ~np.isnan(values)], minlength=dataset.lab_vocabulary().size + 1)[1:]
    order = np.lexsort((np.arange(len(counts)), -counts))
    return [int(i) + 1 for i in order[:k] if counts[i] > 0]


def masked_batches(dataset: PreparedDataset, split: str, item: int, context: int, limit: int) -> list:
    """Batches of one bag a row with `item` masked in each: the first bags of the split where it has a value, in
    the split's order, in whole batches of up to `ROWS` rows holding at most `limit` bags ([] if none)."""
    bags, items = dataset.bags(split), dataset.lab_vocabulary().size
    rows = min(ROWS, len(maskable_bags(bags, item)), limit)
    if rows == 0:
        return []
    loader = BagLoader(bags, items, rows, context, mask="fixed", shuffle=False, bags_per_row=1, mask_item=item)
    return [loader.batch(step) for step in range(min(loader.steps_per_epoch, limit // rows))]


def bag_features(batch, items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row (one bag): the other labs' eCDF values (0 where absent or null) and presence flags [rows, 2 items],
    and the masked lab's value [rows]."""
    rows = batch.codes.shape[0]
    x = np.zeros((rows, 2 * items))
    known = (batch.codes > 0) & (batch.codes <= items) & ~batch.is_masked & ~batch.is_null
    r, t = np.nonzero(known)
    x[r, batch.codes[r, t] - 1] = batch.values[r, t]
    x[r, items + batch.codes[r, t] - 1] = 1.0
    return x, batch.target_value[batch.is_masked]


def scores(predicted: np.ndarray, true: np.ndarray) -> dict:
    """MSE (with its standard error) and Pearson r of predicted against true values."""
    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    squared = (predicted - true) ** 2
    pearson = None
    if len(true) >= 3 and np.std(true) > 0 and np.std(predicted) > 0:
        pearson = float(np.corrcoef(predicted, true)[0, 1])
    se = float(np.std(squared, ddof=1) / math.sqrt(len(squared))) if len(squared) > 1 else None
    return {"mse": float(np.mean(squared)), "mse_se": se, "pearson": pearson}


def summary(per_item: list[dict], squared: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """Over all items, per predictor: the MSE of every scored bag with its standard error, and the median Pearson r
    of the items."""
    out = {}
    for name, parts in squared.items():
        errors = np.concatenate(parts)
        pearsons = [entry[name]["pearson"] for entry in per_item if entry[name]["pearson"] is not None]
        out[name] = {
            "mse": float(np.mean(errors)),
            "mse_se": float(np.std(errors, ddof=1) / math.sqrt(len(errors))) if len(errors) > 1 else None,
            "pearson_median": float(np.median(pearsons)) if pearsons else None,
        }
    return out


def score_items(items: list[tuple[dict, np.ndarray, dict[str, np.ndarray]]]) -> tuple[list[dict], dict[str, dict]]:
    """Per item (its entry so far, the true values, each predictor's guesses): the entry with each predictor's
    scores; and over all items, `summary` per predictor."""
    per_item, squared = [], {}
    for entry, true, guesses in items:
        per_item.append(entry | {name: scores(guess, true) for name, guess in guesses.items()})
        for name, guess in guesses.items():
            squared.setdefault(name, []).append((guess - true) ** 2)
    return per_item, summary(per_item, squared)


def _regressors(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Each baseline's held-out predictions, learnt from the train bags."""
    xgboost = XGBRegressor(
        n_estimators=200, max_depth=4, learning_rate=0.05, subsample=0.8, random_state=seed, n_jobs=2
    )
    return {
        "item_mean": np.full(len(x_test), float(np.mean(y_train))),
        "ridge": np.clip(Ridge(alpha=1.0).fit(x_train, y_train).predict(x_test), 0, 1),
        "xgboost": np.clip(xgboost.fit(x_train, y_train).predict(x_test), 0, 1),
    }


def longest_bag(dataset: PreparedDataset) -> int:
    """The most labs of a bag in the splits imputation reads (the rows its regressors' batches need)."""
    return max(int(np.max(dataset.bags(split).lengths, initial=1)) for split in (FIT_SPLIT, SPLIT))


def baseline_predictions(dataset: PreparedDataset, items: list[int], seed: int = 0) -> dict:
    """Per item (its code as a string): the held-out targets and each baseline's predictions; cached per dataset
    (computed again, not cached, for another list of items)."""
    n_items, context = dataset.lab_vocabulary().size, longest_bag(dataset)

    def compute() -> dict:
        out = {}
        for item in items:
            train = masked_batches(dataset, FIT_SPLIT, item, context, FIT_BAGS_PER_ITEM)
            test = masked_batches(dataset, SPLIT, item, context, BAGS_PER_ITEM)
            if not train or not test:
                continue
            x_train, y_train = (np.concatenate(p) for p in zip(*(bag_features(b, n_items) for b in train)))
            x_test, y_test = (np.concatenate(p) for p in zip(*(bag_features(b, n_items) for b in test)))
            predicted = _regressors(x_train, y_train, x_test, seed)
            out[str(item)] = {"train_bags": len(y_train), "true": y_test.tolist()} | {
                name: values.tolist() for name, values in predicted.items()
            }
        return {"items": items, "predictions": out}

    found = cached(dataset, "imputation", compute)
    return (found if found["items"] == items else compute())["predictions"]


def impute(
    model: nnx.Module, imputed_values, dataset: PreparedDataset, context: int, seed: int = 0
) -> ImputationRecord:
    """The imputation record of a trained bag model (`imputed_values`: its family's function of (model, batch) ->
    the masked slot's value told its item)."""
    started = time.perf_counter()
    vocabulary = dataset.lab_vocabulary()
    items = top_items(dataset)
    baselines = baseline_predictions(dataset, items, seed)
    predict = nnx.jit(imputed_values)
    scored = []
    for item in items:
        if str(item) not in baselines:
            continue
        values = []
        for batch in masked_batches(dataset, SPLIT, item, context, BAGS_PER_ITEM):
            fields = {f: jax.numpy.asarray(getattr(batch, f)) for f in MODEL_FIELDS}
            values.append(np.asarray(predict(model, fields))[batch.is_masked])
        known = baselines[str(item)]
        true = np.asarray(known["true"])
        values = np.concatenate(values)
        assert len(values) == len(true), "the model and the regressors read the same bags"
        predicted = {"model": values} | {n: np.asarray(known[n]) for n in BASELINES}
        entry = {"item": vocabulary.items[item - 1], "n": len(true), "train_bags": known["train_bags"]}
        scored.append((entry, true, predicted))
    if not scored:
        raise ValueError(f"{dataset.root}: no held-out bag has a value of any lab item; nothing to impute")
    per_item, overall = score_items(scored)
    return ImputationRecord(
        split=SPLIT,
        bags=sum(entry["n"] for entry in per_item),
        model=overall["model"],
        baselines={name: overall[name] for name in BASELINES},
        items=per_item,
        seconds=round(time.perf_counter() - started, 2),
    )


def describe(record: ImputationRecord) -> str:
    """A few lines for the terminal: the model against the baselines, over all and per item."""

    def pair(entry: dict, key: str = "pearson_median") -> str:
        r = entry.get(key)
        return f"MSE {entry['mse']:.4f}, r {r:.3f}" if r is not None else f"MSE {entry['mse']:.4f}, r -"

    head = f"imputation ({record.bags:,} held-out bags, {len(record.items)} items, told the item)"
    lines = [
        f"{head}: model {pair(record.model)}"
        + "".join(f"; {name} {pair(entry)}" for name, entry in record.baselines.items())
    ]
    for entry in record.items:
        lines.append(
            f"  {entry['item']} ({entry['n']}): model {pair(entry['model'], 'pearson')}; ridge "
            f"{pair(entry['ridge'], 'pearson')}; xgboost {pair(entry['xgboost'], 'pearson')}"
        )
    return "\n".join(lines)


def dumps(record: ImputationRecord) -> str:
    return json.dumps(record.to_json(), indent=2)
