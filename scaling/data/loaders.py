"""Numpy batch iterators over a prepared dataset: packed timeline windows and masked lab bags.

Both are pure functions of (seed, step): `batch(step)` gives the same batch in a fresh process, so a
resumed run sees exactly the data it would have seen.

Timelines are **packed**: each subject's tokens are cut into pieces of at most `context + 1` tokens
(continuation pieces start with the subject's static context again), and pieces are packed into rows
in a seeded order. `segment_ids` (1, 2, ... per piece; 0 for padding) give the document mask: a model
must attend only within a segment, and `positions` restart at 0 in each one. A target counts only
within its own piece, so no prediction crosses from one patient into another.
"""

from dataclasses import dataclass

import numpy as np

from scaling.data.labbags import BagSplit, bert_tokens, bert_vocab_size
from scaling.data.timelines import Timelines


@dataclass(frozen=True)
class TimelineBatch:
    """inputs/targets/segment_ids/positions int32 [batch, context]; loss_mask bool [batch, context]."""

    inputs: np.ndarray
    targets: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    loss_mask: np.ndarray


def timeline_pieces(timelines: Timelines, context: int) -> np.ndarray:
    """Pieces [n, 4]: subject index, start, length (tokens of content), whether the static context is prepended."""
    row = context + 1
    lengths = np.diff(timelines.offsets)
    prefix = timelines.prefix_lengths.astype(np.int64)
    if np.any((prefix >= row) & (lengths > row)):
        raise ValueError(f"context {context} is too short for a static context of {prefix.max()} tokens")
    stride = np.maximum(row - prefix, 1)
    extra = np.where(lengths > row, np.ceil((lengths - row) / stride), 0).astype(np.int64)
    count = np.where(lengths >= 2, 1 + extra, 0)
    subject = np.repeat(np.arange(len(lengths)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # piece number within the subject
    start = np.where(k == 0, 0, row + (k - 1) * stride[subject])
    has_prefix = k > 0
    length = np.minimum(lengths[subject] - start, np.where(has_prefix, row - prefix[subject], row))
    return np.stack([subject, start, length, has_prefix.astype(np.int64)], axis=1)


class TimelineLoader:
    """Packed next-token batches from one split; epoch order seeded by (seed, epoch)."""

    def __init__(self, timelines: Timelines, context: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.timelines = timelines
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pieces = timeline_pieces(timelines, context)
        self._plan: tuple[int, list[np.ndarray]] | None = None
        # Epoch 0's row count sets the epoch length for every epoch. Computed once: recomputing it
        # on each step replanned two epochs per step past the first epoch (10x slower steps).
        self.steps_per_epoch = len(self._rows(0)) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"too little data for one batch of {batch_size} rows of {context} tokens")

    def _piece_length(self) -> np.ndarray:
        prefix = self.timelines.prefix_lengths[self.pieces[:, 0]]
        return self.pieces[:, 2] + np.where(self.pieces[:, 3] == 1, prefix, 0)

    def _rows(self, epoch: int) -> list[np.ndarray]:
        """Next-fit packing of the epoch's piece order into rows of context + 1 tokens."""
        if self._plan is None or self._plan[0] != epoch:
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(len(self.pieces))
                if self.shuffle
                else np.arange(len(self.pieces))
            )
            sizes = self._piece_length()[order]
            rows, current, used = [], [], 0
            for index, size in zip(order.tolist(), sizes.tolist()):
                if used + size > self.context + 1:
                    rows.append(np.asarray(current))
                    current, used = [], 0
                current.append(index)
                used += size
            if current:
                rows.append(np.asarray(current))
            self._plan = (epoch, rows)
        return self._plan[1]

    def batch(self, step: int) -> TimelineBatch:
        epoch, within = divmod(step, self.steps_per_epoch)
        rows = self._rows(epoch)[within * self.batch_size : (within + 1) * self.batch_size]
        width = self.context + 1
        tokens = np.zeros((self.batch_size, width), dtype=np.int32)
        segments = np.zeros((self.batch_size, width), dtype=np.int32)
        positions = np.zeros((self.batch_size, width), dtype=np.int32)
        t = self.timelines
        for r, pieces in enumerate(rows):
            at = 0
            for seg, p in enumerate(pieces, start=1):
                subject, start, length, has_prefix = self.pieces[p]
                lo = t.offsets[subject]
                parts = []
                if has_prefix:
                    parts.append(t.tokens[lo : lo + t.prefix_lengths[subject]])
                parts.append(t.tokens[lo + start : lo + start + length])
                piece = np.concatenate(parts)
                tokens[r, at : at + len(piece)] = piece
                segments[r, at : at + len(piece)] = seg
                positions[r, at : at + len(piece)] = np.arange(len(piece))
                at += len(piece)
        same = (segments[:, :-1] == segments[:, 1:]) & (segments[:, :-1] > 0)
        return TimelineBatch(
            inputs=tokens[:, :-1],
            targets=tokens[:, 1:],
            segment_ids=segments[:, :-1],
            positions=positions[:, :-1],
            loss_mask=same,
        )

    def __iter__(self):
        step = 0
        while True:
            yield self.batch(step)
            step += 1


def _uniform(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per index, a pure function of (seed, epoch, index): splitmix64 finalizer."""
    offset = (seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03) % 2**64  # Python ints: no overflow
    x = np.asarray(index, dtype=np.uint64) + np.uint64(offset)  # array arithmetic wraps modulo 2**64
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def pack_bags(lengths: np.ndarray, context: int, bags_per_row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-fit packing of bags (in the given order) into rows of `context` slots, at most `bags_per_row` bags a
    row (None: as many as fit): each bag's row and its first slot. A bag never straddles two rows."""
    cap = bags_per_row or context
    rows, offsets = np.empty(len(lengths), np.int64), np.empty(len(lengths), np.int64)
    row, used, count = 0, 0, 0
    for i, length in enumerate(lengths.tolist()):
        if used + length > context or count == cap:
            row, used, count = row + 1, 0, 0
        rows[i], offsets[i] = row, used
        used += length
        count += 1
    return rows, offsets


def longest_bag_error(lengths: np.ndarray, context: int) -> str | None:
    """Why bags of these lengths cannot be packed into rows of `context` slots, or None."""
    if len(lengths) and int(lengths.max()) > context:
        return (
            f"the longest bag has {int(lengths.max())} labs, more than the context of {context} slots: "
            f"raise [recipe] context to at least {int(lengths.max())}"
        )
    return None


def maskable_labs(codes: np.ndarray, mask_item: int | None = None) -> np.ndarray:
    """The labs that may be masked (those with a value among them): any lab, or the `mask_item`'s (a 1-based code)."""
    return codes == mask_item if mask_item is not None else codes > 0


def maskable_bags(bags: BagSplit, mask_item: int | None = None) -> np.ndarray:
    """The indices of the bags with a lab that may be masked: one with a value (of `mask_item`, if given)."""
    values, codes = np.asarray(bags.values), np.asarray(bags.codes)
    return np.flatnonzero((~np.isnan(values) & maskable_labs(codes, mask_item)).any(axis=1))


@dataclass(frozen=True)
class BagBatch:
    """Rows of `context` slots holding whole bags; `segment_ids` int32 [R, T] number the bags of a row 1, 2, ...
    (0 = padding), and a lab attends only within its own bag. Labrador view: codes int32 (masked slot = mask id),
    values float32 (eCDF; 0 where null or masked), is_null / is_masked bool, and at each masked slot its targets
    (target_code int32, target_value float32; 0 elsewhere); BERT view: tokens int32 (masked slot = BERT mask id)
    and target_token int32. All [R, T]. The masked slots of each row, in bag order, are `read_slots` int32 [R, B]
    (B: the loader's bags per row; `read_valid` bool [R, B] is False on the padding entries, which point at slot
    0): the heads read only these, so a step's head layers cost B slots a row, not T."""

    codes: np.ndarray
    values: np.ndarray
    is_null: np.ndarray
    is_masked: np.ndarray
    segment_ids: np.ndarray
    target_code: np.ndarray
    target_value: np.ndarray
    tokens: np.ndarray
    target_token: np.ndarray
    read_slots: np.ndarray
    read_valid: np.ndarray


class BagLoader:
    """Batches of `rows` rows, each packed with whole bags up to `context` slots, one non-null lab masked per bag.

    Packing is why a step costs what its labs cost: a bag padded to the longest bag would spend most slots on
    padding (the demo's bags average 25 labs, the longest 81). Bags keep to themselves through `segment_ids`, so a
    packed bag is computed exactly as if alone. `mask="epoch"` redraws the masked lab every epoch; `mask="fixed"`
    keeps one per bag (as Labrador). Mask ids: Labrador's is items + 1 (null is items + 2); BERT's is
    1 + items * 11. `bags_per_row` caps the bags of a row (and so the masked slots the heads read); None: as many
    as fit, and `read_slots` as wide as the row. `mask_item` (a 1-based code) keeps only the bags where that item
    has a value, and masks it in each (imputation: scaling/eval/imputation.py)."""

    def __init__(
        self,
        bags: BagSplit,
        n_items: int,
        rows: int,
        context: int,
        seed: int = 0,
        mask: str = "epoch",
        shuffle: bool = True,
        bags_per_row: int | None = None,
        mask_item: int | None = None,
    ):
        if mask not in ("epoch", "fixed"):
            raise ValueError(f"mask must be 'epoch' or 'fixed', got {mask!r}")
        too_long = longest_bag_error(np.asarray(bags.lengths), context)
        if too_long:
            raise ValueError(too_long)
        self.bags = bags
        self.n_items = n_items
        self.rows = rows
        self.context = context
        self.seed = seed
        self.mask = mask
        self.shuffle = shuffle
        self.bags_per_row = min(bags_per_row or context, context)  # the width of read_slots
        self.mask_item = mask_item
        self.usable = maskable_bags(bags, mask_item)
        self._epoch: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.steps_per_epoch = self._packing(0)[3] // rows
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"too few bags with a value ({len(self.usable)}) to fill a batch of {rows} rows of {context} slots"
            )

    @property
    def mask_id(self) -> int:
        return self.n_items + 1

    @property
    def bert_mask_id(self) -> int:
        return bert_vocab_size(self.n_items) - 1

    def _packing(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The epoch's bag order, each bag's row and first slot, and the row count (kept for the epoch)."""
        if self._epoch is None or self._epoch[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.usable) if self.shuffle else self.usable
            rows, offsets = pack_bags(np.asarray(self.bags.lengths)[order], self.context, self.bags_per_row)
            self._epoch = (epoch, order, rows, offsets)
        _, order, rows, offsets = self._epoch
        return order, rows, offsets, int(rows[-1]) + 1 if len(rows) else 0

    def batch(self, step: int) -> BagBatch:
        epoch, within = divmod(step, self.steps_per_epoch)
        order, bag_rows, offsets, _ = self._packing(epoch)
        first, last = np.searchsorted(bag_rows, [within * self.rows, (within + 1) * self.rows])
        index, row, offset = order[first:last], bag_rows[first:last] - within * self.rows, offsets[first:last]
        lengths = np.asarray(self.bags.lengths)[index].astype(np.int64)
        sorted_index = np.argsort(index, kind="stable")  # memory-mapped arrays read fastest in file order
        codes_in = np.empty((len(index), self.bags.codes.shape[1]), np.int32)
        values_in = np.empty(codes_in.shape, np.float32)
        codes_in[sorted_index] = self.bags.codes[index[sorted_index]]
        values_in[sorted_index] = self.bags.values[index[sorted_index]]
        # One uniformly drawn non-null lab per bag, from a generator keyed by the bag (and the epoch unless fixed).
        draw_epoch = 0 if self.mask == "fixed" else epoch + 1
        u = _uniform(self.seed, draw_epoch, index)
        candidates = (~np.isnan(values_in)) & maskable_labs(codes_in, self.mask_item)
        rank = np.floor(u * candidates.sum(axis=1)).astype(np.int64)
        masked_at = np.argmax(np.cumsum(candidates, axis=1) > rank[:, None], axis=1)
        # Scatter each bag's labs into its row: bag b's lab j goes to slot offset[b] + j.
        bag_of = np.repeat(np.arange(len(index)), lengths)
        lab = np.arange(len(bag_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        at = (row[bag_of], offset[bag_of] + lab)
        shape = (self.rows, self.context)
        codes, values = np.zeros(shape, np.int32), np.full(shape, np.nan, np.float32)
        codes[at], values[at] = codes_in[bag_of, lab], values_in[bag_of, lab]
        segment_ids = np.zeros(shape, np.int32)
        column = np.arange(len(index)) - np.searchsorted(row, row)  # each bag's place in its row: 0, 1, ...
        segment_ids[at] = column[bag_of] + 1
        is_null = np.isnan(values) & (codes > 0)
        is_masked = np.zeros(shape, bool)
        masked = (row, offset + masked_at)
        is_masked[masked] = True
        target_code, target_value, target_token = (
            np.zeros(shape, np.int32),
            np.zeros(shape, np.float32),
            np.zeros(shape, np.int32),
        )
        target_code[masked], target_value[masked] = codes[masked], values[masked]
        tokens = bert_tokens(codes, values)
        target_token[masked] = tokens[masked]
        tokens[masked] = self.bert_mask_id
        codes[masked] = self.mask_id
        values = np.where(is_null | is_masked, 0.0, np.nan_to_num(values)).astype(np.float32)
        read_slots = np.zeros((self.rows, self.bags_per_row), np.int32)
        read_valid = np.zeros(read_slots.shape, bool)
        read_slots[row, column], read_valid[row, column] = masked[1], True
        return BagBatch(
            codes=codes,
            values=values,
            is_null=is_null,
            is_masked=is_masked,
            segment_ids=segment_ids,
            target_code=target_code,
            target_value=target_value,
            tokens=tokens,
            target_token=target_token,
            read_slots=read_slots,
            read_valid=read_valid,
        )
