"""How Labrador's value is learnt: the same model trained as it trains and told the masked item.

    .venv/bin/python benchmarks/value_reading.py [--prep out/demo/prep] [--width 48] [--layers 1] [--steps 1000]

Labrador masks a lab's item and its value together; to predict the value it must read it from related labs of
the bag (a hematocrit from a hemoglobin) for the item it is asked about. This trains one Labrador (the recipe's
heads and loss: the value head told the true item, the value weighted VALUE_WEIGHT; plain Adam at a fixed
learning rate, batches of 16 rows of 128 slots) twice, once as Labrador trains and once with the masked slot's
item code left on it (the value stays masked), and prints every `--every` steps the held-out item
cross-entropy and value MSE read with the predicted item (eCDF scale; a constant 0.5 scores 1/12 = 0.083),
beside the data's own ceiling: a per-item ridge regression on the other labs' values and presence, told the
item (what a model can reach at best with a linear reading of the bag). Single-threaded XLA; about 25 s per
1,000 steps at width 48. docs/models.md ("Labrador's value") has what it found.
"""

import argparse
import os

# Single-threaded, as a sweep's CPU worker runs (scaling/sweep/driver.py); set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402

from scaling.data.dataset import PreparedDataset  # noqa: E402
from scaling.data.loaders import BagLoader  # noqa: E402
from scaling.models.labrador import Labrador, labrador_row_loss, read_at  # noqa: E402
from scaling.models.shapes import EncoderConfig  # noqa: E402
from scaling.recipe import Recipe  # noqa: E402

FIELDS = ("codes", "values", "is_null", "is_masked", "segment_ids", "target_code", "target_value")
FIELDS += ("read_slots", "read_valid")


def as_dict(batch, tell: bool) -> dict:
    """A bag batch as the loss reads it; `tell` puts the masked item's code back on its slot."""
    out = {name: jnp.asarray(getattr(batch, name)) for name in FIELDS}
    if tell:
        out["codes"] = jnp.where(out["is_masked"], out["target_code"], out["codes"])
    return out


def ridge_ceiling(dataset: PreparedDataset, items: int, train_batches: int, test_batches: int) -> tuple[float, float]:
    """(MSE of a per-item ridge told the item, variance of the masked values) on held-out masked labs."""

    def features(split: str, batches: int):
        loader = BagLoader(dataset.bags(split), items, 64, 128, seed=0, mask="fixed", shuffle=False)
        rows_x, rows_y, rows_item = [], [], []
        for step in range(min(batches, loader.steps_per_epoch)):
            b = loader.batch(step)
            for row in range(b.codes.shape[0]):
                for bag in range(1, int(b.segment_ids[row].max()) + 1):
                    slots = b.segment_ids[row] == bag
                    known = slots & ~b.is_masked[row] & ~b.is_null[row]
                    x = np.zeros(2 * items)
                    x[b.codes[row][known] - 1] = b.values[row][known]
                    x[items + b.codes[row][known] - 1] = 1.0
                    masked = slots & b.is_masked[row]
                    rows_x.append(x)
                    rows_y.append(b.target_value[row][masked][0])
                    rows_item.append(b.target_code[row][masked][0])
        return np.array(rows_x), np.array(rows_y), np.array(rows_item)

    x_train, y_train, item_train = features("train", train_batches)
    x_test, y_test, item_test = features("held_out", test_batches)
    predicted = np.full(len(y_test), float(y_train.mean()))
    for code in np.unique(item_test):
        fit, test = item_train == code, item_test == code
        if fit.sum() >= 30:
            predicted[test] = np.clip(Ridge(alpha=1.0).fit(x_train[fit], y_train[fit]).predict(x_test[test]), 0, 1)
    return float(np.mean((predicted - y_test) ** 2)), float(np.var(y_test))


def train(dataset: PreparedDataset, items: int, args, tell: bool) -> list[tuple[int, float, float]]:
    """Held-out (step, item CE, value MSE) every `args.every` steps of one model."""
    recipe = Recipe(family="labrador")
    config = EncoderConfig(
        n_items=items,
        d_model=args.width,
        n_layers=args.layers,
        n_heads=recipe.heads(args.width),
        d_ff=recipe.d_ff(args.width),
        context=128,
    )
    model = Labrador(config, nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr), wrt=nnx.Param)
    train_loader = BagLoader(dataset.bags("train"), items, 16, 128, seed=args.seed, bags_per_row=16)
    held_out = BagLoader(dataset.bags("held_out"), items, 64, 128, seed=0, mask="fixed", shuffle=False, bags_per_row=16)
    evaluation = [as_dict(held_out.batch(i), tell) for i in range(4)]

    def terms(m, b):
        logits, value = m(
            b["codes"], b["values"], b["is_null"], b["is_masked"], b["segment_ids"], read_slots=b["read_slots"]
        )
        logp = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.take_along_axis(
            logp, jnp.maximum(read_at(b["target_code"], b["read_slots"]) - 1, 0)[..., None], axis=-1
        )[..., 0]
        n = b["read_valid"].sum()
        return jnp.where(b["read_valid"], ce, 0).sum() / n, jnp.where(
            b["read_valid"], (value - read_at(b["target_value"], b["read_slots"])) ** 2, 0
        ).sum() / n

    @nnx.jit
    def step(m, o, b):
        def loss(m):
            sums, counts = labrador_row_loss(m, b, jnp.float32)
            return sums.sum() / counts.sum()

        o.update(m, nnx.grad(loss)(m))

    evaluate, curve = nnx.jit(terms), []
    for s in range(args.steps + 1):
        if s % args.every == 0:
            ce, mse = np.mean([np.asarray(evaluate(model, b)) for b in evaluation], axis=0)
            curve.append((s, float(ce), float(mse)))
        if s < args.steps:
            step(model, optimizer, as_dict(train_loader.batch(s), tell))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prep", type=Path, default=Path("out/demo/prep"))
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = PreparedDataset.open(args.prep)
    items = dataset.lab_vocabulary().size
    ceiling, variance = ridge_ceiling(dataset, items, 300, 60)
    print(f"{args.prep}: masked values' variance {variance:.4f}; per-item ridge told the item: MSE {ceiling:.4f}")
    for tell in (False, True):
        started = time.perf_counter()
        curve = train(dataset, items, args, tell)
        label = "told the item" if tell else "as Labrador trains (item masked too)"
        print(f"width {args.width}, {args.layers} layer(s), {label} ({time.perf_counter() - started:.0f} s):")
        for s, ce, mse in curve:
            print(f"  step {s:>6,}: item CE {ce:.3f}, value MSE {mse:.4f}")


if __name__ == "__main__":
    main()
