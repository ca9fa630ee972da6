"""The quality report `gtrun collect` writes with every collect: figures, a page, a dataset card.

`build_report` reads the parsed objects once (a stream: it keeps counts, the agreement
accumulators, a histogram of seconds per worker and a bounded heap of the most disputed objects,
never the objects themselves) and returns plain JSON-ready figures. `write_report` writes them as
`report.json` and as `report.html`, a self-contained page (inline CSS and SVG, no script, every
piece of task data HTML-escaped). `write_card` writes `dataset/README.md`: provenance and the
headline figures.

The label distribution counts the consolidated labels of the labeled objects (`object_labels`): per
object for classification (a multi-label object counts once under each label it has, and the
objects with none are counted apart), per box or entity otherwise, and for a custom task whatever
its objects carry (boxes, entities or labels). `gtrun collect` then makes it the distribution of
the dataset as written (`add_dataset`): after `transforms.label_map`, over the objects the filters
kept, with what each filter kept and dropped; agreement stays on the job's own labels.

Agreement is computed from the workers' raw answers (`LabeledObject.answers`), read where the
task type's crowd element puts them (runner.service.consolidate.ELEMENT_NAMES), over every object
with at least two readable answers, whatever its status. Per task type:

- text_classification: Krippendorff's alpha (nominal), Fleiss' kappa (objects with the most
  common number of answers only; the report says how many raters, and over how many of the objects
  alpha takes it was computed when others were skipped), pairwise agreement per object, per-label
  agreement.
- text_multilabel: Krippendorff's alpha over (object, label) yes/no units pooled across labels,
  mean pairwise Jaccard of the label sets per object, per-label agreement.
- bounding_box: mean pairwise IoU per object (greedy same-label matching, unmatched boxes 0); per
  label, the same restricted to that label's boxes.
- named_entity: mean pairwise exact-match span F1 per object; per label likewise.
- custom: counts, workers, and the label distribution of what its objects carry. When its workers'
  answers carry boxes (runner.collect.parse._answer_boxes: gtrun's bounding-box NER template),
  bounding_box's figures too (its `agreement` then has `mean_iou`, see `scored_as`): an
  answer without boxes where another answer of the object has some counts as unreadable; an
  object whose answers carry none (free text) is not scored.

An object's agreement (the per-object score above) ranks the disputed list: the 20 lowest, ties
by line number; objects whose workers agree fully are never listed.
"""

from __future__ import annotations

import heapq
import html
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from runner.collect.agreement import (
    AlphaNominal,
    FleissKappa,
    LabelAgreement,
    LabeledBox,
    LabeledSpan,
    matched_iou,
    set_jaccard,
    span_f1,
)
from runner.collect.parse import _answer_boxes
from runner.collect.records import LabeledObject, Status, WorkerAnswer
from runner.schema import TaskType
from runner.service.consolidate import Answer, ConsolidationError, _element

# 2: label_distribution is the dataset's as written (after label_map and the filters), the one before
# them under before_transforms; transforms and sweep figures added
REPORT_VERSION = 2
DISPUTED_MAX = 20  # objects kept in the most-disputed list
TEXT_MAX = 600  # characters of an object's text kept in the disputed list
SECONDS_STEP = 0.1  # medians of seconds are exact to this step (a histogram, not every value)
PLACES = 4  # agreement figures are rounded to this many places in the report
GOOD, TENTATIVE = 0.8, 0.667  # Krippendorff (2004): rely on >= .800, tentative conclusions >= .667
WORKERS_SHOWN = 50  # rows of the HTML workers table (report.json has every worker)
NOT_LABELED = "not_labeled.jsonl"  # every failed or unlabeled object, one line each (not_labeled_line)
_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps with options makes one a call

MEASURES = {
    TaskType.text_classification: "pairwise agreement",
    TaskType.text_multilabel: "mean pairwise Jaccard",
    TaskType.bounding_box: "mean pairwise IoU",
    TaskType.named_entity: "mean pairwise span F1",
}
LABEL_UNITS = {
    TaskType.text_classification: "objects",
    TaskType.text_multilabel: "objects",
    TaskType.bounding_box: "boxes",
    TaskType.named_entity: "entities",
    TaskType.custom: "objects",
}
CARD_WHAT = {  # the card's first words: what the dataset holds
    TaskType.text_classification: "Single-label classification labels",  # of text, or images (an output
    TaskType.text_multilabel: "Multi-label classification labels",  # of a job gtrun did not launch)
    TaskType.bounding_box: "Bounding boxes",
    TaskType.named_entity: "Named-entity spans",
    TaskType.custom: "Labels of a custom task",
}
MEMBER_COLUMNS = ("member", "job", "status", "config_sha256", "source_files", "workers_per_object", "usd_per_task",
                  "created", "ended", "continues")  # a sweep's card: a row per member (collect.merged_provenance)
# the objects a filter cannot judge, which it keeps
UNJUDGED = {"min_confidence": "without a confidence", "min_agreement": "without worker answers"}
TASK_NAMES = {
    TaskType.text_classification: "Single-label classification",
    TaskType.text_multilabel: "Multi-label classification",
    TaskType.bounding_box: "Bounding boxes",
    TaskType.named_entity: "Named entities",
    TaskType.custom: "Custom task",
}


# --- figures ---------------------------------------------------------------------------------------


class _Worker:
    __slots__ = ("tasks", "seconds", "pairs", "score")

    def __init__(self) -> None:
        self.tasks = 0
        self.seconds: Counter[int] = Counter()  # in SECONDS_STEP units
        self.pairs = 0
        self.score = 0.0


def not_labeled_line(obj: LabeledObject) -> str:
    """The NOT_LABELED line of a failed or unlabeled object, without the newline: its id, status,
    failure reason (null when unlabeled) and input fields."""
    return _LINE.encode({"object_id": obj.object_id, "status": obj.status.value, "failure_reason": obj.failure_reason,
                         "inputs": obj.inputs})


def build_report(objects: Iterable[LabeledObject], *, task_type: TaskType | str,
                 labels: Sequence[str], dataset: str,
                 element_name: str | None = None) -> dict[str, Any]:
    """The quality figures of one collect, JSON-ready, from one pass over the parsed objects.

    `labels` is the job's label list (the order of the figures); `element_name` the crowd
    element's name when the template does not use the built-in one.
    """
    builder = ReportBuilder(task_type=task_type, labels=labels, dataset=dataset, element_name=element_name)
    for obj in objects:
        builder.add(obj)
    return builder.figures()


