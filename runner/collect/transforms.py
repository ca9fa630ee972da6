"""Labeled objects -> files a training script loads directly: one writer per output format.

`run_transforms` is what `gtrun collect` calls: for each step in `transforms.steps` it iterates the
parsed objects again (`objects_factory()`), renames labels (`transforms.label_map`), keeps the
labeled objects that pass `transforms.min_confidence` / `transforms.min_agreement`, and hands them
to the step's writer. Writers stream: they write as objects arrive and hold at most one batch of
rows per split (COCO holds its per-split document, which the format needs whole; spaCy a DocBin
of at most SPACY_DOCS docs per split).

Every writer builds its folder under `<out>/.<name>.partial/` and moves it to `<out>/<name>/` only
when it is complete, so a failed step leaves the previous output as it was.

| step          | writes (under `<out>/`)                                    | task types              |
|---------------|------------------------------------------------------------|-------------------------|
| `table`       | `table/<dataset>.{parquet,csv,tsv}` + a view in `gtrun.duckdb` | all                 |
| `jsonl`       | `jsonl/{train,validation,test}.jsonl`                      | all                     |
| `hf_datasets` | `hf/{split}.parquet` with `datasets` features              | all                     |
| `spacy`       | `spacy/{split}/NNNN.spacy` (DocBins) + `spacy/{split}/ids.jsonl` | text classification, NER |
| `conll`       | `conll/{split}.conll` (+ `{split}.layout.jsonl` for boxes) | NER, boxes, custom      |
| `coco`        | `coco/{split}.json` + `coco/images/`                       | boxes, custom           |
| `yolo`        | `yolo/labels/{split}/<stem>.txt` + `yolo/images/{split}/` + `yolo/data.yaml` | boxes, custom |

`coco` and `yolo` copy the images with the annotations (option `images`, default true), through
the `Images` collect gives them: from the storage of the run that labeled the object (merged runs
may each have their own), or through smart-open for output gtrun did not launch.

The split of an object is a stable hash of its id in its job's output (`split_for`), so it never
moves between collects (of its run alone or merged with others), formats or machines unless
`transforms.split.salt` changes; with `transforms.split.key`, of an input field's value, so it is
the same in every job that labels the object too.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import re
import shutil
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from runner.build.quoting import sql_name, sql_string
from runner.collect.agreement import box_iou
from runner.collect.records import Box, LabeledObject, Span, Status
from runner.collect.report import NOT_LABELED
from runner.errors import ConfigError, StoreError, collect_errors
from runner.schema import SplitConfig, TaskType, TransformsConfig
from runner.service.consolidate import BOX_MIN_IOU, SPAN_MIN_JACCARD

if TYPE_CHECKING:
    import pyarrow as pa

    from runner.collect.columnar import Columnar
    from runner.collect.columnar import Result as ColumnarResult
    from runner.collect.progress import Progress

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
LABEL_KEYS = ("label", "labels", "boxes", "entities")  # what flat_record adds after the inputs
ANNOTATION = "annotation"  # flat_record's key of a custom object's own label value (_annotated)
BATCH_ROWS = 1_000  # rows per Parquet write / CSV header sample
MAX_SCHEMA_ROWS = 20_000  # rows buffered at most while an input field is still only null
MAX_PROBLEMS = 100  # problem messages kept per step (all are counted)
LAYOUT_SCALE = 1000  # LayoutLM's box coordinates: 0-1000 of the page
SPACY_DOCS = 5_000  # docs per .spacy file: what one split's DocBin holds before it is written
SPACY_IDS = "ids.jsonl"  # beside a split's .spacy files: the object id of each doc, in their order


# --- splits ---------------------------------------------------------------------------------------


def check_split(split: SplitConfig) -> None:
    """Raise ConfigError unless the three ratios are in [0, 1] and sum to 1."""
    ratios = {"train": split.train, "validation": split.validation, "test": split.test}
    for name, value in ratios.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"transforms.split.{name}", f"{value!r} is not a ratio in [0, 1]")
    total = sum(ratios.values())
    if abs(total - 1) > 1e-6:
        raise ConfigError("transforms.split", f"train + validation + test = {total:g}, not 1",
                          "e.g. transforms.split.train=0.8 transforms.split.validation=0.1 "
                          "transforms.split.test=0.1")


def split_of(object_id: str, split: SplitConfig) -> str:
    """"train", "validation" or "test" for one object, by a stable hash of salt and id.

    sha256 of the UTF-8 bytes of `salt + "\\0" + object_id` (the NUL keeps salt "a" + id "bc"
    apart from salt "ab" + id "c"); its first 8 bytes, big-endian, divided by 2**64 give a number
    in [0, 1) that falls into train, validation or test by the cumulative ratios. No randomness,
    no process state: the same on every run and machine.

    >>> [split_of(str(i), SplitConfig()) for i in range(7)]
    ['validation', 'train', 'train', 'train', 'train', 'train', 'test']
    """
    train, validation, tail = _split_bounds(split.train, split.validation, split.test)
    digest = hashlib.sha256(f"{split.salt}\0{object_id}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    if x < train:
        return "train"
    if x < validation:
        return "validation"
    return tail


def split_for(obj: LabeledObject, split: SplitConfig) -> str:
    """The split of one object: split_of its id in its own job's output (merged with other runs'
    objects too: it keeps the split it has when its run is collected alone), or of its `split.key`
    input field's value."""
    return split_of(obj.own_id if split.key is None else split_key(obj, split.key), split)


def split_key(obj: LabeledObject, key: str) -> str:
    """The text split_of hashes for the input field `key` (transforms.split.key): a string as it
    is, an integer in decimal; any other value, or none, is an error naming the object."""
    value = obj.inputs.get(key)
    if _keyable(value):
        return str(value)
    problem = f"has no input field {key!r}" if key not in obj.inputs else f"has {key} = {value!r}, not a string or an integer"
    fields = ", ".join(k for k, v in obj.inputs.items() if _keyable(v))
    raise ConfigError("transforms.split.key", f"object {obj.object_id!r} {problem}",
                      f"name a field every object has, with a string or integer value ({fields or 'none here'}), "
                      "or unset it to split by object id: transforms.split.key=null")


