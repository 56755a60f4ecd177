"""Trackers: TensorBoard event files read back by TensorBoard's own reader, an offline W&B run folder, a failing
tracker that never stops training, [tracking] in run and sweep specs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaling.cli import app
from scaling.record import EvalRecord, RunFolder, TaskEval
from scaling.run import run, tracker_summary
from scaling.runspec import SpecError, parse_spec
from scaling.tracking import TensorBoardTracker
from tests.helpers import RESULT, make_spec


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_events_hold_the_logged_curves(prepared, tmp_path):
    out = tmp_path / "run"
    spec = make_spec(prepared[0], tasks=["in_hospital_mortality"], tracking={"backends": ["tensorboard"]})
    result = run(spec, out, log=lambda _: None)
    assert result.status == "ok"
    scalars = _scalars(out / "tensorboard")
    rows = _metrics(out)
    assert [step for step, _ in scalars["train/loss"]] == [r["step"] for r in rows]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    assert [s for s, _ in scalars["eval/loss"]] == [s for s, _ in evals]
    assert [v for _, v in scalars["eval/loss"]] == pytest.approx([v for _, v in evals], rel=1e-6)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu"} <= set(scalars)
    # the end: the fitted loss, the size, and the downstream AUROC, as HParams metrics
    assert scalars["final/loss"][0][1] == pytest.approx(result.loss, rel=1e-6)
    assert scalars["final/params"][0][1] == result.params
    assert "final/auroc_in_hospital_mortality" not in scalars  # too few patients here to score the probe


def test_a_tracker_run_ends_with_each_scored_tasks_auroc(tmp_path):
    probe = {"status": "ok", "auroc": 0.71, "auroc_lo": 0.65, "auroc_hi": 0.76}
    folder = RunFolder(tmp_path)
    folder.write_evaluation(EvalRecord({"long_stay": TaskEval(probe), "mortality": TaskEval({"status": "too small"})}))
    summary = tracker_summary(RESULT, folder)
    assert summary["loss"] == 1.5 and summary["params"] == 1000 and summary["auroc_long_stay"] == 0.71
    assert "auroc_mortality" not in summary and "fingerprint" not in summary and "status" not in summary
    assert "format" not in summary


def test_an_offline_wandb_run_needs_no_network(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "")  # no credentials, no network: offline must not ask for either
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a port nothing listens on
    out = tmp_path / "run"
    spec = make_spec(prepared[0], tracking={"backends": ["wandb"], "group": "demo/v5"})
    warnings = []
    result = run(spec, out, log=lambda text: warnings.append(text) if text.startswith("warning") else None)
    assert result.status == "ok" and not warnings
    # The run is finished; W&B's service may still hold the end of its transaction log in a buffer (it flushes
    # when the process ends: once, in CI, under load, the file read here had no history yet). Ending the service,
    # as a worker's exit does, makes the file whole.
    import wandb

    wandb.teardown()
    (folder,) = (out / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    assert log.stat().st_size > 0
    history = _wandb_history(log)
    assert len(history) == len(_metrics(out))
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert losses == pytest.approx([r["loss"] for r in _metrics(out)], rel=1e-6)


def _wandb_history(log: Path) -> list[dict]:
    """The logged rows of an offline W&B run, read from its transaction log: a 7-byte W&B header, then LevelDB's
    log format (32 KiB blocks of records, each a 7-byte header -- checksum, length, kind -- and a protobuf
    Record, split across blocks as FIRST/MIDDLE/LAST chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = log.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def test_a_failing_tracker_warns_once_and_the_run_goes_on(prepared, tmp_path, monkeypatch):
    def full_disk(self, step, metrics):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardTracker, "log", full_disk)
    lines = []
    out = tmp_path / "run"
    result = run(make_spec(prepared[0], tracking={"backends": ["tensorboard"]}), out, log=lines.append)
    assert result.status == "ok"
    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1
    assert "tracker tensorboard failed and is off for this run: OSError" in warnings[0]
    assert len(_metrics(out)) == 12  # metrics.jsonl, the record, is whole: 60 steps logged every 5


def test_a_finished_run_is_not_tracked_again(prepared, tmp_path):
    out = tmp_path / "run"
    spec = make_spec(prepared[0], tokens=10 * 16 * 32, tracking={"backends": ["tensorboard"]})
    run(spec, out, log=lambda _: None)
    files = sorted((out / "tensorboard").iterdir())
    run(spec, out, log=lambda _: None)
    assert sorted((out / "tensorboard").iterdir()) == files


