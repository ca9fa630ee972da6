"""The two backends behind one config: where the query runs, where artifacts go, who takes the job.

- local: DuckDB over `source.files`, a folder standing in for S3, gtrun's labeling service.
- aws: Athena, S3 and SageMaker through boto3 (credentials from boto3's standard chain).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from runner.build.manifest import json_lines_query
from runner.build.sql import Query
from runner.errors import ConfigError
from runner.io.labeling import LabelingService, SageMakerLabeling, local_labeling
from runner.io.query import DuckDBSource, fingerprint, source_files
from runner.io.store import LocalStore, Store
from runner.schema import BackendKind, GtrunConfig

if TYPE_CHECKING:  # boto3 and botocore load with the aws backend only
    from runner.io.athena import AthenaSource

LOCAL_ACCOUNT = "123456789012"


class Source(Protocol):
    def count(self, query: Query) -> int: ...
    def rows(self, query: Query, limit: int) -> tuple[list[str], list[dict[str, Any]]]: ...
    def output_fields(self, query: Query) -> list[str]: ...
    def close(self) -> None: ...


class Backend(Protocol):
    kind: str
    dialect: str
    storage: Store

    def open_source(self) -> Source: ...
    def check_storage(self) -> None: ...
    def lines(self, src: Any, query: Query, fields: Sequence[str]) -> Iterator[tuple[Any, int]]: ...
    # recorded: for a recorded run's job (status, stop, collect), whose storage must be there
    def labeling(self, recorded: bool = False) -> contextlib.AbstractContextManager[LabelingService]: ...
    def source_files(self) -> dict[str, str]: ...
    def role_arn(self) -> str: ...
    def workteam_arn(self) -> str: ...


class LocalBackend:
    kind = "local"
    dialect = "duckdb"

    def __init__(self, settings: GtrunConfig) -> None:
        self.s = settings
        self.storage = LocalStore(settings.backend.root)

    def open_source(self) -> DuckDBSource:
        return DuckDBSource.open(self.s.source, self.s.backend.duckdb)

    def check_storage(self) -> None:
        """A local folder: made as it is written to."""

    def lines(self, src: DuckDBSource, query: Query, fields: Sequence[str]) -> Iterator[tuple[Any, int]]:
        return src.stream_lines(json_lines_query(query, fields))

    def labeling(self, recorded: bool = False) -> contextlib.AbstractContextManager[LabelingService]:
        return local_labeling(self.storage.root, self.s.backend.region, recorded)

    def source_files(self) -> dict[str, str]:
        return fingerprint(source_files(self.s.source))

    def role_arn(self) -> str:
        return self.s.backend.role_arn or f"arn:aws:iam::{LOCAL_ACCOUNT}:role/gtrun-local"

    def workteam_arn(self) -> str:
        region = self.s.backend.region
        return self.s.workteam.arn or f"arn:aws:sagemaker:{region}:{LOCAL_ACCOUNT}:workteam/private-crowd/gtrun-local"


class AwsBackend:
    kind = "aws"
    dialect = "athena"

    def __init__(self, settings: GtrunConfig) -> None:
        from runner.io.aws import client
        from runner.io.s3 import S3Store

        self.s = settings
        self._client = client
        self.storage = S3Store(client(settings.backend, "s3"))

    def open_source(self) -> AthenaSource:
        from runner.io.athena import AthenaSource

        b = self.s.backend
        return AthenaSource(self._client(b, "athena"), self._client(b, "s3"), b, self.s.source)

    def check_storage(self) -> None:
        """backend.bucket is there and usable, before a query Athena bills for (its results go there too),
        in the job's region: Ground Truth reads the manifest and writes the output in its own region."""
        bucket, region = self.s.backend.bucket, self.s.backend.region
        found = self.storage.bucket_region(bucket)  # an endpoint, network or credentials error: StoreError names it
        if found is False:
            raise ConfigError("backend.bucket", f"s3://{bucket}: no such bucket")
        if isinstance(found, str) and found != region:
            raise ConfigError("backend.bucket", f"s3://{bucket} is in {found}, not in {region} (backend.region), "
                              "where the job would run", f"backend.region={found}, or a bucket in {region}")

    def lines(self, src: AthenaSource, query: Query, fields: Sequence[str]) -> Iterator[tuple[Any, int]]:
        return src.stream_lines(query, fields)  # lines are built from Athena's result CSV, in Python

    @contextlib.contextmanager
    def labeling(self, recorded: bool = False) -> Iterator[LabelingService]:
        yield SageMakerLabeling(self._client(self.s.backend, "sagemaker"), None)

    def source_files(self) -> dict[str, str]:
        return {}  # an Athena table: the query execution is the record of what was read

    def role_arn(self) -> str:
        assert self.s.backend.role_arn  # checked with the config
        return self.s.backend.role_arn

    def workteam_arn(self) -> str:
        assert self.s.workteam.arn
        return self.s.workteam.arn


def backend_for(settings: GtrunConfig) -> Backend:
    """The backend `backend.kind` names (an explicit table, not `_target_`)."""
    kinds: dict[BackendKind, type[Any]] = {BackendKind.local: LocalBackend, BackendKind.aws: AwsBackend}
    backend: Backend = kinds[settings.backend.kind](settings)
    return backend
