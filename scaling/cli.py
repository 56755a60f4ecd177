"""The `ehrscale` command."""

import json
from pathlib import Path
from typing import Annotated

import typer

from scaling import __version__
from scaling.commands.analysis import (
    fit_command,
    lr_fit_command,
    next_grid_command,
    optimal_command,
    plot_command,
    report_command,
)
from scaling.commands.data import data_app
from scaling.commands.study import study_command
from scaling.commands.sweep import collect_command, sweep_app
from scaling.commands.track import track_command
from scaling.console import UserError, console, out_console
from scaling.eval.zero_shot_rules import FUTURES, MAX_NEW_TOKENS
from scaling.eval.zero_shot_rules import ROWS as ZERO_SHOT_ROWS
from scaling.runspec import PROBE_TRAIN_ROWS

app = typer.Typer(
    help="Scaling-law experiments for EHR foundation models.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(data_app, name="data")
app.add_typer(sweep_app, name="sweep")
app.command("collect")(collect_command)
app.command("fit")(fit_command)
app.command("optimal")(optimal_command)
app.command("next-grid")(next_grid_command)
app.command("plot")(plot_command)
app.command("report")(report_command)
app.command("lr-fit")(lr_fit_command)
app.command("track")(track_command)
app.command("study")(study_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Scaling-law experiments for EHR foundation models."""


@app.command("train")
def train_command(
    spec: Annotated[Path, typer.Argument(help="The run's TOML spec (see docs/models.md).")],
    out: Annotated[Path, typer.Option(help="Run folder: spec.json, metrics.jsonl, checkpoints/, result.json.")],
) -> None:
    """Train one run (then evaluate the tasks its spec lists); run it again to resume from its last checkpoint."""
    from scaling.data.dataset import DatasetError
    from scaling.record import RunError
    from scaling.run import run
    from scaling.runspec import SpecError, load_spec
    from scaling.training.loop import enable_compilation_cache

    try:
        run_spec = load_spec(spec)
        enable_compilation_cache(out.resolve().parent / ".jax_cache")
        result = run(run_spec, out, log=lambda text: console.print(text, highlight=False, soft_wrap=True))
    except (SpecError, DatasetError, RunError) as error:
        raise UserError(str(error)) from None
    out_console.print(json.dumps(result.to_json(), indent=2), highlight=False)
    if result.status != "ok":
        raise typer.Exit(code=1)


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks (default: the spec's, else every task with labels).")
    ] = None,
    probe_train_rows: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"The probe's training rows, a seeded sample (default: the spec's, {PROBE_TRAIN_ROWS:,}; 0: all).",
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the held-out predictions (meds-evaluation schema; they name subjects, so keep them "
            "with the data). Default: PREP/predictions/<run>-<hash>/."
        ),
    ] = None,
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot",
            help="Instead of the probe: the timeline decoder generates futures after each prediction time and the "
            "risk is read off them (docs/evaluation.md).",
        ),
    ] = False,
    futures: Annotated[int, typer.Option(help="--zero-shot: futures per prediction time.")] = FUTURES,
    rules: Annotated[
        Path | None, typer.Option(help="--zero-shot: a TOML file of rules for your own tasks ([tasks.NAME]).")
    ] = None,
    zero_shot_rows: Annotated[
        int, typer.Option(min=0, help="--zero-shot: held-out rows scored, a seeded sample (0: all).")
    ] = ZERO_SHOT_ROWS,
    max_new_tokens: Annotated[
        int, typer.Option(help="--zero-shot: tokens a future may take before it counts as incomplete.")
    ] = MAX_NEW_TOKENS,
    imputation: Annotated[
        bool,
        typer.Option(
            "--imputation",
            help="Instead of the probe: a lab-bag model imputes the most frequent labs of held-out bags, told the "
            "item, beside the item's mean, ridge and XGBoost (imputation.json; docs/evaluation.md).",
        ),
    ] = False,
    temperature: Annotated[float, typer.Option(help="--zero-shot: sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option(min=0, help="--zero-shot: sample from the k likeliest tokens (0: all).")] = 0,
) -> None:
    """Linear-probe AUROC of a trained model on downstream tasks, beside XGBoost and the oracle (or, with
    --zero-shot, the timeline decoder's own futures; with --imputation, a lab-bag model's imputation)."""
    from scaling.data.dataset import DatasetError
    from scaling.eval.evaluate import evaluate, evaluate_imputation, evaluate_zero_shot
    from scaling.eval.zero_shot_rules import RuleError, Settings
    from scaling.record import RunError
    from scaling.runspec import SpecError

    log = lambda text: out_console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    chosen = tuple(tasks.split(",")) if tasks else None
    try:
        if zero_shot and imputation:
            raise UserError("--zero-shot (timeline decoder) and --imputation (lab-bag models): one at a time")
        if imputation:
            evaluate_imputation(run_dir, log)
        elif zero_shot:
            settings = Settings(
                futures=futures,
                max_new_tokens=max_new_tokens,
                rows=zero_shot_rows,
                temperature=temperature,
                top_k=top_k,
            )
            evaluate_zero_shot(run_dir, chosen, settings, rules, log, predictions)
        else:
            evaluate(run_dir, chosen, log=log, train_rows=probe_train_rows, predictions=predictions)
    except (SpecError, DatasetError, RunError, RuleError) as error:
        raise UserError(str(error)) from None


@app.command("export")
def export_command(
    run_dir: Annotated[Path | None, typer.Argument(help="A finished run folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="The export folder to write.")] = None,
    data_terms: Annotated[
        str | None,
        typer.Option(help="The data-use terms for the model card (default: from the source: synthetic, MIMIC-IV)."),
    ] = None,
    load: Annotated[
        Path | None, typer.Option(help="Rebuild the model from an export folder and say what it is.")
    ] = None,
) -> None:
    """Write a run's weights (safetensors), config, tokenizer files and model card; or --load one back."""
    from scaling.data.dataset import DatasetError
    from scaling.export import export_run, load_exported
    from scaling.record import RunError
    from scaling.runspec import SpecError

    try:
        if load is not None:
            if run_dir is not None or out is not None:
                raise UserError("--load takes an export folder alone (no RUN_DIR, no --out)")
            import jax
            from flax import nnx

            model = load_exported(load)
            params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
            out_console.print(
                f"{load}: {type(model).__name__} with {params:,} parameters, {model.config}", highlight=False
            )
            return
        if run_dir is None or out is None:
            raise UserError("give a finished run folder and --out (or --load an export folder)")
        folder = export_run(run_dir, out, data_terms)
    except (SpecError, DatasetError, RunError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    out_console.print(f"wrote {folder}: model.safetensors, config.json, tokenizer/, README.md", highlight=False)
