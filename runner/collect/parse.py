"""Output manifests (and worker-response files) -> `LabeledObject`s, one line at a time.

Reads what Ground Truth writes under `<S3OutputPath>/<job>/` (reference §4; gtrun's local service
writes the same): `manifests/output/output.manifest` and
`annotations/worker-response/iteration-<N>/<datasetObjectId>/<time>.json`.

Label attributes. A key K of an output line is a label attribute when `K-metadata` is a JSON
object carrying a key Ground Truth writes in every metadata object (`type`, `job-name`,
`creation-date`, `human-annotated`, `failure-reason`, or the DG's `job_name`/`creation_date`). So
a failed object (metadata without `type`, no K, ssie_expired_line2.jsonl) is still one, while an
input field that merely ends in `-metadata` is not. A line of a chained job carries several; the
record is about one (`attribute`), and `inputs` is the line without any of them.

Object ids. Ground Truth names worker-response folders by `datasetObjectId`, observed as "0", "1",
... in input-manifest order (reference §4.1; ordering unconfirmed), and so does gtrun's service. An
output line does not carry its id, so a record's `object_id` is the 0-based index of the line among
the manifest's non-blank lines, unless the metadata has a `worker-response-ref` (custom tasks,
newer GT and gtrun), whose path names the id. Both agree only while the output manifest has one
line per input line in input order: a manifest that leaves objects out shifts the index of
every later line (gtrun's service writes a line for every object, a stopped job's too, and
collect checks a run's line count against its job's objects: Output.check_complete).

Class names. A class index (a single-label value, a multi-label index, a box's class_id) is
named by the line (`class-name`, `class-map`), else by the labels given: the job's label config,
whose order Ground Truth's indices follow. When both name it, they must agree (_check_name): a
list that names an index otherwise is not the job's, and would misname the lines it alone names,
so that is an error even when malformed lines are skipped. Every record keeps its label value as
the line has it (`LabeledObject.value`: a class index, a custom task's consolidated annotation).

Malformed lines raise LineError("line <n>: <what is wrong>", a ManifestError), or are counted and skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from runner.collect.agreement import box_iou
from runner.collect.records import Box, LabeledObject, Span, Status, WorkerAnswer
from runner.errors import LineError, ManifestError, StoreError
from runner.schema import OnError, TaskType

# `<attr>-metadata.type` -> task type (reference §2.2, §4.2). Image classification is read as
# single-label classification: same value, same metadata.
TASK_TYPES: dict[str, TaskType] = {
    "groundtruth/text-classification": TaskType.text_classification,
    "groundtruth/image-classification": TaskType.text_classification,
    "groundtruth/text-classification-multilabel": TaskType.text_multilabel,
    "groundtruth/image-classification-multilabel": TaskType.text_multilabel,
    "groundtruth/object-detection": TaskType.bounding_box,
    "groundtruth/text-span": TaskType.named_entity,
    "groundtruth/custom": TaskType.custom,
}
METADATA = "-metadata"
# Keys of which Ground Truth writes at least one in every `<attr>-metadata` (reference §4.2).
GT_METADATA_KEYS = frozenset({"type", "job-name", "job_name", "creation-date", "creation_date",
                              "human-annotated", "failure-reason"})
JOB_PREFIX = "labeling-job/"
MAX_SKIPPED_KEPT = 1000  # ParseStats.skipped keeps the first ones only: memory stays flat
MAX_PENDING = 100_000  # lines held back while no line has told the attribute or the task type
LISTING_CHUNK = 10_000  # worker-response files sorted in memory at a time (worker_response_files)
READERS = 16  # worker-response files read at the same time from S3: each is a GET, waiting on the network
ImageSize = tuple[int, int, int]

_RESPONSE_KEY = re.compile(r"/worker-response/iteration-(\d+)/([^/]+)/([^/]+\.json)$")
_MISSING = object()


class _Malformed(ValueError):
    """What is wrong with one line; the caller adds the line number."""


class _LabelsDisagree(_Malformed):
    """The line names a class index otherwise than the labels given: an error even with
    on_error=skip (the list is wrong for every line, not this line for the list)."""


# -- which label attributes, which task type --------------------------------------------------------


def label_attributes(line: Mapping[str, Any]) -> list[str]:
    """The label attributes of one output line, in line order (see the module docstring).

    >>> label_attributes({"source": "x", "a": 0, "a-metadata": {"type": "groundtruth/custom"},
    ...                   "b-metadata": {"failure-reason": "expired"}, "c-metadata": {"x": 1}})
    ['a', 'b']
    """
    return [key[:-9] for key, value in line.items()
            if key.endswith(METADATA) and len(key) > 9 and _is_label_metadata(value)]


def task_type_of(output_type: Any) -> TaskType:
    """The task type of a `<attr>-metadata.type` value (either case: DG samples write `groundTruth/`).

    >>> task_type_of("groundTruth/custom")
    <TaskType.custom: 'custom'>
    """
    try:
        return _task_type(output_type)
    except _Malformed as exc:
        raise ManifestError(str(exc)) from None


def _task_type(output_type: Any) -> TaskType:
    found = TASK_TYPES.get(output_type) if type(output_type) is str else None
    if found is None and type(output_type) is str:
        found = TASK_TYPES.get(output_type.lower())
    if found is None:
        raise _Malformed(f"type {output_type!r} is not one gtrun collects "
                         f"({', '.join(sorted(TASK_TYPES))})")
    return found


def detect(line: Mapping[str, Any], attribute: str | None) -> tuple[str, TaskType]:
    """(label attribute, task type) of one output line; `attribute` picks one of several.

    Raises ManifestError when the line has no label attribute, several and `attribute` is None,
    not `attribute`, or when its metadata has no known `type` (a failed object has none).
    """
    found = label_attributes(line)
    if attribute is None:
        if not found:
            raise ManifestError("no label attribute on the line (no `<attr>-metadata` object)")
        if len(found) > 1:
            raise ManifestError(f"several label attributes: {', '.join(map(repr, found))}"
                                "\n  hint: choose one with --label-attribute")
        attribute = found[0]
    elif attribute not in found:
        has = f" (it has {', '.join(map(repr, found))})" if found else ""
        raise ManifestError(f"label attribute {attribute!r} is not on the line{has}")
    meta = line[attribute + METADATA]
    if "type" not in meta:
        why = " (a failed object)" if "failure-reason" in meta else ""
        raise ManifestError(f"{attribute}-metadata has no type{why}")
    try:
        return attribute, _task_type(meta["type"])
    except _Malformed as exc:
        raise ManifestError(f"{attribute}-metadata: {exc}") from None


def identify(lines: Iterable[bytes | str], *, attribute: str | None = None, task_type: TaskType | None = None,
             on_error: OnError = OnError.stop) -> tuple[str, TaskType]:
    """(label attribute, task type) of an output manifest, from its first lines as Parser learns
    them (those given are kept): the one label attribute of the first line that has one, and the
    `type` in the first of its metadata that has one.

    Raises ManifestError, with the flag to pass as a hint, when the lines do not tell them: no
    line has a label attribute (or none with a `type`), or a line has several (a chained job).
    """
    parser = Parser(attribute=attribute, task_type=task_type, on_error=on_error)
    for _ in parser.parse_lines(lines):
        break
    if parser.attribute is None or parser.task_type is None:  # no lines at all
        raise ManifestError("no lines to tell the label attribute and task type"
                            "\n  hint: pass them (--label-attribute, --task-type)")
    return parser.attribute, parser.task_type


# -- one line -----------------------------------------------------------------------------------


def parse_line(line: Mapping[str, Any], *, line_no: int, attribute: str,
               task_type: TaskType | None, labels: Sequence[str] | None,
               answers: Sequence[WorkerAnswer] = (), object_id: str | None = None) -> LabeledObject:
    """The record of one output-manifest line for label attribute `attribute`.

    `task_type` None: the metadata's `type` decides (a failed or unlabeled line has none: pass it).
    `labels` (the job's label list, in order) names class indices the metadata does not name, and
    bounds them. `answers` (from the worker-response files) replace the answers a custom label
    carries. `object_id` defaults to `worker-response-ref`'s id, else `line_no - 1`.
    """
    try:
        return _parse(line, line_no, attribute, task_type,
                      None if labels is None else tuple(labels), tuple(answers), object_id,
                      str(line_no - 1))
    except _Malformed as exc:
        raise LineError(f"line {line_no}: {exc}") from None


def _parse(line: Mapping[str, Any], line_no: int, attribute: str, task_type: TaskType | None,
           labels: tuple[str, ...] | None, answers: tuple[WorkerAnswer, ...],
           object_id: str | None, index: str,
           layouts: dict[tuple[str, ...], _Layout] | None = None) -> LabeledObject:
    """parse_line's work; `index` is the object id when neither `object_id` nor the metadata
    gives one; `layouts` caches the key layouts of the lines seen (see `_input_keys`)."""
    meta_key = attribute + METADATA
    meta = line.get(meta_key)
    if object_id is None:
        ref_id = _response_id(meta) if type(meta) is dict and "worker-response-ref" in meta else None
        object_id = ref_id or index
    inputs = {k: line[k] for k in _input_keys(line, attribute, layouts)}
    if meta is None:
        if attribute in line:
            raise _Malformed(f"{attribute}: a label value without {meta_key}")
        if task_type is None:
            raise _Malformed(f"no {attribute!r} label: cannot tell the task type of an unlabeled "
                             "line (pass the task type)")
        return LabeledObject(line_no=line_no, object_id=object_id, inputs=inputs,
                             attribute=attribute, task_type=task_type, status=Status.unlabeled,
                             answers=answers)
    if type(meta) is not dict:
        raise _Malformed(f"{meta_key} is not an object: {meta!r}")
    kind = meta.get("type")
    if kind is not None:
        found = (type(kind) is str and TASK_TYPES.get(kind)) or _task_type(kind)
        if task_type is not None and found is not task_type:
            raise _Malformed(f"{meta_key}: type {kind!r} is not a {task_type.value} task")
        task_type = found
    job = meta.get("job-name", meta.get("job_name"))
    job_name = job.removeprefix(JOB_PREFIX) if type(job) is str else None
    if "failure-reason" in meta:
        if task_type is None:
            raise _Malformed(f"{meta_key} of a failed object has no type: cannot tell the task "
                             "type (pass the task type)")
        return LabeledObject(line_no=line_no, object_id=object_id, inputs=inputs,
                             attribute=attribute, task_type=task_type, status=Status.failed,
                             answers=answers, metadata=meta, job_name=job_name,
                             failure_reason=str(meta["failure-reason"]))
    if task_type is None:
        raise _Malformed(f"{meta_key} has no type (pass the task type)")
    value = line.get(attribute, _MISSING)
    if value is _MISSING:
        raise _Malformed(f"no {attribute!r} label value, and {meta_key} has no failure-reason")
    # The hot path: every field of LabeledObject, in one dict (see DIRECT_INIT).
    values: dict[str, Any] = {
        "line_no": line_no, "object_id": object_id, "inputs": inputs, "attribute": attribute,
        "task_type": task_type, "status": Status.labeled, "label": None, "labels": (), "boxes": (),
        "image_size": None, "entities": (), "confidence": None, "confidences": {},
        "answers": answers, "metadata": meta, "failure_reason": None, "job_name": job_name, "value": value,
        "member": None}
    values.update(_VALUE_PARSERS[task_type](value, meta, labels, answers))
    if not DIRECT_INIT:
        return LabeledObject(**values)
    obj = _object_new(LabeledObject)
    _object_setattr(obj, "__dict__", values)
    return obj


# A line's layout: (keys ending in -metadata, whether each is a label attribute's metadata, the
# input keys). Lines of one manifest share a few layouts, so the Parser caches them by key tuple
# and only re-checks, per line, which -metadata values look like Ground Truth's.
_Layout = tuple[tuple[str, ...], tuple[bool, ...], tuple[str, ...]]
MAX_LAYOUTS = 1024


def _is_label_metadata(value: Any) -> bool:
    return type(value) is dict and not GT_METADATA_KEYS.isdisjoint(value)


def _layout(line: Mapping[str, Any], keys: tuple[str, ...], attribute: str) -> _Layout:
    candidates = tuple(k for k in keys if k.endswith(METADATA) and len(k) > 9)
    flags = tuple(_is_label_metadata(line[k]) for k in candidates)
    drop = {attribute, attribute + METADATA}
    for key, flag in zip(candidates, flags, strict=True):
        if flag:
            drop.update((key, key[:-9]))
    return candidates, flags, tuple(k for k in keys if k not in drop)


def _input_keys(line: Mapping[str, Any], attribute: str,
                layouts: dict[tuple[str, ...], _Layout] | None) -> tuple[str, ...]:
    """The keys of `line` that are inputs: not a label attribute nor its metadata."""
    keys = tuple(line)
    layout = layouts.get(keys) if layouts is not None else None
    if layout is None:
        layout = _layout(line, keys, attribute)
        if layouts is not None:
            if len(layouts) >= MAX_LAYOUTS:
                layouts.clear()
            layouts[keys] = layout
        return layout[2]
    candidates, flags, inputs = layout
    if len(candidates) == 1:
        same = _is_label_metadata(line[candidates[0]]) is flags[0]
    else:
        same = all(_is_label_metadata(line[k]) is f for k, f in zip(candidates, flags, strict=True))
    return inputs if same else _layout(line, keys, attribute)[2]


# Building records. LabeledObject, Box and Span are frozen dataclasses: their generated __init__
# sets every field through object.__setattr__, which was half the time of parsing a short line
# (bench/collect.py). The hot paths fill the instance's __dict__ in one go instead, with every
# field: same values, equality, hash and repr (tests/test_parse.py pins it). DIRECT_INIT turns
# this off, back to the constructors, should the classes change their fields or defaults, or get
# __slots__ or a __post_init__.
_RECORD_DEFAULTS: dict[str, Any] = {
    "label": None, "labels": (), "boxes": (), "image_size": None, "entities": (), "confidence": None,
    "confidences": {}, "answers": (), "metadata": {}, "failure_reason": None, "job_name": None,
    "value": None, "member": None}
_RECORD_FIELDS = ("line_no", "object_id", "inputs", "attribute", "task_type", "status", "label",
                  "labels", "boxes", "image_size", "entities", "confidence", "confidences",
                  "answers", "metadata", "failure_reason", "job_name", "value", "member")


def _defaults(cls: Any) -> dict[str, Any]:
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


DIRECT_INIT = (
    tuple(f.name for f in fields(LabeledObject)) == _RECORD_FIELDS
    and _defaults(LabeledObject) == _RECORD_DEFAULTS
    and tuple(f.name for f in fields(Box)) == ("label", "left", "top", "width", "height",
                                               "confidence", "tokens")
    and tuple(f.name for f in fields(Span)) == ("label", "start", "end", "confidence")
    and not any("__slots__" in vars(c) or hasattr(c, "__post_init__")
                for c in (LabeledObject, Box, Span)))
_object_new = object.__new__
_object_setattr = object.__setattr__


def _sides(box: Any) -> tuple[float, float, float, float]:
    """A box's left, top, width and height as floats (numbers, or their text); NaN or infinite is
    malformed (it would be no JSON number in the dataset). KeyError, TypeError or ValueError for a
    box without them."""
    sides = float(box["left"]), float(box["top"]), float(box["width"]), float(box["height"])
    if not all(map(math.isfinite, sides)):
        raise _Malformed(f"left, top, width, height {sides!r} are not all finite numbers")
    return sides


def _new_box(label: str, left: float, top: float, width: float, height: float,
             confidence: float | None, tokens: tuple[int, ...] = ()) -> Box:
    if not DIRECT_INIT:
        return Box(label, left, top, width, height, confidence, tokens)
    obj = _object_new(Box)
    _object_setattr(obj, "__dict__", {"label": label, "left": left, "top": top, "width": width,
                                      "height": height, "confidence": confidence, "tokens": tokens})
    return obj


def _new_span(label: str, start: int, end: int, confidence: float | None) -> Span:
    if not DIRECT_INIT:
        return Span(label, start, end, confidence)
    obj = _object_new(Span)
    _object_setattr(obj, "__dict__", {"label": label, "start": start, "end": end,
                                      "confidence": confidence})
    return obj


# Each returns the LabeledObject fields its task type fills (`answers` only when it finds some).
_Fields = dict[str, Any]


def _single(value: Any, meta: dict[str, Any], labels: tuple[str, ...] | None,
            answers: tuple[WorkerAnswer, ...]) -> _Fields:
    """Class index (int, or a string of digits in DG examples) -> class-name, else labels[index].

    With labels given, the class-name must be labels[index] (`_check_name`)."""
    index = _index(value, "label value")
    name = meta.get("class-name")
    if name is None:
        if labels is None:
            raise _Malformed(f"label index {index}: no class-name in the metadata and no labels "
                             "to name it")
        if index >= len(labels):
            raise _Malformed(f"label index {index} is out of range for {len(labels)} labels")
        name = labels[index]
    elif type(name) is not str:
        raise _Malformed(f"class-name {name!r} is not a string")
    elif labels is not None:
        _check_name(index, name, labels, "class-name")
    return {"label": name, "confidence": _confidence(meta.get("confidence"), "confidence")}


def _check_name(index: int, name: str, labels: tuple[str, ...], where: str) -> None:
    """Raise _LabelsDisagree unless the line's name of class `index` (from `where`: its class-name
    or class-map) is labels[index]. Ground Truth's class index is the label config's order, so a
    list that names it otherwise is not the job's (another order, a label missing): it would name
    the lines without a name, and hf_datasets' class indices, wrongly."""
    if index < len(labels) and labels[index] == name:
        return
    given = f"but {labels[index]!r} in the labels given" if index < len(labels) else \
        f"beyond the {len(labels)} labels given"
    raise _LabelsDisagree(
        f"label index {index} is {name!r} in the line ({where}), {given}"
        "\n  hint: give the labels (--labels) in the order of the job's label config, which Ground "
        "Truth's class indices follow, or none, to read them off the manifest")