class ReportBuilder:
    """build_report one object at a time: `add` each object of the pass, then take `figures`
    (collect counts the report in the same pass as its first transform)."""

    def __init__(self, *, task_type: TaskType | str, labels: Sequence[str], dataset: str,
                 element_name: str | None = None) -> None:
        self.task = TaskType(task_type)
        self.labels = [str(x) for x in labels]
        self.dataset, self.element_name = dataset, element_name
        self.status: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.per_object: Counter[int] = Counter()
        # a custom task's unit is what its objects carry (None: nothing counted yet)
        self.unit: str | None = None if self.task is TaskType.custom else LABEL_UNITS[self.task]
        self.distribution: Counter[str] = Counter()
        self.counted, self.without_label = 0, 0  # labeled objects counted, multi-label ones with no label
        self.workers: dict[str, _Worker] = {}
        self.alpha, self.kappa, self.per_label = AlphaNominal(), FleissKappa(), LabelAgreement()
        self.scored, self.score_sum, self.answers_total, self.unreadable, self.n = 0, 0.0, 0, 0, 0
        self.heap: list[tuple[float, int, int, dict[str, Any]]] = []
        self.pair_score = _PAIR_SCORES.get(self.task)
        self.with_boxes = False  # a custom task: some answer carried boxes (bounding_box's figures)

    def add(self, obj: LabeledObject) -> None:
        task, workers, pair_score = self.task, self.workers, self.pair_score
        n = self.n
        self.n += 1
        self.status[obj.status.value] += 1
        if obj.status is Status.failed:
            self.reasons[obj.failure_reason or "unknown"] += 1
        if obj.status is Status.labeled:
            unit, names = object_labels(task, obj)
            if unit is not None:
                self.unit = self.unit or unit
                self.counted += 1
                self.distribution.update(names)
                if not names and task is TaskType.text_multilabel:
                    self.without_label += 1
        self.per_object[len(obj.answers)] += 1
        self.answers_total += len(obj.answers)

        custom = task is TaskType.custom
        readable: list[tuple[str, Any, float | None]] = []
        for answer in obj.answers:
            stats = workers.setdefault(answer.worker_id, _Worker())
            stats.tasks += 1
            if answer.seconds is not None and math.isfinite(answer.seconds):
                stats.seconds[round(answer.seconds / SECONDS_STEP)] += 1
            if pair_score is None and not custom:
                continue
            try:
                readable.append((answer.worker_id, _answer_value(task, answer, self.element_name),
                                 answer.seconds))
            except (ConsolidationError, KeyError, TypeError, ValueError):
                self.unreadable += 1
        if custom:  # scored by its boxes, as bounding_box; None: the answer carries none
            boxed = [r for r in readable if r[1] is not None]
            if boxed:
                self.with_boxes = True
                self.unreadable += len(readable) - len(boxed)
            readable, task, pair_score = boxed, TaskType.bounding_box, matched_iou
        if pair_score is None or len(readable) < 2:
            return

        values = [v for _, v, _ in readable]
        pairs = []
        for (wa, a, _), (wb, b, _) in combinations(readable, 2):
            s = pair_score(a, b)
            pairs.append(s)
            for w in (wa, wb):
                workers[w].pairs += 1
                workers[w].score += s
        score = sum(pairs) / len(pairs)
        self.scored += 1
        self.score_sum += score
        _add_agreement(task, values, self.labels, self.alpha, self.kappa, self.per_label)

        if score < 1.0:
            key = (-score, -obj.line_no, n)
            heap = self.heap
            if len(heap) < DISPUTED_MAX:
                heapq.heappush(heap, (*key, _disputed(task, obj, readable, score)))
            elif key > heap[0][:3]:
                heapq.heapreplace(heap, (*key, _disputed(task, obj, readable, score)))

    def figures(self) -> dict[str, Any]:
        distribution = label_distribution(self.task, self.unit, self.labels, self.distribution, self.counted,
                                          self.without_label if self.task is TaskType.text_multilabel else None)
        return _figures(self.task, self.labels, self.dataset, self.status, self.reasons, self.per_object,
                        distribution, self.answers_total, self.unreadable, self.workers,
                        (self.scored, self.score_sum, self.alpha, self.kappa, self.per_label), self.heap,
                        TaskType.bounding_box if self.with_boxes else None)


