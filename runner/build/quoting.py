"""SQL literals and identifiers as text, for SQL that gtrun writes itself (without sqlglot, which
`gtrun collect` does not need to load)."""

from __future__ import annotations


def sql_string(text: str) -> str:
    """A SQL string literal: 'it''s'."""
    return "'" + text.replace("'", "''") + "'"


def sql_name(name: str) -> str:
    """A quoted SQL identifier: "source-ref"."""
    return '"' + name.replace('"', '""') + '"'


def json_pointer(*keys: str) -> str:
    """The JSON pointer (RFC 6901) of a value by its keys, for DuckDB's JSON functions.

    >>> json_pointer("a/b", "~c", "0")
    '/a~1b/~0c/0'
    """
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)
