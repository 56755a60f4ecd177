"""One place per model family: what it trains on, the model a width makes, its size, its loss and its unit, what a
probe reads of it, and what its model card says. The timeline decoder, Labrador and the BERT baseline are the
entries of FAMILIES; a fourth family is one more entry here (and its model under scaling/models/); a new kind of
data, one more DataKind.

Planning reads only the data-level fields (inputs, config, params), so `sweep plan` and `sweep status` never import
JAX; the model class, its batch loss and its probe input are imported when a run builds its model.
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from scaling.data.dataset import DatasetError, ModelInputs, PreparedDataset
from scaling.data.labbags import bert_tokens, bert_vocab_size
from scaling.data.loaders import BagLoader, TimelineLoader, longest_bag_error, pack_bags
from scaling.models.shapes import (
    DecoderConfig,
    EncoderConfig,
    bert_params,
    labrador_extra_forward,
    labrador_params,
    labrador_read_forward,
)


@dataclass(frozen=True)
class DataKind:
    """The part of a prepared dataset a family trains on, and what follows from it: how batches are built, which
    tokenizer files an export carries, how evaluation reads a cohort row, which recipe fields matter."""

    name: str  # the manifest's section: "timelines" or "bags"
    batch_fields: tuple[str, ...]  # the loader batch's fields the loss reads
    loader: Callable  # (dataset, split, recipe, rows, seed, evaluation) -> a loader with .batch(step)
    tokenizer_files: tuple[str, ...]  # under the prepared dataset's root: what turns data into the model's input
    vectors: str  # "module:function": a frozen model's vector per cohort row (scaling.eval.evaluate)
    packs_bags: bool  # rows are bags packed whole: bags_per_row applies, and the bags' own baselines are scored
    card: Callable  # (manifest, model config dict, family) -> the model card's "input it expects" and "data it saw"


def _timeline_loader(dataset, split, recipe, rows, seed, evaluation):
    return TimelineLoader(dataset.timelines(split), recipe.context, rows, seed=seed, shuffle=not evaluation)


def _bag_loader(dataset, split, recipe, rows, seed, evaluation):
    items = dataset.lab_vocabulary().size
    options = {"mask": "fixed", "shuffle": False} if evaluation else {}  # the same masked labs every evaluation
    return BagLoader(
        dataset.bags(split), items, rows, recipe.context, seed=seed, bags_per_row=recipe.bags_per_row, **options
    )


def _timeline_card(manifest: dict, model_config: dict, family: "Family") -> tuple[str, str]:
    tokenizer = manifest["tokenizer"]
    inputs = (
        f"Token sequences of {model_config['context']} tokens from MEDS events, tokenised as `tokenizer/` says: "
        f"{model_config['vocab_size']:,} tokens (`vocab.parquet`: MEDS codes, value deciles per code in "
        f"`quantiles.parquet`, {tokenizer['quantiles']} quantiles; time-interval tokens "
        f"'{tokenizer['intervals']['name']}'; `tokenizer.json` has every setting). A patient's history is read "
        "oldest first; the probe reads the hidden state at its last token." + family.input_note
    )
    train = manifest["timelines"]["train"]
    return inputs, f"{train['subjects']:,} training subjects' timelines, {train['tokens']:,} tokens"


def _bag_card(manifest: dict, model_config: dict, family: "Family") -> tuple[str, str]:
    bags = manifest["bags"]
    inputs = (
        f"Lab bags (the labs drawn at one time) of up to {bags['config']['max_labs']} labs over {bags['items']} "
        "lab items (`tokenizer/lab_vocab.parquet`, item ids as in MEDS codes `LAB//<itemid>//<unit>`), each "
        "value mapped to its item's eCDF (`ecdf_values.npy`, `ecdf_cdf.npy`, `ecdf_offsets.npy`)"
        + family.input_note
        + f"; packed {model_config['context']} slots a row. The probe reads the mean embedding of the bags "
        "in the 24 hours before the prediction time."
    )
    return inputs, f"{bags['bags_by_split']['train']:,} training lab bags"


TIMELINES = DataKind(
    name="timelines",
    batch_fields=("inputs", "targets", "segment_ids", "positions", "loss_mask"),
    loader=_timeline_loader,
    tokenizer_files=("vocab/vocab.parquet", "vocab/quantiles.parquet", "vocab/tokenizer.json"),
    vectors="scaling.eval.evaluate:timeline_vectors",
    packs_bags=False,
    card=_timeline_card,
)
BAGS = DataKind(
    name="bags",
    batch_fields=(
        "codes",
        "values",
        "is_null",
        "is_masked",
        "segment_ids",
        "target_code",
        "target_value",
        "tokens",
        "target_token",
        "read_slots",
        "read_valid",
    ),
    loader=_bag_loader,
    tokenizer_files=(
        "labbags/lab_vocab.parquet",
        "labbags/ecdf_values.npy",
        "labbags/ecdf_cdf.npy",
        "labbags/ecdf_offsets.npy",
        "labbags/bags.json",
    ),
    vectors="scaling.eval.evaluate:bag_vectors",
    packs_bags=True,
    card=_bag_card,
)


def _stack(recipe, width: int) -> dict:
    """The block stack every family builds from the recipe at a width."""
    return {
        "d_model": width,
        "n_layers": recipe.layers(width),
        "n_heads": recipe.heads(width),
        "d_ff": recipe.d_ff(width),
        "context": recipe.context,
    }


def _decoder_config(recipe, width: int, vocab_size: int) -> DecoderConfig:
    return DecoderConfig(vocab_size=vocab_size, tie_embeddings=recipe.tie_embeddings, **_stack(recipe, width))


def _encoder_config(recipe, width: int, vocab_size: int) -> EncoderConfig:
    return EncoderConfig(n_items=vocab_size, **_stack(recipe, width))


def _labrador_probe_input(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Labrador reads codes, values (0 where there is none) and the null flags."""
    return codes, np.nan_to_num(values), np.isnan(values) & (codes > 0)