def _multi(value: Any, meta: dict[str, Any], labels: tuple[str, ...] | None,
           answers: tuple[WorkerAnswer, ...]) -> _Fields:
    """Class indices + class-map + confidence-map -> class names and per-name confidences."""
    if type(value) is not list:
        raise _Malformed(f"label value {value!r} is not a list of class indices")
    class_map = _mapping(meta.get("class-map"), "class-map")
    confidence_map = _mapping(meta.get("confidence-map"), "confidence-map")
    names: list[str] = []
    confidences: dict[str, float] = {}
    for item in value:
        index = _index(item, "class index")
        name = _class_name(index, class_map, labels)
        names.append(name)
        c = _confidence(confidence_map.get(str(index)), f"confidence-map[{str(index)!r}]")
        if c is not None:
            confidences[name] = c
    return {"labels": tuple(names), "confidences": confidences}


def _boxes(value: Any, meta: dict[str, Any], labels: tuple[str, ...] | None,
           answers: tuple[WorkerAnswer, ...]) -> _Fields:
    """annotations[i] (class_id -> class-map name) with metadata objects[i] as its confidence."""
    if type(value) is not dict:
        raise _Malformed(f"label value {value!r} is not an object")
    annotations = value.get("annotations")
    if type(annotations) is not list:
        raise _Malformed(f"annotations {annotations!r} is not a list")
    class_map = _mapping(meta.get("class-map"), "class-map")
    objects = meta.get("objects") or ()
    if not isinstance(objects, (list, tuple)):
        raise _Malformed(f"objects {objects!r} is not a list")
    boxes = []
    for i, box in enumerate(annotations):
        try:
            index = _index(box["class_id"], "class_id")
            name = _class_name(index, class_map, labels)
            confidence = None
            if i < len(objects):
                confidence = _confidence(objects[i].get("confidence"), "confidence")
            left, top, width, height = _sides(box)
            boxes.append(_new_box(name, left, top, width, height, confidence))
        except _Malformed as exc:
            raise type(exc)(f"box {i}: {exc}") from None  # _LabelsDisagree stays one
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Malformed(f"box {i} is not {{class_id, left, top, width, height}}: {box!r}") \
                from None
    return {"boxes": tuple(boxes), "image_size": _image_size(value.get("image_size"))}


