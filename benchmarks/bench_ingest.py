"""Benchmark ingestion, `ehrscale data prepare --mimic ... --events-only`: lab rows/s end to end and peak memory.

    .venv/bin/python benchmarks/bench_ingest.py [--patients 10750 21500] [--workdir DIR]

Inputs are synthetic MIMIC-IV folders of about 5M and 10M lab rows (made first, or reused from
--workdir). Goals on 2 cores: at least 500k lab rows/s end to end, peak RSS under 4 GB at 10M rows.
"""

import json
import shutil
import tempfile
from pathlib import Path

from common import EHRSCALE, machine, measure, size_arguments


def main() -> None:
    args = size_arguments(__doc__).parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest."))
    print(f"machine: {machine()}")
    print("| patients | lab rows | events | shards | wall s | lab rows/s | events/s | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for patients in args.patients:
        source = workdir / f"synth_{patients}"
        if not (source / "hosp" / "patients.csv.gz").exists():
            shutil.rmtree(source, ignore_errors=True)
            measure([EHRSCALE, "data", "synth", "--out", str(source), "--patients", str(patients), "--seed", "0"])
        out = workdir / f"events_{patients}"
        shutil.rmtree(out, ignore_errors=True)
        result = measure([EHRSCALE, "data", "prepare", "--mimic", str(source), "--out", str(out), "--events-only"])
        manifest = json.loads((out / "manifest.json").read_text())
        labs = manifest["tables"]["hosp/labevents"]["read"]
        events = manifest["counts"]["events"]
        print(
            f"| {patients:,} | {labs:,} | {events:,} | {manifest['counts']['shards']} | {result.seconds:.1f} | "
            f"{labs / result.seconds:,.0f} | {events / result.seconds:,.0f} | {result.peak_rss_mib:,.0f} |",
            flush=True,
        )
        shutil.rmtree(out)
        full = workdir / f"prep_{patients}"
        if (
            args.workdir is not None and not (full / "manifest.json").exists()
        ):  # the whole prepare, for bench_tokenize.py
            measure([EHRSCALE, "data", "prepare", "--mimic", str(source), "--out", str(full)])
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
