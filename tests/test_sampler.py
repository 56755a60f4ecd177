"""The decoder's sampler: the cached step is the full forward pass, futures are seeded, watched and bounded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.data.timelines import fit_history
from scaling.models.decoder import Decoder
from scaling.models.sampler import EVENT, HORIZON, PAD, RUNNING, STOPPED, Sampler, Watch
from scaling.models.shapes import DecoderConfig

VOCAB = 24


@pytest.fixture(scope="module")
def model() -> Decoder:
    config = DecoderConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, context=16)
    return Decoder(config, nnx.Rngs(3))


def _watch(**masks) -> Watch:
    empty = np.zeros(VOCAB, bool)
    return Watch(
        event=masks.get("event", empty),
        event_after=masks.get("event_after", np.zeros(VOCAB, int)),
        event_values=masks.get("event_values", np.zeros((1, VOCAB), bool)),
        stop=masks.get("stop", empty),
        minutes=masks.get("minutes", np.zeros(VOCAB)),
        horizon_minutes=masks.get("horizon", np.inf),
    )


def _full_next(model: Decoder, sequence: np.ndarray) -> np.ndarray:
    """The next-token distribution after `sequence` by a full forward pass (positions from 0, one segment)."""
    t = len(sequence)
    tokens = jnp.asarray(sequence, jnp.int32)[None]
    positions = jnp.arange(t, dtype=jnp.int32)[None]
    return np.asarray(jax.nn.softmax(model(tokens, positions, jnp.ones((1, t), jnp.int32))[0, -1]))


def test_the_cached_step_gives_the_full_forward_pass_distribution(model):
    """Histories of different lengths in one batch: after each generated token, the step's next-token distribution
    equals a full forward pass over the same prefix to 1e-5."""
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, VOCAB, n) for n in (3, 7, 11)]
    sampler = Sampler(model, rows=4)
    cache = np.zeros((4, 16), np.int32)
    lengths = np.array([3, 7, 11, 1], np.int32)
    for r, h in enumerate(histories):
        cache[r, : len(h)] = h
    logits, keys, values = sampler._encode(cache, lengths)
    sequences = [list(h) for h in histories]
    for _ in range(4):
        for r, seq in enumerate(sequences):
            np.testing.assert_allclose(
                np.asarray(jax.nn.softmax(logits[r])), _full_next(model, np.array(seq)), atol=1e-5
            )
        token = rng.integers(1, VOCAB, 4).astype(np.int32)
        logits, keys, values = model.step(jnp.asarray(token), jnp.asarray(lengths), keys, values)
        for r, seq in enumerate(sequences):
            seq.append(int(token[r]))
        lengths = lengths + 1


def test_a_long_history_keeps_its_static_context_and_latest_tokens():
    history = np.arange(1, 41)
    kept = fit_history(history, prefix=2, room=15)
    assert kept.tolist() == [1, 2, *range(28, 41)]
    assert fit_history(history[:10], 2, 15).tolist() == list(range(1, 11))
    with pytest.raises(ValueError, match="static context of 15 tokens"):
        fit_history(history, 15, 15)


def test_a_long_history_is_sampled_from_its_latest_tokens(model):
    """The first generated token's distribution is that of the history cut as training cut it."""
    history = np.random.default_rng(1).integers(1, VOCAB, 40)
    cut = fit_history(history, prefix=2, room=15)
    sampler = Sampler(model, rows=1)
    logits, _, _ = sampler._encode(np.pad(cut, (0, 1))[None], np.array([15]))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits[0])), _full_next(model, cut), atol=1e-5)


def test_futures_are_deterministic_for_a_seed_and_never_draw_pad(model):
    sampler = Sampler(model, rows=8, top_k=10)
    histories = [np.array([1, 2, 5 + r]) for r in range(6)]
    first = sampler.sample(histories, [2] * 6, _watch(), max_new=40, seed=7)
    again = sampler.sample(histories, [2] * 6, _watch(), max_new=40, seed=7)
    other = sampler.sample(histories, [2] * 6, _watch(), max_new=40, seed=8)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert not np.array_equal(first.tokens, other.tokens)
    assert first.tokens.shape == (6, 40) and (first.tokens != PAD).all()  # 40 > the context: the cache re-windows
    assert (first.ended == RUNNING).all() and (first.steps == 40).all() and not first.completed.any()


