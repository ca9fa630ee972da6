"""Collect's columnar path: DuckDB reads an output manifest in two streaming passes at the same
time; the report's counts, the Parquet table, the jsonl splits and the hf_datasets files come from
the records pass's Arrow batches, with no Python object per line.

It takes output the Python parser (runner.collect.parse) reads the same way and that has no
worker answers: a local manifest of a built-in task type whose lines all have the layout of its
first lines (the same input fields with the same JSON types, then the label attribute and its
metadata in Ground Truth's documented shapes). `Columnar.open` learns the layout from the first
lines with the parser. `Columnar.write` reads the lines twice at the same time: a key pass
(keys_sql: the keys of each line, of its metadata and of its image size) and the records pass
(records_sql: read_json, which refuses values of another shape, then every check in SQL). It
raises NotColumnar at the first line it cannot read the parser's way (a malformed line, a chained
job's attribute, a field of another type), when the key pass saw what the records pass could not
(an extra key, a null that read_json reads as a missing key), or when DuckDB runs out of memory
even on one thread. Collect then discards what was written and takes the Python path, which names
the line and what is wrong with it. Both paths write the same records, and the same jsonl bytes
(tests/test_columnar.py compares them file by file).

One difference is known and left: DuckDB's JSON reader is more lenient than the parser's (orjson).
It reads a trailing comma, and NaN, Infinity or 1e400 as numbers. Every number this path reads must
be finite, so there such a token leaves the manifest to the parser; in a key it does not read, or as
a trailing comma, the line is read as that lenient reader reads it, where the parser would refuse
it as not JSON. Finding those lines costs a regular expression over every line, more than the key
pass itself (1.2 to 1.8 s of CPU per million lines).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from runner.build.quoting import json_pointer, sql_name, sql_string
from runner.collect import parse
from runner.collect.progress import Progress, how_far
from runner.collect.transforms import LEAK_FIELDS, SPLITS, label_order
from runner.errors import ManifestError
from runner.schema import SplitConfig, TaskType, TransformsConfig

log = logging.getLogger(__name__)

SAMPLE_LINES = 1_000  # lines the Python parser reads first, to learn the input fields and types
TYPES = {TaskType.text_classification, TaskType.text_multilabel, TaskType.bounding_box,
         TaskType.named_entity}
LABEL_KEY = {TaskType.text_classification: "label", TaskType.text_multilabel: "labels",
             TaskType.bounding_box: "boxes", TaskType.named_entity: "entities"}
GT_KEYS = parse.GT_METADATA_KEYS  # Ground Truth writes at least one of these in every metadata
# The types read_json reads the label value and the metadata keys each task type needs into (see
# records_sql). Objects become structs, lists lists. A leaf the parser takes as Python's float()
# would (a confidence, a box side) is a DOUBLE: read_json converts what float() converts and
# refuses the rest, as the parser does. Any other leaf stays JSON, typed by its text.
VALUE_SPEC: dict[TaskType, Any] = {
    TaskType.text_classification: "JSON",
    TaskType.text_multilabel: ["JSON"],
    TaskType.bounding_box: {"annotations": [{"class_id": "JSON", **dict.fromkeys(("left", "top", "width", "height"), "DOUBLE")}],
                            "image_size": [dict.fromkeys(("width", "height", "depth"), "JSON")]},
    TaskType.named_entity: {"annotations": {"entities": [dict.fromkeys(("label", "startOffset", "endOffset"), "JSON")]}}}
MAX_STRUCT_LABELS = 64  # a class-map of a job with up to this many labels is read as a struct
STREAM_BUFFER = "8MB"  # DuckDB's streaming_buffer_size for the records pass (see Columnar._connect)
RETRIES_ON_THREADS = 2  # out of memory this many times on several threads: one thread from then on


def _meta_spec(task_type: TaskType, labels: Sequence[str]) -> dict[str, Any]:
    """The metadata keys records_sql reads, and their types."""
    spec: dict[str, Any] = {"failure-reason": "JSON", "type": "JSON"}  # the key pass sees the other keys
    if not labels:  # the labels are read off the output: every class-map's names (see _Output.class_names)
        spec["class-map"] = "MAP(VARCHAR, JSON)"
    if task_type is TaskType.text_classification:
        spec.update({"class-name": "JSON", "confidence": "DOUBLE"})
    elif task_type is TaskType.text_multilabel:
        spec.update({"class-map": _index_map(labels, "JSON"), "confidence-map": _index_map(labels, "DOUBLE")})
    elif task_type is TaskType.bounding_box:
        spec.update({"class-map": _index_map(labels, "JSON"), "objects": [{"confidence": "DOUBLE"}]})
    else:
        spec["entities"] = [{"confidence": "DOUBLE"}]
    return spec


def _index_map(labels: Sequence[str], leaf: str) -> Any:
    """A class-map or confidence-map ({"<class index>": value}): a struct of the job's class indexes
    when it has a few labels (records_sql turns it into a list, looked up by position), else a map.
    A key that is not a class of the job is not read, and a name that is not looked up there
    leaves the line to the parser (_name_text)."""
    if 0 < len(labels) <= MAX_STRUCT_LABELS:
        return {str(i): leaf for i in range(len(labels))}
    return f"MAP(VARCHAR, {leaf})"


def _by_index(entries: str, labels: Sequence[str]) -> tuple[str, Callable[[str], str]]:
    """(a column of the class-map or confidence-map `entries` to read once per line, the SQL of its
    entry for a class index)."""
    if 0 < len(labels) <= MAX_STRUCT_LABELS:
        return "[" + ", ".join(f"{entries}.{sql_name(str(i))}" for i in range(len(labels))) + "]", \
            lambda index: f"[{index} + 1]"
    return entries, lambda index: f"[CAST({index} AS VARCHAR)]"


@dataclass
class Layout:
    """What the first lines taught: the input fields (name, Python type of their values) in order."""

    inputs: list[tuple[str, type]]


def learn(lines: Iterator[bytes], attribute: str, task_type: TaskType,
          labels: Sequence[str] | None) -> Layout | None:
    """The input layout of the first SAMPLE_LINES lines, or None when the columnar path cannot
    take them (a parse problem, fields that vary, nested or only-null input values)."""
    # the lines read as collect's parser reads them (exact_loads): Python's json refuses values nested
    # some thousand deep (RecursionError), which the parser's path reads
    parser = parse.Parser(attribute=attribute, task_type=task_type, labels=list(labels) if labels else None,
                          loads=parse.exact_loads)
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
                if kind not in INPUTS or found.setdefault(key, kind) is not kind:
                    return None
    except ManifestError:
        return None
    if not keys or any(k not in found for k in keys):
        return None
    # DuckDB's names ignore case: an input field must differ from the others, the label attribute,
    # its metadata and the record's own keys by more than case
    names = [k.lower() for k in (*keys, attribute, attribute + parse.METADATA)]
    if len(set(names)) < len(names) or set(names[:len(keys)]) & {*LABEL_KEY.values(), "confidence", "workers"}:
        return None
    if any(not k or "\0" in k or k.startswith("#") for k in keys):
        return None  # DuckDB has no column "" nor one with a NUL; records_sql's own columns start with "#"
    return Layout([(k, found[k]) for k in keys])


class NotColumnar(Exception):
    """A line the columnar path does not read the way the parser does: collect takes the Python path."""


@dataclass
class Result:
    """What one columnar pass wrote and counted."""

    lines: int
    status: dict[str, int]  # objects by status
    reasons: dict[str, int]  # failed objects by failure reason ("unknown": an empty one), in first-seen order
    distribution: dict[str, int]  # label uses of the labeled objects (before the label_map), first-seen order
    jsonl: dict[str, int] | None  # objects per split, when it wrote the jsonl files
    table: int | None  # rows, when it wrote the Parquet table
    skipped: int  # objects left out: not labeled, or below transforms.min_confidence
    labels: list[str] | None = None  # the output's labels, when it was given none (collect.seen_labels)
    hf: dict[str, int] | None = None  # objects per split, when it wrote the Hugging Face files
    without_label: int = 0  # multi-label: labeled objects with no label chosen
    # of the kept objects (transforms.min_confidence), when it is set: their label uses after the
    # label_map, the multi-label ones with no label, and those without a confidence (kept unjudged)
    kept: KeptFigures | None = None
    # the input field whose values' hashes it wrote with each kept object's split (Columnar.write's
    # `inputs`), when it wrote them
    input_hashes: str | None = None


@dataclass
class KeptFigures:
    """What the transforms kept of the labeled objects (collect's _DatasetCount, from the records pass)."""

    objects: int = 0
    distribution: dict[str, int] = field(default_factory=dict)
    without_label: int = 0
    without_confidence: int = 0


class Columnar:
    """One output manifest read by DuckDB: a key pass beside a records pass (see the module doc)."""

    def __init__(self, manifest: Path, attribute: str, task_type: TaskType, labels: Sequence[str],
                 layout: Layout, settings: TransformsConfig, memory_limit: str, threads: int | None = None,
                 line_bytes: float = 0, temp_directory: Path | None = None) -> None:
        self.manifest, self.attribute, self.task_type, self.labels = manifest, attribute, task_type, list(labels)
        self.layout, self.settings, self.memory_limit, self.threads = layout, settings, memory_limit, threads
        self.temp_directory = temp_directory  # where DuckDB spills (None: its own default, .tmp in the working folder)
        self.line_bytes = line_bytes  # the lines' average size in the first lines, when known
        self.batch_rows = batch_rows(line_bytes)

    @staticmethod
    def takes(task_type: TaskType | None, settings: TransformsConfig) -> TypeGuard[TaskType]:
        """Whether the columnar path can take output of this task type with these transforms."""
        # a label_map merging multi-labels takes the highest confidence of theirs: the Python path does that
        return task_type in TYPES and not (settings.label_map and task_type is TaskType.text_multilabel)

    @classmethod
    def open(cls, manifest: Path, *, attribute: str, task_type: TaskType | None,
             labels: Sequence[str], settings: TransformsConfig, memory_limit: str = "140MB",
             threads: int | None = None, temp_directory: Path | None = None) -> Columnar | None:
        """The columnar reading of the manifest, or None when its first lines already need the
        Python path (see the module doc). `memory_limit`, `threads` and `temp_directory`: DuckDB's
        (backend.duckdb's; threads None: one per core)."""
        if not cls.takes(task_type, settings) or not manifest.is_file():
            return None
        sample = [0, 0]  # lines, bytes

        def counted(src: Iterator[bytes]) -> Iterator[bytes]:
            for line in src:
                sample[0] += 1
                sample[1] += len(line)
                yield line

        with open(manifest, "rb") as src:
            layout = learn(counted(src), attribute, task_type, labels or None)
        key = settings.split.key
        if layout is None or (key is not None and dict(layout.inputs).get(key) not in (str, int)):
            return None  # a split key that is not a string or integer field: the parser names the object
        return cls(manifest, attribute, task_type, labels, layout, settings, memory_limit, threads,
                   line_bytes=sample[1] / max(sample[0], 1), temp_directory=temp_directory)

    def write(self, *, jsonl: Path | None, table: Path | None, listing: Path | None = None,
              hf: HfOutput | None = None, inputs: Path | None = None, progress: Progress | None = None) -> Result:
        """Read the manifest (the key pass and the records pass at the same time): count what the
        report needs, write `jsonl/{split}.jsonl` into the folder `jsonl`, the Parquet table to
        the file `table` and the failed and unlabeled objects to the file `listing`
        (report.NOT_LABELED), and the Hugging Face split files as `hf` says (any may be None).
        With `inputs`, and the jsonl or Hugging Face files, and a string input field of
        transforms.LEAK_FIELDS: a Parquet file of each kept object's split code (s) and 64-bit
        hash of that field's JSON text (h, NULL without a value), for collect.split_leaks
        (Result.input_hashes names the field).

        Raises NotColumnar at the first line it cannot read the parser's way; what it wrote by
        then is the caller's to discard. DuckDB out of memory on several threads (each holds
        buffers of its own to read the manifest, and their first allocations now and then come
        together) tries once more, then goes on on one thread, from the line it had reached; out
        of memory there too, the parser's path takes it."""
        import duckdb
        import pyarrow as pa

        # a class index of 2**63 - 1 overflows records_sql's 1-based lookup: OutOfRangeException
        data_errors = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.OutOfRangeException,
                       duckdb.OutOfMemoryException)
        # The system allocator gives the batches' memory back at once; mimalloc, pyarrow's default,
        # keeps some 60 MB of it (a process-wide setting: gtrun's other Arrow work is done by then).
        pa.set_memory_pool(pa.system_memory_pool())
        out = _Output(self, jsonl, table, listing, hf, inputs if jsonl is not None or hf is not None else None)
        threads, out_of_memory = self.threads, 0
        # The key pass and the split codes run meanwhile, on a database of their own, one thread
        # each: on what the records pass leaves of the cores while Python writes its batches.
        side = self._connect(duckdb, 1)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gtrun-keys")
        boxes = self.task_type is TaskType.bounding_box
        key_cursor = side.cursor()
        keys = pool.submit(_key_pass, key_cursor, keys_sql(self.manifest, self.attribute, self.layout, depths=boxes))
        try:
            if threads == 1:
                keys.result()  # backend.duckdb.threads=1: the key pass first, then the records pass
            while True:
                try:
                    with self._connect(duckdb, threads) as con:
                        self._read(con, side, out, keys, progress)
                    out.keys = keys.result()
                    break
                except (duckdb.Error, OSError) as exc:
                    # The data's errors (not JSON, a value of another shape) and running out of
                    # memory: the parser says what is wrong, or reads it with less memory. Any other
                    # error is gtrun's own and is raised. DuckDB's errors reach Arrow's reader of a
                    # DuckDB stream as OSError ("<Kind> Error: ...").
                    error = _duckdb_error(exc)
                    if isinstance(error, duckdb.OutOfMemoryException) and threads != 1:
                        out_of_memory += 1
                        if out_of_memory == RETRIES_ON_THREADS:
                            threads = 1
                        log.info("collect: DuckDB ran out of memory under %s (%s): %s goes on from line %d on %s",
                                 self.memory_limit, _reason(exc), self.manifest, out.offset + 1,
                                 "one thread" if threads == 1 else "the same threads")
                        continue
                    if not isinstance(error, data_errors):
                        raise
                    raise NotColumnar(_reason(exc)) from None
            return out.result()
        finally:
            key_cursor.interrupt()  # the key pass, when the records pass stopped first (a cursor's own)
            pool.shutdown(wait=True, cancel_futures=True)
            key_cursor.close()
            side.close()
            out.close()

    def _connect(self, duckdb: Any, threads: int | None) -> Any:
        """A DuckDB database of its own, under backend.duckdb's memory limit, on `threads` threads
        (None: one per core), whose query results stream to Python in order."""
        config: dict[str, Any] = {"memory_limit": self.memory_limit, "preserve_insertion_order": True}
        if threads:
            config["threads"] = threads
        if self.temp_directory is not None:
            config["temp_directory"] = str(self.temp_directory)
        con = duckdb.connect(config=config)
        # DuckDB reads ahead of Python into this buffer; a larger one uses the cores better while
        # Python writes a batch, and holds more rows (it is part of the memory limit)
        con.execute(f"SET streaming_buffer_size = '{STREAM_BUFFER}'")
        con.execute("SET enable_progress_bar = false")  # gtrun reports its own progress
        return con

    def _read(self, con: Any, side: Any, out: _Output, keys: Future[tuple[int, ...]], progress: Progress | None) -> None:
        """The records pass on `con`, from the line `out` has reached, into `out`, with the split
        codes from `side` (by line index), or from records_sql's "#split" (by transforms.split.key);
        it stops when the key pass (`keys`) has found lines with other keys. `progress` hears how
        far it is after each batch."""
        sql = records_sql(self.manifest, self.attribute, self.task_type, self.labels, self.layout, self.settings,
                          offset=out.offset, jsonl=bool(out.files), table=out.table is not None or out.hf is not None,
                          hashed=out.hashed)
        size = self.manifest.stat().st_size if self.line_bytes else None  # the share read: estimated
        split = bool(out.files) or out.hf is not None  # the outputs that need each object's split
        keyed = self.settings.split.key is not None  # records_sql's "#split", else the line index's
        splits = _Splits(side, self.settings.split, out.offset) if split and not keyed else None
        try:
            for batch in con.sql(sql).to_arrow_reader(self.batch_rows):
                if keys.done() and keys.result()[1]:
                    break
                here = None  # the batch's split codes, when an output needs them
                if splits is not None:
                    here = splits.codes(out.offset, batch.num_rows)
                elif split:
                    here = batch.column("#split")
                out.add(batch, here)
                if progress is not None:
                    progress.say(how_far(out.offset, out.offset * self.line_bytes, size))
        finally:
            if splits is not None:
                splits.close()
        other = keys.result()[1]
        if other:
            raise NotColumnar(f"{other} lines with other keys than the first lines")


