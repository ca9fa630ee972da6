"""Bad input: one clear error naming the key or file, exit 2, nothing submitted, nothing half-written
in storage."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.conftest import ROOT, read_json


def refused(gtrun, *args, match: str | tuple[str, ...], code: int = 2, verb: str = "run"):
    r = gtrun(verb, *args)
    assert r.code == code, r.output
    for m in (match,) if isinstance(match, str) else match:
        assert m in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert gtrun.jobs() == []
    manifests = [p for p in gtrun.stored_objects() if p.name == "manifest.jsonl"]
    assert manifests == []
    assert not [p for p in gtrun.storage.rglob("*.part")]
    return r


@pytest.mark.parametrize(("args", "match"), [
    (["workteam.workers_per_objekt=3"],
     "error: workteam.workers_per_objekt: no such key (did you mean 'workteam.workers_per_object'?)"),
    (["sorce=tweets"], "error: sorce: no such key (did you mean 'source'?)"),
    (["source.params.treshold=0.5"], "error: source.params.treshold: no such key (did you mean "
                                     "'source.params.threshold'?); source.params takes a new key with a +: "
                                     "+source.params.treshold=0.5"),
    (["backend.duckdb.thread=2"], "error: backend.duckdb.thread: no such key (did you mean 'backend.duckdb.threads'?)"),
    (["source=twets"], "error: source=twets: no such option (did you mean source=tweets? the options: receipts, tweets)"),
    (["-m", "source=tweets,twets"], "error: source=twets: no such option"),
    (["source.limit=ten"], "error: source.limit: Value 'ten' of type 'str' could not be converted to Integer"),
    (["source.params.entity=a(b"], "error: source.params.entity=a(b: Hydra cannot read this override (its "
                                   "grammar reserves brackets, braces, commas, parentheses, quotes, !, < and others "
                                   "in a value): quote the value"),
    (["job.labeling_job_name=bad_name!"], "error: job.labeling_job_name=bad_name!: Hydra cannot read this override"),
    (["template.labels=Positive"], "error: template.labels: takes a list, e.g. template.labels=[a,b]"),
    (["source=tweets,receipts"], "error: source=tweets,receipts: several values: run each with -m (a sweep)"),
    (["transforms=[table,jsnl]"], "error: transforms=jsnl: no such option (did you mean transforms=jsonl? the "
                                  "options: coco, conll, hf_datasets, jsonl, none, spacy, table, yolo)"),
])
def test_hydra_errors_in_gtruns_words(gtrun, args, match):
    """A misspelled key or option, a value of another type, an override Hydra cannot parse: one line
    naming it (with the likely one meant), exit 2, not Hydra's text and exit 1."""
    r = refused(gtrun, *args, match=match)
    assert "HYDRA_FULL_ERROR" not in r.output and "To append to your config" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr



@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_key_added_with_plus_must_be_one_of_gtruns(gtrun, verb):
    """`+key=value` adds a key past the schema: a misspelling would be recorded and ignored."""
    refused(gtrun, "+workteam.worker_per_object=3", verb=verb,
            match="error: workteam.worker_per_object: no such key (did you mean 'workteam.workers_per_object'?)")
    refused(gtrun, "+foo=1", verb=verb, match="error: foo: no such key\n")


@pytest.mark.parametrize(("override", "match"), [
    ("~source.where", "error: source.where: a key of gtrun's schema cannot be removed; set it to null instead: "
                      "source.where=null"),
    ("~workteam.kind", "error: workteam.kind: a key of gtrun's schema cannot be removed; it takes one of private, "
                       "public, vendor: workteam.kind=..."),
    ("~source.order_by", "error: source.order_by: a key of gtrun's schema cannot be removed; set it to a list "
                         "instead ([] for none, where the config takes none): source.order_by=[a,b]"),
    # not "template.labels=[]", which gtrun then refuses (a job needs its labels)
    ("~template.labels", "error: template.labels: a key of gtrun's schema cannot be removed; set it to a list "
                         "instead ([] for none, where the config takes none): template.labels=[a,b]"),
    ("~hydra.run.dir", "error: hydra.run.dir: a key of Hydra's config cannot be removed; set it instead: "
                       "hydra.run.dir=..."),
])
def test_a_key_of_the_schema_cannot_be_removed(gtrun, override, match):
    """`~key` removes a key added with `+`; on one of the schema's it says what to set instead, not
    OmegaConf's "SourceConfig (DictConfig) does not support deletion"."""
    r = refused(gtrun, override, verb="plan", match=match)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(("override", "match"), [
    ("transforms.split.train=2", "transforms.split.train: 2.0 is not a ratio in [0, 1]"),
    ("transforms.min_confidence=1.5", "transforms.min_confidence: 1.5 is not in [0, 1]"),
    ("transforms=coco", "transforms.steps.coco: does not fit a text_classification job"),
])
def test_transforms_are_checked_before_the_job_is_labeled(gtrun, override, match):
    refused(gtrun, override, match=match)
    refused(gtrun, override, match=match, verb="plan")


