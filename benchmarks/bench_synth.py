"""Benchmark `ehrscale data synth`: lab rows per second and peak memory at two sizes (cost should be linear).

    .venv/bin/python benchmarks/bench_synth.py [--patients 10750 21500] [--workdir DIR]

About 465 lab rows per patient: 21,500 patients give about 10M lab rows (goal: 3 minutes or less here).
"""

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from common import EHRSCALE, machine, measure, size_arguments, size_of


def count_rows(path: Path) -> int:
    """CSV records, not lines: lab comments may hold quoted newlines."""
    source = pa.CompressedInputStream(pa.OSFile(str(path)), "gzip")
    reader = pacsv.open_csv(
        source,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(include_columns=["labevent_id"]),
    )
    return sum(batch.num_rows for batch in reader)


def main() -> None:
    args = size_arguments(__doc__).parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_synth."))
    print(f"machine: {machine()}")
    print("| patients | lab rows | wall s | lab rows/s | peak RSS MiB | output MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for patients in args.patients:
        out = workdir / f"synth_{patients}"
        shutil.rmtree(out, ignore_errors=True)
        result = measure([EHRSCALE, "data", "synth", "--out", str(out), "--patients", str(patients), "--seed", "0"])
        rows = count_rows(out / "hosp" / "labevents.csv.gz")
        print(
            f"| {patients:,} | {rows:,} | {result.seconds:.1f} | {rows / result.seconds:,.0f} | "
            f"{result.peak_rss_mib:,.0f} | {size_of(out):,.0f} |",
            flush=True,
        )
        if args.workdir is None:
            shutil.rmtree(out)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
