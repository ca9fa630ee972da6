"""Running the source query on Athena (the aws backend), and its result CSV -> manifest lines.

One query = StartQueryExecution (the `?` values in ExecutionParameters, never pasted into the SQL),
GetQueryExecution polled with backoff until SUCCEEDED / FAILED / CANCELLED, one GetQueryResults
(MaxResults=1) for the column types, then the result file `<OutputLocation>/<QueryExecutionId>.csv`
streamed from S3 with smart_open and parsed here; each row becomes its manifest line with
`runner.build.manifest.manifest_line`, the same builder as everywhere else.

Why the CSV, and not UNLOAD (Parquet/JSON files written by Athena):
- Exactness. The CSV plus ColumnInfo carries everything a manifest line needs: SQL NULL (an unquoted
  empty field) apart from '' (`""`), integers as integers, decimals with their exact digits.
  UNLOAD writes Parquet parts with no global order (the manifest must follow ORDER BY, so golden
  files and reruns diff cleanly), needs an empty target prefix, leaves orphan files when it fails,
  needs aliases for every column, and adds objects to clean up; its `format='JSON'` parts are
  gzip-compressed and serialized by Athena, not byte-identical to the local backend's lines.
- Speed is not the bottleneck. bench/athena_manifest.py, 1M rows of 5 columns (text with quotes,
  commas, newlines, tabs, unicode; 1/6 NULL and 1/6 '' in one column, 1/3 NULL in another), on a
  shared 2-core machine (so per CPU second): this CSV path makes 110k manifest lines per CPU second
  from local disk, 95k from moto's S3, at a peak RSS of 118 MB (200k rows) -> 128 MB (1M rows),
  flat, about 55 MB of it imports. The same rows as Parquet -- what UNLOAD would hand over -- still
  need `manifest_line` per row: 162k lines per CPU second, at 209 -> 266 MB. UNLOAD would save
  ~3 CPU seconds per million rows, ~0.3 s for a full Ground Truth job (100,000 objects, the
  default quota), against an Athena query that takes seconds to start and the files it leaves.
  (pandas read_csv + to_json: 294k rows per CPU second, but 1.6 GB at 1M rows, and it writes ''
  as null: 1/6 of the lines differ.)

Python's csv module cannot tell `,,` (NULL) from `,"",` (''). Athena quotes every non-NULL value,
so `result_records` lets csv (C speed) split every record and re-reads, with one regular expression,
only the raw text of records that have an empty value: there, an unquoted empty field is NULL.
(Python 3.12's csv.QUOTE_NOTNULL does this in C; gtrun still supports 3.10.)
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

import botocore.exceptions
import smart_open

from runner.build.manifest import check_line, manifest_line
from runner.build.sql import Query, check_fields
from runner.errors import ConfigError, QueryError
from runner.io.s3 import describe, error_code
from runner.schema import BackendConfig, SourceConfig

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536
MAX_POLL_S = 5.0
MAX_PARAMETER_CHARS = 1024  # StartQueryExecution: each ExecutionParameters string is 1-1024 characters
AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)


# -- parameters ---------------------------------------------------------------------------------
def parameter_literal(value: Any, key: str) -> str:
    """One value as the SQL literal Athena puts in place of its `?`.

    >>> [parameter_literal(v, "k") for v in ("it's", 3, 0.8, True, None, dt.date(2026, 1, 2))]
    ["'it''s'", '3', '0.8', 'true', 'NULL', "DATE '2026-01-02'"]
    """
    if value is None:
        # Athena binds each ExecutionParameters string as a SQL literal or expression (its docs pass
        # CAST('2014-07-05' AS DATE) as a value, as in EXECUTE ... USING), so NULL is a valid value:
        # `(? IS NULL OR entity = ?)` keeps working as it does in DuckDB.
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(key, f"{value!r} has no SQL literal", "use a finite number")
        return repr(value)  # shortest round-trip text: 0.8, 1e-05 (a DOUBLE literal)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ConfigError(key, f"{value!r} has no SQL literal", "use a finite number")
        return format(value, "f")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    raise ConfigError(key, f"{value!r} ({type(value).__name__}) cannot be a query parameter",
                      "use a string, number, boolean, date or null; one value per :name")


def execution_parameters(values: Sequence[Any], names: Sequence[str] = ()) -> list[str]:
    """StartQueryExecution's ExecutionParameters for the `?` of a query, in order.

    Athena inserts each string as a SQL literal: strings quoted with ' (a ' doubled), numbers as
    they are, booleans true/false, dates DATE '...', None NULL.
    """
    out = []
    for i, value in enumerate(values):
        key = f"source.params.{names[i]}" if i < len(names) else f"source.params[{i}]"
        text = parameter_literal(value, key)
        if len(text) > MAX_PARAMETER_CHARS:
            raise ConfigError(key, f"is {len(text)} characters as a SQL literal; Athena takes at most "
                              f"{MAX_PARAMETER_CHARS} per parameter")
        out.append(text)
    return out


# -- the result CSV -----------------------------------------------------------------------------
# One field of Athena's CSV: a quoted value (embedded " doubled) or nothing (NULL), then its end.
_FIELD = re.compile(r'(?:"([^"]*(?:""[^"]*)*)")?(,|\r\n|\n|\r|\Z)')


def _split_record(raw: str, line: int) -> list[str | None]:
    """One record's raw text -> its values, None where the field is unquoted and empty."""
    out: list[str | None] = []
    pos = 0
    while True:
        m = _FIELD.match(raw, pos)
        if m is None:
            raise QueryError(f"Athena result line {line}: malformed CSV near {raw[pos:pos + 40]!r}")
        value = m.group(1)
        out.append(None if value is None else value.replace('""', '"'))
        if m.group(2) != ",":
            if m.end() != len(raw):
                rest = raw[m.end():m.end() + 40]
                raise QueryError(f"Athena result line {line}: malformed CSV near {rest!r}")
            return out
        pos = m.end()


