"""The source query: one SELECT built from the `source` group with sqlglot, params bound, never pasted."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from runner.errors import ConfigError, QueryError
from runner.schema import SourceConfig

READ_DIALECT = "duckdb"  # how gtrun reads the SQL in configs; written out per backend
DIALECTS = {"local": "duckdb", "aws": "athena"}
OBJECT_FIELDS = ("source", "source-ref")


@dataclass(frozen=True)
class Query:
    """A SELECT in one dialect, with `?` placeholders and their values in order."""

    sql: str
    params: tuple[Any, ...]
    param_names: tuple[str, ...]
    fields: tuple[str, ...] | None  # output columns, when known without running it (no `*`)


def _parse(text: str, key: str, *, condition: bool = False) -> exp.Expr:
    try:
        tree = (sqlglot.condition if condition else sqlglot.parse_one)(text, dialect=READ_DIALECT)
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        where = f" (column {err.get('col')})" if err.get("col") else ""
        raise ConfigError(key, f"cannot parse {text!r}{where}: {err.get('description', exc)}") from None
    if isinstance(tree, exp.Alias):  # `Review Text` is `Review AS Text`; the key gives the name
        hint = (f"the key names it: write {tree.this.sql(dialect=READ_DIALECT)!r} alone"
                if re.search(r"\bAS\b", text, re.IGNORECASE) else
                f'quote a column name that has a space: "{text}" (in YAML: \'"{text}"\')')
        raise ConfigError(key, f"{text!r} reads as a column and an alias ({tree.sql(dialect=READ_DIALECT)})", hint)
    return tree


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _table(source: SourceConfig) -> exp.Table:
    return exp.Table(this=_ident(source.table), db=_ident(source.database))


def _output_name(node: exp.Expression) -> str | None:
    return node.alias_or_name if not isinstance(node, exp.Star) and node.alias_or_name else None


def built_select(source: SourceConfig) -> exp.Select:
    """The SELECT tree for `source` (from `sql`, or from table/columns/where/order_by/limit)."""
    if source.sql:
        try:
            statements = [s for s in sqlglot.parse(source.sql, dialect=READ_DIALECT) if s is not None]
        except ParseError as exc:
            err = exc.errors[0] if exc.errors else {}
            raise ConfigError("source.sql", f"does not parse at line {err.get('line')}, column "
                              f"{err.get('col')}: {err.get('description', exc)}") from None
        if len(statements) != 1:
            raise ConfigError("source.sql", f"must be one SELECT, found {len(statements)} statements")
        tree = statements[0]
        if not isinstance(tree, exp.Select):
            raise ConfigError("source.sql", f"must be a SELECT, not {tree.key.upper()}")
        return tree
    if not source.columns:
        raise ConfigError("source.columns", "is empty", "map manifest fields to columns, "
                          "e.g. source.columns={source: text_column}, or set source.sql")
    select = exp.Select()
    for field in sorted(source.columns):  # sorted: the manifest's keys come out in sorted order
        value = _parse(str(source.columns[field]), f"source.columns.{field}")
        select = select.select(exp.alias_(value, _ident(field)), copy=False)
    select = select.from_(_table(source), copy=False)
    if source.where:
        select = select.where(_parse(source.where, "source.where", condition=True), copy=False)
    for i, item in enumerate(source.order_by):
        select = select.order_by(_parse(item, f"source.order_by[{i}]"), copy=False)
    if source.limit is not None:
        if source.limit < 1:
            raise ConfigError("source.limit", f"must be at least 1, not {source.limit}")
        select = select.limit(source.limit, copy=False)
    return select


def _bind(tree: exp.Expression, params: Mapping[str, Any], key: str) -> tuple[exp.Expression, list[str]]:
    """Replace each `:name` with `?`, returning the names in the order the `?` appear in the text."""
    tree = tree.copy()
    placeholders = [p for p in tree.find_all(exp.Placeholder) if p.name]
    unknown = sorted({p.name for p in placeholders} - set(params))
    if unknown:
        unused = sorted(set(params) - {p.name for p in placeholders})
        close = difflib.get_close_matches(unknown[0], unused, n=1)
        raise ConfigError(key, f"uses parameter :{unknown[0]}, which source.params does not set",
                          f"add source.params.{unknown[0]}=<value>"
                          + (f" (source.params.{close[0]} is set: a misspelling?)" if close else ""))
    # Number the placeholders with markers, render once, and read their order off the text,
    # so the values line up with the `?` whatever order sqlglot walks the tree in.
    for i, node in enumerate(placeholders):
        node.replace(exp.Literal.string(f"__gtrun_param_{i}__"))
    text = tree.sql(dialect="duckdb")
    order = sorted(range(len(placeholders)), key=lambda i: text.index(f"'__gtrun_param_{i}__'"))
    names = [placeholders[i].name for i in order]
    for literal in tree.find_all(exp.Literal):
        if literal.is_string and literal.this.startswith("__gtrun_param_"):
            literal.replace(exp.Placeholder())
    return tree, names


def select_query(source: SourceConfig, dialect: str) -> Query:
    """The source's SELECT in `dialect` ("duckdb" or "athena"), with its params in order."""
    select = built_select(source)
    key = "source.sql" if source.sql else "source.where"
    tree, names = _bind(select, source.params, key)
    fields: tuple[str, ...] | None = tuple(n or "" for n in map(_output_name, select.expressions))
    if fields is not None and "" in fields:
        fields = None  # `*` or an unnamed expression: known once the query runs
    if fields is not None:
        check_fields(fields, "source.sql" if source.sql else "source.columns")
    return Query(sql=tree.sql(dialect=dialect), params=tuple(source.params[n] for n in names),
                 param_names=tuple(names), fields=fields)