def _key_pass(cursor: Any, sql: str) -> tuple[int, ...]:
    """keys_sql's row. The key pass is on one thread: its running out of memory, like a line it
    cannot parse, leaves the manifest to the parser."""
    import duckdb

    try:
        return tuple(cursor.execute(sql).fetchall()[0])
    except duckdb.Error as exc:
        raise NotColumnar(f"key pass: {_reason(exc)}") from None


class _Output:
    """What one Columnar.write counts and writes, batch by batch."""

    def __init__(self, columnar: Columnar, jsonl: Path | None, table: Path | None, listing: Path | None,
                 hf: HfOutput | None = None, inputs: Path | None = None) -> None:
        self.task_type, self.table, self.hf = columnar.task_type, table, hf
        # the input field whose hashes go to the file `inputs` (records_sql's "#h"), if it has one
        self.hashed = next((name for name, kind in columnar.layout.inputs if name in LEAK_FIELDS and kind is str),
                           None) if inputs is not None else None
        self.inputs = inputs if self.hashed is not None else None
        self.inputs_writer: Any = None
        self.hf_writers: dict[str, Any] = {}
        self.hf_counts = dict.fromkeys(SPLITS, 0)
        self.record = [name for name, _ in columnar.layout.inputs] + [LABEL_KEY[columnar.task_type], "confidence",
                                                                       "workers"]
        self.keys: tuple[int, ...] | None = None  # the key pass's figures (keys_sql)
        self.raw = bool(columnar.settings.label_map)  # records_sql has a "#raw" column
        # given no labels: the first name of each class index in the class-maps (records_sql's "#cmap"),
        # and, single-label, in the labeled lines' value and class-name ("#pair")
        self.class_map: dict[int, str] | None = None if columnar.labels else {}
        self.value_names: dict[int, str] | None = \
            {} if not columnar.labels and columnar.task_type is TaskType.text_classification else None
        self.status: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.distribution: dict[str, int] = {}
        self.without_label = 0  # multi-label: labeled objects with an empty list of labels
        filtered = columnar.settings.min_confidence is not None or columnar.settings.min_agreement is not None
        self.kept_figures = KeptFigures() if filtered else None
        self.split_counts = dict.fromkeys(SPLITS, 0)
        self.offset = self.kept = self.values = self.metas = self.depths = 0
        self.writer: Any = None
        self.files: dict[str, Any] = {}
        if jsonl is not None:
            self.files = {name: open(jsonl / f"{name}.jsonl", "wb") for name in SPLITS}
        self.listing = open(listing, "wb") if listing is not None else None

    def add(self, batch: Any, here: Any) -> None:
        """Count and write one batch of records_sql's rows; `here`: their split codes (when jsonl or
        hf_datasets is written)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        n = batch.num_rows
        ok = batch.column("#ok")
        if ok.null_count or ok.false_count:
            bad = self.offset + next(i for i, x in enumerate(ok.to_pylist()) if not x) + 1
            raise NotColumnar(f"line {bad} (blank lines not counted)")
        labeled, failed = batch.column("#labeled"), batch.column("#failed")
        n_labeled, n_failed = labeled.true_count, failed.true_count
        for name, count in (("labeled", n_labeled), ("failed", n_failed), ("unlabeled", n - n_labeled - n_failed)):
            if count:
                self.status[name] = self.status.get(name, 0) + count
        if n_failed:
            _add_counts(self.reasons, pc.value_counts(pc.filter(batch.column("#reason"), failed)))
        if self.listing is not None and n_labeled != n:
            self.list_not_labeled(batch, labeled)
        # the labels before the label_map: "#raw" when there is one, else the label key's own
        used = batch.column("#raw" if self.raw else LABEL_KEY[self.task_type])
        used = used if n_labeled == n else pc.filter(used, labeled)
        if self.task_type is TaskType.text_multilabel and n_labeled:
            self.without_label += _empty_lists(used)
        if pa.types.is_list(used.type):
            used = pc.list_flatten(used)
        if pa.types.is_struct(used.type):
            used = pc.struct_field(used, "label")
        _add_counts(self.distribution, pc.value_counts(used))
        if self.class_map is not None:
            self.class_names(batch.column("#cmap"))
        if self.value_names is not None:
            self.index_names(batch.column("#pair"))
        self.values += batch.column("#value").true_count
        self.metas += batch.column("#meta").true_count
        if self.task_type is TaskType.bounding_box:
            self.depths += batch.column("#depth").true_count
        keep = batch.column("#keep")
        kept = labeled if keep.true_count == n else pc.and_(labeled, keep)
        count = kept.true_count
        self.kept += count
        every = count == n  # the usual batch: nothing to leave out, no copy of its rows
        if self.kept_figures is not None and count:
            self.count_kept(batch, None if every else kept, count)
        if here is not None and not every:
            here = pc.filter(here, kept)  # the kept objects' split codes
        if here is not None and here.null_count:
            raise NotColumnar("an object without a value for transforms.split.key")  # the parser names it
        if self.files:
            # the kept lines in split order (a stable sort keeps their order within a split)
            text = batch.column("#json")
            if not every:
                text = pc.filter(text, kept)
            text = pc.take(text, pc.sort_indices(here))
            sizes: dict[int, int] = {}
            _add_counts(sizes, pc.value_counts(here))
            start = 0
            for code, name in enumerate(SPLITS):
                size = sizes.get(code, 0)
                if size:
                    self.files[name].write(_contiguous_values(text.slice(start, size)))
                    self.split_counts[name] += size
                    start += size
        if self.table is not None or self.hf is not None:
            rows = batch.select(self.record)
            if not every:
                rows = pc.filter(rows, kept)
            if self.table is not None:
                if self.writer is None:
                    self.writer = pq.ParquetWriter(self.table, rows.schema, use_dictionary=False)
                self.writer.write_batch(rows)
            if self.hf is not None:
                self.write_hf(rows, here)
        if self.inputs is not None and count:
            hashes = batch.column("#h")
            pairs = pa.record_batch([here, hashes if every else pc.filter(hashes, kept)], names=["s", "h"])
            if self.inputs_writer is None:
                self.inputs_writer = pq.ParquetWriter(self.inputs, pairs.schema, use_dictionary=False,
                                                      compression="none")
            self.inputs_writer.write_batch(pairs)
        self.offset += n

    def count_kept(self, batch: Any, kept: Any, count: int) -> None:
        """Add the kept rows (`kept`: their mask, None when all are) to kept_figures."""
        import pyarrow as pa
        import pyarrow.compute as pc

        figures = self.kept_figures
        assert figures is not None
        figures.objects += count
        labels = batch.column(LABEL_KEY[self.task_type])  # after the label_map
        confidence = batch.column("confidence")
        if kept is not None:
            labels, confidence = pc.filter(labels, kept), pc.filter(confidence, kept)
        figures.without_confidence += confidence.null_count
        if pa.types.is_list(labels.type):
            if self.task_type is TaskType.text_multilabel:
                figures.without_label += _empty_lists(labels)
            labels = pc.list_flatten(labels)
        if pa.types.is_struct(labels.type):
            labels = pc.struct_field(labels, "label")
        _add_counts(figures.distribution, pc.value_counts(labels))

    def write_hf(self, rows: Any, here: Any) -> None:
        """The kept rows into the Hugging Face split files, their labels as class indices (the
        parser's write_hf_datasets writes the same rows, a split's file only when it has some)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        hf = self.hf
        assert hf is not None
        key = LABEL_KEY[self.task_type]
        column = rows.column(key)
        rows = rows.set_column(rows.schema.get_field_index(key), key, _class_ids(column, hf.labels))
        if hf.schema is None:
            hf.schema = hf.make_schema(rows.schema)
        rows = rows.cast(hf.schema)
        for code, name in enumerate(SPLITS):
            part = rows.filter(pc.equal(here, pa.scalar(code, pa.int8())))
            if not part.num_rows:
                continue
            if name not in self.hf_writers:
                self.hf_writers[name] = pq.ParquetWriter(hf.folder / f"{name}.parquet", hf.schema)
            self.hf_writers[name].write_batch(part)
            self.hf_counts[name] += part.num_rows

    def list_not_labeled(self, batch: Any, labeled: Any) -> None:
        """Write the batch's failed and unlabeled objects as report.not_labeled_line writes them:
        records_sql's "#listed" after the object id (the line's index)."""
        import pyarrow.compute as pc

        # Arrow arrays only: converting a Python value to Arrow (a list, a scalar) would load pandas
        rows = pc.indices_nonzero(pc.invert(labeled))
        texts = batch.column("#listed").take(rows).to_pylist()
        start, listing = self.offset, self.listing
        assert listing is not None  # add() lists objects when there is a listing to write
        listing.write("".join(f'{{"object_id":"{start + row}{text}'
                              for row, text in zip(rows.to_pylist(), texts, strict=True)).encode())

    def class_names(self, entries: Any) -> None:
        """Add a batch's class-map entries ({key, value: JSON text}) as collect.seen_labels reads
        them: for each class index (a key of digits), the first name, as str() of its JSON value."""
        import pyarrow.compute as pc

        flat = pc.list_flatten(entries)
        if not len(flat):
            return
        # "key NUL value" in first-seen order: a value's JSON text holds no raw NUL, a key may
        pairs = pc.binary_join_element_wise(pc.struct_field(flat, "key"),
                                            pc.fill_null(pc.struct_field(flat, "value"), ""), "\0")
        class_map = self.class_map
        assert class_map is not None  # add() reads the class-maps when no labels were given
        for pair in pc.unique(pairs).to_pylist():
            key, _, text = pair.rpartition("\0")
            if parse.index_text(key) and text:  # "": a JSON null, not a name
                class_map.setdefault(int(key), str(json.loads(text)))

    def index_names(self, pairs: Any) -> None:
        """Add a batch's single-label (class index, class-name) pairs ("index NUL name", NULL for a
        line not labeled) as collect.seen_labels reads them: the first name of each index."""
        import pyarrow.compute as pc

        names = self.value_names
        assert names is not None  # add() reads the pairs when no labels were given
        for pair in pc.unique(pairs).to_pylist():
            if pair is not None:
                index, _, name = pair.partition("\0")
                names.setdefault(int(index), name)

    def result(self) -> Result:
        """The figures, once the key pass's agree with what the records pass read.

        What read_json could not see, from the key pass: the lines that have the label attribute
        are the labeled ones and the failed ones with a label value (not one of an unlabeled line,
        nor a failed one's null); those that name "failure-reason" are the failed ones (not a null
        one of a labeled line); those whose metadata names one of Ground Truth's keys are those with
        a metadata object (the parser reads no other as label metadata); those that name "depth"
        have one (not a null one, which the parser refuses)."""
        if not self.offset:
            raise NotColumnar("no lines")  # the parser's path says what an empty output holds
        assert self.keys is not None
        lines, _, with_value, with_reason, with_gt_key, with_depth = self.keys
        seen = {"lines": (lines, self.offset), "label values": (with_value, self.values),
                "failure-reasons": (with_reason, self.status.get("failed", 0)),
                "Ground Truth metadata": (with_gt_key, self.metas)}
        if self.task_type is TaskType.bounding_box:
            seen["depths"] = (with_depth, self.depths)
        for what, (named, read) in seen.items():
            if named != read:
                raise NotColumnar(f"{what}: {named} named in the lines' keys, {read} read")
        return Result(lines=self.offset, status=self.status, reasons=self.reasons, distribution=self.distribution,
                      jsonl=self.split_counts if self.files else None,
                      table=self.kept if self.table is not None else None, skipped=self.offset - self.kept,
                      labels=None if self.class_map is None else label_order(
                          {**(self.value_names or {}), **self.class_map}, self.distribution),
                      hf=self.hf_counts if self.hf is not None else None, without_label=self.without_label,
                      kept=self.kept_figures, input_hashes=self.hashed)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        for writer in self.hf_writers.values():
            writer.close()
        if self.listing is not None:
            self.listing.close()
        if self.writer is not None:
            self.writer.close()
        if self.inputs_writer is not None:
            self.inputs_writer.close()