def report_from_counts(*, task_type: TaskType | str, labels: Sequence[str], dataset: str,
                       status: Mapping[str, int], reasons: Sequence[tuple[str, int]],
                       distribution: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """build_report's figures for output without worker answers, from counts made elsewhere
    (runner.collect.columnar counts them in DuckDB): objects by status, failure reasons and label
    counts, each in first-seen order."""
    task = TaskType(task_type)
    labels = [str(x) for x in labels]
    counted: Counter[str] = Counter()
    for name, n in distribution:
        counted[name] += n
    objects = sum(status.values())
    unit = LABEL_UNITS[task] if task is not TaskType.custom or counted else None
    return _figures(task, labels, dataset, Counter(status), Counter(dict(reasons)),
                    Counter({0: objects}) if objects else Counter(),
                    label_distribution(task, unit, labels, counted, status.get(Status.labeled.value, 0)), 0, 0, {},
                    (0, 0.0, AlphaNominal(), FleissKappa(), LabelAgreement()), [])


def _figures(task: TaskType, labels: list[str], dataset: str, status: Counter[str], reasons: Counter[str],
             per_object: Counter[int], distribution: dict[str, Any], answers_total: int, unreadable: int,
             workers: Mapping[str, _Worker], agreement: tuple[int, float, Any, Any, Any],
             heap: list[tuple[float, int, int, dict[str, Any]]],
             scored_task: TaskType | None = None) -> dict[str, Any]:
    """report.json's figures; `scored_task`: the task type whose agreement figures a custom task gets."""
    scored, score_sum, alpha, kappa, per_label = agreement
    all_seconds: Counter[int] = Counter()
    for stats in workers.values():
        all_seconds.update(stats.seconds)
    return {
        "report_version": REPORT_VERSION,
        "dataset": dataset,
        "task_type": task.value,
        "labels": labels,
        "counts": {
            "objects": sum(status.values()),
            "labeled": status[Status.labeled.value],
            "failed": status[Status.failed.value],
            "unlabeled": status[Status.unlabeled.value],
            "failed_reasons": dict(reasons),
            "answers": answers_total,
            "unreadable_answers": unreadable,
            "answers_per_object": {str(k): v for k, v in sorted(per_object.items())},
        },
        "label_distribution": distribution,
        "agreement": _agreement_figures(scored_task or task, labels, scored, score_sum, alpha, kappa, per_label),
        "workers": {
            "count": len(workers),
            "median_seconds": _median(all_seconds),
            "by_worker": {w: {"tasks": s.tasks, "median_seconds": _median(s.seconds),
                              "pairs": s.pairs,
                              "agreement": _round(s.score / s.pairs) if s.pairs else None}
                          for w, s in sorted(workers.items())},
        },
        "disputed": [entry for *_, entry in sorted(heap, key=lambda h: (-h[0], -h[1]))],
    }


def _answer_value(task: TaskType, answer: WorkerAnswer, element_name: str | None) -> Any:
    """A worker's answer as a comparable value; raises on a malformed answer. A custom answer's
    boxes as bounding_box's, None when it carries none."""
    if task is TaskType.custom:
        got = _answer_boxes(answer.content)
        return None if got is None else tuple((b.label, b.left, b.top, b.width, b.height) for b in got[0])
    value = _element(Answer(answer.worker_id, answer.content), task, element_name,
                     empty_ok=task is not TaskType.text_classification)
    if task is TaskType.text_classification:
        return str(value["label"])
    if task is TaskType.text_multilabel:
        return tuple(sorted({str(x) for x in value.get("labels", [])}))
    if task is TaskType.bounding_box:
        return tuple((str(b["label"]), float(b["left"]), float(b["top"]), float(b["width"]),
                      float(b["height"])) for b in value.get("boundingBoxes", []))
    return tuple((str(e["label"]), int(e["startOffset"]), int(e["endOffset"]))
                 for e in value.get("entities", []))


def _same(a: Any, b: Any) -> float:
    return 1.0 if a == b else 0.0


_PAIR_SCORES: dict[TaskType, Callable[[Any, Any], float]] = {
    TaskType.text_classification: _same,
    TaskType.text_multilabel: set_jaccard,
    TaskType.bounding_box: matched_iou,
    TaskType.named_entity: span_f1,
}


def object_labels(task: TaskType, obj: LabeledObject) -> tuple[str | None, list[str]]:
    """What the label distribution counts of a labeled object: (unit, its consolidated label names),
    each name once per object when the unit is objects. A custom task's object counts what it
    carries, as transforms.flat_record writes it: boxes (an image with none counts no label),
    entities, labels, a label; the unit is None when it carries none of them.

    >>> from runner.collect.records import Box
    >>> object_labels(TaskType.custom, LabeledObject(1, "0", {}, "a", TaskType.custom, Status.labeled,
    ...                                              boxes=(Box("total", 1, 2, 3, 4), Box("date", 5, 6, 7, 8))))
    ('boxes', ['total', 'date'])
    """
    if task is TaskType.custom:
        if obj.boxes or obj.image_size is not None:
            return "boxes", [b.label for b in obj.boxes]
        if obj.entities:
            return "entities", [e.label for e in obj.entities]
        if obj.labels or obj.confidences:
            return "objects", list(dict.fromkeys(obj.labels))
        return ("objects", [obj.label]) if obj.label is not None else (None, [])
    if task is TaskType.text_classification:
        return "objects", [obj.label] if obj.label is not None else []
    if task is TaskType.text_multilabel:
        return "objects", list(dict.fromkeys(obj.labels))
    if task is TaskType.bounding_box:
        return "boxes", [b.label for b in obj.boxes]
    return "entities", [e.label for e in obj.entities]


def label_distribution(task: TaskType, unit: str | None, labels: Sequence[str], counts: Mapping[str, int],
                       objects: int, without_label: int | None = None) -> dict[str, Any]:
    """report.json's `label_distribution`, of the labeled objects: `counts` per label (every one of
    `labels`, 0 when unused, then the others; none when nothing was counted: a custom task whose
    objects carry no labels), in `unit`s, over `objects` objects; `without_label`: multi-label
    objects with no label chosen. Shares are of `objects` when the unit is objects (a multi-label
    object counts under each of its labels), else of all boxes / entities (`share_base`)."""
    out: dict[str, Any] = {"of": "labeled", "unit": unit or LABEL_UNITS[task], "objects": objects}
    out["counts"] = {} if unit is None else {**dict.fromkeys(labels, 0), **counts}
    if without_label is not None:
        out["without_label"] = without_label
    return out


def add_dataset(report: dict[str, Any], *, objects: int, distribution: Mapping[str, Any],
                options: Mapping[str, Any], filters: Sequence[Mapping[str, Any]]) -> None:
    """Make the report describe the dataset `gtrun collect` wrote: `distribution` (label_distribution's
    shape, over the `objects` the transforms kept, labels after transforms.label_map) becomes
    `label_distribution`, the job's one kept in it as `before_transforms` when the transforms
    change it; `transforms` records the `options` and what each filter ({option, threshold,
    objects, kept, dropped, unknown}) kept and dropped."""
    before = report["label_distribution"]
    dist = {**distribution, "of": "dataset"}
    if options.get("label_map") or filters:
        dist["before_transforms"] = {"objects": before["objects"], "counts": before["counts"]}
    report["label_distribution"] = dist
    report["transforms"] = {**options, "filters": [dict(f) for f in filters], "objects": objects}


def _add_agreement(task: TaskType, values: list[Any], labels: list[str], alpha: AlphaNominal,
                   kappa: FleissKappa, per_label: LabelAgreement) -> None:
    if task is TaskType.text_classification:
        alpha.add(values)
        kappa.add(values)
        per_label.add_unit(values)
    elif task is TaskType.text_multilabel:
        for name in dict.fromkeys([*labels, *(x for v in values for x in v)]):
            alpha.add(name in v for v in values)  # one yes/no unit per (object, label)
        per_label.add_unit(values)
    else:
        score = matched_iou if task is TaskType.bounding_box else span_f1
        for a, b in combinations(values, 2):
            for name in {x[0] for x in a} | {x[0] for x in b}:
                per_label.add(name, score([x for x in a if x[0] == name],
                                          [x for x in b if x[0] == name]))


def _agreement_figures(task: TaskType, labels: list[str], scored: int, score_sum: float,
                       alpha: AlphaNominal, kappa: FleissKappa,
                       per_label: LabelAgreement) -> dict[str, Any]:
    mean = _round(score_sum / scored) if scored else None
    out: dict[str, Any] = {"measure": MEASURES.get(task), "objects": scored, "mean": mean}
    if task in (TaskType.text_classification, TaskType.text_multilabel):
        out["krippendorff_alpha"] = _round(alpha.value())
    if task is TaskType.text_classification:
        # over `objects` of the `of` objects with 2+ answers (alpha's): those with another rater count skipped
        out["fleiss_kappa"] = {"value": _round(kappa.value()), "raters": kappa.raters,
                               "objects": kappa.units, "of": kappa.units + kappa.skipped, "skipped": kappa.skipped}
    if task is TaskType.bounding_box:
        out["mean_iou"] = mean
    if task is TaskType.named_entity:
        out["span_f1"] = mean
    names = [] if task is TaskType.custom else labels + sorted(set(per_label.pairs) - set(labels))
    out["per_label"] = {name: {"agreement": _round(per_label.value(name)),
                               "pairs": per_label.pairs[name]} for name in names}
    return out


def _disputed(task: TaskType, obj: LabeledObject, readable: list[tuple[str, Any, float | None]],
              score: float) -> dict[str, Any]:
    text = obj.text
    item = text if text is not None else obj.source_ref
    entry: dict[str, Any] = {
        "object_id": obj.object_id,
        "line_no": obj.line_no,
        "status": obj.status.value,
        "agreement": _round(score),
        "item": _clip(item) if item is not None else None,
        "consolidated": _consolidated_value(task, obj),
        "answers": [{"worker_id": w, "answer": _display(task, v, text),
                     "seconds": None if s is None else round(s, 1)}
                    for w, v, s in readable],
    }
    if task is TaskType.bounding_box:
        entry["image_size"] = list(obj.image_size[:2]) if obj.image_size else None
    return entry


def _consolidated_value(task: TaskType, obj: LabeledObject) -> Any:
    if obj.status is not Status.labeled:
        return None
    if task is TaskType.text_classification:
        return obj.label
    if task is TaskType.text_multilabel:
        return list(obj.labels)
    if task is TaskType.bounding_box:
        return _display(task, [(b.label, b.left, b.top, b.width, b.height) for b in obj.boxes], None)
    return _display(task, [(e.label, e.start, e.end) for e in obj.entities], obj.text)


def _display(task: TaskType, value: Any, text: str | None) -> Any:
    """A parsed answer as JSON: a label, a list of labels, of boxes or of entities."""
    if task is TaskType.text_classification:
        return value
    if task is TaskType.text_multilabel:
        return list(value)
    if task is TaskType.bounding_box:
        boxes: Sequence[LabeledBox] = value
        return [{"label": b[0], "left": b[1], "top": b[2], "width": b[3], "height": b[4]}
                for b in boxes]
    spans: Sequence[LabeledSpan] = value
    return [{"label": s[0], "start": s[1], "end": s[2],
             **({"text": _clip(text[s[1]:s[2]], 80)} if text is not None else {})} for s in spans]


def _clip(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, PLACES)


def _median(histogram: Counter[int]) -> float | None:
    """The median of values kept as counts of SECONDS_STEP units (as statistics.median would)."""
    n = sum(histogram.values())
    if n == 0:
        return None
    wanted = sorted({(n - 1) // 2, n // 2})  # 0-based middle position(s)
    found: list[int] = []
    seen = 0
    for value, count in sorted(histogram.items()):
        while wanted and wanted[0] < seen + count:
            found.append(value)
            wanted.pop(0)
        if not wanted:
            break
        seen += count
    return round(sum(found) / len(found) * SECONDS_STEP, 3)


# --- report.json and report.html ---------------------------------------------------------------


def write_report(report: Mapping[str, Any], out_dir: Path | str, *,
                 checksums: Callable[[], Mapping[str, Any]] | None = None) -> tuple[Path, Path]:
    """Write `report.html`, then `report.json` (sorted keys) into `out_dir`; return their paths.
    `checksums`, called between the two, gives report.json's "checksums" (report.html among them)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    html_path.write_text(report_html(report), encoding="utf-8")
    if checksums is not None:
        report = {**report, "checksums": checksums()}
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    return json_path, html_path


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(x: float | None, places: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{places}f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _grade(x: float | None) -> str:
    if x is None:
        return "none"
    return "good" if x >= GOOD else "fair" if x >= TENTATIVE else "poor"


def _ordered_labels(report: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    known = list(report["labels"])
    return [n for n in known if n in names] + sorted(set(names) - set(known))


def _dataset_labels(dist: Mapping[str, Any]) -> list[str]:
    """The distribution's labels in its own order (the job's, after the label_map, then others)."""
    return list(dist["counts"])


def share_base(dist: Mapping[str, Any]) -> int:
    """What a label's share is of: the objects when the unit is objects (a multi-label object counts
    under each of its labels, so the shares may add up to more than 100%), else all boxes / entities."""
    return int(dist["objects"]) if dist["unit"] == "objects" else sum(dist["counts"].values())


def _distribution_caption(report: Mapping[str, Any]) -> tuple[str, str]:
    """(heading note, sentence) describing what the label distribution counts."""
    dist = report["label_distribution"]
    unit, base = dist["unit"], share_base(dist)
    where = "in the dataset" if dist.get("of") == "dataset" else "labeled"
    note = f"share of {base:,} {unit} {where}"
    sentence = f"Shares are of the {base:,} {unit} {where}"
    if TaskType(report["task_type"]) is TaskType.text_multilabel:
        note += "; an object can have several labels"
        sentence += "; an object can have several labels, so they can add up to more than 100%"
    changed = [what for what, on in (("transforms.label_map", (report.get("transforms") or {}).get("label_map")),
                                     ("the filters", (report.get("transforms") or {}).get("filters"))) if on]
    if dist.get("of") == "dataset" and changed:
        sentence += f" (after {' and '.join(changed)})"
    sentence += "."
    none = dist.get("without_label")
    if none:
        sentence += f" {none:,} of them {'has' if none == 1 else 'have'} no label."
    return note, sentence


def scored_as(report: Mapping[str, Any]) -> TaskType:
    """The task type whose agreement figures the report has: its own, or bounding_box for a custom
    task whose workers' answers carry boxes."""
    return TaskType.bounding_box if "mean_iou" in report["agreement"] else TaskType(report["task_type"])


def headline(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, note) rows shared by the page's cards and the dataset card."""
    counts, agreement, workers = report["counts"], report["agreement"], report["workers"]
    total = counts["objects"]
    rows = [("Objects", f"{total:,}", f"{counts['answers']:,} answers"),
            ("Labeled", f"{counts['labeled']:,}", _pct(counts["labeled"], total)),
            ("Failed", f"{counts['failed']:,}", _pct(counts["failed"], total)),
            ("Unlabeled", f"{counts['unlabeled']:,}", _pct(counts["unlabeled"], total))]
    filters = (report.get("transforms") or {}).get("filters")
    if filters:
        kept = report["transforms"]["objects"]
        rows.append(("In the dataset", f"{kept:,}", "; ".join(
            f"{f['dropped']:,} below {f['option']}" for f in filters)))
    task = scored_as(report)
    scored = (f"over {agreement['objects']:,} objects" if agreement["objects"]
              else "no object with 2+ readable answers")
    # alpha and kappa are 0/0 when every answer is the same value: say so, not a bare n/a
    same = "undefined: every answer is the same label" if task is TaskType.text_classification else (
        "undefined: every label has the same yes/no throughout")
    alpha = agreement.get("krippendorff_alpha")
    if task is TaskType.text_classification:
        kappa = agreement["fleiss_kappa"]
        rows.append(("Krippendorff's α", _num(alpha, 3),
                     f"{same}, {scored}" if alpha is None and agreement["objects"] else scored))
        of = kappa.get("of", kappa["objects"] + kappa["skipped"])  # a report.json written before "of"
        note = ((f"over {kappa['objects']:,} of {of:,} objects ({kappa['raters']} raters each; "
                 f"{kappa['skipped']:,} with another rater count skipped)") if kappa["skipped"] else
                f"{kappa['raters']} raters, {kappa['objects']:,} objects") if kappa["raters"] else "no object with 2+ answers"
        if kappa["raters"] and kappa["value"] is None:
            note = f"{same}; {note}"
        rows.append(("Fleiss' κ", _num(kappa["value"], 3), note))
    elif task is TaskType.text_multilabel:
        rows.append(("Krippendorff's α", _num(alpha, 3),
                     "yes/no per object and label, pooled" if alpha is not None or not agreement["objects"]
                     else same))
        rows.append(("Mean pairwise Jaccard", _num(agreement["mean"]), scored))
    elif task is TaskType.bounding_box:
        rows.append(("Mean pairwise IoU", _num(agreement["mean"]), scored))
    elif task is TaskType.named_entity:
        rows.append(("Mean pairwise span F1", _num(agreement["mean"]), scored))
    rows.append(("Workers", f"{workers['count']:,}", _workers_per_object(counts)))
    median = workers["median_seconds"]
    rows.append(("Median time per task", "n/a" if median is None else f"{median:.1f} s",
                 "over all answers"))
    return rows


def filtered_out_everything(report: Mapping[str, Any]) -> str | None:
    """What to say when transforms.min_confidence / min_agreement left no labeled object in the
    dataset (and why, when objects one worker labeled met min_confidence), else None."""
    transforms = report.get("transforms") or {}
    filters = [f for f in transforms.get("filters", ()) if f.get("dropped")]
    if not filters or transforms.get("objects") or not report["counts"]["labeled"]:
        return None
    said = "; ".join(f"transforms.{f['option']}={f['threshold']:g} left out "
                     f"{'all ' if f['dropped'] == f['objects'] else ''}{f['dropped']:,}" for f in filters)
    text = f"the dataset has no object: {said}"
    alone = (report["counts"].get("answers_per_object") or {}).get("1")
    if alone and any(f["option"] == "min_confidence" for f in filters):
        text += (f". Ground Truth gives an object labeled by one worker a confidence of 0 ({alone:,} objects had one "
                 "answer): min_confidence is for jobs with workteam.workers_per_object of 2 or more")
    return text


def split_leaks_said(report: Mapping[str, Any]) -> str | None:
    """"<n> <field> values are in more than one split (<m> objects)", from report.json's
    transforms.split_leaks, or None when there are none.

    >>> split_leaks_said({"transforms": {"split_leaks": {"field": "source", "values": 1, "objects": 2}}})
    '1 source value is in more than one split (2 objects)'
    """
    leaks = (report.get("transforms") or {}).get("split_leaks") or {}
    n = leaks.get("values")
    if not n:
        return None
    return f"{n:,} {leaks['field']} value{'s are' if n != 1 else ' is'} in more than one split ({leaks['objects']:,} objects)"


def dataset_notes(report: Mapping[str, Any]) -> list[str]:
    """Sentences on what collect did to the output (the transforms' filters and label_map) and,
    for a sweep, which members it left out and which objects more than one member has, and which
    runs a run not collected with them continues: the page's
    "The dataset" panel and the card's section of that name."""
    notes = []
    transforms = report.get("transforms") or {}
    for f in transforms.get("filters", ()):
        note = (f"transforms.{f['option']} {f['threshold']:g}: kept {f['kept']:,} of {f['objects']:,} objects, "
                f"left out {f['dropped']:,}")
        if f.get("unknown"):
            note += f" ({f['unknown']:,} {UNJUDGED.get(f['option'], 'it cannot judge')}, kept)"
        notes.append(note + ".")
    empty = filtered_out_everything(report)
    if empty:
        notes.append(empty[0].upper() + empty[1:] + ".")
    per_split, ratios = transforms.get("split_objects"), transforms.get("split") or {}
    if per_split and any(per_split.values()):
        key = f", by {ratios['key']}" if ratios.get("key") else ""
        notes.append(f"Objects per split (ratios {' / '.join(f'{ratios.get(s, 0):g}' for s in per_split)}{key}): "
                     + ", ".join(f"{s} {n:,}" for s, n in per_split.items()) + ".")
    for step, found in (transforms.get("problems") or {}).items():
        notes.append(f"{step}: {found['count']:,} problem{'s' if found['count'] != 1 else ''} writing its files "
                     f"(the first: {found['first'][0]}).")
    leaks = split_leaks_said(report)
    if leaks:
        field = transforms["split_leaks"]["field"]
        notes.append(f"{leaks}: a model would be tested on inputs it was trained on. hint: "
                     f"transforms.split.key={field} puts every object with the same {field} in one split.")
    label_map = transforms.get("label_map")
    if label_map:
        notes.append("transforms.label_map: " + ", ".join(f"{old} → {new}" for old, new in label_map.items())
                     + "; the label distribution counts the new names, agreement the job's.")
    sweep = report.get("sweep") or {}
    if sweep.get("left_out"):
        notes.append(f"{len(sweep['left_out'])} member{'s' if len(sweep['left_out']) != 1 else ''} of the sweep "
                     f"left out: {'; '.join(sweep['left_out'])}.")
    for c in report.get("continued") or ():  # collect.continued_elsewhere
        notes.append(f"{c['member']} was continued by {c['continuation']} (gtrun continue), whose job was given the "
                     f"objects {c['member']}'s job did not label: the dataset lists them as not labeled, and has none "
                     "of their labels; collect the continuation with it (several targets, --out) to have them.")
    overlap = sweep.get("overlap") or {}
    if overlap.get("objects"):
        n = overlap["objects"]
        note = (f"{n:,} object{'s appear' if n != 1 else ' appears'} in more than one member "
                f"({overlap['rows']:,} rows in all, same input fields): the dataset has them more than once")
        key = transforms.get("split", {}).get("key")
        if key is None:
            fields = overlap.get("fields") or []
            note += (", and they can land in different splits (train and test). hint: set transforms.split.key "
                     "to an input field that names the object"
                     + (f" ({', '.join(fields[:8])}{', ...' if len(fields) > 8 else ''})" if fields else "")
                     + ", so that every copy lands in the same split")
        else:
            note += f"; transforms.split.key={key} puts the copies that share its value in the same split"
        notes.append(note + ".")
    return notes


def _workers_per_object(counts: Mapping[str, Any]) -> str:
    per = {int(k): v for k, v in counts["answers_per_object"].items() if int(k) > 0}
    if not per:
        return "no answers recorded"
    common = max(per, key=lambda k: (per[k], k))
    return f"mostly {common} per object"


_CSS = """
:root{--ink:#1d2433;--muted:#6b7385;--line:#e4e7ee;--bg:#f5f6fa;--card:#fff;--accent:#4263eb;
--good:#2f9e44;--fair:#f08c00;--poor:#e03131;--none:#adb5bd}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:32px 28px 48px}
header{margin-bottom:22px}
.eyebrow{margin:0;color:var(--accent);font-weight:600;letter-spacing:.08em;text-transform:uppercase;
font-size:12px}
h1{margin:4px 0 2px;font-size:30px;line-height:1.2;word-break:break-word}
.sub{margin:0;color:var(--muted)}
h2{margin:0 0 14px;font-size:16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:18px}
.cards+.legend{margin:-6px 0 18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;
border-top:3px solid var(--accent);min-width:0}
.card.good{border-top-color:var(--good)}.card.fair{border-top-color:var(--fair)}
.card.poor{border-top-color:var(--poor)}.card.none{border-top-color:var(--none)}
.card .k{color:var(--muted);font-size:12.5px;font-weight:600}
.card .v{font-size:26px;font-weight:700;margin:2px 0;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .v.long{font-size:20px;line-height:39px}
.card .n{color:var(--muted);font-size:12px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px;margin-bottom:18px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 20px;
min-width:0;overflow-x:auto}
section.panel+section.panel{margin-top:0}
.wide{margin-bottom:18px}
svg text{font-family:inherit}
.legend{color:var(--muted);font-size:12px;margin:8px 0 0}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin:0 4px 0 10px;vertical-align:0}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;border-bottom:1px solid var(--line);
padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:8px;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:last-child td{border-bottom:0}
.item{max-width:330px;white-space:pre-wrap;word-break:break-word}
.muted{color:var(--muted)}
.nw{white-space:nowrap}
.wid{word-break:break-all}
mark{background:#e6fcf5;color:inherit;border-radius:4px;padding:0 2px;box-shadow:inset 0 -2px #63e6be}
mark sub{color:#087f5b;font-size:9px;font-weight:700;margin-left:2px;vertical-align:baseline}
.chip{display:inline-block;border-radius:999px;padding:1px 9px;margin:1px 3px 1px 0;font-size:12px;
background:#edf2ff;color:#364fc7;white-space:nowrap}
.chip.cons{background:#e6fcf5;color:#087f5b}
.who{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;align-items:start}
.who .w{white-space:nowrap;font-weight:600}
@media (max-width:900px){.who .w{white-space:normal;word-break:break-all}}
.secs{color:var(--muted);font-weight:400;font-size:12px}
.badge{display:inline-block;min-width:48px;text-align:center;border-radius:6px;padding:2px 6px;
font-weight:700;color:#fff}
.badge.good{background:var(--good)}.badge.fair{background:var(--fair)}.badge.poor{background:var(--poor)}
.badge.none{background:var(--none)}
.meter{display:inline-block;width:48px;height:8px;border-radius:4px;background:var(--line);
vertical-align:middle;margin-left:8px;overflow:hidden}
.meter span{display:block;height:100%}
.empty{color:var(--muted);font-style:italic;margin:0}
code{font-size:12px;background:#f1f3f5;border-radius:4px;padding:0 4px;overflow-wrap:anywhere}
ul.notes{margin:0;padding-left:18px}ul.notes li{margin:4px 0}
footer{color:var(--muted);font-size:12px;margin-top:22px;text-align:center}
"""

_WORKER_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#edc948",
                  "#ff9da7", "#9c755f"]
