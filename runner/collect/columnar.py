"""Collect's columnar path: DuckDB reads an output manifest once and writes the jsonl files, the
Parquet table and the report's counts, with no Python object per line.

It takes the output the Python parser (runner.collect.parse) would read the same way and that has
no worker answers: a local manifest of a built-in task type whose lines all have the layout of
its first lines (the same input fields with the same JSON types, the label attribute and its
metadata in Ground Truth's documented shapes). `Columnar.open` checks every line in SQL; anything
else (a malformed line, a chained job, a custom task, worker answers, an s3:// manifest) returns
None and collect takes the Python path, which names the line and what is wrong with it. Both
paths write the same records (tests/test_columnar.py compares them file by file).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from runner.collect import parse
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
CONFIDENCE = "p[2]->'confidence'"  # the confidence of a (box or span, metadata item) pair
GT_KEYS = parse.GT_METADATA_KEYS  # Ground Truth writes at least one of these in every metadata
META_KEYS = {TaskType.text_classification: ("class-name", "confidence"),
             TaskType.text_multilabel: ("class-map", "confidence-map"),
             TaskType.bounding_box: ("class-map", "objects"),
             TaskType.named_entity: ("entities",)}


def _s(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _n(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _path(key: str) -> str:
    """A JSON path to one object key: $."key" (quotes in the key escaped)."""
    return _s('$."' + key.replace('\\', '\\\\').replace('"', '\\"') + '"')


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


class Columnar:
    """One output manifest parsed into a DuckDB table `rec`, one row per line."""

    def __init__(self, con: Any, spill: str, task_type: TaskType, layout: Layout, lines: int) -> None:
        self.con, self.spill, self.task_type, self.layout, self.lines = con, spill, task_type, layout, lines

    @classmethod
    def open(cls, manifest: Path, *, attribute: str, task_type: TaskType | None,
             labels: Sequence[str], settings: TransformsConfig, memory_limit: str = "150MB") -> Columnar | None:
        """The parsed manifest, or None when the Python path must take it (see the module doc).

        `memory_limit` is DuckDB's buffer pool (backend.duckdb.memory_limit); the parsed table spills
        to a private temporary folder beyond it."""
        if task_type not in TYPES or not manifest.is_file():
            return None
        if settings.label_map and task_type is TaskType.text_multilabel:
            return None  # merged labels take the highest confidence of theirs: the Python path does that
        with open(manifest, "rb") as src:
            layout = learn(iter(src), attribute, task_type, labels or None)
        if layout is None:
            return None
        import duckdb

        spill = tempfile.mkdtemp(prefix="gtrun-collect-")
        con = duckdb.connect(config={"memory_limit": memory_limit, "preserve_insertion_order": True})
        try:
            con.execute(f"SET temp_directory = {_s(spill)}")
            # The line index is the object id (the split's key): a table's rowid gives it in parallel,
            # where row_number() OVER () would run the JSON work that follows on one thread.
            con.execute(f"CREATE TABLE raw AS {lines_sql(manifest)}")
            con.execute(f"CREATE TABLE rec AS {records_sql(attribute, task_type, labels, layout, settings)}")
            con.execute("DROP TABLE raw")
            (lines, bad), = con.execute("SELECT count(*), count(*) FILTER (WHERE NOT ok) FROM rec").fetchall()
        except duckdb.Error as exc:  # not JSON, a value of another type, ...: the parser says which
            log.info("collect: the columnar path does not take %s (%s)", manifest, str(exc).splitlines()[0])
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
            return None
        if bad or not lines:
            log.info("collect: %s has %d line(s) the columnar path does not take", manifest, bad)
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
            return None
        return cls(con, spill, task_type, layout, int(lines))

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.spill, ignore_errors=True)

    def __enter__(self) -> Columnar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what collect writes ----------------------------------------------------------------------

    def record_columns(self) -> str:
        """flat_record's columns: the input fields, the label key, confidence, workers (unknown)."""
        key = LABEL_KEY[self.task_type]
        inputs = ", ".join(_n(name) for name, _, _ in self.layout.inputs)
        return f"{inputs}, {_n(key)}, confidence, CAST(NULL AS BIGINT) AS workers"

    def kept(self) -> str:
        return "status = 'labeled' AND keep"

    def write_jsonl(self, stage: Path) -> dict[str, int]:
        counts = {}
        for split in ("train", "validation", "test"):
            path = stage / f"{split}.jsonl"
            (n,), = self.con.execute(
                f"COPY (SELECT {self.record_columns()} FROM rec WHERE {self.kept()} AND split = {_s(split)}) "
                f"TO {_s(str(path))} (FORMAT JSON)").fetchall()
            counts[split] = int(n)
            if not path.exists():
                path.touch()
        return counts

    def write_parquet(self, path: Path) -> int:
        (n,), = self.con.execute(
            f"COPY (SELECT {self.record_columns()} FROM rec WHERE {self.kept()}) "
            f"TO {_s(str(path))} (FORMAT PARQUET)").fetchall()
        return int(n)

    def skipped(self) -> int:
        (n,), = self.con.execute(f"SELECT count(*) FILTER (WHERE NOT ({self.kept()})) FROM rec").fetchall()
        return int(n)

    def report_counts(self) -> dict[str, Any]:
        """build_report's counters, from the table (labels before the label_map, as the report reads them)."""
        status = dict(self.con.execute("SELECT status, count(*) FROM rec GROUP BY status").fetchall())
        reasons = self.con.execute("SELECT reason, count(*) FROM rec WHERE status = 'failed' "
                                   "GROUP BY reason ORDER BY min(i)").fetchall()
        unnest = {TaskType.text_classification: "[raw_label]",
                  TaskType.text_multilabel: "list_distinct(raw_labels)",
                  TaskType.bounding_box: "raw_labels", TaskType.named_entity: "raw_labels"}[self.task_type]
        distribution = self.con.execute(
            f"SELECT name, count(*) FROM (SELECT i, unnest({unnest}) AS name FROM rec WHERE status = 'labeled') "
            "GROUP BY name ORDER BY min(i)").fetchall()
        return {"status": {str(k): int(v) for k, v in status.items()},
                "reasons": [(str(r), int(n)) for r, n in reasons],
                "distribution": [(str(name), int(n)) for name, n in distribution if name is not None]}


