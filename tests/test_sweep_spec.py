"""Sweep specs and plans: validation messages, size choice, warnings, the shipped sweeps, no JAX in the driver."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from scaling.recipe import Recipe, candidates
from scaling.runspec import SpecError
from scaling.sweep.plan import budget_tag, choose_sizes, make_plan, run_id
from scaling.sweep.spec import load_sweep, parse_sweep
from scaling.sweep.state import check_sweep_record, collect, fit_window

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
        ({"tasks": ["a/../b"]}, "'tasks': task name 'a/../b': use letters, digits"),
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
        ({"train": {"attention": "flash"}}, "[train] 'attention' must be one of auto, xla, reference, cudnn, splash"),
        ({"train": {"attention": 1}}, "[train] 'attention' must be str, got 1"),
        ({"train": {"microbatch_rows": -1}}, "[train] 'microbatch_rows' must be 0 (chosen from memory) or a positive"),
        ({"train": {"microbatch_rows": 3}}, "[train] 'microbatch_rows' must divide [recipe] batch_rows (4), got 3"),
        ({"resources": {"gpu": 1}}, "[resources]: unknown key(s) gpu"),
        ({"resources": {"cpus": 0}}, "[resources] 'cpus' must be more than 0"),
        ({"resources": {"gpus": 1.5}}, "[resources] 'gpus' must be a fraction below 1"),
        ({"resources": {"hosts": 2}}, "[resources] 'hosts' must be 1"),
        ({"retries": {"preemptions": -1}}, "[retries] 'preemptions' must be 0 or more"),
        ({"lr_multipliers": [1, 1]}, "'lr_multipliers' must be a non-empty list of distinct positive numbers"),
        ({"lr_multipliers": [0.5, 0]}, "'lr_multipliers' must be a non-empty list of distinct positive numbers"),
        (
            {"lr_multipliers": [1, 2], "recipe": {"lr_multiplier": 2.0}},
            "set 'lr_multipliers' or [recipe] 'lr_multiplier', not both",
        ),
        ({"branches": True}, "'branches = true' needs [recipe] schedule = \"wsd\""),
        ({"branches": "yes"}, "'branches' must be bool"),
        ({"recipe": {"schedule": "step"}}, "[recipe]: schedule must be one of cosine, wsd, got 'step'"),
        ({"recipe": {"decay_fraction": 1.5}}, "[recipe]: decay_fraction must be within [0, 1]"),
        ({"recipe": {"decay_shape": "cos"}}, "[recipe]: decay_shape must be one of linear, 1-sqrt"),
        ({"sizes": {"extra": [{"budgets": [3e8]}]}}, "[[sizes.extra]] number 1 must have exactly the keys"),
        (
            {"sizes": {"extra": [{"budgets": [3e8], "widths": [8, 8]}]}},
            "[[sizes.extra]] number 1: 'widths' must be a non-empty list of distinct positive integers",
        ),
        (
            {"sizes": {"extra": [{"budgets": [5e8], "widths": [8]}]}},
            "[[sizes.extra]] number 1: 'budgets' [500000000.0] are not budgets of the sweep (3e+08, 1e+09)",
        ),
    ],
)
@pytest.mark.faults
def test_invalid_specs_name_the_file_and_the_key(change, message):
    with pytest.raises(SpecError) as error:
        parse_sweep(sweep_dict("prep", **change), "t.toml")
    assert message in str(error.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"family": "gpt"}, "t.toml: 'family' must be one of timeline, labrador, bert, got 'gpt'"),
        ({"convention": "7N"}, "t.toml: 'convention' must be one of 6N, 6N_nonembed, 6N+attn, exact, got '7N'"),
        ({"dtype": "float16"}, "t.toml: 'dtype' must be float32 or bfloat16, got 'float16'"),
        ({"tasks": ["mortality in icu"]}, "t.toml: 'tasks': task name 'mortality in icu': use letters, digits"),
        ({"probe_train_rows": -1}, "t.toml: 'probe_train_rows' must be 0 (all) or more, got -1"),
        ({"recipe": {"context": "long"}}, "t.toml: [recipe] 'context' must be int, got 'long'"),
        ({"recipe": {"contxt": 64}}, "t.toml: [recipe]: unknown key(s) contxt"),
        ({"train": {"eval_rows": 0}}, "t.toml: [train] 'eval_rows' must be a positive integer, got 0"),
    ],
)
def test_run_and_sweep_specs_share_one_validator(prepared, change, message):
    from scaling.runspec import parse_spec

    run = {"name": "r", "data": str(prepared[0]), "width": 32, "tokens": 1000}
    for parse, base in ((parse_sweep, sweep_dict(prepared[0])), (parse_spec, run)):
        with pytest.raises(SpecError) as error:
            parse({**base, **change}, "t.toml")
        assert message in str(error.value), parse.__name__


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


def test_extra_sizes_are_added_at_their_budgets_as_given(prepared):
    """[[sizes.extra]]: widths below the recipe's smallest size, at the named budgets only; the other runs unchanged."""
    plain = make_plan(parse_sweep(sweep_dict(prepared[0]), "t.toml"))
    extra = {"widths": [16, 24, 32], "extra": [{"budgets": [3e8], "widths": [8, 4096]}]}
    sweep = parse_sweep(sweep_dict(prepared[0], sizes=extra), "t.toml")
    plan = make_plan(sweep)
    small = [r for r in plan.runs if r.candidate.width == 8]
    assert [r.run_id for r in small] == ["b3e8-w8-s0"]
    assert small[0].candidate.params_nonembed < sweep.recipe.min_params_nonembed  # the automatic choice rejects it
    assert abs(small[0].candidate.flops - 3e8) <= 0.05 * 3e8
    assert any("budget 3e+08: extra width 4096 left out: too few steps" in w for w in plan.warnings)
    others = {r.run_id: r.spec.fingerprint("data") for r in plan.runs if r.candidate.width != 8}
    assert others == {r.run_id: r.spec.fingerprint("data") for r in plain.runs}
    assert "extra" in sweep.result_fields()["sizes"] and "extra" not in plain.sweep.result_fields()["sizes"]


