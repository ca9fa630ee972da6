"""Config that does not fit its data is refused before anything is written or submitted: a task
type whose data object field the manifest lines lack, and a source.params key the query never uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runner.build.sql import select_query, unused_params
from runner.build.template import TASK_OBJECT_FIELD, task_field_problems
from runner.errors import ConfigError
from runner.schema import SourceConfig, TaskType

CONF = Path(__file__).resolve().parent.parent / "conf"
ARTIFACTS = {"query.sql", "manifest.jsonl", "template.liquid", "label-categories.json", "request.json",
             "job.json", "lineage.json"}
BBOX_ON_TWEETS = ('error: template: a bounding_box job reads each object\'s image from "source-ref"; '
                  "the manifest lines have source, entity, tweet_id (from source.columns)")


def refused(gtrun, *args: str, verb: str, match: str | tuple[str, ...]):
    """`gtrun <verb> <args>` exits 2 with `match` in its error, and leaves no trace: no job, nothing
    in storage, no artifact in the run directory, no half-written file."""
    r = gtrun(verb, *args)
    assert r.code == 2, r.output
    for m in (match,) if isinstance(match, str) else match:
        assert m in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert gtrun.jobs() == []
    assert gtrun.stored_objects() == []
    assert not list(gtrun.storage.rglob("*.part"))
    outputs = gtrun.cwd / "outputs"
    assert not [p for p in outputs.rglob("*") if p.name in ARTIFACTS or p.name.endswith(".part")]
    return r


def planned(gtrun, *args: str):
    r = gtrun("plan", *args)
    assert r.code == 0, r.output
    return r


# -- the task type must read a field the manifest lines have ------------------------------------

@pytest.mark.parametrize("verb", ["run", "plan"])
def test_an_image_task_on_text_rows_is_refused(gtrun, verb):
    """The user's report: bounding boxes on tweets passed and the worker page showed a 404."""
    r = refused(gtrun, "template=bounding_box", "source.limit=2", verb=verb, match=(
        BBOX_ON_TWEETS, "hint: map a column of s3:// image URIs to source-ref in source.columns",
        "or pick a text template (task_type text_classification, text_multilabel, named_entity or custom)"))
    assert r.stderr.count("error:") == 1 and "config problems" not in r.stderr, r.stderr


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_text_task_on_image_rows_is_refused(gtrun, verb):
    refused(gtrun, "source=receipts", "template=text_classification", verb=verb, match=(
        'error: template: a text_classification job reads each object\'s text from "source"; the manifest '
        "lines have source-ref, height, receipt_id, tokens, width (from source.columns)",
        "hint: map a column of text to source in source.columns, or pick an image template "
        "(task_type bounding_box or custom)"))


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_select_star_is_checked_once_its_fields_are_known(gtrun, verb):
    """`SELECT *` names its fields only when the source is opened: still refused before any row."""
    sql = ("source.sql='SELECT *, tweet_text AS source FROM ml_workshop_db.labeling_prediction "
           "ORDER BY tweet_id LIMIT 2'")
    refused(gtrun, sql, "~source.params.threshold", "template=bounding_box", verb=verb, match=(
        'error: template: a bounding_box job reads each object\'s image from "source-ref"; the manifest lines '
        "have source, tweet_id,", "(from source.sql)", 'alias a column of s3:// image URIs AS "source-ref" in source.sql'))


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_custom_template_reading_a_field_the_lines_lack_is_refused(gtrun, verb):
    refused(gtrun, "source=receipts", "template=custom", verb=verb, match=(
        "- template.file: custom.liquid uses task.input.source (line 17), which the query does not provide",
        "hint: the manifest has: height, receipt_id, source-ref, tokens, width (from source.columns)",
        # the tweets job splits its dataset by the tweet's text, which the receipts do not have
        "- transforms.split.key: 'source' is not a field of the manifest (height, receipt_id, source-ref, tokens, "
        "width)\n  hint: name the field whose value identifies an object (a job preset sets one for its own "
        "data), or split by object id: transforms.split.key=null"))
    refused(gtrun, "job=receipts_ner", "source=tweets", verb=verb,
            match="error: template.file: receipts_ner.liquid uses task.input.width (line 33), task.input.height "
                  "(line 34), task.input.tokens (line 35), task.input.source-ref (line 40), task.input.receipt_id "
                  "(line 41), which the query does not provide")


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_custom_template_may_read_into_a_field_that_holds_an_object(gtrun, tmp_path, verb):
    """task.input.meta.product is there when the lines have meta: what meta holds is the data's to say,
    and the first line's check says it (a name meta's objects lack is still refused)."""
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": 1, "text": "a", "meta": {"product": "phone", "tags": ["x"]}}\n'
                    '{"id": 2, "text": "b", "meta": null}\n')
    page = tmp_path / "item.liquid"
    page.write_text('<crowd-form><p>{{ task.input.source }}: {{ task.input.meta.product }}</p>'
                    '{% for t in task.input.meta.tags %}<b>{{ t }}</b>{% endfor %}'
                    '<crowd-input name="note"></crowd-input></crowd-form>')
    args = ("template=custom", f"template.file={page}", f"source.files=[{data}]", "~source.params.threshold",
            "source.sql='SELECT text AS source, id, meta FROM ml_workshop_db.labeling_prediction ORDER BY id'")
    planned(gtrun, *args)  # run too checks before anything is written: refused below, or planned here
    page.write_text(page.read_text().replace("meta.product", "meta.prodcut"))
    r = gtrun(verb, *args)
    assert r.code == 2 and gtrun.jobs() == [], r.output
    assert f"error: template.file: {page} uses task.input.meta.prodcut (line 1), which the manifest line does not provide" \
        in r.stderr