def _bert_probe_input(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
    """BERT reads one (item, eCDF decile) token per lab."""
    return (bert_tokens(codes, values),)


@dataclass(frozen=True)
class Family:
    """Everything that differs between model families."""

    name: str
    data: DataKind  # TIMELINES or BAGS: the part of the prepared dataset it trains on
    description: str  # one sentence for the model card
    loss_unit: str  # what the loss measures, as axes and reports say it
    vocab_size: Callable[[PreparedDataset], int]  # the model's vocabulary on a dataset
    config: Callable[..., DecoderConfig | EncoderConfig]  # (recipe, width, vocab size) -> the model's config
    params: Callable[[DecoderConfig | EncoderConfig], tuple[int, int]]  # (all, non-embedding) parameters
    model: str  # "module:Class", an nnx.Module built from the config and nnx.Rngs
    row_loss: str  # "module:function", (model, batch dict, dtype) -> per-row loss sums and their term counts
    probe_input: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]] | None = None  # bags -> model.embed args
    masked_predictions: str | None = None  # "module:function", (model, bag batch) -> masked item and value per slot
    imputed_values: str | None = None  # "module:function", (model, bag batch) -> the masked lab's value told its item
    extra_forward: Callable[[DecoderConfig | EncoderConfig], float] = lambda config: 0.0  # FLOPs/token beyond the stack
    read_forward: Callable[[DecoderConfig | EncoderConfig], float] = lambda config: 0.0  # per read slot, beyond logits
    # The recipe's lr = lr_width_product / width when a spec sets none: measured with `sweeps/lr-calibration*.toml`
    # and `ehrscale lr-fit` (docs/models.md); 1.0 where no calibration was run.
    lr_width_product: float = 1.0
    input_note: str = ""  # how the model card's input paragraph ends for this family, beyond its data kind's
    generates: bool = False  # a next-token model over timelines: it generates futures (zero-shot evaluation)
    # Raised when the model or its loss changes what a run trains: the fingerprint covers it above 1, so a run of an
    # earlier revision is never taken for one of this revision (nor resumed from its checkpoint).
    revision: int = 1

    def inputs(self, dataset: PreparedDataset, context: int, bags_per_row: int | None = None) -> ModelInputs:
        """Vocabulary, context and epoch size (rows of `context` tokens) of this family's model on a dataset; bags
        are packed whole into rows of `context` slots, at most `bags_per_row` a row, as `BagLoader` packs them."""
        if not self.data.packs_bags:
            tokens = dataset.timeline_tokens("train")
            return ModelInputs(self.vocab_size(dataset), context, tokens / context)
        lengths = self.check_context(dataset, context)
        rows, _ = pack_bags(lengths, context, bags_per_row)
        return ModelInputs(self.vocab_size(dataset), context, float(rows[-1] + 1) if len(rows) else 0.0)

    def check_context(self, dataset: PreparedDataset, context: int) -> np.ndarray | None:
        """A bag family's train bag lengths, once they are known to fit rows of `context` slots (DatasetError if
        not); None for a timeline family."""
        if not self.data.packs_bags:
            return None
        lengths = np.asarray(dataset.bags("train").lengths)
        too_long = longest_bag_error(lengths, context)
        if too_long:
            raise DatasetError(f"{dataset.root}: {too_long}")
        return lengths

    def vectors(self) -> Callable:
        return _load(self.data.vectors)

    def model_class(self) -> type:
        return _load(self.model)

    def loss(self) -> Callable:
        return _load(self.row_loss)

    def masked_predictor(self) -> Callable | None:
        return _load(self.masked_predictions) if self.masked_predictions else None

    def imputer(self) -> Callable | None:
        return _load(self.imputed_values) if self.imputed_values else None