def _entities(value: Any, meta: dict[str, Any], labels: tuple[str, ...] | None,
              answers: tuple[WorkerAnswer, ...]) -> _Fields:
    """annotations.entities (code-point offsets, end exclusive) with metadata entities[i]."""
    annotations = value.get("annotations") if type(value) is dict else None
    entities = annotations.get("entities") if type(annotations) is dict else None
    if type(entities) is not list:
        raise _Malformed(f"label value {value!r} has no annotations.entities list")
    confidences = meta.get("entities") or ()
    if not isinstance(confidences, (list, tuple)):
        raise _Malformed(f"entities {confidences!r} in the metadata is not a list")
    spans = []
    for i, entity in enumerate(entities):
        try:
            label, start, end = entity["label"], entity["startOffset"], entity["endOffset"]
            if type(label) is not str or type(start) is not int or type(end) is not int:
                raise TypeError
            confidence = None
            if i < len(confidences):
                confidence = _confidence(confidences[i].get("confidence"), "confidence")
        except _Malformed as exc:
            raise _Malformed(f"entity {i}: {exc}") from None
        except (KeyError, TypeError, AttributeError):
            raise _Malformed(f"entity {i} is not {{label, startOffset, endOffset}}: {entity!r}") \
                from None
        if not 0 <= start < end:
            raise _Malformed(f"entity {i}: offsets [{start}, {end}) are not a span")
        if labels is not None and label not in labels:  # as a class-name that is not the list's
            raise _LabelsDisagree(f"entity {i}: label {label!r} is not one of the labels given ({', '.join(labels)})"
                                  "\n  hint: the labels must be the job's (a run's template.labels, or --labels); "
                                  "collect --manifest without --labels reads them off the lines")
        spans.append(_new_span(label, start, end, confidence))
    return {"entities": tuple(spans)}


