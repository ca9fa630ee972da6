"""Collect's columnar path: DuckDB reads an output manifest in one streaming pass; the report's
counts, the Parquet table and the jsonl splits come from its Arrow batches, with no Python object
per line.

It takes output the Python parser (runner.collect.parse) reads the same way and that has no
worker answers: a local manifest of a built-in task type whose lines all have the layout of its
first lines (the same input fields with the same JSON types, then the label attribute and its
metadata in Ground Truth's documented shapes). `Columnar.open` learns the layout from the first
lines with the parser; `Columnar.write` checks every line in SQL and raises NotColumnar at the
first one it cannot read the parser's way (a malformed line, a chained job's attribute, a field
of another type), or when DuckDB runs out of memory. Collect then discards what was written and
takes the Python path, which names the line and what is wrong with it. Both paths write the same
records (tests/test_columnar.py compares them file by file).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from runner.build.sql import sql_name, sql_string
from runner.collect import parse
from runner.collect.transforms import SPLITS
from runner.schema import SplitConfig, TaskType, TransformsConfig

log = logging.getLogger(__name__)

SAMPLE_LINES = 1_000  # lines the Python parser reads first, to learn the input fields and types
TYPES = {TaskType.text_classification, TaskType.text_multilabel, TaskType.bounding_box,
         TaskType.named_entity}
LABEL_KEY = {TaskType.text_classification: "label", TaskType.text_multilabel: "labels",
             TaskType.bounding_box: "boxes", TaskType.named_entity: "entities"}
# Python value type -> (DuckDB column type, json_type() of such a value)
INTEGER = "('BIGINT', 'UBIGINT')"  # json_type() of an integer: UBIGINT when it is not negative
SCALARS = {bool: ("BOOLEAN", "('BOOLEAN')"), int: ("BIGINT", INTEGER), float: ("DOUBLE", "('DOUBLE')"),
           str: ("VARCHAR", "('VARCHAR')")}
NUMBER = "('BIGINT', 'UBIGINT', 'DOUBLE')"
GT_KEYS = parse.GT_METADATA_KEYS  # Ground Truth writes at least one of these in every metadata
# json_transform's types for the metadata keys and the label value each task type reads. Objects
# become structs and maps (one parse per line); the leaves stay JSON, checked before a cast. A map
# or list that is there but of another type comes out NULL, as a missing one does: the checks tell
# them apart by the key's text in the line (_present_as).
JSON_MAP = "MAP(VARCHAR, JSON)"
META_SPEC: dict[TaskType, dict[str, Any]] = {
    TaskType.text_classification: {"class-name": "JSON", "confidence": "JSON"},
    TaskType.text_multilabel: {"class-map": JSON_MAP, "confidence-map": JSON_MAP},
    TaskType.bounding_box: {"class-map": JSON_MAP, "objects": "JSON"},
    TaskType.named_entity: {"entities": "JSON"}}
VALUE_SPEC: dict[TaskType, Any] = {
    TaskType.text_classification: "JSON",
    TaskType.text_multilabel: ["JSON"],
    TaskType.bounding_box: {"annotations": [{k: "JSON" for k in ("class_id", "left", "top", "width", "height")}],
                            "image_size": "JSON"},
    TaskType.named_entity: {"annotations": {"entities": [{k: "JSON" for k in ("label", "startOffset", "endOffset")}]}}}


@dataclass
class Layout:
    """What the first lines taught: the input fields (name, DuckDB type, json_type) in order."""

    inputs: list[tuple[str, str, str]]


def learn(lines: Iterator[bytes], attribute: str, task_type: TaskType,
          labels: Sequence[str] | None) -> Layout | None:
    """The input layout of the first SAMPLE_LINES lines, or None when the columnar path cannot
    take them (a parse problem, fields that vary, nested or only-null input values)."""
    parser = parse.Parser(attribute=attribute, task_type=task_type, labels=list(labels) if labels else None)
    found: dict[str, type] = {}
    keys: tuple[str, ...] | None = None
    try:
        for obj in parser.parse_lines(islice(lines, SAMPLE_LINES)):
            if obj.answers or obj.object_id != str(obj.line_no - 1):
                return None
            if keys is None:
                keys = tuple(obj.inputs)
            elif tuple(obj.inputs) != keys:
                return None
            for key, value in obj.inputs.items():
                if value is None:
                    continue
                kind = type(value)
                if kind not in SCALARS or found.setdefault(key, kind) is not kind:
                    return None
    except parse.ManifestError:
        return None
    if not keys or any(k not in found for k in keys) or set(keys) & {*LABEL_KEY.values(), "confidence", "workers"}:
        return None
    return Layout([(k, *SCALARS[found[k]]) for k in keys])


class NotColumnar(Exception):
    """A line the columnar path does not read the way the parser does: collect takes the Python path."""


@dataclass
class Result:
    """What one columnar pass wrote and counted."""

    lines: int
    status: dict[str, int]  # objects by status
    reasons: dict[str, int]  # failed objects by failure reason, in first-seen order
    distribution: dict[str, int]  # label uses of the labeled objects (before the label_map), first-seen order
    jsonl: dict[str, int] | None  # objects per split, when it wrote the jsonl files
    table: int | None  # rows, when it wrote the Parquet table
    skipped: int  # objects left out: not labeled, or below transforms.min_confidence


class Columnar:
    """One output manifest read by DuckDB in one streaming pass (see the module doc)."""

    def __init__(self, manifest: Path, attribute: str, task_type: TaskType, labels: Sequence[str],
                 layout: Layout, settings: TransformsConfig, memory_limit: str) -> None:
        self.manifest, self.attribute, self.task_type, self.labels = manifest, attribute, task_type, list(labels)
        self.layout, self.settings, self.memory_limit = layout, settings, memory_limit

    @classmethod
    def open(cls, manifest: Path, *, attribute: str, task_type: TaskType | None,
             labels: Sequence[str], settings: TransformsConfig, memory_limit: str = "140MB") -> Columnar | None:
        """The columnar reading of the manifest, or None when its first lines already need the
        Python path (see the module doc). `memory_limit`: DuckDB's (backend.duckdb.memory_limit)."""
        if task_type not in TYPES or not manifest.is_file():
            return None
        if settings.label_map and task_type is TaskType.text_multilabel:
            return None  # merged labels take the highest confidence of theirs: the Python path does that
        with open(manifest, "rb") as src:
            layout = learn(iter(src), attribute, task_type, labels or None)
        if layout is None:
            return None
        return cls(manifest, attribute, task_type, labels, layout, settings, memory_limit)

    def write(self, *, jsonl: Path | None, table: Path | None) -> Result:
        """Read the manifest once: count what the report needs, write `jsonl/{split}.jsonl` into the
        folder `jsonl` and the Parquet table to the file `table` (either may be None).

        Raises NotColumnar at the first line it cannot read the parser's way; what it wrote by
        then is the caller's to discard."""
        import duckdb
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        data_errors = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.OutOfMemoryException)

        # The system allocator gives the batches' memory back at once; mimalloc, pyarrow's default,
        # keeps some 60 MB of it (a process-wide setting: gtrun's other Arrow work is done by then).
        pa.set_memory_pool(pa.system_memory_pool())
        con = duckdb.connect(config={"memory_limit": self.memory_limit, "preserve_insertion_order": True})
        status: dict[str, int] = {}
        reasons: dict[str, int] = {}
        distribution: dict[str, int] = {}
        split_counts = dict.fromkeys(SPLITS, 0)
        kept_total = 0
        writer: Any = None
        files: dict[str, Any] = {}
        try:
            # The split of object i depends on i only: computed a million objects at a time.
            splits = _Splits(con, self.settings.split)
            if jsonl is not None:
                files = {name: open(jsonl / f"{name}.jsonl", "wb") for name in SPLITS}
            sql = records_sql(self.manifest, self.attribute, self.task_type, self.labels, self.layout,
                              self.settings)
            record = [name for name, _, _ in self.layout.inputs] + [LABEL_KEY[self.task_type], "confidence", "workers"]
            offset = 0
            for batch in con.sql(sql).to_arrow_reader(BATCH_ROWS):
                n = batch.num_rows
                ok = batch.column("ok")
                if ok.null_count or ok.false_count:
                    bad = offset + next(i for i, x in enumerate(ok.to_pylist()) if not x) + 1
                    raise NotColumnar(f"line {bad} (blank lines not counted)")
                state = batch.column("status")
                _add_counts(status, pc.value_counts(state))
                failed = pc.equal(state, "failed")
                _add_counts(reasons, pc.value_counts(pc.filter(batch.column("reason"), failed)))
                labeled = pc.equal(state, "labeled")
                used = pc.filter(batch.column("raw"), labeled)
                if pa.types.is_list(used.type):
                    used = pc.list_flatten(used)
                _add_counts(distribution, pc.value_counts(pc.drop_null(used)))
                kept = pc.and_(labeled, batch.column("keep"))
                kept_total += pc.sum(kept).as_py() or 0
                if files:
                    here = splits.codes(offset, n)
                    text = batch.column("json")
                    for code, name in enumerate(SPLITS):
                        mask = pc.and_(kept, pc.equal(here, code))
                        chosen = pc.filter(text, mask)
                        if len(chosen):
                            files[name].write(_contiguous_values(chosen))
                            split_counts[name] += len(chosen)
                if table is not None:
                    rows = pc.filter(pa.RecordBatch.from_arrays([batch.column(c) for c in record], names=record),
                                     kept)
                    if writer is None:
                        writer = pq.ParquetWriter(table, rows.schema)
                    writer.write_batch(rows)
                offset += n
            if not offset:
                raise NotColumnar("no lines")  # the parser's path says what an empty output holds
        except (duckdb.Error, OSError) as exc:
            # The data's errors (not JSON, a value of another shape) and running out of memory: the
            # parser says what is wrong, or reads it with less memory. Any other error is gtrun's
            # own and is raised. DuckDB's errors reach Arrow's reader as OSError ("<Kind> Error: ...").
            if not isinstance(_duckdb_error(exc), data_errors):
                raise
            raise NotColumnar(str(exc).splitlines()[0]) from None
        finally:
            for f in files.values():
                f.close()
            if writer is not None:
                writer.close()
            con.close()
        return Result(lines=offset, status=status, reasons=reasons, distribution=distribution,
                      jsonl=split_counts if jsonl is not None else None,
                      table=kept_total if table is not None else None, skipped=offset - kept_total)


