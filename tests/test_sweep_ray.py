"""Sweeps on a real embedded Ray cluster: idempotence, failures, preemptions, a killed driver.

Ray 2.60 turns token authentication on by default; these clusters are bound to 127.0.0.1 and
started with RAY_AUTH_MODE=disabled on purpose (the token path is tested in test_cluster.py).
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.record import RESULT_FORMAT, TRAIN_LOG, RunFolder
from scaling.runspec import SpecError
from scaling.sweep.driver import connect, run_sweep, run_sweeps
from scaling.sweep.spec import parse_sweep
from tests.helpers import EHRSCALE, TASK, sweep_source, write_toml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray = connect(None, num_cpus=2)
    yield ray
    ray.shutdown()


def quiet(_):
    pass


@pytest.mark.faults
def test_a_sweep_runs_once_and_a_second_run_trains_nothing(ray_cluster, prepared, synth, tmp_path):
    # tracked in TensorBoard too: its event files are scanned for identifiers with the rest
    sweep = parse_sweep(sweep_source(prepared[0], tmp_path, tracking={"backends": ["tensorboard"]}), "tiny.toml")
    summary = run_sweep(sweep, log=quiet)
    assert summary.progress.done == 6 and not summary.failed
    frame = pl.read_parquet(summary.runs_table)
    assert frame.height == 6 and set(frame["status"]) == {"ok"} and frame["run_id"].n_unique() == 6
    assert frame["loss"].is_not_null().all()
    # each run was evaluated (300 patients are too few to score the task: eval.json says so, and it is not retried)
    assert all(TASK in RunFolder(summary.folder / r).settled_tasks() for r in frame["run_id"])
    assert all(
        json.loads((summary.folder / r / "result.json").read_text())["format"] == RESULT_FORMAT for r in frame["run_id"]
    )
    assert frame["budget"].is_in(list(sweep.budgets)).all() and frame["loss_se"].is_not_null().all()
    assert (frame["flops"] - frame["budget"]).abs().max() <= 0.05 * frame["budget"].max()
    results = sorted(summary.folder.glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    again = run_sweep(sweep, log=quiet)
    assert again.progress.skipped == 6 and again.progress.done == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert pl.read_parquet(again.runs_table).equals(frame)
    # no subject or admission identifier in what a run folder holds, nor in the figures and report made from it
    figures = tmp_path / "figures"
    for args in (
        ["plot", str(summary.runs_table), "--out", str(figures), "--resamples", "10"],
        [
            "report",
            str(summary.runs_table),
            "--figures",
            str(figures),
            "--out",
            str(tmp_path / "report.md"),
            "--resamples",
            "10",
        ],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    subjects = {
        str(s) for s in pl.read_parquet(prepared[0] / "events" / "metadata" / "subject_splits.parquet")["subject_id"]
    }
    admissions = {str(h) for h in pl.read_csv(synth / "hosp" / "admissions.csv.gz")["hadm_id"]}
    identifiers = {i for i in subjects | admissions if len(i) >= 6}
    scanned = [
        p
        for p in [*summary.folder.rglob("*"), *figures.rglob("*"), tmp_path / "report.md"]
        if p.is_file() and (p.suffix in (".json", ".jsonl", ".log", ".svg", ".md") or "tfevents" in p.name)
    ]
    assert any(p.suffix == ".svg" for p in scanned) and any(p.suffix == ".md" for p in scanned)
    assert len([p for p in scanned if "tfevents" in p.name]) == 6  # one tracker run a run, in its folder
    # The held-out predictions name subjects: they went to the data folder, not into any run folder.
    assert [p.name for p in summary.folder.rglob("*.parquet")] == ["runs.parquet"]
    for run_id in frame["run_id"]:  # a scored task's predictions are in the data folder (this cohort may be too small)
        entry = RunFolder(summary.folder / run_id).evaluation().tasks[TASK]
        if entry.scored:
            assert Path(entry.predictions["path"]).is_relative_to(prepared[0] / "predictions")
    for path in scanned:
        words = set(re.split(r"[^0-9]+", path.read_bytes().decode("latin-1")))
        assert not (words & identifiers), path


@pytest.mark.faults
def test_a_failing_run_is_retried_then_marked_failed_and_the_others_finish(ray_cluster, prepared, tmp_path):
    sweep = parse_sweep(sweep_source(prepared[0], tmp_path, budgets=[3e8]), "tiny.toml")
    broken = sweep.folder() / "b3e8-w24-s0"
    broken.mkdir(parents=True)
    (broken / "spec.json").write_text(json.dumps({"fingerprint": "0", "result_fields": {"width": 99}}))
    summary = run_sweep(sweep, log=quiet)
    assert list(summary.failed) == ["b3e8-w24-s0"] and "holds a run with another spec" in summary.failed["b3e8-w24-s0"]
    assert summary.progress.done == 2 and summary.progress.retried_failures == 1
    attempts = json.loads((broken / "attempts.json").read_text())
    assert attempts["failures"] == 2 and attempts["preemptions"] == 0 and "RunError" in attempts["failed"]
    frame = pl.read_parquet(summary.runs_table).sort("run_id")
    assert frame["status"].to_list() == ["ok", "failed", "ok"]
    assert "another spec" in frame.filter(pl.col("status") == "failed")["error"][0]


def _workers_running(run_dir: Path) -> list[psutil.Process]:
    """This sweep's Ray workers training `run_dir` (they hold its train.log open), never another session's."""
    log = str((run_dir / TRAIN_LOG).resolve())
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if not " ".join(process.info["cmdline"] or []).startswith("ray::execute_unit"):
            continue
        try:
            if any(f.path == log for f in process.open_files()):
                found.append(process)
        except psutil.Error:  # ended meanwhile, or not ours to inspect
            continue
    return found


def _kill_with_its_cluster(driver: subprocess.Popen) -> None:
    """kill -9 of a driver and its whole cluster: its raylet and workers may run in sessions of their own (outside
    the driver's process group), and a worker left running finishes the run a test must catch mid-way."""
    cluster = psutil.Process(driver.pid).children(recursive=True)
    os.killpg(driver.pid, signal.SIGKILL)
    for process in cluster:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    driver.wait()


def _wait_for(condition, timeout: float = 240.0, every: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


@pytest.mark.faults
def test_a_killed_worker_is_retried_as_a_preemption_and_resumes(ray_cluster, prepared, tmp_path):
    sweep = parse_sweep(
        sweep_source(prepared[0], tmp_path, budgets=[2e10], sizes={"widths": [16]}, tasks=[]), "tiny.toml"
    )
    run_dir = sweep.folder() / "b2e10-w16-s0"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=run_sweep(sweep, log=quiet)))
    thread.start()
    _wait_for(
        lambda: (
            (run_dir / "checkpoints").exists() and any(p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())
        )
    )
    for worker in _wait_for(lambda: _workers_running(run_dir)):
        worker.send_signal(signal.SIGKILL)
    thread.join(timeout=300)
    summary = outcome["summary"]
    assert summary.progress.preemptions == 1 and summary.progress.done == 1 and not summary.failed
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert attempts["preemptions"] == 1 and attempts["failures"] == 0
    assert "resuming from step" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"


