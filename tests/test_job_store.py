"""The local labeling service's job store: what CreateLabelingJob registers, durably."""

import json

import pytest

from runner.io.store import LocalStore
from runner.service.store import SCHEMA, AccessDenied, JobStore, ResourceInUse, ResourceNotFound, ValidationError


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


# -- tasks given back: Release task, and a page left unanswered --------------------------------------

T0 = 1_700_000_000.0
LIMIT = 300
A, B, C = "private.eu-west-1.aaa", "private.eu-west-1.bbb", "private.eu-west-1.ccc"


@pytest.fixture
def running(tmp_path, storage):
    """A job of 3 objects, one worker each, in progress."""
    jobs = JobStore(tmp_path / "db.sqlite3")
    req = request("tasks")
    req["HumanTaskConfig"].update(NumberOfHumanWorkersPerDataObject=1, TaskTimeLimitInSeconds=LIMIT)
    jobs.create_job(req, storage, now=T0)
    jobs.set_status("tasks", "InProgress", T0)
    return jobs


def test_a_released_task_goes_to_another_worker_at_once(running):
    a = running.next_task("tasks", A, T0)
    assert [running.next_task("tasks", w, T0).object_id for w in (B, C)] == [1, 2]
    assert running.next_task("tasks", "private.eu-west-1.ddd", T0 + 1) is None  # all three held
    assert running.release_task("tasks", a.token, A, T0 + 2) == "released"
    d = running.next_task("tasks", "private.eu-west-1.ddd", T0 + 2)
    assert d is not None and d.object_id == a.object_id and d.token != a.token


def test_a_page_asking_with_an_older_clock_does_not_get_back_a_released_task_as_held(running):
    """A page GET reads the time before a release commits: the task it is given is not the one
    released, which another worker may take."""
    a = running.next_task("tasks", A, T0)
    assert running.release_task("tasks", a.token, A, T0 + 0.5, view=None) == "released"
    again = running.next_task("tasks", A, T0 + 0.4)
    assert again is not None and again.object_id != a.object_id  # released with the button: others first
    b = running.next_task("tasks", B, T0 + 0.6)
    assert b.object_id == a.object_id  # free for B, held by nobody else


def test_only_the_holder_releases_and_releasing_again_changes_nothing(running):
    a = running.next_task("tasks", A, T0)
    with pytest.raises(AccessDenied):
        running.release_task("tasks", a.token, B, T0)
    with pytest.raises(ResourceNotFound):
        running.release_task("tasks", "f" * 32, A, T0)
    with pytest.raises(ResourceNotFound):  # a token is only good at its own job
        running.release_task("other-job", a.token, A, T0)
    assert running.next_task("tasks", A, T0 + 1).token == a.token  # still A's
    assert running.release_task("tasks", a.token, A, T0 + 2) == "released"
    assert running.release_task("tasks", a.token, A, T0 + 3) == "already released"
    b = running.next_task("tasks", B, T0 + 3)
    assert b.object_id == a.object_id
    running.submit(b.token, {"x": 1}, T0 + 4)
    assert running.release_task("tasks", b.token, B, T0 + 5) == "answered"
    c = running.next_task("tasks", C, T0 + 5)
    assert running.release_task("tasks", c.token, C, T0 + 5 + LIMIT) == "expired"  # back in the queue already


def test_released_by_the_worker_comes_last_left_page_comes_first(running):
    a = running.next_task("tasks", A, T0)
    assert running.release_task("tasks", a.token, A, T0 + 1) == "released"
    after = running.next_task("tasks", A, T0 + 1)
    assert after.object_id == 1  # Release task moves the worker on
    running.submit(after.token, {"x": 1}, T0 + 2)
    left = running.next_task("tasks", A, T0 + 3)
    assert left.object_id == 2
    assert running.release_task("tasks", left.token, A, T0 + 4, view=left.view, by="page") == "released"
    again = running.next_task("tasks", A, T0 + 5)  # the page was left: a reload finds the same task
    assert (again.object_id, again.token, again.accepted, again.expires) == (2, left.token, T0 + 5, T0 + 5 + LIMIT)
    running.submit(again.token, {"x": 2}, T0 + 6)
    last = running.next_task("tasks", A, T0 + 7)  # what A released with Release task: theirs when nothing else is
    assert (last.object_id, last.token) == (0, a.token)


