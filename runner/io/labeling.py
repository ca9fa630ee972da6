"""Submitting labeling jobs through SageMaker's API: boto3 for both backends, only the endpoint differs.

On the local backend the endpoint is gtrun's labeling service: the one running for the storage root
(`gtrun serve`), or one started just for the call. The job lives in the service's store, not in the
process that submitted it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from runner.errors import ConfigError, SubmitError


class LabelingService(Protocol):
    """The labeling-job part of SageMaker's API, as gtrun uses it."""

    endpoint: str | None  # where the API is served when it is not SageMaker's (gtrun's labeling service)

    def create_labeling_job(self, request: Mapping[str, Any]) -> dict[str, Any]: ...
    def describe_labeling_job(self, name: str) -> dict[str, Any]: ...
    def find_labeling_job(self, name: str) -> dict[str, Any] | None: ...
    def stop_labeling_job(self, name: str) -> None: ...
    def list_labeling_jobs(self, limit: int = 20) -> list[dict[str, Any]]: ...
    def list_workteams(self) -> list[dict[str, Any]]: ...


class SageMakerLabeling:
    """LabelingService over a boto3 `sagemaker` client."""

    def __init__(self, client: Any, endpoint: str | None = None) -> None:
        self.client = client
        self.endpoint = endpoint
        import botocore.exceptions  # loaded with the client; here for the except clauses below

        self._errors = botocore.exceptions

    @contextlib.contextmanager
    def _said(self, name: str) -> Iterator[None]:
        """botocore's errors (the service's, and no endpoint, credentials or network) as one
        SubmitError that starts with `name`."""
        from runner.io.s3 import describe

        try:
            yield
        except (self._errors.ClientError, self._errors.BotoCoreError) as exc:
            # a 4xx answer to the first attempt is the service's no (a 5xx or a lost connection may
            # hide a yes, and so may an earlier attempt of a retried call); a name taken is a job that
            # exists, whosever it is
            answer = exc.response if isinstance(exc, self._errors.ClientError) else {}
            meta = answer.get("ResponseMetadata", {})
            refused = (400 <= meta.get("HTTPStatusCode", 0) < 500 and not meta.get("RetryAttempts", 0)
                       and answer.get("Error", {}).get("Code") != "ResourceInUse")
            raise SubmitError(f"{name}: {describe(exc)}", refused=refused) from None

    def _call(self, operation: str, name: str, **params: Any) -> dict[str, Any]:
        with self._said(name):
            response = getattr(self.client, operation)(**params)
        response.pop("ResponseMetadata", None)
        return dict(response)

    def create_labeling_job(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Create the job; the name is the idempotency key.

        When a retry after a lost response finds the name taken, the job is ours if it carries this
        run's lineage tag: then it counts as created, not as an error and not as a second job.
        """
        name = request["LabelingJobName"]
        try:
            return self._call("create_labeling_job", f"CreateLabelingJob {name}", **request)
        except SubmitError as exc:
            if ": ResourceInUse:" not in str(exc):
                raise
            existing = self.describe_labeling_job(name)
            if _lineage(existing.get("Tags", [])) and _lineage(existing.get("Tags", [])) == _lineage(
                    request.get("Tags", [])):
                return {"LabelingJobArn": existing["LabelingJobArn"]}
            raise SubmitError(f"CreateLabelingJob {name}: the name is taken by another labeling job "
                              "(not this run's); Ground Truth names are unique per account and region, "
                              "case-insensitively") from None

    def describe_labeling_job(self, name: str) -> dict[str, Any]:
        return self._call("describe_labeling_job", f"DescribeLabelingJob {name}", LabelingJobName=name)

    def find_labeling_job(self, name: str) -> dict[str, Any] | None:
        """The job of this name (DescribeLabelingJob), or None when there is none."""
        with self._said(f"DescribeLabelingJob {name}"):
            try:
                response = self.client.describe_labeling_job(LabelingJobName=name)
            except self._errors.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ResourceNotFound":
                    return None
                raise
        response.pop("ResponseMetadata", None)
        return dict(response)

    def stop_labeling_job(self, name: str) -> None:
        self._call("stop_labeling_job", f"StopLabelingJob {name}", LabelingJobName=name)

    def list_labeling_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest jobs first (ListLabelingJobs, paginated)."""
        found: list[dict[str, Any]] = []
        pages = self.client.get_paginator("list_labeling_jobs").paginate(
            SortBy="CreationTime", SortOrder="Descending", PaginationConfig={"PageSize": min(limit, 100)})
        with self._said("ListLabelingJobs"):
            for page in pages:
                found += page["LabelingJobSummaryList"]
                if len(found) >= limit:
                    break
        return found[:limit]

    def list_workteams(self) -> list[dict[str, Any]]:
        teams: list[dict[str, Any]] = []
        with self._said("ListWorkteams"):
            for page in self.client.get_paginator("list_workteams").paginate():
                teams += page["Workteams"]
        return teams


def _lineage(tags: list[dict[str, str]]) -> str | None:
    """The run a job was created by, from its `gtrun:run` tag."""
    return next((t["Value"] for t in tags if t.get("Key") == "gtrun:run"), None)


def store_path(root: Path) -> Path:
    """Where the local labeling service keeps its jobs: beside the buckets, never one of them."""
    return Path(root) / ".gtrun" / "labeling.sqlite3"


def local_client(url: str, region: str) -> Any:
    """A boto3 sagemaker client for gtrun's labeling service (it needs no real credentials)."""
    import boto3  # loaded at the first call: nothing of boto3's is needed while a manifest streams
    import botocore.config

    session = boto3.session.Session(aws_access_key_id="gtrun-local", aws_secret_access_key="gtrun-local",
                                    region_name=region)
    config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3})
    return session.client("sagemaker", endpoint_url=url, config=config)


def check_recorded_root(root: Path | str) -> None:
    """A recorded run's storage folder is where it was, with its labeling jobs: else a ConfigError
    naming backend.root (a service started for the call would make an empty one, and then not
    find the job)."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError("backend.root", f"{path} {'is a file, not a folder' if path.exists() else 'does not exist'}; "
                          "the run's labeling job and its output are kept there",
                          "was the folder moved or removed? put it back there (nothing was created in its place)")
    if not store_path(path).is_file():
        raise ConfigError("backend.root", f"{path} holds no labeling jobs ({store_path(path).relative_to(path)} is "
                          "missing); the run's labeling job and its output are kept there",
                          "was the folder moved or replaced? put the run's storage folder back there")


@contextlib.contextmanager
def local_labeling(root: Path | str, region: str, recorded: bool = False) -> Iterator[SageMakerLabeling]:
    """The local backend's labeling service: the running one for `root`, else one for this call.
    `recorded`: for a recorded run's job (status, stop, collect), whose storage must be there."""
    if recorded:
        check_recorded_root(root)
    from runner.service.registry import running_url

    url = running_url(Path(root))
    if url:
        yield SageMakerLabeling(local_client(url, region), url)
        return
    from runner.service.server import Service  # uvicorn: only when it serves

    try:
        local = Service(root, port=0)
    except OSError as exc:  # it keeps its jobs under the root: a folder it cannot make or write
        raise ConfigError("backend.root", f"cannot use {root}: {exc.strerror or exc}") from None
    with local.running() as service:
        yield SageMakerLabeling(local_client(service.url, region), None)