def test_backend_settings_that_cannot_work(gtrun, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for override, match in [
        ("backend.duckdb.memory_limit=abc", "backend.duckdb.memory_limit: 'abc': "),
        ("backend.duckdb.threads=-3", "backend.duckdb.threads: -3 is not 1 or more"),
        (f"backend.root={tmp_path / 'a-file'}", f"backend.root: {tmp_path / 'a-file'} is a file, not a folder"),
        (f"backend.root={tmp_path / 'a-file' / 'sub'}",
         f"backend.root: cannot make or write the folder {tmp_path / 'a-file' / 'sub'}: {tmp_path / 'a-file'} is a file"),
    ]:
        r = gtrun("plan", override, storage=False)
        assert r.code == 2 and match in r.stderr and "Traceback" not in r.output, r.output
    for override, match in [("backend.profile=no-such-profile", "backend.profile: The config profile (no-such-profile)"),
                            ("backend.max_attempts=0", "backend.max_attempts: "),
                            ("backend.endpoints.sagemaker=not-a-url", "backend.endpoints.sagemaker: Invalid endpoint")]:
        r = gtrun("workteams", "backend=aws", override)
        assert r.code == 2 and match in r.stderr and "Traceback" not in r.output, r.output
    r = gtrun("workteams", "backend=aws", env={"AWS_PROFILE": "nope"})  # boto3's from the environment, not the key's
    assert r.code == 2 and "AWS_PROFILE (environment): The config profile (nope)" in r.stderr, r.output



@pytest.mark.parametrize(("override", "match"), [
    ("backend.athena.output_location=notS3", "backend.athena.output_location: 'notS3' is not an s3://bucket/prefix/"),
    ("backend.endpoints.s3=ftp://x", "backend.endpoints.s3: 'ftp://x' is not an http(s) URL"),
    ("backend.prefix=../x", "backend.prefix: '../x' is not a key folder"),
    ("backend.athena.timeout_s=0", "backend.athena.timeout_s: 0.0 is not a positive number of seconds"),
    ("backend.athena.workgroup=", "backend.athena.workgroup: is empty"),
])
def test_aws_settings_are_checked_before_a_query_is_sent(gtrun, override, match):
    aws = ["backend=aws", "backend.bucket=my-bucket", "backend.role_arn=arn:aws:iam::123456789012:role/gt",
           "workteam.arn=arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t",
           "backend.endpoints.athena=http://127.0.0.1:9", "backend.max_attempts=1"]  # nothing listens there
    r = gtrun("plan", *aws, override, storage=False)
    assert r.code == 2 and match in r.stderr and "Traceback" not in r.output, r.output
    assert "127.0.0.1:9" not in r.stderr  # refused before any call


def test_command_line_numbers_out_of_range(gtrun):
    for args, match in [(["serve", "--port", "99999"], "argument --port: 99999 is not in [0, 65535]"),
                        (["status", "x", "--interval", "-1"], "argument --interval: -1 is not in [0.1, 3600]"),
                        (["jobs", "--max", "x"], "--max: 'x' is not a positive whole number"),
                        (["preview", "--rows", "0"], "--rows: '0' is not a positive whole number")]:
        r = gtrun(*args)
        assert r.code == 2 and match in r.stderr and "Traceback" not in r.output, r.output


def test_misspelled_key_in_a_group_file(gtrun, tmp_path):
    (tmp_path / "c" / "pricing").mkdir(parents=True)
    (tmp_path / "c" / "pricing" / "mine.yaml").write_text("usd_per_tsak: '0.036'\n")
    refused(gtrun, "--config-dir", str(tmp_path / "c"), "pricing=mine",
            match="error: pricing/mine.yaml: pricing.usd_per_tsak: no such key (did you mean 'pricing.usd_per_task'?)")


def test_wrong_type(gtrun):
    refused(gtrun, "workteam.workers_per_object=many",
            match="error: workteam.workers_per_object: Value 'many' of type 'str' could not be converted to Integer")


def test_missing_required_value(gtrun):
    refused(gtrun, "template.title=???", match="error: template.title: is required but not set")


def test_several_rule_breaks_are_reported_at_once(gtrun):
    r = refused(gtrun, "workteam.workers_per_object=12", "template.keywords=[a-b]",
                "template.label_attribute_name=sentiment-metadata", match="3 config problems")
    for key in ("workteam.workers_per_object: ", "template.keywords[0]: ", "template.label_attribute_name: "):
        assert f"- {key}" in r.stderr


def test_price_ground_truth_does_not_allow(gtrun):
    refused(gtrun, "workteam=public", "pricing=public", "pricing.usd_per_task=0.05",
            match="pricing.usd_per_task: ")


def test_a_split_key_that_is_not_a_manifest_field(gtrun):
    refused(gtrun, "transforms.split.key=tweet", verb="plan",
            match="transforms.split.key: 'tweet' is not a field of the manifest (entity, source, tweet_id)")
    refused(gtrun, "transforms.split.key=tweet", match="transforms.split.key: 'tweet' is not a field")


def test_public_workforce_needs_a_price(gtrun):
    refused(gtrun, "workteam=public", match="pricing.usd_per_task: ")


def test_job_name_ground_truth_would_reject(gtrun):
    refused(gtrun, "job.labeling_job_name='my_job.v2'",
            match="job.labeling_job_name: 'my_job.v2' is not a Ground Truth job name")


def test_sql_that_is_not_a_select(gtrun):
    refused(gtrun, "source.sql='DELETE FROM ml_workshop_db.labeling_prediction'",
            match="source.sql: must be a SELECT, not DELETE")


def test_two_statements(gtrun):
    refused(gtrun, "source.sql='SELECT tweet_text AS source FROM t; SELECT 1 AS source'",
            match="source.sql: must be one SELECT, found 2 statements")


def test_sql_that_does_not_parse(gtrun):
    refused(gtrun, "source.sql='SELECT tweet_text AS source FROM WHERE'", match="source.sql: ")


def test_column_the_table_lacks(gtrun):
    r = refused(gtrun, "source.columns.source=tweet_txt",
                match="source.columns.source: column 'tweet_txt' is not in ml_workshop_db.labeling_prediction")
    assert "tweet_text" in r.stderr  # the hint lists the real columns


def test_missing_source_file(gtrun, tmp_path):
    refused(gtrun, f"source.files=[{tmp_path}/nope.csv]", match="source.files[0]: no file matches")


def _tweet(i: int) -> str:
    return json.dumps({"tweet_id": i, "entity": "Xbox", "tweet_text": f"tweet {i}", "score": 0.1})


@pytest.mark.parametrize("broken", [1, 4, 6])  # the first line, one after a blank line, the last line
def test_a_json_line_that_does_not_parse_is_named_by_its_line(gtrun, tmp_path, broken):
    """DuckDB names the line after the broken one (and counts no blank lines); the error names the
    broken line as an editor numbers it."""
    lines = [_tweet(1), _tweet(2), "", _tweet(4), _tweet(5), _tweet(6)]
    lines[broken - 1] = '{"tweet_id": 9, "entity": '
    bad = tmp_path / "preds.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    refused(gtrun, f"source.files=[{bad}]", match=(f"error: {bad}:{broken}: not JSON: expecting value at column 27\n"
                                                   "  hint: each line of a JSON-lines file is one JSON object; "
                                                   f"fix or delete line {broken}\n"))


