"""SQL literals and identifiers as text, for SQL that gtrun writes itself (without sqlglot, which
`gtrun collect` does not need to load)."""

from __future__ import annotations


def sql_string(text: str) -> str:
    """A SQL string literal: 'it''s'."""
    return "'" + text.replace("'", "''") + "'"


def sql_name(name: str) -> str:
    """A quoted SQL identifier: "source-ref"."""
    return '"' + name.replace('"', '""') + '"'
