"""`ehrscale data synth | prepare | inspect`: the built-in synthetic MIMIC-IV, ingestion into a prepared dataset, and
a look at one."""

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from scaling.console import UserError, console, out_console
from scaling.data import quirks
from scaling.data.labbags import BagConfig
from scaling.data.prepare import PrepareConfig
from scaling.data.timelines import TokenizerConfig

data_app = typer.Typer(help="Synthesise, ingest and inspect datasets.", no_args_is_help=True)


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="Folder to create (hosp/, icu/, oracle/).")],
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives byte-identical files.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
) -> None:
    """Write a synthetic MIMIC-IV: gzipped CSVs in MIMIC-IV's layout, plus oracle/ risks."""
    from scaling.data.synthetic import write_synthetic_mimic

    with _progress(counts_bytes=False) as progress:
        task = progress.add_task("simulating patients", total=patients)
        try:
            summary = write_synthetic_mimic(out, patients, seed, workers, lambda n: progress.advance(task, n))
        except (FileExistsError, ValueError) as error:
            raise UserError(str(error)) from None
    table = Table(title=f"synthetic MIMIC-IV in {out} ({patients:,} patients, seed {seed})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(f"{name}.csv.gz", f"{rows:,}")
    out_console.print(table)


@data_app.command("prepare")
def prepare(
    out: Annotated[Path, typer.Option(help="Prepared-dataset folder to create.")],
    mimic: Annotated[
        Path | None, typer.Option(help="MIMIC-IV folder holding hosp/ and icu/ (.csv or .csv.gz).")
    ] = None,
    meds: Annotated[Path | None, typer.Option(help="A MEDS dataset folder (data/, metadata/), used as is.")] = None,
    split_seed: Annotated[
        int, typer.Option(help="Seed of the subject-level train/tuning/held_out split.")
    ] = PrepareConfig.split_seed,
    split: Annotated[str, typer.Option(help="Train,tuning,held_out fractions.")] = ",".join(
        f"{x:g}" for x in PrepareConfig.split_fractions
    ),
    shards: Annotated[int | None, typer.Option(min=1, help="Event shards (default: from the source size).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    quantiles: Annotated[
        int, typer.Option(min=2, help="Value tokens per code (Q1..Qn), fitted on train.")
    ] = TokenizerConfig.quantiles,
    min_code_count: Annotated[
        int, typer.Option(min=1, help="Train count below which a code becomes UNK//<category>.")
    ] = TokenizerConfig.min_code_count,
    dense_minutes: Annotated[
        float,
        typer.Option(
            min=0,
            help="Dense codes: those whose train events recur, per subject, at a median gap of at most this many "
            "minutes (charted vital signs); a timeline keeps one event of each per window of this many minutes. "
            "0 keeps every event.",
        ),
    ] = TokenizerConfig.dense_minutes,
    bag_min_count: Annotated[
        int, typer.Option(min=1, help="Train rows a lab item needs to enter the bag vocabulary.")
    ] = BagConfig.min_code_count,
    bag_min_labs: Annotated[int, typer.Option(min=1, help="Fewest labs in a bag.")] = BagConfig.min_labs,
    bag_max_labs: Annotated[
        int, typer.Option(min=1, help="Most labs in a bag (longer bags are subsampled).")
    ] = BagConfig.max_labs,
    bag_max_missing: Annotated[
        float, typer.Option(min=0, max=1, help="Largest share of labs without a value.")
    ] = BagConfig.max_missing_fraction,
    bag_drop_subsets: Annotated[
        bool, typer.Option(help="Drop a bag whose labs are a subset of the previous bag's.")
    ] = BagConfig.drop_subsets,
    bag_codes: Annotated[
        str,
        typer.Option(
            help="Which codes are labs: 'mimic-labs' (MIMIC-IV's hospital labs: LAB//<itemid>//... with a "
            "hosp/d_labitems item id, ICU charts left out), 'numeric' (codes that usually carry a number; for any MEDS "
            "dataset), or a regular expression (the item is its first group)."
        ),
    ] = BagConfig.lab_codes,
    bag_numeric_share: Annotated[
        float, typer.Option(min=0, max=1, help="With --bag-codes numeric: the share of a code's rows with a number.")
    ] = BagConfig.numeric_share,
    events_only: Annotated[
        bool, typer.Option(help="Stop after the MEDS events (no timelines, bags or tasks).")
    ] = False,
    tables: Annotated[
        str | None,
        typer.Option(
            help="With --mimic: the tables to read beside patients and admissions, comma-separated (labevents,"
            "chartevents,...; docs/data.md lists them). Default: every one present."
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            help="Your own task from MEDS label files: NAME=DIR (a folder of parquet files, or one file); repeatable."
        ),
    ] = None,
    label_inputs: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=before makes a --labels task's inputs strictly before prediction_time "
            "(default at_or_before, MEDS's convention); repeatable."
        ),
    ] = None,
) -> None:
    """Read a source into MEDS events, then timelines, lab bags and task labels, all under OUT."""
    from scaling.data.csv_stream import SourceError
    from scaling.data.labels import parse_labels_option
    from scaling.data.prepare import prepare as run_prepare

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        raise UserError(f"--split must be three numbers like 0.8,0.1,0.1, got {split!r}") from None
    try:
        label_sources = parse_labels_option(labels or [], label_inputs or [])
    except SourceError as error:
        raise UserError(str(error)) from None
    config = PrepareConfig(
        out=out,
        mimic=mimic,
        meds=meds,
        split_seed=split_seed,
        split_fractions=fractions,
        shards=shards,
        overwrite=overwrite,
        events_only=events_only,
        labels=label_sources,
        tables=tuple(t.strip() for t in tables.split(",") if t.strip()) if tables is not None else None,
        tokenizer=TokenizerConfig(
            quantiles=quantiles,
            min_code_count=min_code_count,
            dense_minutes=dense_minutes,
        ),
        bags=BagConfig(
            min_code_count=bag_min_count,
            min_labs=bag_min_labs,
            max_labs=bag_max_labs,
            max_missing_fraction=bag_max_missing,
            drop_subsets=bag_drop_subsets,
            lab_codes=bag_codes,
            numeric_share=bag_numeric_share,
        ),
    )
    with _progress() as progress:
        try:
            manifest = run_prepare(config, _ProgressReporter(progress))
        except SourceError as error:
            raise UserError(str(error)) from None
    print_manifest(manifest, out)