def test_a_csv_without_a_header_row_is_named(gtrun, tmp_path):
    """DuckDB's sniffer names the columns of a file without a header column0, column1, ...; the
    error names the file, not a column the query cannot find."""
    bad = tmp_path / "preds.csv"
    bad.write_text((ROOT / "data" / "tweets" / "labeling_prediction.csv").read_text().split("\n", 1)[1])
    r = refused(gtrun, f"source.files=[{bad}]",
                match=(f"error: {bad}:1: no header row: source.where asks for column 'score', and DuckDB read this "
                       "line as data, naming the 6 columns column0 to column5",
                       "hint: start the file with a line of its column names, 'score' among them"))
    assert "is not in ml_workshop_db" not in r.stderr


@pytest.mark.parametrize(("text", "where"), [
    # one column named after the header line
    ("tweet_id,entity,tweet_text,score\n1,Xbox,good,0.1\n2,Xbox,bad,0.3,extra\n3,Xbox,ok,0.2\n",
     ":3: 5 fields where the header has 4"),
    # the sniffer skips the header and names the columns column0, column1, ...
    ("tweet_id,entity,tweet_text\n1,Xbox,good,0.1\n2,Xbox,bad,0.3\n3,Xbox,ok,0.2\n",
     ":2: 4 fields where the header has 3"),
    # ... or skips every line before the last, where the row has one field more
    ("tweet_id,entity,tweet_text,score\n1,Xbox,good,0.1\n2,Xbox,bad,0.3\n3,Xbox,ok,0.2,extra\n",
     ":4: 5 fields where the header has 4"),
])
def test_a_csv_row_with_another_number_of_fields_is_named(gtrun, tmp_path, text, where):
    bad = tmp_path / "preds.csv"
    bad.write_text(text)
    refused(gtrun, f"source.files=[{bad}]", match=(f"error: {bad}{where} (','-separated)",
                                                   "hint: give every row one field per header column"))


