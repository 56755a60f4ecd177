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


@dataclass(frozen=True)
class BagBatch:
    """Labrador view: codes int32 [B, L] (masked slot = mask id), values float32 [B, L] (eCDF; 0 where null or
    masked), is_null / is_masked bool [B, L], targets (code int32 [B], value float32 [B]); BERT view: tokens
    int32 [B, L] (masked slot = BERT mask id) and target_token int32 [B]."""

    codes: np.ndarray
    values: np.ndarray
    is_null: np.ndarray
    is_masked: np.ndarray
    target_code: np.ndarray
    target_value: np.ndarray
    tokens: np.ndarray
    target_token: np.ndarray


class BagLoader:
    """Batches of bags with exactly one non-null lab masked per bag.

    `mask="epoch"` redraws the masked lab every epoch; `mask="fixed"` keeps one per bag (as Labrador).
    Mask ids: Labrador's is items + 1 (null is items + 2); BERT's is 1 + items * 11."""

    def __init__(
        self, bags: BagSplit, n_items: int, batch_size: int, seed: int = 0, mask: str = "epoch", shuffle: bool = True
    ):
        if mask not in ("epoch", "fixed"):
            raise ValueError(f"mask must be 'epoch' or 'fixed', got {mask!r}")
        self.bags = bags
        self.n_items = n_items
        self.batch_size = batch_size
        self.seed = seed
        self.mask = mask
        self.shuffle = shuffle
        values = np.asarray(bags.values)
        self.usable = np.flatnonzero((~np.isnan(values) & (np.asarray(bags.codes) > 0)).any(axis=1))
        self.steps_per_epoch = len(self.usable) // batch_size
        self._epoch_order: tuple[int, np.ndarray] | None = None
        if self.steps_per_epoch == 0:
            raise ValueError(f"too few bags with a value ({len(self.usable)}) for a batch of {batch_size}")

    @property
    def mask_id(self) -> int:
        return self.n_items + 1

    @property
    def bert_mask_id(self) -> int:
        return bert_vocab_size(self.n_items) - 1

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's bag order (kept for the epoch: a permutation per step would cost O(bags) each step)."""
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.usable) if self.shuffle else self.usable
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def batch(self, step: int) -> BagBatch:
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        index = np.sort(order[within * self.batch_size : (within + 1) * self.batch_size])
        codes = np.asarray(self.bags.codes[index])
        values = np.asarray(self.bags.values[index])
        is_null = np.isnan(values) & (codes > 0)
        # One uniformly drawn non-null lab per bag, from a generator keyed by the bag (and the epoch unless fixed).
        draw_epoch = 0 if self.mask == "fixed" else epoch + 1
        u = _uniform(self.seed, draw_epoch, index)
        candidates = (~np.isnan(values)) & (codes > 0)
        rank = np.floor(u * candidates.sum(axis=1)).astype(np.int64)
        position = np.argmax(np.cumsum(candidates, axis=1) > rank[:, None], axis=1)
        rows = np.arange(len(index))
        is_masked = np.zeros_like(candidates)
        is_masked[rows, position] = True
        target_code = codes[rows, position].copy()
        target_value = values[rows, position].copy()
        tokens = bert_tokens(codes, values)
        target_token = tokens[rows, position].copy()
        tokens[rows, position] = self.bert_mask_id
        codes = codes.copy()
        codes[rows, position] = self.mask_id
        values = np.where(is_null | is_masked, 0.0, np.nan_to_num(values)).astype(np.float32)
        return BagBatch(
            codes=codes,
            values=values,
            is_null=is_null,
            is_masked=is_masked,
            target_code=target_code,
            target_value=target_value.astype(np.float32),
            tokens=tokens,
            target_token=target_token,
        )