def _custom(value: Any, meta: dict[str, Any], labels: tuple[str, ...] | None,
            answers: tuple[WorkerAnswer, ...]) -> _Fields:
    """Answers from `annotationsFromAllWorkers` (AWS recipe Lambda, gtrun's service), unless given.

    The value itself, whatever its shape (e.g. an `annotation-ref`), stays in LabeledObject.value,
    as every label value does. Boxes: see `_custom_boxes`.
    """
    if not answers and type(value) is dict and "annotationsFromAllWorkers" in value:
        answers = _all_workers(value["annotationsFromAllWorkers"])
    return {"answers": answers, **_custom_boxes(answers)}


def _all_workers(items: Any) -> tuple[WorkerAnswer, ...]:
    """annotationsFromAllWorkers -> answers; `annotationData.content` is a JSON string in JSON.

    An answer stored by reference (`annotationData.s3Uri`) is not fetched, and left out.
    """
    if type(items) is not list:
        raise _Malformed(f"annotationsFromAllWorkers {items!r} is not a list")
    out = []
    for i, item in enumerate(items):
        data = item.get("annotationData") if type(item) is dict else None
        worker = item.get("workerId") if type(item) is dict else None
        if type(data) is not dict or type(worker) is not str:
            raise _Malformed(f"annotationsFromAllWorkers[{i}] is not {{workerId, annotationData}}: "
                             f"{item!r}")
        content = data.get("content")
        if content is None and "s3Uri" in data:
            continue
        if type(content) is str:
            try:
                content = json.loads(content)
            except ValueError as exc:
                raise _Malformed(f"annotationsFromAllWorkers[{i}]: content is not JSON ({exc})") \
                    from None
        if type(content) is not dict:
            raise _Malformed(f"annotationsFromAllWorkers[{i}]: content {content!r} is not a JSON "
                             "object")
        out.append(WorkerAnswer(worker, content))
    return tuple(out)


_VALUE_PARSERS: dict[TaskType, Callable[[Any, dict[str, Any], tuple[str, ...] | None,
                                         tuple[WorkerAnswer, ...]], _Fields]] = {
    TaskType.text_classification: _single,
    TaskType.text_multilabel: _multi,
    TaskType.bounding_box: _boxes,
    TaskType.named_entity: _entities,
    TaskType.custom: _custom,
}


# -- custom bounding boxes (gtrun's bounding-box NER template) ------------------------------------


