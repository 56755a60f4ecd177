"""`ehrscale study`: a whole study in one command (data, one queue of sweeps, fits, figures, report), with one
progress line that names the stage and the time left for all of it. `make demo` and `make study` run it.

Each stage reuses what is finished: the synthetic MIMIC-IV and the prepared data when they exist, every finished
run, fits.json when its table has not changed, and the figures and report when no table has (study.json in the
output folder records the tables' digests they were made from).
"""

import gzip
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from scaling.commands.data import prepare, synth
from scaling.console import UserError, console, out_console
from scaling.data.atomic import write_text
from scaling.runspec import SpecError
from scaling.sweep.spec import SweepSpec, load_sweep

STUDY_RECORD = "study.json"
STUDY_FORMAT = 1


@dataclass(frozen=True)
class StageTimes:
    """Reference seconds of the stages around training, on the machine `throughput.PRIOR` was fitted on; scaled
    by the speed this command measures as it goes."""

    synth_per_patient: float  # `data synth`
    prepare_per_patient: float  # `data prepare` of the core tables (docs/data.md)
    fit_per_table: float  # `ehrscale fit` with its bootstrap
    figures_and_report: float  # `ehrscale plot` and `ehrscale report` of every table


# Measured in `make demo` on a 2-core AMD EPYC, 2026-12-06 (docs/benchmarks.md, "make demo in 15 minutes").
REFERENCE = StageTimes(
    synth_per_patient=0.0030, prepare_per_patient=0.0015, fit_per_table=13.0, figures_and_report=10.0
)


@dataclass
class Clock:
    """Time left for the whole command: the reference estimates of the stages still to come, scaled by the ratio
    of measured to estimated time over the stages that ended (1 before any has)."""

    planned: dict[str, float]  # stage -> reference seconds of the stages to come whose estimate is known
    unknown: str = ""  # what the estimate leaves out, said beside it
    measured: float = 0.0
    estimated: float = 0.0
    stage_started: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.perf_counter)

    @property
    def speed(self) -> float:
        """Measured over estimated seconds so far."""
        return self.measured / self.estimated if self.estimated else 1.0

    def begin(self, stage: str, number: int, stages: int, detail: str = "") -> None:
        """Say which stage starts, and the time left for the command."""
        self.stage_started = time.perf_counter()
        console.print(
            f"[bold]stage {number}/{stages}: {stage}[/]"
            + (f" ({detail})" if detail else "")
            + f" · {self.left_text()}",
            highlight=False,
        )

    def end(self, stage: str, estimate: float | None = None) -> None:
        """The stage ended: its measured time against its estimate (`estimate`, else the planned one) corrects the
        speed of those to come."""
        planned = self.planned.pop(stage, None)
        if estimate or planned:
            self.measured += time.perf_counter() - self.stage_started
            self.estimated += estimate or planned

    def left(self, current: float | None = None) -> float:
        """Seconds left: `current` for the stage running (its own estimate), the others' estimates at this speed."""
        return (current or 0.0) + self.speed * sum(self.planned.values())

    def left_text(self, current: float | None = None) -> str:
        return f"about {self.left(current) / 60:.1f} min left for the whole command" + (
            f" {self.unknown}" if self.unknown else ""
        )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _patients(mimic: Path) -> int:
    """Rows of the source's patients table (to estimate `data prepare`)."""
    for name in ("patients.csv.gz", "patients.csv"):
        path = mimic / "hosp" / name
        if path.exists():
            with gzip.open(path, "rt") if name.endswith(".gz") else open(path) as lines:
                return max(0, sum(1 for _ in lines) - 1)
    return 0


