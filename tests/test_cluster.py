"""A real token-protected Ray cluster (`ray start --head` on 127.0.0.1) receives a sweep through Ray Jobs."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import sweep_source, write_toml

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster():
    """A head node with token authentication, bound to 127.0.0.1; yields (dashboard address, token)."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    token = secrets.token_hex(24)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }  # the job's `python` is this environment's
    dashboard = free_port()
    start = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--include-dashboard=true",
            "--num-cpus=2",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield f"http://127.0.0.1:{dashboard}", token
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_token_protected_cluster_completes_a_sweep_submitted_through_ray_jobs(cluster, prepared, tmp_path):
    address, token = cluster
    runs = tmp_path / "runs"
    spec = write_toml(tmp_path / "tiny.toml", sweep_source(prepared[0], runs, budgets=[3e8], tasks=[]))
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    client_env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on

    def ehrscale(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        """The `ehrscale` command as a user on a machine without the cluster's token would run it."""
        command = [str(BIN / "ehrscale"), *args]
        return subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=timeout)

    refused = ehrscale("sweep", "submit", str(spec), "--address", address)
    assert refused.returncode == 2 and "could not submit" in refused.stderr and "--token-file" in refused.stderr

    (tmp_path / "token").write_text(token)
    with_token = ("--token-file", str(tmp_path / "token"))
    # Two sweeps in one job: one driver, one queue, each sweep's own folder and table.
    other = write_toml(
        tmp_path / "other.toml", sweep_source(prepared[0], runs, budgets=[3e8], tasks=[]) | {"name": "other"}
    )
    done = ehrscale("sweep", "submit", str(spec), str(other), "--address", address, *with_token, "--wait", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted raysubmit_" in done.stdout and "SUCCEEDED" in done.stdout
    for name in ("tiny", "other"):
        frame = pl.read_parquet(runs / name / "1" / "runs.parquet")
        assert frame.height == 3 and set(frame["status"]) == {"ok"}
    job = done.stdout.split("submitted ")[1].split()[0]
    for sent in (spec, other):
        status = ehrscale("sweep", "status", str(sent), *with_token)
        assert status.returncode == 0 and "3 done" in status.stdout, status.stdout + status.stderr
        assert f"driver job {job}" in status.stdout and ": SUCCEEDED" in status.stdout

    # A driver job that dies at once (here: its dataset is not there) is shown as failed, with its last log lines,
    # instead of runs that stay pending.
    broken = write_toml(
        tmp_path / "broken.toml",
        sweep_source(tmp_path / "no-such-prep", runs, budgets=[3e8], tasks=[]) | {"name": "broken"},
    )
    sent = ehrscale("sweep", "submit", str(broken), "--address", address, *with_token, "--wait", timeout=600)
    assert sent.returncode == 1 and "FAILED" in sent.stdout
    status = ehrscale("sweep", "status", str(broken), *with_token)
    assert status.returncode == 0, status.stderr
    assert ": FAILED" in status.stdout and "its last log lines:" in status.stdout and "no-such-prep" in status.stdout