@dataclass
class HfOutput:
    """Where and how the Hugging Face split files go (transforms.write_hf_datasets' files): the
    folder, the label list the class indices count in (after the label_map), and the schema with
    the `datasets` features, made from the first batch's by `make_schema`."""

    folder: Path
    labels: list[str]
    make_schema: Callable[[Any], Any]
    schema: Any = None


def _class_ids(column: Any, labels: Sequence[str]) -> Any:
    """A label column (label, labels, or boxes' / entities' label) with each name as its index in
    `labels`, as int64; a name not there leaves the output to the parser, which names the object."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def ids(names: Any) -> Any:
        found = pc.index_in(names, value_set=pa.array(list(labels), pa.string()))
        if found.null_count != names.null_count:
            raise NotColumnar("a label that is not in the label list")
        return found.cast(pa.int64())

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return ids(column)
    items = pc.list_flatten(column)
    if pa.types.is_struct(items.type):
        names = [items.type.field(i).name for i in range(items.type.num_fields)]
        fields = [ids(items.field(i)) if name == "label" else items.field(i) for i, name in enumerate(names)]
        items = pa.StructArray.from_arrays(fields, names=names, mask=items.is_null() if items.null_count else None)
    else:
        items = ids(items)
    offsets = pc.subtract(column.offsets, column.offsets[0])
    return pa.ListArray.from_arrays(offsets, items, mask=column.is_null() if column.null_count else None)


BATCH_BYTES = 3 << 20  # the manifest text an Arrow batch holds, at most: memory stays flat in line width
VECTOR = 2_048  # DuckDB's vector size: a batch is whole vectors


def batch_rows(line_bytes: float) -> int:
    """Rows per Arrow batch for lines of this average size: at most about BATCH_BYTES, in whole
    vectors, from 2,048 to 8,192 (8,192 when the size is unknown)."""
    if line_bytes <= 0:
        return 4 * VECTOR
    return max(VECTOR, min(4 * VECTOR, int(BATCH_BYTES / line_bytes) // VECTOR * VECTOR))


class _Splits:
    """The split codes of objects `start`, `start` + 1, ... (a line's index is its object id),
    computed by DuckDB a chunk at a time on a thread of their own, the next chunk while the batches
    use this one. Blank lines have none: read_json skips them, and the parser does not count them
    as objects either."""

    CHUNK = 1 << 18

    def __init__(self, con: Any, split: SplitConfig, start: int) -> None:
        # A cursor of its own: a query on the reading cursor would end its streaming result.
        self.con, self.split, self.start = con.cursor(), split, start
        self.array: Any = None  # the chunk of codes in use (a pyarrow array)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gtrun-splits")
        self.next = self.pool.submit(self._chunk, start)

    def _chunk(self, start: int) -> Any:
        sql = split_code_sql(self.split, start, start + self.CHUNK)
        return self.con.sql(sql).to_arrow_table().column("s").combine_chunks()

    def codes(self, offset: int, n: int) -> Any:
        """The codes of objects offset .. offset + n - 1 (each call's objects follow the last's)."""
        import pyarrow as pa

        parts = []
        while n:
            if self.array is None or offset >= self.start + len(self.array):
                if self.array is not None:
                    self.start += len(self.array)
                self.array = self.next.result()
                self.next = self.pool.submit(self._chunk, self.start + len(self.array))
            part = self.array.slice(offset - self.start, n)
            parts.append(part)
            offset, n = offset + len(part), n - len(part)
        return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.con.close()


_K = TypeVar("_K")  # a counted value: a label name, a split code


def _empty_lists(lists: Any) -> int:
    """How many of the (non-null) lists are empty: those no value has as its parent. Without numpy,
    which pc.equal(lengths, 0) imports for its Python scalar, some 30 MB more memory for collect.

    >>> import pyarrow as pa
    >>> lists = pa.array([["a"], [], ["b", "c"], [], []])
    >>> _empty_lists(lists), _empty_lists(lists.slice(1, 3)), _empty_lists(lists.slice(0, 0))
    (3, 2, 0)
    """
    import pyarrow.compute as pc

    return len(lists) - int(pc.count_distinct(pc.list_parent_indices(lists)).as_py())


def _add_counts(into: dict[_K, int], counted: Any) -> None:
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
                 "Invalid Input Error": duckdb.InvalidInputException, "Conversion Error": duckdb.ConversionException,
                 "Out of Range Error": duckdb.OutOfRangeException}
        kind = next((k for prefix, k in kinds.items() if text.startswith(prefix)), duckdb.Error)
        return kind(text)
    return None


def _reason(exc: BaseException) -> str:
    """The first line of DuckDB's error, for a log line or NotColumnar, without where in the manifest
    it was: for a line that is not JSON DuckDB names the line after it, and the parser's error names
    the line anyway."""
    return re.sub(r' in file ".*?"(?:, at byte \d+)?,? in line \d+', "", str(exc).splitlines()[0])


def _contiguous_values(lines: Any) -> memoryview:
    """The bytes of a string array's values, back to back (a slice of a batch's lines in split order)."""
    offsets = lines.buffers()[1]
    data = lines.buffers()[2]
    width = 8 if str(lines.type) == "large_string" else 4
    fmt = "<q" if width == 8 else "<i"
    first = struct.unpack_from(fmt, offsets, lines.offset * width)[0]
    last = struct.unpack_from(fmt, offsets, (lines.offset + len(lines)) * width)[0]
    return memoryview(data)[first:last]


# -- the SQL ----------------------------------------------------------------------------------------


def lines_sql(manifest: Path) -> str:
    """The manifest's lines, one VARCHAR each (JSON never holds a raw \\x01: no line splits). A line
    of white space only, which read_json skips as it skips blank lines, is not JSON to json_keys: the
    key pass stops there and the parser reads the manifest (filtering such lines out here cost a
    third of the time read_csv takes)."""
    return (f"SELECT line FROM read_csv({sql_string(str(manifest))}, columns = {{'line': 'VARCHAR'}}, header = false, "
            "delim = chr(1), quote = '', escape = '', auto_detect = false, strict_mode = false, "
            "buffer_size = 4194304)")


def _duckdb_type(spec: Any) -> str:
    """A structure of VALUE_SPEC's form (see _meta_spec too) as a DuckDB type, for read_json's columns."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list):
        return _duckdb_type(spec[0]) + "[]"
    return "STRUCT(" + ", ".join(f"{sql_name(k)} {_duckdb_type(v)}" for k, v in spec.items()) + ")"