_GRADE_COLORS = {"good": "#2f9e44", "fair": "#f08c00", "poor": "#e03131", "none": "#adb5bd"}


def report_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no script, all escaped."""
    task = TaskType(report["task_type"])
    counts = report["counts"]
    title = f"Quality report · {report['dataset']}"
    sub = (f"{TASK_NAMES[task]} · {len(report['labels'])} labels · "
           f"{counts['objects']:,} objects")
    parts = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<header><p class=\"eyebrow\">gtrun · quality report</p><h1>{_e(report['dataset'])}</h1>"
        f"<p class=\"sub\">{_e(sub)}</p></header>",
        _cards_html(report),
    ]
    notes = dataset_notes(report)
    if notes:
        parts.append("<section class=\"panel wide\"><h2>The dataset</h2><ul class=\"notes\">"
                     + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>")
    if scored_as(report) is not TaskType.custom:
        parts.append("<div class=\"grid2\">")
        parts.append(_distribution_html(report))
        parts.append(_per_label_html(report))
        parts.append("</div>")
        parts.append(_disputed_html(report))
    elif report["label_distribution"]["counts"]:  # a custom task's boxes, entities or labels: no agreement measure
        parts.append(_distribution_html(report, "panel wide"))
    parts.append("<div class=\"grid2\">")
    parts.append(_workers_html(report))
    parts.append(_failures_html(report))
    parts.append("</div>")
    parts.append("<footer>Written by <code>gtrun collect</code>. The same figures, and every "
                 "worker, are in <code>report.json</code>.</footer></main></body></html>\n")
    return "\n".join(parts)


MEANINGS = {
    TaskType.text_classification: "Krippendorff's α and Fleiss' κ: 1 is full agreement, 0 what chance alone "
    "gives, below 0 systematic disagreement; Krippendorff relies on data from 0.800 and draws tentative "
    "conclusions from 0.667. Fleiss' κ counts only the objects with its number of raters.",
    TaskType.text_multilabel: "Krippendorff's α (1 full agreement, 0 chance; relied on from 0.800, tentative "
    "from 0.667) over one yes/no per object and label. Mean pairwise Jaccard: for each pair of workers on "
    "an object, the labels both chose over the labels either chose (1: the same labels).",
    TaskType.bounding_box: "Mean pairwise IoU: for each pair of workers on an object, same-label boxes matched "
    "best overlap first, the matched IoUs summed over the matched pairs plus the boxes left unmatched "
    "(a box the other did not draw counts 0; both drawing none counts 1), averaged.",
    TaskType.named_entity: "Mean pairwise span F1: for each pair of workers on an object, 2 × the spans both "
    "marked (same label, start and end) over all spans the two marked (both marking none counts 1), averaged.",
}


def _meaning(report: Mapping[str, Any]) -> str:
    """What the headline's agreement figures mean, and what colours the cards ("" for a custom task)."""
    task = scored_as(report)
    if task not in MEANINGS:
        return ""
    return (f"<p class=\"legend\">{_e(MEANINGS[task])} A card is green from {GOOD:.3f}, orange from "
            f"{TENTATIVE:.3f}, red below.</p>")


