"""Input-manifest lines: one JSON object per query row, `source` or `source-ref` plus extra fields."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from runner.build.quoting import json_pointer, sql_name, sql_string
from runner.build.sql import OBJECT_FIELDS, Query
from runner.errors import ManifestError

MAX_LINE_CHARS = 100_000  # Ground Truth's limit per manifest object (input-data-limits)
PROBLEM = b"\0"  # starts a `json_lines_query` row that is not a line but what is wrong with it
ROW_HINT = "leave the row out of the query (source.where, or source.sql when it is set), or fix it in the data"
# DuckDB's to_json and Python's json.dumps write a float NaN or infinity as NaN, Infinity or -Infinity,
# which JSON does not have: Ground Truth (and collect) cannot read the line. This finds one outside
# strings (a string is consumed whole, so the token can only start where a value does).
NON_FINITE_PROBLEM = (": NaN or Infinity, which JSON cannot hold: make it NULL in the query "
                      "(e.g. CASE WHEN isfinite(x) THEN x END)")
NON_FINITE = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*?-?(?:NaN|Infinity)'


def object_field(fields: Sequence[str]) -> str:
    """The field that carries the data object: `source` (text) or `source-ref` (an s3:// URI)."""
    return next(f for f in OBJECT_FIELDS if f in fields)


def id_field(fields: Sequence[str]) -> str | None:
    """The field that names a row in errors: the first `id`, `..._id` or `...Id` (tweet_id, tweetId), if any.

    >>> id_field(["source", "entity", "tweet_id"]), id_field(["source", "tweetId"]), id_field(["source", "paid"])
    ('tweet_id', 'tweetId', None)
    """
    return next((f for f in fields if f.lower() == "id" or f.lower().endswith(("_id", "-id")) or f.endswith("Id")),
                None)


def row_error(row_number: int, problem: str, row: Mapping[str, Any] | None = None) -> ManifestError:
    """What is wrong with the query's `row_number`th row, named by its id field too when it has one.

    >>> print(row_error(5, "source is empty", {"source": "", "tweet_id": 7}))
    row 5 (tweet_id=7): source is empty
      hint: leave the row out of the query (source.where, or source.sql when it is set), or fix it in the data
    """
    name = id_field(list(row)) if row is not None else None
    where = f"row {row_number}" + (f" ({name}={row[name]!r})" if row is not None and name is not None else "")
    return ManifestError(f"{where}: {problem}\n  hint: {ROW_HINT}")


def problem_error(text: bytes, row_number: int) -> ManifestError:
    """The error a `json_lines_query` row that starts with PROBLEM stands for."""
    parts = text[len(PROBLEM):].decode("utf-8").split("\0")
    row = {parts[0]: json.loads(parts[1])} if len(parts) == 3 else None  # its id field and value
    return row_error(row_number, parts[-1], row)


def manifest_line(row: Mapping[str, Any], *, row_number: int = 0) -> str:
    """One input-manifest line, without the newline, for one query row.

    >>> manifest_line({"tweet_id": 7, "source": "meh\\nok"})
    '{"source":"meh\\\\nok","tweet_id":7}'
    """
    field = object_field(list(row))
    value = row[field]
    if value is None or value == "":
        raise row_error(row_number, f"{field} is empty ({dict(row)!r})", row)
    if field == "source-ref" and not str(value).startswith("s3://"):
        raise row_error(row_number, f"source-ref {value!r} is not an s3:// URI", row)
    # json.dumps escapes "\n", so one row is always one line; keys sorted for stable diffs.
    try:
        line = json.dumps(dict(row), ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          default=str, allow_nan=False)
    except ValueError:  # a float NaN or infinity
        raise row_error(row_number, non_finite_problem([k for k in sorted(row) if _non_finite(row[k])]),
                        row) from None
    check_line(line, row_number, row)
    return line


def non_finite_problem(fields: Sequence[str]) -> str:
    """What is wrong with a row whose `fields` hold a float NaN or infinity."""
    return ", ".join(fields) + NON_FINITE_PROBLEM


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def check_line(line: str, row_number: int, row: Mapping[str, Any] | None = None) -> None:
    """Ground Truth's size limit for one manifest object (`row`: the query row, to name its id)."""
    if len(line) > MAX_LINE_CHARS:
        raise row_error(row_number, f"the manifest line has {len(line)} characters; "
                                    f"Ground Truth allows {MAX_LINE_CHARS}", row)


def json_lines_query(query: Query, fields: Sequence[str]) -> Query:
    """DuckDB SQL that turns each row of `query` into its manifest line, as UTF-8 bytes (a BLOB).

    The JSON is built inside DuckDB (same bytes as `manifest_line` for the types a table holds):
    a row's values never become Python objects, its line reaches Python as one bytes object. A bad
    row (an empty data object, a line over Ground Truth's limit, both checked in DuckDB too) gives
    PROBLEM (a NUL byte, which JSON text never holds unescaped) followed by what is wrong with it,
    after the row's id field and its value as JSON, each ended by a NUL, when it has one (`problem_error`).
    """
    field = object_field(fields)
    pack = ", ".join(f"{sql_name(f)} := q.{sql_name(f)}" for f in sorted(fields))
    obj = f"CAST(q.{sql_name(field)} AS VARCHAR)"
    empty = f"{obj} IS NULL OR {obj} = ''"
    if field == "source-ref":
        empty += f" OR NOT starts_with({obj}, 's3://')"
    ident = id_field(fields)
    row_id = f"q.{sql_name(ident)}" if ident else "NULL"
    inner = (f"SELECT to_json(struct_pack({pack})) AS line, ({empty}) AS empty, {row_id} AS row_id "
             f"FROM ({query.sql}) AS q")
    # the id as JSON for a bad row only: DuckDB works a CASE branch out for the rows that take it
    problem = "chr(0) || "
    if ident:
        problem += f"{sql_string(ident)} || chr(0) || coalesce(CAST(to_json(row_id) AS VARCHAR), 'null') || chr(0) || "
    # strlen (bytes) is cheap and bounds length (characters) from above.
    what = "is empty or not an s3:// URI" if field == "source-ref" else "is empty"
    # the fields that hold NaN or Infinity: each field's value read back out of the line
    names = ", ".join(f"CASE WHEN regexp_matches(CAST(json_extract(line, {sql_string(json_pointer(f))}) AS VARCHAR), "
                      f"{sql_string(NON_FINITE)}) THEN {sql_string(f)} END" for f in sorted(fields))
    line = (f"CASE WHEN empty THEN {problem}'source.columns.{field}: the data object {what}' "
            f"WHEN strlen(line) > {MAX_LINE_CHARS} AND length(line) > {MAX_LINE_CHARS} THEN {problem}"
            f"'the manifest line has ' || length(line) || ' characters; Ground Truth allows {MAX_LINE_CHARS}' "
            # contains() first: the regular expression only reads the few lines that have the word
            "WHEN (contains(line, 'NaN') OR contains(line, 'Infinity')) AND "
            f"regexp_matches(line, {sql_string(NON_FINITE)}) THEN {problem}"
            f"concat_ws(', ', {names}) || {sql_string(NON_FINITE_PROBLEM)} "
            "ELSE CAST(line AS VARCHAR) END")
    sql = f"SELECT encode({line}) AS line FROM ({inner}) AS j"
    return Query(sql=sql, params=query.params, param_names=query.param_names, fields=("line",))
