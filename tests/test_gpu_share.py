"""Runs sharing a GPU, scheduled by Ray's fractional GPU resource: tested on the CPU with a declared GPU.

Ray counts a GPU as a resource; `ray.init(num_gpus=1)` declares one on a machine without any, and a sweep that
asks `gpus = 0.25` a run must then run 4 at a time on it, each worker told its memory share. The runs themselves
train on the CPU (JAX finds no GPU). The cluster binds to 127.0.0.1 with RAY_AUTH_MODE=disabled on purpose (the
token path is tested in test_cluster.py).
"""

import json
import os

import pytest

from scaling.sweep.driver import run_sweep
from scaling.sweep.spec import parse_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_with_one_gpu():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_four_runs_share_one_gpu_at_a_quarter_each(ray_with_one_gpu, prepared, tmp_path):
    source = {
        "name": "share",
        "version": 1,
        "family": "timeline",
        "data": str(prepared[0]),
        "runs_root": str(tmp_path),
        "budgets": [3e8],
        "dtype": "float32",  # the CPU computes these runs; bfloat16 is the GPU default
        "sizes": {"widths": [16, 20, 24, 32]},
        "recipe": {"context": 32, "batch_rows": 4, "min_steps": 5},
        "train": {"eval_every": 20, "eval_batches": 2, "eval_rows": 64, "checkpoint_every": 20, "log_every": 5},
        "resources": {"cpus": 1, "gpus": 0.25},
    }
    summary = run_sweep(parse_sweep(source, "share.toml"), log=lambda _: None)
    assert summary.slots == 4 and summary.progress.done == 4 and not summary.failed
    # they ran side by side on the one GPU (one at a time had they each held it): at a run's start, how many ran
    running = max(sum(o.started <= t.started < o.ended for o in summary.timings) for t in summary.timings)
    assert running >= 3, summary.timings  # 4 when none ends before the last one's worker starts (the usual case)
    for folder in summary.folder.glob("b*"):
        assert json.loads((folder / "result.json").read_text())["status"] == "ok"
