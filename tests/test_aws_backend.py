"""`backend=aws` end to end, no AWS account: S3 and Athena are moto's server, SageMaker's labeling-job
calls go to gtrun's labeling service (reading and writing the same moto S3), all over real HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import boto3
import duckdb
import jsonlines
import pytest

from runner.build.sql import select_query
from runner.io.aws import client
from runner.io.s3 import S3Store
from runner.schema import BackendConfig, EndpointsConfig
from runner.service.server import Service
from tests.conftest import ROOT, _env, read_json
from tests.faults import FaultProxy, target
from tests.moto_fixtures import aws_env, moto_server, queue_athena_results, reset_moto  # noqa: F401

BUCKET = "gtrun-test"
ROLE = "arn:aws:iam::123456789012:role/GroundTruth"
TEAM = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/annotators"
TYPES = {"BIGINT": "bigint", "VARCHAR": "varchar", "DOUBLE": "double", "DATE": "date", "INTEGER": "integer"}


@pytest.fixture
def aws(moto_server, aws_env, tmp_path):  # noqa: F811
    reset_moto(moto_server)
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    storage = S3Store(client(BackendConfig(endpoints=EndpointsConfig(s3=moto_server)), "s3"))
    with Service(tmp_path / "service", port=0, storage=storage).running() as service:
        yield moto_server, service


def aws_args(moto: str, sagemaker: str) -> list[str]:
    return ["backend=aws", f"backend.bucket={BUCKET}", f"backend.role_arn={ROLE}", f"workteam.arn={TEAM}",
            f"backend.endpoints.s3={moto}", f"backend.endpoints.athena={moto}",
            f"backend.endpoints.sagemaker={sagemaker}", "backend.athena.poll_s=0.05"]


def queue_tweets(moto: str, *overrides: str) -> int:
    """Run the tweets query in DuckDB over the sample file and queue its rows as Athena's result."""
    from hydra import compose, initialize_config_dir

    from runner.config import CONF_DIR, setup, to_settings

    setup()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        source = to_settings(compose("config", list(overrides))).source
    q = select_query(source, "duckdb")
    con = duckdb.connect()
    con.execute('CREATE SCHEMA ml_workshop_db; CREATE VIEW ml_workshop_db.labeling_prediction AS '
                f"SELECT * FROM read_csv('{ROOT}/data/tweets/labeling_prediction.csv')")
    cur = con.execute(q.sql, list(q.params))
    columns = [(d[0], TYPES[str(d[1])]) for d in cur.description]
    rows = cur.fetchall()
    queue_athena_results(moto, columns, rows)
    return len(rows)


def test_aws_run_matches_the_local_run(gtrun, aws):
    moto, service = aws
    objects = queue_tweets(moto, "source.params.entity=Xbox")
    r = gtrun("run", "source.params.entity=Xbox", *aws_args(moto, service.url), storage=False)
    assert r.code == 0, r.output
    local = gtrun("run", "source.params.entity=Xbox")
    assert local.code == 0, local.output
    aws_run, local_run = sorted(gtrun.runs(), key=lambda p: read_json(p / "lineage.json")["backend"])
    assert read_json(aws_run / "lineage.json")["backend"] == "aws"
    # the same manifest, line for line
    aws_lines = (aws_run / "manifest.jsonl").read_bytes()
    assert aws_lines == (local_run / "manifest.jsonl").read_bytes()
    assert len(aws_lines.splitlines()) == objects
    # the same request, but for ARNs and URIs
    a, b = read_json(aws_run / "request.json"), read_json(local_run / "request.json")
    for req in (a, b):
        for key in ("LabelingJobName", "RoleArn", "Tags", "InputConfig", "OutputConfig", "LabelCategoryConfigS3Uri"):
            req.pop(key)
        req["HumanTaskConfig"].pop("WorkteamArn")
        req["HumanTaskConfig"].pop("UiConfig")
    assert a == b
    # the manifest is in (moto's) S3, and the job went to the SageMaker endpoint
    request = read_json(aws_run / "request.json")
    uri = request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
    assert uri.startswith(f"s3://{BUCKET}/gtrun/")
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    body = s3.get_object(Bucket=BUCKET, Key=uri.split("/", 3)[3])["Body"].read()
    assert body == aws_lines
    job = read_json(aws_run / "job.json")
    assert job["LabelingJobStatus"] in ("Initializing", "InProgress")
    assert job["LabelCounters"]["Unlabeled"] == objects
    # the SQL Athena got: params bound as ExecutionParameters, never pasted
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    (qid,) = athena.list_query_executions()["QueryExecutionIds"]
    execution = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert "?" in execution["Query"] and "Xbox" not in execution["Query"]
    assert execution["QueryExecutionContext"]["Database"] == "ml_workshop_db"


