"""Helpers shared by the benchmarks: run a command, measure wall time and peak memory."""

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

EHRSCALE = str(Path(sys.executable).with_name("ehrscale"))


@dataclass(frozen=True)
class Measured:
    """Wall seconds and peak resident memory (MiB) of one command, itself and the children it waited for."""

    seconds: float
    peak_rss_mib: float


def measure(command: list[str]) -> Measured:
    """Run a command to completion; raise if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return Measured(seconds=seconds, peak_rss_mib=usage.ru_maxrss / 1024)


def tree_rss_mib(process: psutil.Process) -> float:
    """Resident memory of a process and all its descendants together, in MiB (0 once it has gone)."""
    try:
        members = [process, *process.children(recursive=True)]
        return sum(p.memory_info().rss for p in members if p.is_running()) / 2**20
    except psutil.Error:
        return 0.0


def machine() -> str:
    """One line naming the machine the figures were taken on."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )


def size_of(path: Path) -> float:
    """MiB under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def size_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every size-sweeping benchmark takes: patient counts and a folder to keep inputs in."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, nargs="+", default=[10_750, 21_500])
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep inputs here and reuse them (default: temporary, removed)"
    )
    return parser
