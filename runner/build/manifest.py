"""Input-manifest lines: one JSON object per query row, `source` or `source-ref` plus extra fields."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.build.quoting import sql_name
from runner.build.sql import OBJECT_FIELDS, Query
from runner.errors import ManifestError

MAX_LINE_CHARS = 100_000  # Ground Truth's limit per manifest object (input-data-limits)
PROBLEM = b"\0"  # starts a `json_lines_query` row that is not a line but what is wrong with it


def object_field(fields: Sequence[str]) -> str:
    """The field that carries the data object: `source` (text) or `source-ref` (an s3:// URI)."""
    return next(f for f in OBJECT_FIELDS if f in fields)


def manifest_line(row: Mapping[str, Any], *, row_number: int = 0) -> str:
    """One input-manifest line, without the newline, for one query row.

    >>> manifest_line({"tweet_id": 7, "source": "meh\\nok"})
    '{"source":"meh\\\\nok","tweet_id":7}'
    """
    field = object_field(list(row))
    value = row[field]
    if value is None or value == "":
        raise ManifestError(f"row {row_number}: {field} is empty ({dict(row)!r})")
    if field == "source-ref" and not str(value).startswith("s3://"):
        raise ManifestError(f"row {row_number}: source-ref {value!r} is not an s3:// URI")
    # json.dumps escapes "\n", so one row is always one line; keys sorted for stable diffs.
    line = json.dumps(dict(row), ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      default=str)
    check_line(line, row_number)
    return line


def check_line(line: str, row_number: int) -> None:
    """Ground Truth's size limit for one manifest object."""
    if len(line) > MAX_LINE_CHARS:
        raise ManifestError(f"row {row_number}: the manifest line has {len(line)} characters; "
                            f"Ground Truth allows {MAX_LINE_CHARS}")


def json_lines_query(query: Query, fields: Sequence[str]) -> Query:
    """DuckDB SQL that turns each row of `query` into its manifest line, as UTF-8 bytes (a BLOB).

    The JSON is built inside DuckDB (same bytes as `manifest_line` for the types a table holds):
    a row's values never become Python objects, its line reaches Python as one bytes object. A bad
    row (an empty data object, a line over Ground Truth's limit, both checked in DuckDB too) gives
    PROBLEM (a NUL byte, which JSON text never holds unescaped) followed by what is wrong with it.
    """
    field = object_field(fields)
    pack = ", ".join(f"{sql_name(f)} := q.{sql_name(f)}" for f in sorted(fields))
    obj = f"CAST(q.{sql_name(field)} AS VARCHAR)"
    empty = f"{obj} IS NULL OR {obj} = ''"
    if field == "source-ref":
        empty += f" OR NOT starts_with({obj}, 's3://')"
    inner = f"SELECT to_json(struct_pack({pack})) AS line, ({empty}) AS empty FROM ({query.sql}) AS q"
    # strlen (bytes) is cheap and bounds length (characters) from above.
    what = "is empty or not an s3:// URI" if field == "source-ref" else "is empty"
    line = (f"CASE WHEN empty THEN chr(0) || 'source.columns.{field}: the data object {what}' "
            f"WHEN strlen(line) > {MAX_LINE_CHARS} AND length(line) > {MAX_LINE_CHARS} THEN chr(0) || "
            f"'the manifest line has ' || length(line) || ' characters; Ground Truth allows {MAX_LINE_CHARS}' "
            "ELSE CAST(line AS VARCHAR) END")
    sql = f"SELECT encode({line}) AS line FROM ({inner}) AS j"
    return Query(sql=sql, params=query.params, param_names=query.param_names, fields=("line",))