def _keyable(value: Any) -> bool:
    """A value split_key takes: a string, or an integer (not a bool)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


@functools.lru_cache(maxsize=64)
def _split_bounds(train: float, validation: float, test: float) -> tuple[float, float, str]:
    """split_of's bounds, checked once per ratios (check_split): train, train + validation, and
    the split of what is not below them (test is 0: only float rounding of train + validation
    (< 1) can get there)."""
    check_split(SplitConfig(train=train, validation=validation, test=test))
    tail = "test" if test > 0 else ("validation" if validation > 0 else "train")
    return train, train + validation, tail


# --- labels -----------------------------------------------------------------------------------


def label_order(by_index: Mapping[int, str], used: Iterable[str]) -> list[str]:
    """An output's labels when the job's are not known: the names of the class indices seen, in
    index order (a name of two indices once, at the first), then the other names used (non-empty),
    in order of use.

    >>> label_order({2: "Neutral", 0: "Positive"}, ["Irrelevant", "Positive", "Negative"])
    ['Positive', 'Neutral', 'Irrelevant', 'Negative']
    """
    ordered = list(dict.fromkeys(by_index[i] for i in sorted(by_index)))
    return ordered + [name for name in dict.fromkeys(used) if name and name not in ordered]


def label_map_typos(labels: Sequence[str], label_map: Mapping[str, str]) -> list[str]:
    """What to say of each transforms.label_map entry whose new name is not a label of the job but
    nearly one (another case, a letter off): a merge mistyped makes a class of its own.

    >>> for line in label_map_typos(["Positive", "Neutral", "Irrelevant"], {"Irrelevant": "Neutrl", "Positive": "Good"}):
    ...     print(line.replace("; ", ";\\n"))
    transforms.label_map: Irrelevant → Neutrl makes a new label, beside Neutral;
    did you mean transforms.label_map.Irrelevant=Neutral?
    """
    said = []
    for old, new in label_map.items():
        if not isinstance(new, str) or new in labels:
            continue
        near = nearly_label(new, labels)
        if near is not None and near != old:  # close to the name it renames: a new spelling of that label, meant
            said.append(f"transforms.label_map: {old} → {new} makes a new label, beside {near}; "
                        f"did you mean transforms.label_map.{old}={near}?")
    return said


def nearly_label(name: str, labels: Sequence[str]) -> str | None:
    """The label `name` nearly is (another case, a letter off), or None.

    >>> nearly_label("Irelevant", ["Positive", "Irrelevant"]), nearly_label("Other", ["Positive", "Irrelevant"])
    ('Irrelevant', None)
    """
    import difflib

    folded = {label.casefold(): label for label in labels}
    near = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.8)
    return folded[near[0]] if near else None


def mapped_labels(labels: Sequence[str], label_map: Mapping[str, str]) -> list[str]:
    """The label list after `transforms.label_map`: renamed, merged ones once, in first-seen order.

    >>> mapped_labels(["Positive", "Negative", "Neutral", "Irrelevant"], {"Irrelevant": "Neutral"})
    ['Positive', 'Negative', 'Neutral']
    """
    return list(dict.fromkeys(label_map.get(name, name) for name in labels))


def apply_label_map(obj: LabeledObject, label_map: Mapping[str, str]) -> LabeledObject:
    """The object with every label renamed by `label_map` (old -> new); unmapped labels stay.

    Renames `label`, `labels` (two labels merged into one appear once; its confidence is the
    highest of theirs), `boxes`, `entities`, and the labels inside the workers' answers in the
    built-in answer shapes (`label`, `labels`, `boundingBoxes[].label`, `entities[].label`), so
    `worker_agreement` compares like with like. The raw `metadata` is left as it was.
    """
    if not label_map:
        return obj

    def new(name: str) -> str:
        return label_map.get(name, name)

    confidences: dict[str, float] = {}
    for name, value in obj.confidences.items():
        key = new(name)
        confidences[key] = max(value, confidences.get(key, value))
    return replace(
        obj,
        label=None if obj.label is None else new(obj.label),
        labels=tuple(dict.fromkeys(new(name) for name in obj.labels)),
        confidences=confidences,
        boxes=tuple(replace(b, label=new(b.label)) for b in obj.boxes),
        entities=tuple(replace(s, label=new(s.label)) for s in obj.entities),
        answers=tuple(replace(a, content={k: _map_answer_value(v, new) for k, v in a.content.items()})
                      for a in obj.answers),
    )


def _map_answer_value(value: Any, new: Callable[[str], str]) -> Any:
    if not isinstance(value, Mapping):
        return value
    out = dict(value)
    if isinstance(out.get("label"), str):
        out["label"] = new(out["label"])
    if isinstance(out.get("labels"), list):
        out["labels"] = list(dict.fromkeys(new(x) if isinstance(x, str) else x for x in out["labels"]))
    for key in ("boundingBoxes", "entities"):
        if isinstance(out.get(key), list):
            out[key] = [{**item, "label": new(item["label"])}
                        if isinstance(item, Mapping) and isinstance(item.get("label"), str) else item
                        for item in out[key]]
    return out


# --- quality filters --------------------------------------------------------------------------


def object_confidence(obj: LabeledObject) -> float | None:
    """One confidence for the whole object, or None when the output carries none.

    Single-label: its confidence. Multi-label: the lowest confidence of the chosen classes.
    Boxes / entities: the lowest confidence of its boxes / spans, so an image or text is only as
    sure as its least sure annotation (dropping single boxes would leave objects unlabeled in the
    image). Custom: `confidence`, else its boxes', else its spans'. Ground Truth writes 0 when an
    object had one worker.
    """
    single = obj.confidence
    many: list[float] = []
    if obj.task_type is TaskType.text_multilabel:
        many = [obj.confidences[name] for name in obj.labels if name in obj.confidences]
        single = None
    elif obj.task_type is TaskType.bounding_box:
        many, single = [b.confidence for b in obj.boxes if b.confidence is not None], None
    elif obj.task_type is TaskType.named_entity:
        many, single = [s.confidence for s in obj.entities if s.confidence is not None], None
    elif single is None:
        many = ([b.confidence for b in obj.boxes if b.confidence is not None]
                or [s.confidence for s in obj.entities if s.confidence is not None])
    return single if single is not None else (min(many) if many else None)


def worker_agreement(obj: LabeledObject) -> float | None:
    """How much the workers agree with the consolidated label, 0-1; None when answers are unknown.

    The mean over workers of a per-worker score, reading each worker's answer in the built-in
    shapes (a custom task's answer too, when it holds one):
    - single-label: 1 when the worker chose the consolidated label, else 0 (the share of workers
      who agree);
    - multi-label: the Jaccard index of the worker's classes and the consolidated ones;
    - boxes: consolidated boxes the worker matched (same label, IoU >= 0.5, one-to-one) divided by
      the larger of the two box counts, so missed and extra boxes both count against;
    - entities: the same with spans (same label, character Jaccard > 0.5, as consolidation uses).
    A worker who drew nothing and a consolidated empty answer agree (score 1).
    """
    if not obj.answers:
        return None
    kind = _answer_kind(obj)
    if kind is None:
        return None
    values = [_answer_value(a.content, kind) for a in obj.answers]
    if obj.task_type is TaskType.custom and all(v is None for v in values):
        return None  # the custom answers hold no such element: nothing to compare
    scores: list[float] = []
    for value in values:
        if kind == "label":
            scores.append(1.0 if value == obj.label else 0.0)
        elif kind == "labels":
            chosen = {x for x in value or [] if isinstance(x, str)}
            scores.append(_set_jaccard(chosen, set(obj.labels)))
        elif kind == "boundingBoxes":
            drawn = [(str(b["label"]), (float(b["left"]), float(b["top"]), float(b["width"]),
                                        float(b["height"])))
                     for b in value or [] if _has(b, "label", "left", "top", "width", "height")]
            consolidated = [(b.label, (b.left, b.top, b.width, b.height)) for b in obj.boxes]
            scores.append(_match_score(drawn, consolidated, box_iou, lambda s: s >= BOX_MIN_IOU))
        else:
            marked = [(str(e["label"]), (int(e["startOffset"]), int(e["endOffset"])))
                      for e in value or [] if _has(e, "label", "startOffset", "endOffset")]
            consolidated_spans = [(s.label, (float(s.start), float(s.end))) for s in obj.entities]
            scores.append(_match_score(marked, consolidated_spans, _span_jaccard,
                                       lambda s: s > SPAN_MIN_JACCARD))
    return sum(scores) / len(scores)


def keep(obj: LabeledObject, min_confidence: float | None = None,
         min_agreement: float | None = None) -> bool:
    """Whether the object goes into the training data.

    Only labeled objects (not failed or unlabeled ones); then, when a threshold is set, those whose
    `object_confidence` / `worker_agreement` is at least the threshold. An object whose confidence
    or agreement is unknown (None) is not filtered by that threshold.
    """
    if obj.status is not Status.labeled:
        return False
    if min_confidence is not None:
        confidence = object_confidence(obj)
        if confidence is not None and confidence < min_confidence:
            return False
    if min_agreement is not None:
        agreement = worker_agreement(obj)
        if agreement is not None and agreement < min_agreement:
            return False
    return True


def _answer_kind(obj: LabeledObject) -> str | None:
    kinds = {TaskType.text_classification: "label", TaskType.text_multilabel: "labels",
             TaskType.bounding_box: "boundingBoxes", TaskType.named_entity: "entities"}
    if obj.task_type in kinds:
        return kinds[obj.task_type]
    keys = _label_keys(obj)
    for key, kind in (("boxes", "boundingBoxes"), ("entities", "entities"), ("labels", "labels"),
                      ("label", "label")):
        if key in keys:
            return kind
    return None


def _answer_value(content: Mapping[str, Any], kind: str) -> Any:
    """The worker's `kind` value: from the first element object in the answer that holds one."""
    wanted = str if kind == "label" else list
    for value in content.values():
        if isinstance(value, Mapping) and isinstance(value.get(kind), wanted):
            return value[kind]
    return None


def _has(item: Any, *keys: str) -> bool:
    return isinstance(item, Mapping) and all(item.get(k) is not None for k in keys)


def _set_jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _match_score(drawn: Sequence[tuple[str, Any]], consolidated: Sequence[tuple[str, Any]],
                 similarity: Callable[[Any, Any], float], accept: Callable[[float], bool]) -> float:
    """Consolidated items a worker matched one-to-one, over the larger count; 1 when both empty."""
    if not drawn and not consolidated:
        return 1.0
    used: set[int] = set()
    matched = 0
    for label, c in consolidated:
        best, best_i = -1.0, -1
        for i, (other, d) in enumerate(drawn):
            if i in used or other != label:
                continue
            score = similarity(d, c)
            if accept(score) and score > best:
                best, best_i = score, i
        if best_i >= 0:
            used.add(best_i)
            matched += 1
    return matched / max(len(drawn), len(consolidated))


def _span_jaccard(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


# --- flat records -------------------------------------------------------------------------------


_FIXED_LABEL_KEYS = {TaskType.text_classification: ("label",), TaskType.text_multilabel: ("labels",),
                     TaskType.bounding_box: ("boxes",), TaskType.named_entity: ("entities",)}


def _label_keys(obj: LabeledObject) -> tuple[str, ...]:
    """Which of LABEL_KEYS the object's task type has (custom: the ones its output holds)."""
    fixed = _FIXED_LABEL_KEYS.get(obj.task_type)
    if fixed is not None:
        return fixed
    keys = []
    if obj.label is not None:
        keys.append("label")
    if obj.labels or obj.confidences:
        keys.append("labels")
    if obj.boxes or obj.image_size is not None:  # an image task keeps `boxes: []` for no boxes
        keys.append("boxes")
    if obj.entities:
        keys.append("entities")
    return tuple(keys)


def _annotated(obj: LabeledObject) -> bool:
    """Whether flat_record writes the object's label value itself, as `annotation`: a labeled
    custom object none of whose label keys gtrun reads out of it (whatever a consolidation Lambda
    wrote, an `annotation-ref`, gtrun's own `annotationsFromAllWorkers` without boxes). Boxes or
    entities read out of the answers (receipts' bounding-box NER) are its label instead."""
    return obj.task_type is TaskType.custom and obj.status is Status.labeled and not _label_keys(obj)


def _box_record(box: Box, with_tokens: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"label": box.label, "left": box.left, "top": box.top,
                              "width": box.width, "height": box.height}
    if with_tokens:
        record["tokens"] = list(box.tokens)
    return record


def flat_record(obj: LabeledObject) -> dict[str, Any]:
    """The object as one flat row: its input fields, then its label keys, confidence and workers.

    The label keys are the task type's: `label` (single-label), `labels` (multi-label), `boxes`
    (`[{label, left, top, width, height}]`, in image pixels; custom tasks add each box's OCR
    `tokens` indices), `entities` (`[{label, start, end}]`, code points, end exclusive). A custom
    task gets the ones its output holds; when it holds none, `annotation` is the label attribute's
    value as Ground Truth wrote it, any JSON (the tables write its JSON text: `_table_record`).
    `confidence` is `object_confidence`, `workers` the number of worker answers (None when they
    are unknown).

    >>> from runner.collect.records import LabeledObject
    >>> flat_record(LabeledObject(1, "0", {"source": "great", "id": 7}, "sentiment",
    ...                           TaskType.text_classification, Status.labeled, label="Positive",
    ...                           confidence=0.9))
    {'source': 'great', 'id': 7, 'label': 'Positive', 'confidence': 0.9, 'workers': None}
    """
    record = dict(obj.inputs)
    keys = _label_keys(obj)
    annotated = _annotated(obj)
    clash = [k for k in (*keys, *((ANNOTATION,) if annotated else ()), "confidence", "workers") if k in record]
    if clash:
        raise ConfigError("source.columns", f"input field {clash[0]!r} (object {obj.object_id!r}) "
                          "has the name of a column gtrun adds to the labeled data",
                          "give the column another name in source.columns")
    if "label" in keys:
        record["label"] = obj.label
    if "labels" in keys:
        record["labels"] = list(obj.labels)
    if "boxes" in keys:
        custom = obj.task_type is TaskType.custom
        record["boxes"] = [_box_record(b, custom) for b in obj.boxes]
    if "entities" in keys:
        record["entities"] = [{"label": s.label, "start": s.start, "end": s.end}
                              for s in obj.entities]
    if annotated:
        record[ANNOTATION] = obj.value
    record["confidence"] = object_confidence(obj)
    record["workers"] = obj.workers or None
    return record


# --- tokens and tags --------------------------------------------------------------------------


@cache
def _token_pattern() -> re.Pattern[str]:
    """Words (letters, digits, _ and combining marks) or one symbol with its modifiers."""
    ranges, start, prev = [], -1, -1
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if start < 0:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    ranges.append((start, prev))
    marks = "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)
    # A symbol keeps its variation selector / keycap (marks), skin tone (U+1F3FB-F) and
    # zero-width-joined partners, so an emoji sequence stays one token.
    return re.compile(rf"(?:\w|[{marks}])+"
                      rf"|[^\w\s{marks}](?:[{marks}\U0001F3FB-\U0001F3FF]|\u200d[^\w\s])*")


def text_tokens(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) in code points: runs of word characters, or single symbols.

    >>> text_tokens("Dr. Smith's café 👍🏽!")
    [('Dr', 0, 2), ('.', 2, 3), ('Smith', 4, 9), ("'", 9, 10), ('s', 10, 11), ('café', 12, 16), \
('👍🏽', 17, 19), ('!', 19, 20)]
    """
    return [(m.group(), m.start(), m.end()) for m in _token_pattern().finditer(text)]


def _bio(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> tuple[list[str], list[str]]:
    """(BIO tags, problems): longest span first, then earliest; a span overlapping one already
    tagged is dropped (as spaCy's filter_spans does), a span covering no token is reported, and so
    is one covering part of a token (the whole token is tagged)."""
    tags = ["O"] * len(offsets)
    problems = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        covered = [i for i, (a, b) in enumerate(offsets) if a < span.end and span.start < b]
        if not covered:
            problems.append(f"span {span.label!r} [{span.start}, {span.end}) covers no token")
        elif any(tags[i] != "O" for i in covered):
            problems.append(f"span {span.label!r} [{span.start}, {span.end}) overlaps a longer or "
                            "earlier span; dropped")
        else:
            if offsets[covered[0]][0] < span.start or offsets[covered[-1]][1] > span.end:
                problems.append(f"span {span.label!r} [{span.start}, {span.end}) covers part of a token; "
                                "the whole token is tagged")  # (spacy leaves such a span out)
            for n, i in enumerate(covered):
                tags[i] = ("B-" if n == 0 else "I-") + span.label
    return tags, problems


def bio_tags(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[str]:
    """BIO tags for tokens at `offsets` ([start, end) in code points): a token overlapping a span
    is tagged B-<label> (the span's first token) or I-<label>; overlapping spans keep the longest.

    >>> bio_tags([(0, 3), (4, 8), (9, 12)], [Span("city", 0, 8)])
    ['B-city', 'I-city', 'O']
    """
    return _bio(offsets, spans)[0]


def layout_box(box: Sequence[float], width: float, height: float) -> list[int]:
    """A [left, top, width, height] pixel box as LayoutLM's [x0, y0, x1, y1] in 0-1000.

    >>> layout_box([36, 44, 72, 22], 360, 440)
    [100, 100, 300, 150]
    """
    x0, y0, w, h = (float(v) for v in box)

    def scale(v: float, size: float) -> int:
        return min(LAYOUT_SCALE, max(0, int(LAYOUT_SCALE * v / size)))

    return [scale(x0, width), scale(y0, height), scale(x0 + w, width), scale(y0 + h, height)]


def yolo_line(class_id: int, box: Sequence[float], width: float, height: float) -> str:
    """`class cx cy w h`, the centre and size normalized by the image size, 6 decimals.

    >>> yolo_line(2, [20, 10, 40, 30], 200, 100)
    '2 0.200000 0.250000 0.200000 0.300000'
    """
    left, top, w, h = (float(v) for v in box)
    return (f"{class_id} {(left + w / 2) / width:.6f} {(top + h / 2) / height:.6f} "
            f"{w / width:.6f} {h / height:.6f}")


# --- results and shared plumbing ----------------------------------------------------------------


@dataclass
class WrittenFiles:
    """What one transform wrote: its files, objects per split, and what it had to leave out."""

    paths: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # split -> objects; `table`: {"all": n}
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS, "object <id>: ..."
    problem_count: int = 0
    skipped: int = 0  # objects run_transforms left out: not labeled, or below a threshold
    images: int | None = None  # coco and yolo: the images copied (None: option images=false)


class Writer(Protocol):
    def __call__(self, objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                 options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles: ...


class Images(Protocol):
    """Copies the image a source-ref names to a new file `path`, from the storage of `member`, the
    merged collect's member whose object it is (LabeledObject.member); raises StoreError when it
    cannot. Collect's is ImageCopier."""

    def __call__(self, ref: str, path: Path, member: str | None = None) -> None: ...

    # raises StoreError unless member's image behind ref is the file `path` copied for member `first`
    def check(self, ref: str, path: Path, member: str | None, first: str | None) -> None: ...


IMAGE_STEPS = frozenset({"coco", "yolo"})  # the steps that copy the images (option `images`)
IMAGE_COPIES = 8  # images copied at the same time: a copy from S3 mostly waits on the network


class _Copies:
    """The images of one step, copied on threads while the step writes its annotations. A failed
    copy is raised at the next add() or at finish(), naming the object."""

    def __init__(self, step: str, images: Images) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.step, self.images = step, images
        self.pool = ThreadPoolExecutor(max_workers=IMAGE_COPIES, thread_name_prefix=f"gtrun-{step}-images")
        self.pending: list[tuple[str, Any]] = []  # (object id, its copy), oldest first
        self.checks: list[tuple[str, str, Path, str | None, str | None]] = []  # once every copy is done
        self.count = 0

    def add(self, object_id: str, ref: str, path: Path, member: str | None = None) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # an image's name is a folder of another's ("x" and "x/y.jpg")
            raise StoreError(f"{self.step}: object {object_id!r}: {ref}: cannot make the folder of "
                             f"{path.name} ({exc.strerror or exc}){_without_images(self.step)}") from None
        self.pending.append((object_id, self.pool.submit(self.images, ref, path, member)))
        self.count += 1
        while len(self.pending) > 4 * IMAGE_COPIES or (self.pending and self.pending[0][1].done()):
            self._wait(*self.pending.pop(0))

    def _wait(self, object_id: str, copy: Any) -> None:
        try:
            copy.result()
        except StoreError as exc:
            raise StoreError(f"{self.step}: object {object_id!r}: {exc}{_without_images(self.step)}") from None

    def check(self, object_id: str, ref: str, path: Path, member: str | None, first: str | None) -> None:
        """Check, once the copies are done, that `member`'s image is the one copied for `first` to `path`."""
        self.checks.append((object_id, ref, path, member, first))

    def finish(self) -> None:
        """Wait for every copy, then check the images members share."""
        while self.pending:
            self._wait(*self.pending.pop(0))
        for object_id, ref, path, member, first in self.checks:
            self._wait(object_id, self.pool.submit(self.images.check, ref, path, member, first))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _without_images(step: str) -> str:
    """The hint of an image the step cannot copy."""
    return f"\n  hint: transforms.steps.{step}.images=false writes the annotations without the images"


@contextmanager
def _image_copies(step: str, options: Mapping[str, Any], images: Images | None) -> Iterator[_Copies | None]:
    """The step's copies when its option `images` is true, else None; every copy is done (or its
    failure raised) when the block ends."""
    if not options["images"]:
        yield None
        return
    if images is None:
        raise ConfigError(f"transforms.steps.{step}.images", "there is no storage to copy the images from here",
                          f"set transforms.steps.{step}.images=false to write the annotations alone")
    copies = _Copies(step, images)
    try:
        yield copies
        copies.finish()
    finally:
        copies.close()


class _Problems:
    def __init__(self, step: str) -> None:
        self.step = step
        self.messages: list[str] = []
        self.count = 0

    def add(self, obj: LabeledObject, problem: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_PROBLEMS:
            message = f"object {obj.object_id!r}: {problem}"
            self.messages.append(message)
            log.warning("%s: %s", self.step, message)

    def result(self, paths: list[Path], counts: dict[str, int]) -> WrittenFiles:
        if self.count > len(self.messages):
            log.warning("%s: %d problems in all", self.step, self.count)
        return WrittenFiles(paths, counts, self.messages, self.count)


@contextmanager
def _staged(out_dir: Path, name: str) -> Iterator[Path]:
    """A scratch folder that replaces `<out_dir>/<name>` when the block completes."""
    final, tmp = out_dir / name, out_dir / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


_OPTIONS: dict[str, dict[str, Any]] = {
    "table": {"format": "parquet"},
    "jsonl": {},
    "hf_datasets": {},
    "spacy": {"lang": "en"},
    "conll": {},
    "coco": {"images": True},
    "yolo": {"images": True, "folders": False},
}
_TABLE_FORMATS = ("parquet", "csv", "tsv")
DATABASE = "gtrun.duckdb"  # the dataset's DuckDB database, with the table's view
HF_FOLDER = "hf"  # the hf_datasets step's folder in the dataset
_PACKAGES = {"hf_datasets": ("datasets", "datasets"), "spacy": ("spacy", "spacy"),
             "coco": ("pycocotools", "pycocotools")}  # step -> (module, pip package)
_TEXT_TYPES = frozenset({TaskType.text_classification, TaskType.text_multilabel,
                         TaskType.named_entity})
_FITS: dict[str, frozenset[TaskType]] = {
    "table": frozenset(TaskType),
    "jsonl": frozenset(TaskType),
    "hf_datasets": frozenset(TaskType),
    "spacy": _TEXT_TYPES,
    "conll": frozenset({TaskType.named_entity, TaskType.bounding_box, TaskType.custom}),
    "coco": frozenset({TaskType.bounding_box, TaskType.custom}),
    "yolo": frozenset({TaskType.bounding_box, TaskType.custom}),
}


def _option_errors(name: str, options: Mapping[str, Any] | None) -> list[ConfigError]:
    defaults = _OPTIONS[name]
    errors = [ConfigError(f"transforms.steps.{name}.{key}", "is not an option of this transform",
                          f"its options: {', '.join(defaults) or 'none'}")
              for key in (options or {}) if key not in defaults]
    merged = {**defaults, **(options or {})}
    if name == "table" and merged["format"] not in _TABLE_FORMATS:
        errors.append(ConfigError("transforms.steps.table.format",
                                  f"{merged['format']!r} is not one of {', '.join(_TABLE_FORMATS)}"))
    if name == "spacy" and not (isinstance(merged["lang"], str) and merged["lang"]):
        errors.append(ConfigError("transforms.steps.spacy.lang",
                                  f"{merged['lang']!r} is not a language code", "e.g. en, de"))
    if name in IMAGE_STEPS and not isinstance(merged["images"], bool):
        errors.append(ConfigError(f"transforms.steps.{name}.images", f"{merged['images']!r} is not true or false",
                                  "true copies the images into the dataset, false writes the annotations alone"))
    if name == "yolo" and not isinstance(merged["folders"], bool):
        errors.append(ConfigError("transforms.steps.yolo.folders", f"{merged['folders']!r} is not true or false",
                                  "true keeps each image's bucket and folders under images/<split>/, false its "
                                  "file name alone"))
    return errors


def _options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    collect_errors(_option_errors(name, options))
    return {**_OPTIONS[name], **(options or {})}


def _require(step: str) -> Any:
    """The step's library, imported now; a ConfigError naming the pip package when it is missing."""
    module, package = _PACKAGES[step]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"transforms.steps.{step}", f"needs the {package!r} package, which is "
                          "not installed", f"pip install {package}") from None


def _class_index(step: str, labels: Sequence[str]) -> Callable[[LabeledObject, str], int]:
    """label -> its index in `labels`; a ConfigError naming the object for any other label."""
    if not labels:
        raise ConfigError("template.labels", f"the {step} transform needs the job's label list")
    index = {name: i for i, name in enumerate(labels)}

    def lookup(obj: LabeledObject, name: str) -> int:
        try:
            return index[name]
        except KeyError:
            raise ConfigError(f"transforms.steps.{step}", f"object {obj.object_id!r} has label "
                              f"{name!r}, not one of {list(labels)!r}",
                              "add it to template.labels or map it with transforms.label_map") \
                from None

    return lookup


def _image_size(obj: LabeledObject, step: str) -> tuple[float, float]:
    if obj.image_size is not None and obj.image_size[0] > 0 and obj.image_size[1] > 0:
        return float(obj.image_size[0]), float(obj.image_size[1])
    width, height = obj.inputs.get("width"), obj.inputs.get("height")
    if (isinstance(width, (int, float)) and isinstance(height, (int, float))
            and not isinstance(width, bool) and width > 0 and height > 0):
        return float(width), float(height)
    raise ConfigError(f"transforms.steps.{step}", f"object {obj.object_id!r} has no image size",
                      "the output needs image_size, or the inputs the fields width and height")


def _source_name(obj: LabeledObject, step: str) -> tuple[str, str]:
    """(source-ref, its file name) of an image object."""
    ref = obj.source_ref
    if not ref:
        raise ConfigError(f"transforms.steps.{step}", f"object {obj.object_id!r} has no source-ref",
                          f"{step} needs image objects")
    name = PurePosixPath(_uri_parts(ref)[2]).name
    if not name:
        raise ConfigError(f"transforms.steps.{step}",
                          f"object {obj.object_id!r}: source-ref {ref!r} names no file")
    return ref, name


def _uri_parts(ref: str) -> tuple[str, str, str]:
    """(scheme, host or bucket, path) of an image's URI. An s3:// URI's path is its key as it is
    written (`#`, `?` and `%` are a key's characters there, as Ground Truth and the AWS tools read
    it); another URI's is its URL path, less its query and fragment.

    >>> _uri_parts("s3://b/shots/a#1?.png")
    ('s3', 'b', '/shots/a#1?.png')
    >>> _uri_parts("https://h/a.png?x=1#f")
    ('https', 'h', '/a.png')
    """
    scheme, sep, rest = ref.partition("://")
    if sep and scheme.lower() == "s3":
        bucket, slash, key = rest.partition("/")
        return "s3", bucket, slash + key
    parsed = urlparse(ref)
    return parsed.scheme, parsed.netloc, parsed.path


def _clipped(box: Box, width: float, height: float) -> tuple[float, float, float, float] | None:
    """The box cut to the image, or None when nothing of it is inside."""
    left, top = max(0.0, box.left), max(0.0, box.top)
    right, bottom = min(width, box.left + box.width), min(height, box.top + box.height)
    if right <= left or bottom <= top:
        return None
    return left, top, right - left, bottom - top


def _image_boxes(obj: LabeledObject, width: float, height: float,
                 index: Callable[[LabeledObject, str], int], problems: _Problems,
                 ) -> Iterator[tuple[int, tuple[float, float, float, float]]]:
    """(class index, box cut to the image) for each of the object's boxes, as COCO and YOLO write
    them; a cut box is reported, one wholly outside the image reported and dropped."""
    for box in obj.boxes:
        class_id = index(obj, box.label)
        cut = _clipped(box, width, height)
        if cut is None:
            problems.add(obj, f"box {box.label!r} lies outside the {width:g}x{height:g} image; dropped")
            continue
        if cut != (box.left, box.top, box.width, box.height):
            problems.add(obj, f"box {box.label!r} cut to the image")
        yield class_id, cut


def _split_counts() -> dict[str, int]:
    return dict.fromkeys(SPLITS, 0)


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)  # json.dumps makes one a call


def _json_line(value: Any) -> str:
    return _JSON.encode(value) + "\n"


def _open_text(path: Path, stack: ExitStack) -> IO[str]:
    return stack.enter_context(open(path, "w", encoding="utf-8", newline="\n"))


# --- Parquet, batch by batch ----------------------------------------------------------------------


def _arrow_types(task_type: TaskType | None, class_ids: bool) -> dict[str, pa.DataType]:
    """Arrow types of the columns flat_record adds (labels as indices when `class_ids`)."""
    import pyarrow as pa

    label = pa.int64() if class_ids else pa.string()
    box_fields = [pa.field("label", label)] + [pa.field(k, pa.float64())
                                               for k in ("left", "top", "width", "height")]
    if task_type is TaskType.custom:
        box_fields.append(pa.field("tokens", pa.list_(pa.int64())))
    return {
        "label": label,
        "labels": pa.list_(label),
        "boxes": pa.list_(pa.struct(box_fields)),
        "entities": pa.list_(pa.struct([pa.field("label", label), pa.field("start", pa.int64()),
                                        pa.field("end", pa.int64())])),
        "confidence": pa.float64(),
        "workers": pa.int64(),
    }


class _ParquetSink:
    """Rows -> one Parquet file per split, written in batches with one schema for all splits.

    The label columns have fixed types; the input fields' types are inferred from the first batch
    (more batches are held, up to MAX_SCHEMA_ROWS rows, while a field is still only null; one that
    stays null becomes a string column). Later rows may differ, as output manifests do:
    - a field that first appears later gets a column, null in the rows before it;
    - a field whose values later need a wider type gets it (integers that meet a float: float64);
    - a field whose values share no Arrow type (2 and "2", an integer beyond int64, lists of mixed
      values) holds each value's JSON text, in every row.
    Each such change closes the files written so far as parts; `close` writes each split's parts
    into its file with the final schema, batch by batch. `finish` may add metadata to the schema.
    """

    def __init__(self, paths: Mapping[str, Path], known: Mapping[str, pa.DataType],
                 finish: Callable[[pa.Schema], pa.Schema] = lambda s: s,
                 write_empty: bool = True) -> None:
        self.paths, self.known, self.finish, self.write_empty = dict(paths), dict(known), finish, \
            write_empty
        self.schema: pa.Schema | None = None
        self.names: frozenset[str] = frozenset()  # the schema's
        self.as_json: frozenset[str] = frozenset()  # input fields written as their values' JSON text
        self.held: list[tuple[str, dict[str, Any]]] = []
        self.batches: dict[str, list[dict[str, Any]]] = {s: [] for s in self.paths}
        self.writers: dict[str, Any] = {}
        # the files written per split, each with the fields it holds as JSON text
        self.parts: dict[str, list[tuple[Path, frozenset[str]]]] = {s: [] for s in self.paths}
        self.changes = 0  # schema changes since the first batch was written
        self.opened = dict.fromkeys(self.paths, -1)  # the change each split's last part was opened after

    def add(self, split: str, row: dict[str, Any], where: str) -> None:
        if self.schema is None:
            self.held.append((split, row))
            if len(self.held) % BATCH_ROWS == 0:
                self._settle(final=False)
            return
        if not self.names.issuperset(row):
            self._add_fields(row, where)
        self.batches[split].append(row)
        if len(self.batches[split]) >= BATCH_ROWS:
            self._flush(split)

    def _settle(self, final: bool, example: dict[str, Any] | None = None) -> None:
        """The schema of the rows held (of the row `example` when none is), once it is known."""
        import pyarrow as pa

        rows = [row for _, row in self.held] or ([example] if example is not None else [])
        columns = list(dict.fromkeys(k for row in rows for k in row))
        if not columns:
            columns = list(self.known)
        inputs = [c for c in columns if c not in self.known]
        types = {c: self._infer([row.get(c) for row in rows]) for c in inputs}
        nulls = [c for c in inputs if (kind := types[c]) is not None and pa.types.is_null(kind)]
        if nulls and not final and len(self.held) < MAX_SCHEMA_ROWS:
            return
        self.as_json = frozenset(c for c, t in types.items() if t is None)
        self.schema = pa.schema([pa.field(c, self.known[c]) if c in self.known else
                                 pa.field(c, pa.string() if c in self.as_json or c in nulls else types[c])
                                 for c in columns])
        self.names = frozenset(self.schema.names)  # (pyarrow builds the list of names anew each time)
        held, self.held = self.held, []
        for split, row in held:
            self.batches[split].append(row)
            if len(self.batches[split]) >= BATCH_ROWS:
                self._flush(split)

    @staticmethod
    def _infer(values: list[Any]) -> pa.DataType | None:
        """The Arrow type of these values, or None when they have none (they are written as JSON text)."""
        import pyarrow as pa

        try:
            return pa.array(values).type
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None

    def _change(self, fields: Mapping[str, pa.DataType | None], why: str) -> None:
        """Give input fields new types (None: JSON text), or new fields a column: the files written
        so far become parts (close merges them)."""
        import pyarrow as pa

        assert self.schema is not None
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
        schema = self.schema
        for name, kind in fields.items():
            col = pa.field(name, pa.string() if kind is None else kind)
            i = schema.get_field_index(name)
            schema = schema.append(col) if i < 0 else schema.set(i, col)
        self.as_json |= {name for name, kind in fields.items() if kind is None}
        self.schema, self.names = schema, frozenset(schema.names)
        self.changes += 1
        log.info("collect: %s; %s", why, ", ".join(
            f"{n} {'as JSON text' if k is None else k}" for n, k in fields.items()))

    def _add_fields(self, row: dict[str, Any], where: str) -> None:
        import pyarrow as pa

        for split in self.paths:  # the rows before it, in the schema they were read with
            self._flush(split)
        new = {k: self._infer([v]) for k, v in row.items() if k not in self.names}
        self._change({k: pa.string() if t is not None and pa.types.is_null(t) else t for k, t in new.items()},
                     f"{where} has fields the objects before it did not have")

    def _widen(self, rows: list[dict[str, Any]]) -> None:
        """New types for the input fields whose values in these rows the schema's types do not hold
        as they are. (Arrow would truncate 0.5 to 0 in an int64 column and drop a struct's new
        keys without a word: each batch's own types are unified with the schema's instead.)"""
        import pyarrow as pa

        assert self.schema is not None
        wider: dict[str, pa.DataType | None] = {}
        for col in self.schema:
            if col.name in self.known or col.name in self.as_json:
                continue
            kind = self._infer([row.get(col.name) for row in rows])
            if kind is not None and (pa.types.is_null(kind) or kind == col.type):
                continue
            if kind is not None:
                try:
                    kind = pa.unify_schemas([pa.schema([col]), pa.schema([pa.field(col.name, kind)])],
                                            promote_options="permissive").field(col.name).type
                except (pa.ArrowException, TypeError, ValueError):
                    kind = None
            if kind is None or kind != col.type:
                wider[col.name] = kind
        if wider:
            self._change(wider, "a field's values changed type")

    def _prepared(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.as_json:
            return rows
        return [{k: (None if v is None else _JSON.encode(v)) if k in self.as_json else v for k, v in row.items()}
                for row in rows]

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self.batches[split] = self.batches[split], []
        if not rows:
            return
        assert self.schema is not None
        self._widen(rows)
        try:
            table = pa.Table.from_pylist(self._prepared(rows), schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:  # a label column: gtrun's own
            raise StoreError(f"{self.paths[split].name}: {exc}") from None
        if split not in self.writers:
            part = self.paths[split].with_name(f".{self.paths[split].name}.{len(self.parts[split])}")
            self.writers[split] = pq.ParquetWriter(part, self.finish(self.schema))
            self.parts[split].append((part, self.as_json))
            self.opened[split] = self.changes
        self.writers[split].write_table(table)

    def close(self, example: dict[str, Any] | None = None) -> list[Path]:
        """Write the files; with no rows added, in the schema of the row `example` when given."""
        import pyarrow.parquet as pq

        if self.schema is None:
            self._settle(final=True, example=example)
        assert self.schema is not None
        for split in self.paths:
            self._flush(split)
        for writer in self.writers.values():
            writer.close()
        schema = self.finish(self.schema)
        written = []
        for split, path in self.paths.items():
            parts = self.parts[split]
            if len(parts) == 1 and self.opened[split] == self.changes:  # written in the final schema
                parts[0][0].replace(path)
            elif parts:
                self._merge(parts, path, schema)
            elif self.write_empty:
                pq.ParquetWriter(path, schema).close()
            else:
                continue
            written.append(path)
        return written

    def _merge(self, parts: list[tuple[Path, frozenset[str]]], path: Path, schema: pa.Schema) -> None:
        """The parts, in order, as one file of `schema`, batch by batch."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(path, schema) as writer:
            for part, as_json in parts:
                for batch in pq.ParquetFile(part).iter_batches(BATCH_ROWS):
                    columns = []
                    for col in schema:
                        if col.name not in batch.schema.names:
                            columns.append(pa.nulls(batch.num_rows, col.type))
                            continue
                        column = batch.column(col.name)
                        if col.name in self.as_json and col.name not in as_json:
                            column = pa.array([None if v is None else _JSON.encode(v) for v in column.to_pylist()],
                                              pa.string())
                        columns.append(column.cast(col.type))
                    writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                part.unlink()


# --- table -----------------------------------------------------------------------------------------


def write_table(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles:
    """`<out>/table/<dataset>.{parquet,csv,tsv}`: every object as a flat_record row (no split),
    registered as the DuckDB view `<dataset>` in `<out>/gtrun.duckdb`.

    Parquet keeps the types (multi-label `labels` is a list column, boxes and entities lists of
    structs; a custom `annotation` is JSON text). CSV / TSV (Python's csv module, fields quoted when
    they hold the delimiter, a quote or a line break) join multi-label `labels` with `|` and write
    nested values as JSON; None and "" both become an empty field. `<dataset>` is the name of
    `out_dir`.
    """
    fmt = _options("table", options)["format"]
    out_dir = Path(out_dir)
    name = out_dir.name
    with _staged(out_dir, "table") as stage:
        path = stage / f"{name}.{fmt}"
        if fmt == "parquet":
            count = _table_parquet(objects, path)
        else:
            count = _table_csv(objects, path, "," if fmt == "csv" else "\t")
    final = out_dir / "table" / f"{name}.{fmt}"
    db = out_dir / DATABASE
    register_table(final, fmt, db, name=name)
    return WrittenFiles([final, db], {"all": count})


def _table_parquet(objects: Iterable[LabeledObject], path: Path) -> int:
    sink: _ParquetSink | None = None
    count = 0
    for obj in objects:
        if sink is None:
            sink = _ParquetSink({"all": path}, _arrow_types(obj.task_type, class_ids=False))
        sink.add("all", _table_record(obj), f"object {obj.object_id!r}")
        count += 1
    if sink is None:  # no object kept: the columns of the first object read, when there was one
        first = _first(objects)
        sink = _ParquetSink({"all": path}, _arrow_types(None if first is None else first.task_type, class_ids=False))
        sink.close(None if first is None else _table_record(first))
    else:
        sink.close()
    return count


def _table_record(obj: LabeledObject) -> dict[str, Any]:
    """flat_record as a table row: a custom `annotation` as its JSON text (jsonl's bytes of it), one
    string column whatever shape each object's value has (a struct would take the first objects'
    shape and refuse any other), which `json.loads` or DuckDB's `::JSON` reads back."""
    record = flat_record(obj)
    if _annotated(obj) and record[ANNOTATION] is not None:
        record[ANNOTATION] = _JSON.encode(record[ANNOTATION])
    return record


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _table_csv(objects: Iterable[LabeledObject], path: Path, delimiter: str) -> int:
    count = 0
    header: list[str] | None = None
    held: list[dict[str, Any]] = []
    short = False  # rows were written before the last column was added
    with open(path, "w", encoding="utf-8", newline="") as f:
        # The default "\r\n" line terminator makes QUOTE_MINIMAL quote fields holding "\r" or "\n".
        writer = csv.writer(f, delimiter=delimiter, quotechar='"', doublequote=True,
                            quoting=csv.QUOTE_MINIMAL)

        def write(row: dict[str, Any], where: str) -> None:
            nonlocal short
            assert header is not None
            extra = [k for k in row if k not in header]
            if extra:  # a column more from here on; close() gives the rows before it an empty cell
                log.info("collect: %s has fields the objects before it did not have: %s", where, ", ".join(extra))
                header.extend(extra)
                short = True
            writer.writerow([_csv_cell(row.get(k)) for k in header])

        for obj in objects:
            row = _table_record(obj)
            if "labels" in _label_keys(obj):
                bad = [x for x in obj.labels if "|" in x]
                if bad:
                    raise ConfigError("transforms.steps.table.format", f"label {bad[0]!r} contains "
                                      "'|', which joins multi-label labels in csv and tsv",
                                      "use format parquet, or rename it with transforms.label_map")
                row["labels"] = "|".join(obj.labels)
            count += 1
            if header is None:
                held.append(row)
                if len(held) < BATCH_ROWS:
                    continue
                header = list(dict.fromkeys(k for r in held for k in r))
                writer.writerow(header)
                for r in held:
                    write(r, "an object")
                held = []
            else:
                write(row, f"object {obj.object_id!r}")
        if header is None:  # fewer rows than a batch, or none: then the first object read's columns
            first = _first(objects)
            header = list(dict.fromkeys(k for r in (held or ([_table_record(first)] if first else [])) for k in r))
            writer.writerow(header)
            for r in held:
                write(r, "an object")
    if short:
        _pad_csv(path, header, delimiter)
    return count


def _pad_csv(path: Path, header: list[str], delimiter: str) -> None:
    """Rewrite a CSV/TSV file under `header`, its rows padded with empty cells to the header's width."""
    padded = path.with_name(path.name + ".padded")
    with open(path, encoding="utf-8", newline="") as src, open(padded, "w", encoding="utf-8", newline="") as dst:
        rows = csv.reader(src, delimiter=delimiter, quotechar='"', doublequote=True)
        out = csv.writer(dst, delimiter=delimiter, quotechar='"', doublequote=True, quoting=csv.QUOTE_MINIMAL)
        next(rows, None)
        out.writerow(header)
        for row in rows:
            out.writerow(row + [""] * (len(header) - len(row)))
    padded.replace(path)


def register_table(path: Path, format: str, db_path: Path, *, name: str | None = None) -> str:
    """Create or replace a DuckDB view over the table file in the database `db_path`; its name.

    The view is named `name` (default: the folder holding `db_path`, i.e. the dataset) and reads
    the file by its absolute path, so `duckdb <dataset>/gtrun.duckdb -c 'FROM "<dataset>"'` works
    at once; moving the dataset folder needs a new `register_table`.
    """
    import duckdb

    if format not in _TABLE_FORMATS:
        raise ConfigError("transforms.steps.table.format",
                          f"{format!r} is not one of {', '.join(_TABLE_FORMATS)}")
    view = name or Path(db_path).resolve().parent.name
    file = sql_string(str(Path(path).resolve()))
    reader = (f"read_parquet({file})" if format == "parquet" else
              f"read_csv({file}, header = true, delim = {sql_string(',' if format == 'csv' else chr(9))}, "
              "quote = '\"', escape = '\"')")
    try:
        con = duckdb.connect(str(db_path))
    except duckdb.Error as exc:
        raise StoreError(f"{db_path}: cannot open the DuckDB database: {exc}") from None
    try:
        con.execute(f"CREATE OR REPLACE VIEW {sql_name(view)} AS SELECT * FROM {reader}")
    except duckdb.Error as exc:
        raise StoreError(f"{db_path}: cannot create the view {view!r} over {path}: {exc}") from None
    finally:
        con.close()
    return view


def athena_type(arrow_type: pa.DataType) -> str:
    """The Athena (Hive DDL) type of an Arrow column type.

    >>> import pyarrow as pa
    >>> athena_type(pa.list_(pa.struct([("label", pa.string()), ("start", pa.int64())])))
    'array<struct<`label`:string,`start`:bigint>>'
    """
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        return athena_type(t.value_type)
    simple = [(pa.types.is_null, "string"), (pa.types.is_boolean, "boolean"),
              (pa.types.is_int8, "tinyint"), (pa.types.is_int16, "smallint"),
              (pa.types.is_int32, "int"), (pa.types.is_int64, "bigint"),
              (pa.types.is_uint8, "smallint"), (pa.types.is_uint16, "int"),
              (pa.types.is_uint32, "bigint"), (pa.types.is_uint64, "decimal(20,0)"),
              (pa.types.is_float16, "float"), (pa.types.is_float32, "float"),
              (pa.types.is_float64, "double"), (pa.types.is_string, "string"),
              (pa.types.is_large_string, "string"), (pa.types.is_binary, "binary"),
              (pa.types.is_large_binary, "binary"), (pa.types.is_date, "date"),
              (pa.types.is_timestamp, "timestamp")]
    for test, name in simple:
        if test(t):
            return name
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{athena_type(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{athena_type(t.key_type)},{athena_type(t.item_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{_ddl_name(t.field(i).name)}:{athena_type(t.field(i).type)}"
                                    for i in range(t.num_fields)) + ">"
    raise ValueError(f"no Athena type for the Arrow type {t}")


def athena_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """(column, Athena type) for each column of a Parquet file's Arrow schema."""
    return [(f.name, athena_type(f.type)) for f in schema]


def _ddl_name(name: str) -> str:
    # Athena DDL escapes identifiers with backticks; `left`, `start`, `end` are reserved words.
    return "`" + name.replace("`", "``") + "`"


def athena_table_ddl(table: str, location: str, columns: Sequence[tuple[str, str]], *,
                     database: str | None = None) -> str:
    """CREATE EXTERNAL TABLE over the Parquet files under `location` (an s3:// folder). A table of
    that name must not exist (athena_drop_ddl): Athena keeps an existing table's columns.

    `columns` are (name, Athena type) pairs, e.g. `athena_columns(pq.read_schema(path))`. Every
    name is quoted with backticks (Athena DDL's escape: `source-ref`, and reserved words such as
    `left` or `end` in structs); in SELECTs quote them with double quotes.

    >>> print(athena_table_ddl("tweets", "s3://b/p/table", [("source", "string"),
    ...                        ("labels", "array<string>")], database="ml"))
    CREATE EXTERNAL TABLE `ml`.`tweets` (
      `source` string,
      `labels` array<string>
    )
    STORED AS PARQUET
    LOCATION 's3://b/p/table/'
    """
    if not location.startswith("s3://"):
        raise ValueError(f"location {location!r} is not an s3:// folder")
    if not columns:
        raise ValueError("a table needs at least one column")
    name = (f"{_ddl_name(database)}." if database else "") + _ddl_name(table)
    body = ",\n".join(f"  {_ddl_name(c)} {t}" for c, t in columns)
    folder = location if location.endswith("/") else location + "/"
    return (f"CREATE EXTERNAL TABLE {name} (\n{body}\n)\n"
            f"STORED AS PARQUET\nLOCATION {sql_string(folder)}")


def athena_table_problem(steps: Mapping[str, Mapping[str, Any] | None]) -> ConfigError | None:
    """The aws backend registers the table in Athena over its Parquet file (athena_table_ddl): a
    table step in another format is a problem, found before a job is launched or a dataset written."""
    options = steps.get("table", {})  # its options' own problems are check_transforms' to say
    fmt = options.get("format", _OPTIONS["table"]["format"]) if isinstance(options, Mapping) else "parquet"
    if fmt == "parquet":  # no table step: none
        return None
    return ConfigError("transforms.steps.table.format", f"{fmt!r}: the aws backend registers the table in Athena "
                       "as Parquet only", "transforms.steps.table.format=parquet (jsonl and hf_datasets write "
                       "other files beside it)")


def athena_drop_ddl(table: str, *, database: str | None = None) -> str:
    """DROP TABLE IF EXISTS: an earlier collect's table of the dataset, made anew with the columns of
    the files written now (an external table's files stay where they are).

    >>> athena_drop_ddl("tweets", database="ml")
    'DROP TABLE IF EXISTS `ml`.`tweets`'
    """
    return "DROP TABLE IF EXISTS " + (f"{_ddl_name(database)}." if database else "") + _ddl_name(table)


# --- jsonl -------------------------------------------------------------------------------------------


def write_jsonl(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles:
    """`<out>/jsonl/{train,validation,test}.jsonl`: one flat_record per line, UTF-8 kept."""
    _options("jsonl", options)
    out_dir = Path(out_dir)
    counts = _split_counts()
    # The files close (ExitStack) before the staged folder moves into place.
    with _staged(out_dir, "jsonl") as stage, ExitStack() as stack:
        files = {s: _open_text(stage / f"{s}.jsonl", stack) for s in SPLITS}
        for obj in objects:
            split = split_for(obj, settings.split)
            files[split].write(_json_line(flat_record(obj)))
            counts[split] += 1
    return WrittenFiles([out_dir / "jsonl" / f"{s}.jsonl" for s in SPLITS], counts)


# --- Hugging Face datasets ----------------------------------------------------------------------


def write_hf_datasets(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                      options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles:
    """`<out>/hf/{split}.parquet` whose schema carries `datasets` features.

    Columns are flat_record's. With a label list, `label` is `ClassLabel(names=labels)`, `labels`
    `Sequence(ClassLabel)`, and the `label` inside `boxes` / `entities` (lists of structs) a
    ClassLabel too; the values are the class indices. Without one (a custom task), labels stay
    strings; a custom `annotation` is JSON text, as in the table. A split with no objects gets
    no file (`datasets` refuses empty splits), so load with `load_dataset("parquet",
    data_dir="<out>/hf")`, which finds the splits by file name.
    """
    _options("hf_datasets", options)
    datasets = _require("hf_datasets")
    out_dir = Path(out_dir)
    class_ids = bool(labels)
    index = _class_index("hf_datasets", labels) if class_ids else None
    counts = _split_counts()
    with _staged(out_dir, HF_FOLDER) as stage:
        paths = {s: stage / f"{s}.parquet" for s in SPLITS}
        sink: _ParquetSink | None = None

        def new_sink(task_type: TaskType | None) -> _ParquetSink:
            return _ParquetSink(paths, _arrow_types(task_type, class_ids),
                                lambda schema: _hf_schema(datasets, schema, labels),
                                write_empty=False)

        for obj in objects:
            if sink is None:
                sink = new_sink(obj.task_type)
            row = _table_record(obj)
            if index is not None:
                if row.get("label") is not None:
                    row["label"] = index(obj, row["label"])
                if "labels" in row:
                    row["labels"] = [index(obj, x) for x in row["labels"]]
                for key in ("boxes", "entities"):
                    for item in row.get(key, ()):
                        item["label"] = index(obj, item["label"])
            split = split_for(obj, settings.split)
            sink.add(split, row, f"object {obj.object_id!r}")
            counts[split] += 1
        written = (sink or new_sink(None)).close()
    return WrittenFiles([out_dir / HF_FOLDER / p.name for p in written], counts)


LEAK_FIELDS = ("source", "source-ref")  # the input a model reads, a text or an image (collect.split_leaks)


# the steps whose files datasets.load_dataset loads, in the order load_files prefers them: (step, folder, suffix)
LOAD_STEPS = (("hf_datasets", HF_FOLDER, "parquet"), ("jsonl", "jsonl", "jsonl"))


def load_files(written: Mapping[str, WrittenFiles]) -> list[tuple[str, str]]:
    """(split, path in the dataset) of the files `datasets.load_dataset` is to load from the
    dataset's folder (the card's `configs`): hf_datasets' Parquet, else the jsonl files; only the
    splits with objects (`datasets` refuses an empty one); none without either step.

    >>> load_files({"jsonl": WrittenFiles(counts={"train": 8, "validation": 2, "test": 0})})
    [('train', 'jsonl/train.jsonl'), ('validation', 'jsonl/validation.jsonl')]
    """
    for step, folder, suffix in LOAD_STEPS:
        files = written.get(step)
        if files is not None:
            return [(s, f"{folder}/{s}.{suffix}") for s in SPLITS if files.counts.get(s)]
    return []


def split_objects(written: Mapping[str, WrittenFiles]) -> dict[str, int] | None:
    """The objects each split got, from the counts a step that splits wrote (jsonl's, hf_datasets',
    else another's: every step splits the objects it keeps alike); None when no step splits (table).

    >>> split_objects({"table": WrittenFiles(counts={"all": 9}), "hf_datasets": WrittenFiles(counts={"train": 8, "test": 1})})
    {'train': 8, 'validation': 0, 'test': 1}
    """
    order = sorted(written, key=lambda step: (step not in ("jsonl", "hf_datasets"), step != "jsonl"))
    for step in order:
        counts = written[step].counts
        if any(s in counts for s in SPLITS):
            return {s: counts.get(s, 0) for s in SPLITS}
    return None


def _hf_schema(datasets: Any, schema: pa.Schema, labels: Sequence[str]) -> pa.Schema:
    """The schema with `datasets` features metadata (ClassLabel for the label columns)."""
    import pyarrow as pa

    value = datasets.Value
    label = datasets.ClassLabel(names=list(labels)) if labels else value("string")
    coords = {k: value("float64") for k in ("left", "top", "width", "height")}
    known = {
        "label": label,
        "labels": datasets.Sequence(label),
        "entities": [{"label": label, "start": value("int64"), "end": value("int64")}],
        "confidence": value("float64"),
        "workers": value("int64"),
    }
    features = {}
    for f in schema:
        if f.name == "boxes":
            struct = f.type.value_type
            box = {"label": label, **coords}
            if struct.get_field_index("tokens") >= 0:
                box["tokens"] = datasets.Sequence(value("int64"))
            features[f.name] = [box]
        elif f.name in known:
            features[f.name] = known[f.name]
        else:
            features[f.name] = datasets.Features.from_arrow_schema(pa.schema([f]))[f.name]
    return datasets.Features(features).arrow_schema


# --- spaCy -------------------------------------------------------------------------------------------


def write_spacy(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles:
    """`<out>/spacy/{split}/NNNN.spacy`: DocBins of at most SPACY_DOCS docs, tokenized by
    `spacy.blank(lang)`, and `<out>/spacy/{split}/ids.jsonl`: each doc's object id.

    NER: `doc.ents` from the spans via `char_span(alignment_mode="contract")`; a span that covers
    no whole token is dropped, one whose edges moved to token edges is kept, and overlapping spans
    keep the longest (spaCy's filter_spans): each is reported. Text classification: `doc.cats`
    one-hot over the labels (multi-label: multi-hot).

    A split's folder is what `spacy train` takes (`--paths.train spacy/train`: it reads every
    `.spacy` file under it, in sorted order); a script reads the files in sorted order with
    `DocBin().from_disk(f).get_docs(vocab)`. Line n of `ids.jsonl` (a JSON string) is the object id
    of doc n in that order. Every split has at least one file (an empty DocBin when it has no doc).
    """
    lang = _options("spacy", options)["lang"]
    spacy = _require("spacy")
    from spacy.tokens import DocBin
    from spacy.util import filter_spans

    try:
        nlp = spacy.blank(lang)
    except (ImportError, KeyError, ValueError) as exc:
        raise ConfigError("transforms.steps.spacy.lang", f"{lang!r} is not a spaCy language: {exc}",
                          "e.g. en, de, fr, xx (multi-language)") from None
    out_dir = Path(out_dir)
    problems = _Problems("spacy")
    counts = _split_counts()
    index: Callable[[LabeledObject, str], int] | None = None
    # Each DocBin is written when it holds SPACY_DOCS docs, so memory stays flat in objects. The
    # object ids go to ids.jsonl, not to doc.user_data: DocBin packs and unpacks each doc's user_data
    # with its own srsly.msgpack call, whose encoder lookup scans the installed packages' entry points
    # (spaCy 3.8, srsly 2.5, 174 packages installed): 0.8 ms a doc to write, and 0.3 ms to read in
    # every epoch of `spacy train`.
    bins: dict[str, Any] = {s: DocBin() for s in SPLITS}
    files = dict.fromkeys(SPLITS, 0)
    with _staged(out_dir, "spacy") as stage, ExitStack() as stack:

        def flush(split: str) -> None:
            bins[split].to_disk(stage / split / f"{files[split]:04d}.spacy")
            files[split] += 1
            bins[split] = DocBin()

        for split in SPLITS:
            (stage / split).mkdir()
        ids = {s: _open_text(stage / s / SPACY_IDS, stack) for s in SPLITS}
        for obj in objects:
            text = obj.text
            if text is None:
                raise ConfigError("transforms.steps.spacy", f"object {obj.object_id!r} has no text "
                                  "(`source`)", "spacy needs text objects")
            doc = nlp.make_doc(text)
            if obj.task_type is TaskType.named_entity or obj.entities:
                spans = []
                for s in obj.entities:
                    span = doc.char_span(s.start, s.end, label=s.label, alignment_mode="contract")
                    if span is None:
                        problems.add(obj, f"span {s.label!r} [{s.start}, {s.end}) "
                                          f"{text[s.start:s.end]!r} covers no whole token; dropped")
                        continue
                    if (span.start_char, span.end_char) != (s.start, s.end):
                        problems.add(obj, f"span {s.label!r} [{s.start}, {s.end}) contracted to "
                                          f"token edges [{span.start_char}, {span.end_char})")
                    spans.append(span)
                kept = filter_spans(spans)
                for span in spans:
                    if span not in kept:
                        problems.add(obj, f"span {span.label_!r} [{span.start_char}, {span.end_char}) "
                                          "overlaps a longer span; dropped")
                doc.ents = kept
            else:
                index = index or _class_index("spacy", labels)
                chosen = {index(obj, x) for x in ([obj.label] if obj.label is not None else obj.labels)}
                doc.cats = {name: float(i in chosen) for i, name in enumerate(labels)}
            split = split_for(obj, settings.split)
            bins[split].add(doc)
            ids[split].write(_json_line(obj.object_id))
            counts[split] += 1
            if len(bins[split]) >= SPACY_DOCS:
                flush(split)
        for split in SPLITS:
            if len(bins[split]) or not files[split]:
                flush(split)
    return problems.result([out_dir / "spacy" / s for s in SPLITS], counts)


# --- CoNLL -----------------------------------------------------------------------------------------


def write_conll(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
                options: Mapping[str, Any], settings: TransformsConfig) -> WrittenFiles:
    """`<out>/conll/{split}.conll`: `token<TAB>tag` lines, BIO tags, a blank line after each object.

    Text NER: tokens from `text_tokens` (words and symbols, offsets kept), tags from `bio_tags`.
    Bounding-box NER (image objects with `inputs["tokens"]` = `[{text, box}]`): a box's tokens are
    its `tokens` indices, or when it has none the tokens whose centre lies inside it (edges
    included, as the receipts template decides); B- for its first token, I- for the others, in
    token order; a token claimed by an earlier box stays with it (reported), and the box's next
    token after it starts again with B-, or IOB2 readers would join it to that box's entity. These objects also go
    to `<out>/conll/{split}.layout.jsonl`: `{id, tokens, bboxes, ner_tags}`, bboxes as LayoutLM's
    [x0, y0, x1, y1] in 0-1000 of the input's `width` / `height`, the page the tokens' boxes are
    in (`_token_space`), which the image shown to workers may exceed. Whitespace inside a token is
    written as `_` in the .conll file (reported) and kept in the .jsonl.
    """
    _options("conll", options)
    out_dir = Path(out_dir)
    problems = _Problems("conll")
    counts = _split_counts()
    with _staged(out_dir, "conll") as stage, ExitStack() as stack:
        conll = {s: _open_text(stage / f"{s}.conll", stack) for s in SPLITS}
        layout: dict[str, IO[str]] = {}
        for obj in objects:
            split = split_for(obj, settings.split)
            if obj.task_type is TaskType.named_entity or (obj.entities and not obj.boxes):
                words, tags = _text_tags(obj, problems)
            else:
                if not layout:
                    layout = {s: _open_text(stage / f"{s}.layout.jsonl", stack) for s in SPLITS}
                width, height = _token_space(obj)
                words, boxes, tags = _box_tags(obj, problems, width, height)
                layout[split].write(_json_line({
                    "id": obj.object_id, "tokens": words,
                    "bboxes": [layout_box(b, width, height) for b in boxes],
                    "ner_tags": tags}))
            lines = []
            for word, tag in zip(words, tags, strict=False):
                if _spaced(tag):
                    raise _spaced_tag(tag[2:], settings.label_map)
                clean = "_".join(word.split()) or "_"
                if clean != word:
                    problems.add(obj, f"token {word!r} written as {clean!r}")
                lines.append(f"{clean}\t{tag}\n")
            conll[split].write("".join(lines) + "\n")
            counts[split] += 1
    paths = [out_dir / "conll" / f"{s}.conll" for s in SPLITS]
    if layout:
        paths += [out_dir / "conll" / f"{s}.layout.jsonl" for s in SPLITS]
    return problems.result(paths, counts)


def _spaced(name: str) -> bool:
    return any(c.isspace() for c in name)


def _spaced_tag(label: str, label_map: Mapping[str, str]) -> ConfigError:
    """The error of a label that a CoNLL tag cannot hold: readers split a line's columns at any
    whitespace (spaCy's `spacy convert`, flair's ColumnCorpus), so `B-Product Name` would be read
    as the tag `B-Product`. The hint renames it in transforms.label_map, where it may come from."""
    joined = "_".join(label.split())
    sources = [old for old, new in label_map.items() if new == label]
    hint = (f"transforms.label_map renames {', '.join(map(repr, sources))} to it: a name without whitespace, "
            f"e.g. {joined!r}" if sources else
            f"rename it with transforms.label_map, e.g. {{{label!r}: {joined!r}}}")
    return ConfigError("transforms.steps.conll", f"label {label!r} has whitespace, which ends a CoNLL tag "
                       "(readers split a line's columns at whitespace)", hint)


def _text_tags(obj: LabeledObject, problems: _Problems) -> tuple[list[str], list[str]]:
    text = obj.text
    if text is None:
        raise ConfigError("transforms.steps.conll", f"object {obj.object_id!r} has no text "
                          "(`source`)", "conll needs text objects, or image objects with tokens")
    tokens = text_tokens(text)
    spans = []
    for s in obj.entities:
        if not 0 <= s.start < s.end <= len(text):
            problems.add(obj, f"span {s.label!r} [{s.start}, {s.end}) is outside the text "
                              f"(length {len(text)}); dropped")
        else:
            spans.append(s)
    tags, found = _bio([(a, b) for _, a, b in tokens], spans)
    for problem in found:
        problems.add(obj, problem)
    return [t for t, _, _ in tokens], tags


def _token_space(obj: LabeledObject) -> tuple[float, float]:
    """The width and height the OCR tokens' boxes are given in: the input's `width` / `height`
    (the receipts template scales the worker's boxes, drawn in the image's pixels, to them), else
    the image's size."""
    width, height = obj.inputs.get("width"), obj.inputs.get("height")
    if (isinstance(width, (int, float)) and isinstance(height, (int, float))
            and not isinstance(width, bool) and not isinstance(height, bool) and width > 0 and height > 0):
        return float(width), float(height)
    return _image_size(obj, "conll")


def _box_tags(obj: LabeledObject, problems: _Problems, width: float, height: float,
              ) -> tuple[list[str], list[list[float]], list[str]]:
    """Tokens, their boxes and BIO tags of a bounding-box NER object whose tokens' boxes are in a
    `width` x `height` page; the worker's boxes, in the image's pixels, are scaled to it."""
    tokens = obj.inputs.get("tokens")
    if not isinstance(tokens, list):
        raise ConfigError("transforms.steps.conll", f"object {obj.object_id!r} has no input field "
                          "'tokens'", "bounding-box NER needs the OCR tokens: [{text, box}]")
    words, boxes = [], []
    for n, token in enumerate(tokens):
        box = token.get("box") if isinstance(token, Mapping) else None
        if (not isinstance(token, Mapping) or not isinstance(token.get("text"), str)
                or not isinstance(box, (list, tuple)) or len(box) != 4):
            raise ConfigError("transforms.steps.conll", f"object {obj.object_id!r}: tokens[{n}] "
                              f"is not {{text, box: [left, top, width, height]}}: {token!r}")
        words.append(token["text"])
        boxes.append([float(v) for v in box])
    tags = ["O"] * len(words)
    image = obj.image_size
    kx, ky = (width / image[0], height / image[1]) if image is not None and image[0] > 0 and image[1] > 0 else (1, 1)
    for box in obj.boxes:
        if box.tokens:
            members = sorted(set(box.tokens))
            outside = [i for i in members if not 0 <= i < len(words)]
            if outside:
                problems.add(obj, f"box {box.label!r} names tokens {outside} of {len(words)}")
            members = [i for i in members if 0 <= i < len(words)]
        else:
            members = [i for i, (x, y, w, h) in enumerate(boxes)
                       if box.left * kx <= x + w / 2 <= (box.left + box.width) * kx
                       and box.top * ky <= y + h / 2 <= (box.top + box.height) * ky]
        free = [i for i in members if tags[i] == "O"]
        if len(free) < len(members):
            problems.add(obj, f"box {box.label!r} shares tokens "
                              f"{[i for i in members if i not in free]} with an earlier box")
        if not members:
            problems.add(obj, f"box {box.label!r} covers no token")
        for n, i in enumerate(free):
            # a run of the box's tokens that another entity's interrupts starts anew (IOB2)
            follows = n > 0 and free[n - 1] == i - 1
            tags[i] = ("I-" if follows or (n > 0 and tags[i - 1] == "O") else "B-") + box.label
    return words, boxes, tags


# --- COCO ------------------------------------------------------------------------------------------


def write_coco(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
               options: Mapping[str, Any], settings: TransformsConfig, images: Images | None = None,
               ) -> WrittenFiles:
    """`<out>/coco/{split}.json`: COCO instances (images, annotations, categories), and the images
    as `<out>/coco/images/<file_name>`, the folder to give a loader as the image root (copied by
    `images`; option `images: false` leaves them out).

    Images: id from 1, `coco_url` the source-ref, `file_name` its path under the folder all the
    images share (`image_names`: the file name when they are all in one folder, `x/same.jpg` and
    `y/same.jpg` for `s3://b/x/same.jpg` and `s3://b/y/same.jpg`; that folder is `info.url`, the
    same in every split), width, height. Annotations: bbox [x, y, w, h] in pixels cut to the image
    (a box wholly outside it is dropped; both reported), area w*h, iscrowd 0. Categories: the
    labels, ids from 1. An image without boxes is listed with no annotation. `info.version` is
    `transforms.label_schema`.
    """
    opts = _options("coco", options)
    out_dir = Path(out_dir)
    index = _class_index("coco", labels)
    problems = _Problems("coco")
    docs: dict[str, dict[str, list[dict[str, Any]]]] = {
        s: {"images": [], "annotations": []} for s in SPLITS}
    placed: list[tuple[dict[str, Any], str, str | None]] = []  # (image, object id, member) in object order
    for obj in objects:
        ref, _ = _source_name(obj, "coco")
        width, height = _image_size(obj, "coco")
        split = split_for(obj, settings.split)
        doc = docs[split]
        image_id = len(doc["images"]) + 1
        image: dict[str, Any] = {"id": image_id, "file_name": "", "coco_url": ref,
                                 "width": _number(width), "height": _number(height)}
        doc["images"].append(image)
        placed.append((image, obj.object_id, obj.member))
        for class_id, cut in _image_boxes(obj, width, height, index, problems):
            x, y, w, h = (_number(v) for v in cut)
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "category_id": class_id + 1, "bbox": [x, y, w, h],
                                       "area": _number(cut[2] * cut[3]), "iscrowd": 0})
    # the names depend on every image's source-ref: given once all are known
    root, names = image_names([image["coco_url"] for image, _, _ in placed])
    seen: dict[str, tuple[str, str]] = {}
    for (image, object_id, _), name in zip(placed, names, strict=True):
        ref = image["coco_url"]
        first_id, first_ref = seen.setdefault(name, (object_id, ref))
        if first_ref != ref:  # only URIs that differ in their query, or of several schemes
            raise StoreError(f"coco: two images have the file_name {name!r}: object {first_id!r} "
                             f"({first_ref}) and object {object_id!r} ({ref})")
        image["file_name"] = name
    categories = [{"id": i + 1, "name": name, "supercategory": name} for i, name in enumerate(labels)]
    info = {"description": f"gtrun: {out_dir.name}", "url": root, "version": settings.label_schema or ""}
    with _staged(out_dir, "coco") as stage, _image_copies("coco", opts, images) as copies:
        if copies is not None:
            (stage / "images").mkdir()
            copied: dict[str, str | None] = {}  # an image two objects share is copied once: name -> member
            checked: set[tuple[str, str | None]] = set()  # (name, member): another member's, checked once
            for (image, object_id, member), name in zip(placed, names, strict=True):
                path = stage / "images" / _inside("coco", name, image["coco_url"])
                if name not in copied:
                    copied[name] = member
                    copies.add(object_id, image["coco_url"], path, member)
                elif copied[name] != member and (name, member) not in checked:  # its run's storage may differ
                    checked.add((name, member))
                    copies.check(object_id, image["coco_url"], path, member, copied[name])
        for split, doc in docs.items():
            with open(stage / f"{split}.json", "w", encoding="utf-8") as f:
                json.dump({"info": info, "licenses": [], "images": doc["images"],
                           "annotations": doc["annotations"], "categories": categories},
                          f, ensure_ascii=False, separators=(",", ":"))
    written = problems.result([out_dir / "coco" / f"{s}.json" for s in SPLITS]
                              + ([out_dir / "coco" / "images"] if copies is not None else []),
                              {s: len(d["images"]) for s, d in docs.items()})
    written.images = copies.count if copies is not None else None
    return written


def _inside(step: str, name: str, ref: str) -> str:
    """An image's name as a path under the step's images folder; a StoreError for one that would
    leave it (an S3 key may hold "..", or an empty segment)."""
    if not name or any(part in ("", ".", "..") for part in name.split("/")):
        raise StoreError(f"{step}: image {ref}: its name {name!r} is not a path inside {step}/images/"
                         + _without_images(step))
    return name


def image_names(refs: Sequence[str]) -> tuple[str, list[str]]:
    """The deepest folder all the images' URIs share, and each image's path under it: COCO's
    `file_name`, which loaders join to the folder the user copied the images to.

    Distinct images get distinct names (two in one folder differ by name), and folder + name is
    the URI again (less any query). Images in several buckets share no folder: their names start
    with the bucket. URIs of several schemes (s3://, https://) give no folder ("").

    >>> image_names(["s3://b/imgs/x/same.jpg", "s3://b/imgs/y/same.jpg", "s3://b/imgs/a.jpg"])
    ('s3://b/imgs/', ['x/same.jpg', 'y/same.jpg', 'a.jpg'])
    >>> image_names(["s3://b/imgs/a.jpg", "s3://c/imgs/a.jpg"])
    ('s3://', ['b/imgs/a.jpg', 'c/imgs/a.jpg'])
    """
    parsed = [_uri_parts(ref) for ref in refs]
    paths = [[netloc, *path.split("/")[1:]] if netloc else path.split("/") for _, netloc, path in parsed]
    schemes = {scheme for scheme, _, _ in parsed}
    common: list[str] = paths[0][:-1] if paths and len(schemes) == 1 else []
    for path in paths[1:]:
        n = 0
        while n < len(common) and n < len(path) - 1 and path[n] == common[n]:
            n += 1
        del common[n:]
    scheme = next(iter(schemes)) if len(schemes) == 1 else ""
    root = (f"{scheme}://" if scheme else "") + "".join(f"{part}/" for part in common)
    return root, ["/".join(path[len(common):]) for path in paths]


def _number(value: float) -> float | int:
    """Whole numbers as ints (COCO files usually hold ints), others as they are."""
    return int(value) if float(value).is_integer() else value


# --- YOLO ------------------------------------------------------------------------------------------


def write_yolo(objects: Iterable[LabeledObject], out_dir: Path, *, labels: Sequence[str],
               options: Mapping[str, Any], settings: TransformsConfig, images: Images | None = None,
               ) -> WrittenFiles:
    """`<out>/yolo/labels/{split}/<image stem>.txt` (`yolo_line` per box), each image beside its
    labels as `<out>/yolo/images/{split}/<file name of its source-ref>` (copied by `images`; option
    `images: false` leaves them out), and `<out>/yolo/data.yaml`. Option `folders: true` keeps the
    source-ref's bucket and folders in both (`yolo_name`), for images of several folders that share
    a file name: Ultralytics reads the folders below `images/{split}` and finds an image's labels
    by its path with `images` changed to `labels`.

    Boxes are cut to the image first (reported; a box wholly outside is dropped). An image with no
    box gets an empty file (a background image). data.yaml gives `train` / `val` / `test` image
    folders `images/{split}` relative to its own folder (no `path`: see YOLO_YAML_NOTE), `nc` and
    `names`: YOLO finds an image's labels by its stem. Two images of one split with the same label
    file are an error (one image in two merged runs, or two of one name in several folders).
    """
    opts = _options("yolo", options)
    import yaml

    out_dir = Path(out_dir)
    index = _class_index("yolo", labels)
    problems = _Problems("yolo")
    counts = _split_counts()
    final = out_dir / "yolo"
    with _staged(out_dir, "yolo") as stage, _image_copies("yolo", opts, images) as copies:
        for split in SPLITS:
            (stage / "labels" / split).mkdir(parents=True)
            if copies is not None:
                (stage / "images" / split).mkdir(parents=True)
        for obj in objects:
            ref, file_name = _source_name(obj, "yolo")
            width, height = _image_size(obj, "yolo")
            split = split_for(obj, settings.split)
            lines = [yolo_line(class_id, cut, width, height) + "\n"
                     for class_id, cut in _image_boxes(obj, width, height, index, problems)]
            name = _inside("yolo", yolo_name(ref, file_name, opts["folders"]), ref)
            label = PurePosixPath(name).with_suffix(".txt")
            path = stage / "labels" / split / label
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "x", encoding="utf-8", newline="\n") as f:
                    f.writelines(lines)
            except FileExistsError:
                # named as in the dataset: the staging folder is gone by the time anyone reads this
                hint = ("the same image, or one of its name with another suffix" if opts["folders"] else
                        "the same image, or one of its name in another folder: transforms.steps.yolo.folders=true "
                        "keeps the folders")
                raise StoreError(f"yolo/labels/{split}/{label}: two {split} images have this label file: object "
                                 f"{obj.object_id!r} ({ref}) and one before it ({hint})") from None
            if copies is not None:
                copies.add(obj.object_id, ref, stage / "images" / split / name, obj.member)
            counts[split] += 1
        data = {"train": "images/train", "val": "images/validation", "test": "images/test",
                "nc": len(labels), "names": list(labels)}
        (stage / "data.yaml").write_text(YOLO_YAML_NOTE + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                         encoding="utf-8")
    written = problems.result([final / "data.yaml", *(final / "labels" / s for s in SPLITS)]
                              + ([final / "images" / s for s in SPLITS] if copies is not None else []), counts)
    written.images = copies.count if copies is not None else None
    return written


def yolo_name(ref: str, file_name: str, folders: bool) -> str:
    """An image's path under `yolo/images/{split}/`: its file name, or with `folders` its bucket and
    key (a URI's host and path; a local path's folders).

    >>> yolo_name("s3://b/receipts/store-1/001.jpg", "001.jpg", False)
    '001.jpg'
    >>> yolo_name("s3://b/receipts/store-1/001.jpg", "001.jpg", True)
    'b/receipts/store-1/001.jpg'
    >>> yolo_name("/data/imgs/001.jpg", "001.jpg", True)
    'data/imgs/001.jpg'
    """
    if not folders:
        return file_name
    _, netloc, path = _uri_parts(ref)
    return netloc + path if netloc else path.lstrip("/")


# data.yaml has no `path`: the folder the transform writes in is a staging folder that collect moves
# to a place the transform is not told (--out), and the dataset may be moved again after. Ultralytics
# (ultralytics/data/utils.py, check_det_dataset) takes the dataset root from `path`, else from the
# yaml file's folder, and joins train/val/test to it; a relative `path` (`.`) it resolves against
# the working directory, or its DATASETS_DIR, not against the yaml file.
YOLO_YAML_NOTE = ("# train/val/test are relative to this file's folder: Ultralytics reads them so when\n"
                  "# `path` is not set (add `path: <this folder>` for tools that need it, e.g. YOLOv5)\n")


# --- running the steps ----------------------------------------------------------------------------


TRANSFORMS: dict[str, Writer] = {
    "table": write_table,
    "jsonl": write_jsonl,
    "hf_datasets": write_hf_datasets,
    "spacy": write_spacy,
    "conll": write_conll,
    "coco": write_coco,
    "yolo": write_yolo,
}


def check_transforms(steps: Mapping[str, Mapping[str, Any] | None], settings: TransformsConfig, *,
                     labels: Sequence[str], task_type: TaskType | None, packages: bool = True) -> None:
    """Raise every problem of the transforms config at once (ConfigError / ConfigErrors).

    Unknown steps, steps that do not fit the task type (coco on text), unknown or bad options,
    missing libraries, split ratios, thresholds outside [0, 1], and label_map keys that are not
    labels of the job. Needs no objects: `gtrun plan` calls it, without the package check
    (`packages=False`: only collect needs them).
    """
    errors: list[ConfigError] = []
    try:
        check_split(settings.split)
    except ConfigError as exc:
        errors.append(exc)
    for key in ("min_confidence", "min_agreement"):
        value = getattr(settings, key)
        if value is not None and not 0 <= value <= 1:
            errors.append(ConfigError(f"transforms.{key}", f"{value!r} is not in [0, 1]"))
    for old, new in settings.label_map.items():  # a name for a name (a dotted override can nest a mapping)
        if not isinstance(new, str) or not new.strip():
            errors.append(ConfigError(f"transforms.label_map.{old}", f"{new!r} is not a label name",
                                      f"e.g. transforms.label_map.{old}=<new name>"))
    unknown = [old for old in settings.label_map if labels and old not in labels]
    if unknown:
        near = nearly_label(str(unknown[0]), labels)
        new = settings.label_map[unknown[0]]
        errors.append(ConfigError("transforms.label_map", f"{unknown[0]!r} is not a label of the "
                                  f"job ({', '.join(labels)})",
                                  f"did you mean transforms.label_map.{near}={new if isinstance(new, str) else '...'}?"
                                  if near is not None and near not in settings.label_map else ""))
    if "conll" in steps:
        spaced = [name for name in mapped_labels(labels, settings.label_map) if _spaced(name)]
        if spaced:
            errors.append(_spaced_tag(spaced[0], settings.label_map))
    for name, options in steps.items():
        key = f"transforms.steps.{name}"
        if name not in TRANSFORMS:
            errors.append(ConfigError(key, "is not a transform", f"one of {', '.join(TRANSFORMS)}"))
            continue
        if task_type is not None and task_type not in _FITS[name]:
            fits = ", ".join(t.value for t in TaskType if t in _FITS[name])
            errors.append(ConfigError(key, f"does not fit a {task_type.value} job",
                                      f"{name} is for {fits}"))
        if options is not None and not isinstance(options, Mapping):
            errors.append(ConfigError(key, f"options must be a mapping, not {options!r}"))
            continue
        errors += _option_errors(name, options)
        if packages and name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            package = _PACKAGES[name][1]
            errors.append(ConfigError(key, f"needs the {package!r} package, which is not installed",
                                      f"pip install {package}"))
    collect_errors(errors)


class Kept:
    """The objects one step writes: the label_map applied, then `keep` with the thresholds; those
    left out are counted (`left_out`). `first` is the first object read, kept or not: a table that
    no object reached takes its columns from it (as the columnar path's takes them from the first
    lines), not every label column there is."""

    def __init__(self, objects: Callable[[], Iterable[LabeledObject]], settings: TransformsConfig) -> None:
        self.objects, self.settings = objects, settings
        self.left_out = 0
        self.first: LabeledObject | None = None

    def __iter__(self) -> Iterator[LabeledObject]:
        self.left_out = 0  # each pass counts anew
        for obj in self.objects():
            obj = apply_label_map(obj, self.settings.label_map)
            if self.first is None:
                self.first = obj
            if keep(obj, self.settings.min_confidence, self.settings.min_agreement):
                yield obj
            else:
                self.left_out += 1


def _first(objects: Iterable[LabeledObject]) -> LabeledObject | None:
    """The first object `objects` read, kept or not, when they are a step's Kept."""
    return objects.first if isinstance(objects, Kept) else None


def run_transforms(objects_factory: Callable[[], Iterable[LabeledObject]], out_dir: Path, *,
                   steps: Mapping[str, Mapping[str, Any] | None], settings: TransformsConfig,
                   labels: Sequence[str], task_type: TaskType | None = None,
                   on_step: Callable[[str], None] | None = None,
                   images: Images | None = None) -> dict[str, WrittenFiles]:
    """Run each step over fresh objects from `objects_factory()`; step name -> what it wrote.
    `on_step` hears each step's name as it begins; `images` copies the images of coco and yolo.

    Checks everything first (`check_transforms`; the task type is the first object's when not
    given), then per step: label_map applied, `keep` with the thresholds, the writer. Writers get
    the label list after the label_map (`mapped_labels`).
    """
    out_dir = Path(out_dir)
    if task_type is None and steps:
        first = next(iter(objects_factory()), None)
        task_type = first.task_type if first is not None else None
    check_transforms(steps, settings, labels=labels, task_type=task_type)
    final_labels = mapped_labels(labels, settings.label_map)
    results: dict[str, WrittenFiles] = {}
    for name, options in steps.items():
        if on_step is not None:
            on_step(name)
        kept = Kept(objects_factory, settings)
        extra = {"images": images} if name in IMAGE_STEPS else {}
        written = TRANSFORMS[name](kept, out_dir, labels=final_labels, options=options or {},
                                   settings=settings, **extra)
        written.skipped = kept.left_out
        log.info("%s: %s objects written, %d left out", name,
                 ", ".join(f"{k} {v}" for k, v in written.counts.items()), kept.left_out)
        results[name] = written
    return results


# --- the columnar path (runner.collect.columnar): the same files, written from DuckDB's batches ------


def columnar_steps(columnar: Columnar, out_dir: Path, *, steps: Mapping[str, Mapping[str, Any] | None],
                   settings: TransformsConfig, labels: Sequence[str], task_type: TaskType,
                   inputs: Path | None = None,
                   progress: Progress | None = None) -> tuple[ColumnarResult, dict[str, WrittenFiles]] | None:
    """The report's counts and the jsonl, Parquet table and hf_datasets steps (those of `steps`) in
    one columnar pass; None, with nothing left behind, when a line needs the Python path.
    `inputs`: the file of input hashes for collect.split_leaks (Columnar.write)."""
    from runner.collect.columnar import HfOutput, NotColumnar

    check_transforms(steps, settings, labels=labels, task_type=task_type)
    name = out_dir.name
    wanted = [step for step in ("jsonl", "table", "hf_datasets") if step in steps]
    if "table" in wanted and _options("table", steps["table"])["format"] != "parquet":
        wanted.remove("table")  # CSV and TSV tables are the parser path's
    if "hf_datasets" in wanted and not labels:
        wanted.remove("hf_datasets")  # its class indices need the label list before the pass
    folders = {"hf_datasets": HF_FOLDER}
    try:
        with ExitStack() as stack:  # the staged folders replace the final ones only if the pass completes
            stages = {step: stack.enter_context(_staged(out_dir, folders.get(step, step))) for step in wanted}
            hf = None
            if "hf_datasets" in stages:
                datasets = _require("hf_datasets")
                final_labels = mapped_labels(labels, settings.label_map)
                hf = HfOutput(stages["hf_datasets"], final_labels,
                              lambda schema: _hf_schema(datasets, schema, final_labels))
            result = columnar.write(jsonl=stages.get("jsonl"),
                                    table=stages["table"] / f"{name}.parquet" if "table" in stages else None,
                                    listing=out_dir / NOT_LABELED, hf=hf, inputs=inputs, progress=progress)
    except NotColumnar as exc:
        log.info("collect: %s needs the Python parser (%s)", columnar.manifest, exc)
        return None
    written: dict[str, WrittenFiles] = {}
    if result.jsonl is not None:
        written["jsonl"] = WrittenFiles([out_dir / "jsonl" / f"{s}.jsonl" for s in SPLITS], result.jsonl,
                                        skipped=result.skipped)
    if result.table is not None:
        final, db = out_dir / "table" / f"{name}.parquet", out_dir / DATABASE
        register_table(final, "parquet", db, name=name)
        written["table"] = WrittenFiles([final, db], {"all": result.table}, skipped=result.skipped)
    if result.hf is not None:
        written["hf_datasets"] = WrittenFiles([out_dir / HF_FOLDER / f"{s}.parquet" for s in SPLITS if result.hf[s]],
                                              result.hf, skipped=result.skipped)
    for step, files in written.items():
        log.info("%s: %s objects written, %d left out (columnar)", step,
                 ", ".join(f"{k} {v}" for k, v in files.counts.items()), files.skipped)
    return result, written