def _load(path: str):
    module, name = path.split(":")
    return getattr(import_module(module), name)


FAMILIES = {
    "timeline": Family(
        name="timeline",
        data=TIMELINES,
        description="a Llama-style causal decoder over patient timelines (next-token prediction on MEDS event tokens)",
        loss_unit="nats per token",
        vocab_size=lambda dataset: dataset.vocabulary().size,
        config=_decoder_config,
        params=lambda config: (config.params(), config.params_nonembed()),
        model="scaling.models.decoder:Decoder",
        row_loss="scaling.models.decoder:decoder_row_loss",
        lr_width_product=0.56,  # lr-fit on the demo data: best 0.564x of 1.0 / width, 95% [0.385, 0.827]
        generates=True,
    ),
    "labrador": Family(
        name="labrador",
        data=BAGS,
        description="Labrador: a bidirectional encoder over lab bags (the labs drawn at one time) with continuous "
        "eCDF values, trained to recover masked labs (their item and value)",
        loss_unit="CE + MSE per masked lab",
        vocab_size=lambda dataset: dataset.lab_vocabulary().size,
        config=_encoder_config,
        params=labrador_params,
        model="scaling.models.labrador:Labrador",
        row_loss="scaling.models.labrador:labrador_row_loss",
        probe_input=_labrador_probe_input,
        masked_predictions="scaling.models.labrador:labrador_masked_predictions",
        imputed_values="scaling.models.labrador:labrador_imputed_values",
        extra_forward=labrador_extra_forward,
        read_forward=labrador_read_forward,
        # lr-fit (sweeps/lr-calibration-labrador.toml, 1e12 FLOPs): best 0.422x and 0.539x of 1.0 / width at widths
        # 32 and 64, 0.25x (the edge) at 16 and 96; 1.0 / width lost at every width (docs/models.md)
        lr_width_product=0.48,
        revision=2,  # 2: each item's own value direction, the per-item value head told the true item, VALUE_WEIGHT
    ),
    "bert": Family(
        name="bert",
        data=BAGS,
        description="a BERT baseline over lab bags: one (lab item, eCDF decile) token per lab, trained to recover "
        "masked tokens",
        loss_unit="nats per masked lab",
        input_note=", then to its decile token",
        vocab_size=lambda dataset: bert_vocab_size(dataset.lab_vocabulary().size),
        config=_encoder_config,
        params=bert_params,
        model="scaling.models.labrador:Bert",
        row_loss="scaling.models.labrador:bert_row_loss",
        probe_input=_bert_probe_input,
        masked_predictions="scaling.models.labrador:bert_masked_predictions",
        imputed_values="scaling.models.labrador:bert_imputed_values",
        # lr-fit (sweeps/lr-calibration-bert.toml, 1e12 FLOPs): best 0.393x of 1.0 / width at width 32, 0.25x (the
        # edge) at 16 and 64; 1.0 / width lost at every width (docs/models.md)
        lr_width_product=0.39,
    ),
}


def loss_units() -> dict[str, str]:
    """Each family's loss unit, for the analysis (which imports nothing of scaling) to label its axes."""
    return {name: family.loss_unit for name, family in FAMILIES.items()}
