"""Benchmark `ehrscale eval` on a 5,000-patient synthetic MIMIC-IV: seconds per task, first (baselines
computed) and again (baselines cached, the cost every further run of a sweep pays).

    .venv/bin/python benchmarks/bench_eval.py [--patients 5000] [--workdir DIR]

Goal: evaluating one run on a 5,000-patient cohort in 30 s or less.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import EHRSCALE, machine, measure

SPEC = """name = "bench-eval"
data = "{data}"
width = 32
tokens = 102400
[recipe]
context = 64
[train]
eval_every = 100
checkpoint_every = 100
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_eval."))
    source, prep, run = workdir / f"synth_{args.patients}", workdir / f"prep_{args.patients}", workdir / "run"
    if not (source / "hosp" / "patients.csv.gz").exists():
        measure([EHRSCALE, "data", "synth", "--out", str(source), "--patients", str(args.patients)])
    if not (prep / "manifest.json").exists():
        measure([EHRSCALE, "data", "prepare", "--mimic", str(source), "--out", str(prep)])
    shutil.rmtree(prep / "baselines", ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    (workdir / "run.toml").write_text(SPEC.format(data=prep))
    measure([EHRSCALE, "train", str(workdir / "run.toml"), "--out", str(run)])
    manifest = json.loads((prep / "manifest.json").read_text())
    print(f"machine: {machine()}")
    print("| task | cohort rows | first: wall s (with baselines) | again: wall s | probe AUROC | XGBoost | oracle |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task in ("in_hospital_mortality", "long_stay", "icu_mortality", "abnormal_creatinine"):
        first = measure([EHRSCALE, "eval", str(run), "--tasks", task])
        again = measure([EHRSCALE, "eval", str(run), "--tasks", task])
        report = json.loads((run / "eval.json").read_text())[task]
        rows = sum(v["n"] for v in manifest["tasks"]["labels"][task]["by_split"].values())
        probe = report["probe"].get("auroc")
        xgb = report["baselines"].get("xgboost", {}).get("auroc")
        oracle = (report["oracle"] or {}).get("auroc")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"| {task} | {rows:,} | {first.seconds:.1f} | {again.seconds:.1f} | {fmt(probe)} | {fmt(xgb)} "
            f"| {fmt(oracle)} |",
            flush=True,
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