def _graded(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The headline's agreement figures as report.json has them: a card is graded on the figure,
    not on its shown digits (an alpha of 0.7967 is below Krippendorff's .800)."""
    agreement = report["agreement"]
    return {"Krippendorff's α": agreement.get("krippendorff_alpha"),
            "Fleiss' κ": (agreement.get("fleiss_kappa") or {}).get("value"),
            **dict.fromkeys(("Mean pairwise IoU", "Mean pairwise span F1", "Mean pairwise Jaccard"),
                            agreement.get("mean"))}


def _cards_html(report: Mapping[str, Any]) -> str:
    cards = []
    graded = _graded(report)
    for name, value, note in headline(report):
        grade = ""
        if name in graded:
            grade = _grade(graded[name])
        elif name == "Failed" and value != "0":
            grade = "poor"
        size = " long" if len(value) > 7 else ""  # 1,000,000 and longer: smaller, so a card holds it
        cards.append(f"<div class=\"card {grade}\"><div class=\"k\">{_e(name)}</div>"
                     f"<div class=\"v{size}\">{_e(value)}</div><div class=\"n\">{_e(note)}</div></div>")
    return "<section class=\"cards\">" + "".join(cards) + "</section>" + _meaning(report)


def _bar_chart(rows: list[tuple[str, float, str, str]], scale: float) -> str:
    """Horizontal bars: (label, value, text at the bar's end, colour), value / scale = full width."""
    label_w, bar_w, text_w, row_h = 140, 230, 130, 26
    width = label_w + bar_w + text_w
    height = row_h * len(rows) + 6
    out = [f"<svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" "
           f"xmlns=\"http://www.w3.org/2000/svg\" style=\"max-width:{width}px\">"]
    for i, (label, value, text, colour) in enumerate(rows):
        y = i * row_h + 3
        w = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale)) * bar_w
        short = label if len(label) <= 20 else label[:19] + "…"
        out.append(f"<g><title>{_e(label)}: {_e(text)}</title>"
                   f"<text x=\"{label_w - 8}\" y=\"{y + 15}\" text-anchor=\"end\" font-size=\"12\" "
                   f"fill=\"#1d2433\">{_e(short)}</text>"
                   f"<rect x=\"{label_w}\" y=\"{y + 2}\" width=\"{bar_w}\" height=\"18\" rx=\"4\" "
                   f"fill=\"#f1f3f5\"/>"
                   f"<rect x=\"{label_w}\" y=\"{y + 2}\" width=\"{w:.1f}\" height=\"18\" rx=\"4\" "
                   f"fill=\"{colour}\"/>"
                   f"<text x=\"{label_w + bar_w + 8}\" y=\"{y + 15}\" font-size=\"12\" "
                   f"fill=\"#6b7385\">{_e(text)}</text></g>")
    out.append("</svg>")
    return "".join(out)


