"""`gtrun collect`: a finished job's output -> `dataset/` (transforms), report.html/.json and a card.

Works the same on both backends (the local labeling service writes Ground Truth's layout), for a
run directory, for every member of a sweep (merged, with provenance), and for output manifests of
jobs gtrun did not launch.

The report describes the dataset as written: collect counts what the transforms keep
(`_DatasetCount`: each filter's kept and dropped objects, the kept objects' labels after
transforms.label_map) in a pass that also feeds a transform, or, on the columnar path, from the
output's counts or the records it wrote. A sweep's report also names the members left out (failed,
or without a job: `left_out_members`) and counts the input objects more than one member has
(`_Overlap`, in memory flat in the objects).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import heapq
import json
import logging
import os
import re
import shlex
import shutil
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from runner import __version__
from runner.build.quoting import sql_name, sql_string
from runner.collect import parse, report, transforms
from runner.collect.progress import Progress
from runner.collect.records import LabeledObject, Status
from runner.errors import GtrunError, LineError, ManifestError, RecordError, StoreError
from runner.io.store import LocalStore, Store, sha256_file
from runner.schema import BackendKind, DuckDBConfig, OnError, TaskType, TransformsConfig

TERMINAL = ("Completed", "Stopped", "Failed")
PEEK_LINES = 1_000  # lines read to name the label attributes an output has
STATUS = "status.json"  # what each sweep member records (runner.sweep.STATUS; not imported: it needs hydra)
OVERLAP_RUN = 100_000  # input digests _Overlap sorts in memory at a time (~5 MB)

log = logging.getLogger(__name__)


class CollectError(GtrunError):
    """The output cannot be collected (yet)."""


class NotEnded(CollectError):
    """A run's job has not ended: it has no output yet."""