@pytest.mark.faults
def test_killing_the_driver_then_running_again_finishes_the_rest_without_duplicates(prepared, tmp_path):
    spec = write_toml(
        tmp_path / "tiny.toml", sweep_source(prepared[0], tmp_path / "runs", budgets=[3e8, 3e9], tasks=[])
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        [EHRSCALE, "sweep", "run", str(spec), "--max-parallel", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = tmp_path / "runs" / "tiny" / "1"
    try:
        # wait until some runs have finished and a later one has a committed checkpoint, then kill the driver
        # and its cluster (runs go longest first: the third 3e9 run is long enough to be caught mid-way)
        _wait_for(
            lambda: (
                len(list(folder.glob("*/result.json"))) >= 2
                and any(
                    not (d / "result.json").exists() and any((d / "checkpoints").glob("*/commit_success.txt"))
                    for d in folder.glob("b*")
                )
            ),
            every=0.02,
        )
    finally:
        _kill_with_its_cluster(driver)
    time.sleep(2)
    finished_before = {p.parent.name for p in folder.glob("*/result.json")}
    assert 2 <= len(finished_before) < 6
    again = subprocess.run([EHRSCALE, "sweep", "run", str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(finished_before)} finished before" in again.stdout
    frame = pl.read_parquet(folder / "runs.parquet")
    assert frame.height == 6 and frame["run_id"].n_unique() == 6 and set(frame["status"]) == {"ok"}
    assert any(
        "resuming from step" in (d / "train.log").read_text()
        for d in folder.glob("b*")
        if d.name not in finished_before
    )


@pytest.mark.faults
def test_a_wsd_sweep_trains_a_trunk_per_width_resumes_it_after_a_kill_and_records_what_branches_cost(
    ray_cluster, prepared, tmp_path
):
    source = sweep_source(
        prepared[0],
        tmp_path,
        budgets=[3e9, 1e10],
        sizes={"widths": [16, 24]},
        branches=True,  # with the sweep's task: each branch is evaluated, its trunk is not (and needs not be)
        recipe={"context": 32, "batch_rows": 4, "min_steps": 5, "schedule": "wsd"},
    )
    sweep = parse_sweep(source, "tiny.toml")
    trunk = sweep.folder() / "trunk-w16-s0"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=run_sweep(sweep, log=quiet)))
    thread.start()
    _wait_for(
        lambda: (trunk / "checkpoints").exists() and any(p.name.isdigit() for p in (trunk / "checkpoints").iterdir())
    )
    for worker in _wait_for(lambda: _workers_running(trunk)):
        worker.send_signal(signal.SIGKILL)
    thread.join(timeout=300)
    summary = outcome["summary"]
    assert summary.progress.preemptions >= 1 and summary.progress.done == 4 and not summary.failed
    assert "resuming from step" in (trunk / "train.log").read_text()
    frame = pl.read_parquet(summary.runs_table)
    trunks = frame.filter(pl.col("status") == "trunk").sort("run_id")
    runs = frame.filter(pl.col("status") == "ok").sort("run_id")
    assert trunks["run_id"].to_list() == ["trunk-w16-s0", "trunk-w24-s0"] and runs.height == 4
    assert set(runs["branch_of"]) == {"trunk-w16-s0", "trunk-w24-s0"} and set(runs["schedule"]) == {"wsd"}
    for width in (16, 24):
        branches = runs.filter(pl.col("width") == width).sort("budget")
        trunk_row = trunks.filter(pl.col("width") == width)
        # each branch starts where the trunk kept its state, and the branches pay for the trunk once
        assert branches["branch_step"].to_list()[-1] == trunk_row["steps"][0]
        cooldowns = ((branches["steps"] - branches["branch_step"]) * branches["flops"] / branches["steps"]).sum()
        assert branches["flops_spent"].sum() == pytest.approx(trunk_row["flops"][0] + cooldowns, rel=1e-9)
        assert (branches["flops_spent"] < branches["flops"]).all()
    again = run_sweep(sweep, log=quiet)
    assert again.progress.skipped == 4 and again.progress.done == 0


@pytest.mark.faults
def test_refinement_trains_the_sizes_it_adds_and_a_second_run_trains_nothing(ray_cluster, prepared, tmp_path):
    """One planned size is its budget's best at both edges: refinement must add the next ladder width, train it in
    a second round, record it in refined.json, and leave a sweep that runs again without training."""
    source = sweep_source(prepared[0], tmp_path, budgets=[3e8], sizes={"widths": [16], "refine": 2}, tasks=[])
    sweep = parse_sweep(source, "tiny.toml")
    messages = []
    summary = run_sweep(sweep, log=messages.append)
    refined = json.loads((summary.folder / "refined.json").read_text())["budgets"]
    added = refined[repr(3e8)]
    assert added[0] == 24 and len(added) <= 2 and not summary.failed
    assert any("refine: budget 3e+08: adding width 24" in m for m in messages)
    frame = pl.read_parquet(summary.runs_table)
    assert sorted(frame["width"].to_list()) == [16] + added and set(frame["status"]) == {"ok"}
    assert summary.progress.done == 1 + len(added) and summary.progress.total == 1 + len(added)
    again = run_sweep(sweep, log=quiet)
    assert again.progress.done == 0 and again.progress.skipped == 1 + len(added)


def _two_sweeps(prep, root, budgets=(3e8,), bag_budgets=(3e8,)) -> tuple[dict, dict]:
    """A timeline sweep and a Labrador sweep on the same data, without tasks."""
    timeline = sweep_source(prep, root, name="tl", budgets=list(budgets), tasks=[])
    recipe = {"context": 64, "batch_rows": 4, "min_steps": 5}
    bags = sweep_source(prep, root, name="lab", family="labrador", budgets=list(bag_budgets), tasks=[], recipe=recipe)
    return timeline, bags


@pytest.mark.faults
def test_two_sweeps_share_one_queue_and_each_keeps_its_own_folder_and_table(ray_cluster, prepared, tmp_path):
    timeline, bags = _two_sweeps(prepared[0], tmp_path)
    sweeps = [parse_sweep(timeline, "tl.toml"), parse_sweep(bags, "lab.toml")]
    messages = []
    first, second = run_sweeps(sweeps, log=messages.append)
    assert any(m.startswith("one queue for 2 sweeps") for m in messages), messages
    assert first.folder == tmp_path / "tl" / "1" and second.folder == tmp_path / "lab" / "1"
    for summary, family in ((first, "timeline"), (second, "labrador")):
        frame = pl.read_parquet(summary.runs_table)
        assert frame.height == 3 and set(frame["status"]) == {"ok"} and set(frame["family"]) == {family}
        assert summary.progress.done == 3 and not summary.failed
    # one queue: a run of each sweep started before the other sweep's last run ended (in turn, the second sweep's
    # runs would have waited for the first's tail)
    assert min(t.started for t in second.timings) < max(t.ended for t in first.timings)
    assert min(t.started for t in first.timings) < max(t.ended for t in second.timings)
    again = run_sweeps(sweeps, log=quiet)
    assert [s.progress.skipped for s in again] == [3, 3] and [s.progress.done for s in again] == [0, 0]
    # another sweep with the same runs copies them (plain runs: a WSD branch shares its cost with its trunk)
    messages.clear()
    (copy,) = run_sweeps([parse_sweep({**timeline, "name": "tl-again"}, "again.toml")], log=messages.append)
    assert copy.progress.skipped == 3 and copy.progress.done == 0 and not copy.timings
    assert any("tl-again v1: 3 runs copied from other sweeps" in m for m in messages), messages
    copied = pl.read_parquet(copy.runs_table).sort("run_id")
    assert copied.select("run_id", "loss").equals(
        pl.read_parquet(first.runs_table).sort("run_id").select("run_id", "loss")
    )
    assert "copied from" in (copy.folder / copied["run_id"][0] / "train.log").read_text()
    with pytest.raises(SpecError, match="tl v1 is given twice"):
        run_sweeps([sweeps[0], sweeps[0]], log=quiet)


def test_frontier_futures_are_generated_once_for_each_budgets_lowest_loss_run(ray_cluster, prepared, tmp_path):
    zero_shot = {"futures": 2, "rows": 16, "max_new_tokens": 8, "runs": "frontier"}
    sweep = parse_sweep(sweep_source(prepared[0], tmp_path, eval={"zero_shot": zero_shot}), "zs.toml")
    messages = []
    summary = run_sweep(sweep, log=messages.append)
    assert summary.progress.done == 6 and summary.progress.skipped == 0 and not summary.failed
    frame = pl.read_parquet(summary.runs_table)
    best = set(frame.sort("loss").group_by("budget").first()["run_id"])
    generated = {r for r in frame["run_id"] if TASK in RunFolder(summary.folder / r).zero_shot_tasks()}
    assert generated == best and len(best) == 2, (generated, best)
    assert any("zero-shot futures of 2 frontier runs (each budget's lowest loss)" in m for m in messages), messages
    assert not any(m.startswith("tiny v1: 0 of") for m in messages), messages  # the futures are not runs to train
    again_messages = []
    again = run_sweep(sweep, log=again_messages.append)
    assert again.progress.skipped == 6 and again.progress.done == 0 and not again.timings
    assert not any("zero-shot futures" in m for m in again_messages), again_messages


@pytest.mark.faults
def test_killing_a_driver_of_two_sweeps_then_running_again_finishes_both(prepared, tmp_path):
    timeline, bags = _two_sweeps(prepared[0], tmp_path / "runs", budgets=(3e8, 3e9))
    specs = [write_toml(tmp_path / "tl.toml", timeline), write_toml(tmp_path / "lab.toml", bags)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        [EHRSCALE, "sweep", "run", *map(str, specs), "--max-parallel", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folders = [tmp_path / "runs" / "tl" / "1", tmp_path / "runs" / "lab" / "1"]
    try:
        _wait_for(
            lambda: (
                sum(len(list(f.glob("*/result.json"))) for f in folders) >= 2
                and any(
                    not (d / "result.json").exists() and any((d / "checkpoints").glob("*/commit_success.txt"))
                    for f in folders
                    for d in f.glob("b*")
                )
            ),
            every=0.02,
        )
    finally:
        _kill_with_its_cluster(driver)
    time.sleep(2)
    before = [len(list(f.glob("*/result.json"))) for f in folders]
    assert 2 <= sum(before) < 9
    again = subprocess.run(
        [EHRSCALE, "sweep", "run", *map(str, specs)], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    for name, count, folder, runs in zip(("tl", "lab"), before, folders, (6, 3), strict=True):
        assert f"{name} v1: {runs - count} trained, {count} finished before" in again.stdout, again.stdout
        frame = pl.read_parquet(folder / "runs.parquet")
        assert frame.height == runs and frame["run_id"].n_unique() == runs and set(frame["status"]) == {"ok"}


def test_a_study_prepares_its_data_trains_every_sweep_and_reports_then_reuses_it_all(ray_cluster, tmp_path):
    """`ehrscale study` from nothing: a synthetic MIMIC-IV, its preparation, two families through one queue, their
    fits, figures and one report; run again, it trains and draws nothing."""
    prep = tmp_path / "prep"
    timeline, bags = _two_sweeps(prep, tmp_path / "runs", budgets=(3e8, 1e9), bag_budgets=(3e8, 1e9))
    specs = [str(write_toml(tmp_path / "tl.toml", timeline)), str(write_toml(tmp_path / "lab.toml", bags))]
    out = tmp_path / "study"
    unprepared = CliRunner().invoke(app, ["study", *specs, "--out", str(out)])
    assert unprepared.exit_code == 2 and f"{prep} is not prepared: give --mimic" in unprepared.output
    args = ["study", *specs, "--out", str(out), "--mimic", str(tmp_path / "mimic"), "--synth-patients", "300"]
    result = CliRunner().invoke(app, [*args, "--title", "two families"])
    assert result.exit_code == 0, result.output
    for stage in (
        "stage 1/6: synthetic MIMIC-IV",
        "stage 2/6: prepare",
        "stage 3/6: training",
        "stage 4/6: fit tl",
        "stage 5/6: fit lab",
        "stage 6/6: figures and report",
    ):
        assert stage in result.output, result.output
    assert "min left for the whole command plus the training" in result.output  # before the plan is known
    report = (out / "report.md").read_text()
    assert report.startswith("# two families") and "timeline" in report and "labrador" in report
    record = json.loads((out / "study.json").read_text())
    assert record["format"] == 1 and sorted(record["tables"]) == sorted(
        str(tmp_path / "runs" / n / "1" / "runs.parquet") for n in ("tl", "lab")
    )
    assert (out / "figures" / "timeline").is_dir() and (out / "figures" / "labrador").is_dir()
    stamp = (out / "report.md").stat().st_mtime_ns
    again = CliRunner().invoke(app, [*args, "--title", "two families"])
    assert again.exit_code == 0, again.output
    assert "reusing the prepared dataset" in again.output and "stage 1/4: training" in again.output
    assert "tl v1: all 6 runs finished already" in again.output and "reusing the figures and report" in again.output
    assert (out / "report.md").stat().st_mtime_ns == stamp
