"""`ehrscale track SPEC --to tensorboard|wandb`: a sweep's finished runs and its fits sent to a tracker afterwards.

Each finished run folder becomes one tracker run (its metrics.jsonl row by row, its result and AUROC as the summary),
grouped "<sweep>/v<version>" and tagged as live tracking tags it; then one more run, "fits", holds the sweep's fitted
laws (N_opt and D_opt exponents with their intervals, from fits.json, fitted first if the table has none) and its
figures (IsoFLOP curves, N_opt(C), the loss frontier). Only aggregates leave the run folders.
"""

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from scaling.console import UserError, out_console
from scaling.record import RESULT, RunFolder
from scaling.runspec import TRACKERS, WANDB_MODES, Tracking
from scaling.sweep.state import RUNS_TABLE
from scaling.tracking import TrackedRun, Trackers, tracked_run


def replay_run(run_dir: Path, tracking: Tracking, out: Path, warn) -> int:
    """One finished run folder into a tracker run under `out`; the rows logged."""
    from scaling.run import tracker_summary

    folder = RunFolder(run_dir)
    start = folder.start()
    spec = dataclasses.replace(start.run_spec(str(folder.spec_path)), tracking=tracking)
    result, _ = folder.result()
    run = tracked_run(spec, run_dir, start)
    trackers = Trackers(tracking, run, warn, folder=_folder(tracking, out, run.name))
    rows = folder.metrics()
    for row in rows:
        trackers.log(row["step"], row)
    trackers.finish(tracker_summary(result, folder))
    return len(rows)


def replay_fits(table: Path, tracking: Tracking, out: Path, warn) -> dict:
    """The sweep's fits and figures into a tracker run named "fits"; the numbers sent."""
    from analysis.plots import plot_all
    from scaling.commands.analysis import TableOptions, load_fits

    loaded, fits = load_fits(table, TableOptions(), quiet=True)
    numbers = {}
    for law in ("n_opt", "d_opt", "loss_opt") if fits.isoflop is not None else ():
        entry = getattr(fits.isoflop, law)
        numbers[f"{law}_exponent"], numbers[f"{law}_coefficient"] = entry.exponent, entry.coefficient
        numbers[f"{law}_exponent_lo"], numbers[f"{law}_exponent_hi"] = entry.exponent_interval
    if fits.parametric is not None:
        numbers.update({f"parametric_{k}": getattr(fits.parametric, k) for k in ("E", "A", "B", "alpha", "beta")})
    run = TrackedRun("fits", out, tracking.group, ("fits",), {"table": str(table), "runs": loaded.frame.height})
    trackers = Trackers(tracking, run, warn, folder=_folder(tracking, out, "fits"))
    with tempfile.TemporaryDirectory() as figures:
        for png in sorted(p for p in plot_all(loaded, fits, Path(figures)) if p.suffix == ".png"):
            trackers.image(f"fits/{png.stem}", png)
    trackers.finish(numbers)
    return numbers


def _folder(tracking: Tracking, out: Path, name: str) -> Path:
    """TensorBoard: one folder a run under `out` (so `tensorboard --logdir out` lists them); W&B: `out` itself."""
    return out / name if tracking.backends == ("tensorboard",) else out


def track_command(
    spec: Annotated[Path, typer.Argument(help="The sweep spec (sweeps/*.toml).")],
    to: Annotated[str, typer.Option("--to", help=f"The tracker: {' or '.join(TRACKERS)}.")],
    out: Annotated[
        Path | None, typer.Option(help="Where the tracker writes (default: <sweep folder>/tracking/<tracker>/).")
    ] = None,
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Override the spec's runs_root.")] = None,
    project: Annotated[
        str | None, typer.Option(help="The W&B project (default: the spec's [tracking] project).")
    ] = None,
    wandb_mode: Annotated[
        str | None, typer.Option(help=f"W&B: {' or '.join(WANDB_MODES)} (default: the spec's, offline).")
    ] = None,
) -> None:
    """Send a sweep's finished runs (curves, results, AUROC) and its fits (laws, figures) to a tracker."""
    from scaling.commands.sweep import recorded_sweep

    if to not in TRACKERS:
        raise UserError(f"--to must be {' or '.join(TRACKERS)}, got {to!r}")
    if wandb_mode is not None and wandb_mode not in WANDB_MODES:
        raise UserError(f"--wandb-mode must be {' or '.join(WANDB_MODES)}, got {wandb_mode!r}")
    sweep, folder, _ = recorded_sweep(spec, runs_root)
    finished = sorted(p.parent for p in folder.glob(f"*/{RESULT}"))  # trained: ok or diverged
    if not finished:
        raise UserError(f"{folder}: no finished runs to send; run the sweep first (`ehrscale sweep run {spec}`)")
    tracking = Tracking(
        backends=(to,),
        project=project or sweep.tracking.project,
        wandb_mode=wandb_mode or sweep.tracking.wandb_mode,
        group=f"{sweep.name}/v{sweep.version}",
    )
    out = out or folder / "tracking" / to
    out.mkdir(parents=True, exist_ok=True)
    warnings = []
    warn = lambda text: warnings.append(text)  # noqa: E731
    rows = sum(replay_run(run_dir, tracking, out, warn) for run_dir in finished)
    table = folder / RUNS_TABLE
    sent = f"{len(finished)} runs ({rows:,} logged steps)"
    if table.exists():
        numbers = replay_fits(table, tracking, out, warn)
        exponent = numbers.get("n_opt_exponent")
        sent += f" and the fits (N_opt exponent {exponent:.3f})" if exponent is not None else " and the fits"
    else:
        sent += f"; no fits: {table} is missing (`ehrscale collect {spec}`, then track again)"
    for text in dict.fromkeys(warnings):
        out_console.print(f"warning: {text}", highlight=False, markup=False)
    out_console.print(f"sent {sent} to {to} in {out}", highlight=False, markup=False)
    if warnings:
        raise typer.Exit(code=1)