# -- the SQL ----------------------------------------------------------------------------------------


def lines_sql(manifest: Path) -> str:
    """The manifest's lines, one VARCHAR each (JSON never holds a raw \\x01: no line splits)."""
    return (f"SELECT line FROM read_csv({_s(str(manifest))}, columns = {{'line': 'VARCHAR'}}, header = false, "
            "delim = chr(1), quote = '', escape = '', auto_detect = false, strict_mode = false)")


def records_sql(attribute: str, task_type: TaskType, labels: Sequence[str],
                layout: Layout, settings: TransformsConfig) -> str:
    """One row per line of the table `raw` (the manifest's lines, in order): i (0-based), ok (the
    line is in a shape this path reads the way the parser does), status, reason, the typed input
    fields, raw_label(s) (names before the label_map), the label key (after it), confidence
    (object_confidence), keep, split."""
    meta_key = attribute + parse.METADATA
    types = [t for t, kind in parse.TASK_TYPES.items() if kind is task_type]
    # One parse per line: the input fields and the label value stay JSON leaves (their json_type is
    # checked before a cast: json_transform would turn a value of another type into NULL without a
    # word); the metadata becomes a struct of the keys this path reads, each a JSON leaf.
    struct: dict[str, Any] = {name: "JSON" for name, _, _ in layout.inputs}
    struct[attribute] = "JSON"
    struct[meta_key] = {key: "JSON" for key in (*sorted(GT_KEYS), *META_KEYS[task_type])}
    label_list = "([" + ", ".join(_s(x) for x in labels) + "]::VARCHAR[])"
    inputs_ok = " AND ".join(f"coalesce(json_type(j.{_n(n)}) IN ('NULL', {jt[1:-1]}), true)"
                             for n, _, jt in layout.inputs)
    typed = ", ".join(f"CAST(json_extract_string(j.{_n(n)}, '$') AS {t}) AS {_n(n)}" if t == "VARCHAR"
                      else f"CAST(j.{_n(n)} AS {t}) AS {_n(n)}" for n, t, _ in layout.inputs)
    expected = "[" + ", ".join(_s(n) for n, _, _ in layout.inputs) + "]::VARCHAR[]"
    meta = f"j.{_n(meta_key)}"
    value = f"j.{_n(attribute)}"
    # A metadata value that is not an object becomes a struct of NULLs: Ground Truth's metadata has
    # at least one of its own keys (the parser's _is_label_metadata).
    gt_meta = " OR ".join(f"{meta}.{_n(k)} IS NOT NULL" for k in sorted(GT_KEYS))
    type_ok = (f"({meta}.type IS NULL OR (json_type({meta}.type) = 'VARCHAR' AND "
               f"json_extract_string({meta}.type, '$') IN ({', '.join(_s(t) for t in types)})))")
    u, split = _split_sql(settings.split)
    mapped = _label_map_sql(settings.label_map)
    label_part, checks = _value_sql(task_type, value, meta, label_list, mapped)
    confidence_ok = "true" if settings.min_confidence is None else \
        f"(confidence IS NULL OR confidence >= {float(settings.min_confidence)!r})"
    return f"""
WITH parsed AS (
  SELECT rowid AS i, line, json_keys(line) AS keys, json_transform(line, {_s(json.dumps(struct))}) AS j
  FROM raw
), labeled AS (
  SELECT i, line, j,
         list_contains(keys, {_s(attribute)}) AS has_value,
         list_filter(keys, lambda k: k NOT IN ({_s(attribute)}, {_s(meta_key)})) = {expected} AND {inputs_ok}
           AND NOT contains(line, '"worker-response-ref"') AS inputs_ok,
         CASE WHEN {meta} IS NULL THEN 'unlabeled'
              WHEN {meta}."failure-reason" IS NOT NULL THEN 'failed' ELSE 'labeled' END AS status,
         {label_part},
         {u} AS u
  FROM parsed
)
SELECT i, {typed}, status,
       CASE WHEN status = 'failed' THEN json_extract_string({meta}."failure-reason", '$') END AS reason,
       raw_label, raw_labels, {_n(LABEL_KEY[task_type])}, confidence,
       coalesce(inputs_ok AND CASE status
         WHEN 'unlabeled' THEN NOT has_value
         WHEN 'failed' THEN {type_ok} AND json_type({meta}."failure-reason") = 'VARCHAR'
         ELSE ({gt_meta}) AND {type_ok} AND has_value AND NOT contains(line, '"failure-reason"')
              AND ({checks}) END, false) AS ok,
       {confidence_ok} AS keep, {split} AS split
FROM labeled
"""


