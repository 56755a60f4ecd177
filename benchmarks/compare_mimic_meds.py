"""Ingestion beside the reference MIMIC-IV -> MEDS ETL (`mimic-iv-meds` on PyPI), on the same synthetic files.

    .venv/bin/python benchmarks/compare_mimic_meds.py [--patients 2000 10750] [--workdir DIR] [--concept-maps DIR]

The reference pins polars < 2, so it gets its own virtual environment (`python3 -m venv` + pip, made
once under the workdir; needs PyPI). It also reads MIMIC-IV's public concept maps beside the raw
tables: they are copied into the input folder from --concept-maps (default
../shared/reference-data/mimic-code-concept-map/; not ours to commit). For each size: wall time and
peak memory (the whole process tree, sampled every 0.1 s) of `ehrscale data prepare --events-only`
and of `meds-extract-run spec=MIMIC-IV do_download=false input_dir=... output_dir=...`, the events
each wrote, and the ratios. Our goal: faster and smaller.
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
from common import EHRSCALE, machine, tree_rss_mib

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "mimic-iv-meds==0.2.0"


def tree_run(command: list[str], log: Path, env: dict | None = None) -> tuple[float, float]:
    """Run a command; (wall seconds, peak RSS in MiB of it and all its descendants together)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        root, peak = psutil.Process(process.pid), 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mib(root))
            time.sleep(0.1)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed (exit {process.returncode}); see {log}:\n{log.read_text()[-3000:]}"
        )
    return seconds, peak


def reference_env(workdir: Path) -> Path:
    """The reference ETL's own virtual environment; its `meds-extract-run`."""
    venv = workdir / "mimic-iv-meds-venv"
    tool = venv / "bin" / "meds-extract-run"
    if not tool.exists():
        subprocess.run([shutil.which("python3") or "python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", REFERENCE], check=True)
    return tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, nargs="+", default=[2000, 10750])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--concept-maps", type=Path, default=ROOT.parent / "shared" / "reference-data" / "mimic-code-concept-map"
    )
    args = parser.parse_args()
    if not (args.concept_maps / "d_labitems_to_loinc.csv").exists():
        raise SystemExit(
            f"no concept maps in {args.concept_maps} (d_labitems_to_loinc.csv and the rest); pass --concept-maps DIR"
        )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="compare_meds."))
    workdir.mkdir(parents=True, exist_ok=True)
    tool = reference_env(workdir)
    print(f"machine: {machine()}; reference: {REFERENCE} in {tool.parent.parent}")
    print(
        "| patients | lab rows | ours: s | ours: peak MiB | ours: events | reference: s | reference: peak MiB | "
        "reference: events | time ratio | memory ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for patients in args.patients:
        source = workdir / f"synth_{patients}"
        if not (source / "hosp" / "patients.csv.gz").exists():
            shutil.rmtree(source, ignore_errors=True)
            subprocess.run(
                [EHRSCALE, "data", "synth", "--out", str(source), "--patients", str(patients), "--seed", "0"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        for path in args.concept_maps.glob("*.csv"):  # beside the raw tables, where the reference ETL looks
            shutil.copy(path, source / path.name)
        ours_out, theirs_out = workdir / f"ours_{patients}", workdir / f"reference_{patients}"
        for out in (ours_out, theirs_out):
            shutil.rmtree(out, ignore_errors=True)
        ours = tree_run(
            [EHRSCALE, "data", "prepare", "--mimic", str(source), "--out", str(ours_out), "--events-only"],
            workdir / f"ours_{patients}.log",
        )
        theirs = tree_run(
            [str(tool), "spec=MIMIC-IV", "do_download=false", f"input_dir={source}", f"output_dir={theirs_out}"],
            workdir / f"reference_{patients}.log",
            env={**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ['PATH']}"},
        )  # its stages by name
        ours_events = pl.scan_parquet(ours_out / "events" / "data" / "*.parquet").select(pl.len()).collect().item()
        theirs_events = pl.scan_parquet(theirs_out / "data" / "**" / "*.parquet").select(pl.len()).collect().item()
        labs = (
            sum(
                1
                for _ in subprocess.Popen(
                    ["zcat", str(source / "hosp" / "labevents.csv.gz")], stdout=subprocess.PIPE
                ).stdout
            )
            - 1
        )
        print(
            f"| {patients:,} | {labs:,} | {ours[0]:.1f} | {ours[1]:,.0f} | {ours_events:,} | {theirs[0]:.1f} | "
            f"{theirs[1]:,.0f} | {theirs_events:,} | {theirs[0] / ours[0]:.2f}x | {theirs[1] / ours[1]:.2f}x |",
            flush=True,
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
