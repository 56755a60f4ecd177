"""The size recipe: a snapshot of the grid it makes for one budget, and its rules."""

import pytest

from scaling.recipe import Recipe, candidates, override
from scaling.runspec import SpecError, parse_spec

# Recipe() at 1e12 FLOPs, vocabulary 374 (the demo's), exact convention:
# (width, layers, heads, params, params_nonembed, steps, tokens, learning rate: the timeline's calibrated 0.56 / width)
SNAPSHOT_1E12 = [
    (16, 1, 1, 15344, 3376, 5472, 11206656, 0.035),
    (24, 1, 1, 24936, 6984, 3451, 7067648, 0.023333),
    (32, 1, 1, 36576, 12640, 2369, 4851712, 0.0175),
    (48, 1, 1, 63696, 27792, 1362, 2789376, 0.011667),
    (64, 1, 2, 98240, 50368, 876, 1794048, 0.00875),
    (96, 2, 3, 293472, 221664, 261, 534528, 0.005833),
    (128, 3, 4, 689536, 593792, 109, 223232, 0.004375),
]


def test_grid_snapshot_for_one_budget():
    accepted, rejected = candidates(Recipe(), 1e12, 374)
    got = [
        (c.width, c.layers, c.heads, c.params, c.params_nonembed, c.steps, c.tokens, round(c.learning_rate, 6))
        for c in accepted
    ]
    assert got == SNAPSHOT_1E12
    assert [r.width for r in rejected] == [192, 256, 384, 512, 768, 1024]
    assert rejected[0].reason == "too few steps: 40 < 50"


@pytest.mark.parametrize("convention", ["6N", "6N_nonembed", "6N+attn", "exact"])
def test_every_candidate_hits_the_budget_in_whole_steps(convention):
    recipe = Recipe()
    for budget in (3e11, 1e12, 3e12, 1e13):
        accepted, _ = candidates(recipe, budget, 374, convention)
        assert accepted
        for c in accepted:
            assert c.tokens == c.steps * recipe.tokens_per_step
            assert abs(c.flops - budget) <= 0.05 * budget
            assert c.steps >= recipe.min_steps


def test_too_small_models_are_rejected():
    accepted, rejected = candidates(Recipe(min_params_nonembed=20_000), 1e12, 374)
    assert {r.width for r in rejected if r.reason.startswith("too small")} == {16, 24, 32}
    assert min(c.width for c in accepted) == 48


def test_overrides_and_their_errors():
    recipe = override(Recipe(), {"context": 64, "widths": [32, 64]})
    assert recipe.context == 64 and recipe.widths == (32, 64) and recipe.tokens_per_step == 16 * 64
    with pytest.raises(ValueError, match="unknown recipe field\\(s\\): contxt"):
        override(Recipe(), {"contxt": 64})


def test_run_spec_errors_name_the_file_and_key():
    good = {"name": "r", "data": "p", "width": 32, "tokens": 1000}
    assert parse_spec(good, "run.toml").width == 32
    with pytest.raises(SpecError, match="run.toml: unknown key\\(s\\) widht"):
        parse_spec({**good, "widht": 3}, "run.toml")
    with pytest.raises(SpecError, match="run.toml: 'width' must be int"):
        parse_spec({**good, "width": "32"}, "run.toml")
    with pytest.raises(SpecError, match="run.toml: \\[recipe\\]: unknown key\\(s\\) depth"):
        parse_spec({**good, "recipe": {"depth": 3}}, "run.toml")
    with pytest.raises(SpecError, match="run.toml: 'family' must be one of"):
        parse_spec({**good, "family": "gpt"}, "run.toml")
    with pytest.raises(SpecError, match="run.toml: missing key 'tokens'"):
        parse_spec({k: v for k, v in good.items() if k != "tokens"}, "run.toml")


def test_the_learning_rate_constant_is_the_familys_calibrated_one_unless_a_spec_sets_it():
    from scaling.families import FAMILIES

    assert Recipe().lr_constant == FAMILIES["timeline"].lr_width_product == 0.56  # measured (docs/models.md)
    assert Recipe(family="labrador").learning_rate(32) == pytest.approx(0.48 / 32)  # measured (docs/models.md)
    assert Recipe(family="bert").learning_rate(32) == pytest.approx(0.39 / 32)  # measured
    assert Recipe(lr_width_product=2.0).learning_rate(32) == pytest.approx(2.0 / 32)
    # the fingerprint hashes the value: a spec that writes the family's constant and one that takes it agree, and a
    # run that set 1.0 (every family's default before calibration) keeps the fingerprint it was recorded under
    bert = Recipe(family="bert").fingerprint_fields()
    assert bert == Recipe(family="bert", lr_width_product=0.39).fingerprint_fields()
    assert Recipe(family="labrador", lr_width_product=1.0).fingerprint_fields()["lr_width_product"] == 1.0
    assert Recipe(family="labrador").fingerprint_fields()["lr_width_product"] == 0.48
    assert Recipe().fingerprint_fields()["lr_width_product"] == 0.56


def test_bag_families_count_their_heads_at_the_read_slots_only():
    """A bag family's output layers run on `bags_per_row` slots a row (the masked ones), not on all `context`: the
    exact FLOPs per token fall by what the heads cost on the other slots, so a budget buys more labs."""
    from scaling.flops import forward_components

    capped, uncapped = Recipe(family="labrador"), Recipe(family="labrador", bags_per_row=0)
    assert capped.shape(16, 86).read_share == 16 / 128 and uncapped.shape(16, 86).read_share == 1.0
    parts, every = forward_components(capped.shape(16, 86)), forward_components(uncapped.shape(16, 86))
    assert parts["logits"] == pytest.approx(every["logits"] * 16 / 128)
    assert parts["qkv"] == every["qkv"] and parts["mlp"] == every["mlp"]  # the stack runs on every slot either way
    # At width 16 the heads on every slot would be a third of Labrador's count (60% before revision 2's narrower
    # value head): a budget buys 1.5x the tokens.
    assert candidates(uncapped, 1e12, 86)[0][0].tokens * 1.505 == pytest.approx(
        candidates(capped, 1e12, 86)[0][0].tokens, rel=0.02
    )
    assert Recipe().shape(16, 374).read_share == 1.0  # every token of a timeline predicts the next
    # The cap is in a bag run's fingerprint, never in a timeline run's (whose runs it does not change).
    assert "bags_per_row" in capped.fingerprint_fields() and "bags_per_row" not in Recipe().fingerprint_fields()
    with pytest.raises(ValueError, match="bags_per_row must be 0"):
        Recipe(family="bert", bags_per_row=-1)
