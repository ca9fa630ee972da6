"""`gtrun collect`: a finished job's output -> `dataset/` (transforms), report.html/.json and a card.

Works the same on both backends (the local labeling service writes Ground Truth's layout), for a
run directory, for every member of a sweep (merged, with provenance), and for output manifests of
jobs gtrun did not launch.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from runner import __version__
from runner.collect import parse, report, transforms
from runner.collect.progress import Progress
from runner.collect.records import LabeledObject, Status
from runner.errors import GtrunError, RecordError
from runner.io.store import LocalStore, Store
from runner.schema import DuckDBConfig, OnError, TaskType, TransformsConfig

TERMINAL = ("Completed", "Stopped", "Failed")
PEEK_LINES = 1_000  # lines read to name the label attributes an output has

log = logging.getLogger(__name__)


class CollectError(GtrunError):
    """The output cannot be collected (yet)."""


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
        if self.storage is not None and self.output_path is not None:
            answers = folder / f".{tag}.answers"
            progress.at("reading worker answers")
            files = parse.worker_response_files(self.output_path, self.name, list_fn=self.storage.list, folder=folder)
            count = parse.stage_worker_responses(files, answers, open_fn=self.storage.open_read,
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
        except (OSError, ValueError) as exc:
            raise CollectError(f"{self.manifest_uri}: cannot read the output manifest ({exc})") from None

    def responses(self) -> contextlib.AbstractContextManager[Any]:
        """Its worker answers by object id (what attach_answers reads): the staged file's, else (not
        staged) all of them, read now."""
        if self.answers is not None:
            return parse.StagedAnswers(self.answers)
        if self.is_staged or self.storage is None or self.output_path is None:
            return contextlib.nullcontext({})
        return contextlib.nullcontext(parse.read_worker_responses(
            self.output_path, self.name, list_fn=self.storage.list, open_fn=self.storage.open_read))


def from_run(run_dir: Path) -> Output:
    """The output of a recorded run's job (it must have ended: Ground Truth writes it then)."""
    import json

    from runner.io.backends import backend_for
    from runner.record import Run

    run = Run.at(run_dir)
    settings = run.settings()
    try:
        request = json.loads((run_dir / "request.json").read_text())
    except OSError:
        raise RecordError(f"{run_dir}: not a submitted gtrun run (request.json is missing)") from None
    name = request["LabelingJobName"]
    backend = backend_for(settings)
    with backend.labeling() as service:
        job = service.describe_labeling_job(name)
    status = job["LabelingJobStatus"]
    if status not in TERMINAL or "LabelingJobOutput" not in job:
        raise CollectError(f"{name} is {status}: Ground Truth writes its output manifest when the job ends",
                           ) if status not in TERMINAL else CollectError(f"{name} ended ({status}) with no output")
    output_path = request["OutputConfig"]["S3OutputPath"].rstrip("/")
    lineage = json.loads((run_dir / "lineage.json").read_text()) if (run_dir / "lineage.json").is_file() else {}
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
    }
    return Output(name=name, manifest_uri=job["LabelingJobOutput"]["OutputDatasetS3Uri"],
                  storage=backend.storage, task_type=settings.template.task_type,
                  attribute=request["LabelAttributeName"], labels=list(settings.template.labels),
                  output_path=output_path, provenance=provenance, settings=settings)


def identified(out: Output, on_error: OnError = OnError.stop) -> Output:
    """The output with its label attribute and task type, read off its first lines when not given
    (parse.identify)."""
    if out.attribute is not None and out.task_type is not None:
        return out
    with out.open() as src:
        attribute, task_type = parse.identify(src, attribute=out.attribute, task_type=out.task_type,
                                              on_error=on_error)
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