BATCH_ROWS = 8_192


class _Splits:
    """The split codes of objects 0, 1, 2, ... (a line's index is its object id), computed by DuckDB
    a million at a time as the batches reach them. Blank lines have none: read_csv skips them, and
    the parser does not count them as objects either."""

    CHUNK = 1 << 20

    def __init__(self, con: Any, split: SplitConfig) -> None:
        # A cursor of its own: a query on the reading connection would end its streaming result.
        self.con, self.split, self.start, self.array = con.cursor(), split, 0, None

    def codes(self, offset: int, n: int) -> Any:
        if self.array is None or offset + n > self.start + len(self.array):
            self.start = offset
            sql = split_code_sql(self.split, offset, offset + max(n, self.CHUNK))
            self.array = self.con.sql(sql).to_arrow_table().column("s").combine_chunks()
        return self.array.slice(offset - self.start, n)


def _add_counts(into: dict[str, int], counted: Any) -> None:
    """Add pyarrow's value_counts (a struct array, in first-seen order) to a first-seen-ordered dict."""
    for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True):
        if value is not None:
            into[value] = into.get(value, 0) + n


def _duckdb_error(exc: BaseException) -> Any:
    """`exc` as DuckDB's own error, raised by a query or through Arrow's reader; None if it is not one.

    DuckDB's errors keep their class when a query fails, but reach Arrow's reader of a DuckDB stream
    as OSError("<Kind> Error: ..."): this gives them their class back."""
    import duckdb

    if isinstance(exc, duckdb.Error):
        return exc
    text = str(exc)
    if isinstance(exc, OSError) and re.match(r"[A-Z][A-Za-z ]* Error: ", text):
        kinds = {"Out of Memory Error": duckdb.OutOfMemoryException, "IO Error": duckdb.IOException,
                 "Invalid Input Error": duckdb.InvalidInputException, "Conversion Error": duckdb.ConversionException}
        kind = next((k for prefix, k in kinds.items() if text.startswith(prefix)), duckdb.Error)
        return kind(text)
    return None