def test_the_lr_axis_runs_each_cell_at_each_multiplier_under_its_own_fingerprint(prepared):
    plain = make_plan(parse_sweep(sweep_dict(prepared[0]), "t.toml"))
    sweep = parse_sweep(sweep_dict(prepared[0], lr_multipliers=[0.5, 1, 2]), "t.toml")
    plan = make_plan(sweep)
    assert len(plan.runs) == 3 * len(plain.runs)
    assert [r.run_id for r in plan.runs[:3]] == ["b3e8-w16-s0-lr0.5", "b3e8-w16-s0", "b3e8-w16-s0-lr2"]
    cell = plan.runs[:3]
    rule = cell[1].spec.recipe.learning_rate(16)
    assert [r.spec.recipe.learning_rate(16) for r in cell] == pytest.approx([rule / 2, rule, rule * 2])
    assert len({r.spec.fingerprint("data") for r in plan.runs}) == len(plan.runs)
    # the multiplier-1 runs are the runs of the sweep without the axis: same ids, same fingerprints
    same = {r.run_id: r.spec.fingerprint("data") for r in plan.runs if r.lr_multiplier == 1.0}
    assert same == {r.run_id: r.spec.fingerprint("data") for r in plain.runs}
    assert "lr_multipliers" in sweep.result_fields() and "lr_multipliers" not in plain.sweep.result_fields()