def sweep_members(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep, in job order."""
    members = sorted((p.parent for p in sweep_dir.glob("*/request.json")),
                     key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30, p.name))
    if not members:
        raise RecordError(f"{sweep_dir}: neither a submitted run nor a sweep of runs")
    return members


def objects_of(out: Output, settings: TransformsConfig, stats: parse.ParseStats | None = None,
               tag: str | None = None, *, answers: bool = True, progress: Progress | None = None,
               ) -> Iterator[LabeledObject]:
    """Stream one output's objects (with their worker answers, unless not `answers`); `tag`: a sweep
    member's name; `progress` hears how far the pass is."""
    with out.responses() if answers else contextlib.nullcontext({}) as responses, out.open() as src:
        parser = parse.Parser(attribute=out.attribute, task_type=out.task_type, labels=out.labels or None,
                              on_error=settings.on_error, stats=stats, loads=orjson.loads)  # ~1.7x json
        local = out.local
        lines = (progress or Progress()).lines(src, local.stat().st_size if local is not None else None)
        for obj in parse.attach_answers(parser.parse_lines(lines), responses):
            if tag is not None:
                obj = replace(obj, object_id=f"{tag}/{obj.object_id}", inputs={**obj.inputs, "gtrun_job": tag})
            yield obj


def collect(outputs: Sequence[Output], out_dir: Path, settings: TransformsConfig, *,
            dataset: str, provenance: Mapping[str, Any], use_columnar: bool = True,
            show: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Transform, report and describe the outputs into `out_dir` (written aside, then moved in place).

    The report and the jsonl and Parquet table transforms take the columnar path (DuckDB, see
    runner.collect.columnar) when it can read the output; `use_columnar=False` keeps them on the
    Python parser, which writes the same files. `show` hears what collect is doing, a line at a
    time (runner.collect.progress)."""
    progress = Progress(show)
    if not outputs:
        raise CollectError("nothing to collect")
    out_dir = out_dir.resolve()
    check_out_dir(out_dir)
    outputs = [identified(o, settings.on_error) for o in outputs]
    kinds = {o.task_type for o in outputs}
    if len(kinds) != 1:
        raise CollectError(f"the outputs mix task types ({', '.join(sorted(str(k) for k in kinds))})")
    labels = list(dict.fromkeys(label for o in outputs for label in o.labels))
    merged = len(outputs) > 1

    def factory(stats: parse.ParseStats | None = None) -> Iterator[LabeledObject]:
        for o in outputs:
            yield from objects_of(o, settings, stats, tag=o.name if merged else None, progress=progress)

    slug = _slug(dataset)
    staging = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}.part")
    work = staging / slug  # transforms name their files after the folder (the dataset)
    work.mkdir(parents=True)
    try:
        outputs = [o.staged(staging, str(i), progress) for i, o in enumerate(outputs)]
        # no labels (output gtrun did not launch, given no --labels): they are read off the output, by
        # the columnar pass when it takes the output, else by the parser first
        fast = columnar_of(outputs, settings, labels) if use_columnar else None
        task_type = next(iter(kinds)) or TaskType.custom
        if fast is not None:
            progress.at("reading with DuckDB")
        done = transforms.columnar_steps(fast, work, steps=settings.steps, settings=settings, labels=labels,
                                         task_type=task_type, progress=progress) if fast is not None else None
        if done is not None:
            result, fast_written = done
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
        # the parser's path counts the report in the first transform's pass over the objects
        counting = None if done is not None else _ReportPass(
            factory, work / report.NOT_LABELED, progress, task_type=task_type, labels=labels, dataset=dataset)
        first = [counting.objects()] if counting is not None else []
        slow_written = transforms.run_transforms(lambda: first.pop() if first else factory(), work, steps=rest,
                                                 settings=settings, labels=labels, task_type=task_type,
                                                 on_step=lambda name: progress.at(f"writing {name}")) if rest else {}
        if counting is not None:
            figures = counting.figures()
        counts = figures["counts"]
        if counts["objects"] and not counts["labeled"] and not counts["failed"]:
            for o in outputs:
                check_attribute(o)
        written = {k: fast_written.get(k) or slow_written[k] for k in settings.steps}
        card_provenance = {**provenance, "collected": datetime.now().isoformat(timespec="seconds"),
                           "transforms": ", ".join(settings.steps) or "none",
                           "split": f"train {settings.split.train} / validation {settings.split.validation} / "
                                    f"test {settings.split.test} (salt {settings.split.salt!r}"
                                    + (f", by {settings.split.key}" if settings.split.key is not None else "") + ")"}
        card = report.write_card(work, card_provenance, figures)
        if card.parent != work:  # the collected folder is the dataset itself: its card is README.md
            text = card.read_text(encoding="utf-8").replace("](../", "](")  # its links: the folder's files
            (work / "README.md").write_text(text, encoding="utf-8")
            shutil.rmtree(card.parent, ignore_errors=True)
        # what collect leaves in the folder, so that collecting again replaces these and nothing else
        figures["files"] = sorted({*(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()),
                                   "report.json", "report.html"})
        report.write_report(figures, work)
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
        athena = register_on_athena(settings0, table_file, slug)
        return {"report": figures, "written": {**written, "athena": athena}}
    return {"report": figures, "written": written}


class _ReportPass:
    """The report's counts and not_labeled.jsonl, made in a pass over the objects that also feeds a
    transform (`objects`), or in a pass of its own when none read them all (`figures`)."""

    def __init__(self, objects: Callable[[parse.ParseStats], Iterator[LabeledObject]], listing: Path,
                 progress: Progress, **report_args: Any) -> None:
        self.all_objects, self.listing, self.progress, self.report_args = objects, listing, progress, report_args
        self.result: dict[str, Any] | None = None
        self.running: Generator[LabeledObject, None, None] | None = None

    def objects(self) -> Generator[LabeledObject, None, None]:
        """The objects of all outputs, counted for the report as they pass (a pass left unfinished
        is closed first: the listing is written anew)."""
        if self.running is not None:
            self.running.close()
        self.running = self._objects()
        return self.running

    def _objects(self) -> Generator[LabeledObject, None, None]:
        builder = report.ReportBuilder(**self.report_args)
        stats = parse.ParseStats()
        with open(self.listing, "w", encoding="utf-8") as listing:
            for obj in listed(self.all_objects(stats), listing):
                builder.add(obj)
                yield obj
        self.result = builder.figures()
        self.result["parse"] = {"lines": stats.lines, "skipped": stats.skipped_count,
                                "skipped_lines": [list(x) for x in stats.skipped]}

    def figures(self) -> dict[str, Any]:
        """The report's figures, from a pass of its own when no transform's pass went to the end."""
        if self.result is None:
            self.progress.at("counting for the report")
            for _ in self.objects():
                pass
        assert self.result is not None
        return self.result


def check_out_dir(out_dir: Path) -> None:
    """Raise unless `out_dir` is free for collect, which replaces it as a whole: missing, empty, or
    a dataset collect wrote before (its report.json has a report_version) holding only the files
    collect wrote there (report.json's "files"; a dataset collected before they were recorded: any)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CollectError(f"{out_dir}: a file, not a folder for the dataset")
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
    other = sorted(rel for p in out_dir.rglob("*") if p.is_file() and (rel := p.relative_to(out_dir).as_posix()) not in known)
    if other:
        raise CollectError(f"{out_dir} is a dataset collect wrote, but it now also holds {_few(other)}, which collecting "
                           "again would delete with the rest\n  hint: move them out of the folder first")
    database = out_dir / transforms.DATABASE
    made = _made_in(database, keep=_slug(str(report_json.get("dataset", ""))))
    if made:
        raise CollectError(f"{database} holds {_few(made)}, which "
                           "collect did not create and collecting again would delete with the database"
                           "\n  hint: copy them to a database of your own first (ATTACH 'mine.duckdb'; "
                           "CREATE TABLE mine.<name> AS FROM <name>)")


def _few(names: Sequence[str]) -> str:
    """The first names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _slug(dataset: str) -> str:
    """The dataset's name as a folder, file and view name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset) or "dataset"


def _made_in(database: Path, keep: str) -> list[str]:
    """The tables and views of the dataset's DuckDB database other than collect's view `keep`;
    none when there is no database, or another program holds it open for writing (then it cannot
    be read, and its tables, if any, are that program's to keep)."""
    import duckdb

    if not database.is_file():
        return []
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.Error:
        return []
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


def columnar_of(outputs: Sequence[Output], settings: TransformsConfig, labels: Sequence[str]) -> Any:
    """The columnar reading of a single staged output (Output.staged) without worker answers, or None."""
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
                         settings=settings, memory_limit=engine.memory_limit, threads=engine.threads)


def register_on_athena(settings: Any, table_file: Path, name: str) -> str:
    """aws: the table goes to S3 and an external table over it is created through Athena."""
    import pyarrow.parquet as pq

    from runner.build.sql import Query
    from runner.io.backends import AwsBackend, backend_for

    if table_file.suffix != ".parquet":
        raise CollectError(f"transforms.steps.table.format: the aws backend registers Parquet tables only, "
                           f"not {table_file.suffix.lstrip('.')}")
    b = settings.backend
    folder = "/".join(p for p in (f"s3://{b.bucket}", b.prefix.strip("/"), "datasets", name, "table") if p)
    backend = backend_for(settings)
    assert isinstance(backend, AwsBackend)  # collect registers tables for the aws backend only
    backend.storage.put_file(table_file, f"{folder}/{table_file.name}")
    table = name.replace("-", "_").lower()
    database = b.athena.database or settings.source.database
    ddl = transforms.athena_table_ddl(table, folder, transforms.athena_columns(pq.read_schema(table_file)),
                                      database=database)
    source = backend.open_source()
    try:
        source.wait(source.start(Query(ddl, (), (), None)))
    finally:
        source.close()
    return f"{database}.{table}"


def seen_labels(objects: Iterable[LabeledObject]) -> list[str]:
    """The label names an output uses: class-map order where the metadata has one (the first name
    of each class index), then first use (columnar.Columnar finds the same in its pass)."""
    by_index: dict[int, str] = {}
    seen: dict[str, None] = {}
    for obj in objects:
        class_map = obj.metadata.get("class-map")
        for key, name in class_map.items() if isinstance(class_map, dict) else ():
            if str(key).isdigit() and name is not None:
                by_index.setdefault(int(key), str(name))
        for name in (obj.label, *obj.labels, *(b.label for b in obj.boxes), *(e.label for e in obj.entities)):
            if name:
                seen.setdefault(name, None)
    return transforms.label_order(by_index, seen)


def unlabeled_lines(run_dir: Path) -> Iterator[bytes]:
    """The run's input-manifest lines whose objects its job did not label (failed, expired, stopped)."""
    import json

    out = from_run(run_dir)
    done: set[str] = set()
    for obj in objects_of(out, TransformsConfig(), answers=False):
        if obj.status.value == "labeled":
            done.add(json.dumps(obj.inputs, sort_keys=True))
    with open(run_dir / "manifest.jsonl", "rb") as src:
        for raw in src:
            if raw.strip() and json.dumps(json.loads(raw), sort_keys=True) not in done:
                yield raw if raw.endswith(b"\n") else raw + b"\n"


def merged_provenance(outputs: Iterable[Output]) -> dict[str, Any]:
    members = list(outputs)
    if len(members) == 1:
        return dict(members[0].provenance)
    return {"sweep_members": [o.provenance.get("run", o.name) for o in members],
            "jobs": [o.name for o in members],
            "workers_per_object": sorted({str(o.provenance.get("workers_per_object")) for o in members}),
            "gtrun_version": __version__}


OpenFn = Callable[[str], Any]
