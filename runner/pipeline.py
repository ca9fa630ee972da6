"""The pipeline: validated config -> SQL -> manifest -> template -> request -> cost -> submit -> record.

`plan` runs every step that spends nothing (the query is only counted); `run` streams the manifest,
writes the artifacts to storage, submits, and records the run directory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from runner import __version__
from runner.build import price as prices
from runner.build.request import check_settings, job_name, label_category_config, labeling_job_request
from runner.build.sql import Query, check_fields, count_query, render_sql, select_query, unused_params
from runner.build.template import (
    element_problems,
    fill_job_values,
    missing_uses,
    parse_template,
    render_task,
    task_field_problems,
    task_input,
)
from runner.check import validate_request
from runner.config import HOME, TEMPLATES_DIR, relative_to_cwd
from runner.errors import ConfigError, ConfigErrors, ManifestError, RecordError, StoreError, SubmitError, collect_errors
from runner.io.backends import backend_for
from runner.io.store import LocalStore, sha256_file
from runner.schema import BackendConfig, BackendKind, GtrunConfig, TaskType

log = logging.getLogger(__name__)

JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
ARTIFACTS = ("query.sql", "manifest.jsonl", "template.liquid", "label-categories.json", "request.json")


class _AnyValue(dict[str, Any]):
    """A field's value before any row is read: task.input.meta.product is there if meta is (what
    meta holds, the first manifest line's check says)."""

    def __missing__(self, key: str) -> _AnyValue:
        return self


@dataclass
class Outcome:
    """What a plan or a run produced."""

    job_name: str
    query: Query
    objects: int
    cost: prices.CostEstimate
    request: dict[str, Any]
    first_line: dict[str, Any]
    job: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)


def template_path(name: str) -> Path:
    """`template.file` as given (absolute or from the working directory), else under templates/."""
    for candidate in (Path(name).expanduser(), TEMPLATES_DIR / name):
        if candidate.is_file():
            return candidate
    raise ConfigError("template.file", f"{name!r} not found{relative_to_cwd(name)}",
                      f"bundled templates: {', '.join(sorted(p.name for p in TEMPLATES_DIR.glob('*.liquid')))}")


def uris(settings: GtrunConfig, name: str) -> dict[str, str]:
    """Where a job's artifacts live in storage: one folder per job."""
    b = settings.backend
    base = "/".join(p for p in (f"s3://{b.bucket}", b.prefix.strip("/"), name) if p)
    return {"manifest": f"{base}/manifest.jsonl", "template": f"{base}/template.liquid",
            "labels": f"{base}/label-categories.json", "output": f"{base}/output"}


def check_backend(settings: GtrunConfig) -> list[ConfigError]:
    """What a backend needs beyond the config's own rules."""
    problems = []
    if not settings.backend.bucket:
        problems.append(ConfigError("backend.bucket", f"is required on the {settings.backend.kind.value} backend",
                                    "the S3 bucket for manifests, templates, output and Athena's results"
                                    if settings.backend.kind is BackendKind.aws else
                                    "a folder name under backend.root that stands in for the bucket"))
    if settings.backend.kind is BackendKind.local:
        problems += _local_problems(settings.backend)
    problems += _storage_problems(settings.backend)
    if settings.backend.kind is BackendKind.aws:
        problems += _aws_problems(settings.backend)
        if not settings.workteam.arn:
            problems.append(ConfigError("workteam.arn", "is required on the aws backend",
                                        "list your account's workteams with `gtrun workteams backend=aws`"))
        if not settings.backend.role_arn:
            problems.append(ConfigError("backend.role_arn", "is required on the aws backend",
                                        "an IAM role Ground Truth assumes, with read and write access to the bucket"))
    assets = settings.source.assets
    if assets is not None:
        if not assets.to.startswith("s3://"):
            problems.append(ConfigError("source.assets.to", f"{assets.to!r} is not an s3:// prefix",
                                        "the images go to the storage, where the source-refs point: "
                                        f"s3://{settings.backend.bucket}/<prefix>/"))
        if not glob.glob(str(Path(assets.files).expanduser())):
            problems.append(ConfigError("source.assets.files",
                                        f"no file matches {assets.files!r}{relative_to_cwd(assets.files)}"))
    return problems


