"""The local labeling service's durable job store (SQLite): jobs, their data objects and status.

It keeps what Ground Truth keeps for a labeling job: the CreateLabelingJob request, the status,
the data objects read from the input manifest, and their label counters. Answers survive a restart.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.io.store import Store
from runner.service.consolidate import JobRecord, Learnt, WorkerRecord

ACCOUNT = "123456789012"  # the local stand-in account, as in moto's defaults
TERMINAL = ("Completed", "Failed", "Stopped")
# assignments.released: the worker chose Release task, or closed or left the page (its sendBeacon).
RELEASED_BY = ("worker", "page")
ADDED_COLUMNS = {"assignments": ("released TEXT", "view TEXT")}  # to stores made before them

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
    status TEXT NOT NULL DEFAULT 'pending', -- pending | finishing (being consolidated) | labeled | failed
    output TEXT,                            -- the output-manifest line, once labeled or failed
    PRIMARY KEY (job, object_id)
);
CREATE TABLE IF NOT EXISTS assignments (
    job TEXT NOT NULL COLLATE NOCASE,
    object_id INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,             -- what the worker's page submits with
    accepted REAL NOT NULL,                 -- when the worker got the task
    expires REAL NOT NULL,                  -- accepted + TaskTimeLimitInSeconds
    submitted REAL,                         -- NULL until answered
    answer TEXT,                            -- the crowd-form answer, JSON
    released TEXT,                          -- NULL, or how the worker gave it back unanswered (RELEASED_BY)
    view TEXT,                              -- the page that showed the task last (a left page's must match)
    PRIMARY KEY (job, object_id, worker_id)
);
-- Text classification: what the job's finished objects say of each worker and class (JobRecord in
-- consolidate.py), added to as each object finishes, in the transaction that finishes it.
CREATE TABLE IF NOT EXISTS worker_records (
    job TEXT NOT NULL COLLATE NOCASE,
    worker_id TEXT NOT NULL,
    answered REAL NOT NULL,                 -- finished objects with several answers it answered
    correct REAL NOT NULL,                  -- summed posterior of the class it chose on those
    PRIMARY KEY (job, worker_id)
);
CREATE TABLE IF NOT EXISTS class_records (
    job TEXT NOT NULL COLLATE NOCASE,
    class_index INTEGER NOT NULL,
    weight REAL NOT NULL,                   -- summed posterior of the class over finished objects
    PRIMARY KEY (job, class_index)
);
CREATE INDEX IF NOT EXISTS assignments_by_worker ON assignments (job, worker_id, submitted);
CREATE INDEX IF NOT EXISTS objects_by_status ON objects (job, status, object_id);
"""


@dataclass(frozen=True)
class Task:
    """One data object leased to one worker."""

    job: str
    object_id: int
    line: str
    token: str
    accepted: float
    expires: float
    view: str = ""  # this page's showing of the task: what its release on leaving sends back


class ServiceError(Exception):
    """An error the SageMaker API returns, with its error code."""

    code = "ServiceError"
    status = 400


class ServiceStopping(ServiceError):
    """A call the service cut short because it is stopping (gtrun's own service, started for one
    call, when that call is interrupted): what it was doing is rolled back."""

    code = "ServiceUnavailable"
    status = 503


def _stopped(name: str) -> ServiceStopping:
    return ServiceStopping(f"the service stopped while it created {name!r}: no job was created")


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ValidationError(ServiceError):
    code = "ValidationException"


class TaskGone(ValidationError):
    """An answer to a task that is no longer the worker's to answer (answered already, released and
    taken, expired, or its job ended): the worker's page moves on instead of keeping the answer."""


class AccessDenied(ServiceError):
    code = "AccessDeniedException"
    status = 403