def test_wsd_branches_share_one_trunk_per_width_and_seed_and_split_its_cost(prepared, tmp_path):
    wsd = {"context": 32, "batch_rows": 4, "min_steps": 5, "schedule": "wsd", "decay_fraction": 0.2}
    separate = make_plan(parse_sweep(sweep_dict(prepared[0], budgets=[3e8, 1e9, 3e9], recipe=wsd), "t.toml"))
    plan = make_plan(parse_sweep(sweep_dict(prepared[0], budgets=[3e8, 1e9, 3e9], recipe=wsd, branches=True), "t.toml"))
    assert [t.run_id for t in plan.trunks] == ["trunk-w16-s0", "trunk-w24-s0", "trunk-w32-s0"]
    units = plan.units()
    assert [u.name for u in units] == ["trunk-w16-s0", "trunk-w24-s0", "trunk-w32-s0"]
    for trunk, unit in zip(plan.trunks, units, strict=True):
        branches = unit.runs
        assert [r.budget for r in branches] == [3e8, 1e9, 3e9] and trunk.branches == tuple(r.run_id for r in branches)
        shortest = min(r.candidate.steps for r in branches)
        warmup = round(0.05 * shortest)
        assert trunk.spec.recipe.decay_fraction == 0.0 and trunk.spec.branch_points[-1] == trunk.steps
        for r in branches:  # each starts its cool-down where a WSD run of its length would, with the shared warmup
            assert r.spec.recipe.warmup_steps == warmup and r.spec.tokens == r.candidate.tokens
            assert r.spec.branch.step == r.candidate.steps - round(0.2 * r.candidate.steps)
            assert r.spec.branch.step in trunk.spec.branch_points
        assert sum(r.spec.branch.trunk_share_steps for r in branches) == pytest.approx(trunk.steps)
        # the grid's compute is unchanged; what it costs is the trunk once plus every cool-down
        per_step = trunk.flops / trunk.steps
        cooldowns = sum(r.candidate.steps - r.spec.branch.step for r in branches) * per_step
        assert sum(r.flops_spent for r in branches) == pytest.approx(trunk.flops + cooldowns, rel=1e-9)
    assert plan.total_flops == pytest.approx(separate.total_flops)
    from tests.helpers import write_toml

    spec = write_toml(
        tmp_path / "wsd.toml", sweep_dict(prepared[0], budgets=[3e8, 1e9, 3e9], recipe=wsd, branches=True)
    )
    from typer.testing import CliRunner

    from scaling.cli import app

    result = CliRunner().invoke(app, ["sweep", "plan", str(spec)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "WSD branches: 3 trunks (trunk-w16-s0" in result.output
    assert f"cost {plan.flops_spent:.3g} ({plan.flops_spent / plan.total_flops:.0%})" in result.output
    # 1 : 3.3 : 10 as separate runs, 14.3; the largest run's trunk (8) and the three cool-downs (2.9): 76%
    assert plan.flops_spent == pytest.approx(3 * (0.8 * 3e9 + 0.2 * (3e8 + 1e9 + 3e9)), rel=0.05)  # 3 widths


def test_a_changed_spec_under_the_same_name_and_version_is_refused(prepared, tmp_path):
    sweep = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path)), "t.toml")
    check_sweep_record(sweep, sweep.folder(), "hash")
    check_sweep_record(
        parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path), resources={"cpus": 2}), "t.toml"),
        sweep.folder(),
        "hash",
    )  # resources do not decide results
    # Nor does how the table is fitted: [fit] window is kept in sweep.json (for `ehrscale fit`), and may change.
    refit = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path), fit={"window": 3}), "t.toml")
    assert refit.fit_window == 3.0 and "fit" not in refit.result_fields()
    check_sweep_record(refit, sweep.folder(), "hash")
    assert fit_window(sweep.folder() / "runs.parquet") == 3.0
    check_sweep_record(sweep, sweep.folder(), "hash")
    assert fit_window(sweep.folder() / "runs.parquet") is None
    with pytest.raises(SpecError, match=r"t.toml: \[fit\] 'window' must be a factor above 1 in parameters"):
        parse_sweep(sweep_dict(prepared[0], fit={"window": 1.0}), "t.toml")
    with pytest.raises(SpecError, match=r"t.toml: \[fit\]: unknown key\(s\) windows"):
        parse_sweep(sweep_dict(prepared[0], fit={"windows": 3}), "t.toml")
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
    frame, notes = collect(sweep.folder(), sweep.tasks, make_plan(sweep))
    assert frame.height == 6 and set(frame["status"]) == {"pending"} and not notes
    for column in (
        "run_id",
        "family",
        "budget",
        "flops",
        "params",
        "params_nonembed",
        "tokens",
        "loss",
        "status",
        "flops_per_token",
        "fit_params",
        "loss_se",
    ):
        assert column in frame.columns
    assert set(frame["fit_params"]) == {"params_nonembed"} and set(frame["family"]) == {"timeline"}


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem


def test_the_driver_side_never_imports_jax():
    code = (
        "import sys; import scaling.cli, scaling.sweep.driver, scaling.commands.sweep, scaling.sweep.submit; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax'))))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def _started(run_dir: Path, planned, **result) -> None:
    """A run folder as training leaves it: spec.json, then (when given) result.json in format 2."""
    c = planned.candidate
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(
        json.dumps(
            {
                "spec": json.loads(json.dumps(planned.spec.to_dict())),
                "fingerprint": "f",
                "steps": c.steps,
                "tokens_per_step": 128,
                "params": c.params,
                "params_nonembed": c.params_nonembed,
                "flops_per_token": c.flops_per_token,
                "convention": "exact",
                "flops": c.flops,
            }
        )
    )
    if result:
        record = {
            "format": 2,
            "status": "ok",
            "family": "timeline",
            "width": c.width,
            "layers": c.layers,
            "heads": 1,
            "seed": 0,
            "budget": planned.budget,
            "convention": "exact",
            "flops_per_token": c.flops_per_token,
            "flops_per_token_exact": c.flops_per_token,
            "flops": c.flops,
            "flops_exact": c.flops,
            "params": c.params,
            "params_nonembed": c.params_nonembed,
            "tokens": c.tokens,
            "steps": c.steps,
            "tokens_per_step": 128,
            "loss": 2.5,
            "loss_se": 0.01,
            "loss_split": "tuning",
            "loss_sequences": 64,
            "loss_tokens": 2048,
            "train_loss": 2.4,
            "wall_seconds": 3.0,
            "tokens_per_s": 1000.0,
            "mfu": 0.1,
            "fingerprint": "f",
        }
        (run_dir / "result.json").write_text(json.dumps(record | result))


def test_collect_reads_what_the_runs_wrote_without_the_dataset(prepared, tmp_path):
    """Finished runs' numbers come from result.json and eval.json (never re-planned); pending runs from plan.json;
    `collect` and `sweep status` give the same table with the prepared dataset gone; format 1 still reads."""
    import shutil

    from typer.testing import CliRunner

    from scaling.cli import app
    from scaling.sweep.state import write_plan_record

    data = tmp_path / "prep"
    shutil.copytree(prepared[0], data)
    source = sweep_dict(data, runs_root=str(tmp_path / "runs"), tasks=["long_stay"])
    sweep = parse_sweep(source, "t.toml")
    plan = make_plan(sweep)
    folder = sweep.folder()
    check_sweep_record(sweep, folder, "hash")
    write_plan_record(plan, folder)
    first, second, third = plan.runs[0], plan.runs[1], plan.runs[2]
    # a format-2 run whose record differs from what today's plan would say: the record wins
    _started(folder / first.run_id, first, params=123_456, loss=2.25)
    (folder / first.run_id / "eval.json").write_text(
        json.dumps(
            {
                "format": 2,
                "tasks": {
                    "long_stay": {
                        "probe": {"status": "ok", "auroc": 0.7, "auroc_lo": 0.6, "auroc_hi": 0.8, "auprc": 0.3},
                        "baselines": {"xgboost": {"auroc": 0.75}},
                        "oracle": {"auroc": 0.8},
                    }
                },
            }
        )
    )
    _started(folder / second.run_id, second, status="diverged", loss=float("nan"))
    # a format-1 run (before the format key): AUROCs in result.json, eval.json the bare task mapping, no budget
    _started(folder / third.run_id, third)
    record = json.loads((folder / third.run_id / "spec.json").read_text())
    record["spec"].pop("budget")
    (folder / third.run_id / "spec.json").write_text(json.dumps(record))
    (folder / third.run_id / "result.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "family": "timeline",
                "width": third.candidate.width,
                "params": third.candidate.params,
                "params_nonembed": third.candidate.params_nonembed,
                "tokens": third.candidate.tokens,
                "steps": third.candidate.steps,
                "flops": third.candidate.flops,
                "convention": "exact",
                "flops_per_token": third.candidate.flops_per_token,
                "train_loss": 2.6,
                "held_out_loss": 2.7,
                "loss": 2.7,
                "wall_seconds": 1.0,
                "tokens_per_s": 1.0,
                "mfu": 0.0,
                "fingerprint": "f",
                "auroc_long_stay": 0.61,
            }
        )
    )
    (folder / third.run_id / "eval.json").write_text(
        json.dumps(
            {"long_stay": {"probe": {"status": "ok", "auroc": 0.62, "auroc_lo": 0.5, "auroc_hi": 0.7, "auprc": 0.2}}}
        )
    )
    frame, notes = collect(folder, sweep.tasks)
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert frame.height == 6 and rows[first.run_id]["params"] == 123_456 and rows[first.run_id]["loss"] == 2.25
    assert rows[first.run_id]["auroc_long_stay"] == 0.7 and rows[first.run_id]["xgboost_auroc_long_stay"] == 0.75
    assert rows[first.run_id]["loss_se"] == 0.01 and rows[first.run_id]["record_format"] == 2
    assert rows[second.run_id]["status"] == "diverged"
    old = rows[third.run_id]
    assert old["status"] == "ok" and old["loss"] == 2.7 and old["auroc_long_stay"] == 0.62 and old["loss_se"] is None
    assert old["budget"] == third.budget and old["record_format"] == 1
    assert any("1 run(s): format 1" in n for n in notes) and any("plan.json gives it" in n for n in notes)
    (folder / "plan.json").rename(folder / "plan.moved")  # without the plan: the sweep's budget nearest its FLOPs
    assert collect(folder, sweep.tasks)[0].filter(pl.col("run_id") == third.run_id)["budget"][0] == third.budget
    assert any("budget of sweep.json within 5%" in n for n in collect(folder, sweep.tasks)[1])
    (folder / "plan.moved").rename(folder / "plan.json")
    assert sorted(set(frame["status"])) == ["diverged", "ok", "pending"]
    for r in plan.runs[3:]:
        assert rows[r.run_id]["status"] == "pending" and rows[r.run_id]["flops"] == r.candidate.flops
    # the prepared dataset moved away: collect and status read the same folders
    shutil.rmtree(data)
    spec = tmp_path / "t.toml"
    spec.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in source.items() if not isinstance(v, dict))
        + "\n"
        + "".join(
            f"[{k}]\n" + "".join(f"{a} = {json.dumps(b)}\n" for a, b in v.items())
            for k, v in source.items()
            if isinstance(v, dict)
        )
    )
    collected = CliRunner().invoke(app, ["collect", str(spec)])
    assert collected.exit_code == 0, collected.output
    assert "6 runs (1 diverged, 2 ok, 3 pending)" in collected.output and "format 1" in collected.output
    assert pl.read_parquet(folder / "runs.parquet").equals(frame)
    status = CliRunner().invoke(app, ["sweep", "status", str(spec)])
    assert status.exit_code == 0, status.output
    assert "1 diverged, 2 done, 3 pending" in status.output and first.run_id in status.output