def _answer_boxes(content: Mapping[str, Any]) -> tuple[tuple[Box, ...], ImageSize | None] | None:
    """(boxes, image size) of one custom answer holding boxes, or None when it holds none.

    gtrun's bounding-box NER template (templates/receipts_ner.liquid) answers
    `{"annotations": <crowd-bounding-box value>, "boxTokens": "<JSON string: [{label, left, top,
    width, height, tokens, text}]>"}`: boxes come from `boxTokens` with their token indices.
    Without `boxTokens`, a single crowd-bounding-box value (`boundingBoxes`) gives boxes without
    tokens. The image size is `inputImageProperties` (depth 3, as GT writes).
    """
    elements = [v for v in content.values()
                if type(v) is dict and type(v.get("boundingBoxes")) is list]
    size = None
    if len(elements) == 1:
        props = elements[0].get("inputImageProperties")
        if type(props) is dict and "width" in props and "height" in props:
            size = (int(props["width"]), int(props["height"]), 3)
    raw: Any = content.get("boxTokens", _MISSING)
    if raw is not _MISSING:
        if type(raw) is str:
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise _Malformed(f"boxTokens is not JSON ({exc})") from None
        source, kind = raw, "boxTokens"
    elif len(elements) == 1:
        source, kind = elements[0]["boundingBoxes"], "boundingBoxes"
    else:
        return None
    if type(source) is not list:
        raise _Malformed(f"{kind} {source!r} is not a list")
    boxes = []
    for i, b in enumerate(source):
        try:
            tokens = tuple(int(t) for t in b.get("tokens", ()))
            boxes.append(Box(str(b["label"]), *_sides(b), tokens=tokens))
        except _Malformed as exc:
            raise _Malformed(f"{kind}[{i}]: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Malformed(f"{kind}[{i}] is not {{label, left, top, width, height}}: {b!r}") \
                from None
    return tuple(boxes), size


def _custom_boxes(answers: Sequence[WorkerAnswer]) -> _Fields:
    """`boxes` and `image_size` from the answer that agrees most with the others (see below).

    Boxes from several workers cannot be merged without choosing a consolidation, so the record
    keeps one worker's: the medoid, i.e. the answer with the highest sum of agreement with every
    other answer (agreement = F1 of a greedy one-to-one match of same-label boxes at IoU >= 0.5).
    Ties go to the earliest answer, so with one or two workers it is the first worker's answer.
    Box confidence stays None (GT's per-box confidence formula is unpublished). The answers
    themselves are all kept in `answers`.
    """
    found = []
    for answer in answers:
        try:
            got = _answer_boxes(answer.content)
        except _Malformed as exc:
            raise _Malformed(f"worker {answer.worker_id!r}: {exc}") from None
        if got is not None:
            found.append(got)
    if not found:
        return {}
    best = 0
    if len(found) > 2:
        scores = [sum(_box_f1(a[0], b[0]) for j, b in enumerate(found) if j != i)
                  for i, a in enumerate(found)]
        best = scores.index(max(scores))
    boxes, size = found[best]
    size = size or next((s for _, s in found if s is not None), None)
    return {"boxes": boxes, "image_size": size}


def _box_f1(a: Sequence[Box], b: Sequence[Box]) -> float:
    if not a and not b:
        return 1.0
    used: set[int] = set()
    matched = 0
    for x in a:
        best, best_iou = -1, 0.5
        for j, y in enumerate(b):
            if j not in used and y.label == x.label:
                iou = box_iou((x.left, x.top, x.width, x.height), (y.left, y.top, y.width, y.height))
                if iou >= best_iou:
                    best, best_iou = j, iou
        if best >= 0:
            used.add(best)
            matched += 1
    return 2 * matched / (len(a) + len(b))


# -- small checks -----------------------------------------------------------------------------------


def index_text(text: str) -> bool:
    """Whether a class index written as text (a class-map key, a label value) is one: ASCII digits
    ("²" is a digit to Python, and int() refuses it)."""
    return text.isascii() and text.isdigit()


def _index(value: Any, what: str) -> int:
    if type(value) is int:
        if value < 0:
            raise _Malformed(f"{what} {value} is negative")
        return value
    if type(value) is str and index_text(value):
        return int(value)
    raise _Malformed(f"{what} {value!r} is not a class index")


def _class_name(index: int, class_map: Mapping[str, Any], labels: tuple[str, ...] | None) -> str:
    name = class_map.get(str(index))
    if name is not None:
        if type(name) is not str:
            raise _Malformed(f"class-map[{str(index)!r}] = {name!r} is not a string")
        if labels is not None:
            _check_name(index, name, labels, "class-map")
        return name
    if labels is not None and index < len(labels):
        return labels[index]
    where = "class-map" if class_map else "the metadata (no class-map)"
    known = ("no labels name it" if not labels else "the one label given is class 0" if len(labels) == 1
             else f"the labels given name classes 0 to {len(labels) - 1}")
    raise _Malformed(f"class {index} is not in {where}, and {known}")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Malformed(f"{what} {value!r} is not an object")
    return value


_LONG_DIGITS = (re.compile(rb"-[0-9]{19}|[0-9]{20}"), re.compile(r"-[0-9]{19}|[0-9]{20}"))


def exact_loads(raw: bytes | str) -> Any:
    """One line's JSON by orjson (fast), but by json when it may hold an integer orjson reads as a
    float: past 18446744073709551615 or below -9223372036854775808 (20 digits, or a minus and 19,
    in a row; json reads them exactly)."""
    value = orjson.loads(raw)
    if _LONG_DIGITS[isinstance(raw, str)].search(raw):  # type: ignore[arg-type]
        return json.loads(raw)
    return value


def _without_bom(raw: bytes | str) -> bytes | str:
    """The first line without a UTF-8 byte-order mark (an editor's; DuckDB's read_json skips it too)."""
    if isinstance(raw, bytes):
        return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    return raw[1:] if raw.startswith("\ufeff") else raw


def _confidence(value: Any, what: str) -> float | None:
    """A confidence as a float (a number, or its text); one outside [0, 1] is malformed (infinite
    or NaN would be no JSON number in the dataset), and -0.0 reads as 0.0 (which of several the
    lowest is does not depend on their order)."""
    if value is None:
        return None
    if type(value) is float:
        number = value
    elif type(value) is int:
        number = float(value)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _Malformed(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise _Malformed(f"{what} {value!r} is not a finite number")
    if not 0 <= number <= 1:
        raise _Malformed(f"{what} {value!r} is not between 0 and 1")
    return number + 0.0


def _image_size(value: Any) -> ImageSize | None:
    """image_size `[{"width", "height", "depth"}]` -> (width, height, depth); [] -> None."""
    if value is None or value == []:
        return None
    try:
        size = value[0]
        return int(size["width"]), int(size["height"]), int(size.get("depth", 3))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):  # Infinity
        raise _Malformed(f"image_size {value!r} is not [{{width, height, depth}}]") from None


def _response_id(meta: Any) -> str | None:
    """The datasetObjectId in `worker-response-ref` (custom tasks), if any."""
    if type(meta) is dict:
        ref = meta.get("worker-response-ref")
        if type(ref) is str:
            found = _RESPONSE_KEY.search(ref)
            if found:
                return found.group(2)
    return None


# -- a whole manifest -----------------------------------------------------------------------------


@dataclass
class ParseStats:
    """What reading one manifest met: non-blank lines, records per status, skipped lines.

    `skipped` keeps the first MAX_SKIPPED_KEPT (line number, reason) pairs; `skipped_count`
    counts them all.
    """

    lines: int = 0
    labeled: int = 0
    failed: int = 0
    unlabeled: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    skipped_count: int = 0

    def skip(self, line_no: int, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_SKIPPED_KEPT:
            self.skipped.append((line_no, reason))

    def summary(self) -> str:
        """One line for the log.

        >>> ParseStats(lines=5, labeled=3, failed=1, skipped_count=1).summary()
        '5 lines: 3 labeled, 1 failed, 0 unlabeled, 1 skipped'
        """
        return (f"{self.lines:,} lines: {self.labeled:,} labeled, {self.failed:,} failed, "
                f"{self.unlabeled:,} unlabeled, {self.skipped_count:,} skipped")


OpenFn = Callable[[str], Any]  # uri or path -> a context manager yielding a binary file


class Parser:
    """Turns output-manifest lines into records, counting what it meets in `.stats`.

    `attribute` None: the first line with a label attribute fixes it (several: ManifestError, even
    with on_error=skip, since every line would be read against the wrong one). `task_type` None:
    the first line whose metadata has a `type` fixes it. Lines met before either is known (failed
    or unlabeled objects at the top) are held back, then emitted in order; at most MAX_PENDING.
    A malformed line raises LineError("line <n>: ...") with on_error=stop; with skip it is
    counted in `stats` and left out (its reason after `where`, the manifest's name, when given: a
    merged collect's stats count several manifests). `loads` parses one line (bytes or str):
    json.loads, or a compatible faster one.
    """

    def __init__(self, *, attribute: str | None = None, task_type: TaskType | None = None,
                 labels: Sequence[str] | None = None, on_error: OnError = OnError.stop,
                 stats: ParseStats | None = None,
                 loads: Callable[[bytes | str], Any] = json.loads, where: str | None = None) -> None:
        self.where = where
        self.attribute = attribute
        self.task_type = task_type
        self.labels = None if labels is None else tuple(labels)
        self.on_error = OnError(on_error)
        self.stats = ParseStats() if stats is None else stats
        self.loads = loads

    def read(self, uri_or_path: str | Path, *, open_fn: OpenFn | None = None,
             transport_params: Mapping[str, Any] | None = None) -> Iterator[LabeledObject]:
        """Records of a manifest file: a local path, or any URI smart_open reads (for s3://, pass
        `transport_params={"client": <boto3 s3 client>}`), or whatever `open_fn` opens."""
        with _open(str(uri_or_path), open_fn, transport_params) as src:
            yield from self.parse_lines(src)

    def parse_lines(self, lines: Iterable[bytes | str], first_line_no: int = 1,
                    ) -> Iterator[LabeledObject]:
        """Records of manifest lines (blank lines are ignored but counted in line numbers)."""
        stats, loads = self.stats, self.loads
        layouts: dict[tuple[str, ...], _Layout] = {}
        pending: list[tuple[int, str, dict[str, Any]]] = []
        index = 0
        for line_no, raw in enumerate(lines, first_line_no):
            if (len(raw) < 4 or raw[:1].isspace()) and not raw.strip():
                continue  # a blank line, or one of white space only (DuckDB's read_json skips both)
            if line_no == 1:
                raw = _without_bom(raw)
            stats.lines += 1
            object_id = str(index)
            index += 1
            try:
                line = loads(raw)
            except ValueError as exc:
                self._bad(line_no, f"not JSON ({exc})")
                continue
            if type(line) is not dict:
                text = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else str(raw).strip()
                self._bad(line_no, f"not a JSON object: {text[:80]}")
                continue
            if self.attribute is None or self.task_type is None:
                try:
                    known = self._learn(line, line_no)
                except _Malformed as exc:
                    self._bad(line_no, str(exc))
                    continue
                if not known:
                    pending.append((line_no, object_id, line))
                    if len(pending) > MAX_PENDING:
                        raise LineError(f"line {line_no}: " + self._unknown(pending[:MAX_PENDING]))
                    continue
                held, pending = pending, []
                for held_line in held:
                    obj = self._record(*held_line, layouts)
                    if obj is not None:
                        yield obj
            obj = self._record(line_no, object_id, line, layouts)
            if obj is not None:
                yield obj
        if pending:
            raise ManifestError(self._unknown(pending))

    def _record(self, line_no: int, object_id: str, line: dict[str, Any],
                layouts: dict[tuple[str, ...], _Layout]) -> LabeledObject | None:
        """The line's record, counted in stats; None when it is malformed and skipped."""
        assert self.attribute is not None  # given, or learned off the lines before the first record
        try:
            obj = _parse(line, line_no, self.attribute, self.task_type, self.labels, (), None, object_id, layouts)
        except _LabelsDisagree as exc:
            raise LineError(f"line {line_no}: {exc}") from None
        except _Malformed as exc:
            self._bad(line_no, str(exc))
            return None
        status = obj.status
        if status is Status.labeled:
            self.stats.labeled += 1
        elif status is Status.failed:
            self.stats.failed += 1
        else:
            self.stats.unlabeled += 1
        return obj

    def _learn(self, line: dict[str, Any], line_no: int) -> bool:
        """Fix the attribute and task type from this line if it tells them; True once both are."""
        if self.attribute is None:
            found = label_attributes(line)
            if len(found) > 1:
                raise LineError(f"line {line_no}: several label attributes: "
                                    f"{', '.join(map(repr, found))}"
                                    "\n  hint: choose one with --label-attribute")
            if not found:
                return False
            self.attribute = found[0]
        if self.task_type is None:
            meta = line.get(self.attribute + METADATA)
            if type(meta) is dict and "type" in meta:
                self.task_type = _task_type(meta["type"])
        return self.task_type is not None

    def _unknown(self, held: list[tuple[int, str, dict[str, Any]]]) -> str:
        """Why the held lines did not tell the attribute or the task type."""
        lines = f"{len(held):,} line{'s' if len(held) > 1 else ''}"
        if self.attribute is None:
            return (f"{lines} without a label attribute (no `<attr>-metadata`)"
                    "\n  hint: pass the label attribute (--label-attribute)")
        meta_key = self.attribute + METADATA
        if not any(meta_key in line for _, _, line in held):  # a mistyped name, or nothing labeled
            return (f"{lines}, none with label attribute {self.attribute!r} (no {meta_key!r})"
                    "\n  hint: check the label attribute's name (--label-attribute); if the job labeled "
                    "no object, pass the task type (--task-type)")
        return (f"{lines} of label attribute {self.attribute!r} without a type in the metadata "
                "(failed or unlabeled objects only)\n  hint: pass the task type (--task-type)")

    def _bad(self, line_no: int, reason: str) -> None:
        if self.on_error is OnError.stop:
            raise LineError(f"line {line_no}: {reason}")
        self.stats.skip(line_no, f"in {self.where}: {reason}" if self.where else reason)


def read_manifest(uri_or_path: str | Path, *, attribute: str | None,
                  task_type: TaskType | None, labels: Sequence[str] | None,
                  on_error: OnError = OnError.stop, open_fn: OpenFn | None = None,
                  transport_params: Mapping[str, Any] | None = None,
                  stats: ParseStats | None = None) -> Iterator[LabeledObject]:
    """The records of an output manifest, streamed line by line (memory flat in lines).

    `stats`, when given, is filled as the iterator advances (else use `Parser(...).read`). See
    Parser for attribute and task type detection and on_error.
    """
    parser = Parser(attribute=attribute, task_type=task_type, labels=labels, on_error=on_error,
                    stats=stats)
    return parser.read(uri_or_path, open_fn=open_fn, transport_params=transport_params)


def _is_local(uri: str) -> bool:
    return "://" not in uri


def _open(uri: str, open_fn: OpenFn | None, transport_params: Mapping[str, Any] | None) -> Any:
    try:
        if open_fn is not None:
            return open_fn(uri)
        if _is_local(uri) and not uri.endswith((".gz", ".bz2", ".zst", ".xz")):
            return open(uri, "rb")
        import smart_open

        return smart_open.open(uri, "rb", transport_params=dict(transport_params or {}))
    except OSError as exc:
        raise StoreError(f"{uri}: cannot read it ({exc})") from exc


# -- worker responses -------------------------------------------------------------------------------


def worker_response_answers(record: Any, *, where: str) -> list[WorkerAnswer]:
    """The answers of one worker-response file's object `{"answers": [...]}` (reference §4.4).

    `seconds` is `timeSpentInSeconds`, else submissionTime - acceptanceTime, else None (2019
    files have neither). `where` names the file in errors.
    """
    answers = record.get("answers") if type(record) is dict else None
    if type(answers) is not list:
        raise ManifestError(f"{where}: not a worker-response file ({{'answers': [...]}})")
    out = []
    for i, a in enumerate(answers):
        worker = a.get("workerId") if type(a) is dict else None
        content = a.get("answerContent") if type(a) is dict else None
        if type(worker) is not str or type(content) is not dict:
            raise ManifestError(f"{where}: answers[{i}] is not {{workerId, answerContent}}: {a!r}")
        seconds = a.get("timeSpentInSeconds")
        try:
            if seconds is not None:
                seconds = float(seconds)
            elif a.get("acceptanceTime") and a.get("submissionTime"):
                seconds = (_time(a["submissionTime"]) - _time(a["acceptanceTime"])).total_seconds()
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: answers[{i}] has bad times: {a!r}") from None
        out.append(WorkerAnswer(worker, content, seconds))
    return out


def _time(value: str) -> datetime:
    """`2019-04-18T16:11:15Z` or `...:15.123Z` (reference §4.4), on Python 3.10 too."""
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def read_worker_responses(output_root: str | Path, job_name: str | None = None, *,
                          list_fn: Callable[[str], Iterable[str]] | None = None,
                          open_fn: OpenFn | None = None, readers: int = READERS) -> dict[str, list[WorkerAnswer]]:
    """datasetObjectId -> its workers' answers, from `annotations/worker-response/`, in object order
    (worker_response_files; read_answers reads them). All in memory: collect stages them in a file
    instead (stage_worker_responses)."""
    return dict(read_answers(worker_response_files(output_root, job_name, list_fn=list_fn), open_fn=open_fn,
                             readers=readers))


def worker_response_files(output_root: str | Path, job_name: str | None = None, *,
                          list_fn: Callable[[str], Iterable[str]] | None = None,
                          folder: Path | None = None) -> Iterator[tuple[str, str]]:
    """(datasetObjectId, the URI of its worker-response file), in object order ("2" before "10").

    The folder is `<output_root>/<job_name>/annotations/worker-response/` (`output_root` =
    S3OutputPath), or `<output_root>/annotations/...` when job_name is None. A local folder is
    listed directly; for any other URI pass `list_fn(prefix) -> URIs under it` (e.g.
    `s3_lister(client)`). An object with several files (several iterations) keeps the latest:
    highest iteration, then file name (a timestamp) -- unconfirmed, GT does not document retries
    here. A listing of more than LISTING_CHUNK files is sorted a chunk at a time into files in
    `folder` (default: a temporary folder), which are merged: memory stays flat in files."""
    import heapq
    import tempfile

    base = "/".join(p for p in (str(output_root).rstrip("/"), job_name) if p)
    base += "/annotations/worker-response"
    if _is_local(base):
        uris: Iterable[str] = _local_responses(Path(base))
    elif list_fn is None:
        raise StoreError(f"{base}: listing it needs a list_fn (e.g. s3_lister(client))")
    else:
        uris = list_fn(base + "/")
    with tempfile.TemporaryDirectory(prefix=".listing-", dir=folder) as work:
        runs: list[Path] = []
        chunk: list[tuple[int, str, int, str, str]] = []  # the sort key: id's length, id, iteration, name
        for uri in uris:
            found = _RESPONSE_KEY.search(uri)
            if found is None:
                continue
            object_id = found.group(2)
            chunk.append((*_id_order(object_id), int(found.group(1)), found.group(3), uri))
            if len(chunk) == LISTING_CHUNK:
                runs.append(Path(work) / f"{len(runs)}.jsonl")
                runs[-1].write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in sorted(chunk)))
                chunk = []
        chunk.sort()
        with contextlib.ExitStack() as stack:
            sorted_runs = [(tuple(orjson.loads(line)) for line in stack.enter_context(open(run, "rb"))) for run in runs]
            rows = heapq.merge(chunk, *sorted_runs) if runs else chunk
            for _, same in itertools.groupby(rows, key=lambda row: row[1]):
                *_, latest = same  # the highest (iteration, name)
                yield latest[1], latest[4]