def _storage_problems(backend: BackendConfig) -> list[ConfigError]:
    """backend.prefix: the S3 key folder every artifact goes under."""
    parts = backend.prefix.strip("/").split("/") if backend.prefix.strip("/") else []
    if any(p in ("", ".", "..") for p in parts):
        return [ConfigError("backend.prefix", f"{backend.prefix!r} is not a key folder: no empty, '.' or '..' part",
                            "e.g. gtrun or team/labeling")]
    return []


def _aws_problems(backend: BackendConfig) -> list[ConfigError]:
    """The aws backend's endpoints and Athena settings, checked before a query is sent."""
    problems = []
    for service in ("s3", "athena", "sagemaker"):
        url = getattr(backend.endpoints, service)
        if url and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
            problems.append(ConfigError(f"backend.endpoints.{service}", f"{url!r} is not an http(s) URL"))
    athena = backend.athena
    location = athena.output_location
    if location is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", location):
        problems.append(ConfigError("backend.athena.output_location", f"{location!r} is not an s3://bucket/prefix/",
                                    "unset: s3://<bucket>/<prefix>/athena/"))
    for key in ("poll_s", "timeout_s"):
        if not getattr(athena, key) > 0:
            problems.append(ConfigError(f"backend.athena.{key}", f"{getattr(athena, key)} is not a positive number "
                                        "of seconds"))
    if not athena.workgroup.strip():
        problems.append(ConfigError("backend.athena.workgroup", "is empty", "primary is Athena's default"))
    return problems


def _local_problems(backend: BackendConfig) -> list[ConfigError]:
    """The local backend's folder and DuckDB threads, checked before a query runs (DuckDB itself
    judges the memory limit when the source connects: DuckDBSource.open)."""
    problems = []
    threads = backend.duckdb.threads
    if threads is not None and threads < 1:
        problems.append(ConfigError("backend.duckdb.threads", f"{threads} is not 1 or more", "null: one per core"))
    root = Path(backend.root)  # as LocalStore reads it
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if root.exists() and not root.is_dir():
        problems.append(ConfigError("backend.root", f"{root} is a file, not a folder"))
    elif existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        problems.append(ConfigError("backend.root", f"cannot make or write the folder {root}: {existing} "
                                    + ("is a file" if not existing.is_dir() else "is not writable")))
    return problems


def portable(path: str) -> str:
    """A source file's path as recorded: relative to the project when it is the bundled data."""
    p = Path(path).resolve()
    return str(p.relative_to(HOME)) if p.is_relative_to(HOME) else str(p)


def config_hash(resolved: dict[str, Any]) -> str:
    """The sha256 of the resolved config, its fixed job name (job.labeling_job_name) read as unset:
    two jobs of one config differ in it. (Unset, the hash is what runs recorded before this rule got.)

    >>> config_hash({"job": {"labeling_job_name": "a"}}) == config_hash({"job": {"labeling_job_name": None}})
    True
    """
    if isinstance(resolved.get("job"), dict) and resolved["job"].get("labeling_job_name") is not None:
        resolved = {**resolved, "job": {**resolved["job"], "labeling_job_name": None}}
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def normalized_request(request: dict[str, Any], name: str) -> dict[str, Any]:
    """The request without what differs between two runs of the same config (its name)."""
    text = json.dumps({k: v for k, v in request.items() if k != "LabelingJobName"}, sort_keys=True)
    out: dict[str, Any] = json.loads(text.replace(name, "<job>"))
    out["Tags"] = [t for t in out.get("Tags", []) if t["Key"] != "gtrun:run"]
    return out


def request_sha256(request: dict[str, Any], name: str) -> str:
    """The hash lineage.json records of the request minus its name (`normalized_request`)."""
    return hashlib.sha256(json.dumps(normalized_request(request, name), sort_keys=True).encode()).hexdigest()


@dataclass
class Written:
    objects: int
    sha256: str
    first_line: dict[str, Any]


class Sink(Protocol):
    """Where stream_manifest writes: a file, an upload, MissingRefs."""

    def write(self, data: bytes, /) -> int: ...
    def seek(self, offset: int, /) -> int: ...
    def truncate(self, size: int | None = ..., /) -> int: ...