def unused_params(params: Mapping[str, Any], used: Sequence[str], key: str) -> list[ConfigError]:
    """One ConfigError per `source.params` key the query never writes as `:name`: a misspelled
    key would otherwise be ignored while the query runs with the value it meant to change.
    `used`: the `:names` in the query's text order; `key`: where the query is (source.where or
    source.sql), for the hint. A param set to null is let be: it changes nothing either way, and
    Hydra cannot delete a null key from the command line (`~source.params.entity` fails), so a
    `source.sql` given there that does not filter by entity could not drop the tweets source's.

    >>> [problem] = unused_params({"treshold": 0.5, "threshold": 0.8}, ["threshold"], "source.where")
    >>> print(problem)
    source.params.treshold: the query does not use :treshold (it uses :threshold)
      hint: did you mean source.params.threshold?
    """
    names = list(dict.fromkeys(used))  # each once, in text order
    uses = ", ".join(f":{n}" for n in names) if names else "no parameter"
    problems = []
    for name, value in params.items():
        if name in names or value is None:
            continue
        close = difflib.get_close_matches(name, names, n=1)
        where = "source.sql" if key == "source.sql" else "source.where, source.columns or source.order_by"
        hint = (f"did you mean source.params.{close[0]}?" if close else
                f"write :{name} in {where}, or drop the key (~source.params.{name} on the command line)")
        problems.append(ConfigError(f"source.params.{name}", f"the query does not use :{name} (it uses {uses})",
                                    hint))
    return problems


def check_fields(fields: Sequence[str], key: str) -> None:
    """A manifest line needs exactly one of `source` / `source-ref`, and no `$`-keys."""
    present = [f for f in OBJECT_FIELDS if f in fields]
    if len(present) != 1:
        problem = "sets both source and source-ref" if present else "has neither source nor source-ref"
        raise ConfigError(key, problem, "a manifest line carries the text as `source` or an "
                          "s3:// URI as `source-ref`")
    dupes = sorted({f for f in fields if list(fields).count(f) > 1})
    if dupes:
        raise ConfigError(key, f"names the field {dupes[0]!r} twice")
    bad = [f for f in fields if f.startswith("$")]
    if bad:
        raise ConfigError(key, f"field {bad[0]!r} starts with '$', which Ground Truth rejects")


def count_query(query: Query, dialect: str) -> Query:
    """`SELECT COUNT(*)` over `query`: the number of data objects it yields."""
    return Query(sql=f"SELECT COUNT(*) AS objects FROM ({query.sql}) AS q", params=query.params,
                 param_names=query.param_names, fields=("objects",))


def referenced_columns(source: SourceConfig) -> dict[str, set[str]]:
    """Config key -> column names it references, to name the key when a column is missing."""
    refs: dict[str, set[str]] = {}
    if source.sql:
        refs["source.sql"] = {c.name for c in built_select(source).find_all(exp.Column)}
        return refs
    for field, value in source.columns.items():
        refs[f"source.columns.{field}"] = {c.name for c in _parse(str(value), "").find_all(exp.Column)}
    if source.where:
        refs["source.where"] = {c.name for c in _parse(source.where, "", condition=True).find_all(exp.Column)}
    for i, item in enumerate(source.order_by):
        refs[f"source.order_by[{i}]"] = {c.name for c in _parse(item, "").find_all(exp.Column)}
    return refs


def render_sql(query: Query) -> str:
    """The query as recorded in `query.sql`: the SQL, then its parameters as comments."""
    lines = [query.sql.rstrip() + ";"]
    for name, value in zip(query.param_names, query.params, strict=False):
        lines.append(f"-- ? {name} = {value!r}")
    return "\n".join(lines) + "\n"


__all__ = ["Query", "QueryError", "select_query", "count_query", "check_fields", "unused_params",
           "referenced_columns", "render_sql", "DIALECTS"]
