"""Sweep specs and plans: validation messages, size choice, warnings, the shipped sweeps, no JAX in the driver."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.recipe import Recipe, candidates
from scaling.runspec import SpecError
from scaling.sweep.plan import budget_tag, choose_sizes, make_plan, run_id
from scaling.sweep.spec import load_sweep, parse_sweep
from scaling.sweep.state import check_sweep_record, collect

ROOT = Path(__file__).resolve().parent.parent


def sweep_dict(prep, **changes) -> dict:
    base = {
        "name": "t",
        "version": 1,
        "family": "timeline",
        "data": str(prep),
        "budgets": [3e8, 1e9],
        "sizes": {"widths": [16, 24, 32]},
        "recipe": {"context": 32, "batch_rows": 4, "min_steps": 5},
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "change, message",
    [
        ({"budget": [1e9]}, "t.toml: unknown key(s) budget"),
        ({"budgets": []}, "t.toml: 'budgets' must be a non-empty list of positive FLOP counts"),
        ({"budgets": [1e9, -1]}, "'budgets' must be a non-empty list of positive FLOP counts"),
        ({"budgets": [1e9, 1e9]}, "'budgets' repeats a budget"),
        ({"budgets": "1e9"}, "t.toml: 'budgets' must be list, got '1e9'"),
        ({"family": "gpt"}, "'family' must be one of timeline, labrador, bert"),
        ({"name": "a/b"}, "'name' must be letters, digits"),
        ({"version": 1.5}, "'version' must be int or str"),
        ({"seeds": [0, 0]}, "'seeds' must be a non-empty list of distinct non-negative integers"),
        ({"tasks": ["mortality"]}, "unknown task(s) mortality"),
        ({"convention": "7N"}, "'convention' must be one of"),
        ({"sizes": {"count": 0}}, "[sizes] 'count' must be 1 or more"),
        ({"sizes": {"widths": [16], "count": 3}}, "[sizes] takes either 'widths' or 'count' and 'span', not both"),
        ({"sizes": {"span": "wide"}}, "[sizes] 'span' must be float, got 'wide'"),
        ({"sizes": {"widths": [16, -2]}}, "[sizes] 'widths' must be a non-empty list of distinct positive integers"),
        ({"sizes": 5}, "'sizes' must be a table ([sizes])"),
        ({"recipe": {"contxt": 64}}, "[recipe]: unknown key(s) contxt"),
        ({"recipe": {"context": "long"}}, "[recipe] 'context' must be int, got 'long'"),
        ({"recipe": {"family": "bert"}}, "[recipe]: unknown key(s) family"),
        ({"train": {"eval_every": 0}}, "[train] 'eval_every' must be a positive integer"),
        ({"resources": {"gpu": 1}}, "[resources]: unknown key(s) gpu"),
        ({"resources": {"cpus": 0}}, "[resources] 'cpus' must be more than 0"),
        ({"resources": {"gpus": 1.5}}, "[resources] 'gpus' must be a fraction below 1"),
        ({"resources": {"hosts": 2}}, "[resources] 'hosts' must be 1"),
        ({"retries": {"preemptions": -1}}, "[retries] 'preemptions' must be 0 or more"),
    ],
)
@pytest.mark.faults
def test_invalid_specs_name_the_file_and_the_key(change, message):
    with pytest.raises(SpecError) as error:
        parse_sweep(sweep_dict("prep", **change), "t.toml")
    assert message in str(error.value)


def test_missing_keys_and_bad_files(tmp_path):
    source = sweep_dict("prep")
    del source["budgets"]
    with pytest.raises(SpecError, match="t.toml: missing key 'budgets'"):
        parse_sweep(source, "t.toml")
    with pytest.raises(SpecError, match="no such file"):
        load_sweep(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_sweep(tmp_path / "bad.toml")


def test_resources_and_retries_parse_and_default():
    sweep = parse_sweep(
        sweep_dict("prep", resources={"cpus": 2, "gpus": 0.5, "accelerator_type": "A100"}, retries={"failures": 0}),
        "t.toml",
    )
    assert sweep.resources.gpus == 0.5 and sweep.resources.shares_gpu and sweep.resources.cpus == 2.0
    assert sweep.retries.failures == 0 and sweep.retries.preemptions == 5
    assert sweep.version == "1" and sweep.seeds == (0,) and sweep.runs_root == "runs"


def test_budget_tags_are_short_and_distinct():
    assert [budget_tag(b) for b in (3e11, 1e12, 1.5e12, 1e19)] == ["3e11", "1e12", "1.5e12", "1e19"]
    assert run_id(3e11, 32, 0) == "b3e11-w32-s0"


def test_sizes_centre_on_the_guess_and_spread_over_the_span():
    recipe = Recipe()
    accepted, _ = candidates(recipe, 1e12, 374)
    chosen = choose_sizes(accepted, count=3, span=10.0, tokens_per_param=100.0)
    assert len(chosen) == 3 and len({c.width for c in chosen}) == 3
    guess = min(accepted, key=lambda c: abs(__import__("math").log(c.tokens / c.params_nonembed / 100.0)))
    sizes = [c.params_nonembed for c in chosen]
    assert sizes == sorted(sizes) and sizes[0] < guess.params_nonembed < sizes[-1]
    assert len(choose_sizes(accepted, count=50, span=1e6, tokens_per_param=20.0)) == len(accepted)


def test_plan_lists_every_run_with_tokens_that_spend_the_budget(prepared):
    sweep = parse_sweep(sweep_dict(prepared[0], seeds=[0, 1]), "t.toml")
    plan = make_plan(sweep)
    assert [r.run_id for r in plan.runs][:2] == ["b3e8-w16-s0", "b3e8-w16-s1"]
    assert len(plan.runs) == 2 * 3 * 2
    for r in plan.runs:
        assert abs(r.candidate.flops - r.budget) <= 0.05 * r.budget
        assert r.candidate.tokens == r.candidate.steps * 4 * 32 and r.spec.tokens == r.candidate.tokens
    # 300 patients are a small dataset: the big budget repeats it, and the plan says so
    sweep = parse_sweep(sweep_dict(prepared[0], budgets=[1e11]), "t.toml")
    assert any("repeat the training data" in w for w in make_plan(sweep).warnings)
    sweep = parse_sweep(sweep_dict(prepared[0], sizes={"widths": [16, 1024]}), "t.toml")
    warnings = make_plan(sweep).warnings
    assert any("width 1024 left out: too few steps" in w for w in warnings)
    assert any("1 sizes; an IsoFLOP parabola needs 3" in w for w in warnings)


def test_a_changed_spec_under_the_same_name_and_version_is_refused(prepared, tmp_path):
    sweep = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path)), "t.toml")
    check_sweep_record(sweep, sweep.folder(), "hash")
    check_sweep_record(
        parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path), resources={"cpus": 2}), "t.toml"),
        sweep.folder(),
        "hash",
    )  # resources do not decide results
    changed = parse_sweep(
        sweep_dict(
            prepared[0],
            runs_root=str(tmp_path),
            budgets=[3e8, 2e9],
            recipe={"context": 32, "batch_rows": 8, "min_steps": 5},
        ),
        "t.toml",
    )
    with pytest.raises(SpecError, match=r"fields that differ: budgets, recipe\); raise 'version'"):
        check_sweep_record(changed, changed.folder(), "hash")


def test_collect_lists_pending_runs_before_anything_ran(prepared, tmp_path):
    sweep = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path)), "t.toml")
    frame = collect(make_plan(sweep), sweep.folder())
    assert frame.height == 6 and set(frame["status"]) == {"pending"}
    for column in ("run_id", "family", "budget", "flops", "params", "params_nonembed", "tokens", "loss", "status"):
        assert column in frame.columns


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem


def test_the_driver_side_never_imports_jax():
    code = (
        "import sys; import scaling.cli, scaling.sweep.driver, scaling.sweep.commands, scaling.sweep.submit; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax'))))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_collect_reads_results_and_aurocs_from_the_run_folders(prepared, tmp_path):
    sweep = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path), tasks=["long_stay"]), "t.toml")
    plan = make_plan(sweep)
    first = sweep.folder() / plan.runs[0].run_id
    first.mkdir(parents=True)
    (first / "result.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "steps": plan.runs[0].candidate.steps,
                "loss": 2.5,
                "train_loss": 2.4,
                "wall_seconds": 3.0,
                "tokens_per_s": 1000.0,
                "mfu": 0.1,
                "auroc_long_stay": 0.7,
                "auroc_long_stay_lo": 0.6,
                "auroc_long_stay_hi": 0.8,
            }
        )
    )
    (first / "eval.json").write_text(json.dumps({"long_stay": {}}))
    second = sweep.folder() / plan.runs[1].run_id
    second.mkdir(parents=True)
    (second / "result.json").write_text(
        json.dumps(
            {
                "status": "diverged",
                "steps": 7,
                "loss": float("nan"),
                "train_loss": float("nan"),
                "wall_seconds": 1.0,
                "tokens_per_s": 1.0,
                "mfu": 0.0,
            }
        )
    )
    frame = collect(plan, sweep.folder()).sort("run_id")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[plan.runs[0].run_id]["status"] == "ok" and rows[plan.runs[0].run_id]["auroc_long_stay"] == 0.7
    assert rows[plan.runs[0].run_id]["loss"] == 2.5 and rows[plan.runs[1].run_id]["status"] == "diverged"
    assert sorted(set(frame["status"])) == ["diverged", "ok", "pending"]


@pytest.mark.parametrize("family", ["labrador", "bert"])
def test_bag_families_plan_in_bags_of_the_dataset_width(prepared, family):
    from scaling.data.dataset import PreparedDataset

    dataset = PreparedDataset.open(prepared[0])
    width = dataset.bags("train").codes.shape[1]
    items = dataset.lab_vocabulary().size
    sweep = parse_sweep(sweep_dict(prepared[0], family=family, budgets=[1e9]), "t.toml")
    plan = make_plan(sweep)
    assert plan.inputs.context == width and plan.inputs.rows_per_epoch == len(dataset.bags("train"))
    assert plan.inputs.vocab_size == (items if family == "labrador" else 1 + 11 * items + 1)
    for r in plan.runs:
        assert r.candidate.tokens == r.candidate.steps * 4 * width


def test_plan_measure_times_real_steps_of_each_width(prepared):
    from scaling.sweep.throughput import estimate_seconds, timed_throughput

    sweep = parse_sweep(sweep_dict(prepared[0]), "t.toml")
    throughput = timed_throughput(sweep, [16, 16, 24], steps=2)
    assert sorted(throughput.tokens_per_s) == [16, 24] and all(v > 0 for v in throughput.tokens_per_s.values())
    run = make_plan(sweep).runs[0]
    assert estimate_seconds(throughput, run.candidate) == pytest.approx(
        run.candidate.tokens / throughput.tokens_per_s[16]
    )
