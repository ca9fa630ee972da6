"""Running the source query: DuckDB over local files (the local backend)."""

from __future__ import annotations

import csv
import glob
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from runner.build.manifest import PROBLEM, problem_error
from runner.build.quoting import sql_name, sql_string
from runner.build.sql import Query, referenced_columns
from runner.config import relative_to_cwd
from runner.errors import ConfigError, QueryError
from runner.io.store import sha256_file
from runner.schema import DuckDBConfig, SourceConfig

log = logging.getLogger(__name__)
READERS = {".csv": "read_csv", ".tsv": "read_csv", ".parquet": "read_parquet",
           ".json": "read_json", ".jsonl": "read_json", ".ndjson": "read_json"}


def source_files(source: SourceConfig) -> list[Path]:
    """The files behind `source.files`, each glob expanded; a glob that matches nothing is an error."""
    if not source.files:
        raise ConfigError("source.files", "is empty", "the local backend reads the table "
                          f"{source.database}.{source.table} from these files (CSV, Parquet, JSON lines)")
    found: list[Path] = []
    for i, pattern in enumerate(source.files):
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not matches:
            raise ConfigError(f"source.files[{i}]", f"no file matches {pattern!r}{relative_to_cwd(pattern)}")
        for m in matches:
            path = Path(m)
            if path.suffix.lower() not in READERS:
                raise ConfigError(f"source.files[{i}]", f"{m}: unknown file type {path.suffix!r}",
                                  f"use one of {', '.join(sorted(READERS))}")
            found.append(path)
    kinds = {READERS[p.suffix.lower()] for p in found}
    if len(kinds) > 1:
        raise ConfigError("source.files", f"mixes file types ({', '.join(sorted(kinds))})")
    return found


def fingerprint(files: Sequence[Path]) -> dict[str, str]:
    """sha256 of each source file, so a run records exactly which data it read."""
    return {str(path): sha256_file(path) for path in files}


def _named_by_duckdb(columns: Sequence[str]) -> bool:
    """Whether these are the names DuckDB gives the columns of a CSV file it found no header in."""
    return all(re.fullmatch(r"column\d+", name) for name in columns)


def _odd_csv_row(path: Path) -> tuple[int, int, int, str] | None:
    """(line, fields, header fields, delimiter) for the first row of a CSV file whose number of
    fields is not its header's; line is 1-based, where the row starts, as an editor counts. The
    delimiter is a .tsv file's tab, else the one the header line holds most of (a tab-separated
    header may name a column "a, b")."""
    with open(path, encoding="utf-8", errors="replace", newline="") as src:
        head = src.readline()
        found = [d for d in ("\t", ",", ";", "|") if d in head]
        if not found:
            return None
        delimiter = "\t" if path.suffix.lower() == ".tsv" and "\t" in found else max(found, key=head.count)
        src.seek(0)
        rows = csv.reader(src, delimiter=delimiter)
        header = next(rows, [])
        end = rows.line_num
        for row in rows:
            start, end = end + 1, rows.line_num
            if row and len(row) != len(header):  # a blank line is no row, to DuckDB too
                return start, len(row), len(header), delimiter
    return None


def _fields_error(path: Path, line: int, fields: int, header: int, delimiter: str) -> QueryError:
    return QueryError(f"{path}:{line}: {fields} fields where the header has {header} ({delimiter!r}-separated)"
                      "\n  hint: give every row one field per header column; quote a field that holds "
                      f"{delimiter!r}")


def _bad_json_line(path: Path) -> tuple[int, str] | None:
    """(line, what is wrong) for the first line of a JSON-lines file that does not parse; line is
    1-based, blank lines counted, as an editor counts."""
    with open(path, "rb") as src:
        for number, line in enumerate(src, 1):
            if line.strip():
                try:
                    json.loads(line.rstrip(b"\r\n"))  # so a line cut short ends on its own line
                except json.JSONDecodeError as exc:
                    return number, f"{exc.msg.lower()} at column {exc.colno}"
                except UnicodeDecodeError as exc:
                    return number, f"not UTF-8 at byte {exc.start + 1}"
    return None


# A chunk of DuckDBSource.stream_lines that voids every chunk before it: the lines start again.
START_OVER: tuple[None, int] = (None, 0)


