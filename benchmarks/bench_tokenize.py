"""Benchmark the model-ready stage of `data prepare` (vocabulary, timelines, lab bags, tasks) and the loaders.

    .venv/bin/python benchmarks/bench_tokenize.py --prep PREP [PREP ...]

PREP: prepared datasets (e.g. from bench_ingest.py --workdir, or `ehrscale data prepare`). For each,
the derive step is rerun from its events in a child process (wall time, peak RSS; goal: 10M events in
60 s or less, under 4 GB), then the loaders are timed on its train split.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import machine, measure

from scaling.hardware import matmul_peak_flops

CHILD = """
import sys
from pathlib import Path
from scaling.data.derive import derive
from scaling.data.labbags import BagConfig
from scaling.data.tasks import TaskConfig
from scaling.data.timelines import TokenizerConfig
derive(Path(sys.argv[1]), Path(sys.argv[2]), TokenizerConfig(), BagConfig(), TaskConfig())
"""


def loader_rates(prep: Path, context: int = 256, batch: int = 16, steps: int = 200) -> tuple[float, float]:
    from scaling.data.dataset import PreparedDataset
    from scaling.data.loaders import BagLoader, TimelineLoader

    dataset = PreparedDataset.open(prep)
    timeline = TimelineLoader(dataset.timelines("train"), context=context, batch_size=batch, seed=0)
    timeline.batch(0)  # builds the epoch's packing plan once
    start = time.perf_counter()
    for step in range(1, steps + 1):
        timeline.batch(step)
    tokens_per_s = steps * batch * context / (time.perf_counter() - start)
    bags = BagLoader(dataset.bags("train"), dataset.lab_vocabulary().size, rows=64, context=128, seed=0)
    start = time.perf_counter()
    packed = sum(int(bags.batch(step).is_masked.sum()) for step in range(steps))  # one masked lab per bag
    bags_per_s = packed / (time.perf_counter() - start)
    return tokens_per_s, bags_per_s


def model_bound_tokens_per_s(
    peak: float, d_model: int = 256, layers: int = 4, context: int = 256, vocab: int = 400
) -> float:
    """Upper bound on training tokens/s of a d_model 256 decoder here: peak / (6 N + 6 layers context d_model)."""
    params = 12 * layers * d_model**2 + 2 * vocab * d_model
    return peak / (6 * params + 6 * layers * context * d_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prep", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    peak = matmul_peak_flops()
    bound = model_bound_tokens_per_s(peak)
    print(
        f"f32 matmul peak {peak / 1e9:.0f} GFLOP/s; a d_model 256, 4-layer decoder (context 256) trains at most "
        f"{bound:,.0f} tokens/s here (at 100% of that peak); a loader must beat 20x that: {20 * bound:,.0f} tokens/s"
    )
    print(
        "| events | tokens | bags | derive wall s | events/s | peak RSS MiB "
        "| timeline loader tokens/s (ctx 256, batch 16) | bag loader bags/s (64 packed rows of 128) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for prep in args.prep:
        manifest = json.loads((prep / "manifest.json").read_text())
        with tempfile.TemporaryDirectory() as out:
            result = measure([sys.executable, "-c", CHILD, str(prep / "events"), out])
        events = manifest["counts"]["events"]
        tokens = sum(s["tokens"] for s in manifest["timelines"].values())
        bags = sum(manifest["bags"]["bags_by_split"].values())
        tokens_per_s, bags_per_s = loader_rates(prep)
        print(
            f"| {events:,} | {tokens:,} | {bags:,} | {result.seconds:.1f} | {events / result.seconds:,.0f} | "
            f"{result.peak_rss_mib:,.0f} | {tokens_per_s:,.0f} | {bags_per_s:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