def test_tracking_is_checked_and_not_fingerprinted(prepared):
    with pytest.raises(SpecError, match=r"\[tracking\] 'backends' must list backends among tensorboard, wandb"):
        make_spec(prepared[0], tracking={"backends": ["mlflow"]})
    with pytest.raises(SpecError, match=r"\[tracking\] 'wandb_mode' must be offline or online"):
        make_spec(prepared[0], tracking={"wandb_mode": "disabled"})
    with pytest.raises(SpecError, match=r"\[tracking\]: unknown key\(s\) entity"):
        make_spec(prepared[0], tracking={"entity": "me"})
    tracked = make_spec(prepared[0], tracking={"backends": ["tensorboard", "wandb"]})
    assert tracked.fingerprint("data") == make_spec(prepared[0]).fingerprint("data")
    assert parse_spec(json.loads(json.dumps(tracked.to_dict())), "spec.json") == tracked  # as spec.json keeps it


def test_a_sweeps_runs_are_grouped_by_sweep_and_tracked_as_it_says(prepared, tmp_path):
    from scaling.sweep.plan import make_plan
    from scaling.sweep.spec import parse_sweep

    sweep = parse_sweep(
        {
            "name": "grid",
            "version": 2,
            "family": "timeline",
            "data": str(prepared[0]),
            "runs_root": str(tmp_path),
            "budgets": [1e10],
            "sizes": {"widths": [16, 24]},
            "recipe": {"context": 32},
            "tracking": {"backends": ["tensorboard"]},
        },
        "grid.toml",
    )
    plan = make_plan(sweep)
    assert {r.spec.tracking.group for r in plan.runs} == {"grid/v2"}
    assert {r.spec.tracking.backends for r in plan.runs} == {("tensorboard",)}


@pytest.mark.slow  # 31 s: a sweep trained, fitted and sent (the default suite keeps under 10 minutes on 2 cores)
def test_track_sends_a_sweeps_finished_runs_and_its_fits(prepared, tmp_path):
    from tests.helpers import chinchilla_like

    folder = tmp_path / "runs" / "grid" / "1"
    for width in (16, 24):
        spec = make_spec(prepared[0], name=f"b1e10-w{width}-s0", width=width, tokens=10 * 16 * 32)
        run(spec, folder / spec.name, log=lambda _: None)
    (folder / "unfinished").mkdir()  # a run that never ended is not sent
    sweep = tmp_path / "grid.toml"
    sweep.write_text(
        f'name = "grid"\nversion = 1\nfamily = "timeline"\ndata = "{prepared[0]}"\nruns_root = "{tmp_path / "runs"}"\n'
        "budgets = [1e10]\n[sizes]\nwidths = [16, 24]\n[recipe]\ncontext = 32\n"
    )
    done = CliRunner().invoke(app, ["track", str(sweep), "--to", "tensorboard"])
    assert done.exit_code == 0, done.output
    assert "sent 2 runs (4 logged steps); no fits: " in done.output
    out = folder / "tracking" / "tensorboard"
    assert sorted(p.name for p in out.iterdir()) == ["b1e10-w16-s0", "b1e10-w24-s0"]
    rows = _metrics(folder / "b1e10-w24-s0")
    assert [v for _, v in _scalars(out / "b1e10-w24-s0")["train/loss"]] == pytest.approx([r["loss"] for r in rows])

    chinchilla_like().write_parquet(folder / "runs.parquet")  # a table with fits to send
    done = CliRunner().invoke(app, ["track", str(sweep), "--to", "tensorboard", "--out", str(tmp_path / "tb")])
    assert done.exit_code == 0, done.output
    fitted = json.loads((folder / "fits.json").read_text())["isoflop"]["n_opt"]["exponent"]
    assert f"and the fits (N_opt exponent {fitted:.3f})" in done.output
    scalars = _scalars(tmp_path / "tb" / "fits")
    assert scalars["final/n_opt_exponent"][0][1] == pytest.approx(fitted, rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = EventAccumulator(str(tmp_path / "tb" / "fits"), size_guidance={"images": 0})
    images.Reload()
    assert "fits/isoflop_curves" in images.Tags()["images"]
    # and to W&B, offline: a run folder each for the two runs and the fits
    done = CliRunner().invoke(app, ["track", str(sweep), "--to", "wandb", "--out", str(tmp_path / "wb")])
    assert done.exit_code == 0, done.output
    assert len(list((tmp_path / "wb" / "wandb").glob("offline-run-*"))) == 3


def test_track_says_what_is_wrong(tmp_path):
    sweep = tmp_path / "grid.toml"
    sweep.write_text(f'name = "g"\nversion = 1\nfamily = "timeline"\ndata = "{tmp_path}"\nbudgets = [1e10]\n')
    done = CliRunner().invoke(app, ["track", str(sweep), "--to", "mlflow"])
    assert done.exit_code != 0 and "--to must be tensorboard or wandb, got 'mlflow'" in done.output
    done = CliRunner().invoke(app, ["track", str(sweep), "--to", "tensorboard", "--runs-root", str(tmp_path)])
    assert done.exit_code != 0 and "no finished runs to send" in done.output