def keys_sql(manifest: Path, attribute: str, layout: Layout, *, depths: bool = False) -> str:
    """The key pass, one row: (lines; lines the records pass cannot read: their keys are not the
    input fields, then optionally the label attribute, then its metadata, in that order and once
    each, or the metadata names a "worker-response-ref"; lines with the label attribute; lines
    whose metadata names a "failure-reason"; lines whose metadata names one of Ground Truth's keys
    (GT_KEYS); lines whose image size names a "depth", when `depths`, else 0).

    read_json (records_sql) reads a missing key as a JSON null and does not see keys it was not
    asked for: this pass, which parses each line once for the keys of three of its objects, tells
    Columnar.write what the parser would see there (see _Output.result)."""
    names = [name for name, _ in layout.inputs]
    meta_key = attribute + parse.METADATA
    paths = _list(["$", json_pointer(meta_key)] + ([json_pointer(attribute, "image_size", "0")] if depths else []))
    # CASE tries one cheap comparison after another, each on the lines the ones before left
    # (IN and list_has_any cost about as much as the rest of the pass): the usual first
    layouts = ([*names, attribute, meta_key], [*names, meta_key], names)  # labeled, failed, unlabeled
    known = " ".join(f"WHEN k[1] = {_list(keys)} THEN false" for keys in layouts)
    likely = ["type", "job-name", "creation-date", "human-annotated", "failure-reason"]
    gt = " ".join(f"WHEN list_contains(k[2], {sql_string(key)}) THEN true"
                  for key in likely + sorted(GT_KEYS - set(likely)))
    # count_if of a NULL is not counted; of NULLs only (no line has that object) it is NULL, not 0
    depth = "count_if(coalesce(list_contains(k[3], 'depth'), false))" if depths else "0"
    return (f"SELECT count(*), count_if(CASE {known} ELSE true END "
            "OR coalesce(list_contains(k[2], 'worker-response-ref'), false)), "
            f"count_if(coalesce(list_contains(k[1], {sql_string(attribute)}), false)), "
            "count_if(coalesce(list_contains(k[2], 'failure-reason'), false)), "
            f"count_if(CASE {gt} ELSE false END), {depth} "
            f"FROM (SELECT json_keys(line, {paths}) AS k FROM ({lines_sql(manifest)}))")


