"""The lab-bag families' own metrics: how well a masked lab is recovered, on a fixed set of held-out bags.

Every bag of the set has one lab masked (the same lab for every run: `BagLoader`'s fixed mask, seed 0), and
the model is scored on it:
- `masked_item_accuracy`: the share of bags whose most likely item is the masked item (both families);
- the value, on the eCDF scale: Labrador's continuous head; BERT's read off its tokens of the true item, the
  expected decile midpoint under the model's probabilities of that item's ten decile tokens. Then
  `value_mse` over all bags, and per item with at least `MIN_PER_ITEM` masked bags the Pearson correlation
  of predicted and true value: `value_pearson_median` over those items, and `value_by_item` for the most
  frequent items.
Labrador predicts the value without being told the item; BERT's reading is given it, which favours BERT.
"""

import math

import jax
import numpy as np
from flax import nnx

from scaling.data.dataset import PreparedDataset
from scaling.data.loaders import BagLoader

METRICS_SPLIT = "held_out"
METRICS_BAGS = 4096  # at most; a smaller split gives all its bags with a value
BATCH_ROWS = 16
MIN_PER_ITEM = 30
TOP_ITEMS = 10


def summarise(
    predicted_item: np.ndarray,
    predicted_value: np.ndarray,
    true_item: np.ndarray,
    true_value: np.ndarray,
    item_names: tuple[str, ...],
) -> dict:
    """The metrics of masked predictions (items are 1-based codes into `item_names`)."""
    predicted_value, true_value = np.asarray(predicted_value, np.float64), np.asarray(true_value, np.float64)
    per_item = []
    for code in np.unique(true_item):
        rows = true_item == code
        n = int(rows.sum())
        if n < MIN_PER_ITEM or np.std(true_value[rows]) == 0 or np.std(predicted_value[rows]) == 0:
            pearson = None
        else:
            pearson = float(np.corrcoef(predicted_value[rows], true_value[rows])[0, 1])
        per_item.append(
            {
                "item": item_names[int(code) - 1],
                "n": n,
                "accuracy": float(np.mean(predicted_item[rows] == code)),
                "mse": float(np.mean((predicted_value[rows] - true_value[rows]) ** 2)),
                "pearson": pearson,
            }
        )
    scored = [entry["pearson"] for entry in per_item if entry["pearson"] is not None]
    per_item.sort(key=lambda entry: (-entry["n"], entry["item"]))
    return {
        "masked_split": METRICS_SPLIT,
        "masked_bags": int(len(true_item)),
        "masked_item_accuracy": float(np.mean(predicted_item == true_item)) if len(true_item) else math.nan,
        "value_mse": float(np.mean((predicted_value - true_value) ** 2)) if len(true_item) else math.nan,
        "value_pearson_median": float(np.median(scored)) if scored else math.nan,
        "value_pearson_items": len(scored),
        "value_by_item": per_item[:TOP_ITEMS],
    }


def masked_lab_metrics(model: nnx.Module, predictions, dataset: PreparedDataset, context: int) -> dict:
    """`summarise` of a trained bag model's predictions (`predictions`: its family's masked-prediction function)
    on the fixed set of held-out bags, packed into rows of the run's `context`."""
    vocabulary = dataset.lab_vocabulary()
    try:
        loader = BagLoader(
            dataset.bags(METRICS_SPLIT), vocabulary.size, BATCH_ROWS, context, seed=0, mask="fixed", shuffle=False
        )
    except ValueError:  # fewer bags with a value than one batch
        return {"masked_split": METRICS_SPLIT, "masked_bags": 0}
    predict = nnx.jit(predictions)
    fields = ("codes", "values", "is_null", "is_masked", "segment_ids", "tokens", "target_code")  # what either reads
    parts, bags = [], 0
    for step in range(loader.steps_per_epoch):
        batch = loader.batch(step)
        item, value = predict(model, {f: jax.numpy.asarray(getattr(batch, f)) for f in fields})
        at = batch.is_masked  # one masked lab per bag, in the split's fixed order
        parts.append((np.asarray(item)[at], np.asarray(value)[at], batch.target_code[at], batch.target_value[at]))
        bags += int(at.sum())
        if bags >= METRICS_BAGS:
            break
    columns = [np.concatenate([p[i] for p in parts])[:METRICS_BAGS] for i in range(4)]
    return summarise(*columns, item_names=vocabulary.items)