def _contiguous_values(lines: Any) -> memoryview:
    """The bytes of a string array's values, back to back (a filter's output of a batch's lines)."""
    offsets = lines.buffers()[1]
    data = lines.buffers()[2]
    width = 8 if str(lines.type) == "large_string" else 4
    fmt = "<q" if width == 8 else "<i"
    first = struct.unpack_from(fmt, offsets, lines.offset * width)[0]
    last = struct.unpack_from(fmt, offsets, (lines.offset + len(lines)) * width)[0]
    return memoryview(data)[first:last]


# -- the SQL ----------------------------------------------------------------------------------------


def lines_sql(manifest: Path) -> str:
    """The manifest's lines, one VARCHAR each (JSON never holds a raw \\x01: no line splits)."""
    return (f"SELECT line FROM read_csv({sql_string(str(manifest))}, columns = {{'line': 'VARCHAR'}}, header = false, "
            "delim = chr(1), quote = '', escape = '', auto_detect = false, strict_mode = false, "
            "buffer_size = 4194304)")


def records_sql(manifest: Path, attribute: str, task_type: TaskType, labels: Sequence[str],
                layout: Layout, settings: TransformsConfig) -> str:
    """One row per manifest line, in order: ok (the line is in a shape this path reads the way the
    parser does), status, reason, raw (the label name or names before the label_map), the typed
    input fields, the label key (after the label_map), confidence (object_confidence), workers
    (unknown: NULL), keep (transforms.min_confidence) and json (flat_record as a JSON line)."""
    meta_key = attribute + parse.METADATA
    types = [t for t, kind in parse.TASK_TYPES.items() if kind is task_type]
    # One parse per line: the input fields and the label value stay JSON leaves (their json_type is
    # checked before a cast: json_transform would turn a value of another type into NULL without a
    # word); the metadata becomes a struct of the keys this path reads, each a JSON leaf.
    struct: dict[str, Any] = {name: "JSON" for name, _, _ in layout.inputs}
    struct[attribute] = VALUE_SPEC[task_type]
    struct[meta_key] = {**{key: "JSON" for key in sorted(GT_KEYS)}, **META_SPEC[task_type]}
    label_list = "([" + ", ".join(sql_string(x) for x in labels) + "]::VARCHAR[])"
    # A string leaf is its JSON text, quotes and all: its type shows in its first character, with
    # no second parse of what may be a long text. Numbers and booleans are short: json_type.
    inputs_ok = " AND ".join(
        f"(j.{sql_name(n)} IS NULL OR starts_with(j.{sql_name(n)}, '\"'))" if t == "VARCHAR" else
        f"coalesce(json_type(j.{sql_name(n)}) IN ('NULL', {jt[1:-1]}), true)" for n, t, jt in layout.inputs)
    typed = ", ".join(f"json_extract_string(j.{sql_name(n)}, '$') AS {sql_name(n)}" if t == "VARCHAR"
                      else f"TRY_CAST(j.{sql_name(n)} AS {t}) AS {sql_name(n)}" for n, t, _ in layout.inputs)
    names = [n for n, _, _ in layout.inputs]
    # Ground Truth writes the input fields, then the label attribute and its metadata.
    layouts = ", ".join("[" + ", ".join(sql_string(k) for k in keys) + "]::VARCHAR[]"
                        for keys in (names, [*names, meta_key], [*names, attribute, meta_key]))
    meta = f"j.{sql_name(meta_key)}"
    value = f"j.{sql_name(attribute)}"
    # A metadata value that is not an object becomes a struct of NULLs: Ground Truth's metadata has
    # at least one of its own keys (the parser's _is_label_metadata).
    gt_meta = " OR ".join(f"{meta}.{sql_name(k)} IS NOT NULL" for k in sorted(GT_KEYS))
    # A string leaf is its JSON text: compared as such, with no parse.
    type_ok = f"({meta}.type IS NULL OR CAST({meta}.type AS VARCHAR) IN ({', '.join(sql_string(json.dumps(t)) for t in types)}))"
    mapped = _label_map_sql(settings.label_map)
    label_part, checks = _value_sql(task_type, value, meta, label_list, mapped)
    key = LABEL_KEY[task_type]
    raw = "raw_label" if task_type is TaskType.text_classification else "raw_labels"
    # flat_record as a JSON line, joined from the input fields' own JSON text (no re-serialising)
    parts = [f"{sql_string(json.dumps(n, ensure_ascii=False) + ':')} || coalesce(j.{sql_name(n)}, 'null')" for n in names]
    parts.append(f"{sql_string(json.dumps(key) + ':')} || to_json({sql_name(key)})")
    parts.append("'\"confidence\":' || coalesce(TRY_CAST(confidence AS VARCHAR), 'null') || ',\"workers\":null}'")
    line = "'{' || " + " || ',' || ".join(parts) + " || chr(10)"
    confidence_ok = "true" if settings.min_confidence is None else \
        f"(confidence IS NULL OR confidence >= {float(settings.min_confidence)!r})"
    return f"""
WITH parsed AS (
  SELECT line, json_keys(line) AS keys, json_transform(line, {sql_string(json.dumps(struct))}) AS j
  FROM ({lines_sql(manifest)})
), labeled AS (
  SELECT line, j,
         list_contains(keys, {sql_string(attribute)}) AS has_value,
         keys IN ({layouts}) AND {inputs_ok}
           AND NOT contains(line, '"worker-response-ref"') AS inputs_ok,
         CASE WHEN {meta} IS NULL THEN 'unlabeled'
              WHEN {meta}."failure-reason" IS NOT NULL THEN 'failed' ELSE 'labeled' END AS status,
         {label_part}
  FROM parsed
), records AS (
SELECT j, {typed}, status,
       CASE WHEN status = 'failed' THEN json_extract_string({meta}."failure-reason", '$') END AS reason,
       {raw} AS raw, {sql_name(key)}, confidence, TRY_CAST(NULL AS BIGINT) AS workers,
       coalesce(inputs_ok AND CASE status
         WHEN 'unlabeled' THEN NOT has_value
         WHEN 'failed' THEN {type_ok} AND json_type({meta}."failure-reason") = 'VARCHAR'
         ELSE ({gt_meta}) AND {type_ok} AND has_value AND NOT contains(line, '"failure-reason"')
              AND ({checks}) END, false) AS ok,
       {confidence_ok} AS keep
FROM labeled
)
SELECT * EXCLUDE (j), {line} AS json FROM records
"""


