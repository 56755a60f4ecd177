"""`ehrscale sweep plan|run|submit|status` and `ehrscale collect`."""

import math
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from scaling.console import UserError, console, out_console
from scaling.data.dataset import DatasetError
from scaling.runspec import SpecError
from scaling.sweep.plan import Plan, make_plan
from scaling.sweep.spec import SweepSpec, load_sweep
from scaling.sweep.state import collect, read_plan_record, run_state, write_runs_table
from scaling.sweep.throughput import estimate_seconds, measured_throughput, planned_seconds, timed_throughput

LOG_EVERY_SECONDS = 60  # the progress line's cadence in a log (output not to a terminal)

sweep_app = typer.Typer(help="Plan, run and follow IsoFLOP sweeps (sweeps/*.toml) on Ray.", no_args_is_help=True)

SpecArg = Annotated[Path, typer.Argument(help="The sweep spec (sweeps/*.toml).")]
RunsRoot = Annotated[str | None, typer.Option("--runs-root", help="Override the spec's runs_root.")]


def _load(spec: Path) -> tuple[SweepSpec, Plan]:
    try:
        sweep = load_sweep(spec)
        return sweep, make_plan(sweep)
    except (SpecError, DatasetError) as error:
        raise UserError(str(error)) from None


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else (f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")
    )