def result_records(lines: Iterable[str]) -> Iterator[list[str | None]]:
    """Records of Athena's result CSV (header included): a SQL NULL is None, an empty string ''.

    `lines` must keep their line endings (a file opened with newline=""). csv splits every record;
    the raw lines it consumed are kept, and a record with an empty value is re-read from them
    (Athena quotes every value that is not NULL: an unquoted empty field is NULL).
    """
    raw: list[str] = []

    def tap() -> Iterator[str]:
        for line in lines:
            raw.append(line)
            yield line

    reader = csv.reader(tap(), strict=True)
    try:
        for row in reader:
            record: list[str | None] = list(row)
            if not row or "" in row:  # a single-column NULL is an empty line: csv gives []
                record = _split_record("".join(raw), reader.line_num)
                if row and len(record) != len(row):
                    raise QueryError(f"Athena result line {reader.line_num}: {len(row)} fields for csv, "
                                     f"{len(record)} for gtrun's reader")
            raw.clear()
            yield record
    except csv.Error as exc:
        raise QueryError(f"Athena result line {reader.line_num}: malformed CSV: {exc}") from None


@contextlib.contextmanager
def open_result(uri: str, s3_client: Any = None) -> Iterator[TextIO]:
    """The result file as text lines with their endings kept (s3:// through the client, or a path)."""
    params = {"client": s3_client} if s3_client is not None and uri.startswith("s3://") else {}
    try:
        binary = smart_open.open(uri, "rb", compression="disable", transport_params=params)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            raise QueryError(f"the Athena result {uri} does not exist") from None
        if isinstance(exc, (*AWS_ERRORS, ValueError, OSError)):
            raise QueryError(f"cannot read the Athena result {uri}: {describe(exc)}") from exc
        raise
    with binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
        yield text