def test_a_reproduce_refused_on_aws_leaves_none_of_its_inputs_in_s3(gtrun, aws):
    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox")
    assert gtrun("run", "source.params.entity=Xbox", *aws_args(moto, service.url), storage=False).code == 0
    (first,) = gtrun.runs()
    queue_tweets(moto, "source.params.entity=NBA2K")  # Athena answers with other rows: the data changed
    r = gtrun("reproduce", str(first))
    assert r.code == 2 and "nothing was submitted" in r.stderr, r.output
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if not o["Key"].startswith("gtrun/athena/")]
    name = read_json(first / "request.json")["LabelingJobName"]
    assert sorted(keys) == [f"gtrun/{name}/{file}" for file in ("label-categories.json", "manifest.jsonl", "template.liquid")]


def test_aws_status_stop_jobs_and_workteams(gtrun, aws):
    moto, service = aws
    queue_tweets(moto, "source.params.entity=NBA2K")
    args = aws_args(moto, service.url)
    r = gtrun("run", "source.params.entity=NBA2K", *args, storage=False)
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    assert f"workers label it at {service.url}/jobs/{name}/" in r.stdout  # the endpoint's worker pages
    s = gtrun("status", str(run))
    assert s.code == 0 and f"{name}: " in s.stdout and "labeled 0 of" in s.stdout
    j = gtrun("jobs", *args[:1], *args[4:7])
    assert j.code == 0 and name[:12] in j.stdout
    w = gtrun("workteams", *args[:1], *args[4:7])
    assert w.code == 0 and "gtrun-local" in w.stdout
    # which region was asked, and that boto3's own settings name another one (not used: backend.region is)
    assert "(aws, us-east-1)" in w.stdout and "note:" not in w.stdout
    for verb in ("jobs", "workteams"):
        r = gtrun(verb, *args[:1], *args[4:7], env={"AWS_DEFAULT_REGION": "eu-west-1"})
        assert r.code == 0 and f"{verb.replace('jobs', 'labeling jobs')} (aws, us-east-1)" in r.stdout, r.output
        assert ("note: listed in us-east-1 (backend.region); your AWS settings name eu-west-1: "
                "backend.region=eu-west-1 lists that region's") in r.stdout, r.output
    st = gtrun("stop", str(run))
    assert st.code == 0 and "Stopp" in st.stdout
    j = gtrun("jobs", "--max", "1", *args[:1], *args[4:7])
    assert j.code == 0 and j.stdout.count("│ Stopp") == 1
    # no service at the endpoint: one error line each, no traceback
    dead = ["backend=aws", "backend.endpoints.sagemaker=http://127.0.0.1:9", "backend.max_attempts=1"]
    for verb in ("jobs", "workteams"):
        r = gtrun(verb, *dead)
        assert r.code == 2 and "Traceback" not in r.output, r.output
        assert r.stderr.startswith(f"error: {'ListLabelingJobs' if verb == 'jobs' else 'ListWorkteams'}: "
                                   "Could not connect to the endpoint URL"), r.stderr