@pytest.mark.parametrize(("name", "text", "where"), [
    # a tab-separated header with a comma in a column name: the tab is the delimiter
    ("preds.tsv", "tweet_id\tentity\ttweet_text\tscore\tnote, raw\n1\tXbox\tgood\t0.1\tn\n"
     "2\tXbox\tbad\t0.3\tn\textra\n3\tXbox\tok\t0.2\tn\n", ":3: 6 fields where the header has 5 ('\\t'-separated)"),
    # a ;-separated header naming a column "a, b": more ; than , in it
    ("preds.csv", "tweet_id;entity;tweet_text;score;note, raw\n1;Xbox;good;0.1;n\n2;Xbox;bad;0.3;n;extra\n",
     ":3: 6 fields where the header has 5 (';'-separated)"),
])
def test_a_bad_row_is_named_with_the_delimiter_the_header_is_separated_by(gtrun, tmp_path, name, text, where):
    bad = tmp_path / name
    bad.write_text(text)
    refused(gtrun, f"source.files=[{bad}]", match=f"error: {bad}{where}")


def test_a_csv_row_past_the_sniffed_sample_is_named_by_its_line(gtrun, tmp_path):
    """DuckDB finds this row only as it reads the file, and counts records, not lines: the quoted
    newline in row 1 makes its line number one short of an editor's."""
    rows = ['1,Xbox,"two\nlines",0.1'] + [f"{i},Xbox,tweet {i},0.1" for i in range(2, 25_001)]
    rows[24_000] += ",extra"  # row 24,001, on line 24,003 (the header and the quoted newline before it)
    bad = tmp_path / "preds.csv"
    bad.write_text("tweet_id,entity,tweet_text,score\n" + "\n".join(rows) + "\n")
    refused(gtrun, f"source.files=[{bad}]", verb="plan",
            match=f"error: {bad}:24003: 5 fields where the header has 4 (','-separated)")


def test_a_password_in_an_endpoint_url_is_refused_before_anything_is_recorded(gtrun):
    r = refused(gtrun, "backend.endpoints.athena=http://me:S3CRET-PW@127.0.0.1:9",
                match="backend.endpoints.athena: a URL with a user and password")
    assert "S3CRET-PW" not in r.output
    assert not (gtrun.cwd / "outputs").exists() or "S3CRET-PW" not in "".join(
        p.read_text(errors="replace") for p in (gtrun.cwd / "outputs").rglob("*") if p.is_file())


def test_a_template_workers_cannot_submit(gtrun, tmp_path):
    (tmp_path / "bare.liquid").write_text("<p>{{ task.input.taskObject }}</p>\n")
    refused(gtrun, f"template.file={tmp_path / 'bare.liquid'}", match="template.file: ", verb="plan")
    refused(gtrun, f"template.file={tmp_path / 'bare.liquid'}", match="has no <crowd-form> element")



@pytest.mark.parametrize("text", ["a,b,c,d\n1,x,good,0.1\n2,x,bad,0.3,extra\n3,x,ok,0.2\n", '{"a": 1}\n{"a": \n'])
def test_a_source_that_fails_to_open_leaves_no_spill_folder(tmp_path, monkeypatch, text):
    import tempfile

    from runner.errors import GtrunError
    from runner.io.query import DuckDBSource
    from runner.schema import DuckDBConfig, SourceConfig

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    bad = tmp_path / ("bad.csv" if "," in text.splitlines()[0] else "bad.jsonl")
    bad.write_text(text)
    with pytest.raises(GtrunError, match=str(bad)):
        DuckDBSource.open(SourceConfig(name="x", database="d", table="t", columns={"source": "a"}, files=[str(bad)]),
                          DuckDBConfig())
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_sweep_cannot_share_one_job_name(gtrun):
    refused(gtrun, "-m", "source.params.entity=Xbox,NBA2K", "job.labeling_job_name=same",
            match="job.labeling_job_name: every member of a sweep needs a job name of its own")
    refused(gtrun, "-m", "job.labeling_job_name=one,one",
            match="job.labeling_job_name: the names swept are not distinct: one, one")
    refused(gtrun, "-m", "source.params.entity=Xbox,NBA2K", "job.labeling_job_name=a-1,a-2",
            match="job.labeling_job_name: swept beside another key, members would share a name")
    # names swept alone, each its own: a job each
    r = gtrun("run", "-m", "job.labeling_job_name=tweets-a,tweets-b", "source.limit=2")
    assert r.code == 0, r.output
    assert sorted(gtrun.jobs()) == ["tweets-a", "tweets-b"]


def test_plan_says_what_run_would_refuse_over_budget(gtrun):
    refused(gtrun, "pricing.max_usd=1", verb="plan", match="pricing.max_usd: the job would cost $")


def test_empty_result(gtrun):
    r = refused(gtrun, "source.params.threshold=0", match="source: the query returned no rows (params: threshold=0")
    (run,) = gtrun.runs(every=True)  # the failure is recorded, and the error says where
    assert read_json(run / "status.json")["status"] == "failed"
    assert f"the failed run is recorded in {run}" in r.stderr