@sweep_app.command("plan")
def plan_command(
    spec: SpecArg,
    runs_root: RunsRoot = None,
    measure: Annotated[
        bool, typer.Option(help="Time a few real steps of each width here: time estimates, MFU and step memory.")
    ] = False,
    device_memory: Annotated[
        float | None,
        typer.Option(
            "--device-memory",
            help="GiB of the GPU the runs will use (with --measure): suggests [resources] gpus, the share of a GPU "
            "that lets several runs share one. Default: this machine's GPU, if it has one.",
        ),
    ] = None,
) -> None:
    """Every run of the sweep: shape, tokens, steps, FLOPs, estimated time; totals and warnings. With --measure,
    each width's MFU and step memory measured here, and the GPU share to ask for."""
    sweep, plan = _load(spec)
    folder = sweep.folder(runs_root)
    if device_memory is not None and not device_memory > 0:
        raise UserError(f"--device-memory must be a positive number of GiB, got {device_memory}")
    if measure:
        console.print("timing a few steps of each width ...")
        throughput = timed_throughput(sweep, [r.candidate.width for r in plan.runs])
    else:
        throughput = measured_throughput(folder.parent.parent, sweep)
    table = Table(
        title=f"{sweep.name} v{sweep.version}: {sweep.family} on {sweep.data} ({plan.inputs.vocab_size} "
        f"tokens, context {plan.inputs.context}); convention {sweep.convention}"
    )
    for column in (
        "run",
        "budget",
        "width",
        "layers",
        "heads",
        "params",
        "non-embed",
        "tokens",
        "steps",
        "batch",
        "lr",
        "FLOPs",
        "epochs",
        "est. time",
        *(("MFU", "step memory") if throughput.mfu else ()),
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    total_seconds, unknown = 0.0, 0
    batch = sweep.recipe.batch_rows * plan.inputs.context
    for r in plan.runs:
        c = r.candidate
        # a branch trains its cool-down and its share of its trunk; a width no finished run measured: the prior
        seconds = planned_seconds(throughput, c, r.spec.steps_spent(c.steps), len(r.spec.tasks))
        total_seconds += seconds
        unknown += estimate_seconds(throughput, c) is None
        table.add_row(
            r.run_id,
            f"{r.budget:.3g}",
            str(c.width),
            str(c.layers),
            str(c.heads),
            f"{c.params:,}",
            f"{c.params_nonembed:,}",
            f"{c.tokens:,}",
            f"{c.steps:,}",
            f"{batch:,}",
            f"{r.spec.recipe.learning_rate(c.width):.3g}",
            f"{c.flops:.3g}",
            f"{r.epochs:.2f}",
            _human(seconds) + ("*" if estimate_seconds(throughput, c) is None else ""),
            *(
                (f"{throughput.mfu[c.width]:.1%}", _bytes(throughput.step_bytes[c.width], throughput, c.width))
                if throughput.mfu
                else ()
            ),
        )
    out_console.print(table)
    slots = (
        max(1, int(_cpu_count() // sweep.resources.cpus)) if not (sweep.resources.gpus or sweep.resources.tpus) else 1
    )
    if plan.trunks:
        out_console.print(
            f"WSD branches: {len(plan.trunks)} trunks ("
            + ", ".join(f"{t.run_id} {t.steps:,} steps for {len(t.branches)} branches" for t in plan.trunks)
            + f"); the grid's {plan.total_flops:.3g} FLOPs of runs cost {plan.flops_spent:.3g} "
            f"({plan.flops_spent / plan.total_flops:.0%})",
            highlight=False,
        )
    out_console.print(
        f"{len(plan.runs)} runs over {len(sweep.budgets)} budgets; {plan.total_flops:.3g} FLOPs in all"
        + f"; estimated {_human(total_seconds)} of run time"
        + (f" ({_human(total_seconds / slots)} at {slots} at a time on this machine)" if slots > 1 else "")
        + (
            f"; * {unknown} runs without a measured throughput for their width: the prior cost model's estimate "
            "(scaling/sweep/throughput.py: PRIOR)"
            if unknown
            else ""
        ),
        highlight=False,
    )
    if throughput.source:
        out_console.print(f"throughput from {throughput.source}", highlight=False)
    else:
        out_console.print("no measured throughput yet: pass --measure to time each width here", highlight=False)
    if throughput.step_bytes:
        _print_gpu_share(sweep, throughput, device_memory)
    for warning in plan.warnings:
        out_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)  # a [recipe] shows as written


def _bytes(count: int, throughput, width: int) -> str:
    passes = throughput.microbatches.get(width, 1)
    return f"{count / 2**20:,.0f} MiB" + (f" ({passes} passes)" if passes > 1 else "")


def _print_gpu_share(sweep: SweepSpec, throughput, device_memory: float | None) -> None:
    """The GPU share that fits the sweep's largest step, for the GPU named (or this machine's)."""
    from scaling.sweep.spec import GPU_SHARE_USABLE
    from scaling.sweep.throughput import suggested_gpu_share

    if device_memory is None:
        import jax

        if jax.default_backend() != "gpu":
            out_console.print("pass --device-memory GIB (e.g. 80 for an H100) to size a GPU share", highlight=False)
            return
        device_memory = _this_gpu_gib()
    share, runs = suggested_gpu_share(throughput.step_bytes, device_memory * 2**30, GPU_SHARE_USABLE)
    largest = max(throughput.step_bytes.values()) / 2**30
    if not runs:
        out_console.print(
            f"the largest step needs {largest:.1f} GiB: more than a {device_memory:g} GiB GPU holds; a run takes "
            "gpus = 1 and [train] microbatch_rows splits its batch",
            highlight=False,
            markup=False,
        )
        return
    asked = f" (the spec asks {sweep.resources.gpus:g})" if sweep.resources.gpus else ""
    out_console.print(
        f"GPU share: the largest step needs {largest:.2f} GiB, so {runs} runs fit a {device_memory:g} GiB GPU: "
        f"[resources] gpus = {share:g}{asked}",
        highlight=False,
        markup=False,
    )


def _this_gpu_gib() -> float:
    """This machine's first GPU in GiB: its allocator's limit over the fraction of the device that limit is."""
    import os

    from scaling.training.step import device_memory_limit

    limit = device_memory_limit()
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
    return limit / fraction / 2**30


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@sweep_app.command("run")
def run_command(
    specs: Annotated[
        list[Path], typer.Argument(help="The sweep specs (sweeps/*.toml); several share one queue of runs.")
    ],
    runs_root: RunsRoot = None,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (e.g. auto, HOST:6379); default: start one here.")
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option(help="Runs at once (default: as many as the resources allow).", min=1)
    ] = None,
    dashboard: Annotated[
        bool, typer.Option(help="Start the Ray dashboard of an embedded cluster (127.0.0.1 only).")
    ] = False,
) -> None:
    """Train every unfinished run of the sweeps on Ray (several through one queue), then write each one's
    runs.parquet; run again to resume."""
    try:
        sweeps = [load_sweep(spec) for spec in specs]
    except SpecError as error:
        raise UserError(str(error)) from None
    summaries = drive(sweeps, runs_root, address, max_parallel, dashboard)
    if any(s.failed for s in summaries):
        raise typer.Exit(code=1)


def drive(sweeps: list[SweepSpec], runs_root, address, max_parallel, dashboard, line=None) -> list:
    """Run the sweeps through one queue with a live progress line (`line` rewrites it), then print how each ended."""
    from scaling.sweep.driver import run_sweeps

    printed = [-math.inf]  # when the line was last printed in full: a log (not a terminal) gets one a minute
    with Live(console=console, refresh_per_second=2, transient=False) as live:

        def report(progress) -> None:
            text = line(progress) if line else progress.line()
            live.update(text)
            if not console.is_terminal and time.monotonic() - printed[0] >= LOG_EVERY_SECONDS:
                live.console.print(text, highlight=False, soft_wrap=True)
                printed[0] = time.monotonic()

        def log(text: str) -> None:
            live.console.print(text, highlight=False, soft_wrap=True)

        try:
            summaries = run_sweeps(
                sweeps, runs_root, address, max_parallel, report=report, log=log, dashboard=dashboard
            )
        except (SpecError, DatasetError) as error:
            live.stop()
            raise UserError(str(error)) from None
    if not console.is_terminal:  # Live ends its last line only on a terminal
        console.print()
    for sweep, summary in zip(sweeps, summaries, strict=True):
        p = summary.progress
        out_console.print(
            f"{sweep.name} v{sweep.version}: {p.done} trained, {p.skipped} finished before, {p.diverged} "
            f"diverged, {p.failed} failed; {p.preemptions} preemptions, {p.retried_failures} retried errors; "
            f"{summary.wall_seconds:.0f} s",
            highlight=False,
        )
        for run_id, error in summary.failed.items():
            out_console.print(f"[red]failed[/] {run_id}: {error.splitlines()[-1] if error else ''}", highlight=False)
        out_console.print(f"wrote {summary.runs_table}", highlight=False)
    return summaries


@sweep_app.command("submit")
def submit_command(
    specs: Annotated[
        list[Path], typer.Argument(help="The sweep specs (sweeps/*.toml); several share one driver's queue.")
    ],
    address: Annotated[str, typer.Option(help="The cluster's dashboard, e.g. http://HEAD:8265.")],
    runs_root: RunsRoot = None,
    max_parallel: Annotated[int | None, typer.Option(min=1, help="Runs at once.")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="The cluster's auth token (default: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job's log until it ends; exit 1 if it failed.")] = False,
) -> None:
    """Send one driver for the sweeps to an existing Ray cluster through Ray Jobs."""
    from scaling.sweep.submit import SubmitError, follow, submit

    try:
        sweeps = [load_sweep(spec) for spec in specs]
        job_id, client = submit(sweeps, specs, address, runs_root, max_parallel, token_file)
    except (SpecError, SubmitError) as error:
        raise UserError(str(error)) from None
    out_console.print(f"submitted {job_id} to {address}", highlight=False)
    out_console.print(f"follow it:  ray job logs --follow {job_id} --address {address}", highlight=False)
    for spec in specs:
        out_console.print(
            f"its runs:   ehrscale sweep status {spec}" + (f" --runs-root {runs_root}" if runs_root else ""),
            highlight=False,
        )
    if wait:
        status = follow(client, job_id, lambda text: out_console.print(text, end="", highlight=False))
        out_console.print(f"job {job_id}: {status}", highlight=False)
        if status != "SUCCEEDED":
            raise typer.Exit(code=1)