def print_manifest(manifest: dict, out: Path) -> None:
    """The rows read, kept and dropped per table, and the dataset's counts."""
    table = Table(title=f"prepared {out} from {manifest['source']['kind']} ({manifest['source']['path']})")
    for column in ("table", "read", "kept", "dropped", "events", "drop reasons / warnings"):
        table.add_column(column, justify="left" if column in ("table", "drop reasons / warnings") else "right")
    for name, t in manifest["tables"].items():
        reasons = ", ".join(f"{k}: {v:,}" for k, v in t["dropped"].items())
        warnings = ", ".join(f"{k}: {v:,}" for k, v in t.get("warnings", {}).items())
        table.add_row(
            name,
            f"{t['read']:,}",
            f"{t['kept']:,}",
            f"{sum(t['dropped'].values()):,}",
            f"{t['events']:,}",
            "; ".join(x for x in (reasons, warnings) if x),
        )
    out_console.print(table)
    absent = manifest["source"].get("tables", {}).get("absent")
    if absent:
        out_console.print(f"not in the source, so not read: {', '.join(absent)}", highlight=False)
    counts = manifest["counts"]
    splits = ", ".join(f"{k} {v:,}" for k, v in counts["subjects_by_split"].items())
    out_console.print(
        f"{counts['subjects']:,} subjects ({splits}); {counts['events']:,} events; "
        f"{counts['codes']:,} codes; {counts['shards']} shard(s); "
        f"{manifest.get('elapsed_seconds', 0):.1f} s",
        highlight=False,
    )
    if "timelines" in manifest:
        tokens = sum(s["tokens"] for s in manifest["timelines"].values())
        bags = manifest["bags"]
        out_console.print(
            f"timelines: {tokens:,} tokens, vocabulary {manifest['tokenizer']['vocab_size']:,}; "
            f"lab bags: {sum(bags['bags_by_split'].values()):,} of {bags['considered']:,} kept, {bags['items']} items; "
            f"tasks: "
            + ", ".join(
                f"{name} {sum(v['n'] for v in t['by_split'].values()):,}"
                for name, t in manifest["tasks"]["labels"].items()
            ),
            highlight=False,
        )
        left_out = "; ".join(
            f"{k}: {v['items']:,} items, {v['rows']:,} rows" for k, v in bags["left_out_by_rule"].items()
        )
        out_console.print(
            f"lab bags: {bags['rule']}" + (f"; left out: {left_out}" if left_out else ""), highlight=False
        )
        tokenizer = manifest["tokenizer"]
        window = tokenizer["dense_minutes"]
        out_console.print(
            f"dense codes (recurring at a median gap of {window:g} min or less): {tokenizer['dense_code_count']:,}, "
            f"thinned to their first event per {window:g} min: {tokenizer['dense_events_left_out']:,} events left out "
            "of the timelines"
            if window > 0
            else "dense codes: none thinned (--dense-minutes 0 keeps every event)",
            highlight=False,
        )
        out_console.print(quirks.summary(manifest["quirks"]), highlight=False)
        if bags.get("note"):
            out_console.print(bags["note"], highlight=False)
        for name, t in manifest["tasks"]["labels"].items():
            if t.get("source") == "labels":
                dropped = ", ".join(f"{k}: {v:,}" for k, v in t["excluded"].items()) or "none"
                out_console.print(
                    f"task {name}: {t['rows_read']:,} label rows read, inputs {t['inputs'].replace('_', ' ')} "
                    f"prediction_time; dropped: {dropped}",
                    highlight=False,
                )
        empty = [n for n, t in manifest["tasks"]["labels"].items() if not any(v["n"] for v in t["by_split"].values())]
        if empty:
            out_console.print(
                f"no labels for {', '.join(empty)}: the built-in tasks need MIMIC-IV's admission and ICU codes; "
                "give your own tasks with --labels NAME=DIR",
                highlight=False,
            )
    for note in manifest.get("notes", []):
        out_console.print(f"note: {note}", highlight=False)