def test_template_that_does_not_parse(gtrun, tmp_path):
    bad = tmp_path / "bad.liquid"
    bad.write_text("<crowd-form>\n{% if task.input.taskObject %}\n<p>{{ task.input.taskObject }}</p>\n</crowd-form>\n")
    refused(gtrun, f"template.file={bad}", match=f"{bad}:2: ")


def test_template_variable_the_manifest_lacks(gtrun, tmp_path):
    t = tmp_path / "t.liquid"
    t.write_text("<crowd-form>\n<p>{{ task.input.source }}</p>\n<p>{{ task.input.author }}</p>\n</crowd-form>\n")
    refused(gtrun, "template=custom", f"template.file={t}", match=("template.file: ", "task.input.author"))


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_a_template_without_the_answer_element_of_its_task_type_is_refused(gtrun, verb):
    """Every object's answers would fail to consolidate: named before any work is asked for."""
    refused(gtrun, "template.file=named_entity.liquid", "source.limit=2", verb=verb,
            match=("template.file: ", "named_entity.liquid has no <crowd-classifier> element: a text_classification "
                   "job's answers come from it", "template.task_type=custom"))
    # the multi-select element is another element, not a crowd-classifier
    refused(gtrun, "template.file=text_multilabel.liquid", "source.limit=2", verb=verb,
            match="text_multilabel.liquid has no <crowd-classifier> element")


def test_a_template_whose_answer_element_has_a_name_of_its_own_is_taken(gtrun, tmp_path):
    """The local service finds the answer by its shape when the element is named otherwise."""
    text = (ROOT / "templates" / "text_classification.liquid").read_text().replace('name="crowd-classifier"',
                                                                                    'name="sentiment"')
    (tmp_path / "named.liquid").write_text(text)
    r = gtrun("plan", f"template.file={tmp_path / 'named.liquid'}", "source.limit=1")
    assert r.code == 0, r.output


def test_source_refs_that_name_no_image_in_the_storage_are_refused(gtrun):
    r = refused(gtrun, "job=receipts_ner", "source.params.image_prefix=s3://gtrun/other/", "source.limit=3",
                match="error: source.columns.source-ref: 3 of 3 manifest lines name an object that is not in the "
                      "storage, so workers would see nothing (line 1: s3://gtrun/other/receipt-001.png, looked for at "
                      f"{gtrun.storage / 'gtrun' / 'other' / 'receipt-001.png'})")
    assert "hint: check the source-ref column and its params" in r.stderr


def test_an_asset_that_changed_is_refused_and_the_stored_one_kept(gtrun, tmp_path):
    """Jobs that showed the stored image would show the new one: every changed file named, nothing copied."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("receipt-001.png", "receipt-002.png"):
        (images / name).write_bytes(f"image {name}".encode())
    args = ["job=receipts_ner", f"source.assets.files={images}/*.png", "source.limit=2"]
    assert gtrun("run", *args).code == 0
    (run,) = gtrun.runs()
    stored = gtrun.storage / "gtrun" / "samples" / "receipts" / "images"
    assert read_json(run / "lineage.json")["asset_files"] == {
        str(images / n): hashlib.sha256(f"image {n}".encode()).hexdigest() for n in ("receipt-001.png", "receipt-002.png")}
    assert gtrun("run", *args).code == 0  # the same images: left as they are
    (images / "receipt-001.png").write_bytes(b"another image")
    (images / "receipt-003.png").write_bytes(b"a new image")
    before = len(gtrun.jobs())
    r = gtrun("run", *args)
    assert r.code == 2 and len(gtrun.jobs()) == before, r.output
    assert (f"error: source.assets.to: s3://gtrun/samples/receipts/images/receipt-001.png holds another "
            f"receipt-001.png than {images / 'receipt-001.png'} (sha256 ") in r.stderr
    assert (stored / "receipt-001.png").read_bytes() == b"image receipt-001.png"
    assert not (stored / "receipt-003.png").exists()  # nothing copied
    # the stored image gone, a new copy goes up; reproduce sees the image changed since the run
    (stored / "receipt-001.png").unlink()
    r = gtrun("reproduce", str(run))
    assert r.code == 2 and len(gtrun.jobs()) == before, r.output
    assert (f"reproduce: asset {images / 'receipt-001.png'}, asset {images / 'receipt-003.png'} differ from {run} "
            f"({images / 'receipt-001.png'} changed; {images / 'receipt-003.png'} changed); nothing was submitted "
            "or copied") in r.stderr
    assert not (stored / "receipt-001.png").exists() and not (stored / "receipt-003.png").exists()


def test_two_assets_of_one_name_that_differ_are_refused(gtrun, tmp_path):
    """source.assets copies by file name: a/x.png and b/x.png would be one object, the second's."""
    for folder, body in (("a", b"one"), ("b", b"two"), ("c", b"one")):
        (tmp_path / "images" / folder).mkdir(parents=True)
        (tmp_path / "images" / folder / "receipt-001.png").write_bytes(body)
    (tmp_path / "images" / "a" / "receipt-002.png").write_bytes(b"two")
    refused(gtrun, "job=receipts_ner", f"source.assets.files={tmp_path}/images/*/*.png", "source.limit=2",
            match=(f"error: source.assets.files: {tmp_path / 'images/a/receipt-001.png'} and "
                   f"{tmp_path / 'images/b/receipt-001.png'} both go to s3://gtrun/samples/receipts/images/"
                   "receipt-001.png (by file name), and they differ: one would replace the other",))
    assert not (gtrun.storage / "gtrun" / "samples" / "receipts" / "images").exists()  # nothing copied
    shutil.rmtree(tmp_path / "images" / "b")  # the same bytes twice: one copy
    assert gtrun("run", "job=receipts_ner", f"source.assets.files={tmp_path}/images/*/*.png", "source.limit=2").code == 0
    assert (gtrun.storage / "gtrun" / "samples" / "receipts" / "images" / "receipt-001.png").read_bytes() == b"one"