def test_plan_on_aws_counts_with_its_own_query_and_sends_nothing_else(gtrun, aws):
    moto, service = aws
    queue_athena_results(moto, [("objects", "bigint")], [(42,)])
    r = gtrun("plan", *aws_args(moto, service.url), storage=False)
    assert r.code == 0, r.output
    assert "42 objects" in r.stdout and "CreateLabelingJob request" in r.stdout
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    (qid,) = athena.list_query_executions()["QueryExecutionIds"]
    assert athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Query"].startswith(
        "SELECT COUNT(*)")
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert not [k for k in keys if not k.startswith("gtrun/athena/")]  # only Athena's own result
    assert service.app.state.jobs.describe_all() == []


def test_a_request_sagemaker_would_refuse_is_refused_before_athena_is_asked(gtrun, aws):
    """The request is checked against SageMaker's model before the (billed) query: plan's count, run's
    SELECT; a source.name that cannot be the job's gtrun:dataset tag names source.name."""
    moto, service = aws
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    for verb in ("plan", "run"):
        r = gtrun(verb, 'source.name="tweets (v2)"', *aws_args(moto, service.url), storage=False)
        assert r.code == 2, r.output
        assert r.stderr.startswith("error: source.name: 'tweets (v2)' cannot be a tag value"), r.stderr
        r = gtrun(verb, f"backend.prefix={'p' * 1000}", *aws_args(moto, service.url), storage=False)
        assert r.code == 2 and "ManifestS3Uri: is 1059 characters long, above the maximum 1024" in r.stderr, r.output
    assert athena.list_query_executions()["QueryExecutionIds"] == []
    assert service.app.state.jobs.describe_all() == []


def test_a_table_format_athena_is_not_given_is_refused_before_the_job(gtrun, aws):
    moto, service = aws
    for verb in ("plan", "run"):
        r = gtrun(verb, "transforms.steps.table.format=csv", *aws_args(moto, service.url), storage=False)
        assert r.code == 2, r.output
        assert r.stderr.startswith("error: transforms.steps.table.format: 'csv': the aws backend registers the "
                                   "table in Athena as Parquet only"), r.stderr
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    assert athena.list_query_executions()["QueryExecutionIds"] == []
    assert service.app.state.jobs.describe_all() == []


def test_a_lost_create_response_finds_its_own_job(gtrun, aws):
    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox")

    def lose_first_create(method, path, headers, attempt):
        return "drop-response" if headers.get("X-Amz-Target", "").endswith("CreateLabelingJob") and attempt == 1 else None

    with FaultProxy(service.url, lose_first_create) as proxy:
        r = gtrun("run", "source.params.entity=Xbox", *aws_args(moto, proxy.url), storage=False)
        assert r.code == 0, r.output
        creates = proxy.calls("CreateLabelingJob")
    assert [c[3] for c in creates] == ["drop-response", None]  # retried once, found its own job
    assert len(service.app.state.jobs.describe_all()) == 1


def test_a_create_sagemaker_refuses_leaves_none_of_the_jobs_inputs_in_s3(gtrun, aws):
    """CreateLabelingJob answered with a 4xx made no job: the manifest, template and label config
    written for it are removed, as on the local backend. A 5xx may hide a job made: they stay."""
    moto, service = aws
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")

    def job_keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if "/athena/" not in o["Key"]]

    for fault, kept in (("throttle", 0), ("500", 3)):
        queue_tweets(moto, "source.limit=2")

        def refuse_create(method, path, headers, attempt, fault=fault):
            return fault if target(headers).endswith("CreateLabelingJob") else None

        with FaultProxy(service.url, refuse_create) as proxy:
            r = gtrun("run", "source.limit=2", *aws_args(moto, proxy.url), "backend.max_attempts=1", storage=False)
        assert r.code == 2 and "CreateLabelingJob" in r.stderr, r.output
        assert len(job_keys()) == kept, (fault, job_keys())
    assert service.app.state.jobs.describe_all() == []
    # a 4xx to a retry: the lost answer before it may hide a job made (here it does): they stay
    queue_tweets(moto, "source.limit=2")

    def lose_then_throttle(method, path, headers, attempt):
        if target(headers).endswith("CreateLabelingJob"):
            return "drop-response" if attempt == 1 else "throttle"
        return None

    with FaultProxy(service.url, lose_then_throttle) as proxy:
        r = gtrun("run", "source.limit=2", *aws_args(moto, proxy.url), "backend.max_attempts=2", storage=False)
    assert r.code == 2 and "ThrottlingException" in r.stderr, r.output
    assert len(service.app.state.jobs.describe_all()) == 1
    assert len(job_keys()) == 3 + 3, job_keys()