def _label_map_sql(label_map: Mapping[str, str]) -> str:
    """A SQL template renaming `{x}` by transforms.label_map."""
    if not label_map:
        return "{x}"
    cases = " ".join(f"WHEN {_s(old)} THEN {_s(new)}" for old, new in label_map.items())
    return f"(CASE {{x}} {cases} ELSE {{x}} END)"


def _name_sql(index: str, class_map: str, label_list: str) -> str:
    """_class_name: class-map[index] when it is there (a string), else the job's labels[index]."""
    entry = f"json_extract({class_map}, '$.\"' || {index} || '\"')"
    return (f"CASE WHEN json_type({entry}) = 'VARCHAR' THEN json_extract_string({entry}, '$') "
            f"WHEN {entry} IS NULL OR json_type({entry}) = 'NULL' THEN {label_list}[{index} + 1] END")


def _all(items: str, var: str, condition: str) -> str:
    """The condition holds for every element of the list (an empty list passes, NULL fails)."""
    return f"coalesce(list_bool_and(list_transform({items}, lambda {var}: coalesce({condition}, false))), true)"


def _number_or_null(leaf: str) -> str:
    return f"coalesce(json_type({leaf}) IN ('NULL', {NUMBER[1:-1]}), true)"


def _object_or_null(leaf: str, kind: str = "OBJECT") -> str:
    return f"coalesce(json_type({leaf}) IN ('NULL', '{kind}'), true)"