def study_command(
    specs: Annotated[list[Path], typer.Argument(help="The sweep specs of the study (one per family).")],
    out: Annotated[Path, typer.Option(help="Where the figures, report.md and study.json go.")],
    mimic: Annotated[
        Path | None,
        typer.Option(help="MIMIC-IV to prepare into the sweeps' data folder when it is not prepared yet."),
    ] = None,
    synth_patients: Annotated[
        int | None,
        typer.Option(min=1, help="Write a synthetic MIMIC-IV of this many patients to --mimic first, if it is empty."),
    ] = None,
    synth_seed: Annotated[int, typer.Option(help="Seed of the synthetic MIMIC-IV.")] = 0,
    tables: Annotated[
        str | None, typer.Option(help="With --mimic: the tables `data prepare` reads (default: every one present).")
    ] = None,
    title: Annotated[str, typer.Option(help="The report's heading.")] = "ehrscale study",
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Override the specs' runs_root.")] = None,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster; default: start one here.")] = None,
    max_parallel: Annotated[int | None, typer.Option(min=1, help="Runs at once.")] = None,
) -> None:
    """Prepare the data if needed, train every sweep through one queue, fit each table, draw the figures and write
    one report with the families side by side; run again to reuse everything finished."""
    try:
        sweeps = [load_sweep(spec) for spec in specs]
    except SpecError as error:
        raise UserError(str(error)) from None
    data = {Path(s.data) for s in sweeps}
    prepared = {d for d in data if (d / "manifest.json").exists()}
    to_prepare = sorted(data - prepared)
    if len(to_prepare) > 1:
        raise UserError(f"the sweeps name {len(to_prepare)} data folders not prepared yet; prepare them first")
    if to_prepare and mimic is None:
        raise UserError(f"{to_prepare[0]} is not prepared: give --mimic (and --synth-patients for synthetic data)")
    synthesise = bool(to_prepare) and synth_patients is not None and _patients(mimic) == 0
    patients = synth_patients if synthesise else (_patients(mimic) if to_prepare else 0)
    planned = {}
    if synthesise:
        planned["synthetic MIMIC-IV"] = REFERENCE.synth_per_patient * patients
    if to_prepare:
        planned["prepare"] = REFERENCE.prepare_per_patient * patients
    planned |= {f"fit {s.name}": REFERENCE.fit_per_table for s in sweeps} | {
        "figures and report": REFERENCE.figures_and_report
    }
    clock = Clock(planned, "plus the training (estimated once the data is prepared)" if to_prepare else "")
    stages = len(planned) + 1  # those planned, and the training
    number = 0

    if synthesise:
        number += 1
        clock.begin("synthetic MIMIC-IV", number, stages, f"{patients:,} patients into {mimic}")
        synth(out=mimic, patients=patients, seed=synth_seed)
        clock.end("synthetic MIMIC-IV")
    elif to_prepare:
        console.print(f"reusing the MIMIC-IV in {mimic}", highlight=False)
    if to_prepare:
        number += 1
        clock.begin("prepare", number, stages, f"{mimic} into {to_prepare[0]}")
        prepare(out=to_prepare[0], mimic=mimic, tables=tables)
        clock.end("prepare")
    for folder in sorted(prepared):
        console.print(f"reusing the prepared dataset in {folder}", highlight=False)

    from scaling.commands.sweep import drive
    from scaling.sweep.driver import combined

    number += 1
    clock.unknown = "plus the training (estimated once its runs are planned, on the progress line)"
    clock.begin("training", number, stages, ", ".join(f"{s.name} v{s.version}" for s in sweeps) + " in one queue")
    clock.unknown = ""
    training_started = time.perf_counter()

    def line(progress) -> str:
        return f"stage {number}/{stages}: training · {progress.line()} · {clock.left_text(progress.eta_seconds)}"

    summaries = drive(sweeps, runs_root, address, max_parallel, False, line)
    trained = combined([s.progress for s in summaries])
    clock.stage_started = training_started
    clock.end("training", trained.estimated_total / trained.slots)
    if any(s.failed for s in summaries):
        console.print("some runs failed (above); the fits use the runs that finished", highlight=False)
    report_tables([s.runs_table for s in summaries], sweeps, out, title, clock, number, stages)
    console.print(f"study: {time.perf_counter() - clock.started:.0f} s", highlight=False)
    if any(s.failed for s in summaries):
        raise typer.Exit(code=1)