@dataclass
class Output:
    """One job's output: where its manifest is, how to read it, and what it is."""

    name: str  # the dataset / job name
    manifest_uri: str
    storage: Store | None  # None: a local path or a URI smart_open reads on its own
    task_type: TaskType | None
    attribute: str | None
    labels: list[str]
    output_path: str | None = None  # S3OutputPath: worker responses are under <output_path>/<job>/
    provenance: dict[str, Any] = field(default_factory=dict)
    settings: Any = None  # the run's GtrunConfig, when it is a run
    copy: Path | None = None  # a local copy of a remote manifest, read instead of it (see staged)
    answers: Path | None = None  # its worker answers, staged in a local file (see staged)
    is_staged: bool = False  # its manifest and answers (if any) are read from local files
    job_dir: Path | None = None  # collect --manifest: the local job folder in Ground Truth's layout around it
    # collected with the run that continues it (gtrun continue), which relabels what this job did
    # not label: its objects that are not labeled are left out here (see continuations)
    continued_by: str | None = None
    objects: int | None = None  # a run's: the objects of its job's input manifest (lineage.json)
    # its output has a line for each of them: a job that completed, or any job of gtrun's own service
    # (Ground Truth may leave out what a stopped job did not gather: then at most one line each)
    line_each: bool = True

    def check_complete(self, lines: int) -> None:
        """Raise unless the `lines` read (not blank) are a line for each of the job's objects."""
        if self.objects is None or lines == self.objects or (lines < self.objects and not self.line_each):
            return
        raise ManifestError(f"{self.where}: {lines:,} line{'' if lines == 1 else 's'}, but the job had {self.objects:,} "
                            f"object{'' if self.objects == 1 else 's'} (lineage.json), a line each in its output: the "
                            "output manifest was cut short or changed\n  hint: collect it as it is with gtrun collect "
                            f"--manifest {shlex.quote(self.where)} --out DIR")

    def response_files(self, folder: Path | None = None) -> tuple[Iterator[tuple[str, str]], Any] | None:
        """(its worker-response files, the function that opens one), or None when it has none to read:
        the run's job folder in its storage, or the job folder a --manifest sits in."""
        if self.job_dir is not None:
            return parse.worker_response_files(self.job_dir, None, folder=folder), None
        if self.storage is not None and self.output_path is not None:
            return (parse.worker_response_files(self.output_path, self.name, list_fn=self.storage.list, folder=folder),
                    self.storage.open_read)
        return None

    @property
    def where(self) -> str:
        """The manifest as the user finds it: a local backend's file, else its URI or path."""
        return str(self.storage.path(self.manifest_uri)) if isinstance(self.storage, LocalStore) else self.manifest_uri

    @property
    def local(self) -> Path | None:
        """The manifest as a local file, when it is one or has a copy."""
        if self.copy is not None:
            return self.copy
        if isinstance(self.storage, LocalStore):
            return self.storage.path(self.manifest_uri)
        if self.storage is None and "://" not in self.manifest_uri:
            return Path(self.manifest_uri).expanduser()
        return None

    def staged(self, folder: Path, tag: str, progress: Progress | None = None) -> Output:
        """This output, reading local files in `folder` (named after `tag`) streamed there now: a
        copy of its manifest when it is remote (collect reads it several times, and DuckDB reads
        local files), and its worker answers when it has any (parse.stage_worker_responses)."""
        if self.is_staged:
            return self
        progress = progress or Progress()
        copy = None
        if self.local is None:
            copy = folder / f".{tag}.manifest"
            progress.at("copying the manifest")
            with self.open() as src, open(copy, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                    progress.say(f"{dst.tell() / 2**20:,.0f} MB")
            log.info("collect: %s copied to %s (%.0f MB)", self.manifest_uri, copy, copy.stat().st_size / 2**20)
        answers = None
        found = self.response_files(folder)
        if found is not None:
            answers = folder / f".{tag}.answers"
            progress.at("reading worker answers")
            files, open_fn = found
            count = parse.stage_worker_responses(files, answers, open_fn=open_fn,
                                                 on_object=lambda n: progress.say(f"{n:,} objects"))
            log.info("collect: the answers of %d objects of %s read into %s", count, self.name, answers)
            if not count:
                answers.unlink()
                answers = None
        return replace(self, copy=copy or self.copy, answers=answers, is_staged=True)

    def open(self) -> Any:
        if self.copy is not None:
            return open(self.copy, "rb")
        if self.storage is not None:
            return self.storage.open_read(self.manifest_uri)
        import smart_open

        try:
            return smart_open.open(self.manifest_uri, "rb")
        except Exception as exc:
            if self.manifest_uri.startswith("s3://"):  # botocore's errors, some wrapped by smart_open's
                from runner.io.s3 import AWS_ERRORS, describe

                if isinstance(exc, (OSError, ValueError, *AWS_ERRORS)):
                    why = describe(exc)
                    local = ("; a local run's output is a file in its backend.root: `gtrun status <run>` prints "
                             "where") if why.startswith("no AWS credentials") else ""
                    raise CollectError(f"{self.manifest_uri}: cannot read the output manifest ({why}){local}") from None
            if isinstance(exc, (OSError, ValueError)):
                raise CollectError(f"{self.manifest_uri}: cannot read the output manifest ({exc})") from None
            raise

    def responses(self) -> contextlib.AbstractContextManager[Any]:
        """Its worker answers by object id (what attach_answers reads): the staged file's, else (not
        staged) all of them, read now."""
        if self.answers is not None:
            return parse.StagedAnswers(self.answers)
        found = None if self.is_staged else self.response_files()
        if found is None:
            return contextlib.nullcontext({})
        return contextlib.nullcontext(dict(parse.read_answers(found[0], open_fn=found[1])))


def job_dir_of(manifest: str) -> Path | None:
    """The job folder in Ground Truth's layout (`<job>/manifests/output/output.manifest` beside
    `<job>/annotations/worker-response/`) a local output manifest sits in, when it does."""
    path = Path(manifest).expanduser()
    if "://" in manifest or path.parent.parent.name != "manifests" or path.parent.name != "output":
        return None
    job = path.parent.parent.parent
    return job if (job / "annotations" / "worker-response").is_dir() else None


class ImageCopier:
    """Copies an image, by its source-ref, to a file of the dataset (transforms.Images): an s3://
    image through the storage of the job that labeled it (a local backend's folder, or S3 with the
    run's endpoint and credentials), any other, or every one of output gtrun did not launch
    (collect --manifest), through smart-open (a local path, https://, s3:// with boto3's usual
    credentials). `members`: a merged collect's storage of each member (LabeledObject.member), whose
    runs may keep their images in different storages; `storage`: the one output's."""

    def __init__(self, storage: Store | None, members: Mapping[str, Store | None] | None = None) -> None:
        self.storage = storage
        self.members = dict(members or {})

    def __call__(self, ref: str, path: Path, member: str | None = None) -> None:
        from runner.io.s3 import AWS_ERRORS

        storage = self._storage(member)
        try:
            with self._open(ref, storage) as src, open(path, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, ValueError, *AWS_ERRORS) as exc:
            if isinstance(exc, OSError) and exc.filename == str(path):
                raise StoreError(f"{ref}: cannot write the image to {path.name} ({exc.strerror or exc})") from None
            raise self._unread(ref, storage, exc) from None

    def check(self, ref: str, path: Path, member: str | None, first: str | None) -> None:
        """Raise a StoreError unless `member`'s image behind `ref` is the file `path` copied for
        `first` (coco copies an image objects share once): two runs' storages may hold different
        images under one URI. Nothing is read when both members read the same storage."""
        from runner.io.s3 import AWS_ERRORS

        storage, theirs = self._storage(member), self._storage(first)
        if self._same(ref, storage, theirs):
            return
        try:
            with self._open(ref, storage) as src, open(path, "rb") as copied:
                while block := src.read(1 << 20):
                    if copied.read(len(block)) != block:
                        break
                else:
                    if not copied.read(1):
                        return
        except (OSError, ValueError, *AWS_ERRORS) as exc:
            raise self._unread(ref, storage, exc) from None
        raise StoreError(f"{ref}: {member} and {first} keep different images under this URI, each in its own "
                         f"storage, and the dataset has one {path.name} (collect them one by one)")

    @staticmethod
    def _same(ref: str, storage: Store | None, theirs: Store | None) -> bool:
        """Whether both storages give the same image for `ref`: one storage, one local folder, one S3
        endpoint (each aws run has a client of its own), or a ref that is not s3:// (smart-open reads
        it for every member)."""
        from runner.io.s3 import S3Store

        if storage is theirs or not ref.startswith("s3://"):
            return True
        if isinstance(storage, LocalStore) and isinstance(theirs, LocalStore):
            return storage.root == theirs.root
        return (isinstance(storage, S3Store) and isinstance(theirs, S3Store)
                and storage.client.meta.endpoint_url == theirs.client.meta.endpoint_url)

    def _storage(self, member: str | None) -> Store | None:
        return self.members[member] if member is not None and member in self.members else self.storage

    @staticmethod
    def _unread(ref: str, storage: Store | None, exc: BaseException) -> StoreError:
        from runner.io.s3 import describe

        stored = storage is not None and ref.startswith("s3://")  # a store's own errors are StoreErrors already
        why = describe(exc) if ref.startswith("s3://") and not stored else (getattr(exc, "strerror", None) or exc)
        return StoreError(f"{ref}: cannot read the image ({why})")

    @staticmethod
    def _open(ref: str, storage: Store | None) -> Any:
        if storage is not None and ref.startswith("s3://"):
            return storage.open_read(ref)
        import smart_open

        return smart_open.open(ref, "rb", compression="disable")


def from_run(run_dir: Path) -> Output:
    """The output of a recorded run's job (it must have ended: Ground Truth writes it then)."""

    from runner.io.backends import backend_for
    from runner.record import Run

    run = Run.at(run_dir)
    settings = run.settings()
    name = run.job_name()  # the run created its job
    request = run.read_json("request.json")
    backend = backend_for(settings)
    with backend.labeling(recorded=True) as service:
        job = service.describe_labeling_job(name)
    status = job["LabelingJobStatus"]
    if status not in TERMINAL:
        raise NotEnded(f"{name} is {status}: Ground Truth writes its output manifest when the job ends")
    if "LabelingJobOutput" not in job:
        raise CollectError(f"{name} ended ({status}) with no output")
    output_path = request["OutputConfig"]["S3OutputPath"].rstrip("/")
    lineage = run.lineage() if (run_dir / "lineage.json").is_file() else {}  # a broken one: a RecordError
    w, p = settings.workteam, settings.pricing
    provenance = {
        "run": str(run_dir), "job": name, "status": status, "backend": settings.backend.kind.value,
        "config_sha256": lineage.get("config_sha256"), "source_files": lineage.get("source_files"),
        "output_manifest": job["LabelingJobOutput"]["OutputDatasetS3Uri"],
        "workforce": f"{w.kind.value} ({request['HumanTaskConfig']['WorkteamArn']})",
        "workers_per_object": w.workers_per_object,
        "usd_per_task": p.usd_per_task or "none (private or vendor workforce)",
        "created": str(job.get("CreationTime")), "ended": str(job.get("LastModifiedTime")),
        "label_attribute": request["LabelAttributeName"], "labels": list(settings.template.labels),
        "label_schema": settings.transforms.label_schema, "gtrun_version": __version__,
        # gtrun continue's run, where it is now (the project may have moved)
        **({"continues": str(run.relocated(lineage["continues"]))} if lineage.get("continues") else {}),
    }
    return Output(name=name, manifest_uri=job["LabelingJobOutput"]["OutputDatasetS3Uri"],
                  storage=backend.storage, task_type=settings.template.task_type,
                  attribute=request["LabelAttributeName"], labels=list(settings.template.labels),
                  output_path=output_path, provenance=provenance, settings=settings,
                  objects=lineage["objects"] if isinstance(lineage.get("objects"), int) else None,
                  line_each=status == "Completed" or settings.backend.kind.value == "local")


def identified(out: Output, on_error: OnError = OnError.stop) -> Output:
    """The output with its label attribute and task type, read off its first lines when not given
    (parse.identify). When they do not tell them, a given attribute that no line has is the error
    (check_attribute): a mistyped name, not the task type the lines cannot tell without it."""
    if out.attribute is not None and out.task_type is not None:
        return out
    try:
        with out.open() as src:
            attribute, task_type = parse.identify(src, attribute=out.attribute, task_type=out.task_type,
                                                  on_error=on_error)
    except LineError as exc:
        if out.attribute is not None:
            check_attribute(out)
        raise exc.in_file(out.where) from None  # which manifest's line, as objects_of says
    except ManifestError:
        if out.attribute is not None:
            check_attribute(out)
        raise
    return replace(out, attribute=attribute, task_type=task_type)


def check_attribute(out: Output) -> None:
    """Raise when no line has the output's label attribute while its first lines have others: a
    mistyped name, which would read every object as unlabeled."""
    seen: dict[str, None] = {}
    with out.open() as src:
        for raw in islice(src, PEEK_LINES):
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if type(line) is dict:
                seen.update(dict.fromkeys(parse.label_attributes(line)))
    if seen and out.attribute not in seen:
        flag = f"--label-attribute {next(iter(seen))}"
        hint = flag if out.output_path is None else \
            f"the run's request names another attribute; collect the manifest itself: gtrun collect --manifest " \
            f"{out.manifest_uri} {flag} --out DIR"
        raise CollectError(f"label attribute {out.attribute!r}: no line of {out.manifest_uri} has it; its lines have "
                           f"{', '.join(map(repr, seen))}\n  hint: {hint}")


def is_sweep(folder: Path) -> bool:
    """Whether the folder is a sweep's (Hydra writes multirun.yaml there; gtrun, summary.json)."""
    return any((folder / name).is_file() for name in ("multirun.yaml", "summary.json"))


def sweep_members(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep that submitted a job, in job order (`left_out_members` names
    the others)."""
    if not sweep_dir.exists():
        raise RecordError(f"{sweep_dir}: no such folder")
    if sweep_dir.is_dir() and not is_sweep(sweep_dir):
        runs = sorted(p.parent.parent for depth in ("*", "*/*", "*/*/*")  # runs/<date>/<time>_<name>, say
                      for p in sweep_dir.glob(f"{depth}/.hydra/config.yaml"))
        raise RecordError(f"{sweep_dir}: neither a run directory (.hydra/config.yaml) nor a sweep's (multirun.yaml)"
                          + (f"; it holds {len(runs)} run{'s' if len(runs) > 1 else ''}, e.g. {runs[0]}" if runs else ""))
    members = [p for p in _member_dirs(sweep_dir) if _left_out_because(p) is None]
    if not members:
        left = left_out_members(sweep_dir)
        raise RecordError(f"{sweep_dir}: neither a submitted run nor a sweep of runs"
                          + (f" (no member submitted a job: {'; '.join(left)})" if left else ""))
    return members


def left_out_members(sweep_dir: Path, cut: tuple[str, list[dict[str, Any]]] | None = None, *,
                     qualified: bool = False) -> list[str]:
    """The members of a sweep that collect leaves out, each as "<member> (<why>)": those that
    failed (their status.json says so) or created no labeling job (no job.json), and those a sweep
    cut short never launched (`cut`: cut_short's, worked out here when None; ("", []): none),
    named "#<num> <what it varied>". `qualified`: each after the sweep folder's name, as the
    members of runs of several folders merged are named (several_folders)."""
    made = [f"{p.name} ({why})" for p in _member_dirs(sweep_dir) if (why := _left_out_because(p)) is not None]
    if cut is None:
        cut = cut_short(sweep_dir)
    if cut is not None:
        how, missing = cut
        made += [f"#{m['num']} {' '.join(m['swept'])} (not launched: the sweep was {how})" for m in missing]
    return [f"{sweep_dir.name}/{item}" for item in made] if qualified else made


def cut_short(sweep_dir: Path) -> tuple[str, list[dict[str, Any]]] | None:
    """(how, the members not launched: num, overrides, swept) of a sweep that did not launch every
    member it was asked for, else None. An interrupted sweep's summary.json says so; a sweep with
    no summary.json (stopped by a signal no handler sees, or still running) is compared with
    the members its multirun.yaml asks for."""
    summary = sweep_dir / "summary.json"
    if summary.is_file():
        try:
            found = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict) or not found.get("interrupted"):
            return None
        return str(found["interrupted"]), list(found.get("not_launched") or [])
    if not (sweep_dir / "multirun.yaml").is_file():
        return None
    import yaml
    from omegaconf import DictConfig, OmegaConf

    from runner.record import Run
    from runner.sweep import not_launched, planned_members  # hydra's parser: only for such a sweep

    try:
        config = OmegaConf.load(sweep_dir / "multirun.yaml")
    except (OSError, ValueError, yaml.YAMLError):
        return None
    planned = planned_members(config) if isinstance(config, DictConfig) else None
    if planned is None:
        return None
    launched = []
    for member in _member_dirs(sweep_dir):
        with contextlib.suppress(GtrunError):  # unreadable: no member it matches
            launched.append(Run(member).overrides())
    missing = not_launched(planned, launched)
    return ("stopped before it ended (no summary.json), or is still running", missing) if missing else None


def _member_dirs(sweep_dir: Path) -> list[Path]:
    """The folders of a sweep that are members (Hydra's .hydra, a status or a request), in job order."""
    if not sweep_dir.is_dir():
        return []
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and any(
        (p / name).exists() for name in (".hydra", STATUS, "request.json"))),
        key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30, p.name))


def _left_out_because(member: Path) -> str | None:
    """Why collect leaves a sweep member out, or None when it submitted a job."""
    try:
        status = json.loads((member / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = None
    status = status if isinstance(status, dict) else {}
    if status.get("status") == "failed":
        error = " ".join(str(status.get("error") or "no error recorded").split())
        return f"failed: {error if len(error) <= 200 else error[:199] + '…'}"
    if not (member / "job.json").is_file():
        if status.get("status") in ("interrupted", "terminated"):  # its status.json says what it left
            return " ".join(str(status.get("error") or status["status"]).split())
        return "created no labeling job"
    return None


def check_task_types(outputs: Sequence[Output]) -> None:
    """Raise unless the outputs are of one task type, naming which member has which."""
    if len({o.task_type for o in outputs}) <= 1:
        return

    def kind(o: Output) -> str:
        return o.task_type.value if o.task_type is not None else "unknown"

    which = "; ".join(f"{_member_name(o)} is {kind(o)}" for o in outputs)
    example = next((str(o.provenance["run"]) for o in outputs if o.provenance.get("run")), None)
    raise CollectError(f"the outputs mix task types ({', '.join(sorted({kind(o) for o in outputs}))}): {which}"
                       "\n  hint: collect the members one by one: gtrun collect <member dir>"
                       + (f", e.g. gtrun collect {example}" if example else ""))


def _member_name(out: Output, qualified: bool = False) -> str:
    """A sweep member's name: its run directory's (`qualified`: after its folder's name), else its job's."""
    run = out.provenance.get("run")
    if not run:
        return out.name
    return f"{Path(str(run)).parent.name}/{Path(str(run)).name}" if qualified else Path(str(run)).name


def objects_of(out: Output, settings: TransformsConfig, stats: parse.ParseStats | None = None,
               tag: str | None = None, *, answers: bool = True, progress: Progress | None = None,
               ) -> Iterator[LabeledObject]:
    """Stream one output's objects (with their worker answers, unless not `answers`); `tag`: a sweep
    member's name; `progress` hears how far the pass is."""
    with out.responses() if answers else contextlib.nullcontext({}) as responses, out.open() as src:
        parser = parse.Parser(attribute=out.attribute, task_type=out.task_type, labels=out.labels or None,
                              on_error=settings.on_error, stats=stats, loads=parse.exact_loads,  # ~1.7x json
                              where=out.where if tag is not None else None)  # merged: which manifest's lines
        local = out.local
        lines = (progress or Progress()).lines(src, local.stat().st_size if local is not None else None)
        before = parser.stats.lines  # stats may count other outputs' lines too
        try:
            for obj in parse.attach_answers(parser.parse_lines(lines), responses):
                if out.continued_by is not None and obj.status is not Status.labeled:
                    continue  # the continuation labels it (or lists it as not labeled)
                if tag is not None:
                    obj = replace(obj, object_id=f"{tag}/{obj.object_id}", member=tag,
                                  inputs={**obj.inputs, "gtrun_job": tag})
                yield obj
            out.check_complete(parser.stats.lines - before)
        except LineError as exc:
            raise exc.in_file(out.where) from None  # which manifest's line


def collect(outputs: Sequence[Output], out_dir: Path, settings: TransformsConfig, *,
            dataset: str, provenance: Mapping[str, Any], use_columnar: bool = True,
            show: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Transform, report and describe the outputs into `out_dir` (written aside, then moved in place).

    The report and the jsonl and Parquet table transforms take the columnar path (DuckDB, see
    runner.collect.columnar) when it can read the output; `use_columnar=False` keeps them on the
    Python parser, which writes the same files. `show` hears what collect is doing, a line at a
    time (runner.collect.progress).

    Returns {"report": the report's figures, "written": step -> transforms.WrittenFiles (and
    "athena": the table's name when it registered one), "left_out": the sweep members left out,
    each "<member> (<why>)", as `provenance["left_out"]` names them (merged_provenance), "continued":
    the collected runs continued by a run not collected with them (continued_elsewhere), "view":
    the DuckDB view over the table in the dataset's gtrun.duckdb, when it wrote one}."""
    progress = Progress(show)
    if not outputs:
        raise CollectError("nothing to collect")
    out_dir = out_dir.resolve()
    check_out_dir(out_dir)
    outputs = [identified(o, settings.on_error) for o in outputs]
    check_task_types(outputs)
    if outputs[0].settings is not None and outputs[0].settings.backend.kind is BackendKind.aws:
        problem = transforms.athena_table_problem(settings.steps)  # found before the dataset is written
        if problem is not None:
            raise problem
    kinds = {o.task_type for o in outputs}
    labels = list(dict.fromkeys(label for o in outputs for label in o.labels))
    merged = len(outputs) > 1
    left_out = [str(x) for x in provenance.get("left_out") or []]
    continued = continued_elsewhere(outputs)  # runs continued by a run not collected with them
    if settings.label_schema is not None:  # the dataset's label set version: this collect's, run's or given
        provenance = {**provenance, "label_schema": settings.label_schema}

    def factory(stats: parse.ParseStats | None = None) -> Iterator[LabeledObject]:
        for o in outputs:
            yield from objects_of(o, settings, stats, tag=o.name if merged else None, progress=progress)

    slug = _slug(dataset)
    _remove_left_staging(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.part")
    work = staging / slug  # transforms name their files after the folder (the dataset)
    try:
        work.mkdir(parents=True)
        (staging / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    except OSError as exc:  # a folder that is not writable, a file on the way
        shutil.rmtree(staging, ignore_errors=True)
        raise CollectError(f"{out_dir}: cannot write the dataset there ({exc.strerror or exc})") from None
    try:
        outputs = [o.staged(staging, str(i), progress) for i, o in enumerate(outputs)]
        # no labels (output gtrun did not launch, given no --labels): they are read off the output, by
        # the columnar pass when it takes the output, else by the parser first
        # DuckDB spills into backend.duckdb.temp_directory, else into the staging folder (its default,
        # .tmp, is in the working folder)
        engine = outputs[0].settings.backend.duckdb if outputs[0].settings is not None else DuckDBConfig()
        spill = Path(engine.temp_directory) if engine.temp_directory else staging / ".spill"
        fast = columnar_of(outputs, settings, labels, spill) if use_columnar else None
        task_type = next(iter(kinds)) or TaskType.custom
        if fast is not None:
            progress.at("reading with DuckDB")
        hashes = staging / ".inputs.parquet"  # the columnar pass's input hashes for split_leaks
        done = transforms.columnar_steps(fast, work, steps=settings.steps, settings=settings, labels=labels,
                                         task_type=task_type, inputs=hashes, progress=progress) if fast is not None else None
        if done is not None:
            result, fast_written = done
            outputs[0].check_complete(result.lines)
            if not labels:
                labels = result.labels or []
                transforms.check_transforms(settings.steps, settings, labels=labels, task_type=task_type)
            figures = report.report_from_counts(task_type=task_type, labels=labels, dataset=dataset,
                                                status=result.status, reasons=list(result.reasons.items()),
                                                distribution=list(result.distribution.items()))
            figures["parse"] = {"lines": result.lines, "skipped": 0, "skipped_lines": []}
        else:
            fast_written = {}
            if not labels:
                log.info("collect: no labels given: the parser reads them off %s first",
                         ", ".join(o.manifest_uri for o in outputs))
                progress.at("reading the labels off the output")
                labels = seen_labels(obj for o in outputs for obj in objects_of(o, settings, progress=progress))
        rest = {k: v for k, v in settings.steps.items() if k not in fast_written}

        def pass_counts() -> _Counts:  # a pass's: on the parser's path the report's too, and a sweep's overlap
            parser = done is None
            return _Counts(_DatasetCount(settings, task_type, labels),
                           report.ReportBuilder(task_type=task_type, labels=labels, dataset=dataset) if parser else None,
                           _Overlap(staging / f".overlap.{uuid.uuid4().hex[:8]}", [o.name for o in outputs])
                           if parser and merged else None)

        # the parser's path counts the report in the first transform's pass over the objects; the
        # columnar path counts what the transforms keep there when the parser writes a transform too
        counting = _CountingPass(factory, progress, pass_counts, work / report.NOT_LABELED if done is None else None) \
            if done is None or rest else None
        first = [counting.objects()] if counting is not None and rest else []
        slow_written = transforms.run_transforms(lambda: first.pop() if first else factory(), work, steps=rest,
                                                 settings=settings, labels=labels, task_type=task_type,
                                                 on_step=lambda name: progress.at(f"writing {name}"),
                                                 images=ImageCopier(outputs[0].storage,  # a member's: its own
                                                                    {o.name: o.storage for o in outputs} if merged else None),
                                                 ) if rest else {}
        overlap: _Overlap | None = None
        if counting is not None:
            counted = counting.finish()
            if counted.builder is not None:
                figures = counted.report_figures()
            assert counted.dataset is not None
            kept, overlap = counted.dataset, counted.overlap
        else:
            kept = _kept_on_columnar(result, settings, task_type, labels)
        report.add_dataset(figures, **kept.figures())
        for name, files in {**fast_written, **slow_written}.items():
            if figures["counts"]["objects"] - files.skipped != kept.kept:
                log.warning("collect: the report counts %d objects in the dataset, but %s left out %d of %d",
                            kept.kept, name, files.skipped, figures["counts"]["objects"])
        if continued:
            figures["continued"] = continued
        if merged or left_out:
            figures["sweep"] = {"members": len(outputs), "left_out": left_out}
            if overlap is not None:
                progress.at("looking for objects in more than one member")
                figures["sweep"]["overlap"] = overlap.figures()
        counts = figures["counts"]
        if counts["objects"] and not counts["labeled"] and not counts["failed"]:
            for o in outputs:
                check_attribute(o)
        written = {k: fast_written.get(k) or slow_written[k] for k in settings.steps}
        hf = written.get("hf_datasets")
        if hf is not None and not hf.paths and (work / transforms.HF_FOLDER).is_dir():
            (work / transforms.HF_FOLDER).rmdir()  # no object in any split: no file, and no empty folder
        per_split = transforms.split_objects(written)  # the transforms' own counts: no pass of its own
        if per_split is not None:
            figures["transforms"]["split_objects"] = per_split
        # what a transform could not write (a span on no whole token, a box off its image), with the first ones
        problems = {k: {"count": w.problem_count, "first": w.problems} for k, w in written.items() if w.problem_count}
        if problems:
            figures["transforms"]["problems"] = problems
        card_provenance = {**provenance, "collected": datetime.now().isoformat(timespec="seconds"),
                           "transforms": ", ".join(settings.steps) or "none",
                           "label_map": ", ".join(f"{old} → {new}" for old, new in settings.label_map.items()) or "none",
                           "min_confidence": "none" if settings.min_confidence is None else settings.min_confidence,
                           "min_agreement": "none" if settings.min_agreement is None else settings.min_agreement,
                           "split": f"train {settings.split.train} / validation {settings.split.validation} / "
                                    f"test {settings.split.test} (salt {settings.split.salt!r}"
                                    + (f", by {settings.split.key}" if settings.split.key is not None else "") + ")"}
        load_files = transforms.load_files(written)
        # what collect leaves in the folder, so that collecting again replaces these and nothing else
        # the images coco and yolo copied: their folders ("<step>/images/"), not a name per image
        folders = tuple(f"{step}/images/" for step in sorted(transforms.IMAGE_STEPS) if (work / step / "images").is_dir())

        def written_files() -> set[str]:
            return {rel for p in work.rglob("*")
                    if p.is_file() and not (rel := p.relative_to(work).as_posix()).startswith(folders)}

        # and what each file holds, so that collecting again can tell a file edited since (check_out_dir);
        # not the database (DuckDB changes it when it opens it: its tables are checked) nor report.json.
        # The data files are hashed while DuckDB looks for inputs in more than one split (split_leaks).
        progress.at("recording the files' sizes and checksums" + (", looking for inputs in more than one split"
                                                                   if load_files else ""))
        data_files = sorted(written_files() - {transforms.DATABASE, "report.json"})
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gtrun-leaks") as pool:
            hashed = done[0].input_hashes if done is not None else None
            leaks = pool.submit(split_leaks, work, load_files, engine, spill,
                                hashes=(hashed, hashes) if hashed is not None else None) if load_files else None
            sums = file_checksums(work, data_files)
            found = leaks.result() if leaks is not None else None
        if found is not None:
            figures["transforms"]["split_leaks"] = found
        # the files datasets.load_dataset loads: their digest in the card keeps its cache apart (card_markdown)
        files_sha256 = hashlib.sha256("".join(f"{path} {sums[path]['sha256']}\n" for _, path in load_files)
                                      .encode()).hexdigest() if load_files else None
        # with nothing to load, the folder it would load from, for the card to say why
        loads_from = next((folder for step, folder, _ in transforms.LOAD_STEPS if step in written),
                          None) if not load_files else None
        card = report.write_card(work, card_provenance, figures, load_files, files_sha256, loads_from=loads_from)
        figures["provenance"] = card_provenance  # report.json names the runs (each member) as the card does
        if card.parent != work:  # the collected folder is the dataset itself: its card is README.md
            text = card.read_text(encoding="utf-8").replace("](../", "](")  # its links: the folder's files
            (work / "README.md").write_text(text, encoding="utf-8")
            shutil.rmtree(card.parent, ignore_errors=True)
        figures["files"] = sorted({*written_files(), *folders, "report.json", "report.html"})
        report.write_report(figures, work, checksums=lambda: {**sums, **file_checksums(  # the card's, the page's
            work, [f for f in figures["files"] if not f.endswith("/") and f not in sums
                   and f not in (transforms.DATABASE, "report.json")])})
        check_out_dir(out_dir)  # again: a long collect leaves time to edit the dataset it replaces
        aside = staging / ".replaced"  # the old dataset, until the new one is in its place
        if out_dir.exists():
            out_dir.replace(aside)
        try:
            work.replace(out_dir)
        except BaseException:
            if aside.exists():
                aside.replace(out_dir)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        fmt = (settings.steps.get("table") or {}).get("format", "parquet")
        table_file = out_dir / "table" / f"{slug}.{fmt}"
        if "table" in written:  # the DuckDB view reads its file by path: point it at the final place
            transforms.register_table(table_file, fmt, out_dir / transforms.DATABASE, name=slug)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    settings0 = outputs[0].settings
    if "table" in written and settings0 is not None and settings0.backend.kind.value == "aws":
        athena = register_on_athena(settings0, table_file, slug, dataset=out_dir)
        return {"report": figures, "written": {**written, "athena": athena}, "left_out": left_out,
                "continued": continued, "view": slug if "table" in written else None}
    return {"report": figures, "written": written, "left_out": left_out, "continued": continued,
            "view": slug if "table" in written else None}


OWNER = ".owner"  # in a collect's staging folder: the process that writes it (pid, host)


def _remove_left_staging(out_dir: Path) -> None:
    """Remove the staging folders of earlier collects into `out_dir` whose process is gone (killed,
    so it could not clean up): one on this host whose pid no process has. Another collect's, still
    running, and one of unknown owner are left alone."""
    # exactly collect's name (".<name>.<8 hex>.part"): ".ds.*.part" is also the staging of a dataset "ds.v2"
    for folder in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.{'[0-9a-f]' * 8}.part"):
        try:
            owner = json.loads((folder / OWNER).read_text())
            pid, host = int(owner["pid"]), owner["host"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname() or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # a process has that pid: perhaps the collect itself
        except ProcessLookupError:
            pass
        except PermissionError:  # a process of another user has it
            continue
        aside = folder / ".replaced"  # killed between moving the old dataset aside and the new one in
        if aside.is_dir() and not out_dir.exists():
            log.warning("collect: %s was left aside by an interrupted collect (process %d): put back", out_dir, pid)
            aside.replace(out_dir)
        log.info("collect: removing %s, left by an interrupted collect (process %d)", folder, pid)
        shutil.rmtree(folder, ignore_errors=True)


class _DatasetCount:
    """What the transforms keep of the objects, as run_transforms does (transforms.label_map, then
    transforms.keep): per filter the objects it looked at, dropped, and could not judge (no
    confidence, no worker answers: kept), and the kept objects' labels after the label_map.
    Counted as a pass goes (`add`), or on the columnar path from its counts (`add_counts` when no
    filter is set, else `add_kept`)."""

    def __init__(self, settings: TransformsConfig, task_type: TaskType, labels: Sequence[str]) -> None:
        self.settings, self.task = settings, task_type
        self.labels = transforms.mapped_labels(labels, settings.label_map)
        self.thresholds = {name: value for name in ("min_confidence", "min_agreement")
                           if (value := getattr(settings, name)) is not None}
        self.tally = {name: [0, 0, 0] for name in self.thresholds}  # objects, dropped, unknown
        self.unit: str | None = None if task_type is TaskType.custom else report.LABEL_UNITS[task_type]
        self.counts: Counter[str] = Counter()
        self.labeled = self.kept = self.counted = self.without_label = 0

    def add(self, obj: LabeledObject) -> None:
        if obj.status is not Status.labeled:
            return
        self.labeled += 1
        obj = transforms.apply_label_map(obj, self.settings.label_map)
        confidence, agreement = self.settings.min_confidence, self.settings.min_agreement
        if confidence is not None and not self._passes(
                "min_confidence", transforms.keep(obj, confidence), lambda: transforms.object_confidence(obj) is None):
            return
        if agreement is not None and not self._passes(
                "min_agreement", transforms.keep(obj, None, agreement), lambda: transforms.worker_agreement(obj) is None):
            return
        self._kept(*report.object_labels(self.task, obj))

    def _passes(self, name: str, kept: bool, unknown: Callable[[], bool]) -> bool:
        tally = self.tally[name]
        tally[0] += 1
        if not kept:
            tally[1] += 1
        elif unknown():
            tally[2] += 1
        return kept

    def _kept(self, unit: str | None, names: Sequence[str]) -> None:
        self.kept += 1
        if unit is None:
            return
        self.unit = self.unit or unit
        self.counted += 1
        self.counts.update(names)
        if not names:
            self.without_label += 1

    def add_counts(self, distribution: Mapping[str, int], labeled: int, without_label: int = 0) -> None:
        """No filter set: the output's `labeled` objects are all kept, its label uses (before the
        label_map) renamed; `without_label`: multi-label objects with no label chosen."""
        self.labeled = self.kept = self.counted = labeled
        self.without_label = without_label
        for name, n in distribution.items():
            self.counts[self.settings.label_map.get(name, name)] += n

    def add_kept(self, figures: Any, labeled: int) -> None:
        """What the columnar pass counted of the objects it kept (columnar.KeptFigures) of the
        output's `labeled` ones, as `add` of each counts them (no worker answers: min_agreement
        keeps every object unjudged)."""
        self.labeled, self.kept, self.counted = labeled, figures.objects, figures.objects
        self.counts.update(figures.distribution)
        self.without_label = figures.without_label
        if "min_confidence" in self.tally:
            self.tally["min_confidence"] = [labeled, labeled - figures.objects, figures.without_confidence]
        if "min_agreement" in self.tally:  # no worker answers: every kept object is kept unjudged
            self.tally["min_agreement"] = [figures.objects, 0, figures.objects]

    def figures(self) -> dict[str, Any]:
        """report.add_dataset's arguments."""
        s = self.settings
        filters = [{"option": name, "threshold": value, "objects": self.tally[name][0],
                    "kept": self.tally[name][0] - self.tally[name][1], "dropped": self.tally[name][1],
                    "unknown": self.tally[name][2]} for name, value in self.thresholds.items()]
        distribution = report.label_distribution(
            self.task, self.unit, self.labels, self.counts, self.counted,
            self.without_label if self.task is TaskType.text_multilabel else None)
        options = {"label_map": dict(s.label_map), "labels": list(self.labels),  # the dataset's, after the label_map
                   "min_confidence": s.min_confidence, "min_agreement": s.min_agreement,
                   "split": {"train": s.split.train, "validation": s.split.validation, "test": s.split.test,
                             "salt": s.split.salt, "key": s.split.key}}
        return {"objects": self.kept, "distribution": distribution, "options": options, "filters": filters}


def _kept_on_columnar(result: Any, settings: TransformsConfig, task_type: TaskType,
                      labels: Sequence[str]) -> _DatasetCount:
    """What the transforms kept, when the columnar pass wrote every transform: from its counts of
    the labeled objects when no filter is set, else from those of the objects it kept."""
    kept = _DatasetCount(settings, task_type, labels)
    labeled = result.status.get(Status.labeled.value, 0)
    if not kept.thresholds:
        kept.add_counts(result.distribution, labeled, result.without_label)
    else:
        assert result.kept is not None  # the pass counts what it kept whenever a filter is set
        kept.add_kept(result.kept, labeled)
    return kept


class _Overlap:
    """The input objects more than one sweep member has, counted in memory flat in the objects: an
    8-byte digest of each object's input fields (blake2b of their sorted JSON; objects_of tags each
    with its member's job in `gtrun_job`, left out of it) with its member's index goes to a file in
    runs sorted in memory `run` records at a time, merged in one pass by `figures`."""

    SIZE = 10  # bytes per record: the digest, then the member's index

    def __init__(self, folder: Path, members: Sequence[str], run: int = OVERLAP_RUN) -> None:
        self.folder, self.run = folder, run
        self.index = {name: i for i, name in enumerate(members)}
        self.buffer: list[int] = []
        self.runs: list[Path] = []
        self.fields: list[str] = []  # the first object's input fields: what transforms.split.key can name
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, obj: LabeledObject) -> None:
        job = obj.inputs.get("gtrun_job")
        member = self.index.get(job) if isinstance(job, str) else None
        if member is None:
            return
        fields = {k: v for k, v in obj.inputs.items() if k != "gtrun_job"}
        self.fields = self.fields or list(fields)
        try:
            text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, say
            text = json.dumps(fields, sort_keys=True, default=str).encode()
        digest = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
        self.buffer.append(digest << 16 | member)
        if len(self.buffer) >= self.run:
            self._spill()

    def _spill(self) -> None:
        self.buffer.sort()
        path = self.folder / f"{len(self.runs)}.run"
        path.write_bytes(b"".join(x.to_bytes(self.SIZE, "big") for x in self.buffer))
        self.runs.append(path)
        self.buffer = []

    def _read(self, path: Path) -> Iterator[int]:
        with open(path, "rb") as src:
            while block := src.read(self.SIZE * 8192):
                for i in range(0, len(block), self.SIZE):
                    yield int.from_bytes(block[i:i + self.SIZE], "big")

    def figures(self) -> dict[str, Any]:
        """{objects: inputs more than one member has, rows: the objects of the dataset they are,
        fields: the input fields}."""
        if self.buffer:
            self._spill()
        objects = rows = 0
        digest, count = -1, 0
        members: set[int] = set()
        for record in heapq.merge(*(self._read(p) for p in self.runs)):
            if record >> 16 != digest:
                if len(members) > 1:
                    objects, rows = objects + 1, rows + count
                digest, members, count = record >> 16, set(), 0
            members.add(record & 0xFFFF)
            count += 1
        if len(members) > 1:
            objects, rows = objects + 1, rows + count
        shutil.rmtree(self.folder, ignore_errors=True)
        return {"objects": objects, "rows": rows, "fields": self.fields}


@dataclass
class _Counts:
    """What one pass over the objects counts (see _CountingPass)."""

    dataset: _DatasetCount | None = None  # what the transforms keep
    builder: report.ReportBuilder | None = None  # the parser's path: the report's figures
    overlap: _Overlap | None = None  # a sweep's
    stats: parse.ParseStats = field(default_factory=parse.ParseStats)

    def add(self, obj: LabeledObject) -> None:
        if self.builder is not None:
            self.builder.add(obj)
        if self.dataset is not None:
            self.dataset.add(obj)
        if self.overlap is not None:
            self.overlap.add(obj)

    def report_figures(self) -> dict[str, Any]:
        """The report's figures (the builder's), with what the parser read."""
        assert self.builder is not None
        figures = self.builder.figures()
        figures["parse"] = {"lines": self.stats.lines, "skipped": self.stats.skipped_count,
                            "skipped_lines": [list(x) for x in self.stats.skipped]}
        return figures


class _CountingPass:
    """Counts (`make` gives fresh ones for each pass) made in a pass over the objects that also
    feeds a transform (`objects`), or in a pass of its own when none read them all (`finish`); with
    a `listing`, the pass writes not_labeled.jsonl too."""

    def __init__(self, objects: Callable[[parse.ParseStats], Iterator[LabeledObject]], progress: Progress,
                 make: Callable[[], _Counts], listing: Path | None = None) -> None:
        self.all_objects, self.progress, self.make, self.listing = objects, progress, make, listing
        self.result: _Counts | None = None
        self.running: Generator[LabeledObject, None, None] | None = None

    def objects(self) -> Generator[LabeledObject, None, None]:
        """The objects of all outputs, counted as they pass (a pass left unfinished is closed
        first: the counts and the listing are made anew)."""
        if self.running is not None:
            self.running.close()
        self.running = self._objects()
        return self.running

    def _objects(self) -> Generator[LabeledObject, None, None]:
        counts = self.make()
        with contextlib.ExitStack() as stack:
            objects: Iterable[LabeledObject] = self.all_objects(counts.stats)
            if self.listing is not None:
                objects = listed(objects, stack.enter_context(open(self.listing, "w", encoding="utf-8")))
            for obj in objects:
                counts.add(obj)
                yield obj
        self.result = counts

    def finish(self) -> _Counts:
        """The counts, from a pass of their own when no transform's pass went to the end."""
        if self.result is None:
            self.progress.at("counting for the report")
            for _ in self.objects():
                pass
        assert self.result is not None
        return self.result


def check_out_dir(out_dir: Path) -> None:
    """Raise unless `out_dir` is free for collect, which replaces it as a whole: missing, empty, or
    a dataset collect wrote before (its report.json has a report_version) holding only the files
    collect wrote there (report.json's "files"; a dataset collected before they were recorded: any),
    none of them changed since (its "checksums", when it has them: changed_files) and no table or
    view of another's in its gtrun.duckdb."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CollectError(f"{out_dir}: a file, not a folder for the dataset")
    hydra = next((p for p in (out_dir, *out_dir.parents) if p.name == ".hydra"), None)
    if hydra is not None and (hydra / "config.yaml").is_file():  # reproduce and diff read that record
        raise CollectError(f"{out_dir}: inside a run's .hydra folder, Hydra's record of the run"
                           "\n  hint: write the dataset elsewhere (--out)")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    try:
        report_json = orjson.loads((out_dir / "report.json").read_bytes())
        ours = isinstance(report_json, dict) and "report_version" in report_json
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise CollectError(f"{out_dir} holds files collect did not write, and collect replaces the folder as a whole"
                           "\n  hint: write the dataset to a new folder (--out)")
    files = report_json.get("files")
    if not isinstance(files, list):
        return  # collected before collect recorded its files
    known = {*map(str, files), transforms.DATABASE + ".wal"}  # DuckDB's log, while a client has the view open
    folders = tuple(f for f in known if f.endswith("/"))  # every file under them is collect's (copied images)
    other = sorted(rel for p in out_dir.rglob("*") if p.is_file()
                   and (rel := p.relative_to(out_dir).as_posix()) not in known and not rel.startswith(folders))
    if other:
        raise CollectError(f"{out_dir} is a dataset collect wrote, but it now also holds {_few(other)}, which collecting "
                           "again would delete with the rest\n  hint: move them out of the folder first")
    checksums = report_json.get("checksums")
    changed = changed_files(out_dir, checksums) if isinstance(checksums, dict) else []  # none: collected before
    if changed:
        raise CollectError(f"{out_dir} is a dataset collect wrote, but {_few(changed)} changed since collect wrote "
                           f"{'it' if len(changed) == 1 else 'them'}, which collecting again would overwrite"
                           "\n  hint: copy your edits elsewhere first, or collect into another folder (--out); "
                           "delete a changed file to let collect write it anew")
    database = out_dir / transforms.DATABASE
    made = _made_in(database, keep=_slug(str(report_json.get("dataset", ""))))
    if made:
        raise CollectError(f"{database} holds {_few(made)}, which "
                           "collect did not create and collecting again would delete with the database"
                           "\n  hint: copy them to a database of your own first (ATTACH 'mine.duckdb'; "
                           "CREATE TABLE mine.<name> AS FROM <name>)")


def split_leaks(folder: Path, load_files: Sequence[tuple[str, str]], engine: DuckDBConfig, spill: Path, *,
                hashes: tuple[str, Path] | None = None) -> dict[str, Any] | None:
    """How many values of the object's input (its `source` text, else its `source-ref` image:
    transforms.LEAK_FIELDS) the dataset's split files hold in more than one split: {field, values,
    objects (the rows that have them)}; None when the files have neither field. Ground Truth's
    object id is the object's position in its job, so the same text twice (a retweet, a source
    table with repeats) is split by two ids, and a model is tested on what it was trained on;
    transforms.split.key=<field> keeps it in one.

    Read from `hashes` (the field, and the columnar pass's file of each kept object's split and
    hash: Columnar.write's `inputs`), else from the files load_dataset loads (`load_files`: (split,
    path in `folder`)): hf/'s Parquet by DuckDB, jsonl/'s lines by Python a line at a time into a
    file in `spill` (_hash_lines; DuckDB's JSON reader holds a line in buffers of twice its size,
    and the parser's path takes manifest lines of any size). Counted by DuckDB (LEAKS_SQL) by a
    64-bit hash of each value, under backend.duckdb's memory limit, spilling into `spill`."""
    import duckdb

    config: dict[str, Any] = {"memory_limit": engine.memory_limit, "temp_directory": str(spill)}
    if engine.threads:
        config["threads"] = engine.threads
    pairs = spill / f".inputs.{uuid.uuid4().hex[:8]}.parquet"  # _hash_lines' file
    try:
        with duckdb.connect(config=config) as con:
            con.execute("SET enable_progress_bar = false")
            found: tuple[str, str] | None
            if hashes is not None:
                found, how = (hashes[0], _parquet_rows(hashes[1])), "the columnar pass's hashes"
            elif load_files[0][1].endswith(".parquet"):
                found, how = _split_rows(con, folder, load_files), "the split files"
            else:
                spill.mkdir(parents=True, exist_ok=True)
                name = _hash_lines(folder, load_files, pairs)
                found, how = (name, _parquet_rows(pairs)) if name is not None else None, "the split files"
            if found is None:
                return None
            values, objects = con.execute(LEAKS_SQL.format(rows=found[1])).fetchone() or (0, 0)
    finally:
        pairs.unlink(missing_ok=True)
    log.info("collect: %d %s values in more than one split (%d objects), counted from %s", values, found[0],
             objects, how)
    return {"field": found[0], "values": int(values), "objects": int(objects)}


def _parquet_rows(path: Path) -> str:
    """SQL of the (s, h) rows of a Parquet file (Columnar.write's `inputs`, _hash_lines')."""
    return f"SELECT s, h FROM read_parquet({sql_string(str(path))})"


def _leak_field(names: Iterable[str]) -> str | None:
    """The field of transforms.LEAK_FIELDS among the split files' `names`, if any."""
    seen = set(names)
    return next((f for f in transforms.LEAK_FIELDS if f in seen), None)


def _hash_lines(folder: Path, load_files: Sequence[tuple[str, str]], into: Path) -> str | None:
    """The jsonl split files' (s: the split's position in `load_files`, h: a 64-bit BLAKE2b of the
    field's value, rows without one left out), read a line at a time and written to the Parquet
    file `into`; the field of transforms.LEAK_FIELDS they have, or None (no file written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with (folder / load_files[0][1]).open("rb") as lines:
        field_name = _leak_field(k for line in islice(lines, 1000) if line.strip() for k in orjson.loads(line))
    if field_name is None:
        return None
    schema = pa.schema([("s", pa.int8()), ("h", pa.uint64())])

    def hashed(path: str) -> Iterator[int]:
        with (folder / path).open("rb") as lines:
            for line in lines:
                value = orjson.loads(line).get(field_name) if line.strip() else None
                if value is not None:
                    text = value if isinstance(value, str) else orjson.dumps(value).decode()
                    yield int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")

    with pq.ParquetWriter(into, schema) as writer:
        for s, (_, path) in enumerate(load_files):
            values = hashed(path)
            while batch := list(islice(values, 100_000)):
                writer.write_batch(pa.record_batch([pa.array([s] * len(batch), pa.int8()),
                                                    pa.array(batch, pa.uint64())], schema=schema))
    return field_name


# split_leaks' count of the values (h) in more than one split (s) and of the rows that have them: the
# values of the splits after the first (validation and test, the smaller ones) grouped, and the
# first split's rows looked up among them (a table of every value would hold the train split's too)
LEAKS_SQL = """
WITH r AS NOT MATERIALIZED (SELECT s, h FROM ({rows}) WHERE h IS NOT NULL),
  others AS (SELECT h, count(*) AS n, min(s) < max(s) AS apart FROM r WHERE s > 0 GROUP BY h),
  first AS (SELECT h, count(*) AS n FROM r WHERE s = 0 AND h IN (SELECT h FROM others) GROUP BY h)
SELECT count(*), coalesce(sum(o.n + coalesce(f.n, 0)), 0)
FROM others AS o LEFT JOIN first AS f USING (h)
WHERE f.h IS NOT NULL OR o.apart
"""


def _split_rows(con: Any, folder: Path, load_files: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """(the field of transforms.LEAK_FIELDS the Parquet split files have, SQL of their rows' (s: the
    split's position in `load_files`, h: the field's value's hash; rows without one left out)), or None."""
    first = sql_string(str(folder / load_files[0][1]))
    field_name = _leak_field(row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet({first})").fetchall())
    if field_name is None:
        return None
    value = sql_name(field_name)
    return field_name, " UNION ALL ".join(f"SELECT {i} AS s, hash({value}) AS h FROM read_parquet("
                                          f"{sql_string(str(folder / path))}) WHERE {value} IS NOT NULL"
                                          for i, (_, path) in enumerate(load_files))


def file_checksums(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each named file (a path relative to `folder`) -> {"bytes", "mtime_ns", "sha256"}; the files
    are hashed a few at a time (hashlib lets go of the GIL), largest first."""
    def one(name: str) -> dict[str, Any]:
        stat = (folder / name).stat()
        return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(folder / name)}

    ordered = sorted(names, key=lambda name: -(folder / name).stat().st_size)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="gtrun-checksums") as pool:
        return dict(sorted(zip(ordered, pool.map(one, ordered), strict=True)))


def changed_files(folder: Path, checksums: Mapping[str, Any]) -> list[str]:
    """The files of `checksums` (file_checksums) whose bytes in `folder` are not the ones recorded;
    a file since deleted is not among them. Only a file whose size is the same and whose mtime is
    not is read: the same size and mtime say it is the file collect wrote, as they do to rsync and
    make, so that collecting again does not read a dataset of GBs through."""
    changed = []
    for name, was in sorted(checksums.items()):
        path = folder / name
        try:
            stat = path.stat()
            if not isinstance(was, dict) or stat.st_size != was.get("bytes"):
                changed.append(name)
            elif stat.st_mtime_ns != was.get("mtime_ns") and sha256_file(path) != was.get("sha256"):
                changed.append(name)
        except FileNotFoundError:
            continue
        except OSError:  # a folder where the file was, a file it may not read: what it holds cannot be known
            changed.append(name)
    return changed


def _few(names: Sequence[str]) -> str:
    """The first names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _slug(dataset: str) -> str:
    """The dataset's name as a folder, file and view name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset) or "dataset"


def _made_in(database: Path, keep: str) -> list[str]:
    """The tables and views of the dataset's DuckDB database other than collect's view `keep`;
    none when there is no database. One it cannot read (another program holds it open for
    writing, say) is a CollectError: what it holds cannot be known, and would go with the dataset."""
    import duckdb

    if not database.is_file():
        return []
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        held = "lock" in reason.lower()
        raise CollectError(f"{database}: cannot read it ({reason}), so collect cannot tell whether it holds tables "
                           "of yours, which collecting again would delete with the database"
                           + ("\n  hint: close the program that has it open (a duckdb shell, a notebook), then "
                              "collect again" if held else "\n  hint: if it is damaged, delete it (collect makes it "
                              "anew), or collect into another folder (--out)")) from None
    try:
        rows = con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
                           "ORDER BY table_name").fetchall()
    finally:
        con.close()
    return [name for (name,) in rows if name != keep]


def listed(objects: Iterable[LabeledObject], listing: Any) -> Iterator[LabeledObject]:
    """The objects, each failed or unlabeled one also written to `listing` (report.NOT_LABELED)."""
    for obj in objects:
        if obj.status is not Status.labeled:
            listing.write(report.not_labeled_line(obj) + "\n")
        yield obj


def columnar_of(outputs: Sequence[Output], settings: TransformsConfig, labels: Sequence[str],
                spill: Path | None = None) -> Any:
    """The columnar reading of a single staged output (Output.staged) without worker answers, or
    None. `spill`: where DuckDB spills."""
    from runner.collect.columnar import Columnar

    out = outputs[0] if len(outputs) == 1 else None
    if out is None or out.attribute is None:
        return None
    assert out.is_staged, "columnar_of reads staged outputs: their worker answers are known"
    path = out.local
    if path is None or not Columnar.takes(out.task_type, settings):
        return None
    if out.answers is not None:
        return None  # answers come from the worker-response files: the Python path joins them
    engine = out.settings.backend.duckdb if out.settings is not None else DuckDBConfig()
    return Columnar.open(path, attribute=out.attribute, task_type=out.task_type, labels=labels,
                         settings=settings, memory_limit=engine.memory_limit, threads=engine.threads,
                         temp_directory=spill)


MARKER = "gtrun-dataset.json"  # in a dataset's S3 folder: which dataset made its Athena table


def register_on_athena(settings: Any, table_file: Path, name: str, *, dataset: Path) -> str:
    """aws: the table goes to S3 and an external table over it is created through Athena.

    The dataset's S3 folder (`datasets/<name>/`) records which local dataset made its table
    (MARKER, written once the table is made): that one's table is made anew, with the columns of
    the files written now; a folder another dataset of the same name made is refused, and a table
    of that name that collect did not make stays (CREATE refuses to replace it)."""
    import pyarrow.parquet as pq

    from runner.build.sql import Query
    from runner.io.backends import AwsBackend, backend_for

    b = settings.backend
    root = "/".join(p for p in (f"s3://{b.bucket}", b.prefix.strip("/"), "datasets", name) if p)
    folder = f"{root}/table"
    backend = backend_for(settings)
    assert isinstance(backend, AwsBackend)  # collect registers tables for the aws backend only
    table = athena_name(name)
    database = b.athena.database or settings.source.database
    mine = {"dataset": str(dataset.resolve()), "table": f"{database}.{table}"}
    made = _marker(backend.storage, f"{root}/{MARKER}")
    if made is not None and made.get("dataset") != mine["dataset"]:
        raise CollectError(f"{root}/ holds the Athena table {made.get('table')} of another dataset of the name "
                           f"{name!r} ({made.get('dataset')}), which registering this one would replace"
                           f"\n  hint: the dataset is complete in {dataset}; collect it into a folder of another "
                           "name (--out) to register its table")
    ddls = [transforms.athena_table_ddl(table, folder, transforms.athena_columns(pq.read_schema(table_file)),
                                        database=database)]
    if made is not None:
        ddls.insert(0, transforms.athena_drop_ddl(table, database=database))
    # the file first: a table is never made over a folder whose file did not arrive (nor left made
    # without the marker that lets the next collect replace it)
    backend.storage.put_file(table_file, f"{folder}/{table_file.name}")
    source = backend.open_source()
    try:
        for ddl in ddls:
            source.wait(source.start(Query(ddl, (), (), None)))
    except GtrunError as exc:  # the dataset is written; only its table is not
        raise CollectError(f"the Athena table {database}.{table} over {folder}/: {str(exc).removeprefix('source: ')}"
                           f"\n  hint: the dataset is complete in {dataset}; collect again to register the "
                           "table (a table of that name that collect did not make stays: collect into a folder "
                           "of another name with --out)") from None
    finally:
        source.close()
    backend.storage.put_bytes(f"{root}/{MARKER}", json.dumps(mine).encode())
    return f'"{database}"."{table}"'  # as a SELECT names it (a sweep's name starts with a digit)


def _marker(storage: Store, uri: str) -> dict[str, Any] | None:
    """The record of which dataset made the table (register_on_athena), None when there is none."""
    if not storage.exists(uri):
        return None
    try:
        found = json.loads(storage.get_bytes(uri))
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise CollectError(f"{uri}: not the record collect writes of the dataset that made the table; "
                           "collect cannot tell whose table it is\n  hint: collect into a folder of another name (--out)")
    return found


def athena_name(name: str) -> str:
    """A dataset's name as an Athena table's: lower-case letters, digits and underscores.

    >>> athena_name("tweets-Xbox"), athena_name("ÄÖ 2")
    ('tweets_xbox', '___2')
    """
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def seen_labels(objects: Iterable[LabeledObject]) -> list[str]:
    """The label names an output uses, in Ground Truth's class index order (transforms.label_order):
    the first name of each class index in the class-maps, else in a single-label line (its value
    is the index, its class-name the name); then the names of indices never seen, by first use.
    columnar.Columnar finds the same in its pass."""
    by_map: dict[int, str] = {}
    by_value: dict[int, str] = {}
    seen: dict[str, None] = {}
    for obj in objects:
        class_map = obj.metadata.get("class-map")
        for key, name in class_map.items() if isinstance(class_map, dict) else ():
            if parse.index_text(str(key)) and name is not None:
                by_map.setdefault(int(key), str(name))
        if obj.task_type is TaskType.text_classification and obj.label is not None and obj.value is not None:
            by_value.setdefault(int(obj.value), obj.label)  # parse checked: an index, as int or digits
        for name in (obj.label, *obj.labels, *(b.label for b in obj.boxes), *(e.label for e in obj.entities)):
            if name:
                seen.setdefault(name, None)
    return transforms.label_order({**by_value, **by_map}, seen)


def unlabeled_lines(run_dir: Path) -> Generator[bytes, None, None]:
    """The run's input-manifest lines whose objects its job did not label (failed, expired, stopped).

    The labeled objects are known by an 8-byte digest of their input fields, kept sorted in an
    array: 8 MB per million labeled objects, where their text would be hundreds."""
    import bisect
    from array import array

    def digest(inputs: Any) -> int:
        text = json.dumps(inputs, sort_keys=True).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")

    out = from_run(run_dir)
    done = array("Q", (digest(obj.inputs) for obj in objects_of(out, TransformsConfig(), answers=False)
                       if obj.status.value == "labeled"))
    done = array("Q", sorted(done))
    with open(run_dir / "manifest.jsonl", "rb") as src:
        for raw in src:
            if not raw.strip():
                continue
            d = digest(json.loads(raw))
            i = bisect.bisect_left(done, d)
            if i == len(done) or done[i] != d:
                yield raw if raw.endswith(b"\n") else raw + b"\n"


MEMBER_KEYS = ("job", "status", "config_sha256", "source_files", "workers_per_object", "usd_per_task", "created",
               "ended")  # what a merged card records of each member (as from_run's provenance has them)


def continuations(outputs: Sequence[Output]) -> None:
    """Mark each output whose run another of them continues (gtrun continue): the objects its job
    did not label are the continuation's, so they are counted and listed there, once."""
    runs = {str(Path(str(o.provenance["run"])).resolve()): o for o in outputs if o.provenance.get("run")}
    for o in outputs:
        continues = o.provenance.get("continues")
        continued = runs.get(str(Path(str(continues)).resolve())) if continues else None
        if continued is not None and continued is not o:
            continued.continued_by = o.name


def continued_elsewhere(outputs: Sequence[Output]) -> list[dict[str, str]]:
    """The collected runs that a run not collected with them continues (gtrun continue), each as
    {"member": its name as the card's members have it, "run", "continuation": the continuing run}:
    the objects such a run's job did not label were given to that run's job, so the dataset lists
    them as not labeled while their labels are elsewhere. Continuations are found as
    record.Run.continuations finds them (lineage.json's `continues`, under the outputs folder a
    run is in), with one walk over each outputs folder."""
    from runner.record import Run

    runs = {str(Path(str(o.provenance["run"])).resolve()): o for o in outputs if o.provenance.get("run")}
    if not runs:
        return []
    roots = {next((p for p in Path(run).parents if p.name == "outputs"), Path("outputs").resolve()) for run in runs}
    found: dict[str, list[Path]] = {}
    for root in sorted(roots):
        for lineage in sorted(root.glob("**/lineage.json")):
            here = lineage.parent.resolve()
            if str(here) in runs:
                continue  # collected with the run it continues (continuations marks that one)
            with contextlib.suppress(OSError, ValueError, AttributeError, GtrunError):
                continued = Run(lineage.parent).continues()  # where it is now: the project may have moved
                if continued is not None and str(continued.resolve()) in runs:
                    found.setdefault(str(continued.resolve()), []).append(here)
    qualified = several_folders(outputs)
    return [{"member": _member_name(o, qualified=qualified), "run": str(o.provenance["run"]),
             "continuation": str(later)}
            for run, o in runs.items() for later in found.get(run, [])]


def run_folders(outputs: Iterable[Output]) -> set[Path]:
    """The folders the runs collected together are in (a sweep's, a day's under outputs/runs)."""
    return {Path(str(o.provenance["run"])).parent for o in outputs if o.provenance.get("run")}


def several_folders(outputs: Iterable[Output]) -> bool:
    """Whether the runs collected together are in more than one folder (several sweeps, or a sweep
    and a run): a member is then named after its folder too (_member_name's `qualified`)."""
    return len(run_folders(outputs)) > 1


def merged_provenance(outputs: Iterable[Output], left_out: Sequence[str] | None = None) -> dict[str, Any]:
    """The card's provenance of the outputs collected together: one output's own, else the sweep's
    with a row per member (MEMBER_KEYS). `left_out`: the sweep's members collect leaves out
    (left_out_members); None: those of the folder the members are in, when they are several."""
    members = list(outputs)
    folders = run_folders(members)
    several = len(folders) > 1  # several sweeps: a member is named with its folder's name (each has a 0_<dataset>)
    sweep = next(iter(folders)) if len(folders) == 1 and is_sweep(next(iter(folders))) else None
    if left_out is None:
        left_out = left_out_members(sweep) if len(members) > 1 and sweep is not None else []
    extra = {"left_out": list(left_out)} if left_out else {}
    if len(members) == 1:
        return {**members[0].provenance, **extra}
    workers = {o.provenance.get("workers_per_object") for o in members}
    where: dict[str, Any] = ({"folders": sorted(str(f) for f in folders)} if several
                             else {"sweep": str(sweep)} if sweep is not None else {})
    return {**where,
            "jobs": [o.name for o in members],
            "workers_per_object": sorted(w for w in workers if isinstance(w, int)),
            "gtrun_version": __version__,
            "members": [{"member": _member_name(o, qualified=several), **{k: o.provenance.get(k) for k in MEMBER_KEYS},
                         **({"continues": o.provenance["continues"]} if o.provenance.get("continues") else {})}
                        for o in members],
            **extra}


OpenFn = Callable[[str], Any]
