"""The local labeling service's behaviour: jobs move like Ground Truth's, and write its output layout.

Status: Initializing (manifest read) -> InProgress (workers get tasks) -> Completed (every object
labeled or failed), or Stopping -> Stopped after StopLabelingJob. When an object has all its answers,
the worker responses, the consolidation request and response, and its output line are written; the
output manifest is written when the job ends. Every file is written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.build.template import fill_job_values, gt_environment, parse_template, render_task, task_input
from runner.errors import GtrunError, StoreError
from runner.io.store import LocalStore, Store, split_uri
from runner.schema import TaskType
from runner.service import layout
from runner.service.consolidate import (
    Answer,
    ConsolidationError,
    Learnt,
    consolidate,
    consolidate_in_job,
    failed_metadata,
)
from runner.service.store import JobStore, ResourceNotFound, Task, ValidationError

log = logging.getLogger(__name__)

CROWD_ELEMENTS_URL = "https://assets.crowd.aws/crowd-html-elements.js"
LOCAL_ELEMENTS_URL = "/static/crowd-html-elements.js"
ITERATION = 1
ISSUER = "gtrun-local"  # workerMetadata.identityData.issuer of the local service's workers
# An object whose finishing failed for a reason other than its consolidation (its files could not be
# written, say) is tried again by the ticker: RETRY_FIRST_S after, then twice as long each time, up to
# RETRY_MAX_S apart, so that a lasting failure costs a try a minute, not a busy loop.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0

# The built-in Lambda (or UI) names the request carries -> the task type they implement.
LAMBDA_TYPES = {
    "TextMultiClass": TaskType.text_classification,
    "TextMultiClassMultiLabel": TaskType.text_multilabel,
    "BoundingBox": TaskType.bounding_box,
    "NamedEntityRecognition": TaskType.named_entity,
}


def task_type_of(request: Mapping[str, Any]) -> TaskType:
    """What the request's pre-annotation Lambda (or NER UI) makes of it; no Lambda means custom."""
    htc = request["HumanTaskConfig"]
    arn = htc.get("PreHumanTaskLambdaArn") or htc.get("UiConfig", {}).get("HumanTaskUiArn") or ""
    name = arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1].removeprefix("PRE-")
    if arn and name not in LAMBDA_TYPES:
        raise ValidationError(f"gtrun's labeling service does not run the task type of {arn}")
    return LAMBDA_TYPES.get(name, TaskType.custom)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def worker_id(region: str, cookie: str) -> str:
    """A private-workforce worker id, as Ground Truth writes them (`private.<region>.<hex>`)."""
    return f"private.{region}.{cookie}"


@dataclass(frozen=True)
class JobSpec:
    """What the service needs of a job's request, read once."""

    name: str
    request: dict[str, Any]
    task_type: TaskType
    labels: tuple[str, ...]
    label_attribute: str
    output_path: str  # S3OutputPath: the job's files go under <output_path>/<job name>/
    template: Any  # the parsed Liquid template; for a UI ARN (NER), the bundled one with the job's values
    region: str


class Signer:
    """Short-lived read URLs for storage objects (what grant_read_access gives a worker's browser)."""

    def __init__(self, key: bytes, ttl_s: int = 3600) -> None:
        self.key = key
        self.ttl_s = ttl_s

    def _sig(self, path: str, expires: int) -> str:
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, uri: str, now: float | None = None) -> str:
        bucket, key = split_uri(uri)
        path = f"{bucket}/{key}"
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return f"/storage/{quote(path)}?expires={expires}&sig={self._sig(path, expires)}"

    def check(self, path: str, expires: str, sig: str, now: float | None = None) -> bool:
        try:
            when = int(expires)
        except ValueError:
            return False
        fresh = when >= (time.time() if now is None else now)
        return fresh and hmac.compare_digest(self._sig(path, when), sig)


