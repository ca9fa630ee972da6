"""Ground Truth's built-in annotation consolidation (the ACS-* Lambdas), one task type at a time.

Each function returns what GT's consolidation Lambda returns for one data object, the `content` of
its consolidation response (reference §4.3): `{<attr>: <label value>, "<attr>-metadata": {...}}`.
The output manifest line is the input line plus exactly these two keys (reference §4.2).

Pure: stdlib and runner.schema only, no I/O, no clock (`now` is passed in), no randomness (where GT
breaks a tie randomly, this module takes the earliest label in the job's label list).

What GT does is documented only in outline (reference §8). Where it is not, this module chooses,
and says so in the docstring concerned ("unconfirmed"):

- text_classification: AWS's published Modified Dawid-Skene EM (ACSBlogPost.ipynb), always run for
  `epochs` epochs (the notebook's stop test depends on rounding noise; see `dawid_skene`); ties
  (posteriors within 1e-6) go to the earliest label. An object with one answer gets confidence 0,
  as the DG states for one worker per object. GT carries worker parameters across a job's batches;
  gtrun's service consolidates each object as it finishes, a batch of one, where the EM would
  collapse onto that object (any majority near 1.0). So it uses `consolidate_in_job` instead: the
  Dawid-Skene E-step for the object under the job's record so far (`JobRecord`: each worker's
  accuracy and the class prior, the M-step's soft counts summed over the objects finished before
  it, an online EM), whose result (`Learnt`) is then added to the record. A worker's accuracy
  starts at the notebook's 0.7, weighted as RECORD_PRIOR_OBJECTS objects, and a split vote's
  confidence is at most 0.99 (gtrun's choices).
- text_multilabel: classes in descending index order; per-class confidence = fraction of the
  object's workers choosing the class (GT's per-class EM is unpublished).
- bounding_box: greedy same-label matching at IoU >= 0.5, averaged coordinates,
  confidence = workers in cluster / workers x mean pairwise IoU.
- named_entity: greedy clustering at Jaccard > 0.5, mode/lower-median boundaries, majority label,
  confidence = workers in cluster / workers x mean pairwise Jaccard.
- One worker gives confidence 0 everywhere (reference §4.2). Real box and NER outputs show 0.08 or
  0.09 instead, with an unknown number of workers; GT's formula for those is not known.
- custom: every answer kept (`annotationsFromAllWorkers`), as the AWS recipe Lambda does.
- `job-name` is "labeling-job/" + the job name in lower case, as in real outputs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeGuard

from runner.collect.agreement import box_iou
from runner.schema import TaskType

# The `name` the built-in templates give their crowd element, i.e. the key of the answer object
# in `answerContent` (reference §4.4); gtrun's bundled templates use the same names.
ELEMENT_NAMES: dict[TaskType, str] = {
    TaskType.text_classification: "crowd-classifier",
    TaskType.text_multilabel: "crowd-classifier-multi-select",
    TaskType.bounding_box: "boundingBox",
    TaskType.named_entity: "crowd-entity-annotation",
}

# `<attr>-metadata.type` per task type (reference §2.2, §4.2).
OUTPUT_TYPES: dict[TaskType, str] = {
    TaskType.text_classification: "groundtruth/text-classification",
    TaskType.text_multilabel: "groundtruth/text-classification-multilabel",
    TaskType.bounding_box: "groundtruth/object-detection",
    TaskType.named_entity: "groundtruth/text-span",
    TaskType.custom: "groundtruth/custom",
}

EM_EPOCHS = 20  # ACSBlogPost.ipynb: max_epochs
EM_WORKER_PRIOR = 0.7  # ACSBlogPost.ipynb: all_worker_prior, the initial accuracy of every worker
EM_TIE_TOLERANCE = 1e-6  # gtrun's: posteriors this close (relative) are tied; see below
RECORD_PRIOR_OBJECTS = 4  # gtrun's: a worker's starting accuracy counts as this many objects
SPLIT_MAX_CONFIDENCE = 0.99  # gtrun's: what a split vote's confidence rounding to 1.0 is written as
BOX_MIN_IOU = 0.5  # unconfirmed: GT does not publish its matching threshold (reference §8)
SPAN_MIN_JACCARD = 0.5  # unconfirmed: spans cluster when their Jaccard index is strictly above it
IMAGE_DEPTH = 3  # GT writes depth 3 for every image (reference §4.2, cat_output.manifest)
NO_AGREEMENT = 0  # the confidence GT writes with one worker: a JSON 0 (reference §4.2)


class ConsolidationError(ValueError):
    """An answer cannot be consolidated (unknown label, wrong shape); the object fails."""


@dataclass(frozen=True)
class Answer:
    """One worker's submission for one data object, as kept in the worker-response file (§4.4).

    `content` is the crowd-form answer object keyed by element name, e.g.
    `{"crowd-classifier": {"label": "Positive"}}`. Times are UTC (naive datetimes are taken as
    UTC). `sub`/`issuer` identify a private-workforce worker (Cognito); None for public workers.
    """

    worker_id: str
    content: Mapping[str, Any]
    submission_time: datetime | None = None
    acceptance_time: datetime | None = None
    time_spent_s: float | None = None
    sub: str | None = None
    issuer: str | None = None


def creation_date(now: datetime) -> str:
    """`<attr>-metadata.creation-date`: UTC, ISO-8601 with microseconds and no zone.

    >>> creation_date(datetime(2019, 4, 18, 16, 40, 59, 217995))
    '2019-04-18T16:40:59.217995'
    """
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%S.%f")


def job_name_field(job_name: str) -> str:
    """`<attr>-metadata.job-name`: "labeling-job/" + the job name in lower case.

    Real outputs show the lower-cased name (job `EntityRecognizerPOC-1` writes
    `labeling-job/entityrecognizerpoc-1`): GT takes it from the job ARN, which is lower case.

    >>> job_name_field("Tweets-20260101")
    'labeling-job/tweets-20260101'
    """
    return f"labeling-job/{job_name.lower()}"


def annotation_content(answer: Answer) -> str:
    """The answer as the JSON string GT puts in `annotationData.content` (compact, UTF-8 kept).

    >>> annotation_content(Answer("w1", {"crowd-classifier": {"label": "Positive"}}))
    '{"crowd-classifier":{"label":"Positive"}}'
    """
    return json.dumps(answer.content, ensure_ascii=False, separators=(",", ":"))


def failed_metadata(label_attribute: str, reason: str, retry_count: int = 0) -> dict[str, Any]:
    """What a failed or expired object carries: `<attr>-metadata` only, no label value.

    Shaped after ssie_expired_line2.jsonl: `retry-count`, `failure-reason` and `human-annotated`
    (the string "true" there, kept as is: unconfirmed), no `type`, no `job-name`.

    >>> failed_metadata("sentiment", "ClientError: Annotation tasks expired.")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'sentiment-metadata': {'retry-count': 0,
     'failure-reason': 'ClientError: Annotation tasks expired.', 'human-annotated': 'true'}}
    """
    return {f"{label_attribute}-metadata": {"retry-count": retry_count, "failure-reason": reason,
                                            "human-annotated": "true"}}


def consolidate(task_type: TaskType, *, label_attribute: str, labels: Sequence[str], job_name: str,
                answers: Sequence[Answer], now: datetime, element_name: str | None = None,
                worker_response_ref: str | None = None,
                worker_priors: Mapping[str, float] | None = None) -> dict[str, Any]:
    """`{<attr>: value, "<attr>-metadata": {...}}` for one data object, as GT's ACS Lambda gives it.

    `element_name` is the crowd element's `name` in the template (default: the built-in template's,
    see ELEMENT_NAMES; when that key is absent, the one key whose value has the task type's shape).
    `worker_response_ref` is used by custom tasks only; `worker_priors` (worker id -> accuracy
    learnt earlier in the job, the EM's starting point) by text classification only. Text
    classification runs the EM on this one object, where the class prior collapses onto it: any
    strict majority ends near confidence 1.0, a tie at 1/(tied classes), whatever the priors.
    `consolidate_batch` lets the EM learn worker accuracies across objects; `consolidate_in_job`
    weighs one object's answers by what the job learnt of its workers before it.

    >>> consolidate(TaskType.text_classification, label_attribute="sentiment",
    ...             labels=["Positive", "Negative"], job_name="tweets", now=datetime(2026, 1, 1),
    ...             answers=[Answer("w1", {"crowd-classifier": {"label": "Negative"}})])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'sentiment': 1, 'sentiment-metadata': {'class-name': 'Negative', 'confidence': 0,
     'type': 'groundtruth/text-classification', 'job-name': 'labeling-job/tweets',
     'human-annotated': 'yes', 'creation-date': '2026-01-01T00:00:00.000000'}}
    """
    return consolidate_batch(task_type, label_attribute=label_attribute, labels=labels,
                             job_name=job_name, items={"": answers}, now=now,
                             element_name=element_name,
                             worker_response_refs=({"": worker_response_ref}
                                                   if worker_response_ref is not None else None),
                             worker_priors=worker_priors)[""]


def consolidate_batch(task_type: TaskType, *, label_attribute: str, labels: Sequence[str],
                      job_name: str, items: Mapping[str, Sequence[Answer]], now: datetime,
                      element_name: str | None = None,
                      worker_response_refs: Mapping[str, str] | None = None,
                      worker_priors: Mapping[str, float] | None = None,
                      ) -> dict[str, dict[str, Any]]:
    """datasetObjectId -> consolidated content, for one consolidation batch, in `items` order.

    Text classification runs one Dawid-Skene EM over the whole batch, so a worker who is often
    outvoted counts for less everywhere (GT also carries worker parameters across batches of a
    job; pass them as `worker_priors`). Other task types consolidate each object on its own.
    A bad answer raises ConsolidationError naming the object.
    """
    labels = list(labels)
    try:
        if task_type is TaskType.text_classification:
            return _classification_batch(items, label_attribute=label_attribute, labels=labels,
                                         job_name=job_name, now=now, element_name=element_name,
                                         worker_priors=worker_priors or {})
    except _ObjectError as exc:
        where = f"object {exc.object_id!r}: " if exc.object_id else ""
        raise ConsolidationError(where + exc.problem) from None
    refs = worker_response_refs or {}
    out: dict[str, dict[str, Any]] = {}
    for object_id, answers in items.items():
        try:
            out[object_id] = _consolidate_one(task_type, label_attribute=label_attribute,
                                              labels=labels, job_name=job_name, answers=answers,
                                              now=now, element_name=element_name,
                                              worker_response_ref=refs.get(object_id))
        except ConsolidationError as exc:
            raise ConsolidationError(f"object {object_id!r}: {exc}" if object_id else str(exc)) \
                from None
    return out


# --- text classification: Modified Dawid-Skene ------------------------------------------------


def dawid_skene(label_matrix: Sequence[Sequence[int | None]], n_classes: int,
                epochs: int = EM_EPOCHS, worker_priors: Sequence[float | None] | None = None,
                ) -> tuple[list[list[float]], list[float]]:
    """(posterior per item over the classes, accuracy per worker) by AWS's Modified Dawid-Skene EM.

    `label_matrix[i][j]` is the class index worker j gave item i, or None (rows may be short).
    A port of MulticlassDawidSkeneEM in AWS's ACSBlogPost.ipynb (reference §8): uniform item
    posteriors; worker confusion matrices with `a` (0.7, or the worker's prior) on the diagonal;
    E-step with the class prior = normalised sum of the posteriors; M-step with the notebook's
    smoothing `C_j += n_j*M(acc_j) + n_j/2*M(mean acc)`, then row normalisation. It always runs
    `epochs` epochs: the notebook's stop test is not reproducible (its "unnormalised" posteriors
    are a shallow copy normalised in place, so the log-likelihood is 0 up to rounding noise, and
    whether the relative change of that noise falls below 1e-8 decides when it stops; run to 20
    epochs, the notebook and this port agree to 1e-9). Items with no label keep the uniform
    posterior; workers with no label keep their prior. With one item the class prior collapses
    onto that item, so any majority ends near certainty.

    >>> post, acc = dawid_skene([[0, 0, None], [1, 1, 1], [0, 0, 1], [1, 1, 0]], 2)
    >>> [round(p[0], 2) for p in post], [round(a, 2) for a in acc]
    ([1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.33])
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, not {n_classes}")
    rows = [list(r) for r in label_matrix]
    n_workers = max((len(r) for r in rows), default=0)
    if worker_priors is not None and len(worker_priors) < n_workers:
        raise ValueError(f"{len(worker_priors)} worker priors for {n_workers} workers")
    for i, row in enumerate(rows):
        for j, label in enumerate(row):
            if label is not None and not 0 <= label < n_classes:
                raise ValueError(f"label_matrix[{i}][{j}] = {label!r} is not a class index "
                                 f"below {n_classes}")
    k_range = range(n_classes)
    annotated = [any(j < len(r) and r[j] is not None for r in rows) for j in range(n_workers)]
    given = list(worker_priors or [])[:n_workers]
    start = [float(a) if a is not None else EM_WORKER_PRIOR
             for a in given + [None] * (n_workers - len(given))]
    accuracy = list(start)
    confusion = [_prior_matrix(n_classes, a) for a in start]
    posteriors = [[1.0 / n_classes] * n_classes for _ in rows]
    all_prior = EM_WORKER_PRIOR
    for _ in range(epochs):
        # E-step (Dawid & Skene 1979, eq. 2.3-2.4).
        prior = [sum(p[k] for p in posteriors) for k in k_range]
        total = sum(prior)
        prior = [x / total for x in prior]
        for i, row in enumerate(rows):
            if all(label is None for label in row):
                continue  # the notebook never updates items without annotations
            p = list(prior)
            for j, label in enumerate(row):
                if label is not None:
                    for k in k_range:
                        p[k] *= confusion[j][k][label]
            s = sum(p)
            posteriors[i] = [x / s for x in p] if s > 0 else p
        # M-step (eq. 2.5) with the notebook's Dirichlet-style smoothing.
        all_prior_matrix = _prior_matrix(n_classes, all_prior)
        counts = [[[0.0] * n_classes for _ in k_range] for _ in range(n_workers)]
        for i, row in enumerate(rows):
            for j, label in enumerate(row):
                if label is not None:
                    for k in k_range:
                        counts[j][k][label] += posteriors[i][k]
        for j in range(n_workers):
            if not annotated[j]:
                continue
            c = counts[j]
            n = sum(map(sum, c))
            accuracy[j] = sum(c[k][k] for k in k_range) / n
            own = _prior_matrix(n_classes, accuracy[j])
            for k in k_range:
                row_k = [c[k][m] + own[k][m] * n + all_prior_matrix[k][m] * n / 2 for m in k_range]
                s = sum(row_k)
                c[k] = [x / s for x in row_k] if s > 0 else row_k
            confusion[j] = c
        used = [accuracy[j] for j in range(n_workers) if annotated[j]]
        if used:
            all_prior = sum(used) / len(used)
    return posteriors, accuracy