def _distribution_html(report: Mapping[str, Any], cls: str = "panel") -> str:
    dist = report["label_distribution"]
    counts: Mapping[str, int] = dist["counts"]
    base = share_base(dist)
    names = _dataset_labels(dist)
    note, sentence = _distribution_caption(report)
    head = f"<h2>Label distribution <span class=\"muted\">({_e(note)})</span></h2>"
    if not names:
        return f"<section class=\"{cls}\">{head}<p class=\"empty\">No labels.</p></section>"
    top = max(counts.values()) or 1
    rows = [(n, float(counts[n]), f"{counts[n]:,} · {_pct(counts[n], base)}", "#4263eb")
            for n in names]
    return (f"<section class=\"{cls}\">{head}{_bar_chart(rows, top)}"
            f"<p class=\"legend\">{_e(sentence)}</p></section>")


def _per_label_html(report: Mapping[str, Any]) -> str:
    agreement = report["agreement"]
    per: Mapping[str, Mapping[str, Any]] = agreement["per_label"]
    head = "<h2>Agreement per label</h2>"
    if (report.get("transforms") or {}).get("label_map"):
        head = ("<h2>Agreement per label <span class=\"muted\">(the job's labels, before "
                "transforms.label_map)</span></h2>")
    if not report["counts"]["answers"]:
        return (f"<section class=\"panel\">{head}<p class=\"empty\">No worker answers: an output manifest "
                "holds each object's consolidated label only. Agreement compares the workers' own answers, "
                "which collect reads from the job's worker-response files when it collects a run.</p></section>")
    names = _ordered_labels(report, per)
    if not names:
        return f"<section class=\"panel\">{head}<p class=\"empty\">No labels.</p></section>"
    rows = []
    for n in names:
        value = per[n]["agreement"]
        text = "no pairs" if value is None else f"{value:.2f} · {per[n]['pairs']:,} pairs"
        rows.append((n, value or 0.0, text, _GRADE_COLORS[_grade(value)]))
    task = scored_as(report)
    what = {TaskType.text_classification: "share of worker pairs choosing it both",
            TaskType.text_multilabel: "share of worker pairs choosing it both",
            TaskType.bounding_box: "matched IoU of that label's boxes",
            TaskType.named_entity: "span F1 on that label's spans"}[task]
    legend = (f"<p class=\"legend\">Among pairs of workers where at least one used the label: "
              f"{_e(what)}."
              f"<br><span class=\"dot\" style=\"background:{_GRADE_COLORS['good']};margin-left:0\">"
              f"</span>≥ {GOOD}<span class=\"dot\" style=\"background:{_GRADE_COLORS['fair']}\"></span>"
              f"≥ {TENTATIVE}<span class=\"dot\" style=\"background:{_GRADE_COLORS['poor']}\"></span>"
              "lower</p>")
    return f"<section class=\"panel\">{head}{_bar_chart(rows, 1.0)}{legend}</section>"


def _answer_html(task: TaskType, value: Any, cls: str = "") -> str:
    """One worker's (or the consolidated) answer as chips."""
    if value is None:
        return "<span class=\"muted\">—</span>"
    chip = f"<span class=\"chip {cls}\">"
    if task is TaskType.text_classification:
        return f"{chip}{_e(value)}</span>"
    if not value:
        return "<span class=\"muted\">nothing</span>"
    if task is TaskType.text_multilabel:
        return "".join(f"{chip}{_e(v)}</span>" for v in value)
    if task is TaskType.bounding_box:
        return "".join(f"{chip}{_e(b['label'])}</span><span class=\"muted nw\">"
                       f"{b['left']:.0f},{b['top']:.0f} {b['width']:.0f}×{b['height']:.0f}"
                       "</span><br>" for b in value)
    return "".join(f"{chip}{_e(s['label'])}</span>"
                   + (f"“{_e(s['text'])}”&nbsp;" if "text" in s else "")
                   + f"<span class=\"muted nw\">{s['start']}–{s['end']}</span><br>" for s in value)


def _highlight(text: str, spans: Sequence[Mapping[str, Any]]) -> str:
    """The text, escaped, with the (non-overlapping, in-range) consolidated spans marked."""
    out, at = [], 0
    for s in sorted(spans, key=lambda s: (s["start"], s["end"])):
        start, end = s["start"], s["end"]
        if start < at or end > len(text) or start >= end:
            continue
        out.append(_e(text[at:start]))
        out.append(f"<mark title=\"{_e(s['label'])}\">{_e(text[start:end])}"
                   f"<sub>{_e(s['label'])}</sub></mark>")
        at = end
    out.append(_e(text[at:]))
    return "".join(out)


