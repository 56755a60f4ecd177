"""Models: parameter counts against the real tree, FLOPs against XLA, causality, permutation invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from scaling.flops import Shape, forward_components, train_flops_per_token
from scaling.models.decoder import Decoder, DecoderConfig, next_token_loss
from scaling.models.labrador import Bert, Labrador, bert_row_loss, labrador_row_loss
from scaling.models.shapes import EncoderConfig, bert_params, labrador_params
from scaling.recipe import Recipe
from scaling.training.step import schedule


def tree_size(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize(
    "d,layers,heads,ff,vocab,tied",
    [(16, 1, 1, 48, 30, False), (32, 2, 2, 88, 374, True), (48, 3, 3, 128, 500, False), (64, 1, 4, 176, 7, True)],
)
def test_parameter_counts_match_the_tree(d, layers, heads, ff, vocab, tied):
    config = DecoderConfig(
        vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=ff, context=16, tie_embeddings=tied
    )
    model = Decoder(config, nnx.Rngs(0))
    assert tree_size(model) == config.params()
    embed = vocab * d * (1 if tied else 2)
    assert config.params() - config.params_nonembed() == embed
    encoder = EncoderConfig(n_items=vocab, d_model=d, n_layers=layers, n_heads=heads, d_ff=ff, context=12)
    assert tree_size(Labrador(encoder, nnx.Rngs(0))) == labrador_params(encoder)[0]
    assert tree_size(Bert(encoder, nnx.Rngs(0))) == bert_params(encoder)[0]


def xla_train_flops_per_token(config: DecoderConfig, batch: int) -> float:
    """XLA's count for one compiled AdamW train step (layers unrolled so the count sees each), per token."""
    graphdef, params = nnx.split(Decoder(config, nnx.Rngs(0)))
    tx = optax.adamw(1e-3)

    def step(p, o, tokens):
        def loss(p):
            model = nnx.merge(graphdef, p)
            return next_token_loss(model(tokens, tokens * 0, tokens * 0 + 1, unroll=True), tokens, tokens > -1)

        value, grads = jax.value_and_grad(loss)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    tokens = jnp.zeros((batch, config.context), jnp.int32)
    cost = jax.jit(step).lower(params, tx.init(params), tokens).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / (batch * config.context)


@pytest.mark.parametrize(
    "d,layers,context,vocab",
    [
        (32, 1, 64, 300),
        (64, 2, 128, 400),
        pytest.param(128, 3, 64, 400, marks=pytest.mark.slow),
        pytest.param(48, 4, 256, 200, marks=pytest.mark.slow),
    ],
)
def test_exact_flops_match_xla_within_10_percent(d, layers, context, vocab):
    config = DecoderConfig(
        vocab_size=vocab, d_model=d, n_layers=layers, n_heads=max(1, d // 16), d_ff=d * 8 // 3 // 8 * 8, context=context
    )
    shape = Shape(d, layers, config.n_heads, config.d_ff, context, vocab, config.params(), config.params_nonembed())
    exact = train_flops_per_token(shape, "exact")
    assert exact == pytest.approx(xla_train_flops_per_token(config, batch=8), rel=0.10)
    assert exact == pytest.approx(3 * sum(forward_components(shape).values()))
    assert train_flops_per_token(shape, "6N") == 6 * config.params()
    assert train_flops_per_token(shape, "6N+attn") == 6 * config.params_nonembed() + 6 * layers * context * d
    with pytest.raises(ValueError, match="unknown FLOP convention"):
        train_flops_per_token(shape, "5N")


def test_decoder_is_causal_and_segments_do_not_see_each_other():
    config = DecoderConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=12)
    model = Decoder(config, nnx.Rngs(1))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 40, (1, 12)), jnp.int32)
    positions = jnp.arange(12)[None]
    segments = jnp.ones((1, 12), jnp.int32)
    base = model(tokens, positions, segments)
    changed = model(tokens.at[0, 7].set(3 if int(tokens[0, 7]) != 3 else 4), positions, segments)
    assert np.allclose(base[0, :7], changed[0, :7], atol=1e-6)  # a later token never changes an earlier logit
    assert not np.allclose(base[0, 7:], changed[0, 7:], atol=1e-6)
    # Two packed segments: the second does not depend on the first.
    packed = jnp.concatenate([jnp.ones((1, 5), jnp.int32), 2 * jnp.ones((1, 7), jnp.int32)], axis=1)
    pos2 = jnp.concatenate([jnp.arange(5), jnp.arange(7)])[None]
    a = model(tokens, pos2, packed)
    b = model(tokens.at[0, :5].set(9), pos2, packed)
    assert np.allclose(a[0, 5:], b[0, 5:], atol=1e-6)
    alone = model(tokens[:, 5:], jnp.arange(7)[None], jnp.ones((1, 7), jnp.int32))
    assert np.allclose(a[0, 5:], alone[0], atol=1e-5)