def _value_sql(task_type: TaskType, value: str, meta: str, label_list: str, mapped: str) -> tuple[str, str]:
    """(columns raw_label, raw_labels, <label key>, confidence; the checks a labeled line must pass).

    `value` is the label value (a JSON leaf), `meta` the metadata struct (JSON leaves)."""
    null_label = "CAST(NULL AS VARCHAR) AS raw_label"
    if task_type is TaskType.text_classification:
        index = f"CAST({value} AS BIGINT)"
        name = f"{meta}.\"class-name\""
        raw = (f"CASE WHEN json_type({name}) = 'VARCHAR' THEN json_extract_string({name}, '$') "
               f"WHEN {name} IS NULL OR json_type({name}) = 'NULL' THEN {label_list}[{index} + 1] END")
        conf = f"{meta}.confidence"
        columns = (f"CASE WHEN json_type({value}) IN {INTEGER} THEN {raw} END AS raw_label, "
                   "CAST(NULL AS VARCHAR[]) AS raw_labels, "
                   f"{mapped.format(x='raw_label')} AS label, "
                   f"CASE WHEN json_type({conf}) IN {NUMBER} THEN CAST({conf} AS DOUBLE) END AS confidence")
        checks = (f"json_type({value}) IN {INTEGER} AND {index} >= 0 "
                  f"AND (len({label_list}) = 0 OR {index} < len({label_list})) "
                  f"AND raw_label IS NOT NULL AND {_number_or_null(conf)}")
        return columns, checks
    if task_type is TaskType.text_multilabel:
        cmap, cfm = f"{meta}.\"class-map\"", f"{meta}.\"confidence-map\""
        idx = f"json_extract({value}, '$[*]')"
        names = f"list_transform(idx, lambda x: {_name_sql('CAST(x AS BIGINT)', 'cmap', label_list)})"
        confidence = "json_extract(cfm, '$.\"' || CAST(x AS BIGINT) || '\"')"
        columns = (f"{idx} AS idx, {cmap} AS cmap, {cfm} AS cfm, {null_label}, {names} AS raw_labels, "
                   "raw_labels AS labels, "  # a label_map on multi-label output takes the Python path
                   f"list_min(list_transform(idx, lambda x: CAST({confidence} AS DOUBLE))) AS confidence")
        checks = (f"json_type({value}) = 'ARRAY' AND {_object_or_null('cmap')} AND {_object_or_null('cfm')} "
                  f"AND {_all('idx', 'x', f'json_type(x) IN {INTEGER} AND CAST(x AS BIGINT) >= 0')} "
                  f"AND {_all('raw_labels', 'x', 'x IS NOT NULL')} "
                  "AND len(list_distinct(raw_labels)) = len(raw_labels) "
                  f"AND {_all('idx', 'x', _number_or_null(confidence))}")
        return columns, checks
    if task_type is TaskType.bounding_box:
        raw_name = _name_sql("CAST(b->'class_id' AS BIGINT)", "cmap", label_list)
        # Pairs (box, name) and (box, objects[i]): list_zip pads the shorter list with NULLs.
        box = ("{'label': " + mapped.format(x="p[2]") + ", 'left': CAST(p[1]->'left' AS DOUBLE), "
               "'top': CAST(p[1]->'top' AS DOUBLE), 'width': CAST(p[1]->'width' AS DOUBLE), "
               "'height': CAST(p[1]->'height' AS DOUBLE)}")
        columns = (f"json_extract({value}, '$.annotations[*]') AS bx, {meta}.\"class-map\" AS cmap, "
                   f"{meta}.objects AS objs, list_zip(bx, coalesce(json_extract(objs, '$[*]'), []::JSON[])) AS bo, "
                   f"json_extract({value}, '$.image_size') AS size, {null_label}, "
                   f"list_transform(bx, lambda b: {raw_name}) AS raw_labels, "
                   f"list_transform(list_zip(bx, raw_labels), lambda p: {box}) AS boxes, "
                   "list_min(list_transform(bo, lambda p: CASE WHEN p[1] IS NOT NULL THEN "
                   "CAST(p[2]->'confidence' AS DOUBLE) END)) AS confidence")
        numeric = " AND ".join(f"json_type(b, '$.{k}') IN {NUMBER}" for k in ("left", "top", "width", "height"))
        box_ok = f"json_type(b, '$.class_id') IN {INTEGER} AND CAST(b->'class_id' AS BIGINT) >= 0 AND {numeric}"
        confidence_ok = f"p[1] IS NULL OR ({_object_or_null('p[2]')} AND {_number_or_null(CONFIDENCE)})"
        checks = (f"json_type({value}) = 'OBJECT' AND json_type({value}, '$.annotations') = 'ARRAY' "
                  f"AND {_object_or_null('cmap')} AND {_object_or_null('objs', 'ARRAY')} "
                  f"AND {_all('bx', 'b', box_ok)} "
                  f"AND {_all('raw_labels', 'x', 'x IS NOT NULL')} "
                  f"AND {_all('bo', 'p', confidence_ok)} "
                  "AND (size IS NULL OR json_type(size) = 'NULL' OR size = '[]' OR "
                  f"(json_type(size, '$[0].width') IN {NUMBER} AND json_type(size, '$[0].height') IN {NUMBER}))")
        return columns, checks
    # named_entity
    span = ("{'label': " + mapped.format(x="json_extract_string(e, '$.label')") + ", "
            "'start': CAST(e->'startOffset' AS BIGINT), 'end': CAST(e->'endOffset' AS BIGINT)}")
    columns = (f"json_extract({value}, '$.annotations.entities[*]') AS en, {meta}.entities AS ec, "
               "list_zip(en, coalesce(json_extract(ec, '$[*]'), []::JSON[])) AS eo, "
               f"{null_label}, list_transform(en, lambda e: json_extract_string(e, '$.label')) AS raw_labels, "
               f"list_transform(en, lambda e: {span}) AS entities, "
               "list_min(list_transform(eo, lambda p: CASE WHEN p[1] IS NOT NULL THEN "
               "CAST(p[2]->'confidence' AS DOUBLE) END)) AS confidence")
    span_ok = (f"json_type(e, '$.label') = 'VARCHAR' AND json_type(e, '$.startOffset') IN {INTEGER} "
               f"AND json_type(e, '$.endOffset') IN {INTEGER} AND 0 <= CAST(e->'startOffset' AS BIGINT) "
               "AND CAST(e->'startOffset' AS BIGINT) < CAST(e->'endOffset' AS BIGINT)")
    confidence_ok = f"p[1] IS NULL OR ({_object_or_null('p[2]')} AND {_number_or_null(CONFIDENCE)})"
    checks = (f"json_type({value}, '$.annotations.entities') = 'ARRAY' AND {_object_or_null('ec', 'ARRAY')} "
              f"AND {_all('en', 'e', span_ok)} AND {_all('eo', 'p', confidence_ok)}")
    return columns, checks


def _split_sql(split: SplitConfig) -> tuple[str, str]:
    """split_of in SQL: (u, the split from u), u = the first 8 bytes of sha256(salt NUL id), big-endian,
    over 2**64 (UBIGINT -> DOUBLE rounds to nearest, as Python's int / 2**64 does)."""
    u = (f"CAST(CAST(('0x' || left(sha256({_s(split.salt)} || chr(0) || CAST(i AS VARCHAR)), 16)) AS UBIGINT) "
         "AS DOUBLE) / 18446744073709551616.0")
    tail = "'test'" if split.test > 0 else ("'validation'" if split.validation > 0 else "'train'")
    return u, (f"CASE WHEN u < {float(split.train)!r} THEN 'train' "
               f"WHEN u < {float(split.train + split.validation)!r} THEN 'validation' ELSE {tail} END")