def test_a_config_file_that_is_not_yaml_names_its_line(gtrun, tmp_path):
    (tmp_path / "conf" / "source").mkdir(parents=True)
    (tmp_path / "conf" / "source" / "mine.yaml").write_text("name: mine\n table: [\n")
    r = refused(gtrun, "--config-dir", str(tmp_path / "conf"), "source=mine", verb="plan",
                match=f"error: {tmp_path / 'conf' / 'source' / 'mine.yaml'}, line 2, column 7: not YAML: mapping "
                      "values are not allowed here")
    assert len(r.stderr.strip().splitlines()) == 1


def test_local_settings_without_their_package_line_say_so(gtrun, tmp_path):
    (tmp_path / "conf" / "local").mkdir(parents=True)
    (tmp_path / "conf" / "local" / "default.yaml").write_text("backend:\n  bucket: my-bucket\n")
    refused(gtrun, "--config-dir", str(tmp_path / "conf"), verb="plan",
            match=("error: local/default.yaml: local: no such key\n", "hint: conf/local/default.yaml sets keys of the "
                   "whole config: start it with `# @package _global_`"))
    (tmp_path / "conf" / "local" / "default.yaml").write_text("# @package _global_\nbackend:\n  bucket: my-bucket\n")
    r = gtrun("plan", "--config-dir", str(tmp_path / "conf"), "--cfg", "job", "--package", "backend")
    assert r.code == 0 and "bucket: my-bucket" in r.stdout, r.output


@pytest.mark.parametrize("text", [
    "job:\n  name: mine\ntemplate:\n  labels: [A, B]\n",
    "defaults:\n  - override /template: text_multilabel\njob:\n  name: mine\n",
])
def test_a_job_preset_without_its_package_line_says_so(gtrun, tmp_path, text):
    """A preset switches the whole job: its keys (job.name, template.labels) are the whole config's."""
    (tmp_path / "conf" / "job").mkdir(parents=True)
    (tmp_path / "conf" / "job" / "mine.yaml").write_text(text)
    r = refused(gtrun, "--config-dir", str(tmp_path / "conf"), "job=mine", verb="plan",
                match="\n  hint: a job preset sets keys of the whole config: start it with `# @package _global_`, "
                      "as conf/job/tweets_sentiment.yaml does\n")
    assert r.stderr.startswith("error: job/mine.yaml: ") or r.stderr.startswith("error: In 'job/mine': "), r.stderr
    (tmp_path / "conf" / "job" / "mine.yaml").write_text("# @package _global_\n" + text)
    assert gtrun("plan", "--config-dir", str(tmp_path / "conf"), "job=mine").code == 0