def test_bag_encoders_are_permutation_invariant():
    rng = np.random.default_rng(0)
    codes = jnp.asarray([[3, 7, 1, 5, 0, 0]], jnp.int32)
    values = jnp.asarray(rng.random((1, 6)), jnp.float32)
    null = jnp.asarray([[False, True, False, False, False, False]])
    masked = jnp.asarray([[False, False, True, False, False, False]])
    segments = (codes > 0).astype(jnp.int32)
    perm = jnp.asarray([3, 0, 2, 1, 5, 4])
    real = np.asarray(codes[0, perm]) > 0  # compare real labs; padding slots carry no output
    labrador = Labrador(EncoderConfig(n_items=8, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=6), nnx.Rngs(0))
    logits, value = labrador(codes, values, null, masked, segments)
    logits_p, value_p = labrador(codes[:, perm], values[:, perm], null[:, perm], masked[:, perm], segments[:, perm])
    assert np.allclose(np.asarray(logits[0, perm])[real], np.asarray(logits_p[0])[real], atol=1e-5)
    assert np.allclose(np.asarray(value[0, perm])[real], np.asarray(value_p[0])[real], atol=1e-5)
    assert np.allclose(
        labrador.embed(codes, values, null), labrador.embed(codes[:, perm], values[:, perm], null[:, perm]), atol=1e-5
    )
    bert = Bert(EncoderConfig(n_items=20, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=6), nnx.Rngs(0))
    tokens = jnp.asarray([[4, 9, 2, 11, 0, 0]], jnp.int32)
    out, out_p = bert(tokens, segments), bert(tokens[:, perm], segments[:, perm])
    real = np.asarray(tokens[0, perm]) > 0
    assert np.allclose(np.asarray(out[0, perm])[real], np.asarray(out_p[0])[real], atol=1e-5)
    assert np.allclose(bert.embed(tokens), bert.embed(tokens[:, perm]), atol=1e-5)


def test_a_packed_bag_is_computed_as_if_alone():
    """Packing is only an economy: a bag's outputs and loss do not depend on the bags sharing its row."""
    rng = np.random.default_rng(1)
    config = EncoderConfig(n_items=8, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=10)
    labrador = Labrador(config, nnx.Rngs(0))
    codes = jnp.asarray([[3, 9, 1, 5, 2, 9, 7, 0, 0, 0]], jnp.int32)  # bag 1: slots 0-3, bag 2: slots 4-6
    segments = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 0, 0, 0]], jnp.int32)
    masked = codes == 9
    values = jnp.asarray(rng.random((1, 10)), jnp.float32)
    null = jnp.zeros((1, 10), bool)
    logits, value = labrador(codes, values, null, masked, segments)
    alone = [
        labrador(codes[:, a:b], values[:, a:b], null[:, a:b], masked[:, a:b], (segments[:, a:b] > 0).astype(jnp.int32))
        for a, b in ((0, 4), (4, 7))
    ]
    assert np.allclose(logits[0, :4], alone[0][0][0], atol=1e-5) and np.allclose(
        value[0, 4:7], alone[1][1][0], atol=1e-5
    )
    batch = {
        "codes": codes,
        "values": values,
        "is_null": null,
        "is_masked": masked,
        "segment_ids": segments,
        "target_code": jnp.where(masked, jnp.asarray([[0, 2, 0, 0, 0, 4, 0, 0, 0, 0]]), 0),
        "target_value": jnp.where(masked, 0.5, 0.0),
        # The heads read the two masked slots; the third entry is padding (points at slot 0, not read).
        "read_slots": jnp.asarray([[1, 5, 0]], jnp.int32),
        "read_valid": jnp.asarray([[True, True, False]]),
    }
    sums, terms = labrador_row_loss(labrador, batch, jnp.float32)
    assert float(terms[0]) == 2.0
    logp = jax.nn.log_softmax(logits[0], axis=-1)
    # The loss's value is the one told the true item (teacher forcing), weighted by the config's mse_weight.
    _, told = labrador(codes, values, null, masked, segments, told_items=batch["target_code"])
    assert not np.allclose(told[0, [1, 5]], value[0, [1, 5]])  # told, the head reads another item's unit
    weight = config.mse_weight
    expected = -logp[1, 1] - logp[5, 3] + weight * ((told[0, 1] - 0.5) ** 2 + (told[0, 5] - 0.5) ** 2)
    assert float(sums[0]) == pytest.approx(float(expected), rel=1e-5)
    bert = Bert(EncoderConfig(n_items=20, d_model=32, n_layers=2, n_heads=2, d_ff=64, context=10), nnx.Rngs(0))
    tokens = jnp.where(codes > 0, codes + 3, 0)
    out = bert(tokens, segments)
    assert np.allclose(out[0, 4:7], bert(tokens[:, 4:7], jnp.ones((1, 3), jnp.int32))[0], atol=1e-5)
    target_token = jnp.where(masked, jnp.asarray([[0, 7, 0, 0, 0, 11, 0, 0, 0, 0]]), 0)
    sums, terms = bert_row_loss(
        bert,
        {"tokens": tokens, "segment_ids": segments, "target_token": target_token}
        | {k: batch[k] for k in ("read_slots", "read_valid")},
        jnp.float32,
    )
    logp = jax.nn.log_softmax(out[0], axis=-1)
    assert float(terms[0]) == 2.0 and float(sums[0]) == pytest.approx(float(-logp[1, 7] - logp[5, 11]), rel=1e-5)