def _bundled(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _fits(template: str, source: str) -> bool:
    """Which bundled template reads which bundled source: images (receipts) or text (tweets)."""
    images = {"bounding_box", "receipts_ner"}
    return (template in images) == (source == "receipts")


@pytest.mark.parametrize("template", _bundled("template"))
@pytest.mark.parametrize("source", _bundled("source"))
def test_every_bundled_template_plans_on_the_source_that_fits_it(gtrun, template, source):
    job = "job=receipts_ner" if source == "receipts" else "job=tweets_sentiment"
    args = (job, f"source={source}", f"template={template}", "source.limit=1")
    if _fits(template, source):
        planned(gtrun, *args)
    else:
        refused(gtrun, *args, verb="plan", match="error: template")


@pytest.mark.parametrize("job", _bundled("job"))
def test_bundled_jobs_pass(gtrun, job):
    planned(gtrun, f"job={job}", "source.limit=1")


def test_the_default_job_runs(gtrun):
    r = gtrun("run", "source.limit=2")
    assert r.code == 0, r.output
    assert len(gtrun.jobs()) == 1


def test_every_built_in_task_type_names_the_field_it_reads():
    """A new task type must say where its data object is, or the check lets it through."""
    assert set(TASK_OBJECT_FIELD) == set(TaskType) - {TaskType.custom}
    assert set(TASK_OBJECT_FIELD.values()) <= {"source", "source-ref"}


@pytest.mark.parametrize(("task", "fields", "problem"), [
    (TaskType.bounding_box, ["entity", "source", "tweet_id"],
     'template: a bounding_box job reads each object\'s image from "source-ref"; the manifest lines have '
     "source, entity, tweet_id (from source.columns)"),
    (TaskType.named_entity, ["source-ref", "id"],
     'template: a named_entity job reads each object\'s text from "source"; the manifest lines have '
     "source-ref, id (from source.columns)"),
    (TaskType.text_multilabel, ["id"],
     'template: a text_multilabel job reads each object\'s text from "source"; the manifest lines have '
     "id (from source.columns)"),
])
def test_task_field_problems_name_the_field_and_the_lines(task, fields, problem):
    (error,) = task_field_problems(task, fields, "source.columns")
    assert error.key == "template"
    assert str(error).splitlines()[0] == problem


@pytest.mark.parametrize(("task", "fields"), [
    (TaskType.bounding_box, ["source-ref", "id"]),
    (TaskType.text_classification, ["source", "id"]),
    (TaskType.text_multilabel, ["source"]),
    (TaskType.named_entity, ["id", "source"]),
    (TaskType.custom, ["source-ref"]),
    (TaskType.custom, ["anything"]),
])
def test_task_field_problems_none_when_the_field_is_there(task, fields):
    assert task_field_problems(task, fields, "source.columns") == []


def test_task_field_problems_hint_at_source_sql():
    (error,) = task_field_problems(TaskType.bounding_box, ["source"], "source.sql")
    assert '(from source.sql)' in str(error)
    assert 'hint: alias a column of s3:// image URIs AS "source-ref" in source.sql, or pick a text template' in str(error)


# -- every source.params key must be used by the query --------------------------------------------

@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_misspelled_param_is_refused_with_the_one_meant(gtrun, verb):
    """The user's report: +source.params.treshold=0.5 planned with threshold=0.8."""
    r = refused(gtrun, "+source.params.treshold=0.5", verb=verb, match=(
        "error: source.params.treshold: the query does not use :treshold (it uses :threshold, :entity)",
        "hint: did you mean source.params.threshold?"))
    assert r.stderr.count("error:") == 1 and "config problems" not in r.stderr, r.stderr


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_param_nothing_is_like_is_refused(gtrun, verb):
    refused(gtrun, "+source.params.batch=7", verb=verb, match=(
        "error: source.params.batch: the query does not use :batch (it uses :threshold, :entity)",
        "hint: write :batch in source.where, source.columns or source.order_by, or drop the key "
        "(~source.params.batch on the command line)"))


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_param_a_full_sql_query_does_not_use_is_refused(gtrun, verb):
    sql = ("source.sql='SELECT tweet_text AS source, tweet_id FROM ml_workshop_db.labeling_prediction "
           "WHERE score < :threshold ORDER BY tweet_id'")
    refused(gtrun, sql, "source.params.entity=Xbox", verb=verb, match=(
        "error: source.params.entity: the query does not use :entity (it uses :threshold)",
        "hint: write :entity in source.sql, or drop the key (~source.params.entity on the command line)"))


def test_these_problems_come_with_the_other_config_problems(gtrun):
    """Every config problem at once: an unused param, or a task that does not fit, beside a bad bucket."""
    refused(gtrun, "+source.params.treshold=0.5", "backend.bucket=No_Such", verb="plan",
            match=("2 config problems:", "- backend.bucket: 'No_Such' is not an S3 bucket name",
                   "- source.params.treshold: the query does not use :treshold"))
    refused(gtrun, "template=bounding_box", "backend.bucket=No_Such", verb="plan",
            match=("2 config problems:", "- backend.bucket: 'No_Such' is not an S3 bucket name",
                   "- template: a bounding_box job reads each object's image"))


def test_a_param_set_to_null_is_fine(gtrun):
    """Used, it binds SQL NULL; unused, it changes nothing (and Hydra's ~ cannot delete a null key)."""
    r = planned(gtrun, "source.params.entity=null", "source.limit=1")
    assert "entity=NULL" in r.stdout
    sql = ("source.sql='SELECT tweet_text AS source, tweet_id FROM ml_workshop_db.labeling_prediction "
           "WHERE score < :threshold ORDER BY tweet_id LIMIT 1'")
    planned(gtrun, sql)


def test_unused_params_unit():
    assert unused_params({"threshold": 0.8, "entity": None}, ["threshold", "entity", "entity"], "source.where") == []
    (typo,) = unused_params({"threshold": 0.8, "treshold": 0.5}, ["threshold"], "source.where")
    assert typo.key == "source.params.treshold"
    assert str(typo) == ("source.params.treshold: the query does not use :treshold (it uses :threshold)\n"
                         "  hint: did you mean source.params.threshold?")
    assert unused_params({"entity": None}, [], "source.sql") == []  # null: changes nothing, and ~ cannot drop it
    (none,) = unused_params({"x": 1}, [], "source.sql")
    assert str(none) == ("source.params.x: the query does not use :x (it uses no parameter)\n"
                         "  hint: write :x in source.sql, or drop the key (~source.params.x on the command line)")


def _tweets(**over) -> SourceConfig:
    base = dict(name="tweets", database="db", table="preds", columns={"source": "tweet_text", "tweet_id": "tweet_id"},
                where="score < :threshold AND (:entity IS NULL OR entity = :entity)",
                params={"threshold": 0.8, "entity": None}, order_by=["tweet_id"])
    base.update(over)
    return SourceConfig(**base)


def test_a_query_names_the_params_it_uses_and_the_others_are_named():
    query = select_query(_tweets(params={"threshold": 0.8, "entity": None, "treshold": 0.5}), "duckdb")
    (problem,) = unused_params({"threshold": 0.8, "entity": None, "treshold": 0.5}, query.param_names, "source.where")
    assert str(problem).startswith("source.params.treshold: the query does not use :treshold "
                                   "(it uses :threshold, :entity)")
    query = select_query(_tweets(params={"threshold": 0.8, "entity": None, "a": 1, "b": 2}), "duckdb")
    assert [e.key for e in unused_params({"threshold": 0.8, "entity": None, "a": 1, "b": 2}, query.param_names,
                                         "source.where")] == ["source.params.a", "source.params.b"]


def test_params_used_in_columns_order_by_or_sql_count_as_used():
    select_query(_tweets(columns={"source": ":prefix || tweet_text"}, where=None, order_by=["abs(score - :mid)"],
                         params={"prefix": ">", "mid": 0.5}), "athena")
    select_query(_tweets(sql="SELECT tweet_text AS source FROM db.preds WHERE score < :t ORDER BY 1",
                         params={"t": 0.5}), "duckdb")


def test_a_param_the_query_needs_but_misspelled_is_named_in_the_hint():
    with pytest.raises(ConfigError) as err:
        select_query(_tweets(params={"treshold": 0.8, "entity": None}), "duckdb")
    assert str(err.value) == ("source.where: uses parameter :threshold, which source.params does not set\n"
                              "  hint: add source.params.threshold=<value> (source.params.treshold is set: a misspelling?)")


@pytest.mark.parametrize("path", sorted((CONF / "source").glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_sources_use_every_param_they_set(path):
    raw = yaml.safe_load(path.read_text())
    keys = ("columns", "where", "params", "order_by", "limit", "sql", "database", "table")
    source = SourceConfig(name=path.stem, **{k: raw[k] for k in keys if k in raw})
    query = select_query(source, "duckdb")
    assert set(query.param_names) == set(source.params)


def test_a_recorded_run_with_a_param_its_query_does_not_use_is_continued_with_a_warning(gtrun):
    """Runs recorded before unused params were refused: continue (and reproduce) say it, and go on."""
    from runner.service.server import Service
    from tests.service_helpers import Worker

    assert gtrun("run", "source.limit=3").code == 0
    (run,) = gtrun.runs()
    overrides = run / ".hydra" / "overrides.yaml"  # what continue composes the run from
    overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), "+source.params.batch=7"]))
    name = json.loads((run / "request.json").read_text())["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        worker.answer(name, worker.task(name), {"crowd-classifier": {"label": "Positive"}})
        svc.app.state.jobs.stop(name)
    r = gtrun("continue", str(run))
    assert r.code == 0, r.output
    assert "warning: source.params.batch: the query does not use :batch" in r.stderr
    assert len(gtrun.jobs()) == 2


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_template_error_names_its_line_of_the_file_after_multiline_instructions(gtrun, tmp_path, verb):
    """template.instructions of several lines, filled in above a mistake, do not move the line named."""
    conf = tmp_path / "conf"
    (conf / "job").mkdir(parents=True)
    (conf / "job" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /template: custom\n"
        "template:\n  instructions: |\n    <p>one</p>\n    <p>two</p>\n    <p>three</p>\n")
    page = tmp_path / "page.liquid"
    page.write_text("<crowd-form>\n<short-instructions>{{ gtrun.instructions }}</short-instructions>\n"
                    "<p>{{ task.input.source }}</p>\n<p>{{ task.input.produkt }}</p>\n"
                    "<crowd-input name=\"note\"></crowd-input></crowd-form>\n")
    args = ("--config-dir", str(conf), "job=mine", f"template.file={page}")
    refused(gtrun, *args, verb=verb,
            match=f"error: template.file: {page} uses task.input.produkt (line 4), which the query does not provide")
    page.write_text(page.read_text().replace("{{ task.input.produkt }}", "{{ task.input.source | escapee }}"))
    for mistake, error in (("{{ task.input.source | escapee }}", "unknown filter 'escapee'"),
                           ("{{ gtrun.titel }}", "gtrun.titel is not a job value")):
        page.write_text(page.read_text().replace(page.read_text().splitlines()[3], mistake))
        r = gtrun(verb, *args)
        assert r.code == 2 and f"error: {page}:4: {error}" in r.stderr, r.output


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_crowd_element_without_an_attribute_it_needs_is_refused(gtrun, tmp_path, verb):
    """A bounding-box template written `label=` for `labels=` showed workers no label to draw with;
    a crowd-input without a name submitted nothing. Both are named with the line of the element."""
    page = tmp_path / "boxes.liquid"
    bundled = (CONF.parent / "templates" / "bounding_box.liquid").read_text()
    page.write_text(bundled.replace("    labels=", "    label=").replace('name="boundingBox"', "")
                    + '<crowd-form><crowd-input label="Anything else?"></crowd-input></crowd-form>\n')
    line = bundled[:bundled.index("<crowd-bounding-box")].count("\n") + 1
    last = bundled.count("\n") + 1
    refused(gtrun, "job=receipts_ner", "template=bounding_box", f"template.file={page}", verb=verb, match=(
        "error: 3 config problems:",
        f"- template.file: {page}:{line}: <crowd-bounding-box> has no labels attribute (it has label: did you "
        "mean labels?)",
        f"- template.file: {page}:{line}: <crowd-bounding-box> has no name attribute, so its answer would not be "
        "submitted",
        f"- template.file: {page}:{last}: <crowd-input> has no name attribute, so its answer would not be submitted"))
