"""Submitting labeling jobs: the interface both backends implement, and the local one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from runner.errors import SubmitError
from runner.io.store import LocalStore
from runner.service.store import JobStore, ServiceError


class LabelingService(Protocol):
    """The labeling-job part of SageMaker's API, as gtrun uses it."""

    def create_labeling_job(self, request: Mapping[str, Any]) -> dict[str, Any]: ...
    def describe_labeling_job(self, name: str) -> dict[str, Any]: ...


class LocalLabeling:
    """The local backend: jobs go to the local labeling service's store under the storage root."""

    def __init__(self, storage: LocalStore) -> None:
        self.storage = storage
        self.jobs = JobStore(store_path(storage.root))

    def create_labeling_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return {"LabelingJobArn": self.jobs.create_job(request, self.storage)}
        except ServiceError as exc:
            raise SubmitError(f"CreateLabelingJob {request['LabelingJobName']}: {exc.code}: {exc}") from None

    def describe_labeling_job(self, name: str) -> dict[str, Any]:
        try:
            return self.jobs.describe_job(name)
        except ServiceError as exc:
            raise SubmitError(f"DescribeLabelingJob {name}: {exc.code}: {exc}") from None


def store_path(root: Path) -> Path:
    """Where the local labeling service keeps its jobs: beside the buckets, never one of them."""
    return Path(root) / ".gtrun" / "labeling.sqlite3"