def test_labrador_exact_flops_match_xla_within_10_percent():
    """Labrador's input layers run on every slot and its heads on the read slots (16 of a row's 128); the exact count
    includes both (`labrador_extra_forward`, `labrador_read_forward` x the read share)."""
    from scaling.models.shapes import labrador_extra_forward, labrador_read_forward

    config = EncoderConfig(n_items=86, d_model=32, n_layers=1, n_heads=1, d_ff=88, context=128)
    graphdef, params = nnx.split(Labrador(config, nnx.Rngs(0)))
    tx = optax.adamw(1e-3)
    batch, t, reads = 8, config.context, 16
    fields = {
        "codes": jnp.ones((batch, t), jnp.int32),
        "values": jnp.zeros((batch, t), jnp.float32),
        "is_null": jnp.zeros((batch, t), bool),
        "is_masked": jnp.zeros((batch, t), bool).at[:, 0].set(True),
        "segment_ids": jnp.ones((batch, t), jnp.int32),
        "target_code": jnp.ones((batch, t), jnp.int32),
        "target_value": jnp.zeros((batch, t), jnp.float32),
        "read_slots": jnp.tile(jnp.arange(0, t, t // reads, dtype=jnp.int32), (batch, 1)),
    }

    def step(p, o, b):
        def loss(p):
            model = nnx.merge(graphdef, p)
            logits, value = model(
                b["codes"],
                b["values"],
                b["is_null"],
                b["is_masked"],
                b["segment_ids"],
                unroll=True,
                read_slots=b["read_slots"],
            )
            ce = -jax.nn.log_softmax(logits)[..., 0]
            return jnp.mean(ce + value**2)

        value, grads = jax.value_and_grad(loss)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    cost = jax.jit(step).lower(params, tx.init(params), fields).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    all_params, nonembed = labrador_params(config)
    shape = Shape(
        32,
        1,
        1,
        88,
        t,
        86,
        all_params,
        nonembed,
        labrador_extra_forward(config),
        reads / t,
        labrador_read_forward(config),
    )
    assert train_flops_per_token(shape, "exact") == pytest.approx(cost["flops"] / (batch * t), rel=0.10)


def test_bert_exact_flops_match_xla_within_10_percent():
    """BERT's stack runs on every slot and its token logits on the read slots (16 of a row's 128)."""
    config = EncoderConfig(n_items=950, d_model=32, n_layers=1, n_heads=1, d_ff=88, context=128)
    graphdef, params = nnx.split(Bert(config, nnx.Rngs(0)))
    tx = optax.adamw(1e-3)
    batch, t, reads = 8, config.context, 16
    tokens = jnp.ones((batch, t), jnp.int32)
    slots = jnp.tile(jnp.arange(0, t, t // reads, dtype=jnp.int32), (batch, 1))

    def step(p, o):
        def loss(p):
            logits = nnx.merge(graphdef, p)(tokens, jnp.ones((batch, t), jnp.int32), unroll=True, read_slots=slots)
            return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        value, grads = jax.value_and_grad(loss)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    cost = jax.jit(step).lower(params, tx.init(params)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    all_params, nonembed = bert_params(config)
    shape = Shape(32, 1, 1, 88, t, 950, all_params, nonembed, read_share=reads / t)
    assert train_flops_per_token(shape, "exact") == pytest.approx(cost["flops"] / (batch * t), rel=0.10)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_holds_the_peak_then_cools_down_over_its_last_fraction(shape):
    recipe = Recipe(schedule="wsd", warmup_fraction=0.1, decay_fraction=0.2, final_lr_fraction=0.1, decay_shape=shape)
    lr = schedule(recipe, 0.01, 200)
    assert recipe.decay_start(200) == 160
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(0.005)
    assert [float(lr(s)) for s in (20, 100, 160)] == pytest.approx([0.01] * 3)
    halfway = 0.001 + 0.009 * (0.5 if shape == "linear" else 1 - 0.5**0.5)
    assert float(lr(180)) == pytest.approx(halfway, rel=1e-5) and float(lr(200)) == pytest.approx(0.001)
    assert float(Recipe(schedule="wsd", warmup_steps=7).warmup(10_000)) == 7  # warmup in steps, for trunks


def test_schedule_warms_up_and_ends_at_the_planned_step():
    recipe = Recipe(warmup_fraction=0.1, final_lr_fraction=0.1)
    lr = schedule(recipe, 0.01, 200)
    assert float(lr(0)) == 0.0
    assert float(lr(20)) == pytest.approx(0.01)
    assert float(lr(200)) == pytest.approx(0.001)
    assert float(lr(110)) == pytest.approx(0.001 + 0.009 * 0.5, rel=1e-4)  # half-way down the cosine