def _label_map_sql(label_map: Mapping[str, str]) -> str:
    """A SQL template renaming `{x}` by transforms.label_map."""
    if not label_map:
        return "{x}"
    cases = " ".join(f"WHEN {sql_string(old)} THEN {sql_string(new)}" for old, new in label_map.items())
    return f"(CASE {{x}} {cases} ELSE {{x}} END)"


def _name_sql(index: str, class_map: str, label_list: str) -> str:
    """_class_name: class-map[index] when it is there (a string), else the job's labels[index]."""
    entry = f"{class_map}[TRY_CAST({index} AS VARCHAR)]"
    return (f"CASE WHEN starts_with(CAST({entry} AS VARCHAR), '\"') THEN json_extract_string({entry}, '$') "
            f"WHEN {entry} IS NULL THEN {label_list}[{index} + 1] END")


def _present_as(column: str, key: str) -> str:
    """The key is not in the line, or its value read as the map or list it should be."""
    return f"({column} IS NOT NULL OR NOT contains(line, {sql_string(json.dumps(key))}))"


def _all(items: str, var: str, condition: str) -> str:
    """The condition holds for every element of the list (an empty list passes, NULL fails)."""
    return f"coalesce(list_bool_and(list_transform({items}, lambda {var}: coalesce({condition}, false))), true)"


