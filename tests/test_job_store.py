"""The local labeling service's job store: what CreateLabelingJob registers, durably."""

import json

import pytest

from runner.io.store import LocalStore
from runner.service.store import JobStore, ResourceInUse, ResourceNotFound, ValidationError


def request(name, manifest="s3://b/jobs/m.jsonl"):
    return {"LabelingJobName": name, "LabelAttributeName": "sentiment",
            "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": manifest}}},
            "OutputConfig": {"S3OutputPath": "s3://b/jobs/out"}, "RoleArn": "arn:aws:iam::123456789012:role/r",
            "HumanTaskConfig": {"WorkteamArn": "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/t"}}


@pytest.fixture
def storage(tmp_path):
    store = LocalStore(tmp_path / "storage")
    store.put_bytes("s3://b/jobs/m.jsonl", b'{"source":"a"}\n{"source":"b"}\n\n{"source":"c"}\n')
    return store


def test_create_reads_the_manifest_and_describes_like_sagemaker(tmp_path, storage):
    jobs = JobStore(tmp_path / "db.sqlite3")
    arn = jobs.create_job(request("Tweets-1"), storage, now=1_700_000_000)
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:labeling-job/tweets-1"
    d = jobs.describe_job("tweets-1")  # names are case-insensitive
    assert d["LabelingJobStatus"] == "Initializing"  # until the service picks it up
    assert d["LabelCounters"] == {"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0,
                                  "FailedNonRetryableError": 0, "Unlabeled": 3}
    assert d["LabelingJobName"] == "Tweets-1" and d["CreationTime"].timestamp() == 1_700_000_000


def test_name_taken_case_insensitively_is_resource_in_use(tmp_path, storage):
    jobs = JobStore(tmp_path / "db.sqlite3")
    jobs.create_job(request("job-a"), storage)
    with pytest.raises(ResourceInUse):
        jobs.create_job(request("JOB-A"), storage)


def test_unknown_job_and_bad_manifest(tmp_path, storage):
    jobs = JobStore(tmp_path / "db.sqlite3")
    with pytest.raises(ResourceNotFound):
        jobs.describe_job("nope")
    storage.put_bytes("s3://b/bad.jsonl", b'{"source":"a"}\nnot json\n')
    with pytest.raises(ValidationError, match="cannot read the input manifest"):
        jobs.create_job(request("bad", "s3://b/bad.jsonl"), storage)
    with pytest.raises(ResourceNotFound):  # a refused job leaves nothing behind
        jobs.describe_job("bad")


def test_jobs_survive_a_new_process(tmp_path, storage):
    JobStore(tmp_path / "db.sqlite3").create_job(request("durable"), storage)
    again = JobStore(tmp_path / "db.sqlite3")
    assert again.job_names() == ["durable"]
    assert json.dumps(again.describe_job("durable")["InputConfig"]).count("m.jsonl") == 1