def test_next_grid_writes_a_runnable_sweep_whose_flops_hit_the_new_budget(prepared, tmp_path):
    import math

    from scaling.sweep.nextgrid import write_next_sweep
    from scaling.sweep.state import write_plan_record

    sweep = parse_sweep(sweep_dict(prepared[0], runs_root=str(tmp_path / "runs"), tasks=["long_stay"]), "t.toml")
    plan = make_plan(sweep)
    folder = sweep.folder()
    check_sweep_record(sweep, folder, "hash")
    write_plan_record(plan, folder)
    table = folder / "runs.parquet"  # only its folder is read here: sweep.json and plan.json beside it
    targets = [3_000.0, 8_000.0, 20_000.0]
    out = tmp_path / "next.toml"
    text, chosen = write_next_sweep(table, 3e9, targets, "params_nonembed", out)
    written = load_sweep(out)  # it loads as written, with the sweep's family, data, convention, recipe and tasks
    assert written.name == "t-next-3e9" and written.budgets == (3e9,) and written.tasks == ("long_stay",)
    # the same recipe as its runs recorded it (the family's lr constant written out: the next grid keeps the lr)
    assert written.recipe.fingerprint_fields() == sweep.recipe.fingerprint_fields()
    assert written.recipe.lr_width_product == sweep.recipe.lr_constant and written.convention == sweep.convention
    assert list(written.sizes.widths) == [c.width for c in chosen] and len(chosen) == 3
    accepted, _ = candidates(written.recipe, 3e9, plan.inputs.vocab_size)
    free = [c for c in accepted if c.width not in {x.width for x in chosen}]
    for candidate, target in zip(chosen, targets):  # each the nearest width of the recipe, in log parameters
        gap = abs(math.log(candidate.params_nonembed / target))
        assert all(gap <= abs(math.log(c.params_nonembed / target)) for c in free)
    for r in make_plan(written).runs:  # the exact FLOPs of each planned run hit the new budget
        assert abs(r.candidate.flops - 3e9) <= 0.05 * 3e9
    from scaling.sweep.nextgrid import NextGridError

    with pytest.raises(NextGridError, match="no sweep.json and plan.json"):
        write_next_sweep(tmp_path / "elsewhere.csv", 3e9, targets, "params", tmp_path / "x.toml")


def test_status_shows_a_submitted_sweeps_job_it_cannot_reach(prepared, tmp_path):
    from scaling.sweep.submit import job_status, record_job

    folder = tmp_path / "sweep"
    assert job_status(folder) == []
    record_job(folder, "raysubmit_abc", "http://127.0.0.1:9")
    lines = job_status(folder)
    assert lines[0].startswith("driver job raysubmit_abc on http://127.0.0.1:9: cannot ask the cluster")


