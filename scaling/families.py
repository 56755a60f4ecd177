"""One place per model family: what it trains on, the model a width makes, its size, its loss, and what a probe
reads of it. The timeline decoder, Labrador and the BERT baseline are the entries of FAMILIES; a fourth family is
one more entry here (and its model under scaling/models/).

Planning reads only the data-level fields (inputs, config, params), so `sweep plan` and `sweep status` never import
JAX; the model class, its batch loss and its probe input are imported when a run builds its model.
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from scaling.data.dataset import DatasetError, ModelInputs, PreparedDataset
from scaling.data.labbags import bert_tokens, bert_vocab_size
from scaling.data.loaders import longest_bag_error, pack_bags
from scaling.models.shapes import (
    DecoderConfig,
    EncoderConfig,
    bert_params,
    labrador_extra_forward,
    labrador_params,
    labrador_read_forward,
)

TIMELINES, BAGS = "timelines", "bags"


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
    data: str  # TIMELINES or BAGS: the part of the prepared dataset it trains on
    vocab_size: Callable[[PreparedDataset], int]  # the model's vocabulary on a dataset
    config: Callable[..., DecoderConfig | EncoderConfig]  # (recipe, width, vocab size) -> the model's config
    params: Callable[[DecoderConfig | EncoderConfig], tuple[int, int]]  # (all, non-embedding) parameters
    model: str  # "module:Class", an nnx.Module built from the config and nnx.Rngs
    row_loss: str  # "module:function", (model, batch dict, dtype) -> per-row loss sums and their term counts
    probe_input: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]] | None = None  # bags -> model.embed args
    masked_predictions: str | None = None  # "module:function", (model, bag batch) -> masked item and value per slot
    extra_forward: Callable[[DecoderConfig | EncoderConfig], float] = lambda config: 0.0  # FLOPs/token beyond the stack
    read_forward: Callable[[DecoderConfig | EncoderConfig], float] = lambda config: 0.0  # per read slot, beyond logits
    # The recipe's lr = lr_width_product / width when a spec sets none: measured with `sweeps/lr-calibration*.toml`
    # and `ehrscale lr-fit` (docs/models.md); 1.0 where no calibration was run.
    lr_width_product: float = 1.0

    def inputs(self, dataset: PreparedDataset, context: int, bags_per_row: int | None = None) -> ModelInputs:
        """Vocabulary, context and epoch size (rows of `context` tokens) of this family's model on a dataset; bags
        are packed whole into rows of `context` slots, at most `bags_per_row` a row, as `BagLoader` packs them."""
        if self.data == TIMELINES:
            tokens = dataset.timeline_tokens("train")
            return ModelInputs(self.vocab_size(dataset), context, tokens / context)
        lengths = self.check_context(dataset, context)
        rows, _ = pack_bags(lengths, context, bags_per_row)
        return ModelInputs(self.vocab_size(dataset), context, float(rows[-1] + 1) if len(rows) else 0.0)

    def check_context(self, dataset: PreparedDataset, context: int) -> np.ndarray | None:
        """A bag family's train bag lengths, once they are known to fit rows of `context` slots (DatasetError if
        not); None for a timeline family."""
        if self.data == TIMELINES:
            return None
        lengths = np.asarray(dataset.bags("train").lengths)
        too_long = longest_bag_error(lengths, context)
        if too_long:
            raise DatasetError(f"{dataset.root}: {too_long}")
        return lengths

    def model_class(self) -> type:
        return _load(self.model)

    def loss(self) -> Callable:
        return _load(self.row_loss)

    def masked_predictor(self) -> Callable | None:
        return _load(self.masked_predictions) if self.masked_predictions else None


def _load(path: str):
    module, name = path.split(":")
    return getattr(import_module(module), name)


FAMILIES = {
    "timeline": Family(
        name="timeline",
        data=TIMELINES,
        vocab_size=lambda dataset: dataset.vocabulary().size,
        config=_decoder_config,
        params=lambda config: (config.params(), config.params_nonembed()),
        model="scaling.models.decoder:Decoder",
        row_loss="scaling.models.decoder:decoder_row_loss",
        lr_width_product=0.56,  # lr-fit on the demo data: best 0.564x of 1.0 / width, 95% [0.385, 0.827]
    ),
    "labrador": Family(
        name="labrador",
        data=BAGS,
        vocab_size=lambda dataset: dataset.lab_vocabulary().size,
        config=_encoder_config,
        params=labrador_params,
        model="scaling.models.labrador:Labrador",
        row_loss="scaling.models.labrador:labrador_row_loss",
        probe_input=_labrador_probe_input,
        masked_predictions="scaling.models.labrador:labrador_masked_predictions",
        extra_forward=labrador_extra_forward,
        read_forward=labrador_read_forward,
        # lr-fit (sweeps/lr-calibration-labrador.toml, 1e12 FLOPs): best 0.422x and 0.539x of 1.0 / width at widths
        # 32 and 64, 0.25x (the edge) at 16 and 96; 1.0 / width lost at every width (docs/models.md)
        lr_width_product=0.48,
    ),
    "bert": Family(
        name="bert",
        data=BAGS,
        vocab_size=lambda dataset: bert_vocab_size(dataset.lab_vocabulary().size),
        config=_encoder_config,
        params=bert_params,
        model="scaling.models.labrador:Bert",
        row_loss="scaling.models.labrador:bert_row_loss",
        probe_input=_bert_probe_input,
        masked_predictions="scaling.models.labrador:bert_masked_predictions",
        # lr-fit (sweeps/lr-calibration-bert.toml, 1e12 FLOPs): best 0.393x of 1.0 / width at width 32, 0.25x (the
        # edge) at 16 and 64; 1.0 / width lost at every width (docs/models.md)
        lr_width_product=0.39,
    ),
}
