"""Training one run: loss falls, results and metrics, idempotence, resume after kill -9, divergence, data parallel."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from scaling.data.dataset import PreparedDataset
from scaling.eval.evaluate import evaluate
from scaling.record import RunError
from scaling.runspec import RunSpec
from scaling.training.loop import train
from tests.helpers import EHRSCALE, make_spec, spec_dict, write_toml


def test_loss_falls_and_the_run_folder_holds_what_it_promises(prepared, tmp_path):
    out = tmp_path / "run"
    result = train(make_spec(prepared[0]), out, log=lambda _: None, peak_flops=1e11)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["loss"] > metrics[-1]["loss"] + 1.0  # from about ln(vocab) down
    assert result.status == "ok" and result.steps == 60 and result.tokens == 60 * 16 * 32
    # the versioned run record (scaling/record.py), written once by training
    assert result.format == 2 and json.loads((out / "result.json").read_text()) == result.to_json()
    for key in (
        "params",
        "params_nonembed",
        "flops",
        "flops_exact",
        "flops_per_token_exact",
        "convention",
        "budget",
        "train_loss",
        "loss",
        "loss_se",
        "loss_split",
        "loss_sequences",
        "loss_tokens",
        "wall_seconds",
        "tokens_per_s",
        "mfu",
        "layers",
        "heads",
        "seed",
        "tokens_per_step",
    ):
        assert key in result.to_json()
    assert result.convention == "exact" and result.flops == pytest.approx(result.flops_per_token * result.tokens)
    assert result.flops_exact == result.flops and result.budget is None
    # the loss is measured on every row of the final evaluation (eval_rows, capped by the tuning split), with its error
    assert result.loss_split == "tuning" and result.loss_sequences == 64 and result.loss_tokens > 32 * 32
    assert 0 < result.loss_se < 0.1 * result.loss
    for key in ("step", "tokens", "loss", "lr", "grad_norm", "step_time", "tokens_per_s", "mfu"):
        assert key in metrics[-1]
    assert metrics[-1]["step"] == 60 and metrics[-1]["eval_loss"] == result.loss
    assert metrics[-1]["eval_loss_se"] == result.loss_se
    assert "eval_loss" in metrics[3] and "eval_loss_se" not in metrics[3]  # step 20: the curve's smaller evaluation
    spec = json.loads((out / "spec.json").read_text())
    assert spec["fingerprint"] == result.fingerprint and spec["steps"] == 60
    # Patient data stays in the data folder: no subject ids in the run folder.
    text = "".join(p.read_text() for p in out.glob("*.json*"))
    assert "subject" not in text


def test_loss_estimate_is_the_ratio_of_sums_with_its_delta_method_error():
    from scaling.training.tasks import loss_estimate

    # three rows: 10 tokens summing to 20 nats, 20 to 30, 10 to 25 (and an empty padding row, ignored)
    estimate = loss_estimate([20.0, 30.0, 25.0, 0.0], [10, 20, 10, 0])
    assert estimate.mean == pytest.approx(75 / 40) and estimate.rows == 3 and estimate.terms == 40
    residuals = [20 - 1.875 * 10, 30 - 1.875 * 20, 25 - 1.875 * 10]
    assert estimate.se == pytest.approx((sum(r * r for r in residuals) / (3 * 2)) ** 0.5 / (40 / 3))
    assert estimate.se == pytest.approx(0.30136408628)  # sqrt(96.875 / 6) / (40 / 3)


def test_finished_run_is_not_trained_again_and_a_changed_spec_is_refused(prepared, tmp_path):
    out = tmp_path / "run"
    first = train(make_spec(prepared[0], tokens=20 * 16 * 32), out, log=lambda _: None, peak_flops=1e11)
    stamp = (out / "result.json").stat().st_mtime_ns
    assert train(make_spec(prepared[0], tokens=20 * 16 * 32), out, log=lambda _: None) == first
    assert (out / "result.json").stat().st_mtime_ns == stamp
    with pytest.raises(RunError, match="another spec \\(fields that differ: recipe, width\\)"):
        train(
            make_spec(prepared[0], tokens=20 * 16 * 32, width=48, recipe={"lr_width_product": 2.0}),
            out,
            log=lambda _: None,
        )


@pytest.mark.faults
def test_divergence_stops_the_run(prepared, tmp_path):
    result = train(
        make_spec(prepared[0], recipe={"lr_width_product": 1e12, "grad_clip": 1e12, "weight_decay": 0.0}),
        tmp_path / "run",
        log=lambda _: None,
        peak_flops=1e11,
    )
    assert result.status == "diverged"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


def _run(args, env=None, **kwargs):
    return subprocess.run(
        [EHRSCALE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, **kwargs
    )


@pytest.mark.faults
@pytest.mark.slow  # 90 s on 2 cores; resuming from a checkpoint is also covered by test_faults' fast tests
def test_kill_minus_nine_then_resume_ends_with_the_same_loss(prepared, tmp_path):
    spec = write_toml(
        tmp_path / "run.toml", spec_dict(prepared[0], tokens=80 * 16 * 32, train={"checkpoint_every": 10})
    )
    reference = _run(["train", str(spec), "--out", str(tmp_path / "whole")])
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen(
        [EHRSCALE, "train", str(spec), "--out", str(tmp_path / "cut")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [int(p.name) for p in checkpoints.glob("*") if p.name.isdigit()] if checkpoints.exists() else []
        if steps and max(steps) >= 20:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = _run(["train", str(spec), "--out", str(tmp_path / "cut")])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stderr
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    cut = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert cut["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    assert cut["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


def test_two_devices_match_one(prepared, tmp_path):
    spec = write_toml(tmp_path / "run.toml", spec_dict(prepared[0], tokens=30 * 16 * 32))
    one = _run(["train", str(spec), "--out", str(tmp_path / "one")])
    two = _run(
        ["train", str(spec), "--out", str(tmp_path / "two")],
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a = json.loads((tmp_path / "one" / "result.json").read_text())
    b = json.loads((tmp_path / "two" / "result.json").read_text())
    # Two devices sum the gradient in another order: the same to float round-off at first (1e-7 at
    # step 10 here), which 30 AdamW steps at this small model's large learning rate grow to ~1e-4.
    early = [
        [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()[:2]]
        for name in ("one", "two")
    ]
    assert early[1] == pytest.approx(early[0], rel=1e-5)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)


@pytest.mark.parametrize("family", ["labrador", "bert"])
def test_bag_families_train(prepared, tmp_path, family):
    result = train(
        make_spec(prepared[0], family=family, tokens=200 * 4 * 128, recipe={"batch_rows": 4, "context": 128}),
        tmp_path / family,
        log=lambda _: None,
        peak_flops=1e11,
    )
    metrics = [json.loads(line) for line in (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "ok" and metrics[-1]["loss"] < metrics[0]["loss"]
    # The family's own metrics on the fixed held-out masked bags: better than a uniform guess of the item, and
    # a value error below a constant guess of 0 or 1 (at least 1/4 away from most eCDF values).
    items = PreparedDataset.open(prepared[0]).lab_vocabulary().size
    assert result.masked_split == "held_out" and result.masked_bags >= 64
    assert 1 / items < result.masked_item_accuracy <= 1 and 0 <= result.value_mse < 0.25
    assert result.value_by_item and all(entry["n"] >= 1 for entry in result.value_by_item)
    # Evaluated, the run also gets XGBoost and logistic regression on the very bags it reads.
    report = evaluate(tmp_path / family, ("long_stay",), log=lambda _: None)
    on_bags = report.tasks["long_stay"].baselines_bags
    assert on_bags["status"] in ("ok", "too small")
    if on_bags["status"] == "ok":
        assert on_bags["features"] == 2 * items and 0 <= on_bags["xgboost"]["auroc"] <= 1


def test_cli_reports_spec_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndata = "nowhere"\nwidth = 32\ntokens = 10\nwidht = 3\n')
    result = _run(["train", str(bad), "--out", str(tmp_path / "o")])
    assert (
        result.returncode == 2
        and "bad.toml: unknown key(s) widht" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_bfloat16_compute_keeps_float32_weights(prepared, tmp_path):
    result = train(
        make_spec(prepared[0], dtype="bfloat16", tokens=20 * 16 * 32),
        tmp_path / "bf16",
        log=lambda _: None,
        peak_flops=1e11,
    )
    metrics = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert result.status == "ok" and metrics[-1]["loss"] < metrics[0]["loss"]
    manager = ocp.CheckpointManager(tmp_path / "bf16" / "checkpoints")
    restored = manager.restore(manager.latest_step())
    assert {str(x.dtype) for x in jax.tree.leaves(restored["params"])} == {"float32"}


def test_relative_run_folder_works(prepared, tmp_path):
    spec = write_toml(tmp_path / "run.toml", spec_dict(prepared[0], tokens=10 * 16 * 32))
    result = _run(["train", "run.toml", "--out", "runs/one"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "runs" / "one" / "result.json").read_text())["status"] == "ok"
    assert (tmp_path / "runs" / ".jax_cache").is_dir() and spec.exists()


def test_runs_of_a_width_at_any_budget_share_one_compiled_step(prepared):
    """The schedule's constants are an argument of the step, so a sweep compiles a width's step once (the
    persistent cache serves the other budgets), and the schedule they make is the planned one."""
    from flax import nnx

    from scaling.training.step import lr_at, optimizer_state, schedule_constants, step_functions
    from scaling.training.tasks import make_task

    dataset = PreparedDataset.open(prepared[0])
    lowered = []
    for tokens in (60 * 16 * 32, 600 * 16 * 32):
        spec = make_spec(prepared[0], tokens=tokens)
        task = make_task(spec, dataset)
        graphdef, state = nnx.split(task.model)
        params = nnx.to_pure_dict(state)
        steps = tokens // task.tokens_per_step
        constants = schedule_constants(spec.recipe, 0.01, steps)
        opt_state = optimizer_state(spec.recipe, params)
        _, step = step_functions(task.row_loss, graphdef, spec.recipe, jax.numpy.float32)
        lowered.append(step.lower(params, opt_state, task.train_batch(0), constants).as_text())
        assert float(lr_at(steps, constants)) == pytest.approx(0.01 * spec.recipe.final_lr_fraction, rel=1e-5)
    assert lowered[0] == lowered[1]


def test_a_wsd_branch_from_its_trunk_ends_where_the_same_run_from_scratch_does(prepared, tmp_path):
    """A branch starts from its trunk's state at its cool-down's start and decays from there: the same weights, loss
    and curve as the run of the same spec trained from step 0 (to 1e-5), for its own steps and a share of the trunk."""
    from flax import nnx

    from scaling.runspec import Branch
    from scaling.training.checkpoints import restore_model

    quiet = lambda _: None  # noqa: E731
    wsd = {"schedule": "wsd", "decay_fraction": 0.25, "warmup_steps": 4}
    scratch = make_spec(prepared[0], tokens=40 * 16 * 32, recipe=wsd)  # cool-down over steps 30-40
    assert scratch.recipe.decay_start(40) == 30
    trunk = make_spec(
        prepared[0], name="trunk", tokens=36 * 16 * 32, recipe={**wsd, "decay_fraction": 0.0}, branch_points=[30, 36]
    )
    trunk_result = train(trunk, tmp_path / "trunk", log=quiet, peak_flops=1e11)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "trunk" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[1:] == pytest.approx([lrs[1]] * (len(lrs) - 1))  # past its warmup, the trunk stays at the peak
    assert trunk_result.role == "trunk" and trunk_result.flops_spent == 0.0
    branch = RunSpec(**{**scratch.__dict__, "branch": Branch("trunk", 30, trunk_share_steps=15.0)})
    messages = []
    branched = train(branch, tmp_path / "branch", log=messages.append, peak_flops=1e11)
    assert any("branching from trunk at step 30" in m for m in messages)
    alone = train(scratch, tmp_path / "alone", log=quiet, peak_flops=1e11)
    assert branched.fingerprint == alone.fingerprint  # the same spec, so the same run
    assert branched.loss == pytest.approx(alone.loss, abs=1e-5)
    dataset = PreparedDataset.open(prepared[0])
    weights = [
        jax.tree.leaves(nnx.to_pure_dict(nnx.state(restore_model(tmp_path / d, scratch, dataset))))
        for d in ("branch", "alone")
    ]
    assert len(weights[0]) > 5
    for a, b in zip(*weights, strict=True):
        assert jax.numpy.max(jax.numpy.abs(a - b)) < 1e-5
    curves = [
        [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("branch", "alone")
    ]
    assert curves[0][0]["step"] == 35  # the branch logs its own steps only
    tail = [r for r in curves[1] if r["step"] > 30]
    assert [r["lr"] for r in curves[0]] == pytest.approx([r["lr"] for r in tail], rel=1e-6)
    assert [r["loss"] for r in curves[0]] == pytest.approx([r["loss"] for r in tail], abs=1e-5)
    # what each cost: the branch its 10 steps and 15 of the trunk's; the separate run all 40
    per_step = alone.flops / 40
    assert branched.flops == alone.flops and alone.flops_spent == alone.flops
    assert branched.flops_spent == pytest.approx(25 * per_step)
    assert branched.branch_of == "trunk" and branched.branch_step == 30


def test_a_branch_without_its_trunk_says_what_to_train_first(prepared, tmp_path):
    from scaling.runspec import Branch

    spec = make_spec(
        prepared[0], recipe={"schedule": "wsd"}, branch={"trunk": "trunk", "step": 30, "trunk_share_steps": 30}
    )
    assert spec.branch == Branch("trunk", 30, 30)
    with pytest.raises(RunError, match="holds no trunk states"):
        train(spec, tmp_path / "branch", log=lambda _: None, peak_flops=1e11)


@pytest.mark.parametrize("family", ["timeline", pytest.param("labrador", marks=pytest.mark.slow)])
def test_a_step_in_micro_batches_is_the_step_in_one_pass_in_less_memory(prepared, family):
    """Gradients accumulated over 4 passes of 4 rows: the same loss, update and norm as one pass of 16 rows (the
    loss terms of all passes divide the sum, not each pass's own), and a smaller compiled step."""
    from scaling.training.measure import step_setup
    from scaling.training.step import schedule_constants, step_bytes

    recipe = {"context": 32, "batch_rows": 16} if family == "timeline" else {"context": 96, "batch_rows": 16}
    setup = step_setup(make_spec(prepared[0], family=family, recipe=recipe))
    constants = schedule_constants(setup.spec.recipe, 0.01, 100)
    batch = setup.task.train_batch(0)
    args = (setup.params, setup.opt_state, batch, constants)
    one, four = (setup.step(m).lower(*args).compile() for m in (1, 4))
    (p1, _, loss1, norm1), (p4, _, loss4, norm4) = one(*args), four(*args)
    assert float(loss4) == pytest.approx(float(loss1), rel=1e-5) and float(norm4) == pytest.approx(float(norm1), 1e-4)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert step_bytes(four) < step_bytes(one)


def test_the_fewest_passes_that_fit_are_chosen_or_the_error_says_what_to_change():
    from scaling.training.step import RunError, choose_microbatches

    assert choose_microbatches(16, lambda m: 100 // m, limit=40) == 4  # 16 rows: 1, 2, 4 passes -> 100, 50, 25 bytes
    assert choose_microbatches(12, lambda m: 100 // m, limit=40) == 3  # divisors of 12 only: 1, 2, 3
    with pytest.raises(RunError, match=r"does not fit the device's 0.0 GiB even one row at a time.*\[resources\] gpus"):
        choose_microbatches(16, lambda m: 100 // m, limit=5)


@pytest.mark.slow  # 16 s: five compilations
def test_an_accelerator_run_splits_its_batch_into_the_fewest_passes_that_fit_its_memory(prepared, monkeypatch):
    """With no [train] microbatch_rows, a device whose memory holds the step only in 4 passes gets 4 (on a CPU, one
    pass: the machine's memory is the limit), sized by each count's compiled step."""
    import scaling.training.tasks as train_module
    from scaling.training.measure import step_setup
    from scaling.training.step import schedule_constants, step_bytes
    from scaling.training.tasks import microbatch_count

    setup = step_setup(make_spec(prepared[0]))
    constants = schedule_constants(setup.spec.recipe, 0.01, 100)
    args = (setup.params, setup.opt_state, setup.task.train_batch(0), constants)
    need = {m: step_bytes(setup.step(m).lower(*args).compile()) for m in (2, 4)}
    count = lambda spec: microbatch_count(spec, setup.task, setup.graphdef, *args[:2], constants, setup.dtype)  # noqa: E731
    assert count(setup.spec) == 1  # a CPU
    monkeypatch.setattr(train_module, "device_memory_limit", lambda: int((need[4] + need[2]) / 2 / 0.9))
    assert count(setup.spec) == 4
    assert count(make_spec(prepared[0], train={"microbatch_rows": 8})) == 2  # as the spec says, whatever the memory
