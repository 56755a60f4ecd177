"""Do the tables beyond the core carry signal? The demo's tasks with and without them (issue 18).

    .venv/bin/python benchmarks/icu_tables_signal.py --mimic out/demo/mimic --workdir /tmp/icu-signal
        [--dense-minutes 60 240] [--width 32] [--tokens 4000000] [--skip-training]

Prepares the same synthetic MIMIC-IV three ways: the core tables only (`--tables` as `make demo` reads them),
every table with the dense-code rule at each `--dense-minutes`. For each: events, timeline tokens (and the share
that are ICU charts), the time `data prepare` took, XGBoost and logistic regression on the count and last-value
features of every task (the same baselines `ehrscale eval` reports), and, unless --skip-training, one timeline
decoder (width `--width`, `--tokens` training tokens, the demo's recipe and cosine schedule) trained on each and
probed on every task. Prints one table; the oracle's AUROC (the synthetic data's ceiling) beside it.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from scaling.data.dataset import PreparedDataset
from scaling.data.prepare import PrepareConfig, prepare
from scaling.data.timelines import TokenizerConfig
from scaling.eval.baselines import baselines, oracle

CORE = ("icustays", "transfers", "diagnoses_icd", "procedures_icd", "prescriptions", "labevents")


def prepared(mimic: Path, out: Path, tables, dense_minutes: float) -> PreparedDataset:
    """The dataset, prepared once (reused when the folder exists; its manifest keeps the time preparing took)."""
    if not (out / "manifest.json").exists():
        tokenizer = TokenizerConfig(dense_minutes=dense_minutes)
        prepare(PrepareConfig(out=out, mimic=mimic, tables=tables, tokenizer=tokenizer, overwrite=True))
    return PreparedDataset.open(out)


def chart_share(dataset: PreparedDataset) -> float:
    """The share of train timeline tokens that are CHART code tokens."""
    vocab = dataset.vocabulary()
    chart = np.array([t.startswith("CHART//") for t in vocab.tokens])
    tokens = np.asarray(dataset.timelines("train").tokens)
    return float(chart[tokens].mean())


def probe(dataset_path: Path, out: Path, width: int, tokens: int, tasks: list[str]) -> dict[str, float]:
    """Train one decoder on the dataset and return each task's probe AUROC."""
    from scaling.record import RunFolder
    from scaling.run import run
    from scaling.runspec import parse_spec

    spec = {
        "name": "signal",
        "data": str(dataset_path),
        "family": "timeline",
        "width": width,
        "tokens": tokens,
        "tasks": list(tasks),
        "recipe": {"context": 128, "batch_rows": 16, "lr_width_product": 0.56},
        "train": {"eval_every": 500, "eval_batches": 4, "eval_rows": 512, "checkpoint_every": 1000, "log_every": 100},
    }
    run(parse_spec(spec, "icu_tables_signal"), out, log=lambda message: None)
    tasks = RunFolder(out).evaluation().tasks
    return {task: entry.probe.get("auroc", float("nan")) for task, entry in tasks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mimic", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dense-minutes", type=float, nargs="+", default=[60.0, 240.0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    variants = [("core tables", CORE, 60.0)] + [(f"all tables, dense {m:g} min", None, m) for m in args.dense_minutes]
    rows = []
    for name, tables, minutes in variants:
        folder = args.workdir / name.replace(" ", "_").replace(",", "")
        dataset = prepared(args.mimic, folder / "prep", tables, minutes)
        manifest = dataset.manifest
        tasks = dataset.task_names(with_labels=True)
        scored = {t: baselines(dataset, t) for t in tasks}
        row = {
            "variant": name,
            "events": manifest["counts"]["events"],
            "tokens": sum(s["tokens"] for s in manifest["timelines"].values()),
            "chart_share": chart_share(dataset),
            "left_out": manifest["tokenizer"].get("dense_events_left_out", 0),
            "prepare_s": manifest["elapsed_seconds"],
            "xgboost": {t: scored[t]["xgboost"]["auroc"] for t in tasks},
            "logistic": {t: scored[t]["logistic"]["auroc"] for t in tasks},
            "oracle": {t: (oracle(dataset, t) or {}).get("auroc") for t in tasks},
        }
        if not args.skip_training:
            row["probe"] = probe(folder / "prep", folder / "run", args.width, args.tokens, tasks)
        rows.append(row)
        print(json.dumps(row), flush=True)
    tasks = list(rows[0]["xgboost"])
    print(f"\n| variant | prepare s | events | timeline tokens | CHART share | dense left out | {' | '.join(tasks)} |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(tasks))
    for row in rows:
        cells = []
        for task in tasks:
            parts = [f"XGB {row['xgboost'][task]:.3f}", f"LR {row['logistic'][task]:.3f}"]
            if "probe" in row:
                parts.append(f"probe {row['probe'].get(task, float('nan')):.3f}")
            cells.append(" / ".join(parts))
        print(
            f"| {row['variant']} | {row['prepare_s']:.0f} | {row['events']:,} | {row['tokens']:,} | "
            f"{row['chart_share']:.1%} | {row['left_out']:,} | " + " | ".join(cells) + " |"
        )
    oracle_cells = [f"{rows[0]['oracle'][t]:.3f}" if rows[0]["oracle"][t] is not None else "" for t in tasks]
    print("| oracle | | | | | | " + " | ".join(oracle_cells) + " |")


if __name__ == "__main__":
    main()