def test_a_job_for_several_sweeps_stages_every_spec_and_runs_them_through_one_driver(tmp_path):
    import shutil

    from scaling.sweep.submit import SubmitError, entrypoint, stage

    (tmp_path / "a").mkdir()
    specs = [tmp_path / "timeline.toml", tmp_path / "labrador.toml"]
    for spec in specs:
        spec.write_text(f"# {spec.stem}\n")
    folder = stage(specs)
    try:
        assert sorted(p.name for p in (folder / "sweeps").iterdir()) == ["labrador.toml", "timeline.toml"]
        assert (folder / "scaling" / "cli.py").exists() and (folder / "analysis").is_dir()
    finally:
        shutil.rmtree(folder)
    command = entrypoint(["sweeps/timeline.toml", "sweeps/labrador.toml"], "/shared/runs", 4)
    assert command == (
        "python -m scaling sweep run sweeps/timeline.toml sweeps/labrador.toml --address auto "
        "--runs-root /shared/runs --max-parallel 4"
    )
    (tmp_path / "a" / "timeline.toml").write_text("")
    with pytest.raises(SubmitError, match="two specs are named timeline.toml"):
        stage([specs[0], tmp_path / "a" / "timeline.toml"])


@pytest.mark.parametrize("family", ["labrador", "bert"])
def test_bag_families_plan_in_rows_of_packed_bags(prepared, family, tmp_path):
    from scaling.data.dataset import DatasetError, PreparedDataset
    from scaling.data.loaders import pack_bags

    dataset = PreparedDataset.open(prepared[0])
    lengths = np.asarray(dataset.bags("train").lengths)
    items = dataset.lab_vocabulary().size
    recipe = {"context": 128, "batch_rows": 4, "min_steps": 5}
    sweep = parse_sweep(sweep_dict(prepared[0], family=family, budgets=[1e9], recipe=recipe), "t.toml")
    context = sweep.recipe.context
    plan = make_plan(sweep)
    rows, _ = pack_bags(lengths, context, sweep.recipe.bags_per_row)  # the loader's packing, its cap included
    assert plan.inputs.context == context and plan.inputs.rows_per_epoch == rows[-1] + 1
    assert plan.inputs.rows_per_epoch < len(lengths) * 0.5  # several bags to a row
    assert plan.inputs.vocab_size == (items if family == "labrador" else 1 + 11 * items + 1)
    for r in plan.runs:
        assert r.candidate.tokens == r.candidate.steps * 4 * context
    assert not any("bags_per_row" in w for w in plan.warnings)  # 16 bags a row never binds on ~25-lab bags
    capped = make_plan(
        parse_sweep(
            sweep_dict(prepared[0], family=family, budgets=[1e9], recipe={**recipe, "bags_per_row": 2}), "t.toml"
        )
    )
    assert any(w.startswith("[recipe] bags_per_row = 2 packs the train bags into") for w in capped.warnings)
    # As a user sees them: the [table] a message names is printed, not read as markup.
    from typer.testing import CliRunner

    from scaling.cli import app
    from tests.helpers import write_toml

    capped_spec = write_toml(
        tmp_path / "capped.toml",
        sweep_dict(prepared[0], family=family, budgets=[1e9], recipe={**recipe, "bags_per_row": 2}),
    )
    result = CliRunner().invoke(app, ["sweep", "plan", str(capped_spec)], env={"COLUMNS": "300"})
    assert "warning: [recipe] bags_per_row = 2 packs the train bags into" in result.output
    bad = write_toml(tmp_path / "bad.toml", sweep_dict(prepared[0], family=family, budgets=[1e9], fit={"window": 0.5}))
    result = CliRunner().invoke(app, ["sweep", "plan", str(bad)])
    assert result.exit_code == 2 and "bad.toml: [fit] 'window' must be a factor above 1" in result.output
    too_short = parse_sweep(
        sweep_dict(prepared[0], family=family, budgets=[1e9], recipe={**recipe, "context": int(lengths.max()) - 1}),
        "t.toml",
    )
    with pytest.raises(DatasetError, match=rf"longest bag has {lengths.max()} labs.*raise \[recipe\] context"):
        make_plan(too_short)