# -- Athena types -> Python values ----------------------------------------------------------------
INT_TYPES = {"tinyint", "smallint", "integer", "int", "bigint"}
FLOAT_TYPES = {"real", "float", "double"}
NESTED_TYPES = {"array", "map", "row", "struct"}
_DECIMAL_TEXT = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
MAX_DOUBLE_DECIMAL = 15  # DuckDB's to_json writes decimal(<=15, s) like a double, wider ones with their scale


_BOOLEANS = {"true": True, "false": False}


def _bool(text: str) -> bool:
    try:
        return _BOOLEANS[text]
    except KeyError:
        raise ValueError(f"{text!r} is not a boolean") from None


def decimal_json(text: str, precision: int | None = None) -> str:
    """A decimal's text as a JSON number with its exact digits, written as DuckDB's to_json writes
    the same column (so both backends give the same bytes): up to 15 digits of precision, trailing
    zeros dropped but one digit kept after the point; wider, the digits of its scale as they are.

    >>> [decimal_json(t, 10) for t in ("1.50", "-0.50", "100", "007.000")]
    ['1.5', '-0.5', '100.0', '7.0']
    >>> [decimal_json(t, 38) for t in ("1.50", "5", "12345678901234567890123456.78")]
    ['1.50', '5', '12345678901234567890123456.78']
    """
    m = _DECIMAL_TEXT.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a decimal")
    sign, whole, frac = m.groups()
    whole = whole.lstrip("0") or "0"
    if precision is not None and precision > MAX_DOUBLE_DECIMAL:
        return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"
    return f"{sign}{whole}.{(frac or '').rstrip('0') or '0'}"


class _Number:
    """A JSON number kept as text. manifest_line's json.dumps writes it via str() as its column's
    quoted token, which is then replaced by the number: no float rounding of decimal(38, x) values."""

    __slots__ = ("text", "token")

    def __init__(self, text: str, token: str) -> None:
        self.text = text
        self.token = token

    def __str__(self) -> str:
        return self.token


@dataclass(frozen=True)
class Column:
    """One result column: its name (Athena lower-cases them), Athena type and precision (ColumnInfo)."""

    name: str
    type: str
    precision: int | None = None

    @property
    def base(self) -> str:
        return self.type.lower().split("(", 1)[0].strip()

    @property
    def digits(self) -> int | None:
        """A decimal's precision: ColumnInfo.Precision, else the `decimal(p, s)` in its type."""
        if self.precision:
            return self.precision
        m = re.search(r"\((\d+)", self.type)
        return int(m.group(1)) if m else None


def _converter(column: Column, key: str, token: str | None) -> Callable[[str], Any] | None:
    # `token`: decimals become _Number(text, token) (for manifest lines); None: Decimal (for rows).
    """text -> value for one column; None when the text is the value (varchar, date, ...)."""
    base = column.base
    if base in INT_TYPES:
        return int
    if base in FLOAT_TYPES:
        return float
    if base == "boolean":
        return _bool
    if base == "decimal":
        if token is None:
            return Decimal
        digits = column.digits
        return lambda text: _Number(decimal_json(text, digits), token)
    if base == "json":
        return json.loads
    if base in NESTED_TYPES or base == "varbinary":
        hint = (f"convert it in the SQL: CAST({column.name} AS JSON)" if base != "varbinary"
                else f"convert it in the SQL: to_base64({column.name})")
        raise ConfigError(key, f"column {column.name!r} is an Athena {column.type}, which a manifest "
                          "line cannot hold as it comes", hint)
    return None  # varchar, char, date, timestamp and other types Athena renders as text


def column_key(source: SourceConfig, field: str) -> str:
    """The config key that makes the output column `field`."""
    if not source.sql and field in source.columns:
        return f"source.columns.{field}"
    return "source.sql" if source.sql else "source.columns"