def records_sql(manifest: Path, attribute: str, task_type: TaskType, labels: Sequence[str],
                layout: Layout, settings: TransformsConfig, offset: int = 0, *, jsonl: bool = True,
                table: bool = True, hashed: str | None = None) -> str:
    """One row per manifest line, in order: the typed input fields, the label key (after the
    label_map), confidence (object_confidence) and workers (unknown: NULL), then the columns
    Columnar.write reads, whose names start with "#": labeled and failed (the object's status, as
    booleans: pyarrow would load pandas to compare a column with a Python string), reason, raw (the
    label name or names before the label_map, when there is one), ok (the line is in a shape this
    path reads the way the parser does), keep (transforms.min_confidence), json (flat_record as the
    JSON line json.dumps writes), value (a labeled or failed object's label value is there), meta
    (the metadata is an object), depth (boxes: the image size has a depth) and, when the split has
    a key (transforms.split.key), split (the object's split code by its key's value, NULL when it
    has none: _Output.add leaves a kept one to the parser, which names it), and when no labels are
    given cmap (the class-map's entries) and, single-label, pair (a labeled line's class index and
    name, "index NUL name"). `offset`: the lines
    to skip (parsed, not checked). Without `jsonl`, json is NULL; without `table`, the input fields
    whose value only the table needs (strings) are NULL.

    read_json parses the lines into the keys this path reads, whose leaves stay JSON. It refuses a
    line that is not an object, a duplicate key, and a value that is not the object or list it was
    asked for; a missing key and a JSON null both read as NULL (the key pass tells them apart where
    the parser does). A leaf's text (a cast to VARCHAR, no copy) is its value as DuckDB's JSON
    writer puts it, so plain string operations type and read it (_string, _int, _number): JSON
    functions would parse every leaf again."""
    meta_key = attribute + parse.METADATA
    names = [name for name, _ in layout.inputs]
    columns = {**dict.fromkeys(names, "JSON"), attribute: _duckdb_type(VALUE_SPEC[task_type]),
               meta_key: _duckdb_type(_meta_spec(task_type, labels))}
    # a line over 4 MB (its JSON object) is refused: the parser's path takes it
    read = (f"read_json({sql_string(str(manifest))}, format = 'newline_delimited', maximum_object_size = 4194304, columns = {{"
            + ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in columns.items()) + "})")
    texts = ", ".join(f"CAST({sql_name(n)} AS VARCHAR) AS {_col(i)}" for i, n in enumerate(names))
    typed = ", ".join(f"{INPUTS[kind][1].format(t=_col(i))} AS f_{i}" for i, (_, kind) in enumerate(layout.inputs))
    inputs_ok = " AND ".join(f"({_col(i)} IS NULL OR {INPUTS[kind][2].format(t=_col(i), value=f'f_{i}')})"
                             for i, (_, kind) in enumerate(layout.inputs))
    types = [t for t, kind in parse.TASK_TYPES.items() if kind is task_type]
    type_ok = f"(m.type IS NULL OR CAST(m.type AS VARCHAR) IN ({', '.join(sql_string(json.dumps(t)) for t in types)}))"
    leaves, stages, checks, label_json = _value_sql(task_type, labels, settings.label_map)
    steps = "".join(f"), step{i} AS (\n  SELECT *, {step}\n  FROM {'typed' if i == 1 else f'step{i - 1}'}\n"
                    for i, step in enumerate(stages, 1))
    key = LABEL_KEY[task_type]
    raw = "raw_label" if task_type is TaskType.text_classification else "raw_labels"
    # flat_record as the JSON line json.dumps writes (see _python_json): the input fields' own JSON
    # text (a float's as its value), then the label key, confidence, workers
    parts = [f"{sql_string(('{' if i == 0 else ',') + json.dumps(n, ensure_ascii=False) + ':')}, "
             f"coalesce({f'CAST(f_{i} AS VARCHAR)' if kind is float else _col(i)}, 'null')"
             for i, (n, kind) in enumerate(layout.inputs)]
    # report.not_labeled_line after its object id (which _Output.list_not_labeled puts in front)
    listed = (f"""concat('","status":"', status, '","failure_reason":', coalesce(CAST(m."failure-reason" AS VARCHAR), """
              f"""'null'), ',"inputs":', {', '.join(parts)}, '}}}}', chr(10))""")
    parts.append(f"{sql_string(',' + json.dumps(key) + ':')}, {label_json or f'to_json({sql_name(key)})'}")
    parts.append("',\"confidence\":', coalesce(CAST(confidence AS VARCHAR), 'null'), ',\"workers\":null}', chr(10)")
    keep = "true" if settings.min_confidence is None else f"coalesce(confidence >= {float(settings.min_confidence)!r}, true)"
    depth = "size[1].depth IS NOT NULL" if task_type is TaskType.bounding_box else "false"
    key_text = _key_text(layout, settings.split.key)
    # given no labels, single-label: each labeled line's class index and its name (collect.seen_labels)
    pair = ("CASE WHEN status = 'labeled' THEN concat(CAST(vi AS VARCHAR), chr(0), raw_label) END AS \"#pair\","
            if not labels and task_type is TaskType.text_classification else "")
    # the typed value of a string field is read (json_extract_string) for the table only
    record = ", ".join(f"{f'f_{i}' if table or kind is not str else 'CAST(NULL AS VARCHAR)'} AS {sql_name(n)}"
                       for i, (n, kind) in enumerate(layout.inputs))
    # the field's JSON text, as DuckDB's JSON writer spells it: one text for one string value
    hash_sql = "".join(f', CASE WHEN {_col(i)} IS NOT NULL THEN hash({_col(i)}) END AS "#h"'
                       for i, (n, _) in enumerate(layout.inputs) if n == hashed)
    return f"""
WITH parsed AS (
  SELECT {texts}, {sql_name(attribute)} AS value, {sql_name(meta_key)} AS m
  FROM {read}{f" OFFSET {int(offset)}" if offset else ""}
), leaves AS (
  SELECT *, {leaves}
  FROM parsed
), typed AS (
  SELECT *, {typed},
         CASE WHEN m IS NULL THEN 'unlabeled' WHEN m."failure-reason" IS NOT NULL THEN 'failed' ELSE 'labeled' END AS status
  FROM leaves
{steps}), texts AS (
  SELECT *, concat({', '.join(parts)}) AS jt{f", {_digest(settings.split, key_text)} AS h" if key_text else ""}
  FROM step{len(stages)}
)
SELECT {record}, {sql_name(key)}, confidence, CAST(NULL AS BIGINT) AS workers,
       status = 'labeled' AS "#labeled", status = 'failed' AS "#failed",
       CASE WHEN status = 'failed' THEN {_reason_sql('CAST(m."failure-reason" AS VARCHAR)')} END AS "#reason",
       {f'{raw} AS "#raw",' if settings.label_map else ""}
       {'map_entries(m."class-map") AS "#cmap",' if not labels else ""}
       {pair}
       CASE WHEN status <> 'labeled' THEN {_python_json(listed)} END AS "#listed",
       coalesce({inputs_ok} AND CASE status
         WHEN 'unlabeled' THEN value IS NULL
         WHEN 'failed' THEN {type_ok} AND starts_with(CAST(m."failure-reason" AS VARCHAR), '"')
         ELSE {type_ok} AND {checks} END,
         false) AS "#ok",
       {keep} AS "#keep",
       {_python_json('jt') if jsonl else 'CAST(NULL AS VARCHAR)'} AS "#json",
       status <> 'unlabeled' AND value IS NOT NULL AS "#value",
       m IS NOT NULL AS "#meta",
       {depth} AS "#depth"{f", {_split_code(settings.split)} AS {sql_name('#split')}" if key_text else ""}{hash_sql}
FROM texts
"""