def _number_or_null(leaf: str) -> str:
    return f"coalesce(json_type({leaf}) IN ('NULL', {NUMBER[1:-1]}), true)"


def _value_sql(task_type: TaskType, value: str, meta: str, label_list: str, mapped: str) -> tuple[str, str]:
    """(columns raw_label, raw_labels, <label key>, confidence; the checks a labeled line must pass).

    `value` is the label value (a JSON leaf), `meta` the metadata struct (JSON leaves)."""
    null_label = "TRY_CAST(NULL AS VARCHAR) AS raw_label"
    if task_type is TaskType.text_classification:
        # Each leaf's json_type once (a lateral alias), not once per test.
        columns = (f"json_type({value}) AS vt, TRY_CAST({value} AS BIGINT) AS vi, "
                   f"{meta}.\"class-name\" AS cn, json_type(cn) AS cnt, {meta}.confidence AS cf, json_type(cf) AS cft, "
                   f"CASE WHEN vt IN {INTEGER} THEN CASE WHEN cnt = 'VARCHAR' THEN json_extract_string(cn, '$') "
                   f"WHEN cn IS NULL THEN {label_list}[vi + 1] END END AS raw_label, "
                   "CAST(NULL AS VARCHAR[]) AS raw_labels, "
                   f"{mapped.format(x='raw_label')} AS label, "
                   f"CASE WHEN cft IN {NUMBER} THEN TRY_CAST(cf AS DOUBLE) END AS confidence")
        checks = (f"vt IN {INTEGER} AND vi >= 0 AND (len({label_list}) = 0 OR vi < len({label_list})) "
                  f"AND raw_label IS NOT NULL AND coalesce(cft IN ('NULL', {NUMBER[1:-1]}), true)")
        return columns, checks
    if task_type is TaskType.text_multilabel:
        names = f"list_transform(idx, lambda x: {_name_sql('TRY_CAST(x AS BIGINT)', 'cmap', label_list)})"
        confidence = "cfm[TRY_CAST(TRY_CAST(x AS BIGINT) AS VARCHAR)]"
        columns = (f"{value} AS idx, {meta}.\"class-map\" AS cmap, {meta}.\"confidence-map\" AS cfm, {null_label}, "
                   f"{names} AS raw_labels, raw_labels AS labels, "  # a label_map here takes the Python path
                   f"list_min(list_transform(idx, lambda x: TRY_CAST({confidence} AS DOUBLE))) AS confidence")
        checks = (f"idx IS NOT NULL AND {_present_as('cmap', 'class-map')} AND {_present_as('cfm', 'confidence-map')} "
                  f"AND {_all('idx', 'x', f'json_type(x) IN {INTEGER} AND TRY_CAST(x AS BIGINT) >= 0')} "
                  f"AND {_all('raw_labels', 'x', 'x IS NOT NULL')} "
                  "AND len(list_distinct(raw_labels)) = len(raw_labels) "
                  f"AND {_all('idx', 'x', _number_or_null(confidence))}")
        return columns, checks
    if task_type is TaskType.bounding_box:
        # Each box read once into a typed struct (NULL where the parser would refuse the value).
        typed = ("{'id': " + _uint("b.class_id") + ", "
                 + ", ".join(f"'{k}': CASE WHEN {_is_number('b.' + k)} THEN TRY_CAST(b.{k} AS DOUBLE) END"
                             for k in ("left", "top", "width", "height")) + "}")
        box = ("{'label': " + mapped.format(x="p[2]") + ", 'left': p[1].left, 'top': p[1].top, "
               "'width': p[1].width, 'height': p[1].height}")
        columns = (f"list_transform({value}.annotations, lambda b: {typed}) AS bx, "
                   f"{meta}.\"class-map\" AS cmap, {_items(f'{meta}.objects')} AS objs, "
                   f"{value}.image_size AS size, {null_label}, "
                   f"list_transform(bx, lambda b: {_name_sql('b.id', 'cmap', label_list)}) AS raw_labels, "
                   f"list_transform(list_zip(bx, raw_labels), lambda p: {box}) AS boxes, "
                   f"{_min_confidence('objs', 'bx')} AS confidence")
        box_ok = "b.id IS NOT NULL AND b.left IS NOT NULL AND b.top IS NOT NULL AND b.width IS NOT NULL " \
                 "AND b.height IS NOT NULL"
        checks = (f"bx IS NOT NULL AND {_present_as('cmap', 'class-map')} AND {_items_ok('objs', 'bx', meta + '.objects')} "
                  f"AND {_all('bx', 'b', box_ok)} AND {_all('raw_labels', 'x', 'x IS NOT NULL')} "
                  "AND (size IS NULL OR json_type(size) = 'NULL' OR size = '[]' OR "
                  f"(json_type(size, '$[0].width') IN {NUMBER} AND json_type(size, '$[0].height') IN {NUMBER}))")
        return columns, checks
    # named_entity: each span read once into a typed struct, as boxes are
    typed = ("{'label': CASE WHEN starts_with(e.label, '\"') THEN json_extract_string(e.label, '$') END, "
             f"'start': {_uint('e.startOffset')}, 'end': {_uint('e.endOffset')}}}")
    span = "{'label': " + mapped.format(x="e.label") + ", 'start': e.start, 'end': e.end}"
    columns = (f"list_transform({value}.annotations.entities, lambda e: {typed}) AS en, "
               f"{_items(f'{meta}.entities')} AS ec, {null_label}, "
               "list_transform(en, lambda e: e.label) AS raw_labels, "
               f"list_transform(en, lambda e: {span}) AS entities, {_min_confidence('ec', 'en')} AS confidence")
    span_ok = "e.label IS NOT NULL AND e.start IS NOT NULL AND e.start < e.end"
    checks = f"en IS NOT NULL AND {_items_ok('ec', 'en', meta + '.entities')} AND {_all('en', 'e', span_ok)}"
    return columns, checks