def manifest_batches(records: Iterator[list[str | None]], columns: Sequence[Column], fields: Sequence[str],
                     source: SourceConfig, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[bytes, int]]:
    """Manifest lines (JSON + "\\n", UTF-8) for the records after the header, as (bytes, rows) batches.

    `fields` name the values (Athena lower-cases column names: the config's spelling wins).
    """
    # One token per column, random per stream: a value can hold it only by a 2**-64 chance.
    nonce = secrets.token_hex(8)
    converters = [(i, fn) for i, fn in ((i, _converter(c, column_key(source, fields[i]),
                                                       f"\ue000gtrun-number-{nonce}-{i}\ue000"))
                                        for i, c in enumerate(columns)) if fn is not None]
    numbers = any(c.base == "decimal" for c in columns)
    marker = f"\ue000gtrun-number-{nonce}-"
    names = list(fields)
    width = len(names)
    lines: list[str] = []
    row_number = 0
    for record in records:
        row_number += 1
        if len(record) != width:
            raise QueryError(f"Athena result row {row_number}: {len(record)} values for {width} columns")
        for i, fn in converters:
            text = record[i]
            if text is not None:
                try:
                    record[i] = fn(text)
                except ValueError as exc:
                    raise QueryError(f"Athena result row {row_number}: column {names[i]!r} "
                                     f"({columns[i].type}): {exc}") from None
        line = manifest_line(dict(zip(names, record, strict=True)), row_number=row_number)
        if numbers and marker in line:
            for value in record:
                if isinstance(value, _Number):
                    line = line.replace(f'"{value.token}"', value.text, 1)
            check_line(line, row_number, dict(zip(names, record, strict=True)))
        lines.append(line)
        if len(lines) >= batch_rows:
            yield ("\n".join(lines) + "\n").encode("utf-8"), len(lines)
            lines = []
    if lines:
        yield ("\n".join(lines) + "\n").encode("utf-8"), len(lines)


def _values(records: Iterator[list[str | None]], columns: Sequence[Column], source: SourceConfig,
            names: Sequence[str]) -> Iterator[dict[str, Any]]:
    converters = [(i, fn) for i, fn in ((i, _converter(c, column_key(source, names[i]), None))
                                        for i, c in enumerate(columns)) if fn is not None]
    for row_number, record in enumerate(records, 1):
        if len(record) != len(names):
            raise QueryError(f"Athena result row {row_number}: {len(record)} values for {len(names)} columns")
        for i, fn in converters:
            text = record[i]
            if text is not None:
                try:
                    record[i] = fn(text)
                except (ValueError, ArithmeticError) as exc:
                    raise QueryError(f"Athena result row {row_number}: column {names[i]!r} "
                                     f"({columns[i].type}): {exc}") from None
        yield dict(zip(names, record, strict=True))