def test_a_created_job_is_recorded_even_when_describing_it_fails(gtrun, aws):
    """job.json is written once CreateLabelingJob succeeds: a DescribeLabelingJob that fails right
    after (SageMaker is eventually consistent) leaves a run that status and stop still find."""
    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox")
    failing = {"on": True}

    def fail_describe_after_create(method, path, headers, attempt):
        op = headers.get("X-Amz-Target", "")
        return "500" if failing["on"] and op.endswith("DescribeLabelingJob") and attempt > 1 else None

    with FaultProxy(service.url, fail_describe_after_create) as proxy:
        r = gtrun("run", "source.params.entity=Xbox", *aws_args(moto, proxy.url), "backend.max_attempts=1",
                  storage=False)
        assert r.code == 2 and "DescribeLabelingJob" in r.stderr, r.output
        (run,) = gtrun.runs(every=True)
        name = read_json(run / "job.json")["LabelingJobName"]
        assert read_json(run / "status.json")["status"] == "failed"
        failing["on"] = False
        st = gtrun("stop", str(run))
        assert st.code == 0 and f"{name}: Stopp" in st.stdout, st.output
    assert service.app.state.jobs.describe(name)["LabelingJobStatus"] in ("Stopping", "Stopped")


def test_someone_elses_job_with_the_same_name_is_a_clear_error(gtrun, aws):
    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox")
    queue_tweets(moto, "source.params.entity=Xbox")
    args = [*aws_args(moto, service.url), "job.labeling_job_name=fixed-name"]
    assert gtrun("run", "source.params.entity=Xbox", *args, storage=False).code == 0
    (first,) = gtrun.runs()
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    stored = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="gtrun/fixed-name/")["Contents"]}
    r = gtrun("run", "source.params.entity=Xbox", "source.limit=2", "template.labels=[x,y]", *args, storage=False)
    assert r.code == 2, r.output
    assert "job.labeling_job_name: a labeling job named 'fixed-name' exists already (InProgress)" in r.stderr
    # the job's inputs are as it was created with: nothing was written under its name
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="gtrun/fixed-name/")["Contents"]} == stored
    (failed,) = [run for run in gtrun.runs(every=True) if run != first]
    for verb in ("status", "stop", "collect"):  # the failed run has no job of its own to act on
        v = gtrun(verb, str(failed))
        assert v.code == 2 and "the run created no labeling job" in v.stderr, v.output
    assert service.app.state.jobs.describe(
        "fixed-name")["LabelingJobStatus"] == "InProgress"  # not stopped by the failed run's stop


def test_credentials_never_reach_the_run_directory(gtrun, aws, monkeypatch):
    moto, service = aws
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGTRUNTESTKEY0001")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONTOKENSECRET123")
    queue_tweets(moto, "source.params.entity=Xbox")
    # hydra.verbose: every logger at DEBUG, botocore's request headers (key id, token, signature) too
    r = gtrun("run", "source.params.entity=Xbox", *aws_args(moto, service.url), "hydra.verbose=true", storage=False)
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    for path in run.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for leak in (secret.encode(), b"AKIAGTRUNTESTKEY0001", b"SESSIONTOKENSECRET123", b"Signature="):
                assert leak not in text, (path, leak)
    assert secret not in r.output and "SESSIONTOKENSECRET123" not in r.output
    # no credentials at all: one line that says where boto3 looks for them
    r = gtrun("status", str(run), env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
                                       "AWS_PROFILE": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                                       "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"})
    assert r.code == 2 and "Traceback" not in r.stderr, r.output
    assert r.stderr.startswith("error: DescribeLabelingJob ") and "no AWS credentials found (boto3's standard chain" in r.stderr