def _uint(leaf: str) -> str:
    """An integer >= 0 as the parser's _index reads it from JSON, else NULL (a JSON integer's text
    is its digits: no parse to tell it from a float, a string or a negative number)."""
    return (f"CASE WHEN {leaf} IS NOT NULL AND ltrim(CAST({leaf} AS VARCHAR), '0123456789') = '' "
            f"THEN TRY_CAST({leaf} AS BIGINT) END")


def _is_number(leaf: str) -> str:
    """A JSON number: its text starts with a digit or a minus sign."""
    return f"left(CAST({leaf} AS VARCHAR), 1) IN ('-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9')"


def _items(leaf: str) -> str:
    """The elements of a metadata list (objects, entities) as JSON leaves; NULL when it is not a list."""
    return f"CASE WHEN starts_with(CAST({leaf} AS VARCHAR), '[') THEN json_extract({leaf}, '$[*]') END"


def _items_ok(items: str, annotations: str, leaf: str) -> str:
    """The list is missing or a list; the items paired with annotations are objects whose confidence
    is a number or missing (the parser reads items[i] for each annotation i only)."""
    confidence = "json_extract(o, '$.confidence')"
    item_ok = (f"starts_with(CAST(o AS VARCHAR), '{{') AND ({confidence} IS NULL OR "
               f"CAST({confidence} AS VARCHAR) = 'null' OR {_is_number(confidence)})")
    slice_ = f"list_slice({items}, 1, len({annotations}))"
    return (f"({leaf} IS NULL OR {items} IS NOT NULL) AND "
            f"{_all(slice_, 'o', item_ok)}")