def _local_responses(folder: Path) -> Iterator[str]:
    """The files `iteration-*/<object>/*.json` of a local worker-response folder, listed as they come
    (Path.glob holds a folder's entries: one per object)."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as iterations:
        for iteration in iterations:
            if not (iteration.name.startswith("iteration-") and iteration.is_dir()):
                continue
            with os.scandir(iteration.path) as objects:
                for obj in objects:
                    if obj.is_dir():
                        with os.scandir(obj.path) as files:
                            yield from (Path(f.path).as_posix() for f in files if f.name.endswith(".json"))


def read_answers(files: Iterable[tuple[str, str]], *, open_fn: OpenFn | None = None,
                 readers: int = READERS) -> Iterator[tuple[str, list[WorkerAnswer]]]:
    """(object id, its answers) for each (object id, worker-response file) of `files`, in order.
    `open_fn(uri) -> binary file` (default: smart_open, or open for a local path) is called on
    `readers` threads at the same time for remote files (a boto3 client allows that)."""

    def answers(file: tuple[str, str]) -> tuple[str, list[WorkerAnswer]]:
        object_id, uri = file
        with _open(uri, open_fn, None) as src:
            data = src.read()
        try:
            record = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{uri}: not JSON ({exc})") from None
        return object_id, worker_response_answers(record, where=uri)

    files = iter(files)
    first = next(files, None)
    if first is None:
        return iter(())
    return _in_order(answers, itertools.chain([first], files), 1 if _is_local(first[1]) else readers)


def stage_worker_responses(files: Iterable[tuple[str, str]], path: Path, *, open_fn: OpenFn | None = None,
                           readers: int = READERS, on_object: Callable[[int], None] | None = None) -> int:
    """Write the answers of `files` ((object id, URI) in object order: worker_response_files) to the
    local file `path`, a JSON line per object ([object id, [[worker id, content, seconds], ...]]),
    for StagedAnswers; the number of objects. Memory stays flat in objects, and every pass over
    the objects reads the answers from here, not from S3. `on_object` hears the count every 1,000."""
    count = 0
    with open(path, "wb") as out:
        for object_id, answers in read_answers(files, open_fn=open_fn, readers=readers):
            out.write(orjson.dumps([object_id, [[a.worker_id, a.content, a.seconds] for a in answers]]) + b"\n")
            count += 1
            if on_object is not None and not count % 1000:
                on_object(count)
    return count


def _id_order(object_id: str) -> tuple[int, str]:
    """The order of object ids, as worker_response_files orders them: "2" before "10"."""
    return len(object_id), object_id


class StagedAnswers:
    """The answers stage_worker_responses wrote, looked up by object id (as attach_answers does).

    The manifest's objects come in object order, as the file does: each lookup reads on from the
    last one, and memory stays flat in objects. A lookup that goes back (a manifest in another
    order) first reads where each object's line starts, and seeks from then on."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close() / the with block
        self.ahead: tuple[str, list[Any]] | None = None  # the line read past the last lookup
        self.last: tuple[str, list[Any]] | None = None  # the last line found, for a repeated id
        self.reached: tuple[int, str] | None = None  # the last id looked up (_id_order)
        self.offsets: dict[str, int] | None = None

    def __enter__(self) -> StagedAnswers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def get(self, object_id: str) -> list[WorkerAnswer] | None:
        if self.last is not None and self.last[0] == object_id:
            return _answers(self.last[1])
        key = _id_order(object_id)
        if self.offsets is None and self.reached is not None and key < self.reached:
            self.offsets = self._offsets()
        self.reached = key
        if self.offsets is not None:
            if object_id not in self.offsets:
                return None
            self.file.seek(self.offsets[object_id])
            self.last = tuple(orjson.loads(self.file.readline()))
            return _answers(self.last[1])
        while True:
            if self.ahead is None:
                line = self.file.readline()
                if not line:
                    return None
                self.ahead = tuple(orjson.loads(line))
            found = _id_order(self.ahead[0])
            if found > key:
                return None
            line_read, self.ahead = self.ahead, None
            if found == key:
                self.last = line_read
                return _answers(line_read[1])

    def _offsets(self) -> dict[str, int]:
        offsets, at = {}, 0
        self.file.seek(0)
        for line in self.file:
            offsets[orjson.loads(line)[0]] = at
            at += len(line)
        return offsets