def test_the_environment_redirects_a_recorded_runs_endpoints(gtrun, aws):
    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox", "source.limit=2")
    r = gtrun("run", "source.params.entity=Xbox", "source.limit=2", *aws_args(moto, service.url),
              "backend.max_attempts=1", storage=False)
    assert r.code == 0, r.output
    (run,) = gtrun.runs()
    assert gtrun("status", str(run)).code == 0  # at the endpoint it recorded
    r = gtrun("status", str(run), env={"AWS_ENDPOINT_URL_SAGEMAKER": "http://127.0.0.1:9"})  # nothing listens there
    assert r.code == 2 and "http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr, r.output


def test_missing_aws_settings_name_their_keys(gtrun, aws):
    moto, service = aws
    r = gtrun("run", "backend=aws", f"backend.bucket={BUCKET}", storage=False)
    assert r.code == 2
    assert "backend.role_arn: is required" in r.stderr or "workteam.arn: is required" in r.stderr
    r = gtrun("run", "backend=aws", storage=False)  # no bucket: not a default one someone else may own
    assert r.code == 2 and "backend.bucket: is required on the aws backend" in r.stderr
    r = gtrun("run", *aws_args(moto, service.url), "backend.bucket=My_Bucket", storage=False)
    assert r.code == 2 and "backend.bucket: 'My_Bucket' is not an S3 bucket name" in r.stderr
    r = gtrun("run", *aws_args(moto, service.url), "backend.region=us-west-1", storage=False)
    assert r.code == 2 and "backend.region" in r.stderr
    # a bucket that is not there: named before a query Athena bills for runs (its results go there too)
    for verb in ("run", "plan"):
        r = gtrun(verb, *aws_args(moto, service.url), "backend.bucket=no-such-bucket", storage=False)
        assert r.code == 2 and "backend.bucket: s3://no-such-bucket: no such bucket" in r.stderr, r.output
    # a bucket in another region than the job's: Ground Truth reads and writes in the job's region
    boto3.client("s3", endpoint_url=moto, region_name="eu-west-1").create_bucket(
        Bucket="gtrun-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for verb in ("run", "plan"):
        r = gtrun(verb, *aws_args(moto, service.url), "backend.bucket=gtrun-eu", storage=False)
        assert r.code == 2 and r.stderr.startswith(
            "error: backend.bucket: s3://gtrun-eu is in eu-west-1, not in us-east-1 (backend.region)"), r.output
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    assert athena.list_query_executions()["QueryExecutionIds"] == []
    assert service.app.state.jobs.describe_all() == []


def test_aws_manifest_is_valid_jsonl(gtrun, aws):
    moto, service = aws
    queue_tweets(moto)
    assert gtrun("run", *aws_args(moto, service.url), storage=False).code == 0
    (run,) = gtrun.runs()
    lines = list(jsonlines.open(run / "manifest.jsonl"))
    assert len(lines) == 173 and all(isinstance(x["tweet_id"], int) for x in lines)
    assert json.dumps(lines[0])


def test_collect_on_aws_registers_the_table_in_athena(gtrun, aws):
    from tests.service_helpers import Worker

    moto, service = aws
    queue_tweets(moto, "source.params.entity=Xbox", "source.limit=3")
    args = aws_args(moto, service.url)
    assert gtrun("run", "source.params.entity=Xbox", "source.limit=3", *args, storage=False).code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    worker = Worker(service.url)
    while (task := worker.task(name)) is not None:
        worker.answer(name, task, {"crowd-classifier": {"label": "Neutral"}})
    service.app.state.jobs.tick()
    r = gtrun("collect", str(run))
    assert r.code == 0, r.output
    assert f'athena: table "ml_workshop_db"."{name.replace("-", "_")}"' in r.stdout  # quoted, as a SELECT takes it
    s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert f"gtrun/datasets/{name}/table/{name}.parquet" in keys
    marker = json.loads(s3.get_object(Bucket=BUCKET, Key=f"gtrun/datasets/{name}/gtrun-dataset.json")["Body"].read())
    assert marker == {"dataset": str((run / "dataset").resolve()), "table": f"ml_workshop_db.{name.replace('-', '_')}"}
    athena = boto3.client("athena", endpoint_url=moto, region_name="us-east-1")
    queries = [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Query"]
               for q in athena.list_query_executions()["QueryExecutionIds"]]
    # made, not replaced: a table of its name that an earlier collect did not make is not dropped ...
    table = f"`ml_workshop_db`.`{name.replace('-', '_')}`"
    ddl = [q for q in queries if table in q]
    assert [q.split(" (")[0] for q in ddl] == [f"CREATE EXTERNAL TABLE {table}"]
    # ... and collected again, the table is made anew, with the columns of the file this collect wrote
    # (IF NOT EXISTS would keep those of the earlier collect)
    assert gtrun("collect", str(run)).code == 0
    queries = [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Query"]
               for q in athena.list_query_executions()["QueryExecutionIds"]]
    ddl = [q.split(" (")[0] for q in queries if table in q]
    assert ddl == [f"CREATE EXTERNAL TABLE {table}", f"DROP TABLE IF EXISTS {table}", f"CREATE EXTERNAL TABLE {table}"]
    assert len((run / "dataset" / "jsonl" / "train.jsonl").read_text().splitlines()) >= 1
    # the worker-response files came from S3 (read on several threads, staged) and were joined
    assert read_json(run / "dataset" / "report.json")["counts"]["answers"] == 3
    records = [json.loads(x) for split in ("train", "validation", "test")
               for x in (run / "dataset" / "jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["workers"] == 1 and r["label"] == "Neutral" for r in records)
    # Athena refusing the table: one error that names the table, not the source; the dataset is complete
    config = (run / ".hydra" / "config.yaml").read_text()

    def refuse_queries(method, path, headers, attempt):
        return "500" if headers.get("X-Amz-Target", "").endswith("StartQueryExecution") else None

    with FaultProxy(moto, refuse_queries) as proxy:
        assert f"athena: {moto}" in config
        (run / ".hydra" / "config.yaml").write_text(config.replace(f"athena: {moto}", f"athena: {proxy.url}"))
        r = gtrun("collect", str(run))
        assert proxy.calls("AmazonAthena.StartQueryExecution")
    assert r.code == 2 and "Traceback" not in r.output, r.output
    assert r.stderr.startswith(f"error: the Athena table ml_workshop_db.{name.replace('-', '_')} over s3://"), r.stderr
    assert "the dataset is complete in" in r.stderr
    (run / ".hydra" / "config.yaml").write_text(config)

    def tables(table: str) -> list[str]:  # the DDL run on the table, in order
        queries = [athena.get_query_execution(QueryExecutionId=q)["QueryExecution"]["Query"]
                   for q in athena.list_query_executions()["QueryExecutionIds"]]
        return [q.split(" (")[0] for q in queries if f"`ml_workshop_db`.`{table}`" in q]

    # another dataset of the same name (another folder) does not replace this one's table: refused
    before = tables(name.replace("-", "_"))
    r = gtrun("collect", str(run), "--out", str(gtrun.cwd / "other" / name))
    assert r.code == 2 and f"holds the Athena table ml_workshop_db.{name.replace('-', '_')} of another dataset" in r.stderr
    assert tables(name.replace("-", "_")) == before  # neither dropped nor made anew
    # a table whose CREATE failed was not made by collect: collecting again makes it, drops nothing
    with FaultProxy(moto, refuse_queries) as proxy:
        (run / ".hydra" / "config.yaml").write_text(config.replace(f"athena: {moto}", f"athena: {proxy.url}"))
        assert gtrun("collect", str(run), "--out", str(gtrun.cwd / "fresh")).code == 2
    (run / ".hydra" / "config.yaml").write_text(config)
    assert gtrun("collect", str(run), "--out", str(gtrun.cwd / "fresh")).code == 0
    assert tables("fresh") == ["CREATE EXTERNAL TABLE `ml_workshop_db`.`fresh`"]
    assert gtrun("collect", str(run), "--out", str(gtrun.cwd / "fresh")).code == 0  # now its own: made anew
    assert tables("fresh")[1:] == ["DROP TABLE IF EXISTS `ml_workshop_db`.`fresh`",
                                   "CREATE EXTERNAL TABLE `ml_workshop_db`.`fresh`"]
    s3.put_object(Bucket=BUCKET, Key="gtrun/datasets/fresh/gtrun-dataset.json", Body=b"not json")  # whose is it?
    r = gtrun("collect", str(run), "--out", str(gtrun.cwd / "fresh"))
    assert r.code == 2 and "gtrun-dataset.json: not the record collect writes" in r.stderr, r.output
    assert len(tables("fresh")) == 3  # nothing dropped
    # the table's file that S3 does not take: no table is made, so collecting again makes it
    def refuse_table_file(method, path, headers, attempt):
        return "500" if method == "PUT" and "/datasets/kept/table/" in path else None

    with FaultProxy(moto, refuse_table_file) as proxy:
        (run / ".hydra" / "config.yaml").write_text(
            config.replace(f"s3: {moto}", f"s3: {proxy.url}").replace("max_attempts: 5", "max_attempts: 1"))
        r = gtrun("collect", str(run), "--out", str(gtrun.cwd / "kept"))
        assert r.code == 2 and "/datasets/kept/table/kept.parquet" in r.stderr, r.output
    (run / ".hydra" / "config.yaml").write_text(config)
    assert tables("kept") == []
    r = gtrun("collect", str(run), "--out", str(gtrun.cwd / "kept"))
    assert r.code == 0 and tables("kept") == ["CREATE EXTERNAL TABLE `ml_workshop_db`.`kept`"], r.output
    # a table Athena is not given (CSV): refused before any dataset is written
    r = gtrun("collect", str(run), "--out", str(gtrun.cwd / "csv"), "transforms.steps.table.format=csv")
    assert r.code == 2 and r.stderr.startswith("error: transforms.steps.table.format: 'csv': the aws backend"), r.output
    assert not (gtrun.cwd / "csv").exists()


@pytest.mark.parametrize(("sig", "code", "how"), [(signal.SIGINT, 130, "interrupted (Ctrl+C)"),
                                                  (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_while_the_job_is_submitted_waits_until_it_is_recorded(gtrun, aws, sig, code, how):
    """Ctrl+C (or SIGTERM) while CreateLabelingJob is under way: the service may make the job, so gtrun
    records it (job.json, lineage.json) and then stops, saying how to stop the job."""
    moto, service = aws
    queue_tweets(moto, "source.limit=3")
    asked, answer = threading.Event(), threading.Event()

    def hold(method, path, headers, body):  # the service made the job; its answer waits
        if target(headers).endswith("CreateLabelingJob"):
            asked.set()
            answer.wait(30)
        return None

    with FaultProxy(service.url, rewrite=hold) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", "source.limit=3", *aws_args(moto, proxy.url)],
                                cwd=gtrun.cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert asked.wait(60), proc.communicate(timeout=5)
            proc.send_signal(sig)
            time.sleep(0.5)  # gtrun holds the signal while it waits for the answer
            assert proc.poll() is None
            answer.set()
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            answer.set()
            proc.kill()
    assert proc.returncode == code, stderr
    (run,) = gtrun.runs()  # finished as far as its record goes: lineage.json is written
    job = read_json(run / "job.json")
    assert service.app.state.jobs.describe(job["LabelingJobName"])["LabelingJobStatus"] in ("Initializing", "InProgress")
    assert read_json(run / "lineage.json")["job_name"] == job["LabelingJobName"]
    said = f"{how} after the job was created: it runs until it ends or gtrun stop {run}"
    assert read_json(run / "status.json")["error"] == said
    assert "submitting the job: gtrun stops once it is recorded" in stderr and said in stderr
