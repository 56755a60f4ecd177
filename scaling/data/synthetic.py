"""`ehrscale data synth`: write a synthetic MIMIC-IV (gzipped CSVs in MIMIC-IV's layout) plus `oracle/`.

Patients are simulated in fixed chunks, each seeded by (seed, chunk index), so the output is the
same for a seed whatever the number of worker processes, and cost is linear in patients. Workers
render CSV text; the parent compresses each table into one gzip stream, in chunk order.
"""

import gzip
import io
import multiprocessing
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from scaling.data.atomic import publish, temporary_sibling
from scaling.data.synth_extra import EXTRA_COLUMNS, extra_dictionaries, extra_tables
from scaling.data.synth_patients import simulate_chunk
from scaling.data.synth_tables import COLUMNS as READ_COLUMNS
from scaling.data.synth_tables import chunk_tables, dictionary_tables

CHUNK_PATIENTS = 1000
COLUMNS = {**READ_COLUMNS, **EXTRA_COLUMNS}  # the tables ehrscale reads, then those only the reference ETL reads
TABLES = tuple(COLUMNS)


@dataclass(frozen=True)
class SynthSummary:
    """What a synth run wrote: rows per table and where."""

    out: Path
    patients: int
    seed: int
    rows: dict[str, int]


def _csv(frame: pl.DataFrame, header: bool) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=header, null_value="", quote_style="necessary", line_terminator="\n")
    return buffer.getvalue()


def _render_chunk(args: tuple[int, int, int, int]) -> dict[str, tuple[int, bytes]]:
    seed, chunk_index, first, count = args
    chunk = simulate_chunk(seed, chunk_index, first, count)
    frames = chunk_tables(chunk, seed, chunk_index)
    frames |= extra_tables(frames, seed, chunk_index, chunk)
    return {name: (frames[name].height, _csv(frames[name].select(COLUMNS[name]), header=False)) for name in TABLES}


class _GzipWriter(gzip.GzipFile):
    """A gzip file that also closes the file it writes to."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(path, "wb")
        # mtime=0 and no file name in the header: the same seed gives byte-identical files.
        super().__init__(filename="", mode="wb", fileobj=self._raw, compresslevel=3, mtime=0)

    def close(self) -> None:
        super().close()
        self._raw.close()


def write_synthetic_mimic(
    out: Path, patients: int, seed: int = 0, workers: int = 2, progress: Callable[[int], None] | None = None
) -> SynthSummary:
    """Write the synthetic MIMIC-IV under `out` (hosp/, icu/, oracle/), atomically."""
    if patients < 1:
        raise ValueError(f"--patients must be at least 1, got {patients}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out or delete it first")
    tmp = temporary_sibling(out)
    try:
        writers = {name: _GzipWriter(tmp / f"{name}.csv.gz") for name in TABLES}
        for name, writer in writers.items():
            writer.write(_csv(pl.DataFrame(schema={c: pl.String for c in COLUMNS[name]}), header=True))
        jobs = [
            (seed, k, k * CHUNK_PATIENTS, min(CHUNK_PATIENTS, patients - k * CHUNK_PATIENTS))
            for k in range((patients + CHUNK_PATIENTS - 1) // CHUNK_PATIENTS)
        ]
        rows = dict.fromkeys(TABLES, 0)
        ctx = multiprocessing.get_context("forkserver")
        pool = ctx.Pool(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.imap(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
            for job, rendered in zip(jobs, results):
                for name, (count, data) in rendered.items():
                    writers[name].write(data)
                    rows[name] += count
                if progress:
                    progress(job[3])
        finally:
            if pool:
                pool.close()
                pool.join()
        for writer in writers.values():
            writer.close()
        for name, frame in (dictionary_tables() | extra_dictionaries()).items():
            with _GzipWriter(tmp / f"{name}.csv.gz") as writer:
                writer.write(_csv(frame, header=True))
            rows[name] = frame.height
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthSummary(out=out, patients=patients, seed=seed, rows=rows)
