"""`ehrscale fit | optimal | next-grid | plot | report | lr-fit`: the analysis of a results table, from one fits.json.

The commands share the table's options (column mapping, budget tolerance, bootstrap replicates, where
fits.json lives) and read the same fits (`analysis.fits.load_or_fit`), so a figure's band and the
report's interval are the same numbers. Nothing here imports JAX.
"""

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from scaling.console import UserError, console, out_console

COLUMNS = ("params", "tokens", "loss", "flops", "budget")  # the table's columns a user may rename


@dataclass(frozen=True)
class TableOptions:
    """The options every analysis command shares: how the table is read and fitted, and where fits.json lives."""

    fits: Path | None = None
    resamples: int | None = None
    budget_tolerance: float | None = None  # None: analysis.table.BUDGET_GROUPING
    fixed_e: float | None = None
    exclude_worst: int = 0
    window: float | None = None  # None: the sweep's [fit] window, else analysis.isoflop.WINDOW; 0: every run
    columns: tuple[tuple[str, str], ...] = ()  # (target, source), sorted

    def fit_options(self, method: str = "all"):
        from analysis.fits import FitOptions
        from analysis.isoflop import WINDOW
        from analysis.table import BUDGET_GROUPING, TableError

        try:
            return FitOptions(
                method=method,
                budget_tolerance=BUDGET_GROUPING if self.budget_tolerance is None else self.budget_tolerance,
                fixed_E=self.fixed_e,
                exclude_worst=self.exclude_worst,
                window=WINDOW if self.window is None else (self.window or None),
                columns=self.columns,
                resamples=self.resamples,
            )
        except TableError as error:
            raise UserError(str(error)) from None


def _table_parameters() -> list[inspect.Parameter]:
    """The typer parameters of TableOptions, declared once for every analysis command."""
    options = {
        "fits": (
            Path | None,
            None,
            typer.Option(
                help="fits.json to read or write (default: beside the table when that folder is writable, else in "
                "the current folder)."
            ),
        ),
        "resamples": (
            int | None,
            None,
            typer.Option(
                min=10,
                help="Bootstrap replicates (default: analysis.fits.RESAMPLES for `fit`, which fits again; the other "
                "commands reuse a current fits.json's).",
                show_default=False,
            ),
        ),
        "budget_tolerance": (
            float | None,
            None,
            typer.Option(
                min=0.0,
                help="Runs whose FLOPs agree within this fraction share a budget (used when the table has no budget "
                "column; default: analysis.table.BUDGET_GROUPING).",
                show_default=False,
            ),
        ),
        "fixed_e": (
            float | None,
            None,
            typer.Option("--fixed-e", help="Hold Approach 3's irreducible loss E at this value."),
        ),
        "exclude_worst": (
            int,
            0,
            typer.Option(min=0, help="Leave out the k points Approach 3 fits worst, and report the shift."),
        ),
        "window": (
            float | None,
            None,
            typer.Option(
                min=0.0,
                help="Fit each IsoFLOP parabola to the runs within this factor of its budget's best run's N (0: every "
                "run; default: the sweep's [fit] window, from the sweep.json beside the table, else "
                "analysis.isoflop.WINDOW).",
                show_default=False,
            ),
        ),
    } | {
        f"{name}_col": (str | None, None, typer.Option(help="Name of this column in the table, if it differs."))
        for name in COLUMNS
    }
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])
        for name, (kind, default, option) in options.items()
    ]


def table_options() -> Callable:
    """A command that takes `options: TableOptions` gets TableOptions' typer parameters in its place."""

    def decorate(command: Callable) -> Callable:
        shared = _table_parameters()
        names = [p.name for p in shared]
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "options"]

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {name: kwargs.pop(name) for name in names}
            mapped = {name: given.pop(f"{name}_col") for name in COLUMNS}
            columns = tuple(sorted((name, source) for name, source in mapped.items() if source))
            return command(**kwargs, options=TableOptions(**given, columns=columns))

        wrapper.__signature__ = signature.replace(parameters=own + shared)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
        return wrapper

    return decorate


