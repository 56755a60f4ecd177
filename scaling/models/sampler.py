"""Futures of patient timelines: autoregressive sampling from the timeline decoder with a key-value cache.

A batch of histories (different lengths, each left-aligned in a cache of the model's context) is prefilled once;
then one compiled step per token feeds each row its last token at its own cache index, samples the next one
(temperature, optional top-k, never PAD) and watches it: a `Watch` says which tokens are the event a task asks
about (an outcome, or a value token after a code), which end a future without it (discharge, death), how far each
token moves the future's clock (the time-gap tokens) and where the clock's horizon is. A row whose cache fills keeps
its static context and its latest tokens (half the context), re-encoded with positions from 0, as training's
pieces of a long timeline were; the step's shapes never change.

Each step also adds up the model's own probability of the event along the future (`survival`: the product of
1 - P(event next)), so that with `avoid=True` (the event's tokens never drawn) 1 - survival is an unbiased,
lower-variance estimate of the event's probability along that future: the rollout estimator of SCOPE/REACH
(arXiv 2602.03730), beside the plain Monte Carlo share of futures that reach it. Axis names: b rows, s cache
index, v vocabulary, l layers, h heads, k head dim.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.data.timelines import fit_history

PAD = 0  # the padding token (scaling.data.timelines.SPECIALS[0]): never sampled
RUNNING, EVENT, STOPPED, HORIZON = 0, 1, 2, 3  # how a future ended; RUNNING at the end: the token limit


@dataclass(frozen=True)
class Watch:
    """What each future is watched for, as masks over the vocabulary [v]."""

    event: np.ndarray  # bool [v]: a token that is the event
    event_after: np.ndarray  # int [v]: for a code whose value is watched, its row of `event_values` (0: none)
    event_values: np.ndarray  # bool [codes + 1, v]: the value tokens that are the event after each watched code
    stop: np.ndarray  # bool: a token that ends the future without the event
    minutes: np.ndarray  # float: how far a token moves the future's clock (time-gap tokens; 0 for the rest)
    horizon_minutes: float = float("inf")  # a future whose clock reaches this ends (HORIZON)

    def read(self, tokens: np.ndarray, previous: int) -> tuple[int, int]:
        """How a recorded sequence of tokens ends under this watch, and after how many tokens: the rule the compiled
        step applies, on the host (a patient's actual future is read so, to check a rule against the labels).
        `previous`: the token before the first (a watched value follows its code)."""
        clock = 0.0
        for step, token in enumerate(np.asarray(tokens, np.int64), start=1):
            clock += self.minutes[token]
            if self.event[token] or self.event_values[self.event_after[previous], token]:
                return EVENT, step
            if self.stop[token]:
                return STOPPED, step
            if clock >= self.horizon_minutes:
                return HORIZON, step
            previous = token
        return RUNNING, len(tokens)

    def arrays(self) -> dict[str, jax.Array]:
        return {
            "event": jnp.asarray(self.event, bool),
            "event_after": jnp.asarray(self.event_after, jnp.int32),
            "event_values": jnp.asarray(self.event_values, bool),
            "stop": jnp.asarray(self.stop, bool),
            "minutes": jnp.asarray(self.minutes, jnp.float32),
            "horizon": jnp.asarray(self.horizon_minutes, jnp.float32),
        }


@dataclass(frozen=True)
class Futures:
    """Generated futures, one per row."""

    tokens: np.ndarray  # [b, max_new] the generated tokens, PAD after a future's end
    ended: np.ndarray  # [b] int: RUNNING (the token limit), EVENT, STOPPED or HORIZON
    steps: np.ndarray  # [b] tokens generated
    survival: np.ndarray  # [b] product over the future's steps of 1 - P(event next)
    minutes: np.ndarray  # [b] the future's clock at its end

    @property
    def completed(self) -> np.ndarray:
        """Futures that ended by a rule (event, stop code or horizon), not by the token limit."""
        return self.ended != RUNNING


class Sampler:
    """A decoder's prefill and sampling step, compiled once for a batch of `rows` and a cache of `context`."""

    def __init__(self, model, rows: int, context: int | None = None, temperature: float = 1.0, top_k: int = 0):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.rows, self.context = rows, context or model.config.context
        self.temperature, self.top_k = float(temperature), int(top_k)
        graphdef, state = nnx.split(model)
        self._state = state

        def prefill(state, tokens, lengths):
            model = nnx.merge(graphdef, state)
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
            segments = (positions < lengths[:, None]).astype(jnp.int32)
            h, (keys, values) = model.prefill(tokens, positions, segments)
            last = h[jnp.arange(h.shape[0]), jnp.maximum(lengths - 1, 0)]
            return model.logits(last), keys, values

        self._prefill = jax.jit(prefill)
        self._step = jax.jit(
            lambda state, carry, watch, key, avoid: self._advance(graphdef, state, carry, watch, key, avoid),
            static_argnames="avoid",
        )

    def _distribution(self, logits: jax.Array) -> jax.Array:
        """The logits the next token is drawn from: tempered, PAD excluded, top-k kept."""
        logits = (logits / self.temperature).at[:, PAD].set(-jnp.inf)
        if self.top_k:
            kth = jax.lax.top_k(logits, self.top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        return logits

    def _advance(self, graphdef, state, carry: dict, watch: dict, key: jax.Array, avoid: bool) -> dict:
        """One token for every running row: draw it, watch it, feed it through the cache."""
        rows = jnp.arange(carry["length"].shape[0])
        running = carry["ended"] == RUNNING
        logits = self._distribution(carry["logits"])
        event = watch["event"][None, :] | watch["event_values"][watch["event_after"][carry["previous"]]]  # [b, v]
        p_event = jnp.sum(jnp.where(event, jax.nn.softmax(logits, axis=-1), 0.0), axis=-1)
        if avoid:
            logits = jnp.where(event, -jnp.inf, logits)
        token = jax.random.categorical(key, logits).astype(jnp.int32)
        clock = carry["minutes"] + watch["minutes"][token]
        ended = jnp.where(
            event[rows, token],
            EVENT,
            jnp.where(watch["stop"][token], STOPPED, jnp.where(clock >= watch["horizon"], HORIZON, RUNNING)),
        )
        out = carry["out"].at[rows, carry["steps"]].set(jnp.where(running, token, PAD), mode="drop")
        carry = {
            **carry,
            "out": out,
            "ended": jnp.where(running, ended, carry["ended"]),
            "survival": jnp.where(running, carry["survival"] * (1.0 - p_event), carry["survival"]),
            "minutes": jnp.where(running, clock, carry["minutes"]),
            "previous": jnp.where(running, token, carry["previous"]),
            "steps": carry["steps"] + running,
        }
        feed = running & (carry["ended"] == RUNNING)  # rows that go on: their token enters the cache
        at = jnp.where(feed, carry["length"], self.context)  # past the cache: the write is dropped
        model = nnx.merge(graphdef, state)
        logits, keys, values = model.step(token, at, carry["keys"], carry["values"])
        return {
            **carry,
            "logits": jnp.where(feed[:, None], logits, carry["logits"]),
            "keys": keys,
            "values": values,
            "cache": carry["cache"].at[rows, at].set(token, mode="drop"),
            "length": carry["length"] + feed,
        }

    def _encode(self, cache: np.ndarray, lengths: np.ndarray):
        return self._prefill(self._state, jnp.asarray(cache, jnp.int32), jnp.asarray(lengths, jnp.int32))

    def sample(
        self,
        histories: list[np.ndarray],
        prefixes: list[int],
        watch: Watch,
        max_new: int,
        seed: int,
        avoid: bool = False,
    ) -> Futures:
        """One future per history (at most `rows`), each at most `max_new` tokens; deterministic for a seed.
        `avoid`: the event's tokens are never drawn (for the survival estimator); each future's `survival` is its
        product of 1 - P(event next) either way."""
        b, s = self.rows, self.context
        if not 0 < len(histories) <= b:
            raise ValueError(f"a batch holds 1 to {b} histories, got {len(histories)}")
        if max_new < 1:
            raise ValueError(f"max_new must be at least 1, got {max_new}")
        cache = np.zeros((b, s), np.int32)
        lengths = np.ones(b, np.int32)
        prefix = np.zeros(b, np.int64)
        for r, (history, p) in enumerate(zip(histories, prefixes, strict=True)):
            kept = fit_history(np.asarray(history), int(p), s - 1)  # room for the first generated token
            if len(kept) == 0:
                raise ValueError(f"history {r} is empty: a future needs at least its static context")
            cache[r, : len(kept)], lengths[r], prefix[r] = kept, len(kept), p
        logits, keys, values = self._encode(cache, lengths)
        idle = np.arange(b) >= len(histories)  # the batch's padding rows: ended before they start
        carry = {
            "logits": logits,
            "keys": keys,
            "values": values,
            "cache": jnp.asarray(cache),
            "length": jnp.asarray(lengths),
            "previous": jnp.asarray(cache[np.arange(b), lengths - 1]),
            "ended": jnp.asarray(np.where(idle, STOPPED, RUNNING), jnp.int32),
            "survival": jnp.ones(b, jnp.float32),
            "minutes": jnp.zeros(b, jnp.float32),
            "steps": jnp.zeros(b, jnp.int32),
            "out": jnp.zeros((b, max_new), jnp.int32),
        }
        arrays = watch.arrays()
        key = jax.random.key(seed)
        for step in range(max_new):
            carry = self._step(self._state, carry, arrays, jax.random.fold_in(key, step), avoid=avoid)
            ended, length = np.asarray(carry["ended"]), np.asarray(carry["length"])
            if (ended != RUNNING).all():
                break
            full = (ended == RUNNING) & (length >= s)
            if full.any():  # keep the static context and the latest half of the context, positions from 0
                carry = self._rewindow(carry, full, prefix)
        return Futures(
            tokens=np.asarray(carry["out"])[: len(histories)],
            ended=np.asarray(carry["ended"])[: len(histories)],
            steps=np.asarray(carry["steps"])[: len(histories)],
            survival=np.asarray(carry["survival"])[: len(histories)],
            minutes=np.asarray(carry["minutes"])[: len(histories)],
        )

    def _rewindow(self, carry: dict, full: np.ndarray, prefix: np.ndarray) -> dict:
        """Re-encode the full rows' static context and latest tokens in half the cache; the other rows as they
        are (the same tokens give the same keys and values)."""
        cache, lengths = np.array(carry["cache"]), np.array(carry["length"])
        for r in np.flatnonzero(full):
            kept = fit_history(cache[r, : lengths[r]], int(prefix[r]), self.context // 2)
            cache[r] = 0
            cache[r, : len(kept)], lengths[r] = kept, len(kept)
        logits, keys, values = self._encode(cache, lengths)
        # Only the re-encoded rows take the new logits: a row that fitted keeps the step's own.
        logits = jnp.where(jnp.asarray(full)[:, None], logits, carry["logits"])
        fresh = {"logits": logits, "keys": keys, "values": values}
        return {**carry, **fresh, "cache": jnp.asarray(cache), "length": jnp.asarray(lengths)}