def stream_manifest(chunks: Iterable[tuple[Any, int]], sinks: Sequence[Sink],
                    progress: Callable[[int], None] = lambda n: None) -> Written:
    """Stream the manifest's (bytes, rows) chunks into every sink; memory stays flat in the row count.

    A chunk of None (`START_OVER`, from a query run again) voids what came before: the sinks, local
    files then, are emptied and the lines start again from the first.
    """
    objects, digest, head = 0, hashlib.sha256(), b""
    for chunk, rows in chunks:
        if chunk is None:
            for sink in sinks:
                sink.seek(0)
                sink.truncate()
            progress(-objects)
            objects, digest, head = 0, hashlib.sha256(), b""
            continue
        for sink in sinks:
            sink.write(chunk)
        digest.update(chunk)
        if not head:
            head = bytes(chunk[:400_100])  # holds the first line (<= 100,000 characters)
        objects += rows
        progress(rows)
    first = json.loads(head.split(b"\n", 1)[0]) if head else {}
    return Written(objects, digest.hexdigest(), first)


# The crowd element a built-in task type's answers come from (the local service finds its answer by
# the element's name, or by the one answer of that shape: runner.service.consolidate._element).
ANSWER_ELEMENTS = {TaskType.text_classification: "crowd-classifier",
                   TaskType.text_multilabel: "crowd-classifier-multi-select",
                   TaskType.bounding_box: "crowd-bounding-box",
                   TaskType.named_entity: "crowd-entity-annotation"}