def test_a_job_name_taken_in_another_case_names_the_job_there(gtrun):
    assert gtrun("run", "source.limit=1", "job.labeling_job_name=my-job").code == 0
    r = gtrun("run", "source.limit=1", "job.labeling_job_name=MY-JOB")
    assert r.code == 2 and gtrun.jobs() == ["my-job"], r.output
    assert ("error: job.labeling_job_name: a labeling job named 'my-job' exists already (InProgress), the same name "
            "as 'MY-JOB' (case does not tell names apart)") in r.stderr


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_assets_that_cannot_be_copied_are_named_by_plan_too(gtrun, tmp_path, verb):
    refused(gtrun, "job=receipts_ner", f"source.assets.files={tmp_path}/nothing/*.png", f"source.assets.to={tmp_path}",
            verb=verb, match=(f"- source.assets.to: '{tmp_path}' is not an s3:// prefix",
                              f"- source.assets.files: no file matches '{tmp_path}/nothing/*.png'"))


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_an_empty_data_object_is_named_by_plan_as_by_run(gtrun, tmp_path, verb):
    data = tmp_path / "preds.csv"
    data.write_text("tweet_id,entity,tweet_text,score\n1,Xbox,good game,0.5\n2,Xbox,,0.6\n3,Xbox,ok,0.1\n")
    hint = "\n  hint: leave the row out of the query (source.where, or source.sql when it is set), or fix it in the data\n"
    # row 3 of the query's order, and its id (the source's tweet_id column)
    refused(gtrun, f"source.files=[{data}]", verb=verb,
            match="error: row 3 (tweet_id=2): source.columns.source: the data object is empty" + hint)
    data.write_text("tweet_id,entity,tweet_text,score\n1,Xbox,good game,0.5\n77,Xbox," + "x" * 200_000 + ",0.1\n")
    refused(gtrun, f"source.files=[{data}]", verb=verb,
            match="error: row 1 (tweet_id=77): the manifest line has 200043 characters; Ground Truth allows "
                  "100000" + hint)
    data.write_text("tweet_id,entity,tweet_text,score,conf\n1,Xbox,good game,0.5,1\n2,Xbox,ok,0.6,nan\n")
    refused(gtrun, f"source.files=[{data}]", "+source.columns.conf=conf", verb=verb,
            match="error: row 2 (tweet_id=2): conf: NaN or Infinity, which JSON cannot hold")


def test_missing_template_file(gtrun):
    refused(gtrun, "template.file=nope.liquid", match="template.file: 'nope.liquid' not found")


def test_a_relative_path_not_found_names_the_folder_it_was_read_in(gtrun):
    """A config's relative paths are read from the working directory: run from another folder, the
    error says which one, so that a file that is there (in the project) is not a riddle."""
    refused(gtrun, "template.file=tpl/mine.liquid", match=f"error: template.file: 'tpl/mine.liquid' not found "
                                                         f"(a relative path, read in {gtrun.cwd})\n")
    refused(gtrun, "source.files=[data/mine.csv]", match=f"error: source.files[0]: no file matches 'data/mine.csv' "
                                                        f"(a relative path, read in {gtrun.cwd})\n")


def test_budget_exceeded(gtrun):
    r = refused(gtrun, "pricing.max_usd=1", match="pricing.max_usd: the job would cost $13.84")
    (run,) = [p.parent for p in (gtrun.cwd / "outputs").rglob("status.json")]
    assert read_json(run / "status.json")["status"] == "failed"
    assert not (run / "manifest.jsonl").exists() and not (run / "request.json").exists()
    assert "budget" in r.stderr


def test_run_directory_that_already_exists(gtrun, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    refused(gtrun, f"hydra.run.dir={taken}", match=f"hydra.run.dir: {taken} already exists")
    assert (taken / "notes.txt").read_text() == "keep me"
    assert not (taken / ".hydra").exists()


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_plan_refuses_the_same_input(gtrun, verb):
    refused(gtrun, "source.params.threshold=0", verb=verb, match="returned no rows")


def test_a_run_directory_that_holds_a_run_is_refused_however_it_is_written(gtrun, tmp_path):
    """Quoted (as a path with a space needs), the folder was not recognized: the refused run's Hydra
    files overwrote the first run's record."""
    folder = tmp_path / "a run"
    assert gtrun("run", "source.limit=2", f'hydra.run.dir="{folder}"').code == 0
    recorded = (folder / ".hydra" / "overrides.yaml").read_text()
    r = gtrun("run", "source.limit=3", f'hydra.run.dir="{folder}"')
    assert r.code == 2 and f"hydra.run.dir: {folder} already exists and is not empty" in r.stderr, r.output
    assert (folder / ".hydra" / "overrides.yaml").read_text() == recorded
    assert read_json(folder / "status.json")["status"] != "failed"


@pytest.mark.parametrize(("verb", "args", "said"), [
    ("plan", ["-m", "source.params.entity=Xbox,NoSuchEntity"], "tweets-nosuchentity failed: source: the query returned no rows"),
    ("plan", ["--cfg"], "error: --cfg: needs a value"),
    ("plan", ["--cfg", "job", "-m", "source.limit=1,2"], "error: Only one of --run, --multirun, --cfg"),
    ("jobs", ["foo=bar"], "error: foo: no such key"),
    ("workteams", ["backend=awz"], "error: backend=awz: no such option (did you mean backend=aws?"),
    ("plan", ["source.params.threshold=abc"], "error: source.params.threshold: 'abc' is not a value of the type "
                                              "the query compares it with: Conversion Error"),  # not the data file
])
def test_hydra_options_and_other_verbs_fail_with_exit_2(gtrun, verb, args, said):
    r = gtrun(verb, *args, storage=False)
    assert r.code == 2 and said in r.output and "Traceback" not in r.output, r.output


def test_a_run_interrupted_at_create_can_still_reach_the_job_it_may_have_made(gtrun):
    """Ctrl+C can land after CreateLabelingJob made the job but before job.json was written: the
    run then names its request's job, so status and stop reach it."""
    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    (run / "job.json").unlink()  # as if interrupted at create
    status = read_json(run / "status.json")
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))
    name = read_json(run / "request.json")["LabelingJobName"]
    r = gtrun("status", str(run))
    assert r.code == 0 and f"{name}: " in r.stdout, r.output
    r = gtrun("stop", str(run))
    assert r.code == 0 and f"{name}: Stopp" in r.stdout, r.output