def _boxes_svg(entry: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    """Every worker's boxes drawn over each other, in the worker's colour (no image: no assets)."""
    boxes = [(colours[a["worker_id"]], b) for a in entry["answers"] for b in a["answer"]]
    if not boxes:
        return ""
    size = entry.get("image_size")
    if size:
        width, height = float(size[0]), float(size[1])
    else:
        width = max(b["left"] + b["width"] for _, b in boxes) * 1.05
        height = max(b["top"] + b["height"] for _, b in boxes) * 1.05
    if width <= 0 or height <= 0:
        return ""
    stroke = max(width, height) / 120
    rects = "".join(f"<rect x=\"{b['left']:g}\" y=\"{b['top']:g}\" width=\"{b['width']:g}\" "
                    f"height=\"{b['height']:g}\" fill=\"{c}\" fill-opacity=\"0.08\" stroke=\"{c}\" "
                    f"stroke-width=\"{stroke:.2f}\"><title>{_e(b['label'])}</title></rect>"
                    for c, b in boxes)
    return (f"<svg viewBox=\"0 0 {width:g} {height:g}\" width=\"190\" "
            f"xmlns=\"http://www.w3.org/2000/svg\" style=\"background:#f8f9fa;border:1px solid "
            f"#e4e7ee;border-radius:6px;display:block;margin-top:6px\">{rects}</svg>")


# Ground Truth's worker ids start with the workforce and the region: "private.us-east-1.<id>"
_WORKFORCE = re.compile(r"(?:private|public|vendor)\.[a-z]{2}(?:-[a-z]+)+-\d+\.")


def _worker_prefix(report: Mapping[str, Any]) -> str:
    """The workforce-and-region prefix every worker id in the report shares ("" when they do not
    all have the same one): the page shows the ids without it, and says so once."""
    found = {m.group(0) if (m := _WORKFORCE.match(w)) else "" for w in report["workers"]["by_worker"]}
    return found.pop() if len(found) == 1 else ""


def _worker(worker_id: str, prefix: str) -> str:
    """A worker id as the page shows it: without the shared prefix, the whole id as its title."""
    shown = worker_id.removeprefix(prefix) if prefix else worker_id
    return f"<span title=\"{_e(worker_id)}\">{_e(shown)}</span>" if shown != worker_id else _e(worker_id)


def _disputed_html(report: Mapping[str, Any]) -> str:
    task = scored_as(report)
    prefix = _worker_prefix(report)
    disputed: Sequence[Mapping[str, Any]] = report["disputed"]
    head = (f"<h2>Most disputed objects <span class=\"muted\">(lowest "
            f"{_e(report['agreement']['measure'])}, up to {DISPUTED_MAX})</span></h2>")
    if not disputed:
        return (f"<section class=\"panel wide\">{head}<p class=\"empty\">No object with two or more "
                "answers where the workers disagree.</p></section>")
    rows = []
    for entry in disputed:
        workers = [a["worker_id"] for a in entry["answers"]]
        colours = {w: _WORKER_COLORS[i % len(_WORKER_COLORS)] for i, w in enumerate(workers)}
        answers = "".join(
            f"<span class=\"w\"><span class=\"dot\" style=\"background:{colours[a['worker_id']]};"
            f"margin-left:0\"></span>{_worker(a['worker_id'], prefix)}"
            + (f" <span class=\"secs\">{a['seconds']:.0f} s</span>"
               if a.get("seconds") is not None else "")
            + f"</span><span>{_answer_html(task, a['answer'])}</span>"
            for a in entry["answers"])
        item = _e(entry["item"]) if entry["item"] is not None else "<span class=\"muted\">—</span>"
        if task is TaskType.bounding_box:
            item = f"<code>{item}</code>{_boxes_svg(entry, colours)}"
        elif task is TaskType.named_entity and entry["item"] is not None and entry["consolidated"]:
            item = _highlight(entry["item"], entry["consolidated"])
        grade = _grade(entry["agreement"])
        rows.append(
            f"<tr><td><b>{_e(entry['object_id'])}</b><br><span class=\"muted\">line "
            f"{_e(entry['line_no'])} · {_e(entry['status'])}</span></td>"
            f"<td class=\"item\">{item}</td>"
            f"<td>{_answer_html(task, entry['consolidated'], 'cons')}</td>"
            f"<td><div class=\"who\">{answers}</div></td>"
            f"<td class=\"num\"><span class=\"badge {grade}\">{_num(entry['agreement'])}</span></td>"
            "</tr>")
    return (f"<section class=\"panel wide\">{head}<table><thead><tr><th>Object</th><th>Item</th>"
            "<th>Consolidated</th><th>Each worker's answer</th><th class=\"num\">Agreement</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def _workers_html(report: Mapping[str, Any]) -> str:
    by_worker: Mapping[str, Mapping[str, Any]] = report["workers"]["by_worker"]
    head = "<h2>Workers</h2>"
    if not by_worker:
        return f"<section class=\"panel\">{head}<p class=\"empty\">No worker answers.</p></section>"
    order = sorted(by_worker, key=lambda w: (-by_worker[w]["tasks"], w))
    prefix = _worker_prefix(report)
    rows = []
    for w in order[:WORKERS_SHOWN]:
        s = by_worker[w]
        agreement = s["agreement"]
        meter = ("" if agreement is None else
                 f"<span class=\"meter\"><span style=\"width:{100 * agreement:.0f}%;"
                 f"background:{_GRADE_COLORS[_grade(agreement)]}\"></span></span>")
        median = s["median_seconds"]
        rows.append(f"<tr><td class=\"wid\">{_worker(w, prefix)}</td><td class=\"num\">{s['tasks']:,}</td>"
                    f"<td class=\"num\">{'n/a' if median is None else f'{median:.1f}'}</td>"
                    f"<td class=\"num\">{_num(agreement)}{meter}</td></tr>")
    more = (f"<p class=\"legend\">{len(order) - WORKERS_SHOWN:,} more in report.json.</p>"
            if len(order) > WORKERS_SHOWN else "")
    if prefix:
        more += f"<p class=\"legend\">Worker ids are shown without the <code>{_e(prefix)}</code> they all start with.</p>"
    return (f"<section class=\"panel\">{head}<table><thead><tr><th>Worker</th>"
            "<th class=\"num\">Tasks</th><th class=\"num\">Median s</th>"
            "<th class=\"num\" title=\"with the other workers on the same objects\">Agreement</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}</section>")


SKIPPED_SHOWN = 20  # malformed lines named in report.html and the card (report.json keeps more)


def skipped_lines(report: Mapping[str, Any]) -> tuple[int, list[tuple[int, str]]]:
    """(how many malformed lines transforms.on_error=skip read past, the first of them as
    (line number, what is wrong))."""
    parsed = report.get("parse") or {}
    shown = [(int(x[0]), str(x[1])) for x in (parsed.get("skipped_lines") or [])[:SKIPPED_SHOWN]]
    return int(parsed.get("skipped") or 0), shown


def _failures_html(report: Mapping[str, Any]) -> str:
    counts = report["counts"]
    reasons: Mapping[str, int] = counts["failed_reasons"]
    head = "<h2>Failed objects</h2>"
    left = counts["failed"] + counts["unlabeled"]
    listed = (f"<p class=\"legend\">Each failed or unlabeled object ({left:,}) is listed, with its input "
              f"fields, in <code>{NOT_LABELED}</code>.</p>") if left else ""
    skipped, shown = skipped_lines(report)
    if skipped:
        listed += (f"<p class=\"legend skipped\">transforms.on_error=skip read past {skipped:,} malformed "
                   f"line{'' if skipped == 1 else 's'} of the output manifest, not counted above: "
                   + "; ".join(f"line {n:,}: {_e(why)}" for n, why in shown)
                   + (" …" if skipped > len(shown) else "") + "</p>")
    if not reasons:
        return f"<section class=\"panel\">{head}<p class=\"empty\">No failed objects.</p>{listed}</section>"
    rows = "".join(f"<tr><td>{_e(r)}</td><td class=\"num\">{n:,}</td></tr>"
                   for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0])))
    return (f"<section class=\"panel\">{head}<table><thead><tr><th>Reason</th>"
            f"<th class=\"num\">Objects</th></tr></thead><tbody>{rows}</tbody></table>{listed}</section>")