def test_a_left_page_does_not_release_what_a_newer_page_shows(running):
    old = running.next_task("tasks", A, T0)
    new = running.next_task("tasks", A, T0 + 1)  # a reload: asked before the old page is gone
    assert new.token == old.token and new.view != old.view
    assert running.release_task("tasks", old.token, A, T0 + 2, view=old.view, by="page") == "shown again"
    assert running.next_task("tasks", B, T0 + 2).object_id == 1  # object 0 is still A's
    assert running.release_task("tasks", new.token, A, T0 + 3, view=new.view, by="page") == "released"
    assert running.next_task("tasks", B, T0 + 3).object_id == 1  # B holds 1 still
    assert running.next_task("tasks", C, T0 + 3).object_id == 0


def test_an_answer_to_a_released_task_counts_while_nobody_took_it(running):
    a = running.next_task("tasks", A, T0)  # say a second tab of A's was closed and released it
    running.release_task("tasks", a.token, A, T0 + 1, view=a.view, by="page")
    assert running.submit(a.token, {"x": 1}, T0 + 2) == ("tasks", 0, True)
    b = running.next_task("tasks", B, T0 + 3)
    running.release_task("tasks", b.token, B, T0 + 4)
    assert running.next_task("tasks", C, T0 + 4).object_id == b.object_id
    with pytest.raises(ValidationError, match="another worker has taken it"):
        running.submit(b.token, {"x": 1}, T0 + 5)


def test_a_release_survives_a_new_process(tmp_path, running):
    a = running.next_task("tasks", A, T0)
    running.next_task("tasks", B, T0)
    running.release_task("tasks", a.token, A, T0 + 1)
    again = JobStore(tmp_path / "db.sqlite3")
    assert again.release_task("tasks", a.token, A, T0 + 2) == "already released"
    assert again.next_task("tasks", C, T0 + 2).object_id == 0
    assert again.next_task("tasks", "private.eu-west-1.ddd", T0 + 2).object_id == 2  # 1 is still B's


def test_held_elsewhere_counts_what_could_still_come_back(running):
    assert running.held_elsewhere("tasks", A, T0) == (0, None)
    a = running.next_task("tasks", A, T0)
    running.next_task("tasks", B, T0 + 10)
    assert running.held_elsewhere("tasks", C, T0 + 20) == (2, T0 + LIMIT)
    assert running.held_elsewhere("tasks", A, T0 + 20) == (1, T0 + 10 + LIMIT)  # not A's own
    running.release_task("tasks", a.token, A, T0 + 30)
    assert running.held_elsewhere("tasks", C, T0 + 30) == (1, T0 + 10 + LIMIT)
    assert running.held_elsewhere("tasks", C, T0 + 10 + LIMIT) == (0, None)  # expired: back in the queue


def test_a_store_made_before_releases_gets_the_new_columns(tmp_path, storage):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace("    released TEXT,", "").replace("    view TEXT,", ""))
    assert not {"released", "view"} & {r[1] for r in db.execute("PRAGMA table_info(assignments)")}
    db.close()
    jobs = JobStore(path)
    req = request("old")
    req["HumanTaskConfig"].update(NumberOfHumanWorkersPerDataObject=1, TaskTimeLimitInSeconds=LIMIT)
    jobs.create_job(req, storage, now=T0)
    jobs.set_status("old", "InProgress", T0)
    a = jobs.next_task("old", A, T0)
    assert jobs.release_task("old", a.token, A, T0 + 1) == "released"
    assert JobStore(path).next_task("old", B, T0 + 1).object_id == 0