def _prior_matrix(n_classes: int, a: float) -> list[list[float]]:
    """The notebook's initial confusion matrix: `a` on the diagonal, the rest shared equally."""
    off = (1 - a) / (n_classes - 1) if n_classes > 1 else 0.0
    return [[a if k == m else off for m in range(n_classes)] for k in range(n_classes)]


class _ObjectError(Exception):
    def __init__(self, object_id: str, problem: str) -> None:
        self.object_id = object_id
        self.problem = problem
        super().__init__(problem)


def _classification_batch(items: Mapping[str, Sequence[Answer]], *, label_attribute: str,
                          labels: list[str], job_name: str, now: datetime,
                          element_name: str | None,
                          worker_priors: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    workers: dict[str, int] = {}
    matrix: list[list[int | None]] = []
    for object_id, answers in items.items():
        row: dict[int, int] = {}
        for answer in answers:
            try:
                value = _element(answer, TaskType.text_classification, element_name)
                label = _known_label(value["label"], labels, answer)
            except ConsolidationError as exc:
                raise _ObjectError(object_id, str(exc)) from None
            j = workers.setdefault(answer.worker_id, len(workers))
            if j in row:
                raise _ObjectError(object_id, f"worker {answer.worker_id!r} answered twice")
            row[j] = label
        matrix.append([row.get(j) for j in range(len(workers))])
        if not answers:
            raise _ObjectError(object_id, "no answers to consolidate")
    priors: list[float | None] = [worker_priors.get(w) for w in workers]
    posteriors, _ = dawid_skene(matrix, len(labels), worker_priors=priors)
    return {object_id: _classification_content(p, len(answers), label_attribute=label_attribute,
                                               labels=labels, job_name=job_name, now=now)
            for (object_id, answers), p in zip(items.items(), posteriors, strict=True)}


def _classification_content(posterior: Sequence[float], n_answers: int, *, label_attribute: str,
                            labels: list[str], job_name: str, now: datetime) -> dict[str, Any]:
    best = max(posterior)
    # A tie is an unstable fixed point of the EM: rounding noise grows each epoch (to ~1e-10
    # after 20) and the notebook's np.argmax would follow that noise. Posteriors within
    # EM_TIE_TOLERANCE of the best count as tied, and a tie goes to the earliest label.
    index = next(k for k, x in enumerate(posterior)
                 if math.isclose(x, best, rel_tol=EM_TIE_TOLERANCE))
    return {
        label_attribute: index,
        f"{label_attribute}-metadata": {
            "class-name": labels[index],
            "confidence": NO_AGREEMENT if n_answers == 1 else round(best, 2),
            **_common_metadata(TaskType.text_classification, job_name, now),
        },
    }


# --- text classification, one object at a time within a job: online Dawid-Skene -------------


@dataclass(frozen=True)
class WorkerRecord:
    """What a job's finished objects say of one worker: `answered`, how many of them (with two
    answers or more) it answered; `correct`, summed over those, the posterior probability of the
    class it chose, i.e. the expected number it got right (the M-step's soft counts)."""

    answered: float = 0.0
    correct: float = 0.0

    @property
    def accuracy(self) -> float:
        """The expected share of right answers, starting from the notebook's 0.7 weighted as
        RECORD_PRIOR_OBJECTS objects; always strictly between 0 and 1.

        >>> WorkerRecord().accuracy, round(WorkerRecord(answered=6, correct=6).accuracy, 2)
        (0.7, 0.88)
        """
        return ((self.correct + EM_WORKER_PRIOR * RECORD_PRIOR_OBJECTS)
                / (self.answered + RECORD_PRIOR_OBJECTS))


@dataclass(frozen=True)
class JobRecord:
    """What a text-classification job learnt from its finished objects, the parameters GT carries
    across a job's batches: a WorkerRecord per worker (none yet: a new worker) and, per class index,
    the finished objects' posteriors summed (`classes`; shorter than the label list: zeros)."""

    workers: Mapping[str, WorkerRecord] = field(default_factory=dict)
    classes: Sequence[float] = ()

    def class_prior(self, n_classes: int) -> list[float]:
        """The share of each class among the finished objects, with one more object per class
        (uniform before any object finished)."""
        counts = [self.classes[k] if k < len(self.classes) else 0.0 for k in range(n_classes)]
        total = sum(counts) + n_classes
        return [(c + 1) / total for c in counts]


@dataclass(frozen=True)
class Learnt:
    """What one consolidated object adds to its job's record: `correct`, per worker, the posterior
    of the class it chose (empty when the object had one answer, which says nothing of its
    worker); `classes`, the object's posterior per class."""

    correct: Mapping[str, float]
    classes: tuple[float, ...]


def consolidate_in_job(*, label_attribute: str, labels: Sequence[str], job_name: str,
                       answers: Sequence[Answer], now: datetime, record: JobRecord,
                       element_name: str | None = None) -> tuple[dict[str, Any], Learnt]:
    """Text classification of one object as it finishes, with what its job learnt before it.

    The Dawid-Skene E-step under the job's record (unconfirmed; gtrun's choice, see the module
    docstring): posterior[k] = prior[k] x the product over the object's workers of C_j[k, answer],
    C_j being the notebook's confusion matrix for worker j's accuracy (accuracy on the diagonal,
    the rest shared equally) and prior the record's class prior. Label and confidence as in
    `consolidate` (one answer: confidence 0), except that a split vote is never written as
    certain: a posterior that rounds to 1.0 gives 0.99 (workers who agreed on every object so far
    make any majority near-certain under the model). Returns the content and what the object adds
    to the record; the caller keeps the record (adding `Learnt` to it once the object finished).

    >>> content, learnt = consolidate_in_job(
    ...     label_attribute="s", labels=["Positive", "Negative"], job_name="j",
    ...     now=datetime(2026, 1, 1), record=JobRecord(),
    ...     answers=[Answer(w, {"crowd-classifier": {"label": x}})
    ...              for w, x in (("a", "Positive"), ("b", "Positive"), ("c", "Negative"))])
    >>> content["s"], content["s-metadata"]["confidence"]
    (0, 0.7)
    >>> {w: round(p, 2) for w, p in learnt.correct.items()}
    {'a': 0.7, 'b': 0.7, 'c': 0.3}
    """
    labels = list(labels)
    if not answers:
        raise ConsolidationError("no answers to consolidate")
    chosen: dict[str, int] = {}
    for answer in answers:
        value = _element(answer, TaskType.text_classification, element_name)
        label = _known_label(value["label"], labels, answer)
        if answer.worker_id in chosen:
            raise ConsolidationError(f"worker {answer.worker_id!r} answered twice")
        chosen[answer.worker_id] = label
    n_classes = len(labels)
    p = record.class_prior(n_classes)
    for worker, label in chosen.items():
        accuracy = record.workers.get(worker, WorkerRecord()).accuracy
        other = (1 - accuracy) / (n_classes - 1) if n_classes > 1 else 0.0  # as _prior_matrix
        p = [x * (accuracy if k == label else other) for k, x in enumerate(p)]
    total = sum(p)
    posterior = [x / total for x in p]
    content = _classification_content(posterior, len(answers), label_attribute=label_attribute,
                                      labels=labels, job_name=job_name, now=now)
    metadata = content[f"{label_attribute}-metadata"]
    if len(set(chosen.values())) > 1 and metadata["confidence"] == 1:
        metadata["confidence"] = SPLIT_MAX_CONFIDENCE
    correct = {w: posterior[label] for w, label in chosen.items()} if len(chosen) > 1 else {}
    return content, Learnt(correct, tuple(posterior))


# --- the other task types: one object at a time -----------------------------------------------


def _consolidate_one(task_type: TaskType, *, label_attribute: str, labels: list[str],
                     job_name: str, answers: Sequence[Answer], now: datetime,
                     element_name: str | None, worker_response_ref: str | None) -> dict[str, Any]:
    if not answers:
        # GT marks objects with no answers failed and never sends them (reference §6.2).
        raise ConsolidationError("no answers to consolidate")
    seen: set[str] = set()
    for answer in answers:
        if answer.worker_id in seen:
            raise ConsolidationError(f"worker {answer.worker_id!r} answered twice")
        seen.add(answer.worker_id)
    value: Any
    meta: dict[str, Any]
    if task_type is TaskType.text_multilabel:
        value, meta = _multilabel(answers, labels, element_name)
    elif task_type is TaskType.bounding_box:
        value, meta = _boxes(answers, labels, element_name)
    elif task_type is TaskType.named_entity:
        value, meta = _entities(answers, labels, element_name)
    elif task_type is TaskType.custom:
        value, meta = _custom(answers, worker_response_ref)
    else:
        raise ConsolidationError(f"no consolidation for task type {task_type.value!r}")
    if task_type is TaskType.custom:
        metadata = {**_common_metadata(task_type, job_name, now), **meta}
    else:
        metadata = {**meta, **_common_metadata(task_type, job_name, now)}
    return {label_attribute: value, f"{label_attribute}-metadata": metadata}


def _multilabel(answers: Sequence[Answer], labels: list[str],
                element_name: str | None) -> tuple[list[int], dict[str, Any]]:
    """Every class chosen by at least one worker (reference §4.2).

    Order (unconfirmed): descending class index, which matches every example seen ([1,0] in the
    DG, [6,0] in an AWS notebook, [5,1] in a real output). Per-class confidence (unconfirmed: GT
    runs an EM per class, not published): the fraction of the object's workers who chose the class,
    rounded to 2 places; 0.0 with one worker, as in the AWS notebook's one-worker output.
    """
    votes: Counter[int] = Counter()
    for answer in answers:
        value = _element(answer, TaskType.text_multilabel, element_name, empty_ok=True)
        chosen = {_known_label(name, labels, answer) for name in value.get("labels", [])}
        votes.update(chosen)
    order = sorted(votes, reverse=True)
    n = len(answers)
    return order, {
        "class-map": {str(k): labels[k] for k in order},
        "confidence-map": {str(k): 0.0 if n == 1 else round(votes[k] / n, 2) for k in order},
    }


def _boxes(answers: Sequence[Answer], labels: list[str],
           element_name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Boxes matched across workers and averaged (reference §8; details unconfirmed).

    Each worker's boxes, in answer order, join the cluster (same label, no box of that worker yet)
    whose mean box they overlap most at IoU >= 0.5, one box per cluster, best pairs first; the rest
    start new clusters. A cluster becomes one box: the mean left/top/width/height, rounded half
    up; confidence = (workers in the cluster / workers) x mean pairwise IoU of its boxes, rounded
    to 2 places, 0 for a box only one worker drew (so 0 everywhere with one worker). Boxes few
    workers drew are kept. Output in order of first appearance; `class_id` is the label's index
    in the job's label list; `class-map` lists only the classes that occur, by class id.
    `image_size` comes from the first answer with `inputImageProperties` ([] if none has it).
    """
    image_size: list[dict[str, int]] = []
    per_worker: list[list[tuple[int, tuple[float, float, float, float]]]] = []
    for answer in answers:
        value = _element(answer, TaskType.bounding_box, element_name, empty_ok=True)
        props = value.get("inputImageProperties")
        if not image_size and isinstance(props, Mapping) and "width" in props and "height" in props:
            image_size = [{"width": int(props["width"]), "height": int(props["height"]),
                           "depth": IMAGE_DEPTH}]
        boxes = []
        for box in value.get("boundingBoxes", []):
            try:
                coords = (float(box["left"]), float(box["top"]), float(box["width"]),
                          float(box["height"]))
            except (KeyError, TypeError, ValueError):
                raise ConsolidationError(f"worker {answer.worker_id!r}: bad box {_shown(box)}") from None
            boxes.append((_known_label(box.get("label"), labels, answer), coords))
        per_worker.append(boxes)

    def mean_box(members: list[tuple[float, float, float, float]]) -> tuple[float, ...]:
        return tuple(sum(c[n] for c in members) / len(members) for n in range(4))

    clusters = _cluster(per_worker, key=lambda b: b[0],
                        center=lambda ms: mean_box([m[1] for m in ms]),
                        similarity=lambda b, c: box_iou(b[1], c), accept=lambda s: s >= BOX_MIN_IOU)
    annotations, objects = [], []
    for members in clusters:
        left, top, width, height = (_round_half_up(x) for x in mean_box([m[1] for m in members]))
        annotations.append({"class_id": members[0][0], "left": left, "top": top,
                            "width": width, "height": height})
        objects.append({"confidence": _agreement([m[1] for m in members], len(answers), box_iou)})
    class_ids = sorted({a["class_id"] for a in annotations})
    return ({"image_size": image_size, "annotations": annotations},
            {"objects": objects, "class-map": {str(k): labels[k] for k in class_ids}})


def _entities(answers: Sequence[Answer], labels: list[str],
              element_name: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spans clustered across workers (reference §8; details unconfirmed).

    Each worker's spans, in answer order, join the cluster (any label, no span of that worker yet)
    whose current span they overlap with a Jaccard index (of the character sets) above 0.5,
    best pairs first; the rest start new clusters. A cluster becomes one entity: start and end are
    the mode of the members' starts and ends, or the lower median when no single value is the most
    frequent; the label is the most frequent one, ties going to the earliest label in the job's
    label list (GT breaks ties randomly). Confidence = (workers in the cluster / workers) x mean
    pairwise Jaccard, rounded to 2 places, 0 for a span only one worker marked. Entities in order of
    first appearance (real output keeps a worker's order, not offset order).
    """
    per_worker: list[list[tuple[str, tuple[int, int]]]] = []
    for answer in answers:
        value = _element(answer, TaskType.named_entity, element_name, empty_ok=True)
        spans = []
        for entity in value.get("entities", []):
            try:
                span = (int(entity["startOffset"]), int(entity["endOffset"]))
            except (KeyError, TypeError, ValueError):
                raise ConsolidationError(
                    f"worker {answer.worker_id!r}: bad entity {_shown(entity)}") from None
            _known_label(entity.get("label"), labels, answer)
            spans.append((str(entity["label"]), span))
        per_worker.append(spans)

    clusters = _cluster(per_worker, key=lambda e: None,
                        center=lambda ms: _consensus_span([m[1] for m in ms]),
                        similarity=lambda e, c: _jaccard(e[1], c),
                        accept=lambda s: s > SPAN_MIN_JACCARD)
    entities, confidences = [], []
    for members in clusters:
        start, end = _consensus_span([m[1] for m in members])
        counts = Counter(m[0] for m in members)
        top = max(counts.values())
        label = min((name for name, c in counts.items() if c == top), key=labels.index)
        entities.append({"label": label, "startOffset": start, "endOffset": end})
        confidences.append({"confidence": _agreement([m[1] for m in members], len(answers),
                                                     _jaccard)})
    return ({"annotations": {"labels": [{"label": name} for name in labels], "entities": entities}},
            {"entities": confidences})


def _custom(answers: Sequence[Answer],
            worker_response_ref: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """No consolidation: every answer kept, its content as a JSON string.

    Chosen over the newer DG behaviour (`{}` plus `worker-response-ref` only) so that the output
    manifest alone holds all answers; this is what the AWS recipe's no-op consolidation Lambda
    writes. `worker-response-ref` (the S3 URI of the object's worker-response file) is added to the
    metadata as newer GT does, when given.
    """
    value = {"annotationsFromAllWorkers": [
        {"workerId": a.worker_id, "annotationData": {"content": annotation_content(a)}}
        for a in answers]}
    meta = {} if worker_response_ref is None else {"worker-response-ref": worker_response_ref}
    return value, meta


# --- helpers ------------------------------------------------------------------------------------

_SHAPES: dict[TaskType, tuple[str, type]] = {
    TaskType.text_classification: ("label", str),
    TaskType.text_multilabel: ("labels", list),
    TaskType.bounding_box: ("boundingBoxes", list),
    TaskType.named_entity: ("entities", list),
}


def _element(answer: Answer, task_type: TaskType, element_name: str | None,
             empty_ok: bool = False) -> Mapping[str, Any]:
    """The answer object of the task's crowd element inside one worker's submission."""
    key, kind = _SHAPES[task_type]

    def fits(value: Any) -> TypeGuard[Mapping[str, Any]]:
        return isinstance(value, Mapping) and isinstance(value.get(key), kind)

    content = answer.content
    name = element_name or ELEMENT_NAMES[task_type]
    if name in content:
        value = content[name]
        if not fits(value):
            raise ConsolidationError(f"worker {answer.worker_id!r}: {name!r} is not "
                                     f"{{{key!r}: {kind.__name__}}} ({_shown(value)})")
        return value
    if element_name is None:
        found = [k for k, v in content.items() if fits(v)]
        if len(found) == 1:
            value = content[found[0]]
            assert fits(value)  # found by it
            return value
        if len(found) > 1:
            raise ConsolidationError(f"worker {answer.worker_id!r}: several answers fit "
                                     f"{task_type.value} ({_cut(', '.join(map(repr, found)))}); "
                                     "name the element")
    if empty_ok and not content:
        return {}  # crowd-form omits elements the worker left untouched (reference §5.3)
    raise ConsolidationError(f"worker {answer.worker_id!r}: no {name!r} answer in "
                             f"{_shown(dict(content))}")


SHOWN_MAX = 200  # characters of a worker's value an error message shows: an answer can be megabytes


def _shown(value: Any) -> str:
    """`repr(value)`, cut short past SHOWN_MAX characters (a ConsolidationError is logged, and is
    the object's failure-reason: the whole answer is in its worker-response file).

    >>> _shown("x" * 1000)[-25:]
    'xxx... (1,002 characters)'
    """
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_MAX else f"{text[:SHOWN_MAX]}... ({len(text):,} characters)"


def _known_label(name: Any, labels: list[str], answer: Answer) -> int:
    try:
        return labels.index(name)
    except ValueError:
        raise ConsolidationError(f"worker {answer.worker_id!r}: label {_shown(name)} is not one of "
                                 f"{labels!r}") from None


def _cluster(per_worker: Sequence[Sequence[Any]], *, key: Callable[[Any], Any],
             center: Callable[[list[Any]], Any], similarity: Callable[[Any, Any], float],
             accept: Callable[[float], bool]) -> list[list[Any]]:
    """Greedy one-to-one clustering of the workers' items, worker by worker, in answer order."""
    clusters: list[list[Any]] = []
    owners: list[set[int]] = []
    for w, items in enumerate(per_worker):
        centers = [center(c) for c in clusters]
        pairs = []
        for i, item in enumerate(items):
            for c, members in enumerate(clusters):
                if w in owners[c] or key(item) != key(members[0]):
                    continue
                score = similarity(item, centers[c])
                if accept(score):
                    pairs.append((-score, i, c))  # best pairs first, then item and cluster order
        pairs.sort()
        used_items: set[int] = set()
        used_clusters: set[int] = set()
        for _, i, c in pairs:
            if i not in used_items and c not in used_clusters:
                used_items.add(i)
                used_clusters.add(c)
                clusters[c].append(items[i])
                owners[c].add(w)
        for i, item in enumerate(items):
            if i not in used_items:
                clusters.append([item])
                owners.append({w})
    return clusters


def _agreement(members: list[Any], n_workers: int, similarity: Callable[[Any, Any], float]) -> Any:
    """(members / workers) x mean pairwise similarity; 0 when only one worker drew it."""
    if len(members) < 2:
        return NO_AGREEMENT
    pairs = [similarity(a, b) for n, a in enumerate(members) for b in members[n + 1:]]
    return round(len(members) / n_workers * sum(pairs) / len(pairs), 2)


def _jaccard(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Jaccard index of the character sets of two [start, end) spans."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _consensus(values: list[int]) -> int:
    """The mode, or the lower median when no single value is the most frequent."""
    counts = Counter(values).most_common()
    if len(counts) == 1 or counts[0][1] > counts[1][1]:
        return counts[0][0]
    return int(statistics.median_low(values))


def _consensus_span(spans: list[tuple[int, int]]) -> tuple[int, int]:
    start, end = _consensus([s for s, _ in spans]), _consensus([e for _, e in spans])
    return (start, end) if start < end else spans[0]


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _common_metadata(task_type: TaskType, job_name: str, now: datetime) -> dict[str, Any]:
    return {"type": OUTPUT_TYPES[task_type], "job-name": job_name_field(job_name),
            "human-annotated": "yes", "creation-date": creation_date(now)}


def _utc(when: datetime) -> datetime:
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when
