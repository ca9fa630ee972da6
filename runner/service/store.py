"""The local labeling service's durable job store (SQLite): jobs, their data objects and status.

It keeps what Ground Truth keeps for a labeling job: the CreateLabelingJob request, the status,
the data objects read from the input manifest, and their label counters. Answers survive a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.io.store import LocalStore

ACCOUNT = "123456789012"  # the local stand-in account, as in moto's defaults
TERMINAL = ("Completed", "Failed", "Stopped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY COLLATE NOCASE,   -- Ground Truth job names are unique case-insensitively
    arn TEXT NOT NULL,
    request TEXT NOT NULL,                  -- the CreateLabelingJob request, as JSON
    status TEXT NOT NULL,
    failure_reason TEXT,
    reference_code TEXT NOT NULL,
    created REAL NOT NULL,
    modified REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    job TEXT NOT NULL COLLATE NOCASE REFERENCES jobs(name),
    object_id INTEGER NOT NULL,             -- datasetObjectId: the line's index in the manifest
    line TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', -- pending | labeled | failed
    PRIMARY KEY (job, object_id)
);
"""


class ServiceError(Exception):
    """An error the SageMaker API returns, with its error code."""

    code = "ServiceError"
    status = 400


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ValidationError(ServiceError):
    code = "ValidationException"


def job_arn(name: str, region: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:labeling-job/{name.lower()}"


def _region(request: Mapping[str, Any]) -> str:
    arn = request.get("HumanTaskConfig", {}).get("WorkteamArn", "") or ""
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else "us-east-1"


class JobStore:
    """Jobs and their data objects in one SQLite file (WAL, so readers never block the writer)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db.executescript(SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _tx(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> sqlite3.Connection:
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self, kind: Any, *_: Any) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def create_job(self, request: Mapping[str, Any], storage: LocalStore,
                   now: float | None = None) -> str:
        """Register a job and read its input manifest; returns the job ARN."""
        name = request["LabelingJobName"]
        manifest_uri = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
        arn = job_arn(name, _region(request))
        now = time.time() if now is None else now
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
                raise ResourceInUse(f"Labeling job {name!r} already exists")
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, 'Initializing', NULL, ?, ?, ?)",
                       (name, arn, json.dumps(request, sort_keys=True), uuid.uuid4().hex, now, now))
            try:
                count = self._load_objects(db, name, storage, manifest_uri)
            except (ValueError, OSError) as exc:
                raise ValidationError(f"cannot read the input manifest {manifest_uri}: {exc}") from None
            if count == 0:
                raise ValidationError(f"the input manifest {manifest_uri} has no data objects")
            db.execute("UPDATE jobs SET status = 'InProgress', modified = ? WHERE name = ?", (now, name))
        return arn

    @staticmethod
    def _load_objects(db: sqlite3.Connection, name: str, storage: LocalStore, uri: str) -> int:
        def lines() -> Iterator[tuple[str, int, str]]:
            with storage.open_read(uri) as src:
                index = 0
                for raw in src:
                    text = raw.decode("utf-8").rstrip("\r\n")
                    if not text.strip():
                        continue
                    json.loads(text)  # a line that is not JSON fails the job, as in Ground Truth
                    yield name, index, text
                    index += 1

        cur = db.executemany("INSERT INTO objects (job, object_id, line) VALUES (?, ?, ?)", lines())
        return cur.rowcount

    def _job_row(self, name: str) -> sqlite3.Row:
        row = self._db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ResourceNotFound(f"Could not find labeling job {name!r}")
        return row

    def counters(self, name: str) -> dict[str, int]:
        counts = dict(self._db.execute(
            "SELECT status, COUNT(*) FROM objects WHERE job = ? GROUP BY status", (name,)).fetchall())
        labeled = counts.get("labeled", 0)
        return {"TotalLabeled": labeled, "HumanLabeled": labeled, "MachineLabeled": 0,
                "FailedNonRetryableError": counts.get("failed", 0),
                "Unlabeled": counts.get("pending", 0)}

    def describe_job(self, name: str) -> dict[str, Any]:
        """The job as DescribeLabelingJob returns it (times as aware datetimes)."""
        row = self._job_row(name)
        request = json.loads(row["request"])
        out: dict[str, Any] = {
            "LabelingJobStatus": row["status"],
            "LabelCounters": self.counters(row["name"]),
            "CreationTime": datetime.fromtimestamp(row["created"], timezone.utc),
            "LastModifiedTime": datetime.fromtimestamp(row["modified"], timezone.utc),
            "JobReferenceCode": row["reference_code"],
            "LabelingJobArn": row["arn"],
        }
        if row["failure_reason"]:
            out["FailureReason"] = row["failure_reason"]
        for key in ("LabelingJobName", "LabelAttributeName", "InputConfig", "OutputConfig", "RoleArn",
                    "LabelCategoryConfigS3Uri", "StoppingConditions", "LabelingJobAlgorithmsConfig",
                    "HumanTaskConfig", "Tags"):
            if key in request:
                out[key] = request[key]
        if row["status"] == "Completed":
            output = request["OutputConfig"]["S3OutputPath"].rstrip("/")
            out["LabelingJobOutput"] = {
                "OutputDatasetS3Uri": f"{output}/{request['LabelingJobName']}/manifests/output/output.manifest"}
        return out

    def stop_job(self, name: str, now: float | None = None) -> None:
        row = self._job_row(name)
        if row["status"] in TERMINAL:
            raise ValidationError(f"Labeling job {name!r} is {row['status']} and cannot be stopped")
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'Stopping', modified = ? WHERE name = ?", (now, name))

    def job_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM jobs ORDER BY created")]