def load_fits(table: Path, options: TableOptions, method: str = "all", refit: bool = False, quiet: bool = False):
    """The table and its current fits (read from fits.json, or fitted and written there), and what the console
    shows of them (warnings, notes); user errors as UserError. Unless --window was given, the parabolas' window
    is the one the table's sweep names ([fit] window)."""
    from analysis.fits import load_or_fit
    from analysis.table import TableError, read
    from scaling.families import loss_units
    from scaling.sweep.state import fit_window

    fit_options = options.fit_options(method)
    sweep_window = fit_window(table) if options.window is None else None
    if sweep_window:
        fit_options = dataclasses.replace(fit_options, window=sweep_window)
    try:
        data = read(table, dict(fit_options.columns), fit_options.budget_tolerance, loss_units=loss_units())
        fits, path, how = load_or_fit(table, data, fit_options, options.fits, refit=refit)
    except TableError as error:
        raise UserError(str(error)) from None
    if not quiet:
        for warning in data.warnings:
            console.print(f"warning: {escape(warning)}", highlight=False, soft_wrap=True)
        if fits.isoflop_error:
            out_console.print(f"Approach 2 not available: {fits.isoflop_error}", highlight=False)
        console.print(how, highlight=False, soft_wrap=True)
    return data, fits


def _said(data, fits) -> dict:
    """What a command prints beside its numbers, for its --json: the table's warnings and notes, and why Approach 2
    is missing."""
    notes = list(data.notes) + ([f"Approach 2 not available: {fits.isoflop_error}"] if fits.isoflop_error else [])
    return {"warnings": list(data.warnings), "notes": notes}


def _interval_text(pair, digits: str = ".3f") -> str:
    return f"[{pair[0]:{digits}}, {pair[1]:{digits}}]" if pair else "(no interval)"