def report_tables(
    tables: list[Path], sweeps: list[SweepSpec], out: Path, title: str, clock: Clock, number: int, stages: int
) -> None:
    """Fit each table (or read its current fits.json), then the figures and the report unless study.json says
    they were made from these very tables."""
    from scaling.commands.analysis import TableOptions, load_fits, write_figures, write_report

    answers = []
    for table, sweep in zip(tables, sweeps, strict=True):
        number += 1
        clock.begin(f"fit {sweep.name}", number, stages, str(table))
        data, fits = load_fits(table, TableOptions())
        clock.end(f"fit {sweep.name}")
        answers.append(answer(sweep, data, fits))
    record = {
        "format": STUDY_FORMAT,
        "title": title,
        "tables": {str(t): _digest(t) for t in tables},
        "fits": {str(t): _digest(t.parent / "fits.json") for t in tables if (t.parent / "fits.json").exists()},
    }
    figures, report, made = out / "figures", out / "report.md", out / STUDY_RECORD
    number += 1
    if report.exists() and made.exists() and json.loads(made.read_text()) == record:
        clock.planned.pop("figures and report", None)
        console.print(f"stage {number}/{stages}: reusing the figures and report (no table changed)", highlight=False)
    else:
        clock.begin("figures and report", number, stages, str(out))
        options = TableOptions()
        write_figures(tables, figures, options, quiet=True)  # the fits' notes were shown once, above
        write_report(tables, report, figures, title, options, quiet=True)
        write_text(made, json.dumps(record, indent=1) + "\n")
        clock.end("figures and report")
    for text in answers:
        out_console.print(text, highlight=False)
    out_console.print(
        f"study: report in {report}; figures in {figures}; runs.parquet and fits.json in "
        + ", ".join(str(t.parent) for t in tables),
        highlight=False,
    )


def answer(sweep: SweepSpec, data, fits, multiple: float = 10.0) -> str:
    """The study's answer for one family: the N_opt law with its interval, and the compute-optimal model and tokens
    at `multiple` x the largest budget (Approach 2, else Approach 3), with their intervals."""
    from analysis.answers import optimal

    name = f"{sweep.family} ({sweep.name} v{sweep.version})"
    iso = fits.isoflop
    if iso is None and fits.parametric is None:
        return f"{name}: no law fitted ({fits.isoflop_error})"
    budget = multiple * max(data.budgets)
    found = optimal(iso, fits.parametric, budget, [], data.cost)
    approach, label = ("isoflop", "Approach 2") if "isoflop" in found else ("parametric", "Approach 3")
    at = found[approach]
    law = ""
    if iso is not None:
        interval = iso.n_opt.as_dict()["interval"]["exponent"]
        spread = f" (95% [{interval[0]:.3f}, {interval[1]:.3f}])" if interval else ""
        law = f"N_opt ~ C^{iso.n_opt.exponent:.3f}{spread} over {iso.n_opt.budgets} budgets; "
    if not at["n_opt"] > 0:  # NaN: a fitted exponent is negative
        return f"{name}: {law}{label} finds no compute-optimal model at {budget:.3g} FLOPs (a fitted exponent < 0)"
    return (
        f"{name}: {law}at {budget:.3g} FLOPs ({multiple:g}x its largest budget) the compute-optimal model has "
        f"{at['n_opt']:.3g} {_pair(at['n_opt_interval'])} parameters and sees {at['d_opt']:.3g} "
        f"{_pair(at['d_opt_interval'])} tokens ({label})"
    )


def _pair(pair) -> str:
    return f"[{pair[0]:.3g}, {pair[1]:.3g}]" if pair else "(no interval)"