def test_plan_measure_times_real_steps_of_each_width_with_its_mfu_and_memory(prepared, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from scaling.cli import app
    from scaling.sweep.throughput import estimate_seconds, timed_throughput

    source = sweep_dict(prepared[0], sizes={"widths": [16, 24]})
    sweep = parse_sweep(source, "t.toml")
    throughput = timed_throughput(sweep, [16, 16, 24], steps=2)
    assert sorted(throughput.tokens_per_s) == [16, 24] and all(v > 0 for v in throughput.tokens_per_s.values())
    assert all(0 < throughput.mfu[w] < 1 for w in (16, 24)) and throughput.microbatches == {16: 1, 24: 1}
    assert 0 < throughput.step_bytes[16] < throughput.step_bytes[24] < 2**30  # params, AdamW state, activations
    run = make_plan(sweep).runs[0]
    assert estimate_seconds(throughput, run.candidate) == pytest.approx(
        run.candidate.tokens / throughput.tokens_per_s[16]
    )
    from tests.helpers import write_toml

    spec = write_toml(tmp_path / "t.toml", source)
    monkeypatch.setattr("scaling.commands.sweep.timed_throughput", lambda *_: throughput)  # measured just above
    result = CliRunner().invoke(app, ["sweep", "plan", str(spec), "--measure", "--device-memory", "0.01"])
    assert result.exit_code == 0, result.output
    assert "MFU" in result.output and "MiB" in result.output
    # a 10 MiB "GPU" holds a few of these small steps side by side: the share is 1/k of it
    share = re.search(r"so (\d+) runs fit a 0.01 GiB GPU: \[resources\] gpus = ([\d.]+)", result.output)
    assert share and 1 <= int(share[1]) <= 8 and float(share[2]) == pytest.approx(1 / int(share[1]), abs=1e-4)


def test_the_gpu_share_fits_the_largest_step_with_room_for_each_run():
    from scaling.sweep.spec import GPU_SHARE_USABLE
    from scaling.sweep.throughput import STEP_MEMORY_MARGIN, runs_per_gpu, suggested_gpu_share

    gib = 2**30
    # 80 GiB at 0.9 usable: 72 GiB for steps of 5 GiB x 1.25 margin: 11 fit, capped at 8 a GPU
    assert runs_per_gpu(5 * gib, 80 * gib, GPU_SHARE_USABLE) == 8
    assert suggested_gpu_share({16: 1 * gib, 64: 20 * gib}, 80 * gib, GPU_SHARE_USABLE) == (round(1 / 2, 4), 2)
    assert suggested_gpu_share({64: 15 * gib}, 80 * gib, GPU_SHARE_USABLE) == (round(1 / 3, 4), 3)
    assert suggested_gpu_share({64: 70 * gib}, 80 * gib, GPU_SHARE_USABLE) == (1.0, 0)  # needs micro-batches
    k = runs_per_gpu(7 * gib, 80 * gib, GPU_SHARE_USABLE)
    assert k * STEP_MEMORY_MARGIN * 7 * gib <= GPU_SHARE_USABLE * 80 * gib < (k + 1) * STEP_MEMORY_MARGIN * 7 * gib


def test_accelerator_sweeps_compute_in_bfloat16_unless_they_say_otherwise(prepared):
    base = sweep_dict(prepared[0])
    assert parse_sweep(base, "t.toml").dtype == "float32"
    assert parse_sweep({**base, "resources": {"gpus": 0.25}}, "t.toml").dtype == "bfloat16"
    assert parse_sweep({**base, "resources": {"tpus": 4}}, "t.toml").dtype == "bfloat16"
    assert parse_sweep({**base, "dtype": "float32", "resources": {"gpus": 1}}, "t.toml").dtype == "float32"


def test_a_task_the_dataset_lacks_fails_at_planning_and_a_meds_dev_alias_is_the_built_in_task(prepared):
    from scaling.data.dataset import DatasetError

    with pytest.raises(DatasetError, match=r"no task 'mortality' \(tasks: in_hospital_mortality, .*--labels NAME=DIR"):
        make_plan(parse_sweep({**sweep_dict(prepared[0]), "tasks": ["mortality"]}, "t.toml"))
    sweep = parse_sweep({**sweep_dict(prepared[0]), "tasks": ["mortality/in_icu/first_24h"]}, "t.toml")
    assert sweep.tasks == ("icu_mortality",)
    assert all(run.spec.tasks == ("icu_mortality",) for run in make_plan(sweep).runs)


class _LabCorpusOfMimicIv:
    """What a plan reads of a prepared dataset, at full MIMIC-IV's lab scale: Labrador's 529 items, bags of up
    to 90 labs, about 3.2M train bags (118.7M lab rows at the synthetic data's 29 rows per kept bag, 80% train)
    of 3 to 47 labs (25 on average, as the synthetic data's)."""

    class _Bags:
        lengths = np.random.default_rng(0).integers(3, 48, 3_200_000)  # what a plan reads: packed rows per epoch

        def __len__(self):
            return len(self.lengths)

    def lab_vocabulary(self):
        return SimpleNamespace(size=529)

    def bags(self, split):
        return self._Bags()

    def resolve_task(self, name):
        return name


@pytest.mark.parametrize("name", ["mimic-iv-labrador", "mimic-iv-bert"])
def test_the_mimic_iv_lab_bag_sweeps_plan_a_grid_the_lab_corpus_can_feed(name):
    sweep = load_sweep(Path(__file__).parents[1] / "sweeps" / f"{name}.toml")
    plan = make_plan(sweep, _LabCorpusOfMimicIv())
    assert sorted({r.budget for r in plan.runs}) == [1e14, 3e14, 1e15, 3e15, 1e16]
    for budget in sweep.budgets:
        runs = [r for r in plan.runs if r.budget == budget]
        assert len(runs) == 6 and all(r.candidate.steps >= sweep.recipe.min_steps for r in runs)
        # The size nearest the recipe's guess (20 tokens per parameter) sees the data at most about twice.
        guess = min(runs, key=lambda r: abs(math.log(r.candidate.tokens / r.candidate.params_nonembed / 20)))
        assert guess.epochs <= 2.5, (budget, guess.run_id, guess.epochs)
    # Every run that repeats the data is named in the plan's warnings; the largest model is 1024 wide.
    assert {w.split(":")[0] for w in plan.warnings if "repeat the training data" in w} == {
        r.run_id for r in plan.runs if r.epochs > 1
    }
    assert max(r.candidate.width for r in plan.runs) == 1024


def test_refinement_adds_sizes_until_a_known_minimum_is_bracketed(prepared, tmp_path):
    """A grid planned far from the optimum: refinement walks toward the best size, then fills in around it, until the
    best run has a size on each side within `bracket`x (simulated losses with a known minimum, no training)."""
    from scaling.sweep.refine import next_widths, read_refined, write_refined

    source = sweep_dict(prepared[0], budgets=[3e9], sizes={"widths": [16, 24], "refine": 6, "bracket": 2.5})
    sweep = parse_sweep(source, "t.toml")
    plan = make_plan(sweep)
    ladder = {c.width: c for c in plan.ladder[3e9]}
    target = ladder[64].params_nonembed  # the known optimum, well above the planned sizes
    ladder_params = [c.params_nonembed for c in ladder.values()]

    def table(plan):
        rows = [
            {
                "run_id": r.run_id,
                "budget": r.budget,
                "width": r.candidate.width,
                "params_nonembed": r.candidate.params_nonembed,
                "loss": 2.0 + 0.1 * math.log(r.candidate.params_nonembed / target) ** 2,
                "status": "ok",
            }
            for r in plan.runs
        ]
        return pl.DataFrame(rows)

    added = []
    for _ in range(10):
        additions = next_widths(plan, table(plan))
        if not additions:
            break
        added.append(additions[3e9])
        refined = read_refined(tmp_path)
        write_refined(tmp_path, {3e9: tuple(refined.get(3e9, ())) + (additions[3e9],)})
        plan = make_plan(sweep, refined=read_refined(tmp_path))
    widths = sorted(r.candidate.width for r in plan.runs)
    # one ladder step at a time toward the minimum (each at the edge), then one past it (64 -> 96 is 4.4x, the
    # ladder has nothing between: depth goes from 1 to 2 layers)
    assert added == [32, 48, 64, 96] and widths == [16, 24, 32, 48, 64, 96]
    sizes = sorted(r.candidate.params_nonembed for r in plan.runs)
    best = sizes.index(target)
    assert 0 < best < len(sizes) - 1  # bracketed: a size either side of the best
    for lo, hi in ((sizes[best - 1], target), (target, sizes[best + 1])):  # as densely as the ladder allows
        assert hi / lo <= 2.5 or not [p for p in ladder_params if lo < p < hi and p not in sizes]
    assert all(r.refined == (r.candidate.width not in (16, 24)) for r in plan.runs)
    assert json.loads((tmp_path / "refined.json").read_text())["format"] == 1
    # at most `refine` sizes a budget, and none when refinement is off
    capped = parse_sweep({**source, "sizes": {"widths": [16, 24], "refine": 1}}, "t.toml")
    plan = make_plan(capped, refined={3e9: (32,)})
    assert next_widths(plan, table(plan)) == {}
    assert "refine" not in parse_sweep(sweep_dict(prepared[0]), "t.toml").result_fields()["sizes"]


def test_runs_sharing_a_gpu_each_get_a_capped_allocator_and_cpu_runs_one_thread():
    from scaling.sweep.driver import CPU_SINGLE_THREAD, worker_env
    from scaling.sweep.spec import Resources

    quarter = worker_env(Resources(cpus=2, gpus=0.25))
    assert quarter == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.2250"}
    assert worker_env(Resources(cpus=4, gpus=1)) == {}  # a whole GPU: JAX's own defaults
    cpu = worker_env(Resources(cpus=1))
    assert cpu["JAX_PLATFORMS"] == "cpu" and CPU_SINGLE_THREAD in cpu["XLA_FLAGS"]