@contextlib.contextmanager
def deferred_signals(console: Console) -> Iterator[None]:
    """Hold Ctrl+C (SIGINT) and SIGTERM until the block ends, then act on them: a request the
    service may have carried out is never left unrecorded. A second signal acts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    # a signal the process ignores (SIG_IGN: SIGINT of a job a shell started in the background) stays ignored
    handlers: dict[int, Any] = {sig: handler for sig in (signal.SIGINT, signal.SIGTERM)
                                if (handler := signal.getsignal(sig)) != signal.SIG_IGN}

    def hold(signum: int, frame: Any) -> None:
        if held:
            _act_on(handlers[signum], signum, frame)
        held.append(signum)
        console.print("submitting the job: gtrun stops once it is recorded (again to stop now, unrecorded)")

    for sig in handlers:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if held:
        _act_on(handlers[held[0]], held[0], None)


def _act_on(handler: Any, signum: int, frame: Any) -> None:
    """What the handler `signal.getsignal` gave does with a signal (raise, mostly)."""
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)
        signal.signal(signum, signal.SIG_DFL)  # not `hold`, which would get the signal again, and again
        os.kill(os.getpid(), signum)


class MissingRefs:
    """A manifest sink (stream_manifest's) of the local backend that looks each line's s3://
    source-ref up in the storage folder: a job whose images are not there shows workers none.
    `pending`: the files run would copy to the storage first (source.assets), by URI: plan's.
    `images`: each one found must be an image (a box task's): a browser shows none of another
    file, and its task cannot be answered."""

    def __init__(self, storage: LocalStore, pending: dict[str, Path] | None = None, images: bool = False) -> None:
        self.storage = storage
        self.pending = pending or {}
        self.images = images
        self.lines = self.missing = self.unreadable = 0
        self.first: tuple[int, str, str] | None = None  # (line, source-ref, where it was looked for)
        self.first_unreadable: tuple[int, str, str] | None = None  # (line, source-ref, path: what is wrong)

    def write(self, chunk: bytes) -> int:
        data = bytes(chunk)
        if b'"source-ref"' in data:
            for line in data.splitlines():
                self.lines += 1
                ref = orjson.loads(line).get("source-ref")
                if isinstance(ref, str) and ref.startswith("s3://"):
                    self._look_up(ref)
        else:
            self.lines += data.count(b"\n")
        return len(chunk)

    def _look_up(self, ref: str) -> None:
        try:
            path = self.storage.path(ref)
            where = str(path)
            there = path.is_file() or ref in self.pending
        except StoreError as exc:  # a key the storage cannot hold
            where, there = str(exc), False
        if not there:
            self.missing += 1
            if self.first is None:
                self.first = (self.lines, ref, where)
        elif self.images:
            path = path if path.is_file() else self.pending[ref]
            problem = not_an_image(path)
            if problem is not None:
                self.unreadable += 1
                if self.first_unreadable is None:
                    self.first_unreadable = (self.lines, ref, f"{path}: {problem}")

    def seek(self, offset: int) -> int:  # START_OVER: the lines start again from the first
        self.lines = self.missing = self.unreadable = 0
        self.first = self.first_unreadable = None
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0

    def check(self, objects: int) -> None:
        """Raise when a line names an object that is not in the storage, or (`images`) a file that
        is not an image: each kind counted, its first line named."""
        problems = []
        if self.first is not None:
            line, ref, where = self.first
            problems.append(ConfigError(
                "source.columns.source-ref", f"{self.missing:,} of {objects:,} manifest lines name an object that "
                f"is not in the storage, so workers would see nothing (line {line:,}: {ref}, looked for at {where})",
                "check the source-ref column and its params (an image prefix, say), and source.assets, which "
                "copies the images into the storage"))
        if self.first_unreadable is not None:
            line, ref, what = self.first_unreadable
            problems.append(ConfigError(
                "source.columns.source-ref", f"{self.unreadable:,} of {objects:,} manifest lines name a file that "
                f"is not an image a browser can show, so workers could not box it (line {line:,}: {ref}, read at "
                f"{what})", "give the job JPEG or PNG images (Ground Truth's formats for boxes), or leave these "
                "rows out of the query"))
        collect_errors(problems)


def not_an_image(path: Path) -> str | None:
    """What keeps `path` from being read as an image (its header is read, not its pixels), or None."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                return None
    except Image.DecompressionBombError:  # an image, if a very large one: a browser may still show it
        return None
    except UnidentifiedImageError:
        return "no image format recognised" if path.stat().st_size else "the file is empty"
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__


class Pipeline:
    def __init__(self, settings: GtrunConfig, resolved: dict[str, Any], *, now: datetime,
                 console: Console | None = None, recorded: bool = False) -> None:
        """`recorded`: the settings are a recorded run's (reproduce, continue), which checks made
        since then may refuse: those are warnings."""
        self.s = settings
        self.recorded = recorded
        self.resolved = resolved
        self.now = now
        self.console = console or Console(stderr=True)
        self.run_id = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"  # the lineage tag: unique per run
        self.name = settings.job.labeling_job_name or job_name(settings.source.name, now, self.run_id[-4:])
        self.uris = uris(settings, self.name)
        self.backend = backend_for(settings)
        self.storage = self.backend.storage
        self.service_url: str | None = None  # the running labeling service that took the job
        self.submitting = False  # CreateLabelingJob has been asked for

    # -- steps that spend nothing --------------------------------------------------------------
    def validate(self) -> tuple[str, Any]:
        """Every config rule at once, then the template's syntax. Returns (template text, parsed)."""
        problems = check_settings(self.s) + check_backend(self.s)
        if self.s.job.labeling_job_name and not JOB_NAME.fullmatch(self.s.job.labeling_job_name):
            problems.append(ConfigError("job.labeling_job_name", f"{self.s.job.labeling_job_name!r} is not a "
                                        "Ground Truth job name", "1-63 letters, digits and hyphens, starting and "
                                        "ending with a letter or digit: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"))
        try:
            path = template_path(self.s.template.file)
        except ConfigError as exc:
            problems.append(exc)
            path = None
        problems += self.check_transforms()
        problems += self.check_source()
        collect_errors(problems)
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("template.file", f"{path} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError("template.file", f"cannot read {path}: {exc.strerror}") from None
        t = self.s.template
        values = {"title": t.title, "description": t.description, "instructions": t.instructions}
        # Checked with each value on one line, so that every error names the line of the file: a
        # template.instructions of several lines would move the lines below it. The values are
        # inert to Liquid (fill_job_values), so the checks are the same on the text recorded.
        checked = fill_job_values(text, {k: v and " ".join(v.splitlines()) for k, v in values.items()}, str(path))
        parsed = parse_template(checked, str(path))
        text = fill_job_values(text, values, str(path))
        if "<crowd-form" not in text.lower():
            raise ConfigError("template.file", f"{path} has no <crowd-form> element: workers would have nothing "
                              "to submit their answers with", "wrap the task in <crowd-form> ... </crowd-form>")
        element = ANSWER_ELEMENTS.get(t.task_type)
        if element is not None and not re.search(rf"<{element}(?![\w-])", text, re.IGNORECASE):
            raise ConfigError("template.file", f"{path} has no <{element}> element: a {t.task_type.value} job's "
                              "answers come from it, so every object would fail to consolidate",
                              f"use the bundled template/{t.task_type.value}, or set template.task_type=custom "
                              "for a task of your own")
        collect_errors([ConfigError("template.file", problem) for problem in element_problems(checked, str(path))])
        return text, parsed

    def check_transforms(self) -> list[ConfigError]:
        """The transforms config's problems, found now rather than at collect, once the job is labeled."""
        from runner.collect.transforms import athena_table_problem, check_transforms

        t = self.s.transforms
        problems: list[ConfigError] = []
        try:
            check_transforms(t.steps, t, labels=self.s.template.labels, task_type=self.s.template.task_type,
                             packages=False)  # only collect needs them
        except ConfigErrors as exc:
            problems += exc.errors
        except ConfigError as exc:
            problems.append(exc)
        athena = athena_table_problem(t.steps) if self.s.backend.kind is BackendKind.aws else None
        return problems + ([athena] if athena is not None else [])

    def check_source(self) -> list[ConfigError]:
        """The source query's problems that need no data: its SQL and params (each one set must be
        used), and, when the SELECT names its output fields, whether they carry what the task type
        reads. A `*` query's fields are checked once the source knows them (check_fields_used)."""
        try:
            query = select_query(self.s.source, self.backend.dialect)
        except ConfigErrors as exc:
            return list(exc.errors)
        except ConfigError as exc:
            return [exc]
        problems = unused_params(self.s.source.params, query.param_names,
                                 "source.sql" if self.s.source.sql else "source.where")
        if self.recorded:  # recorded before gtrun refused them: said, not refused
            for problem in problems:
                self.console.print(Text.assemble(("warning:", "yellow"), f" {problem.key}: {problem.problem}"))
            problems = []
        if query.fields is None:
            return problems
        return problems + task_field_problems(self.s.template.task_type, query.fields, self._fields_origin())

    def _fields_origin(self) -> str:
        return "source.sql" if self.s.source.sql else "source.columns"

    def request(self) -> dict[str, Any]:
        role, team = self.backend.role_arn(), self.backend.workteam_arn()
        labels = label_category_config(self.s.template.labels, self.s.template.task_type,
                                       self.s.template.instructions)
        tags = {"gtrun:config": config_hash(self.resolved)[:32], "gtrun:run": self.run_id,
                "gtrun:dataset": self.s.source.name, "gtrun:version": __version__}
        request = labeling_job_request(
            self.s, job_name=self.name, manifest_uri=self.uris["manifest"],
            template_uri=self.uris["template"], label_config_uri=self.uris["labels"] if labels else None,
            output_uri=self.uris["output"], role_arn=role, workteam_arn=team, tags=tags)
        validate_request(request)
        return request

    def estimate(self, objects: int) -> prices.CostEstimate:
        p = self.s.pricing
        cost = prices.estimate_cost(objects, self.s.workteam.workers_per_object,
                                    prices.parse_usd(p.usd_per_task, "pricing.usd_per_task"),
                                    prices.parse_usd(p.usd_per_object_fee, "pricing.usd_per_object_fee")
                                    or Decimal(0))
        return cost

    def guard_budget(self, cost: prices.CostEstimate) -> None:
        limit = prices.parse_usd(self.s.pricing.max_usd, "pricing.max_usd")
        if limit is not None and cost.total_usd > limit:
            raise ConfigError("pricing.max_usd", f"the job would cost ${cost.total_usd} "
                              f"({cost.objects} objects), more than the ${limit} budget",
                              "raise pricing.max_usd, or select fewer rows (source.limit, source.where)")

    def check_template(self, parsed: Any, line: dict[str, Any], key_hint: str) -> str:
        ti = task_input(self.s.template.task_type, line, self.s.template.labels)
        missing = missing_uses(parsed, ti)
        if missing:
            raise ConfigError("template.file", f"{self.s.template.file} uses {missing}, "
                              f"which {key_hint} does not provide",
                              f"task.input holds: {', '.join(sorted(ti))}")
        return render_task(parsed, ti)

    def open_source(self) -> tuple[Any, Query, list[str]]:
        query = select_query(self.s.source, self.backend.dialect)
        self.backend.check_storage()  # before a query is paid for
        src = self.backend.open_source()
        try:
            fields = list(query.fields or src.output_fields(query))
            if query.fields is None:
                check_fields(fields, "source.sql")
        except BaseException:
            src.close()
            raise
        return src, query, fields

    def plan(self) -> Outcome:
        _, parsed = self.validate()
        request = self.request()  # checked before a query Athena bills for runs
        src, query, fields = self.open_source()
        line: dict[str, Any] = {}
        try:
            self.check_fields_used(parsed, fields)
            if self.backend.kind == "local":  # free here: every row is checked as run checks it
                refs = self.missing_refs({uri: Path(f).absolute() for uri, f in self.asset_files()})
                written = stream_manifest(self.backend.lines(src, query, fields), [refs] if refs else [])
                objects, line = written.objects, written.first_line
                if refs is not None and objects:
                    refs.check(objects)
            else:  # Athena's scans cost money: a plan runs only the count
                objects = src.count(count_query(query, self.backend.dialect))
            if objects == 0:
                raise ManifestError(self._empty())
        finally:
            src.close()
        if line:
            self.check_template(parsed, line, "the manifest line")
        cost = self.estimate(objects)
        self.guard_budget(cost)  # what run would refuse, plan says
        return Outcome(self.name, query, objects, cost, request, line)

    def check_fields_used(self, parsed: Any, fields: Sequence[str]) -> None:
        """Before any row is read: the template may only read fields the manifest lines will have,
        and collect can split by transforms.split.key only if it is one of them."""
        fit = task_field_problems(self.s.template.task_type, fields, self._fields_origin())
        problems = list(fit)
        key = self.s.transforms.split.key
        if key is not None and key not in fields:
            problems.append(ConfigError("transforms.split.key", f"{key!r} is not a field of the manifest "
                                        f"({', '.join(fields)})", "name the field whose value identifies an "
                                        "object (a job preset sets one for its own data), or split by object id: "
                                        "transforms.split.key=null"))
        if not fit:  # a built-in type's task.input is built from the field it reads
            ti = task_input(self.s.template.task_type, {f: _AnyValue() for f in fields}, self.s.template.labels)
            missing = missing_uses(parsed, ti)
            if missing:
                problems.append(ConfigError("template.file", f"{self.s.template.file} uses {missing}, "
                                            f"which the query does not provide",
                                            f"the manifest has: {', '.join(fields)} (from {self._fields_origin()})"))
        collect_errors(problems)

    def preview_inputs(self, rows: int) -> tuple[list[dict[str, Any]], str]:
        """`task.input` for the first rows, and the template text: what `gtrun preview` renders."""
        text, parsed = self.validate()
        src, query, _ = self.open_source()
        self.upload_assets()  # the images the rows point at, so the page can show them
        try:
            _, found = src.rows(query, rows)
        finally:
            src.close()
        if not found:
            raise ManifestError(self._empty())
        inputs = []
        for row in found:
            line = json.loads(json.dumps(row, default=str))
            self.check_template(parsed, line, "the manifest line")
            inputs.append(task_input(self.s.template.task_type, line, self.s.template.labels))
        return inputs, text

    def _empty(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.s.source.params.items())
        return f"source: the query returned no rows{f' (params: {params})' if params else ''}"

    # -- run ----------------------------------------------------------------------------------
    def run(self, run_dir: Path, continued: tuple[str, Iterable[bytes]] | None = None,
            before_submit: Callable[[dict[str, Any]], None] | None = None,
            before_upload: Callable[[dict[str, str]], None] | None = None) -> Outcome:
        """Run the job. `continued`: (the run it continues, the manifest lines still to label)
        instead of the source query. `before_submit` gets the run's lineage once every artifact is
        written, before CreateLabelingJob, and may raise to stop the run there; `before_upload`
        gets the source.assets files' hashes before they are copied (upload_assets)."""
        text, parsed = self.validate()
        request = self.request()  # checked before a query Athena bills for runs
        if continued is None:
            src, query, fields = self.open_source()
            chunks: Iterable[tuple[Any, int]] = self.backend.lines(src, query, fields)
            sql = render_sql(query)
        else:
            src, query = None, select_query(self.s.source, self.backend.dialect)
            lines = iter(continued[1])
            head = next(lines, None)
            if head is None:
                raise ManifestError(f"{continued[0]}: every object is labeled; nothing to continue")
            fields = list(json.loads(head))
            chunks = ((line, 1) for line in itertools.chain([head], lines))
            sql = f"-- continues {continued[0]}: the objects its job did not label\n" + render_sql(query)
        stored: list[str] = []  # the job's inputs written to storage, until it is submitted
        try:
            self.check_fields_used(parsed, fields)
            record = Record(run_dir)
            record.write_text("query.sql", sql)
            log.info("job %s: query built (%s fields: %s)", self.name, len(fields), ", ".join(fields))
            with self.backend.labeling() as service:
                # nothing is written to storage under a name another job has: its inputs are there
                taken = service.find_labeling_job(self.name)
                if taken is not None:
                    other = taken.get("LabelingJobName", self.name)
                    case = "" if other == self.name else f", the same name as {self.name!r} (case does not tell names apart)"
                    raise ConfigError("job.labeling_job_name", f"a labeling job named {other!r} exists already "
                                      f"({taken.get('LabelingJobStatus')}){case}; Ground Truth names are unique per "
                                      "account and region", "leave job.labeling_job_name unset for a new name")
                assets = self.upload_assets(before_upload)
                # the job's own inputs, removed unless it is made (an object not written yet: nothing to remove)
                stored.extend(self.uris[k] for k in ("manifest", "template", "labels"))
                refs = self.missing_refs()
                with self.storage.open_write(self.uris["manifest"]) as out, \
                        record.open("manifest.jsonl") as local, self._progress() as bump:
                    sinks: list[Sink] = [out, local, *([refs] if refs else [])]
                    written = stream_manifest(chunks, sinks, bump)
                    objects = written.objects
                    if objects == 0:
                        raise ManifestError(self._empty())
                    if refs is not None:
                        refs.check(objects)
                    first = written.first_line
                    self.check_template(parsed, first, "the manifest line")
                    cost = self.estimate(objects)
                    self.guard_budget(cost)
                record.hashes["manifest.jsonl"] = written.sha256
                log.info("manifest: %s objects -> %s (sha256 %s)", objects, self.uris["manifest"], written.sha256)
                labels = label_category_config(self.s.template.labels, self.s.template.task_type,
                                               self.s.template.instructions)
                self.storage.put_bytes(self.uris["template"], text.encode("utf-8"))
                record.write_text("template.liquid", text)
                if labels:
                    body = json.dumps(labels, indent=2, sort_keys=True) + "\n"
                    self.storage.put_bytes(self.uris["labels"], body.encode())
                    record.write_text("label-categories.json", body)
                record.write_json("request.json", request)
                lineage = self.lineage(objects, request, record, continues=continued[0] if continued else None)
                if self.s.source.assets is not None:
                    lineage["asset_files"] = assets
                if before_submit is not None:
                    before_submit(lineage)
                with deferred_signals(self.console):  # a job made must be recorded: Ctrl+C waits for it
                    self.submitting = True
                    try:
                        job = {"LabelingJobName": self.name, **service.create_labeling_job(request)}
                    except SubmitError as exc:
                        self.submitting = not exc.refused  # refused: no job, its inputs are removed
                        raise
                    stored.clear()  # the job exists: its inputs stay
                    record.write_json("job.json", job)  # the job exists: status and stop find it from here on
                    record.write_json("lineage.json", lineage)
                self.service_url = service.endpoint
                job.update(service.describe_labeling_job(self.name))
        finally:
            if src is not None:
                src.close()  # its temporary folder too, whatever stopped the run
            if not self.submitting or self.job_made() is False:  # (a job that may exist keeps them)
                self._unstore(stored)  # a run stopped before its job was made leaves none of its inputs
        record.write_json("job.json", job)
        log.info("submitted %s: %s, estimated $%s", self.name, job.get("LabelingJobStatus"), cost.total_usd)
        return Outcome(self.name, query, objects, cost, request, first, job, dict(record.hashes))

    def job_made(self) -> bool | None:
        """Whether the run's job exists, where that is cheap to tell: in the local backend's job store
        (read only: a CreateLabelingJob cut short rolled back, whichever service ran it); None on aws."""
        if self.s.backend.kind is not BackendKind.local:
            return None
        from runner.io.labeling import store_path
        from runner.service.store import has_job

        return has_job(store_path(Path(self.s.backend.root)), self.name)

    def _unstore(self, uris: Sequence[str]) -> None:
        """Remove these objects of the job's from storage (its name is its own: no other job reads them)."""
        for uri in uris:
            try:
                self.storage.delete(uri)
            except StoreError as exc:
                log.warning("left in storage: %s", exc)

    def upload_assets(self, before_upload: Callable[[dict[str, str]], None] | None = None) -> dict[str, str]:
        """Copy source.assets.files to the storage under source.assets.to, by file name; returns
        their sha256 by portable path (lineage.json's asset_files, which reproduce compares).

        An object that is there already is left as it is when it holds the same bytes; one that
        holds others is refused, every one named, before anything is copied: the jobs that showed
        the image there would show the new one. `before_upload` gets the hashes before anything is
        copied, and may raise to stop there (reproduce: the files must be the recorded ones)."""
        hashes, new, problems = {}, [], []
        first: dict[str, tuple[Path, str]] = {}  # object -> the file copied to it, and its sha256
        for uri, f in self.asset_files(every=True):
            path = Path(f)
            digest = hashes[portable(f)] = sha256_file(path)
            other, other_digest = first.setdefault(uri, (path, digest))
            if other != path:  # two files of one name (images/*/*.png): one object
                if other_digest != digest:
                    problems.append(ConfigError("source.assets.files", f"{other} and {path} both go to {uri} "
                                                "(by file name), and they differ: one would replace the other",
                                                "give the images distinct file names"))
                continue
            if not self.storage.exists(uri):
                new.append((path, uri))
                continue
            there = hashlib.sha256()
            with self.storage.open_read(uri) as src:
                while block := src.read(1 << 20):
                    there.update(block)
            if there.hexdigest() != digest:
                problems.append(ConfigError("source.assets.to", f"{uri} holds another {path.name} than {path} "
                                            f"(sha256 {there.hexdigest()[:12]} there, {digest[:12]} here): the jobs "
                                            "that showed it would show the new one",
                                            "copy changed images under a new prefix (source.assets.to, and the "
                                            "source-refs with it)"))
        collect_errors(problems)
        if before_upload is not None:
            before_upload(hashes)
        for path, uri in new:
            self.storage.put_file(path, uri)
        return hashes

    def missing_refs(self, pending: dict[str, Path] | None = None) -> MissingRefs | None:
        """The check of each manifest line's source-ref in the local storage (images, for a box
        task), `pending` the assets not copied yet; None on S3, where the images are the user's."""
        if not isinstance(self.storage, LocalStore):
            return None
        return MissingRefs(self.storage, pending, images=self.s.template.task_type is TaskType.bounding_box)

    def asset_files(self, every: bool = False) -> list[tuple[str, str]]:
        """(object URI, file as globbed) of each source.assets file, in name order: where
        upload_assets copies it (by file name); `every`: also a second file of a name already
        given (upload_assets compares their bytes)."""
        assets = self.s.source.assets
        if assets is None:
            return []
        files = sorted(glob.glob(str(Path(assets.files).expanduser())))  # some: check_backend says so
        prefix = assets.to if assets.to.endswith("/") else assets.to + "/"
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        for f in files:
            uri = prefix + Path(f).name
            if every or uri not in seen:
                found.append((uri, f))
                seen.add(uri)
        return found

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Any]:
        with Progress(SpinnerColumn(), TextColumn("manifest: {task.completed:,} objects"),
                      TimeElapsedColumn(), console=self.console, transient=True,
                      disable=not self.console.is_terminal) as progress:
            task = progress.add_task("manifest", total=None)
            yield lambda n: progress.advance(task, n)

    def lineage(self, objects: int, request: dict[str, Any], record: Record,
                continues: str | None = None) -> dict[str, Any]:
        """What lineage.json records: the config's and every artifact's hash, the source files'
        fingerprints, and the run this one continues (its manifest came from that run's output)."""
        src_files = {portable(p): h for p, h in self.backend.source_files().items()}
        return {
            "gtrun_version": __version__,
            "job_name": self.name,
            "run_id": self.run_id,
            "created": self.now.isoformat(),
            "backend": self.s.backend.kind.value,
            "config_sha256": config_hash(self.resolved),
            "objects": objects,
            "artifacts": dict(sorted(record.hashes.items())),
            "request_normalized_sha256": request_sha256(request, self.name),
            "source_files": src_files,
            "storage": self.uris,
            **({"continues": continues} if continues else {}),
        }


class Record:
    """The run directory: every artifact written atomically, its sha256 kept for lineage.json."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.hashes: dict[str, str] = {}
        taken = [n for n in (*ARTIFACTS, "job.json", "lineage.json") if (run_dir / n).exists()]
        if taken:
            raise RecordError(f"{run_dir}: already holds a run ({taken[0]}); choose a new run directory")
        run_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        final = self.dir / name
        tmp = self.dir / f".{name}.part"
        try:
            with open(tmp, "wb") as out:
                yield out
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.open(name) as out:
            out.write(data)
        if name in ARTIFACTS:
            self.hashes[name] = hashlib.sha256(data).hexdigest()

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, value: Any) -> None:
        self.write_text(name, json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


__all__ = ["Pipeline", "Outcome", "Record", "TaskType"]