class LabelingJobs:
    """The service: the job store, the storage folder, and what happens as answers arrive."""

    def __init__(self, root: Path | str, storage: Store | None = None) -> None:
        """`root`: the service's own state (jobs, answers, signing key) and, unless `storage` says
        otherwise (an S3Store), the folder that stands in for S3."""
        from runner.io.labeling import store_path

        self.root = Path(root).resolve()
        self.storage: Store = storage or LocalStore(root)
        self.store = JobStore(store_path(self.root))
        self.signer = Signer(self._secret())
        self._lock = threading.RLock()  # job status changes: one thread at a time
        # Objects whose finishing failed, to try again: (job, object id) -> (tries so far, when next).
        self._retries: dict[tuple[str, int], tuple[int, float]] = {}
        self._retries_lock = threading.Lock()
        self._tick_errors: dict[str, str] = {}  # job -> the error its last tick raised (logged once)

    def _secret(self) -> bytes:
        path = self.root / ".gtrun" / "signing-key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(secrets.token_bytes(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_bytes()

    # -- API ---------------------------------------------------------------------------------------
    def create(self, request: dict[str, Any]) -> str:
        self._check_inputs(request)
        return self.store.create_job(request, self.storage)

    def _check_inputs(self, request: Mapping[str, Any]) -> None:
        """What Ground Truth checks before it accepts a job: it can read every input it was given."""
        uris = [request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]]
        ui = request["HumanTaskConfig"]["UiConfig"]
        uris += [ui["UiTemplateS3Uri"]] if "UiTemplateS3Uri" in ui else []
        uris += [request["LabelCategoryConfigS3Uri"]] if request.get("LabelCategoryConfigS3Uri") else []
        for uri in uris:
            try:
                if not self.storage.exists(uri):
                    raise ValidationError(f"cannot read {uri}: no such object")
            except StoreError as exc:
                raise ValidationError(str(exc)) from None
        task_type_of(request)
        split_uri(request["OutputConfig"]["S3OutputPath"])

    def describe(self, name: str) -> dict[str, Any]:
        return self.store.describe_job(name)

    def describe_all(self) -> list[dict[str, Any]]:
        return [self.store.describe_job(r["name"]) for r in self.store.job_rows()]

    def stop(self, name: str) -> None:
        self.store.stop_job(name)
        self.move(name, time.time())  # Stopping: the ticker moves it on if this cannot

    def render_ui_template(self, params: Mapping[str, Any]) -> dict[str, Any]:
        content = params.get("UiTemplate", {}).get("Content")
        if content is None:
            raise ValidationError("gtrun's labeling service renders UiTemplate.Content only")
        try:
            data = json.loads(params["Task"]["Input"])
            html = render_task(parse_template(content, "UiTemplate.Content", self._env()), data)
        except GtrunError as exc:
            return {"RenderedContent": "", "Errors": [{"Code": "TemplateError", "Message": str(exc)}]}
        except ValueError as exc:
            return {"RenderedContent": "", "Errors": [{"Code": "InvalidInput", "Message": str(exc)}]}
        return {"RenderedContent": html, "Errors": []}

    # -- jobs as the service sees them ------------------------------------------------------------
    @functools.lru_cache(maxsize=256)  # noqa: B019 - one service object per process
    def spec(self, name: str) -> JobSpec:
        request = self.store.request(name)
        kind = task_type_of(request)
        labels: tuple[str, ...] = ()
        config: dict[str, Any] = {}
        if request.get("LabelCategoryConfigS3Uri"):
            config = json.loads(self.storage.get_bytes(request["LabelCategoryConfigS3Uri"]))
            labels = tuple(str(x["label"]) for x in config.get("labels", []))
        ui = request["HumanTaskConfig"]["UiConfig"]
        if "UiTemplateS3Uri" in ui:
            text = self.storage.get_bytes(ui["UiTemplateS3Uri"]).decode("utf-8")
            template = parse_template(text.replace(CROWD_ELEMENTS_URL, LOCAL_ELEMENTS_URL),
                                      ui["UiTemplateS3Uri"], self._env())
        else:  # NER through Ground Truth's own UI
            template = self._hosted_ui(request["HumanTaskConfig"], config)
        region = request["HumanTaskConfig"]["WorkteamArn"].split(":")[3] or "us-east-1"
        output = request["OutputConfig"]["S3OutputPath"].rstrip("/")
        return JobSpec(request["LabelingJobName"], request, kind, labels, request["LabelAttributeName"],
                       output, template, region)

    def _hosted_ui(self, htc: Mapping[str, Any], config: Mapping[str, Any]) -> Any:
        """The page in place of Ground Truth's hosted NER UI (HumanTaskUiArn): gtrun's bundled NER
        template with the job's own title (TaskTitle) and instructions, which the hosted UI reads from
        the label category configuration (short and full instructions, HTML; TaskDescription when it
        has none)."""
        from runner.config import TEMPLATES_DIR

        name = "named_entity.liquid"
        text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
        given = config.get("instructions")
        given = given if isinstance(given, Mapping) else {}
        short = str(given.get("shortInstruction") or given.get("fullInstruction") or "")
        full = str(given.get("fullInstruction") or "")
        short = short or html.escape(str(htc.get("TaskDescription") or ""), quote=False)
        values = {"title": str(htc.get("TaskTitle") or ""), "description": str(htc.get("TaskDescription") or ""),
                  "instructions": short}
        text = fill_job_values(text, values, name)
        if full:  # the bundled page's own full instructions are general advice: the job's replace them
            filled = fill_job_values("{{ gtrun.instructions }}", {"instructions": full}, name)
            text = re.sub(r"(<full-instructions\b[^>]*>).*?(</full-instructions>)",
                          lambda m: m.group(1) + filled + m.group(2), text, count=1, flags=re.S)
        return parse_template(text.replace(CROWD_ELEMENTS_URL, LOCAL_ELEMENTS_URL), name, self._env())

    def _env(self) -> Any:
        return gt_environment(grant_read_access=self.signer.url)

    def task_input(self, spec: JobSpec, line: Mapping[str, Any]) -> dict[str, Any]:
        return task_input(spec.task_type, line, list(spec.labels))

    def render(self, spec: JobSpec, task: Task) -> str:
        """The worker's task page body: the job's template rendered for the task's data object."""
        return render_task(spec.template, self.task_input(spec, json.loads(task.line)))

    # -- answers ----------------------------------------------------------------------------------
    def next_task(self, name: str, worker: str, now: float | None = None) -> Task | None:
        now = time.time() if now is None else now
        state = self.store.job_state(name)
        if state is None:
            raise ResourceNotFound(f"Could not find labeling job {name!r}")
        status, created = state
        lifetime = self.spec(name).request["HumanTaskConfig"].get("TaskAvailabilityLifetimeInSeconds")
        if status == "Initializing" or (lifetime is not None and created + float(lifetime) <= now):
            self.move(name, now)  # cheap checks first: a page load must not walk every job
        return self.store.next_task(name, worker, now)

    def submit(self, token: str, answer: Mapping[str, Any], now: float | None = None,
               job: str | None = None) -> tuple[str, int]:
        """Record a worker's answer to the task of `token` (of the job `job`, when given: a token
        is good at its own job only)."""
        now = time.time() if now is None else now
        if not isinstance(answer, Mapping):
            raise ValidationError("the answer must be a JSON object keyed by element name")
        try:  # Python reads NaN, Infinity and 1e400 (inf); JSON, the output files' format, holds none
            json.dumps(answer, allow_nan=False)
        except ValueError:
            raise ValidationError("the answer holds a number JSON cannot hold (NaN, Infinity, or one too "
                                  "large); send finite numbers") from None
        name, object_id, complete = self.store.submit(token, answer, now, job)
        if complete:
            self.finish_object(name, object_id, now)
            if not self.store.has_pending(name):
                self.move(name, now)  # the last object: the job completes now
        return name, object_id

    def release_task(self, name: str, token: str, worker: str, view: str | None = None,
                     now: float | None = None) -> str:
        """Give `worker`'s task back to the queue (Release task, or, with `view`, a page being left);
        what happened, as JobStore.release_task says."""
        now = time.time() if now is None else now
        return self.store.release_task(name, token, worker, now, view, by="worker" if view is None else "page")

    def held_elsewhere(self, name: str, worker: str, now: float | None = None) -> tuple[int, float | None]:
        return self.store.held_elsewhere(name, worker, time.time() if now is None else now)

    def finish_object(self, name: str, object_id: int, now: float) -> bool:
        """Finish one object (`_finish`); False when that failed, for a reason other than its
        consolidation (which fails the object itself): the object stays pending and the ticker tries
        it again later (`retrying`), the error logged once."""
        try:
            finished = self._finish(name, object_id, now)
        except Exception as exc:  # noqa: BLE001 - storage, disk, ...: the next ticks try again
            self._retry_later(name, object_id, now, exc)
            return False
        if not finished and self.store.unfinished(name, object_id):
            return True  # another thread is finishing it: its outcome keeps or drops the object's retry state
        with self._retries_lock:  # finished, here or elsewhere
            tried = self._retries.pop((name, object_id), None)
        if tried is not None and finished:
            log.warning("job %s: object %s finished after %d failed tries", name, object_id, tried[0])
        return True

    def _retry_later(self, name: str, object_id: int, now: float, exc: Exception) -> None:
        with self._retries_lock:
            tries = self._retries.get((name, object_id), (0, now))[0] + 1
            self._retries[(name, object_id)] = (tries, now + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (tries - 1)))
        if tries == 1:
            log.error("job %s: object %s could not be finished: %s; it is tried again until it is "
                      "(at most %g s apart)", name, object_id, exc, RETRY_MAX_S, exc_info=exc)

    def retrying(self, name: str) -> dict[int, tuple[int, float]]:
        """The job's objects whose finishing failed: object id -> (tries so far, when it is tried next)."""
        with self._retries_lock:
            return {obj: state for (job, obj), state in self._retries.items() if job == name}

    def _waiting(self, name: str, object_id: int, now: float) -> bool:
        """Whether the object failed to finish and is not yet due to be tried again."""
        with self._retries_lock:
            state = self._retries.get((name, object_id))
        return state is not None and state[1] > now

    def _finish(self, name: str, object_id: int, now: float) -> bool:
        """Consolidate one object's answers and write Ground Truth's files for it (once: the object
        is claimed first, so a request and the ticker never both finish it); False when it was not
        pending."""
        if not self.store.claim(name, object_id):
            return False
        try:
            spec = self.spec(name)
            rows = self.store.answers(name, object_id)
            line = json.loads(self.store.object_line(name, object_id))
            if not rows:
                reason = "ClientError: The task was not completed before TaskAvailabilityLifetimeInSeconds"
                output = layout.output_line(line, failed_metadata(spec.label_attribute, reason))
                self.store.finish_object(name, object_id, "failed", output)
                return True
            answers = [Answer(worker_id=r["worker_id"], content=json.loads(r["answer"]),
                              submission_time=utc(r["submitted"]), acceptance_time=utc(r["accepted"]),
                              time_spent_s=round(r["submitted"] - r["accepted"], 3),
                              sub=r["worker_id"].rsplit(".", 1)[-1], issuer=ISSUER) for r in rows]
            when = utc(now)
            response_uri = layout.worker_response_key(spec.output_path, name, ITERATION, object_id, when)
            self.storage.put_bytes(response_uri, _json(layout.worker_response_record(answers)))
            learnt: Learnt | None = None
            try:
                if spec.task_type is TaskType.text_classification:  # weighed by the job's record so far
                    record = self.store.job_record(name, (a.worker_id for a in answers))
                    content, learnt = consolidate_in_job(label_attribute=spec.label_attribute, labels=spec.labels,
                                                         job_name=name, answers=answers, now=when, record=record)
                else:
                    content = consolidate(spec.task_type, label_attribute=spec.label_attribute, labels=spec.labels,
                                          job_name=name, answers=answers, now=when, worker_response_ref=response_uri)
            except ConsolidationError as exc:  # as Ground Truth does when consolidation fails: the object fails
                log.warning("job %s: object %s failed consolidation: %s", name, object_id, exc)
                reason = f"ClientError: Annotation consolidation failed: {exc}"
                output = layout.output_line(line, failed_metadata(spec.label_attribute, reason))
                self.store.finish_object(name, object_id, "failed", output)
                return True
            seq = object_id  # several objects can finish within one second: keep their files apart
            self.storage.put_bytes(layout.consolidation_request_key(spec.output_path, name, ITERATION, when, seq),
                                   _json(layout.consolidation_request([(str(object_id), line, answers)])))
            self.storage.put_bytes(layout.consolidation_response_key(spec.output_path, name, ITERATION, when, seq),
                                   _json(layout.consolidation_response([(str(object_id), content)])))
            self.store.finish_object(name, object_id, "labeled", layout.output_line(line, content), learnt)
            return True
        except BaseException:
            self.store.release(name, object_id)
            raise

    def recover(self, now: float | None = None) -> None:
        """After a restart: finish what was interrupted, then move every job along."""
        self.store.release_all()
        self.tick(now, recover=True)

    def tick(self, now: float | None = None, recover: bool = False) -> None:
        """Move every job along: start, expire, stop, complete. A job whose tick fails (its output
        manifest cannot be written, say) does not hold up the others; its error is logged once
        while it lasts, and the next ticks try again."""
        now = time.time() if now is None else now
        for row in self.store.job_rows():
            if row["status"] in ("Initializing", "InProgress", "Stopping"):
                self.move(row["name"], now, recover)

    def move(self, name: str, now: float, recover: bool = False) -> bool:
        """`tick_job`, its failure logged (once while the same error lasts) rather than raised: the
        caller (the ticker, a request) goes on, and the next tick tries again. Whether it went."""
        try:
            self.tick_job(name, now, recover)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            with self._retries_lock:
                again = self._tick_errors.get(name) == str(exc)
                self._tick_errors[name] = str(exc)
            if not again:
                log.error("job %s: could not move the job along: %s; tried again on every tick",
                          name, exc, exc_info=exc)
            return False
        with self._retries_lock:
            self._tick_errors.pop(name, None)
        return True

    def tick_job(self, name: str, now: float, recover: bool = False) -> None:
        with self._lock:
            state = self.store.job_state(name)
            if state is None:
                return
            status, created = state
            if status == "Initializing":
                self.store.set_status(name, "InProgress", now)
                status = "InProgress"
            if status not in ("InProgress", "Stopping"):
                return
            spec = self.spec(name)
            for object_id in self.retrying(name):  # objects whose finishing failed, when due
                if not self._waiting(name, object_id, now):
                    self.finish_object(name, object_id, now)
            if recover:
                workers = int(spec.request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"])
                for object_id in self.store.unfinished_with_answers(name, workers):
                    self.finish_object(name, object_id, now)
            lifetime = spec.request["HumanTaskConfig"].get("TaskAvailabilityLifetimeInSeconds")
            expired = lifetime is not None and created + float(lifetime) <= now
            if status == "Stopping" or expired:
                for object_id in self.store.unfinished_with_answers(name):
                    if not self._waiting(name, object_id, now):
                        self.finish_object(name, object_id, now)
                if expired:
                    for object_id in self.store.pending_objects(name):
                        if not self._waiting(name, object_id, now):
                            self.finish_object(name, object_id, now)  # no answers: failed
            if self.retrying(name):
                return  # an object is still to be finished: the job ends once it is
            if status == "Stopping" or not self.store.has_pending(name):
                self.write_output(spec)
                self.store.set_status(name, "Stopped" if status == "Stopping" else "Completed", now)

    def write_output(self, spec: JobSpec) -> str:
        """The output manifest: a line for every object, in manifest order (store.outputs)."""
        uri = layout.output_manifest_key(spec.output_path, spec.name)
        with self.storage.open_write(uri) as out:
            for line in self.store.outputs(spec.name):
                out.write(line.encode("utf-8") + b"\n")
        return uri

    def worker_progress(self, name: str, worker: str) -> dict[str, int]:
        return self.store.worker_counts(name, worker)

    def read_object(self, path: str, expires: str, sig: str) -> bytes:
        """The object behind a signed storage URL; refuses bad signatures and keys outside storage."""
        if not self.signer.check(path, expires, sig):
            raise ResourceNotFound("no such object, or the link has expired")
        bucket, _, key = path.partition("/")
        try:
            return self.storage.get_bytes(f"s3://{bucket}/{key}")
        except StoreError:
            raise ResourceNotFound("no such object") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