class _OutOfMemory(Exception):
    def __init__(self, error: duckdb.OutOfMemoryException, rows: int) -> None:
        super().__init__(str(error))
        self.error, self.rows = error, rows  # rows: how many were handed out before it


class _Retyped(Exception):
    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows  # how many were handed out before it


@dataclass
class DuckDBSource:
    """The source table as a DuckDB view over `source.files`."""

    con: duckdb.DuckDBPyConnection
    source: SourceConfig
    files: list[Path]
    own_spill: str | None = None  # a temporary spill folder to remove on close
    memory_limit: str = ""
    every_row: bool = False  # the view types the files' columns from every row (_retyped)

    @classmethod
    def open(cls, source: SourceConfig, settings: DuckDBConfig) -> DuckDBSource:
        files = source_files(source)
        try:
            con = duckdb.connect(config={"memory_limit": settings.memory_limit, "preserve_insertion_order": True})
        except duckdb.Error as exc:  # the one setting here DuckDB can refuse
            raise ConfigError("backend.duckdb.memory_limit", f"{settings.memory_limit!r}: {str(exc).splitlines()[0]}",
                              "a size such as 140MB or 2GB") from None
        if settings.threads:
            con.execute(f"SET threads = {int(settings.threads)}")
        # Spill files go to a folder of this query's own (DuckDB's default, ./.tmp, is shared by
        # every run started in the same directory, parallel sweep members included).
        spill = settings.temp_directory or tempfile.mkdtemp(prefix="gtrun-duckdb-")
        con.execute(f"SET temp_directory = {sql_string(spill)}")
        reader = READERS[files[0].suffix.lower()]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_name(source.database)}")
        self = cls(con, source, files, None if settings.temp_directory else spill, settings.memory_limit)
        try:
            self._create_view()
        except duckdb.Error as exc:
            self.close()  # its spill folder too
            raise self._file_error(exc) from None
        try:
            columns = self._describe()  # reads the files' headers now: a malformed file fails here, named
            if reader == "read_csv" and (len(columns) == 1 or _named_by_duckdb(columns)):
                self._check_fields()
        except BaseException:
            self.close()
            raise
        return self

    def _create_view(self) -> None:
        reader = READERS[self.files[0].suffix.lower()]
        paths = "[" + ", ".join(sql_string(str(p)) for p in self.files) + "]"
        # A 4 MB CSV buffer per thread (DuckDB's default is 16 x max_line_size, 32 MB) leaves the
        # memory limit to the sort; it still holds DuckDB's longest allowed line (2 MB).
        options = ", buffer_size = 4194304" if reader == "read_csv" else ""
        options += ", sample_size = -1" if self.every_row else ""
        self.con.execute(f"CREATE OR REPLACE VIEW {sql_name(self.source.database)}.{sql_name(self.source.table)} "
                         f"AS SELECT * FROM {reader}({paths}{options})")

    def _retyped(self, exc: duckdb.Error) -> bool:
        """Whether the query failed at a value of another type than DuckDB took its column for from the
        first rows (20,480) of a file (an "n/a" among numbers), and the view now types the columns from
        every row, so that the query can run again: the source has no setting for DuckDB's reader."""
        text = str(exc)
        if self.every_row or not ("auto-detected from the CSV file" in text or "JSON transform error" in text):
            return False
        named = [str(p) for p in self.files if str(p) in text]
        detail = next((x.strip() for x in text.splitlines() if x.startswith("Error when converting")),
                      text.splitlines()[0].rpartition(": ")[2] if "JSON transform error" in text else "")
        log.warning("%s: reading it again, its columns typed from every row (DuckDB typed them from the first "
                    "rows, and a later value is not of that type%s)", named[0] if named else ", ".join(map(str, self.files)),
                    f": {detail}" if detail else "")
        self.every_row = True
        self._create_view()
        return True

    def _check_fields(self) -> None:
        """DuckDB's sniffer reads a CSV file with a row of another number of fields than its header
        as one column named after the header line, or skips lines and names the columns column0,
        column1, ...: name the first such row instead."""
        for path in self.files:
            if (odd := _odd_csv_row(path)) is not None:
                raise _fields_error(path, *odd)

    def _describe(self) -> list[str]:
        try:
            cur = self.con.cursor()
            cur.execute(f"SELECT * FROM {sql_name(self.source.database)}.{sql_name(self.source.table)} LIMIT 0")
            return [d[0] for d in cur.description]
        except duckdb.Error as exc:
            raise self._file_error(exc) from None

    def _file_error(self, exc: duckdb.Error) -> QueryError:
        text = str(exc).strip()
        named = [p for p in self.files if str(p) in text]
        # DuckDB's line numbers are not an editor's: it counts CSV records, not lines (a quoted field
        # may hold a newline), and for a JSON line that does not parse it names the line after it,
        # blank lines not counted ("record/value 2" for the first). So the file is read again for the line.
        for path in named or self.files:
            if "Malformed JSON" in text and (path.suffix.lower() != ".json" or " in line " in text):
                if (bad := _bad_json_line(path)) is not None:
                    return QueryError(f"{path}:{bad[0]}: not JSON: {bad[1]}\n  hint: each line of a JSON-lines "
                                      f"file is one JSON object; fix or delete line {bad[0]}")
            elif "Expected Number of Columns" in text and (odd := _odd_csv_row(path)) is not None:
                return _fields_error(path, *odd)
        where = str(named[0]) if named else ", ".join(map(str, self.files))
        first = text.splitlines()[0]
        line = None if "Malformed JSON" in text else re.search(r"[Ll]ine:? (\d+)", text)
        return QueryError(f"{where}{':' + line.group(1) if line else ''}: cannot read "
                          f"{self.source.database}.{self.source.table}: {first}")

    def columns(self) -> list[str]:
        return self._describe()

    def _error(self, exc: duckdb.Error) -> Exception:
        """Translate DuckDB's error into one that names the config key at fault."""
        text = str(exc).strip()
        missing = (re.search(r'Referenced column "?([^"\s]+)"? not found', text)
                   or re.search(r'Column "([^"]+)" referenced that exists in the SELECT clause', text))
        if missing:
            name = missing.group(1)
            key = next((k for k, cols in referenced_columns(self.source).items() if name in cols), "source")
            columns = self.columns()
            if READERS[self.files[0].suffix.lower()] == "read_csv" and _named_by_duckdb(columns):
                return QueryError(f"{self.files[0]}:1: no header row: {key} asks for column {name!r}, and DuckDB "
                                  f"read this line as data, naming the {len(columns)} columns {columns[0]} to "
                                  f"{columns[-1]}\n  hint: start the file with a line of its column names, "
                                  f"{name!r} among them")
            table = f"{self.source.database}.{self.source.table}"
            return ConfigError(key, f"column {name!r} is not in {table}", f"its columns: {', '.join(columns)}")
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryError(f"source: DuckDB ran out of memory under backend.duckdb.memory_limit="
                              f"{self.memory_limit}\n  hint: raise it (e.g. backend.duckdb.memory_limit=512MB) "
                              "or set backend.duckdb.threads=1")
        converted = re.search(r"Could not convert string '([^']*)'", text)
        param = next((k for k, v in self.source.params.items() if converted and isinstance(v, str)
                      and v == converted.group(1)), None) if isinstance(exc, duckdb.ConversionException) else None
        if param is not None:  # `source.params.threshold=abc` met a number column: the value, not the file
            return ConfigError(f"source.params.{param}", f"{self.source.params[param]!r} is not a value of the "
                               f"type the query compares it with: {text.splitlines()[0]}")
        if isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)):
            return self._file_error(exc)
        if isinstance(exc, duckdb.CatalogException) and self.source.sql and text.startswith("Catalog Error: Table with name"):
            table = f"{self.source.database}.{self.source.table}"  # source.sql's FROM another (or a bare) name
            return ConfigError("source.sql", text.splitlines()[0], f"source.files are the table {table} "
                               f"(source.database, source.table): write FROM {table}")
        return QueryError(f"source: the query failed: {text.splitlines()[0]}")

    def execute(self, query: Query) -> duckdb.DuckDBPyConnection:
        cur = self.con.cursor()
        try:
            cur.execute(query.sql, list(query.params))
        except duckdb.Error as exc:
            if self._retyped(exc):
                return self.execute(query)
            raise self._error(exc) from None
        return cur

    def count(self, query: Query) -> int:
        (n,) = self.execute(query).fetchone() or (0,)
        return int(n)

    def rows(self, query: Query, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
        """The first `limit` rows as dicts, and the column names."""
        cur = self.execute(query)
        names = [d[0] for d in cur.description]
        return names, [dict(zip(names, r, strict=False)) for r in cur.fetchmany(limit)]

    def output_fields(self, query: Query) -> list[str]:
        """The query's output columns (runs it with LIMIT 0)."""
        wrapped = Query(f"SELECT * FROM ({query.sql}) AS q LIMIT 0", query.params,
                        query.param_names, None)
        return [d[0] for d in self.execute(wrapped).description]

    def stream_lines(self, lines_query: Query, batch_rows: int = 2048) -> Iterator[tuple[bytes | None, int]]:
        """The manifest as (bytes, rows) chunks of `batch_rows` lines each.

        `lines_query` (`json_lines_query`) yields each row's line as bytes, or PROBLEM and what is
        wrong with the row. A chunk is one join of a batch's lines; no JSON passes through Python
        and Arrow is not needed. Batches of one DuckDB vector (2,048 rows) and no pyarrow keep the peak
        low: 8,192-row batches cost ~10 MB more at 10M rows, at the same speed.

        DuckDB's external sort needs more memory on several threads than on one: when it runs out,
        the query is run again on one thread. Before the first row nothing was written; after it,
        START_OVER tells the consumer that the lines start again from the first.
        """
        try:
            yield from self._stream_typed(lines_query, batch_rows)
        except _OutOfMemory as oom:
            threads = self.threads()
            if threads <= 1:
                raise self._error(oom.error) from None
            when = f"after {oom.rows:,} rows (the manifest starts over)" if oom.rows else "before the first row"
            log.warning("DuckDB ran out of memory under %s on %d threads %s; running the query again on "
                        "1 thread", self.memory_limit, threads, when)
            self.con.execute("SET threads = 1")
            if oom.rows:
                yield START_OVER
            try:
                yield from self._stream_typed(lines_query, batch_rows)
            except _OutOfMemory as again:
                raise self._error(again.error) from None

    def _stream_typed(self, lines_query: Query, batch_rows: int) -> Iterator[tuple[bytes | None, int]]:
        try:
            yield from self._stream(lines_query, batch_rows)
        except _Retyped as retyped:  # the columns are typed from every row now: the lines start over
            if retyped.rows:
                yield START_OVER
            yield from self._stream(lines_query, batch_rows)

    def _stream(self, lines_query: Query, batch_rows: int) -> Iterator[tuple[bytes, int]]:
        try:
            yield from self._stream_rows(lines_query, batch_rows)
        except RuntimeError as exc:  # DuckDB takes Ctrl+C while it runs the query, and says so this way
            if "interrupted" not in str(exc).lower():
                raise
            raise KeyboardInterrupt from None

    def _stream_rows(self, lines_query: Query, batch_rows: int) -> Iterator[tuple[bytes, int]]:
        start, cur = 0, self.con.cursor()
        try:
            cur.execute(lines_query.sql, list(lines_query.params))  # runs the sort, if any
            while rows := cur.fetchmany(batch_rows):
                lines = [line for (line,) in rows]
                lines.append(b"")
                chunk = b"\n".join(lines)
                if PROBLEM in chunk:
                    i, text = next((i, x) for i, x in enumerate(lines) if x.startswith(PROBLEM))
                    raise problem_error(text, start + i + 1)
                yield chunk, len(rows)
                start += len(rows)
        except duckdb.OutOfMemoryException as exc:
            raise _OutOfMemory(exc, start) from None
        except duckdb.Error as exc:
            if self._retyped(exc):
                raise _Retyped(start) from None
            raise self._error(exc) from None
        finally:
            cur.close()

    def threads(self) -> int:
        (n,) = self.con.execute("SELECT current_setting('threads')").fetchone() or (1,)
        return int(n)

    def close(self) -> None:
        self.con.close()
        if self.own_spill:
            shutil.rmtree(self.own_spill, ignore_errors=True)