def test_a_future_ends_at_its_event_its_stop_code_or_its_horizon(model):
    sampler = Sampler(model, rows=64)
    histories = [np.array([1, 2, 3])] * 64
    event, stop, minutes = np.zeros(VOCAB, bool), np.zeros(VOCAB, bool), np.zeros(VOCAB)
    event[5], stop[6:9], minutes[10:12] = True, True, 60.0
    futures = sampler.sample(histories, [2] * 64, _watch(event=event, stop=stop, minutes=minutes, horizon=120), 200, 0)
    assert futures.completed.all()  # a random model hits one of 6 ending tokens well within 200 tokens
    for row, ended, steps in zip(futures.tokens, futures.ended, futures.steps, strict=True):
        last, generated = row[steps - 1], row[:steps]
        assert (row[steps:] == PAD).all()
        if ended == EVENT:
            assert last == 5
        elif ended == STOPPED:
            assert last in (6, 7, 8)
        else:
            assert ended == HORIZON and minutes[generated].sum() >= 120 and minutes[generated[:-1]].sum() < 120
        assert not np.isin(generated[:-1], [5, 6, 7, 8]).any()  # nothing ended it earlier
    assert set(futures.ended) == {EVENT, STOPPED, HORIZON}
    # the host's reading of a recorded future (Watch.read) is the compiled step's
    watch = _watch(event=event, stop=stop, minutes=minutes, horizon=120)
    read = [watch.read(row[:steps], 3) for row, steps in zip(futures.tokens, futures.steps, strict=True)]
    assert read == list(zip(futures.ended.tolist(), futures.steps.tolist(), strict=True))


def test_a_value_event_follows_its_code(model):
    """event_after + event_values: a value token is the event only right after its code, each code with its own
    values."""
    sampler = Sampler(model, rows=64)
    after, values = np.zeros(VOCAB, int), np.zeros((3, VOCAB), bool)
    after[4], after[9], values[1, 20:24], values[2, 14:16] = 1, 2, True, True
    futures = sampler.sample([np.array([1, 2])] * 64, [2] * 64, _watch(event_after=after, event_values=values), 120, 1)
    hits = futures.ended == EVENT
    assert hits.any()
    for row, steps in zip(futures.tokens[hits], futures.steps[hits], strict=True):
        code, value = row[steps - 2], row[steps - 1]
        assert (code == 4 and 20 <= value < 24) or (code == 9 and 14 <= value < 16)
    watch = _watch(event_after=after, event_values=values)
    assert [watch.read(row[:steps], 2)[0] for row, steps in zip(futures.tokens, futures.steps, strict=True)] == list(
        futures.ended
    )


def test_the_survival_estimator_agrees_with_the_monte_carlo_share(model):
    """Over many futures of one history, 1 - mean survival with the event avoided estimates the same probability
    as the share of plain futures that reach it (both within their sampling error)."""
    event, stop = np.zeros(VOCAB, bool), np.zeros(VOCAB, bool)
    event[5], stop[6:10] = True, True
    watch = _watch(event=event, stop=stop)
    sampler = Sampler(model, rows=256)
    histories = [np.array([1, 2, 3])] * 256
    plain = sampler.sample(histories, [2] * 256, watch, 120, seed=0)
    avoided = sampler.sample(histories, [2] * 256, watch, 120, seed=1, avoid=True)
    assert plain.completed.all() and avoided.completed.all()
    assert not (avoided.ended == EVENT).any()
    share = (plain.ended == EVENT).mean()
    share_se = np.sqrt(share * (1 - share) / 256)
    rollout = 1 - avoided.survival
    assert abs(rollout.mean() - share) < 3 * np.hypot(share_se, rollout.std() / 16)
    assert rollout.std() < np.sqrt(share * (1 - share))  # the point: less variance per future


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="temperature must be positive"):
        Sampler(model, rows=2, temperature=0)
    sampler = Sampler(model, rows=2)
    with pytest.raises(ValueError, match="1 to 2 histories"):
        sampler.sample([np.array([1])] * 3, [1] * 3, _watch(), 4, 0)
    with pytest.raises(ValueError, match="max_new must be at least 1"):
        sampler.sample([np.array([1])], [1], _watch(), 0, 0)