def _reason_sql(text: str) -> str:
    """The failure reason the report counts for the JSON text `text` of a failed object's
    failure-reason: its string, "unknown" when it is empty (report.ReportBuilder.add)."""
    return f"coalesce(nullif({_string(text)}, ''), 'unknown')"


def _key_text(layout: Layout, key: str | None) -> str | None:
    """The SQL of split_key's text for the input field `key` (transforms.split.key): a string
    field's value, an integer's digits (NULL when the line has no such value); None without a key."""
    if key is None:
        return None
    i, kind = next((i, kind) for i, (name, kind) in enumerate(layout.inputs) if name == key)
    return f"f_{i}" if kind is str else f"CAST(f_{i} AS VARCHAR)"


def _python_json(text: str) -> str:
    """The JSON text `text` (DuckDB's) with the escapes json.dumps writes: DuckDB writes the control
    characters without a short escape as \\u00XX in upper case (\\u001B), Python in lower case. Only
    a text with a "\\u00" is rewritten: an escaped backslash is set aside first (as chr(1), which
    JSON text never holds raw), so that every backslash left starts an escape."""
    escapes = [f"\\u00{c:02X}" for c in (0x0B, 0x0E, 0x0F, *range(0x1A, 0x20))]  # with a hex letter; \n \f \r are short
    fixed = f"replace({text}, '\\\\', chr(1))"
    for escape in escapes:
        fixed = f"replace({fixed}, {sql_string(escape)}, {sql_string(escape.lower())})"
    fixed = f"replace({fixed}, chr(1), '\\\\')"
    return f"CASE WHEN contains({text}, '\\u00') THEN {fixed} ELSE {text} END"


def _col(i: int) -> str:
    """The column of input field i's JSON text."""
    return f"in_{i}"


def _list(items: Sequence[str]) -> str:
    """The strings as a SQL list."""
    return "([" + ", ".join(sql_string(x) for x in items) + "]::VARCHAR[])"


# A JSON leaf's text `t` read as the learned type of an input field: (DuckDB type, value, check).
INPUTS: dict[type, tuple[str, str, str]] = {}