# --- dataset card ------------------------------------------------------------------------------


def _md(value: Any) -> str:
    """A value for a Markdown table cell: one line, pipes and HTML neutralised."""
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           sort_keys=True, default=str)
    text = " ".join(text.split())
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;"))


def card_markdown(provenance: Mapping[str, Any], report: Mapping[str, Any],
                  data_files: Sequence[tuple[str, str]] = (), files_sha256: str | None = None,
                  loads_from: str | None = None) -> str:
    """The dataset card's text: YAML front matter, provenance table, headline figures, labels.

    `data_files` are (split, path in the dataset) of the files `datasets.load_dataset(<dataset
    folder>)` is to load: the front matter's `configs` names them (Hugging Face's manual
    configuration of a dataset's files), or `datasets` would guess them from every file under the
    folder (YOLO's label .txt files, spaCy's ids.jsonl, the COCO .json) and load the wrong ones.
    `files_sha256` (a digest of those files' bytes) is the config's `description`: `datasets`
    caches a folder's splits under a hash of its name and its card's configs, not of the files, so
    that every dataset collect writes (a folder `dataset`, `hf/train.parquet`, ...) would share one
    cache entry, and `load_dataset` would give the rows of whichever was loaded first.
    `loads_from`, given no `data_files`: the folder they would be in (hf, jsonl), whose empty
    splits the card explains (no_files_to_load).
    """
    task = TaskType(report["task_type"])
    dataset = report["dataset"]
    # A JSON string is a YAML double-quoted scalar; \u003c keeps markup out of the front matter.
    name = json.dumps(dataset, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
    configs = ["configs:", "- config_name: default",
               *([f"  description: \"gtrun dataset, files sha256 {files_sha256}\""] if files_sha256 else []),
               "  data_files:"] + [
        line for split, path in data_files
        for line in (f"  - split: {split}", f"    path: {json.dumps(path, ensure_ascii=False)}")]
    lines = ["---", f"pretty_name: {name}", *(configs if data_files else ()),
             "tags:", "- gtrun", "- sagemaker-ground-truth", "---", "",
             f"# {_md(dataset)}", "",
             f"{CARD_WHAT[task]} collected with SageMaker Ground Truth by gtrun. "
             "The full quality report is [report.html](../report.html), its figures in "
             "[report.json](../report.json).", ""]
    if data_files:
        lines += [f"`datasets.load_dataset(\"<this folder>\")` loads the {', '.join(s for s, _ in data_files)} "
                  f"split{'s' if len(data_files) > 1 else ''} from {data_files[0][1].partition('/')[0]}/ "
                  "(this card's `configs`).", ""]
    elif loads_from:
        lines += [no_files_to_load(report, loads_from), ""]
    lines += ["## Provenance", "", "| | |", "|---|---|"]
    lines += [f"| {_md(key)} | {_md(value)} |" for key, value in provenance.items()
              if key not in ("members", "left_out")]  # a sweep's: in their own section
    members = provenance.get("members")
    if members:
        keys = [k for k in MEMBER_COLUMNS if any(k in m for m in members)]
        # a sweep's members, or runs merged with --out (a run and its continuation, say)
        heading = "Sweep members" if provenance.get("sweep") else "Merged runs"
        lines += ["", f"## {heading}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_md(m.get(k)) for k in keys) + " |" for m in members]
    lines += ["", "## Figures", "", "| figure | value | |", "|---|---:|---|"]
    lines += [f"| {_md(name)} | {_md(value)} | {_md(note)} |"
              for name, value, note in headline(report)]
    notes = dataset_notes(report)
    if notes:
        lines += ["", "## The dataset", ""] + [f"- {_md(n)}" for n in notes]
    dist = report["label_distribution"]
    per = report["agreement"]["per_label"]
    mapped = bool((report.get("transforms") or {}).get("label_map"))
    names = _dataset_labels(dist)
    base = share_base(dist)
    with_agreement = bool(per) and not mapped  # else the agreement has a table of its own (the job's labels)
    if with_agreement:
        names += [n for n in _ordered_labels(report, per) if n not in dist["counts"]]
    if names:
        lines += ["", "## Labels", "", _distribution_caption(report)[1], "",
                  f"| label | {_md(dist['unit'])} | share |" + (" agreement |" if with_agreement else ""),
                  "|---|---:|---:|" + ("---:|" if with_agreement else "")]
        lines += [f"| {_md(n)} | {dist['counts'].get(n, 0):,} | {_pct(dist['counts'].get(n, 0), base)} |"
                  + (f" {_num(per.get(n, {}).get('agreement'))} |" if with_agreement else "") for n in names]
    if per and mapped and report["counts"]["answers"]:
        lines += ["", "## Agreement per label", "", "On the job's labels, before transforms.label_map.", "",
                  "| label | agreement | pairs |", "|---|---:|---:|"]
        lines += [f"| {_md(n)} | {_num(per[n]['agreement'])} | {per[n]['pairs']:,} |"
                  for n in _ordered_labels(report, per)]
    reasons = report["counts"]["failed_reasons"]
    if reasons:
        lines += ["", "## Failed objects", "", "| reason | objects |", "|---|---:|"]
        lines += [f"| {_md(r)} | {n:,} |"
                  for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))]
    left = report["counts"]["failed"] + report["counts"]["unlabeled"]
    if left:
        lines += ["", (f"The {left:,} failed or unlabeled objects are listed, with their input fields, in "
                       if left > 1 else "The failed or unlabeled object is listed, with its input fields, in ")
                  + f"[{NOT_LABELED}](../{NOT_LABELED})."]
    skipped, shown = skipped_lines(report)
    if skipped:
        lines += ["", "## Skipped lines", "", f"transforms.on_error=skip read past {skipped:,} malformed "
                  f"line{'' if skipped == 1 else 's'} of the output manifest; they are in no count above"
                  + (f" (the first {len(shown)} here)" if skipped > len(shown) else "") + ".", "",
                  "| line | what is wrong |", "|---:|---|"]
        lines += [f"| {n:,} | {_md(why)} |" for n, why in shown]
    return "\n".join(lines) + "\n"


def no_files_to_load(report: Mapping[str, Any], folder: str) -> str:
    """The card's sentence for a dataset whose `folder` (hf, jsonl) has no split to load: why it has no object."""
    filters = [f for f in (report.get("transforms") or {}).get("filters", ()) if f.get("dropped")]
    if filters:
        why = "; ".join(f"transforms.{f['option']}={f['threshold']:g} left out "
                        f"{'all ' if f['dropped'] == f['objects'] else ''}{f['dropped']:,}" for f in filters)
    elif not report["counts"]["labeled"]:
        why = "no object of the output is labeled"
    else:
        why = "the transforms kept none"
    files = "has no file" if folder == "hf" else "has empty files"
    return (f"`datasets.load_dataset(\"<this folder>\")` has nothing to load: the dataset has no object ({why}), "
            f"so {folder}/ {files} and this card no `configs`.")


def write_card(out_dir: Path | str, provenance: Mapping[str, Any],
               report: Mapping[str, Any], data_files: Sequence[tuple[str, str]] = (),
               files_sha256: str | None = None, loads_from: str | None = None) -> Path:
    """Write `<out_dir>/dataset/README.md`, the dataset card; return its path."""
    path = Path(out_dir) / "dataset" / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card_markdown(provenance, report, data_files, files_sha256, loads_from), encoding="utf-8")
    return path
