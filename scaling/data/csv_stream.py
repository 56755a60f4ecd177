"""Find a source table (`.csv.gz` or `.csv`), check its header, and stream it in bounded memory.

Every column is read as text and parsed later with polars, so one bad value never stops a table:
it is counted under a reason instead. Lines with the wrong number of fields (truncated lines,
stray quotes) are skipped by the parser and counted as `malformed line`.
"""

import csv
import gzip
import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

BLOCK_BYTES = 16 << 20  # text per batch: memory stays near a few times this per table


class SourceError(Exception):
    """A source folder, file or column the user must fix; the message says what to do."""


@dataclass(frozen=True)
class SourceTable:
    """A located table file and its header (actual spelling, matched without regard to case)."""

    name: str  # e.g. "hosp/labevents"
    path: Path
    header: tuple[str, ...]

    def column(self, wanted: str) -> str:
        """The file's spelling of a column name (MIMIC-IV files are not consistent in case)."""
        for actual in self.header:
            if actual.lower() == wanted.lower():
                return actual
        raise SourceError(f"{self.path}: no column '{wanted}'")


def locate(root: Path, name: str, hint: str) -> Path:
    """The file of table `name` under root, `.csv.gz` preferred over `.csv`."""
    for suffix in (".csv.gz", ".csv"):
        path = root / f"{name}{suffix}"
        if path.is_file():
            return path
    raise SourceError(f"missing table {name}: neither {root / name}.csv.gz nor {root / name}.csv exists. {hint}")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def open_table(root: Path, name: str, required: tuple[str, ...], hint: str) -> SourceTable:
    """Locate a table and check that its header has every required column."""
    path = locate(root, name, hint)
    try:
        with _open_text(path) as handle:
            header = tuple(next(csv.reader(handle)))
    except (StopIteration, OSError, EOFError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: cannot read a header line ({error}). {hint}") from error
    lower = {h.lower() for h in header}
    missing = [c for c in required if c.lower() not in lower]
    if missing:
        other = next(
            (
                name
                for sep, name in (("\t", "tabs"), (";", "semicolons"), ("|", "'|'"))
                if len(header) == 1 and sep in header[0]
            ),
            None,
        )
        delimiter = f"The header is split by {other}, not commas: MIMIC-IV files are comma-separated. " if other else ""
        raise SourceError(
            f"{path}: missing column {', '.join(repr(c) for c in missing)} (the file has: {', '.join(header)}). "
            f"{delimiter}{hint}"
        )
    return SourceTable(name=name, path=path, header=header)


class _CountingFile:
    """A raw file that counts the bytes read from it, for progress."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None] | None):
        self._file = open(path, "rb")
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if self._on_bytes and data:
            self._on_bytes(len(data))
        return data

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def readable(self) -> bool:
        return True


def stream(
    table: SourceTable, columns: tuple[str, ...], malformed: list[int], on_bytes: Callable[[int], None] | None = None
) -> Iterator[pl.DataFrame]:
    """Batches of the wanted columns as text, renamed to lower case; adds skipped lines to malformed[0]."""
    actual = [table.column(c) for c in columns]

    def skip(_row: pacsv.InvalidRow) -> str:
        malformed[0] += 1
        return "skip"

    raw = _CountingFile(table.path, on_bytes)
    rows, batches = 0, None
    try:
        source = pa.PythonFile(raw, mode="r")
        if table.path.suffix == ".gz":
            source = pa.CompressedInputStream(source, "gzip")
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            # Free-text columns (lab comments) hold quoted newlines in the real files.
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                include_columns=actual,
                column_types={c: pa.string() for c in table.header},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
        batches = _read_ahead(reader)
        for batch in batches:
            rows += batch.num_rows
            frame = pl.from_arrow(pa.Table.from_batches([batch]))
            yield frame.rename({a: c.lower() for a, c in zip(actual, columns, strict=True)})
    except (OSError, EOFError, pa.ArrowInvalid) as error:  # a corrupt or truncated gzip, an undecodable byte
        raise SourceError(f"{table.path}: cannot be read past row {rows + malformed[0]:,}: {error}") from error
    finally:
        if batches is not None:
            batches.close()  # stops the reading thread before its file is closed
        raw.close()


def _read_ahead(batches: Iterator, depth: int = 2) -> Iterator:
    """The batches of `batches`, read in a thread up to `depth` ahead of the caller: decompressing and parsing (one
    core for gzip) overlap with the caller converting and writing the previous batch. Errors are raised here;
    closing this generator stops the thread."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as error:  # handed to the caller, who raises it
            offer(error)

    thread = threading.Thread(target=produce, name="ehrscale-csv-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