def _string(t: str) -> str:
    """The value of the JSON text `t` when it is a string, else NULL."""
    return f"CASE WHEN starts_with({t}, '\"') THEN json_extract_string({t}, '$') END"


def _int(t: str) -> str:
    """The value of the JSON text `t` when it is an integer, else NULL: DuckDB writes an integer
    as its digits, so the text round-trips (a float, a string, a bool or a too big integer does not)."""
    return f"CASE WHEN CAST(TRY_CAST({t} AS BIGINT) AS VARCHAR) = {t} THEN TRY_CAST({t} AS BIGINT) END"


def _number(t: str) -> str:
    """The value of the JSON text `t` when it is a number (as Python's json reads it: NaN and
    Infinity too), else NULL."""
    return f"TRY_CAST({t} AS DOUBLE)"


INPUTS.update({  # the check may use {value}, the typed column
    str: ("VARCHAR", _string("{t}"), "starts_with({t}, '\"')"),
    int: ("BIGINT", _int("{t}"), "{value} IS NOT NULL"),
    # a float's text has a point, an exponent or is NaN/Infinity: not the digits of an int
    # ... and finite: DuckDB reads NaN, Infinity and 1e400, which are not JSON (the parser refuses the line)
    float: ("DOUBLE", _number("{t}"), "isfinite({value}) AND NOT regexp_full_match({t}, '-?[0-9]+')"),
    bool: ("BOOLEAN", "{t} = 'true'", "{t} IN ('true', 'false')"),
})


def _label_map_sql(label_map: Mapping[str, str]) -> Callable[[str], str]:
    """The SQL renaming a label by transforms.label_map."""
    if not label_map:
        return lambda x: x
    cases = " ".join(f"WHEN {sql_string(old)} THEN {sql_string(new)}" for old, new in label_map.items())
    return lambda x: f"(CASE {x} {cases} ELSE {x} END)"


def _name_text(index: str, class_map: str, lookup: Callable[[str], str], labels: Sequence[str]) -> str:
    """_class_name as JSON text: the class-map's entry when it is there, else the job's
    labels[index] (a JSON null in the class-map is not there, for the parser either); _string
    reads it. `class_map` and `lookup` are _by_index's."""
    texts = _list([json.dumps(x, ensure_ascii=False) for x in labels])
    return (f"CASE WHEN {index} >= 0 THEN coalesce(CAST({class_map}{lookup(index)} AS VARCHAR), "
            f"{texts}[{index} + 1]) END")


def _named_as_given(names: str, indices: str, labels: Sequence[str]) -> str:
    """Given labels, each class-map name of the list `names` is labels[index] of its index in
    `indices` (parse._check_name: another leaves the line to the parser, which names it); else true.
    A name missing from `names` fails another check (_all_there)."""
    if not labels:
        return "true"
    return f"{names} IS NOT DISTINCT FROM list_transform({indices}, lambda i: {_list(labels)}[i + 1])"


def _names_as_given(class_map: str, labels: Sequence[str], positions: str, raw_labels: str) -> str:
    """_named_as_given for a few labels given (a struct class-map, _index_map), whose labels were
    looked up by position: each class-map name of the list of 1-based class positions `positions`
    (0: none) is the label of `raw_labels` (labels[index], NULL for none) at its place, or the
    class-map has none (the job's labels name it). Mostly the class-map's JSON texts are json.dumps'
    of the labels of their indexes, or missing: that is checked once per line, by plain comparisons,
    and only a line with other names looks them up and unescapes them."""
    texts = [(f"CAST({class_map}.{sql_name(str(i))} AS VARCHAR)", sql_string(json.dumps(label, ensure_ascii=False)))
             for i, label in enumerate(labels)]
    usual = " AND ".join(f"({text} IS NULL OR {text} = {name})" for text, name in texts)
    names = "[" + ", ".join(f"coalesce({text}, {name})" for text, name in texts) + "]"
    # CASE, not OR: a projection evaluates both sides of an OR on every row, CASE its ELSE on the rest
    return (f"CASE WHEN {usual} THEN true ELSE list_transform(list_select({names}, {positions}), "
            f"lambda n: {_string('n')}) IS NOT DISTINCT FROM {raw_labels} END")


def _all_there(items: str) -> str:
    """No element of the list is NULL (an empty list passes; a NULL list does not)."""
    return f"list_count({items}) = len({items})"


def _finite(numbers: str) -> str:
    """Every number of the list is a confidence in [0, 1] (parse._confidence refuses others, NaN
    and infinities too): DuckDB's list_max is NaN when one is, NaN compares above every number,
    and list_min skips it. An empty list, or one of NULLs, passes."""
    return f"coalesce(list_min({numbers}) >= 0 AND list_max({numbers}) <= 1, true)"


def _paired(items: str, annotations: str) -> tuple[str, str, str]:
    """(a step's column cfs, the confidence, the check) of the metadata items (objects, entities)
    paired with the annotations: the parser reads items[i].confidence for each annotation i only,
    and takes the lowest. read_json has seen to it that the items are a list of objects or nulls
    (or NULL), with a number or nothing as confidence; no paired item is a null."""
    paired = f"list_slice({items}, 1, len({annotations}))"
    return (f"list_transform({paired}, lambda o: o.confidence + 0.0) AS cfs", "list_min(cfs) AS confidence",
            f"({items} IS NULL OR {_all_there(paired)}) AND {_finite('cfs')}")


