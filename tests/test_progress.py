"""What a long command says while it runs: the plan's estimates of each run, the time left corrected by the measured
speed, several sweeps as one line, and the stages of `ehrscale study`."""

import time

import pytest

from scaling.commands.study import REFERENCE, Clock
from scaling.recipe import Recipe, candidates
from scaling.sweep.driver import Progress, _room, combined
from scaling.sweep.spec import Resources
from scaling.sweep.throughput import PRIOR, Throughput, planned_seconds


def _candidates(budget: float) -> dict[int, object]:
    found, _ = candidates(Recipe(context=128, batch_rows=16), budget, vocab_size=400, widths=(16, 24, 32, 64))
    return {c.width: c for c in found}


def test_the_prior_charges_small_models_for_their_steps_not_only_their_flops():
    """At one budget every size costs the same FLOPs, but the small ones take many more (launch-bound) steps."""
    by_width = _candidates(3e11)
    seconds = {w: planned_seconds(Throughput(), c, c.steps, tasks=1) for w, c in by_width.items()}
    assert sorted(seconds) == [16, 24, 32, 64] and seconds[16] > seconds[24] > seconds[32] > seconds[64]
    c = by_width[16]
    assert seconds[16] == pytest.approx(
        PRIOR.run_seconds
        + PRIOR.task_seconds
        + c.steps * (PRIOR.step_seconds + c.flops / c.steps / PRIOR.flops_per_second)
    )
    # a branch pays only the steps it trains, and a run without tasks no evaluation
    assert planned_seconds(Throughput(), c, c.steps / 4, tasks=0) < seconds[16] / 3
    # a width finished runs measured: their speed, with the prior's fixed cost a run
    measured = Throughput(tokens_per_s={16: c.tokens / 100.0})
    assert planned_seconds(measured, c, c.steps, tasks=2) == pytest.approx(100.0 + PRIOR.fixed(2))


def test_time_left_is_the_plan_before_anything_ends_then_corrected_by_the_measured_speed():
    progress = Progress(total=10, estimated_total=400.0, slots=2)
    assert progress.eta_seconds == pytest.approx(200.0)  # the plan's 400 slot-seconds over 2 slots
    assert "ETA 3.3 min" in progress.line()
    progress.started = time.perf_counter() - 50.0  # 50 s in, a quarter of the planned work has ended ...
    progress.estimated_done = 100.0
    assert progress.eta_seconds == pytest.approx(150.0, rel=0.01)  # ... so the rest takes three times as long
    progress.estimated_done = 400.0
    assert progress.eta_seconds == 0.0
    assert Progress(total=0).eta_seconds is None and "ETA" not in Progress(total=0).line()


def test_several_sweeps_show_as_one_line():
    a = Progress(total=6, done=2, skipped=1, running=1, estimated_total=60.0, estimated_done=20.0, slots=2)
    b = Progress(total=4, done=1, failed=1, running=1, estimated_total=40.0, estimated_done=30.0, slots=2)
    b.started = a.started - 10.0
    both = combined([a, b])
    assert (both.total, both.done, both.skipped, both.failed, both.running) == (10, 3, 1, 1, 2)
    assert (both.estimated_total, both.estimated_done, both.slots, both.started) == (100.0, 50.0, 2, b.started)
    assert both.line().startswith("done 4/10 (skipped 1) · running 2 · failed 1")


def test_a_run_starts_only_where_the_cluster_has_room_beside_those_in_flight():
    cluster = {"CPU": 4.0, "GPU": 1.0}  # ray.cluster_resources()
    quarter = Resources(cpus=1, gpus=0.25)
    assert _room(cluster, {"CPU": 3.0, "GPU": 0.75}, quarter)
    assert not _room(cluster, {"CPU": 3.0, "GPU": 1.0}, quarter)
    assert not _room(cluster, {"CPU": 3.5}, Resources(cpus=1))
    assert _room(cluster, {"CPU": 2.0}, Resources(cpus=2))
    assert not _room({"CPU": 2.0}, {}, Resources(cpus=1, gpus=1))  # no GPU at all: never room


def test_the_study_clock_scales_the_stages_to_come_by_the_speed_measured_so_far(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    clock = Clock({"prepare": 30.0, "fit a": 20.0, "figures and report": 40.0}, "plus the training")
    assert clock.left() == 90.0 and "1.5 min left for the whole command plus the training" in clock.left_text()
    clock.begin("prepare", 1, 4)
    now[0] += 60.0  # twice the estimate
    clock.end("prepare")
    assert clock.speed == 2.0 and clock.left() == 120.0
    clock.unknown = ""
    clock.begin("training", 2, 4)
    now[0] += 100.0
    clock.end("training", estimate=100.0)  # on time: the speed so far is (60 + 100) / (30 + 100)
    assert clock.speed == pytest.approx(160 / 130)
    assert clock.left(current=10.0) == pytest.approx(10.0 + 160 / 130 * 60.0)
    assert REFERENCE.synth_per_patient > 0 and REFERENCE.figures_and_report > 0