def _own_images(tmp_path, files: dict[str, bytes], listed: list[str]) -> list[str]:
    """A bounding-box job of one's own images: `files` in images/, a CSV listing `listed`, and the
    source and job config groups (in conf/) that copy the images and box them; the command line's args."""
    (tmp_path / "images").mkdir()
    for name, body in files.items():
        (tmp_path / "images" / name).write_bytes(body)
    (tmp_path / "images.csv").write_text("image_id,file\n" + "".join(f"{i},{n}\n" for i, n in enumerate(listed)),
                                         encoding="utf-8")
    (tmp_path / "conf" / "source").mkdir(parents=True)
    (tmp_path / "conf" / "job").mkdir()
    (tmp_path / "conf" / "source" / "mine.yaml").write_text(
        "name: mine\ndatabase: db\ntable: images\ncolumns:\n  source-ref: \":prefix || file\"\n  image_id: image_id\n"
        f"params:\n  prefix: s3://gtrun/mine/\norder_by: [image_id]\nfiles: ['{tmp_path / 'images.csv'}']\n"
        f"assets:\n  files: '{tmp_path / 'images'}/*'\n  to: s3://gtrun/mine/\n", encoding="utf-8")
    (tmp_path / "conf" / "job" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /source: mine\n  - override /template: bounding_box\n"
        "job:\n  name: mine\ntemplate:\n  labels: [cat, dog]\n", encoding="utf-8")
    return ["--config-dir", str(tmp_path / "conf"), "job=mine"]


def _png(size: tuple[int, int] = (40, 30)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_an_image_of_the_source_that_is_not_there_is_named_by_plan_as_by_run(gtrun, tmp_path, verb):
    """plan reads every row as run does: a source-ref neither in the storage nor among the
    source.assets files run would copy there is the same error, before anything is submitted."""
    args = _own_images(tmp_path, {"a photo.png": _png()}, ["a photo.png", "gone é 猫.jpg"])
    refused(gtrun, *args, verb=verb,
            match="error: source.columns.source-ref: 1 of 2 manifest lines name an object that is not in the "
                  "storage, so workers would see nothing (line 2: s3://gtrun/mine/gone é 猫.jpg, looked for at "
                  f"{gtrun.storage / 'gtrun' / 'mine' / 'gone é 猫.jpg'})")
    (tmp_path / "images.csv").write_text("image_id,file\n0,a photo.png\n", encoding="utf-8")
    stored = gtrun.stored_objects()  # (run copied the images before it read the rows)
    assert gtrun("plan", *args).code == 0  # an asset run would copy there is there for plan
    assert gtrun.stored_objects() == stored  # plan copies nothing


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_a_file_of_a_box_job_that_is_no_image_is_named_by_plan_and_run(gtrun, tmp_path, verb):
    """A worker's browser shows no image of it, and the box task cannot be answered: the job would
    wait for it until it expired. Each file that is not an image is counted, the first one named."""
    files = {"a photo.png": _png(), "broken ü.jpg": b"not a JPEG at all", "empty.png": b""}
    args = _own_images(tmp_path, files, list(files))
    stored = gtrun.storage / "gtrun" / "mine"
    where = tmp_path / "images" if verb == "plan" else stored  # plan reads the file run would copy
    r = refused(gtrun, *args, verb=verb,
                match="error: source.columns.source-ref: 2 of 3 manifest lines name a file that is not an image "
                      "a browser can show, so workers could not box it (line 2: s3://gtrun/mine/broken ü.jpg, "
                      f"read at {where / 'broken ü.jpg'}: ")
    assert "hint: give the job JPEG or PNG images (Ground Truth's formats for boxes)" in r.stderr
    # the files fixed (a large image too), the job goes ahead
    (tmp_path / "images" / "empty.png").write_bytes(_png((3000, 2000)))
    (tmp_path / "images" / "broken ü.jpg").unlink()
    (tmp_path / "images.csv").write_text("image_id,file\n0,a photo.png\n1,empty.png\n", encoding="utf-8")
    if verb == "run":
        shutil.rmtree(stored)
    assert gtrun(verb, *args).code == 0