def _min_confidence(items: str, annotations: str) -> str:
    """object_confidence of boxes or spans: the lowest confidence of the items paired with them."""
    return (f"list_min(list_transform(list_slice({items}, 1, len({annotations})), "
            "lambda o: TRY_CAST(json_extract(o, '$.confidence') AS DOUBLE)))")


def split_code_sql(split: SplitConfig, start: int, stop: int) -> str:
    """split_of(str(i)) for i in range(start, stop), in SQL, as 0 (train), 1 (validation) or 2
    (test): the first 8 bytes of sha256(salt NUL i), big-endian, over 2**64 (UBIGINT -> DOUBLE
    rounds to nearest, as Python's int / 2**64 does), against the cumulative ratios."""
    u = (f"CAST(CAST(('0x' || left(sha256({sql_string(split.salt)} || chr(0) || CAST(i AS VARCHAR)), 16)) AS UBIGINT) "
         "AS DOUBLE) / 18446744073709551616.0")
    tail = 2 if split.test > 0 else (1 if split.validation > 0 else 0)
    return (f"SELECT CAST(CASE WHEN u < {float(split.train)!r} THEN 0 WHEN u < {float(split.train + split.validation)!r} "
            f"THEN 1 ELSE {tail} END AS TINYINT) AS s FROM (SELECT {u} AS u FROM range({start}, {stop}) AS t(i))")