# -- the source -----------------------------------------------------------------------------------
class AthenaSource:
    """The source table through Athena: what DuckDBSource offers the pipeline, for the aws backend.

    Every method runs one Athena query (billed by the data it scans). `query_ids` lists them.
    """

    def __init__(self, athena_client: Any, s3_client: Any, backend: BackendConfig,
                 source: SourceConfig) -> None:
        self.athena = athena_client
        self.s3 = s3_client
        self.backend = backend
        self.source = source
        self.query_ids: list[str] = []
        self._running: set[str] = set()

    # -- one query --------------------------------------------------------------------------------
    def output_location(self) -> str:
        a = self.backend.athena
        if a.output_location:
            return a.output_location
        parts = [f"s3://{self.backend.bucket}", self.backend.prefix.strip("/"), "athena"]
        return "/".join(p for p in parts if p) + "/"

    def start(self, query: Query) -> str:
        """StartQueryExecution; the query id."""
        request: dict[str, Any] = {
            "QueryString": query.sql,
            "QueryExecutionContext": {"Database": self.backend.athena.database or self.source.database},
            "WorkGroup": self.backend.athena.workgroup,
            "ResultConfiguration": {"OutputLocation": self.output_location()},
        }
        if query.params:  # at least one value, or none at all (the API's list minimum is 1)
            request["ExecutionParameters"] = execution_parameters(query.params, query.param_names)
        # ClientRequestToken is an idempotency token in botocore's model, filled once per call: a
        # retry after a lost response gets the same query back, not a second (billed) one.
        try:
            query_id: str = self.athena.start_query_execution(**request)["QueryExecutionId"]
        except AWS_ERRORS as exc:
            raise QueryError(f"source: Athena did not start the query (workgroup "
                             f"{self.backend.athena.workgroup!r}): {describe(exc)}") from exc
        self.query_ids.append(query_id)
        log.info("athena query %s started", query_id)
        return query_id

    def _get(self, query_id: str) -> dict[str, Any]:
        try:
            answer = self.athena.get_query_execution(QueryExecutionId=query_id)
        except AWS_ERRORS as exc:
            raise QueryError(f"source: Athena query {query_id}: cannot get its state: "
                             f"{describe(exc)}") from exc
        execution: dict[str, Any] = answer["QueryExecution"]
        return execution

    def wait(self, query_id: str) -> dict[str, Any]:
        """Poll GetQueryExecution (backoff from athena.poll_s, doubling, at most 5 s) until it ends."""
        settings = self.backend.athena
        deadline = time.monotonic() + settings.timeout_s
        delay = max(settings.poll_s, 0.001)
        self._running.add(query_id)
        try:
            while True:
                execution = self._get(query_id)
                status = execution.get("Status", {})
                state = status.get("State")
                if state == "SUCCEEDED":
                    self._running.discard(query_id)
                    return execution
                if state in ("FAILED", "CANCELLED"):
                    self._running.discard(query_id)
                    raise QueryError(_failure(query_id, state, status))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueryError(f"source: Athena query {query_id} is still {state} after "
                                     f"{settings.timeout_s:g} s (backend.athena.timeout_s); gtrun "
                                     "stopped it")
                time.sleep(min(delay, left))
                delay = min(delay * 2, MAX_POLL_S)
        finally:
            if query_id in self._running:  # timed out, interrupted, or could not be polled
                self.stop(query_id)

    def stop(self, query_id: str) -> None:
        """StopQueryExecution, best effort (the query may have ended meanwhile)."""
        self._running.discard(query_id)
        try:
            self.athena.stop_query_execution(QueryExecutionId=query_id)
            log.info("athena query %s stopped", query_id)
        except AWS_ERRORS as exc:
            log.warning("athena query %s: could not stop it: %s", query_id, describe(exc))

    def columns(self, query_id: str) -> list[Column]:
        """The result's columns, from one GetQueryResults page of one row (ColumnInfo)."""
        try:
            page = self.athena.get_query_results(QueryExecutionId=query_id, MaxResults=1)
        except AWS_ERRORS as exc:
            raise QueryError(f"source: Athena query {query_id}: cannot read its columns: "
                             f"{describe(exc)}") from exc
        info = page.get("ResultSet", {}).get("ResultSetMetadata", {}).get("ColumnInfo", [])
        return [Column(c["Name"], c.get("Type", "varchar"), c.get("Precision")) for c in info]

    def run(self, query: Query) -> tuple[str, str, list[Column]]:
        """Run `query` to the end: (query id, result CSV URI, columns)."""
        query_id = self.start(query)
        execution = self.wait(query_id)
        location = (execution.get("ResultConfiguration") or {}).get("OutputLocation")
        if not location:
            raise QueryError(f"source: Athena query {query_id} has no result file in S3 (a workgroup "
                             "with managed query results?); use a workgroup that writes its results "
                             "to S3 (backend.athena.workgroup, backend.athena.output_location)")
        return query_id, location, self.columns(query_id)

    @contextlib.contextmanager
    def _records(self, query: Query) -> Iterator[tuple[list[Column], Iterator[list[str | None]]]]:
        """Run the query; its columns and its records after the (checked) header."""
        query_id, location, columns = self.run(query)
        with open_result(location, self.s3) as text:
            records = result_records(text)
            header = next(records, None)
            names = [c.name for c in columns]
            if header is None or [str(h).lower() for h in header] != [n.lower() for n in names]:
                raise QueryError(f"source: Athena query {query_id}: the result file {location} starts "
                                 f"with {header!r}, not the columns {names!r}")
            yield columns, records

    # -- what the pipeline calls ------------------------------------------------------------------
    def count(self, query: Query) -> int:
        """The one integer a `count_query` returns."""
        with self._records(query) as (_, records):
            first = next(records, None)
        value = first[0] if first else None
        try:
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise QueryError(f"source: the count query returned {first!r}, not a count") from None

    def rows(self, query: Query, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
        """The first `limit` rows as dicts (Athena types -> Python values), and the column names.

        Athena runs the whole query (and bills its scan); only the start of the result is read.
        """
        with self._records(query) as (columns, records):
            names = [c.name for c in columns]
            found: list[dict[str, Any]] = []
            for row in _values(records, columns, self.source, names):
                if len(found) >= limit:
                    break
                found.append(row)
        return names, found

    def output_fields(self, query: Query) -> list[str]:
        """The query's output columns, from a LIMIT 0 run (lower-case, as Athena names them)."""
        wrapped = Query(f"SELECT * FROM ({query.sql}) AS q LIMIT 0", query.params, query.param_names, None)
        _, _, columns = self.run(wrapped)
        return [c.name for c in columns]

    def stream_lines(self, query: Query, fields: Sequence[str] | None = None,
                     batch_rows: int = BATCH_ROWS) -> Iterator[tuple[bytes, int]]:
        """The manifest for `query` as (bytes, rows) chunks of ~`batch_rows` lines.

        Unlike DuckDBSource.stream_lines, which takes `json_lines_query(query, fields)`, this takes
        the plain SELECT (`select_query(source, "athena")`) and the manifest fields: Athena runs the
        SELECT, and each row of its result CSV becomes a line through `manifest_line`. `fields`
        default to `query.fields`, then to the result's column names. The pipeline calls
        `stream_manifest(src.stream_lines(query, fields), sinks, progress)` (AwsBackend.lines).
        Nothing runs until the first chunk is asked for.
        """
        fields = list(fields if fields is not None else query.fields or ())
        with self._records(query) as (columns, records):
            if not fields:
                fields = [c.name for c in columns]
                check_fields(fields, "source.sql")
            if [f.lower() for f in fields] != [c.name.lower() for c in columns]:
                raise QueryError(f"source: Athena returned the columns {[c.name for c in columns]!r}, "
                                 f"not the manifest fields {list(fields)!r}")
            yield from manifest_batches(records, columns, fields, self.source, batch_rows)

    def close(self) -> None:
        """Stop any query still running (an interrupted wait)."""
        for query_id in list(self._running):
            self.stop(query_id)


def _failure(query_id: str, state: str, status: dict[str, Any]) -> str:
    """One message for a FAILED / CANCELLED query: Athena's reason, its error message, the query id."""
    reason = (status.get("StateChangeReason") or "").strip()
    error = status.get("AthenaError") or {}
    message = (error.get("ErrorMessage") or "").strip()
    parts = [p for p in (reason, message if message and message not in reason else "") if p]
    detail = "; ".join(parts) or "no reason given"
    kind = f" (error type {error['ErrorType']})" if "ErrorType" in error else ""
    return f"source: Athena query {query_id} {state.lower()}: {detail}{kind}"


__all__ = ["AthenaSource", "Column", "execution_parameters", "parameter_literal", "result_records",
           "open_result", "manifest_batches", "decimal_json", "BATCH_ROWS"]