def _value_sql(task_type: TaskType, labels: Sequence[str],
               label_map: Mapping[str, str]) -> tuple[str, list[str], str, str | None]:
    """(the leaves CTE's columns, which see `value` and `m`, the label value and the metadata as read;
    the columns of each step after it, the last with raw_label or raw_labels, the label key and
    confidence; the checks a labeled line must pass; the label key's JSON text for the jsonl line
    when it is not to_json's of the label key, else None).

    A step's columns see those of the steps before it: each is computed once (a column used in the
    SELECT that names it is computed again where it is used)."""
    mapped = _label_map_sql(label_map)
    label_list = _list(labels)
    if task_type is TaskType.text_classification:
        leaves = "CAST(value AS VARCHAR) AS v, CAST(m.\"class-name\" AS VARCHAR) AS cn, m.confidence + 0.0 AS confidence"
        if 0 < len(labels) <= MAX_STRUCT_LABELS:
            # Given a few labels, the label is labels[index], looked up by the value's text (one of
            # the class indexes' digits, those _int reads back; else no label); a class-name is
            # mostly json.dumps' text of that label (the text read_json writes for it), else it is
            # unescaped to compare (parse._check_name). The label's JSON text in the jsonl line is
            # json.dumps' too (the same as to_json's once _python_json has rewritten its escapes).
            position = f"list_position({_list([str(i) for i in range(len(labels))])}, v)"
            names = _list([json.dumps(x, ensure_ascii=False) for x in labels])
            stages = [f"{position} AS pos", f"{label_list}[pos] AS raw_label", f"{mapped('raw_label')} AS label"]
            checks = (f"pos IS NOT NULL AND CASE WHEN cn IS NULL OR cn = {names}[pos] THEN true "
                      f"ELSE {_string('cn')} = raw_label END AND coalesce(confidence BETWEEN 0 AND 1, true)")
            label_json = _list([json.dumps(label_map.get(x, x), ensure_ascii=False) for x in labels]) + "[pos]"
            return leaves, stages, checks, label_json
        stages = [f"{_int('v')} AS vi",
                  f"CASE WHEN vi >= 0 THEN CASE WHEN cn IS NULL THEN {label_list}[vi + 1] ELSE {_string('cn')} END END "
                  "AS raw_label",
                  f"{mapped('raw_label')} AS label"]
        # given labels, a class-name must be labels[index] (parse._check_name)
        checks = (f"vi >= 0 AND (len({label_list}) = 0 OR vi < len({label_list})) AND raw_label IS NOT NULL "
                  f"AND (len({label_list}) = 0 OR raw_label = {label_list}[vi + 1]) "
                  "AND coalesce(confidence BETWEEN 0 AND 1, true)")  # NaN too: above every number
        return leaves, stages, checks, None
    if task_type is TaskType.text_multilabel:
        class_map, lookup = _by_index('m."class-map"', labels)
        confidences, _ = _by_index('m."confidence-map"', labels)
        leaves = ("list_transform(value, lambda x: " + _int("CAST(x AS VARCHAR)") + f") AS idx, {class_map} AS cmap, "
                  f"{confidences} AS cfm")
        stages = [f"list_transform(idx, lambda i: {_name_text('i', 'cmap', lookup, labels)}) AS names, "
                  f"list_transform(idx, lambda i: cfm{lookup('i')} + 0.0) AS cfs",
                  f"list_transform(names, lambda n: {_string('n')}) AS raw_labels, list_min(cfs) AS confidence",
                  "raw_labels AS labels"]  # a label_map here takes the Python path
        checks = (f"idx IS NOT NULL AND {_all_there('idx')} AND coalesce(list_min(idx) >= 0, true) "
                  f"AND {_all_there('raw_labels')} AND len(list_distinct(raw_labels)) = len(raw_labels) AND {_finite('cfs')} "
                  f"AND {_named_as_given('raw_labels', 'idx', labels)}")
        return leaves, stages, checks, None
    if task_type is TaskType.bounding_box:
        sides = ("left", "top", "width", "height")
        cfs, confidence, paired_ok = _paired("objs", "bx")
        # to_json writes a side as json.dumps does when it is 0 or 1e-4 <= |side| < 1e16 (Python writes
        # 5e-05 and 1e+16, to_json 0.00005 and 10000000000000000.0): any other side leaves the line to
        # the parser
        sides_ok = " AND ".join(f"(b.{k} = 0 OR abs(b.{k}) BETWEEN 1e-4 AND 9.999999999999998e15)" for k in sides)
        fields = ", ".join(f"'{k}': b.{k}" for k in sides)
        if 0 < len(labels) <= MAX_STRUCT_LABELS:
            # Given a few labels, a box's label is labels[class_id], looked up in lists of constants
            # (a lambda that sees a list of its row copies it for every element): its class_id's
            # text is one of the class indexes' (the digits _int reads back), else it has none. The
            # class-map's names are checked apart (_names_as_given).
            position = f"list_position({_list([str(i) for i in range(len(labels))])}, CAST(b.class_id AS VARCHAR))"
            renamed = _list([label_map.get(x, x) for x in labels])
            leaves = "value.annotations AS bx, m.objects AS objs, value.image_size AS size"
            box = (f"CASE WHEN {sides_ok} AND {_list(labels)}[{position}] IS NOT NULL "
                   f"THEN {{'label': {renamed}[{position}], {fields}}} END")
            raw_labels = f"list_transform(bx, lambda b: {_list(labels)}[{position}])"
            # raw_labels is read for "#raw" alone (given a label_map): otherwise DuckDB leaves it out
            stages = [f"{cfs}, {raw_labels} AS raw_labels", f"list_transform(bx, lambda b: {box}) AS boxes, {confidence}"]
            named = _names_as_given('m."class-map"', labels, f"list_transform(bx, lambda b: coalesce({position}, 0))",
                                    raw_labels)
        else:
            class_map, lookup = _by_index('m."class-map"', labels)
            leaves = f"value.annotations AS bx, {class_map} AS cmap, m.objects AS objs, value.image_size AS size"
            box = (f"CASE WHEN {sides_ok} AND raw_labels[i] IS NOT NULL "
                   f"THEN {{'label': {mapped('raw_labels[i]')}, {fields}}} END")
            stages = [f"list_transform(bx, lambda b: {_int('CAST(b.class_id AS VARCHAR)')}) AS ids, {cfs}",
                      f"list_transform(ids, lambda i: {_name_text('i', 'cmap', lookup, labels)}) AS names",
                      f"list_transform(names, lambda n: {_string('n')}) AS raw_labels",
                      f"list_transform(bx, lambda b, i: {box}) AS boxes, {confidence}"]
            named = _named_as_given('raw_labels', 'ids', labels)
        # _image_size: int(size[0]["width"]), the height, and the depth when it is there
        size_ok = ("(size IS NULL OR len(size) = 0 OR "
                   + " AND ".join(f"isfinite({_number(f'CAST(size[1].{k} AS VARCHAR)')})" for k in ("width", "height"))
                   + f" AND (size[1].depth IS NULL OR isfinite({_number('CAST(size[1].depth AS VARCHAR)')})))")
        checks = f"bx IS NOT NULL AND {_all_there('boxes')} AND {paired_ok} AND {size_ok} AND {named}"
        return leaves, stages, checks, None
    # named_entity
    leaves = "value.annotations.entities AS en, m.entities AS ec"
    label = _string("CAST(e.label AS VARCHAR)")
    if labels:  # mostly json.dumps' text of a label given (read_json writes that text for it): no unescaping
        texts = _list([json.dumps(x, ensure_ascii=False) for x in labels])
        label = f"coalesce({label_list}[list_position({texts}, CAST(e.label AS VARCHAR))], {label})"
    typed = ("{'label': " + label + ", 'start': " + _int("CAST(e.startOffset AS VARCHAR)")
             + ", 'end': " + _int("CAST(e.endOffset AS VARCHAR)") + "}")
    span = ("CASE WHEN e.label IS NOT NULL AND 0 <= e.start AND e.start < e.end THEN "
            "{'label': " + mapped("e.label") + ", 'start': e.start, 'end': e.end} END")
    cfs, confidence, paired_ok = _paired("ec", "en")
    stages = [f"list_transform(en, lambda e: {typed}) AS et, {cfs}",
              f"list_transform(et, lambda e: e.label) AS raw_labels, list_transform(et, lambda e: {span}) AS entities, "
              f"{confidence}"]
    checks = f"en IS NOT NULL AND {_all_there('entities')} AND {paired_ok}"
    if labels:  # given labels, each entity's is one of them (parse._entities)
        checks += f" AND list_has_all({_list(labels)}, raw_labels)"
    return leaves, stages, checks, None


def split_code_sql(split: SplitConfig, start: int, stop: int) -> str:
    """split_of(str(i)) for i in range(start, stop), in SQL, as 0 (train), 1 (validation) or 2
    (test). split_of compares the first 8 bytes of sha256(salt NUL i), big-endian, over 2**64, with
    the cumulative ratios; this compares sha256's hex text with bounds worked out once (_below)."""
    digest = _digest(split, "CAST(i AS VARCHAR)")
    return f"SELECT {_split_code(split)} AS s FROM (SELECT {digest} AS h FROM range({start}, {stop}) AS t(i))"


def _digest(split: SplitConfig, text: str) -> str:
    """split_of's sha256 of the salt, a NUL and the SQL string `text`, as hex text (_split_code's `h`)."""
    return f"sha256({sql_string(split.salt)} || chr(0) || {text})"


def _split_code(split: SplitConfig) -> str:
    """The split code (0 train, 1 validation, 2 test) of the digest `h` (_digest), as split_of
    splits; NULL when `h` is."""
    tail = 2 if split.test > 0 else (1 if split.validation > 0 else 0)
    return (f"CAST(CASE WHEN h IS NULL THEN NULL WHEN {_below(split.train)} THEN 0 "
            f"WHEN {_below(split.train + split.validation)} THEN 1 ELSE {tail} END AS TINYINT)")


def _below(ratio: float) -> str:
    """SQL true when split_of's number for the digest `h` (sha256's hex text) is below `ratio`: `h`
    is below the hex of the least 64-bit integer n with not n / 2**64 < ratio (Python's division,
    correctly rounded, as split_of's; found by bisection), as text. A digest whose first 16 digits
    are n's is above it, as it should be."""
    low, high = 0, 1 << 64
    while low < high:
        mid = (low + high) // 2
        if mid / 2**64 < ratio:
            low = mid + 1
        else:
            high = mid
    return "true" if low >= 1 << 64 else f"h < {sql_string(f'{low:016x}')}"
