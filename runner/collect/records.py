"""What one labeled data object becomes after parsing: the shape every transform and report reads.

Parsers (runner.collect.parse) turn output-manifest lines (plus worker responses when they are at
hand) into `LabeledObject`s; transforms (runner.collect.transforms) and the quality report
(runner.collect.report) only read them. Pure data: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from runner.schema import TaskType


class Status(str, Enum):
    labeled = "labeled"
    failed = "failed"  # the metadata carries a failure-reason (expired, no answer, ...)
    unlabeled = "unlabeled"  # no label attribute on the line (a stopped job, a chained job's gap)


@dataclass(frozen=True)
class Box:
    """A bounding box in image pixels, origin top-left."""

    label: str
    left: float
    top: float
    width: float
    height: float
    confidence: float | None = None
    tokens: tuple[int, ...] = ()  # bounding-box NER: indices of the OCR tokens the box covers


@dataclass(frozen=True)
class Span:
    """A text span in Unicode code points, end exclusive."""

    label: str
    start: int
    end: int
    confidence: float | None = None


@dataclass(frozen=True)
class WorkerAnswer:
    """One worker's answer for the object, as the worker-response file or a custom label holds it."""

    worker_id: str
    content: dict[str, Any]  # the crowd-form answer, keyed by element name
    seconds: float | None = None  # timeSpentInSeconds, or submission - acceptance


@dataclass(frozen=True)
class LabeledObject:
    line_no: int  # 1-based line of the output manifest
    object_id: str  # datasetObjectId when known, else the 0-based line index as a string
    inputs: dict[str, Any]  # the input fields (source / source-ref and extras), label attributes removed
    attribute: str  # the label attribute this record is about
    task_type: TaskType
    status: Status
    label: str | None = None  # single-label: the class name
    labels: tuple[str, ...] = ()  # multi-label: the class names
    boxes: tuple[Box, ...] = ()
    image_size: tuple[int, int, int] | None = None  # width, height, depth
    entities: tuple[Span, ...] = ()
    confidence: float | None = None  # single-label confidence
    confidences: dict[str, float] = field(default_factory=dict)  # multi-label: per class name
    answers: tuple[WorkerAnswer, ...] = ()  # every worker's answer, when known
    metadata: dict[str, Any] = field(default_factory=dict)  # the raw `<attr>-metadata`
    failure_reason: str | None = None
    job_name: str | None = None  # from metadata job-name, without the "labeling-job/" prefix
    # the raw `<attr>` value of a labeled object, as the line holds it (single-label: the class
    # index; custom: whatever the consolidation Lambda wrote); None when failed or unlabeled
    value: Any = None
    # in a merged collect, the sweep member (run, job) whose object it is: object_id is "<member>/<its id>"
    member: str | None = None

    @property
    def own_id(self) -> str:
        """Its id in its own job's output: object_id without a merged collect's member."""
        return self.object_id.removeprefix(f"{self.member}/") if self.member is not None else self.object_id

    @property
    def workers(self) -> int:
        return len(self.answers)

    @property
    def text(self) -> str | None:
        value = self.inputs.get("source")
        return value if isinstance(value, str) else None

    @property
    def source_ref(self) -> str | None:
        value = self.inputs.get("source-ref")
        return value if isinstance(value, str) else None
