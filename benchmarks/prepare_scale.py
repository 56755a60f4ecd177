"""The whole `ehrscale data prepare` at scale: wall time and peak memory per stage, rows/s, and the projection
to the full MIMIC-IV.

    .venv/bin/python benchmarks/prepare_scale.py --mimic DIR [--out DIR] [--tables a,b]
    .venv/bin/python benchmarks/prepare_scale.py --patients 200000 --workdir DIR   # makes the synthetic folder first

Runs `ehrscale data prepare --mimic DIR --out OUT` (every table present unless --tables) and samples the
resident memory of it and its children every 0.1 s; each sample is charged to the stage the command last
announced on its output (reading the tables, hashing, sorting shards, fitting, tokenising, tasks). Prints
per stage its seconds and peak, then the rows read per table, rows/s, and a projection to the full
MIMIC-IV v2.2: time scaled by the rows of its two big tables (labevents 118.2M, chartevents 313.6M; 82% of
the synthetic database's rows, and the other tables are assumed to keep that share); memory does not scale
if every stage is bounded by its batches and shards (compare two sizes). Goal (issue 18): under 30 minutes
and 8 GB.
"""

import argparse
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil
from common import EHRSCALE, machine, tree_rss_mib

FULL_MIMIC_IV = {"hosp/labevents": 118_171_367, "icu/chartevents": 313_645_063}  # v2.2 rows (reference schema)
STAGES = (  # how the command announces its stages, in order
    ("hashing source files", "hashing"),
    ("reading and converting", "reading the tables"),
    ("sorting", "sorting"),
    ("checking the events", "checking the events"),
    ("fitting", "fitting"),
    ("tokenising shard", "tokenising"),
    ("building task labels", "tasks"),
    ("prepared ", "writing the manifest"),
)


def run_staged(command: list[str], log: Path) -> tuple[float, dict[str, list[float]]]:
    """Run a command; (wall seconds, {stage: [seconds, peak MiB]}) with memory summed over its process tree."""
    stages: dict[str, list[float]] = {}
    current = ["starting"]
    started = time.perf_counter()
    entered = [started]

    def follow(stream, handle) -> None:
        for line in iter(stream.readline, ""):
            handle.write(line)
            for marker, name in STAGES:
                if marker in line and name != current[0]:
                    now = time.perf_counter()
                    stages.setdefault(current[0], [0.0, 0.0])[0] += now - entered[0]
                    current[0], entered[0] = name, now
                    break

    with open(log, "w") as handle:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        reader = threading.Thread(target=follow, args=(process.stdout, handle), daemon=True)
        reader.start()
        root = psutil.Process(process.pid)
        while process.poll() is None:
            stage = stages.setdefault(current[0], [0.0, 0.0])
            stage[1] = max(stage[1], tree_rss_mib(root))
            time.sleep(0.1)
        reader.join()
    seconds = time.perf_counter() - started
    stages.setdefault(current[0], [0.0, 0.0])[0] += time.perf_counter() - entered[0]
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode}); see {log}")
    return seconds, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mimic", type=Path, help="an existing MIMIC-IV folder (csv.gz)")
    parser.add_argument("--patients", type=int, help="without --mimic: make a synthetic MIMIC-IV of this size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare_scale"))
    parser.add_argument("--out", type=Path, default=None, help="where to prepare (default: WORKDIR/prep); replaced")
    parser.add_argument("--tables", default=None, help="passed to data prepare --tables")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.mimic
    if source is None:
        if not args.patients:
            raise SystemExit("give --mimic DIR or --patients N")
        source = args.workdir / f"synth_{args.patients}"
        if not (source / "hosp" / "patients.csv.gz").exists():
            shutil.rmtree(source, ignore_errors=True)
            subprocess.run(
                [EHRSCALE, "data", "synth", "--out", str(source), "--patients", str(args.patients)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    out = args.out or args.workdir / "prep"
    command = [EHRSCALE, "data", "prepare", "--mimic", str(source), "--out", str(out), "--overwrite"]
    if args.tables:
        command += ["--tables", args.tables]
    seconds, stages = run_staged(command, args.workdir / "prepare.log")
    manifest = json.loads((out / "manifest.json").read_text())
    tables = manifest["tables"]
    rows = sum(t["read"] for t in tables.values())
    big = sum(tables[name]["read"] for name in FULL_MIMIC_IV if name in tables)
    peak = max(stage[1] for stage in stages.values())
    tokens = sum(split["tokens"] for split in manifest["timelines"].values())
    print(f"machine: {machine()}")
    print(f"source: {source} ({manifest['counts']['subjects']:,} subjects, {manifest['counts']['shards']} shards)\n")
    print("| stage | seconds | peak RSS MiB |\n|---|---:|---:|")
    for name, (stage_seconds, stage_peak) in stages.items():
        print(f"| {name} | {stage_seconds:.1f} | {stage_peak:,.0f} |")
    print(f"| **whole `data prepare`** | **{seconds:.1f}** | **{peak:,.0f}** |\n")
    print("| table | rows read | events |\n|---|---:|---:|")
    for name, table in sorted(tables.items(), key=lambda item: -item[1]["read"]):
        if table["events"]:
            print(f"| {name} | {table['read']:,} | {table['events']:,} |")
    print(
        f"| **all** | **{rows:,}** | **{manifest['counts']['events']:,}** |\n\n"
        f"rows/s end to end: {rows / seconds:,.0f}; events/s: {manifest['counts']['events'] / seconds:,.0f}; "
        f"timeline tokens: {tokens:,} ({manifest['tokenizer']['dense_events_left_out']:,} dense events left out)"
    )
    if big:
        scale = sum(FULL_MIMIC_IV.values()) / big
        print(
            f"projection to the full MIMIC-IV v2.2 (labevents + chartevents {sum(FULL_MIMIC_IV.values()):,} rows, "
            f"{scale:.1f}x these): {seconds * scale / 60:.1f} min at this rate; memory bounded by batches and "
            f"shards: {peak / 1024:.2f} GiB here"
        )


if __name__ == "__main__":
    main()