def _answers(rows: list[Any]) -> list[WorkerAnswer]:
    return [WorkerAnswer(worker, content, seconds) for worker, content, seconds in rows]


def _in_order(fn: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """fn of each item, in order, computed on `threads` threads at most `4 * threads` items ahead
    (memory stays flat in items). The first error is raised; what was not started is not."""
    if threads <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gtrun-read")
    ahead: deque[Any] = deque()
    try:
        for item in items:
            ahead.append(pool.submit(fn, item))
            if len(ahead) >= 4 * threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def s3_lister(client: Any) -> Callable[[str], Iterator[str]]:
    """A list_fn for read_worker_responses over a boto3 S3 client: every s3:// URI under a prefix."""

    def list_uris(prefix: str) -> Iterator[str]:
        bucket, _, key = prefix.removeprefix("s3://").partition("/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", ()):
                yield f"s3://{bucket}/{item['Key']}"

    return list_uris


def attach_answers(objects: Iterable[LabeledObject],
                   responses: Mapping[str, Sequence[WorkerAnswer]] | StagedAnswers) -> Iterator[LabeledObject]:
    """Each record with its worker-response answers, matched by `object_id` (module docstring).

    The files' answers replace those a custom label carried (same content, plus `seconds`); a
    custom record's boxes are chosen again from them. Records without a file pass unchanged.
    """
    for obj in objects:
        answers = responses.get(obj.object_id)
        if answers is None:
            yield obj
            continue
        answers = tuple(answers)
        extra: _Fields = {}
        if obj.task_type is TaskType.custom and obj.status is Status.labeled:
            try:
                extra = _custom_boxes(answers)
            except _Malformed as exc:
                raise LineError(f"line {obj.line_no}: {exc}") from None
        yield replace(obj, answers=answers, **extra)