@data_app.command("inspect")
def inspect(
    prep: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    split: Annotated[str, typer.Option(help="Split of the timeline to decode.")] = "held_out",
    index: Annotated[int, typer.Option(min=0, help="Which subject of the split to decode (0 = first).")] = 0,
    tokens: Annotated[int, typer.Option(min=1, help="How many tokens of the timeline to show.")] = 80,
    icu_day: Annotated[
        bool, typer.Option(help="Decode the first 24 h of an ICU stay (the first subject from --index on with one).")
    ] = False,
) -> None:
    """Dataset statistics and one decoded timeline (codes with their descriptions)."""
    from scaling.data.dataset import DatasetError, PreparedDataset
    from scaling.data.inspect import decode_icu_day, decode_timeline, describe

    try:
        dataset = PreparedDataset.open(prep)
        out_console.print(describe(dataset), highlight=False)
        decode = decode_icu_day if icu_day else decode_timeline
        out_console.print(decode(dataset, split, index, tokens), highlight=False)
    except (DatasetError, IndexError, ValueError) as error:
        raise UserError(str(error)) from None


class _ProgressReporter:
    """Feeds data.prepare's progress callbacks into a rich progress display."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def table(self, name: str, total_bytes: int):
        task = self.progress.add_task(f"reading {name}", total=total_bytes)
        return lambda n: self.progress.advance(task, n)

    def step(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)


def _progress(counts_bytes: bool = True) -> Progress:
    amount = DownloadColumn() if counts_bytes else MofNCompleteColumn()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