def job_arn(name: str, region: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:labeling-job/{name.lower()}"


def _region(request: Mapping[str, Any]) -> str:
    arn = request.get("HumanTaskConfig", {}).get("WorkteamArn", "") or ""
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else "us-east-1"


def has_job(path: Path, name: str) -> bool | None:
    """Whether the job store at `path` has a job of that name, read only (no store: False), from a
    process that holds no JobStore of it; None when it cannot be read."""
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return None


class JobStore:
    """Jobs and their data objects in one SQLite file (WAL, so readers never block the writer)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's, for interrupt()
        self._stopping = threading.Event()
        self._db.executescript(SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        """Columns added since a store was made (CREATE TABLE IF NOT EXISTS keeps the old table)."""
        with self._tx() as db:
            for table, columns in ADDED_COLUMNS.items():
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            self._opened.append(db)
        return db

    def interrupt(self) -> None:
        """Cut short the calls under way, in any thread: their transactions roll back. A service
        stopping mid-call stops at once instead of finishing, say, the load of a large job's
        objects (its rows are read in Python between statements, where sqlite3's own interrupt,
        sent too, does not reach)."""
        self._stopping.set()
        for db in list(self._opened):
            db.interrupt()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        db = self._db

        class _Tx:
            def __enter__(self) -> sqlite3.Connection:
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self, kind: Any, *_: Any) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def create_job(self, request: Mapping[str, Any], storage: Store,
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
            except sqlite3.OperationalError:
                if not self._stopping.is_set():
                    raise
                raise _stopped(name) from None
            if count == 0:
                raise ValidationError(f"the input manifest {manifest_uri} has no data objects")
        return arn

    def _load_objects(self, db: sqlite3.Connection, name: str, storage: Store, uri: str) -> int:
        def lines() -> Iterator[tuple[str, int, str]]:
            with storage.open_read(uri) as src:
                index = 0
                for raw in src:
                    if self._stopping.is_set():
                        raise _stopped(name)
                    text = raw.decode("utf-8").rstrip("\r\n")
                    if not text.strip():
                        continue
                    json.loads(text)  # a line that is not JSON fails the job, as in Ground Truth
                    yield name, index, text
                    index += 1

        cur = db.executemany("INSERT INTO objects (job, object_id, line) VALUES (?, ?, ?)", lines())
        return cur.rowcount

    def _job_row(self, name: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ResourceNotFound(f"Could not find labeling job {name!r}")
        return row

    def counters(self, name: str) -> dict[str, int]:
        counts = dict(self._db.execute(
            "SELECT status, COUNT(*) FROM objects WHERE job = ? GROUP BY status", (name,)).fetchall())
        labeled = counts.get("labeled", 0)
        return {"TotalLabeled": labeled, "HumanLabeled": labeled, "MachineLabeled": 0,
                "FailedNonRetryableError": counts.get("failed", 0),
                "Unlabeled": counts.get("pending", 0) + counts.get("finishing", 0)}

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
        if row["status"] in ("Completed", "Stopped"):  # a stopped job's output holds what was labeled
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

    # -- listing ----------------------------------------------------------------------------------
    def job_rows(self) -> list[sqlite3.Row]:
        return list(self._db.execute("SELECT * FROM jobs ORDER BY created, name"))

    def request(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self._job_row(name)["request"]))

    def set_status(self, name: str, status: str, now: float, reason: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = ?, failure_reason = COALESCE(?, failure_reason), "
                       "modified = ? WHERE name = ?", (status, reason, now, name))

    # -- tasks ------------------------------------------------------------------------------------
    def next_task(self, name: str, worker_id: str, now: float) -> Task | None:
        """The worker's current task, or a new one: an object it has not seen that still needs answers.

        A task not submitted within the time limit goes back to the queue for other workers; the
        worker who let it lapse never gets that object again. A task the worker released (RELEASED_BY)
        is back in the queue at once, and the worker may get it again: what a page gave back as it
        was closed or left comes first (a reload shows it again, with the same token), what the worker
        released with Release task comes after every other task. Each call is a new showing (`view`).
        """
        request = self.request(name)
        htc = request["HumanTaskConfig"]
        workers = int(htc["NumberOfHumanWorkersPerDataObject"])
        limit = int(htc["TaskTimeLimitInSeconds"])
        max_active = int(htc.get("MaxConcurrentTaskCount") or 1000)
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is None or row["status"] != "InProgress":
                return None
            held = db.execute(
                "SELECT a.object_id, a.token, a.accepted, a.expires, o.line FROM assignments a "
                "JOIN objects o ON o.job = a.job AND o.object_id = a.object_id "
                "WHERE a.job = ? AND a.worker_id = ? AND a.submitted IS NULL AND a.released IS NULL "
                "AND a.expires > ? AND o.status = 'pending' ORDER BY a.object_id LIMIT 1",
                (name, worker_id, now)).fetchone()  # released: gone, even to a caller whose `now` is older
            view = uuid.uuid4().hex
            if held:
                db.execute("UPDATE assignments SET view = ? WHERE token = ?", (view, held["token"]))
                return Task(name, held["object_id"], held["line"], held["token"], held["accepted"], held["expires"],
                            view)
            active = db.execute("SELECT COUNT(*) FROM assignments WHERE job = ? AND submitted IS NULL "
                                "AND expires > ?", (name, now)).fetchone()[0]
            if active >= max_active:
                return None
            room = ("(SELECT COUNT(*) FROM assignments a WHERE a.job = o.job AND a.object_id = o.object_id "
                    "    AND (a.submitted IS NOT NULL OR a.expires > ?)) < ? ")
            unseen = ("SELECT o.object_id, o.line, NULL AS token FROM objects o WHERE o.job = ? "
                      "AND o.status = 'pending' AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.job = o.job "
                      "    AND a.object_id = o.object_id AND a.worker_id = ?) "
                      "AND " + room + "ORDER BY o.object_id LIMIT 1")
            released = ("SELECT o.object_id, o.line, mine.token FROM assignments mine JOIN objects o "
                        "ON o.job = mine.job AND o.object_id = mine.object_id WHERE mine.job = ? "
                        "AND mine.worker_id = ? AND mine.released = ? AND o.status = 'pending' "
                        "AND " + room + "ORDER BY o.object_id LIMIT 1")
            free = (db.execute(released, (name, worker_id, "page", now, workers)).fetchone()
                    or db.execute(unseen, (name, worker_id, now, workers)).fetchone()
                    or db.execute(released, (name, worker_id, "worker", now, workers)).fetchone())
            if free is None:
                return None
            if free["token"] is not None:  # a task this worker released: theirs again, same token
                token = free["token"]
                db.execute("UPDATE assignments SET accepted = ?, expires = ?, released = NULL, view = ? "
                           "WHERE token = ?", (now, now + limit, view, token))
            else:
                token = uuid.uuid4().hex
                db.execute("INSERT INTO assignments (job, object_id, worker_id, token, accepted, expires, view) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (name, free["object_id"], worker_id, token, now, now + limit, view))
            return Task(name, free["object_id"], free["line"], token, now, now + limit, view)

    def release_task(self, name: str, token: str, worker_id: str, now: float, view: str | None = None,
                     by: str = "worker") -> str:
        """Give the worker's task back to the queue at once, as Ground Truth's Release task does.

        Only the worker who holds the task may; `view` (a page's release as it is left) releases
        only while no newer page of that worker shows the task (a reload asks for it before the old
        page is gone). Returns what happened: "released", or, changing nothing, "already released",
        "answered", "expired" (already back in the queue) or "shown again" (a newer page has it).
        """
        if by not in RELEASED_BY:
            raise ValueError(f"released by {by!r}: not one of {RELEASED_BY}")
        with self._tx() as db:
            a = db.execute("SELECT * FROM assignments WHERE token = ? AND job = ?", (token, name)).fetchone()
            if a is None:
                raise ResourceNotFound("no such task; it may have been given out again")
            if a["worker_id"] != worker_id:
                raise AccessDenied("this task is held by another worker; only they can release it")
            if a["submitted"] is not None:
                return "answered"
            if a["released"] is not None:
                return "already released"
            if a["expires"] <= now:
                return "expired"
            if view is not None and a["view"] != view:
                return "shown again"
            # expires <= now: every query that counts live tasks sees it as lapsed, and a restart too.
            db.execute("UPDATE assignments SET released = ?, expires = MIN(expires, ?) WHERE token = ?",
                       (by, now, token))
            return "released"

    def held_elsewhere(self, name: str, worker_id: str, now: float) -> tuple[int, float | None]:
        """Objects this worker could still get that other workers hold now: how many, and when the
        first of those tasks comes back to the queue unless it is answered."""
        row = self._db.execute(
            "SELECT COUNT(DISTINCT a.object_id), MIN(a.expires) FROM assignments a JOIN objects o "
            "ON o.job = a.job AND o.object_id = a.object_id WHERE a.job = ? AND a.worker_id != ? "
            "AND a.submitted IS NULL AND a.expires > ? AND o.status = 'pending' "
            "AND NOT EXISTS (SELECT 1 FROM assignments m WHERE m.job = a.job AND m.object_id = a.object_id "
            "    AND m.worker_id = ? AND m.released IS NULL)", (name, worker_id, now, worker_id)).fetchone()
        return int(row[0]), row[1]

    def submit(self, token: str, answer: Mapping[str, Any], now: float,
               job_name: str | None = None) -> tuple[str, int, bool]:
        """Record an answer; returns (job, object id, whether the object now has all its answers).
        `job_name`: the job the answer was sent to, when known (a token of another job is none of it)."""
        with self._tx() as db:
            a = db.execute("SELECT * FROM assignments WHERE token = ?", (token,)).fetchone()
            if a is None or job_name is not None and a["job"] != job_name:
                raise ResourceNotFound("no such task; it may have been reassigned")
            if a["submitted"] is not None:
                raise TaskGone("this task was already submitted")
            job = db.execute("SELECT status, request FROM jobs WHERE name = ?", (a["job"],)).fetchone()
            workers = json.loads(job["request"])["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"]
            if a["released"] is not None:
                # Released (say by a second tab of the worker's, closed) yet answered: take the answer
                # while the object still has room for it, as if the worker had taken the task again.
                room = db.execute(
                    "SELECT o.status = 'pending' AND (SELECT COUNT(*) FROM assignments a WHERE a.job = o.job "
                    "AND a.object_id = o.object_id AND (a.submitted IS NOT NULL OR a.expires > ?)) < ? "
                    "FROM objects o WHERE o.job = ? AND o.object_id = ?",
                    (now, int(workers), a["job"], a["object_id"])).fetchone()[0]
                if not room:
                    raise TaskGone("this task was released and another worker has taken it")
            elif a["expires"] <= now:
                raise TaskGone("the time limit for this task has passed; it went back to the queue")
            if job["status"] != "InProgress":
                raise TaskGone(f"the job is {job['status']}; it takes no more answers")
            status = db.execute("SELECT status FROM objects WHERE job = ? AND object_id = ?",
                                (a["job"], a["object_id"])).fetchone()["status"]
            if status != "pending":  # finished without it: its job's time ran out while the task was held
                raise TaskGone("this data object is no longer taking answers: its job's task availability ended")
            db.execute("UPDATE assignments SET submitted = ?, answer = ?, released = NULL WHERE token = ?",
                       (now, json.dumps(answer, sort_keys=True), token))
            done = db.execute("SELECT COUNT(*) FROM assignments WHERE job = ? AND object_id = ? "
                              "AND submitted IS NOT NULL", (a["job"], a["object_id"])).fetchone()[0]
            return a["job"], a["object_id"], done >= int(workers)

    def answers(self, name: str, object_id: int) -> list[sqlite3.Row]:
        return list(self._db.execute(
            "SELECT worker_id, accepted, submitted, answer FROM assignments WHERE job = ? AND object_id = ? "
            "AND submitted IS NOT NULL ORDER BY submitted, worker_id", (name, object_id)))

    def object_line(self, name: str, object_id: int) -> str:
        row = self._db.execute("SELECT line FROM objects WHERE job = ? AND object_id = ?",
                               (name, object_id)).fetchone()
        if row is None:
            raise ResourceNotFound(f"job {name!r} has no data object {object_id}")
        return str(row["line"])

    def claim(self, name: str, object_id: int) -> bool:
        """Take a pending object for consolidation; False when another thread already has it."""
        with self._tx() as db:
            cur = db.execute("UPDATE objects SET status = 'finishing' WHERE job = ? AND object_id = ? "
                             "AND status = 'pending'", (name, object_id))
            return cur.rowcount == 1

    def unfinished(self, name: str, object_id: int) -> bool:
        """Whether the object is still to be finished: pending, or claimed by a thread finishing it."""
        row = self._db.execute("SELECT status FROM objects WHERE job = ? AND object_id = ?", (name, object_id)).fetchone()
        return row is not None and row["status"] in ("pending", "finishing")

    def release(self, name: str, object_id: int) -> None:
        """Give a claimed object back (its consolidation failed); it is retried later."""
        with self._tx() as db:
            db.execute("UPDATE objects SET status = 'pending' WHERE job = ? AND object_id = ? "
                       "AND status = 'finishing'", (name, object_id))

    def release_all(self) -> None:
        """After a restart: objects caught mid-consolidation go back to pending."""
        with self._tx() as db:
            db.execute("UPDATE objects SET status = 'pending' WHERE status = 'finishing'")

    def finish_object(self, name: str, object_id: int, status: str, output: str,
                      learnt: Learnt | None = None) -> bool:
        """Mark a claimed object labeled or failed with its output line, and add what it taught the
        job of its workers and classes (`learnt`, text classification) to the job's record, at once."""
        with self._tx() as db:
            cur = db.execute("UPDATE objects SET status = ?, output = ? WHERE job = ? AND object_id = ? "
                             "AND status = 'finishing'", (status, output, name, object_id))
            if cur.rowcount != 1:
                return False
            if learnt is not None:
                db.executemany('INSERT INTO worker_records VALUES (?, ?, 1, ?) ON CONFLICT (job, worker_id) '
                               'DO UPDATE SET answered = answered + 1, correct = correct + excluded.correct',
                               [(name, worker, p) for worker, p in learnt.correct.items()])
                db.executemany("INSERT INTO class_records VALUES (?, ?, ?) ON CONFLICT (job, class_index) "
                               "DO UPDATE SET weight = weight + excluded.weight",
                               [(name, k, weight) for k, weight in enumerate(learnt.classes)])
            return True

    def job_record(self, name: str, worker_ids: Iterable[str]) -> JobRecord:
        """What the job's finished objects say of these workers and of its classes (JobRecord)."""
        ids = sorted(set(worker_ids))
        marks = ", ".join("?" * len(ids))
        rows = self._db.execute("SELECT worker_id, answered, correct FROM worker_records WHERE job = ? "
                                f"AND worker_id IN ({marks})", (name, *ids))
        workers = {r["worker_id"]: WorkerRecord(r["answered"], r["correct"]) for r in rows}
        weights = dict(self._db.execute("SELECT class_index, weight FROM class_records WHERE job = ?", (name,)))
        classes = [weights.get(k, 0.0) for k in range(max(weights, default=-1) + 1)]
        return JobRecord(workers, tuple(classes))

    def has_pending(self, name: str) -> bool:
        return bool(self._db.execute("SELECT EXISTS (SELECT 1 FROM objects WHERE job = ? AND status IN "
                                     "('pending', 'finishing'))", (name,)).fetchone()[0])

    def job_state(self, name: str) -> tuple[str, float] | None:
        row = self._db.execute("SELECT status, created FROM jobs WHERE name = ?", (name,)).fetchone()
        return (row["status"], row["created"]) if row else None

    def unfinished_with_answers(self, name: str, workers: int | None = None) -> list[int]:
        """Pending objects with answers: all of them (`workers` None) or those with `workers` answers."""
        sql = ("SELECT o.object_id, COUNT(a.submitted) AS n FROM objects o JOIN assignments a "
               "ON a.job = o.job AND a.object_id = o.object_id AND a.submitted IS NOT NULL "
               "WHERE o.job = ? AND o.status = 'pending' GROUP BY o.object_id ORDER BY o.object_id")
        return [r["object_id"] for r in self._db.execute(sql, (name,)) if workers is None or r["n"] >= workers]

    def pending_objects(self, name: str) -> list[int]:
        return [r[0] for r in self._db.execute(
            "SELECT object_id FROM objects WHERE job = ? AND status = 'pending' ORDER BY object_id", (name,))]

    def outputs(self, name: str) -> Iterator[str]:
        """Output-manifest lines, one per data object in manifest order: a finished object's output
        line, an unfinished one's input line unchanged (as in Ground Truth's intermediate manifest),
        so line N is always datasetObjectId N."""
        for row in self._db.execute("SELECT COALESCE(output, line) FROM objects WHERE job = ? "
                                    "ORDER BY object_id", (name,)):
            yield row[0]

    def worker_counts(self, name: str, worker_id: str) -> dict[str, int]:
        mine = self._db.execute("SELECT COUNT(*) FROM assignments WHERE job = ? AND worker_id = ? "
                                "AND submitted IS NOT NULL", (name, worker_id)).fetchone()[0]
        c = self.counters(name)
        total = sum(c[k] for k in ("TotalLabeled", "FailedNonRetryableError", "Unlabeled"))
        return {"mine": mine, "labeled": c["TotalLabeled"], "total": total}