def recorded_sweep(spec: Path, runs_root: str | None) -> tuple[SweepSpec, Path, Plan | None]:
    """The sweep, its folder, and a plan only where the folder has no plan.json yet (a sweep never run)."""
    try:
        sweep = load_sweep(spec)
    except SpecError as error:
        raise UserError(str(error)) from None
    folder = sweep.folder(runs_root)
    if read_plan_record(folder) is not None:
        return sweep, folder, None
    try:
        return sweep, folder, make_plan(sweep)
    except DatasetError:  # no plan.json and no dataset: the run folders are all there is
        return sweep, folder, None


@sweep_app.command("status")
def status_command(
    spec: SpecArg,
    runs_root: RunsRoot = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="The cluster's dashboard for a submitted sweep's job (default: the one `sweep submit` recorded)."
        ),
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="The cluster's auth token (as for `sweep submit`).")] = None,
) -> None:
    """Where each run stands, read from the run folders (no prepared dataset needed); a submitted sweep's job too."""
    from scaling.sweep.submit import job_status

    sweep, folder, plan = recorded_sweep(spec, runs_root)
    frame, notes = collect(folder, sweep.tasks, plan)
    table = Table(title=f"{sweep.name} v{sweep.version} in {folder}")
    for column in ("run", "budget", "width", "state", "step", "loss", "preemptions", "failures", "error"):
        table.add_column(column, justify="left" if column in ("run", "state", "error") else "right")
    for row in frame.iter_rows(named=True):
        table.add_row(
            row["run_id"],
            f"{row['budget']:.3g}" if row["budget"] else "",
            str(row["width"] or ""),
            _shown(row["status"]),
            _step_text(folder / row["run_id"], row),
            f"{row['loss']:.4f}" if row["loss"] is not None else "",
            str(row["preemptions"]),
            str(row["failures"]),
            ((row["error"] or "").splitlines() or [""])[-1][:80],
        )
    out_console.print(table)
    counts = frame.group_by("status").len().sort("status")
    out_console.print(", ".join(f"{n} {_shown(s)}" for s, n in counts.iter_rows()) or "no runs", highlight=False)
    for note in notes:
        out_console.print(f"note: {note}", highlight=False)
    for line in job_status(folder, address, token_file):
        out_console.print(line, highlight=False)


def _shown(status: str) -> str:
    """The table's `ok` is a run that is done."""
    return "done" if status == "ok" else status


def _step_text(run_dir: Path, row: dict) -> str:
    state = run_state(run_dir, (), row["steps"] or 0)
    return f"{state.step:,}/{state.steps:,}"


def collect_command(
    spec: SpecArg,
    runs_root: RunsRoot = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write (.parquet or .csv); default: runs.parquet in the sweep folder.")
    ] = None,
) -> None:
    """Write runs.parquet from the run folders: one row per run, with the columns the analysis reads."""
    sweep, folder, plan = recorded_sweep(spec, runs_root)
    if not folder.exists():
        raise UserError(f"{folder}: no runs yet; start them with `ehrscale sweep run {spec}`")
    path, frame, notes = write_runs_table(folder, out, sweep.tasks, plan)
    counts = frame.group_by("status").len().sort("status")
    out_console.print(
        f"wrote {path}: {frame.height} runs (" + ", ".join(f"{n} {s}" for s, n in counts.iter_rows()) + ")",
        highlight=False,
    )
    for note in notes:
        out_console.print(f"note: {note}", highlight=False)
