"""The lab-bag families' own metrics: masked item accuracy, value error and per-item correlation."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.eval.bag_metrics import MIN_PER_ITEM, summarise
from scaling.models.labrador import bert_masked_predictions


def test_summarise_pins_accuracy_error_and_per_item_correlation():
    true_value = np.concatenate([np.linspace(0.05, 0.95, 40), np.full(10, 0.5)])
    predicted_value = np.concatenate([0.5 * np.linspace(0.05, 0.95, 40) + 0.25, np.full(10, 0.3)])
    true_item = np.array([1] * 40 + [2] * 10)
    predicted_item = np.array([1] * 30 + [2] * 10 + [2] * 10)
    out = summarise(predicted_item, predicted_value, true_item, true_value, ("50912", "50971"))
    assert out["masked_bags"] == 50 and out["masked_item_accuracy"] == pytest.approx(40 / 50)
    # Item 1: a straight line of the truth (Pearson 1); item 2 has fewer than MIN_PER_ITEM bags and no spread.
    assert out["value_pearson_median"] == pytest.approx(1.0) and out["value_pearson_items"] == 1
    expected_mse = (np.sum((0.25 - 0.5 * np.linspace(0.05, 0.95, 40)) ** 2) + 10 * 0.2**2) / 50
    assert out["value_mse"] == pytest.approx(expected_mse)
    first, second = out["value_by_item"]
    assert (first["item"], first["n"], first["accuracy"]) == ("50912", 40, 0.75) and first["pearson"] == 1.0
    assert (second["item"], second["n"], second["pearson"]) == ("50971", 10, None) and 10 < MIN_PER_ITEM


def test_nothing_to_score_gives_no_numbers():
    out = summarise(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0), ())
    assert out["masked_bags"] == 0 and math.isnan(out["masked_item_accuracy"]) and out["value_by_item"] == []


class _FixedLogits:
    """A stand-in for Bert: the same logits at every slot."""

    def __init__(self, logits):
        self.logits = jnp.asarray(logits)

    def __call__(self, tokens, segment_ids):
        return jnp.broadcast_to(self.logits, (*tokens.shape, self.logits.shape[0]))


def test_bert_reads_the_value_off_the_true_items_decile_tokens():
    items = 2  # vocabulary: padding, 11 tokens per item, the mask: 24 tokens
    logits = np.zeros(1 + items * 11 + 1)
    logits[1 + 11 + 7] = 20.0  # item 2, decile 7 (eCDF 0.7 to 0.8): almost all the probability
    masked = jnp.asarray([[False, True, False], [True, False, False]])
    batch = {
        "tokens": jnp.zeros((2, 3), jnp.int32),
        "segment_ids": jnp.ones((2, 3), jnp.int32),
        "is_masked": masked,
        "target_code": jnp.where(masked, jnp.asarray([[0, 2, 0], [1, 0, 0]]), 0),
    }
    item, value = bert_masked_predictions(_FixedLogits(logits), batch)
    item, value = np.asarray(item)[np.asarray(masked)], np.asarray(value)[np.asarray(masked)]
    assert item.tolist() == [2, 2]
    # The true item 2: its decile-7 token dominates, so the value is its midpoint; item 1's deciles are flat.
    assert value[0] == pytest.approx(0.75, abs=1e-6) and value[1] == pytest.approx(0.5, abs=1e-6)