@table_options()
def fit_command(
    table: Annotated[
        Path, typer.Argument(help="Results table: runs.parquet or a CSV (params, tokens, loss; flops, budget).")
    ],
    method: Annotated[
        str,
        typer.Option(
            help="isoflop (Approach 2), parametric (Approach 3) or all (Approach 3 "
            "still fitted when Approach 2 cannot be)."
        ),
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
    options: TableOptions = TableOptions(),
) -> None:
    """Fit IsoFLOP parabolas and power laws (Approach 2) and/or L(N, D) (Approach 3); write fits.json."""
    from analysis.fits import RESAMPLES, document

    if options.resamples is None:  # fitting again: the default replicates, not those of the fits.json it replaces
        options = dataclasses.replace(options, resamples=RESAMPLES)
    data, result = load_fits(table, options, method, refit=True, quiet=as_json)
    out = document(result, data, str(table))
    if as_json:
        summary = {k: v for k, v in out.items() if k != "bootstrap"}
        for name in ("isoflop", "parametric"):
            if name in summary:
                summary[name] = {k: v for k, v in summary[name].items() if k != "bootstrap"}
        said = _said(data, result)  # what the console would show
        chosen = summary | said if method == "all" else (summary.get(method) or {}) | said
        typer.echo(json.dumps(chosen, default=list))
        return
    for note in out["notes"]:
        out_console.print(f"note: {note}", highlight=False)
    if result.isoflop is not None:
        for item in result.isoflop.excluded:
            out_console.print(f"warning: budget {item['budget']:.3g} excluded: {item['reason']}", highlight=False)
        for name, law in (("N_opt", result.isoflop.n_opt), ("D_opt", result.isoflop.d_opt)):
            interval = law.as_dict()["interval"]
            spread = (
                f"exponent 95% {_interval_text(interval['exponent'])} (two-level bootstrap), "
                f"{_interval_text(interval['exponent_t'])} (Student-t, {law.budgets - 2} df)"
                if interval["exponent"]
                else "no interval: it needs 3 budgets or more"
            )
            out_console.print(
                f"Approach 2: {name} = {law.coefficient:.3g} x C^{law.exponent:.3f} ({spread})", highlight=False
            )
    if result.parametric is not None:
        p = result.parametric
        fixed = f" (E fixed at {p.fixed_E:g})" if p.fixed_E is not None else ""
        out_console.print(
            f"Approach 3: L = {p.E:.3f} + {p.A:.4g} / N^{p.alpha:.3f} + {p.B:.4g} / D^{p.beta:.3f}{fixed}; "
            f"N_opt ~ C^{p.a:.3f} (95% {_interval_text(p.intervals.get('a'))})",
            highlight=False,
        )
        if p.excluded:
            shift = ", ".join(f"{k} {v:+.3g}" for k, v in p.shift.items())
            out_console.print(
                f"Approach 3 without its {len(p.excluded)} worst-fitted point(s): {shift}", highlight=False
            )


@table_options()
def optimal_command(
    table: Annotated[Path, typer.Argument(help="Results table (as for `ehrscale fit`).")],
    budget: Annotated[float, typer.Option(help="Compute budget in FLOPs, e.g. 1e20.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
    options: TableOptions = TableOptions(),
) -> None:
    """For a budget: the compute-optimal model size and token count (and loss), with intervals, from both approaches."""
    from analysis.answers import optimal

    if not budget > 0:
        raise UserError(f"--budget must be a positive number of FLOPs, got {budget}")
    data, result = load_fits(table, options, quiet=as_json)
    answer = optimal(result.isoflop, result.parametric, budget, list(result.auroc_laws), data.cost)
    if as_json:
        typer.echo(json.dumps(answer | _said(data, result), default=float))
        return
    compute = answer["compute"]
    out_console.print(
        f"compute: {'C = 6ND assumed (the table has no FLOPs)' if compute['assumed_6nd'] else compute['rule']}; "
        f"FLOPs per token from {compute['from']}",
        highlight=False,
    )
    for name, label in (("isoflop", "Approach 2 (IsoFLOP)"), ("parametric", "Approach 3 (L(N, D))")):
        if name in answer:
            a = answer[name]
            line = (
                f"{label}: N* = {a['n_opt']:.3g} {_interval_text(a['n_opt_interval'], '.3g')} parameters, "
                f"D* = {a['d_opt']:.3g} {_interval_text(a['d_opt_interval'], '.3g')} tokens, "
                f"loss {a['loss']:.3f} {_interval_text(a['loss_interval'])}; spends {a['spends']:.3g} FLOPs"
            )
            out_console.print(line, highlight=False)
    for task, value in answer.get("auroc", {}).items():
        out_console.print(
            f"AUROC {task}: {value['auroc']:.3f} {_interval_text(value['interval'])} "
            "(saturating law along the compute-optimal frontier)",
            highlight=False,
        )
    if "disagreement" in answer:
        out_console.print(
            f"the approaches disagree by {answer['disagreement']['n_opt_ratio']:.2f}x on N* "
            f"and {answer['disagreement']['d_opt_ratio']:.2f}x on D* (same compute)",
            highlight=False,
        )


@table_options()
def next_grid_command(
    table: Annotated[Path, typer.Argument(help="Results table (as for `ehrscale fit`).")],
    budget: Annotated[float, typer.Option(help="The new budget in FLOPs.")],
    sizes: Annotated[int, typer.Option(min=3, help="How many sizes.")] = 7,
    span: Annotated[float, typer.Option(min=1.5, help="The grid runs from N*/span to N* x span.")] = 8.0,
    write_spec: Annotated[
        Path | None,
        typer.Option(
            help="Write a runnable sweep spec (TOML) for the new budget: widths "
            "from the recipe nearest the sizes, tokens that spend it exactly."
        ),
    ] = None,
    from_spec: Annotated[
        Path | None, typer.Option(help="The sweep spec the table came from (default: the sweep.json beside the table).")
    ] = None,
    options: TableOptions = TableOptions(),
) -> None:
    """Model sizes for a new budget, centred on the predicted optimum (Approach 2) and spanning it."""
    from analysis.answers import next_grid

    data, result = load_fits(table, options)
    if result.isoflop is None:
        raise UserError(f"next-grid centres on Approach 2's N*, which this table cannot give: {result.isoflop_error}")
    n_opt = result.isoflop.n_opt(budget)
    out_console.print(
        f"predicted N* at {budget:.3g} FLOPs: {n_opt:.3g} parameters ({data.params_from})", highlight=False
    )
    grid = next_grid(n_opt, budget, data.cost, sizes, span)
    for row in grid:
        out_console.print(
            f"  params {row['params']:.3g}  tokens {row['tokens']:.3g}  ({row['flops_per_token']:.3g} FLOPs per token)",
            highlight=False,
        )
    if write_spec is not None:
        from scaling.sweep.nextgrid import NextGridError, write_next_sweep

        try:
            text, chosen = write_next_sweep(
                table, budget, [row["params"] for row in grid], data.params_from, write_spec, from_spec
            )
        except NextGridError as error:
            raise UserError(str(error)) from None
        out_console.print(
            f"wrote {write_spec}: widths {', '.join(str(c.width) for c in chosen)} "
            f"({', '.join(f'{c.flops:.4g}' for c in chosen)} FLOPs)",
            highlight=False,
        )


def _studies(tables: list[Path], options: TableOptions, figures: Path | None = None, quiet: bool = False) -> list:
    """Each table with its fits and its family's label; with several tables, each has its own fits.json and its
    figures in a subfolder named by its label."""
    from analysis.compare import Study, study_label

    if len(tables) > 1 and options.fits is not None:
        raise UserError("--fits names one fits.json: give one table with it (several tables keep one beside each)")
    studies = []
    for table in tables:
        data, result = load_fits(table, options, quiet=quiet)
        label = study_label(data, table)
        if any(s.label == label for s in studies):
            raise UserError(f"{table}: a second table of {label}; give one table per family")
        folder = figures if figures is None or len(tables) == 1 else figures / label
        studies.append(Study(label=label, table=data, fits=result, source=str(table), figures=folder))
    return studies


@table_options()
def plot_command(
    tables: Annotated[
        list[Path], typer.Argument(help="Results table (as for `ehrscale fit`); several: one per model family.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the figures (PNG and SVG); several tables: one subfolder each.")
    ],
    options: TableOptions = TableOptions(),
) -> None:
    """IsoFLOP curves, N_opt(C) and D_opt(C) with extrapolation bands, the loss frontier, AUROC figures; with
    several tables, each one's in a subfolder and the families side by side in the folder itself."""
    for path in write_figures(tables, out, options):
        out_console.print(f"wrote {path}", highlight=False)


def write_figures(tables: list[Path], out: Path, options: TableOptions, quiet: bool = False) -> list[Path]:
    """Each table's figures (in a subfolder each when there are several) and the families side by side."""
    from analysis.compare import comparison_figures
    from analysis.plots import plot_all

    studies = _studies(tables, options, out, quiet)
    paths = [path for s in studies for path in plot_all(s.table, s.fits, s.figures)]
    if len(studies) > 1:
        paths += comparison_figures(studies, out)
    return paths


@table_options()
def report_command(
    tables: Annotated[
        list[Path],
        typer.Argument(
            help="Results table (as for `ehrscale fit`), e.g. a sweep's runs.parquet; several: one per family."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The markdown report to write.")],
    figures: Annotated[Path | None, typer.Option(help="A folder of `ehrscale plot` figures to link.")] = None,
    title: Annotated[str, typer.Option(help="The report's heading.")] = "ehrscale report",
    beyond: Annotated[
        str, typer.Option(help="Budgets past the grid to answer for, as multiples of its largest.")
    ] = "10,100,1000",
    options: TableOptions = TableOptions(),
) -> None:
    """One page of what a sweep found: IsoFLOP minima, laws with intervals, optimal N and D past the grid, AUROC.
    Several tables (one per model family): the families side by side, then a section each."""
    try:
        multiples = tuple(float(x) for x in beyond.split(","))
    except ValueError:
        raise UserError(f"--beyond must be comma-separated numbers, got {beyond!r}") from None
    write_report(tables, out, figures, title, options, multiples)
    out_console.print(f"wrote {out}", highlight=False)


def write_report(
    tables: list[Path],
    out: Path,
    figures: Path | None,
    title: str,
    options: TableOptions,
    beyond: tuple[float, ...] = (10.0, 100.0, 1000.0),
    quiet: bool = False,
) -> None:
    """One table's report, or several side by side then a section each, written to `out`."""
    from analysis.compare import render_studies
    from analysis.report import render
    from scaling.data.atomic import write_text

    studies = _studies(tables, options, figures, quiet)
    if len(studies) == 1:
        text = render(
            studies[0].table,
            studies[0].fits,
            title=title,
            source=studies[0].source,
            figures=figures,
            report_dir=out.parent,
            beyond=beyond,
        )
    else:
        text = render_studies(studies, title=title, report_dir=out.parent, figures=figures, beyond=beyond)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, text)


def lr_fit_command(
    table: Annotated[Path, typer.Argument(help="Results table of a sweep with lr_multipliers (runs.parquet or CSV).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON.")] = False,
) -> None:
    """Calibrate the learning-rate rule: each cell's best multiplier, the constant and the width exponent."""
    import dataclasses

    from analysis.lr import LrError, calibrate, summary_lines
    from analysis.table import TableError, read_frame

    try:
        rule = calibrate(read_frame(table))
    except (LrError, TableError) as error:
        raise UserError(f"{table}: {error}") from None
    if as_json:
        document = dataclasses.asdict(rule) | {"width_exponent_holds": rule.width_exponent_holds}
        typer.echo(json.dumps(document))
        return
    for line in summary_lines(rule):
        out_console.print(line, highlight=False)
