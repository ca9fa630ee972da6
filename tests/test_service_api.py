"""gtrun's labeling service through an unmodified boto3 sagemaker client, over real HTTP."""

from __future__ import annotations

import datetime
import json
import math
import re
import time

import botocore.exceptions
import pytest

from runner.service.server import Service
from runner.service.store import ValidationError
from tests.service_helpers import Worker, on_hosted_ui, put_job, sagemaker

TWEETS = [{"source": f"tweet {i}", "tweet_id": i} for i in range(5)]
LABELS = ["Positive", "Negative", "Neutral"]


@pytest.fixture
def service(tmp_path):
    with Service(tmp_path / "storage", port=0).running() as svc:
        yield svc


def wait_status(client, name, wanted, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"]
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def error_code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def test_create_describe_and_status_moves_to_in_progress(service):
    sm = sagemaker(service.url)
    request = put_job(service.root, "Tweets-1", TWEETS, labels=LABELS)
    arn = sm.create_labeling_job(**request)["LabelingJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/tweets-1"
    d = sm.describe_labeling_job(LabelingJobName="Tweets-1")
    assert d["LabelingJobStatus"] in ("Initializing", "InProgress")
    assert wait_status(sm, "Tweets-1", "InProgress") == "InProgress"
    d = sm.describe_labeling_job(LabelingJobName="Tweets-1")
    assert d["LabelCounters"] == {"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0,
                                  "FailedNonRetryableError": 0, "Unlabeled": 5}
    assert d["HumanTaskConfig"] == request["HumanTaskConfig"]
    assert d["CreationTime"].tzinfo is not None and d["JobReferenceCode"]


def test_errors_ground_truth_returns(service):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "job-a", TWEETS, labels=LABELS))
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.create_labeling_job(**put_job(service.root, "JOB-A", TWEETS, labels=LABELS))
    assert error_code(err) == "ResourceInUse"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.describe_labeling_job(LabelingJobName="nope")
    assert error_code(err) == "ResourceNotFound"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.stop_labeling_job(LabelingJobName="nope")
    assert error_code(err) == "ResourceNotFound"
    bad = put_job(service.root, "too-many", TWEETS, labels=LABELS, workers=12)  # botocore does not check max
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.create_labeling_job(**bad)
    assert error_code(err) == "ValidationException"
    assert "NumberOfHumanWorkersPerDataObject" in err.value.response["Error"]["Message"]
    missing = put_job(service.root, "no-manifest", TWEETS, labels=LABELS)
    missing["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] = "s3://b/none.jsonl"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.create_labeling_job(**missing)
    assert error_code(err) == "ValidationException"
    escape = put_job(service.root, "escape", TWEETS, labels=LABELS)
    escape["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"] = "s3://b/../../etc/passwd"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sm.create_labeling_job(**escape)
    assert error_code(err) == "ValidationException"


def test_list_filters_sort_and_paginate(service):
    sm = sagemaker(service.url)
    for name in ("alpha-1", "beta-2", "alpha-3", "gamma-4", "alpha-5"):
        sm.create_labeling_job(**put_job(service.root, name, TWEETS, labels=LABELS))
    listed = sm.list_labeling_jobs()["LabelingJobSummaryList"]
    assert [s["LabelingJobName"] for s in listed] == ["alpha-1", "beta-2", "alpha-3", "gamma-4", "alpha-5"]
    names = [s["LabelingJobName"] for s in
             sm.list_labeling_jobs(NameContains="ALPHA", SortBy="Name", SortOrder="Descending")["LabelingJobSummaryList"]]
    assert names == ["alpha-5", "alpha-3", "alpha-1"]
    pages = list(sm.get_paginator("list_labeling_jobs").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["LabelingJobSummaryList"]) for p in pages] == [2, 2, 1]
    assert sum((p["LabelingJobSummaryList"] for p in pages), [])[0]["WorkteamArn"].endswith("gtrun-local")
    sm.stop_labeling_job(LabelingJobName="beta-2")
    wait_status(sm, "beta-2", "Stopped")
    stopped = sm.list_labeling_jobs(StatusEquals="Stopped")["LabelingJobSummaryList"]
    assert [s["LabelingJobName"] for s in stopped] == ["beta-2"]
    hour = datetime.timedelta(hours=1)
    created = listed[0]["CreationTime"]
    assert sm.list_labeling_jobs(CreationTimeAfter=created + hour)["LabelingJobSummaryList"] == []
    assert len(sm.list_labeling_jobs(CreationTimeBefore=created + hour)["LabelingJobSummaryList"]) == 5
    assert sm.list_labeling_jobs(LastModifiedTimeBefore=created - hour)["LabelingJobSummaryList"] == []
    with pytest.raises(botocore.exceptions.ClientError):
        sm.list_labeling_jobs(NextToken="garbage")


def test_workers_complete_a_job_and_ground_truth_output_appears(service):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "two-workers", TWEETS[:3], labels=LABELS, workers=2))
    wait_status(sm, "two-workers", "InProgress")
    a, b = Worker(service.url), Worker(service.url)
    seen_a = []
    while (task := a.task("two-workers")) is not None:
        assert task["objectId"] not in seen_a  # never the same object twice
        seen_a.append(task["objectId"])
        assert a.answer("two-workers", task, {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    assert seen_a == ["0", "1", "2"]
    assert sm.describe_labeling_job(LabelingJobName="two-workers")["LabelCounters"]["TotalLabeled"] == 0
    for label in ("Positive", "Negative", "Positive"):
        task = b.task("two-workers")
        assert b.answer("two-workers", task, {"crowd-classifier": {"label": label}}).status_code == 200
    assert b.task("two-workers") is None
    assert wait_status(sm, "two-workers", "Completed") == "Completed"
    d = sm.describe_labeling_job(LabelingJobName="two-workers")
    assert d["LabelCounters"]["TotalLabeled"] == 3 and d["LabelCounters"]["Unlabeled"] == 0
    out = d["LabelingJobOutput"]["OutputDatasetS3Uri"]
    assert out == "s3://b/jobs/two-workers/output/two-workers/manifests/output/output.manifest"
    lines = [json.loads(x) for x in (service.root / out.removeprefix("s3://")).read_text().splitlines()]
    assert [x["tweet_id"] for x in lines] == [0, 1, 2]
    assert [x["label-metadata"]["class-name"] for x in lines] == ["Positive", "Positive", "Positive"][:1] + \
        [lines[1]["label-metadata"]["class-name"], "Positive"]
    assert lines[0]["label"] == 0 and lines[0]["label-metadata"]["type"] == "groundtruth/text-classification"
    job_dir = service.root / "b/jobs/two-workers/output/two-workers"
    responses = sorted((job_dir / "annotations/worker-response/iteration-1").glob("*/*.json"))
    assert [p.parent.name for p in responses] == ["0", "1", "2"]
    record = json.loads(responses[0].read_text())
    assert len(record["answers"]) == 2
    assert {x["workerId"].split(".")[0] for x in record["answers"]} == {"private"}
    assert list((job_dir / "annotations/consolidated-annotation/consolidation-response/iteration-1").glob("*.json"))


def test_answers_survive_a_restart_and_the_job_resumes(tmp_path):
    root = tmp_path / "storage"
    with Service(root, port=0).running() as svc:
        sm = sagemaker(svc.url)
        sm.create_labeling_job(**put_job(root, "durable", TWEETS[:2], labels=LABELS))
        wait_status(sm, "durable", "InProgress")
        w = Worker(svc.url)
        task = w.task("durable")
        assert w.answer("durable", task, {"crowd-classifier": {"label": "Neutral"}}).status_code == 200
        cookie = dict(w.http.cookies)
    with Service(root, port=0).running() as svc:
        sm = sagemaker(svc.url)
        d = sm.describe_labeling_job(LabelingJobName="durable")
        assert d["LabelingJobStatus"] == "InProgress"
        assert d["LabelCounters"]["TotalLabeled"] == 1 and d["LabelCounters"]["Unlabeled"] == 1
        w = Worker(svc.url)
        w.http.cookies.update(cookie)  # the same worker comes back: gets the next object only
        task = w.task("durable")
        assert task["objectId"] == "1"
        w.answer("durable", task, {"crowd-classifier": {"label": "Negative"}})
        assert wait_status(sm, "durable", "Completed") == "Completed"


# Three workers per object, answering object after object: each object finishes as its third
# answer arrives. Unanimous objects first (one per class), then a 2-1 vote, then more.
VOTES = [("Positive",) * 3, ("Negative",) * 3, ("Neutral",) * 3, ("Positive", "Positive", "Negative"),
         ("Negative",) * 3, ("Neutral", "Positive", "Neutral"), ("Positive",) * 3]


def label_in_turn(name: str, workers: list[Worker], votes: list[tuple[str, ...]]) -> None:
    for labels in votes:
        for worker, label in zip(workers, labels, strict=True):
            task = worker.task(name)
            assert task is not None
            assert worker.answer(name, task, {"crowd-classifier": {"label": label}}).status_code == 200


def confidences(root, name: str) -> list[tuple[str, float]]:
    out = root / f"b/jobs/{name}/output/{name}/manifests/output/output.manifest"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    return [(x["label-metadata"]["class-name"], x["label-metadata"]["confidence"]) for x in lines]


def test_classification_confidence_weighs_the_workers_record_in_the_job(service):
    sm = sagemaker(service.url)
    lines = [{"source": f"tweet {i}"} for i in range(len(VOTES))]
    sm.create_labeling_job(**put_job(service.root, "three", lines, labels=LABELS, workers=3))
    wait_status(sm, "three", "InProgress")
    label_in_turn("three", [Worker(service.url) for _ in range(3)], VOTES)
    assert wait_status(sm, "three", "Completed") == "Completed"
    got = confidences(service.root, "three")
    assert [name for name, _ in got] == ["Positive", "Negative", "Neutral", "Positive", "Negative", "Neutral",
                                         "Positive"]
    unanimous = [c for (_, c), votes in zip(got, VOTES, strict=True) if len(set(votes)) == 1]
    split = [c for (_, c), votes in zip(got, VOTES, strict=True) if len(set(votes)) > 1]
    # A real posterior: a 2-1 vote between workers with the same record is likely, not certain; a
    # unanimous vote is near-certain, and more so as the workers keep agreeing.
    assert all(0.5 < c < 1 for c in split), got
    assert all(c >= 0.9 for c in unanimous), got
    assert unanimous[-1] >= unanimous[0]
    assert all(isinstance(c, float) and 0 <= c <= 1 for _, c in got)


def test_classification_confidence_is_the_same_after_a_restart(tmp_path):
    """The job's record of its workers survives a restart: the same answers in the same order give
    the same output whether or not the service restarted in between."""
    lines = [{"source": f"tweet {i}"} for i in range(len(VOTES))]
    outputs = []
    for restart in (False, True):
        root = tmp_path / f"storage-{restart}"
        with Service(root, port=0).running() as svc:
            sm = sagemaker(svc.url)
            sm.create_labeling_job(**put_job(root, "again", lines, labels=LABELS, workers=3))
            wait_status(sm, "again", "InProgress")
            workers = [Worker(svc.url) for _ in range(3)]
            label_in_turn("again", workers, VOTES[:4] if restart else VOTES)
            cookies = [dict(w.http.cookies) for w in workers]
        if restart:
            with Service(root, port=0).running() as svc:
                workers = [Worker(svc.url) for _ in range(3)]
                for worker, cookie in zip(workers, cookies, strict=True):
                    worker.http.cookies.update(cookie)
                label_in_turn("again", workers, VOTES[4:])
                assert wait_status(sagemaker(svc.url), "again", "Completed") == "Completed"
        outputs.append(confidences(root, "again"))
    assert outputs[0] == outputs[1]
    assert outputs[0][3][1] < 1 and outputs[0][5][1] < 1


def test_a_task_not_submitted_in_time_goes_back_to_the_queue(service):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "slow", TWEETS[:1], labels=LABELS, time_limit=30))
    wait_status(sm, "slow", "InProgress")
    jobs = service.app.state.jobs
    first = jobs.next_task("slow", "private.us-east-1.aaa", now=time.time())
    assert jobs.next_task("slow", "private.us-east-1.bbb", now=time.time()) is None  # taken
    later = time.time() + 31
    again = jobs.next_task("slow", "private.us-east-1.bbb", now=later)
    assert again is not None and again.object_id == first.object_id
    assert jobs.next_task("slow", "private.us-east-1.aaa", now=later) is None  # never the same object twice
    with pytest.raises(ValidationError, match="time limit"):
        jobs.submit(first.token, {"crowd-classifier": {"label": "Positive"}}, now=later)


def test_stop_keeps_what_was_labeled(service):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "stopme", TWEETS, labels=LABELS))
    wait_status(sm, "stopme", "InProgress")
    w = Worker(service.url)
    w.answer("stopme", w.task("stopme"), {"crowd-classifier": {"label": "Positive"}})
    sm.stop_labeling_job(LabelingJobName="stopme")
    assert wait_status(sm, "stopme", "Stopped") == "Stopped"
    out = service.root / "b/jobs/stopme/output/stopme/manifests/output/output.manifest"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len(TWEETS)  # line N is object N: the unlabeled ones unchanged
    assert lines[0]["label-metadata"]["class-name"] == "Positive"
    assert lines[1:] == TWEETS[1:]
    assert w.task("stopme") is None
    page = w.http.get("/jobs/stopme/").text  # a worker who opens the link now is told why there is no task
    assert "This job was stopped" in page and "No more tasks for you" not in page
    assert '<progress class="gtrun-bar-progress" value="1" max="5">' in page and "1 of 5 labeled" in page


def test_a_worker_with_nothing_left_in_a_running_job_is_told_so(service):
    sm = sagemaker(service.url)
    assert "No jobs yet" in Worker(service.url).http.get("/").text
    sm.create_labeling_job(**put_job(service.root, "one", TWEETS[:1], labels=LABELS, workers=2))
    wait_status(sm, "one", "InProgress")
    w = Worker(service.url)
    w.answer("one", w.task("one"), {"crowd-classifier": {"label": "Positive"}})
    page = w.http.get("/jobs/one/").text  # answered by this worker, still open for a second one
    assert "No more tasks for you" in page and "stopped" not in page
    index = w.http.get("/").text
    assert '<a href="/jobs/one/">one</a></td><td>InProgress</td><td>0 / 1</td>' in index


def test_answers_that_cannot_be_consolidated_fail_their_object_not_the_service(service, tmp_path):
    """A template whose labels are not the job's lets a worker submit a label the consolidation
    refuses: Ground Truth fails that object with the reason; the job, and a restarted service, go on."""
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "odd", TWEETS[:2], labels=LABELS))
    wait_status(sm, "odd", "InProgress")
    w = Worker(service.url)
    bad = w.answer("odd", w.task("odd"), {"crowd-classifier": {"label": "Elsewhere"}})
    assert bad.status_code == 200  # the worker's answer is taken; the object fails at consolidation
    assert w.answer("odd", w.task("odd"), {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    assert wait_status(sm, "odd", "Completed") == "Completed"
    d = sm.describe_labeling_job(LabelingJobName="odd")
    assert d["LabelCounters"]["TotalLabeled"] == 1 and d["LabelCounters"]["FailedNonRetryableError"] == 1
    lines = [json.loads(x) for x in (service.root / "b/jobs/odd/output/odd/manifests/output/output.manifest")
             .read_text().splitlines()]
    reason = lines[0]["label-metadata"]["failure-reason"]
    assert reason.startswith("ClientError: Annotation consolidation failed") and "'Elsewhere'" in reason
    with Service(service.root, port=0).running() as again:  # a restart recovers every job as it was
        assert sagemaker(again.url).describe_labeling_job(LabelingJobName="odd")["LabelingJobStatus"] == "Completed"


def test_the_consolidation_failure_warning_cuts_a_large_answer_short(service, caplog):
    """The warning logged an answer that cannot be consolidated whole (and the object's failure-reason held
    it): an answer of a few MB flooded the log."""
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "big", TWEETS[:2], labels=LABELS))
    wait_status(sm, "big", "InProgress")
    w = Worker(service.url)
    for answer in ({"notes": "x" * 500_000}, {"crowd-classifier": {"label": "E" * 300_000}}):
        assert w.answer("big", w.task("big"), answer).status_code == 200
    assert wait_status(sm, "big", "Completed") == "Completed"
    logged = sorted(x.getMessage() for x in caplog.records if "failed consolidation" in x.getMessage())
    assert len(logged) == 2 and all(len(x) < 1_000 for x in logged), [x[:300] for x in logged]
    assert re.match(r"job big: object \d failed consolidation: worker '[^']+': no 'crowd-classifier' answer in "
                    r"\{'notes': 'xxx+\.\.\. \(500,013 characters\)$", logged[0]), logged[0]
    assert re.match(r"job big: object \d failed consolidation: worker '[^']+': label 'EEE+\.\.\. \(300,002 characters\) "
                    r"is not one of \['Positive', 'Negative', 'Neutral'\]", logged[1]), logged[1]
    lines = (service.root / "b/jobs/big/output/big/manifests/output/output.manifest").read_text().splitlines()
    reasons = [json.loads(x)["label-metadata"]["failure-reason"] for x in lines]  # the failure-reason likewise
    assert all(r.startswith("ClientError: Annotation consolidation failed: worker") and len(r) < 1_000 for r in reasons)


def test_an_answer_with_a_number_json_cannot_hold_is_refused(service):
    """Python's JSON reader takes NaN, Infinity and 1e400 (a float infinity): such an answer was
    recorded, written to the worker-response file as invalid JSON, and its consolidation raised, so
    the object never finished, the job never completed and the service could not start again."""
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "inf", [{"source": "Alice met Bob"}],
                                     task_type="named_entity", labels=["PER"]))
    wait_status(sm, "inf", "InProgress")
    w = Worker(service.url)
    task = w.task("inf")
    for number in ("1e400", "NaN", "-Infinity"):
        answer = {"crowd-entity-annotation": {"entities": [{"label": "PER", "startOffset": 0, "endOffset": 5}]}}
        body = json.dumps({"token": task["token"], "answer": answer}).replace('"startOffset": 0',
                                                                         f'"startOffset": {number}')
        r = w.http.post(task["submitUrl"], content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "next" not in r.json(), r.text  # the page keeps the answer
        assert "number" in r.json()["message"]
    deep = json.dumps({"token": task["token"], "answer": 1}).replace("1}", "[" * 100_000 + "1" + "]" * 100_000 + "}")
    r = w.http.post(task["submitUrl"], content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "the answer is nested too deep to read"
    good = {"crowd-entity-annotation": {"entities": [{"label": "PER", "startOffset": 0, "endOffset": 5}]}}
    assert w.answer("inf", task, good).status_code == 200
    assert wait_status(sm, "inf", "Completed") == "Completed"
    with Service(service.root, port=0).running() as again:
        assert sagemaker(again.url).describe_labeling_job(LabelingJobName="inf")["LabelingJobStatus"] == "Completed"


def test_an_answer_too_large_is_refused_before_it_is_read(service):
    """A worker's answer had no size limit: 100 MB was read into memory, stored and written to the
    worker-response file. A body over the limit is refused with 413 and a message, as soon as its
    declared length or its bytes read so far pass the limit; the task stays open for a real answer."""
    import httpx

    sm = started(service, "big", TWEETS[:1])
    w = Worker(service.url)
    task = w.task("big")
    url = service.url + task["submitUrl"]
    padding = "x" * (1024 * 1024)
    sent = 0

    def stream():  # chunked: no Content-Length to refuse it by, so the service must count
        nonlocal sent
        yield b'{"token": "' + task["token"].encode() + b'", "answer": {"crowd-classifier": {"label": "'
        for _ in range(100):
            sent += len(padding)
            yield padding.encode()
        yield b'"}}}'

    r = httpx.post(url, content=stream(), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text
    assert "too large" in r.json()["message"] and "at most 4 MiB" in r.json()["message"]
    assert sent < 50 * 1024 * 1024  # refused while it came, not after all 100 MB were read
    declared = {"token": task["token"], "answer": {"crowd-classifier": {"label": "Positive", "note": padding * 100}}}
    r = httpx.post(url, json=declared, timeout=60)  # Content-Length says 100 MB: refused unread
    assert r.status_code == 413 and "too large" in r.json()["message"], r.text
    r = httpx.post(service.url + "/", headers={"X-Amz-Target": "SageMaker.DescribeLabelingJob"},
                   content=b" " * (100 * 1024 * 1024), timeout=60)  # the API's bodies too, in its error shape
    assert r.status_code == 413 and r.json()["__type"] == "RequestEntityTooLarge", r.text
    assert sm.describe_labeling_job(LabelingJobName="big")["LabelCounters"]["TotalLabeled"] == 0
    assert w.answer("big", task, {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    assert wait_status(sm, "big", "Completed") == "Completed"


def test_an_answer_with_many_boxes_is_taken(service):
    """The body limit leaves room for real answers: a box answer with 5,000 objects (about 400 KB)."""
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "boxes", [{"source-ref": "s3://b/img.jpg"}],
                                     task_type="bounding_box", labels=["car"]))
    wait_status(sm, "boxes", "InProgress")
    w = Worker(service.url)
    boxes = [{"label": "car", "left": i % 4000, "top": i // 4000, "width": 12, "height": 34} for i in range(5000)]
    answer = {"boundingBox": {"boundingBoxes": boxes, "inputImageProperties": {"height": 3000, "width": 4000}}}
    assert w.answer("boxes", w.task("boxes"), answer).status_code == 200
    assert wait_status(sm, "boxes", "Completed") == "Completed"


def test_availability_lifetime_fails_unanswered_objects(service):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "expiring", TWEETS[:2], labels=LABELS, availability=60))
    wait_status(sm, "expiring", "InProgress")
    w = Worker(service.url)
    w.answer("expiring", w.task("expiring"), {"crowd-classifier": {"label": "Positive"}})
    service.app.state.jobs.tick(now=time.time() + 61)
    d = sm.describe_labeling_job(LabelingJobName="expiring")
    assert d["LabelingJobStatus"] == "Completed"
    assert d["LabelCounters"]["TotalLabeled"] == 1 and d["LabelCounters"]["FailedNonRetryableError"] == 1
    lines = (service.root / "b/jobs/expiring/output/expiring/manifests/output/output.manifest").read_text().splitlines()
    failed = json.loads(lines[1])
    assert "label" not in failed and "failure-reason" in failed["label-metadata"]
    assert "This job is complete" in w.http.get("/jobs/expiring/").text


def test_an_answer_to_an_object_the_expiry_finished_is_refused_not_lost(service):
    """A job past its task availability finishes its objects one by one, its status still InProgress
    until the last: an answer sent meanwhile to an object already finished was taken (200, the next
    task) and never written anywhere; it is refused, and the page moves on."""
    sm = started(service, "late", TWEETS[:1], workers=2, availability=60)
    a, b = Worker(service.url), Worker(service.url)
    a.answer("late", a.task("late"), {"crowd-classifier": {"label": "Positive"}})
    held = b.task("late")
    jobs = service.app.state.jobs
    jobs.finish_object("late", 0, time.time())  # what the expiry does first for an object with answers
    r = b.answer("late", held, {"crowd-classifier": {"label": "Negative"}})
    assert r.status_code == 400 and r.json()["next"] == "/jobs/late/", r.text
    assert "no longer taking answers" in r.json()["message"]
    jobs.tick(now=time.time() + 61)
    assert sm.describe_labeling_job(LabelingJobName="late")["LabelingJobStatus"] == "Completed"
    responses = list((service.root / "b/jobs/late/output/late/annotations/worker-response").rglob("*.json"))
    assert [len(json.loads(f.read_text())["answers"]) for f in responses] == [1]


def block_writes(root, job, folder="annotations"):
    """A file where the job's output folder goes: every write under it fails (OSError), as a full
    or failing disk would; unlink() the file returned to let writes through again."""
    blocker = root / f"b/jobs/{job}/output/{job}/{folder}"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    return blocker


def retry_state(jobs, name):
    (attempts, due), = jobs.retrying(name).values()
    return attempts, due


def test_an_object_whose_files_could_not_be_written_is_finished_on_a_later_tick(service, caplog):
    """Finishing an object that failed for a reason other than consolidation (its files could not
    be written) gave the object back as pending, and nothing tried it again until a restart or the
    job's expiry: the job never completed. The ticker tries it again, logging the error once, less
    and less often while it goes on failing, and the object is finished once storage works."""
    sm = started(service, "heal", TWEETS[:2])
    blocker = block_writes(service.root, "heal")
    w = Worker(service.url)
    r = w.answer("heal", w.task("heal"), {"crowd-classifier": {"label": "Positive"}})
    assert r.status_code == 200, r.text  # the answer is recorded; its object is finished later
    jobs = service.app.state.jobs
    deadline = time.monotonic() + 10
    while retry_state(jobs, "heal")[0] < 2 and time.monotonic() < deadline:  # the service's own ticker
        time.sleep(0.1)
    attempts, _ = retry_state(jobs, "heal")
    assert attempts >= 2
    logged = [x.getMessage() for x in caplog.records if "could not be finished" in x.getMessage()]
    assert len(logged) == 1 and "heal" in logged[0] and "Not a directory" in logged[0], logged
    far = time.time() + 3600  # ticks at a later time: the service's own ticker leaves the object to them
    jobs.tick(now=far)
    tries, due = retry_state(jobs, "heal")
    assert tries == attempts + 1 and due - far == 2 ** attempts  # 1 s, 2 s, 4 s ... apart
    for _ in range(50):  # ticks before it is due do not try it: a lasting failure costs no CPU
        jobs.tick(now=due - 0.01)
    assert retry_state(jobs, "heal") == (tries, due)
    jobs.tick(now=due)
    assert retry_state(jobs, "heal")[0] == tries + 1
    assert len([x for x in caplog.records if "could not be finished" in x.getMessage()]) == 1
    assert sm.describe_labeling_job(LabelingJobName="heal")["LabelCounters"]["TotalLabeled"] == 0
    blocker.unlink()
    jobs.tick(now=retry_state(jobs, "heal")[1])
    assert jobs.retrying("heal") == {}
    assert any("finished after" in x.getMessage() for x in caplog.records)
    assert sm.describe_labeling_job(LabelingJobName="heal")["LabelCounters"]["TotalLabeled"] == 1
    assert w.answer("heal", w.task("heal"), {"crowd-classifier": {"label": "Negative"}}).status_code == 200
    assert wait_status(sm, "heal", "Completed") == "Completed"
    lines = (service.root / "b/jobs/heal/output/heal/manifests/output/output.manifest").read_text().splitlines()
    assert [json.loads(x)["label-metadata"]["class-name"] for x in lines] == ["Positive", "Negative"]


def test_an_object_another_thread_is_finishing_keeps_its_retry_state(service):
    """A request (an answer) and the ticker may both try an object; the one that finds it claimed
    by the other left it out of the retries, so that when the other failed the object stayed
    pending with nothing to try it again, and its job never ended."""
    started(service, "race", TWEETS[:1])
    blocker = block_writes(service.root, "race")
    w = Worker(service.url)
    assert w.answer("race", w.task("race"), {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    jobs, store = service.app.state.jobs, service.app.state.jobs.store
    state = retry_state(jobs, "race")
    assert store.claim("race", 0)  # another thread is finishing it ...
    jobs.finish_object("race", 0, state[1])  # ... so this one leaves it, and its retry state, alone
    assert retry_state(jobs, "race") == state
    store.release("race", 0)  # the other thread failed too: the object is pending, still to be tried again
    blocker.unlink()
    jobs.tick(now=state[1])
    assert jobs.retrying("race") == {} and not store.unfinished("race", 0)


def test_a_job_does_not_end_over_an_object_it_could_not_finish(service, caplog):
    """Stopping (or the end of the task availability) finishes the objects with answers: one whose
    files could not be written failed the StopLabelingJob call, and a tick raised every second
    (a traceback each time). The job stays Stopping until the object is finished, then stops with
    its label; a failing output manifest is logged once too, and the job ends once it is written."""
    sm = started(service, "halt", TWEETS[:2], workers=2)
    blocker = block_writes(service.root, "halt")
    w = Worker(service.url)
    assert w.answer("halt", w.task("halt"), {"crowd-classifier": {"label": "Neutral"}}).status_code == 200
    manifests = block_writes(service.root, "halt", "manifests")
    sm.stop_labeling_job(LabelingJobName="halt")
    jobs = service.app.state.jobs
    assert retry_state(jobs, "halt")[0] == 1
    assert wait_status(sm, "halt", "Stopped", timeout=3) == "Stopping"
    blocker.unlink()
    jobs.tick(now=retry_state(jobs, "halt")[1])  # the object is finished; the manifest still fails
    assert jobs.retrying("halt") == {}
    for _ in range(20):
        jobs.tick()
    assert sm.describe_labeling_job(LabelingJobName="halt")["LabelingJobStatus"] == "Stopping"
    assert len([x for x in caplog.records if "could not be finished" in x.getMessage()]) == 1
    assert len([x for x in caplog.records if "job halt" in x.getMessage() and "manifest" in x.getMessage()]) == 1
    manifests.unlink()
    assert wait_status(sm, "halt", "Stopped") == "Stopped"
    lines = (service.root / "b/jobs/halt/output/halt/manifests/output/output.manifest").read_text().splitlines()
    assert json.loads(lines[0])["label-metadata"]["class-name"] == "Neutral" and "label" not in json.loads(lines[1])


def test_a_ner_job_on_aws_hosted_ui_shows_its_own_title_and_instructions(service):
    """A NER job names AWS's hosted worker UI (HumanTaskUiArn), not a template: the service renders
    its bundled NER page, which showed that page's fallback header and instructions. It shows the
    job's TaskTitle, and the instructions of its label configuration (where the hosted UI reads
    them), or its TaskDescription when that has none."""
    lines = [{"source": "Alice met Bob"}]
    instructions = {"shortInstruction": "<p>Mark <b>every</b> person</p>",
                    "fullInstruction": "<p>Mark every person, titles excluded</p>"}
    request = on_hosted_ui(service.root, put_job(service.root, "ner-ui", lines, task_type="named_entity",
                                                 labels=["PER"]), instructions)
    request["HumanTaskConfig"]["TaskTitle"] = "Find the people & places"
    sm = sagemaker(service.url)
    sm.create_labeling_job(**request)
    wait_status(sm, "ner-ui", "InProgress")
    page = Worker(service.url).task("ner-ui")["html"]
    assert 'header="Find the people &amp; places"' in page, page
    assert "<p>Mark <b>every</b> person</p>" in page and "<p>Mark every person, titles excluded</p>" in page
    assert "Highlight each named entity" not in page and "give it its type" not in page
    bare = on_hosted_ui(service.root, put_job(service.root, "ner-plain", lines, task_type="named_entity",
                                              labels=["PER"]), None)  # no instructions in its label config
    sm.create_labeling_job(**bare)
    wait_status(sm, "ner-plain", "InProgress")
    page = Worker(service.url).task("ner-plain")["html"]
    assert 'header="Label it"' in page and "Label the object" in page  # TaskTitle, TaskDescription

def test_unknown_operation_and_bad_body(service):
    import httpx
    r = httpx.post(service.url + "/", headers={"X-Amz-Target": "SageMaker.CreateModel"}, content=b"{}")
    assert r.status_code == 400 and r.json()["__type"] == "UnknownOperationException"
    r = httpx.post(service.url + "/", headers={"X-Amz-Target": "SageMaker.DescribeLabelingJob"}, content=b"[")
    assert r.status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000  # nested deeper than Python's JSON reader goes
    r = httpx.post(service.url + "/", headers={"X-Amz-Target": "SageMaker.DescribeLabelingJob"}, content=deep)
    assert r.status_code == 400 and r.json()["__type"] == "SerializationException", r.text


# -- Release task: the worker gives a reserved task back ------------------------------------------


def release(worker, task, **extra):
    return worker.http.post(task["releaseUrl"], json={"token": task["token"], **extra})


def started(service, name, lines, **job):
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, name, lines, labels=LABELS, **job))
    assert wait_status(sm, name, "InProgress") == "InProgress"
    return sm


def test_release_gives_the_task_to_another_worker_at_once(service):
    started(service, "give-back", TWEETS[:1])
    a, b = Worker(service.url), Worker(service.url)
    task = a.task("give-back")
    assert task["releaseUrl"] == "/jobs/give-back/release"
    assert b.task("give-back") is None  # A holds the only object
    r = release(a, task)
    assert r.status_code == 200
    assert r.json() == {"status": "released", "released": True, "next": "/jobs/give-back/"}
    taken = b.task("give-back")
    assert taken is not None and taken["objectId"] == task["objectId"]
    assert b.answer("give-back", taken, {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    assert a.task("give-back") is None


def test_releasing_another_workers_task_is_refused(service):
    started(service, "not-yours", TWEETS[:1])
    a, b = Worker(service.url), Worker(service.url)
    task = a.task("not-yours")
    b.task("not-yours")  # B has a cookie, and no task
    r = release(b, task)
    assert r.status_code == 403 and r.json()["__type"] == "AccessDeniedException"
    page = b.http.post(task["releaseUrl"], data={"token": task["token"]}, headers={"Accept": "text/html"})
    assert page.status_code == 403 and "The task was not released" in page.text
    import httpx

    r = httpx.post(service.url + task["releaseUrl"], json={"token": task["token"]})  # no cookie at all
    assert r.status_code == 403
    assert b.task("not-yours") is None and a.task("not-yours")["token"] == task["token"]  # still A's
    r = a.http.post("/jobs/no-such-job/release", json={"token": task["token"]})
    assert r.status_code == 400 and r.json()["__type"] == "ResourceNotFound"  # as the answer POST says it
    r = a.http.post(task["releaseUrl"], json={"token": "0" * 32})
    assert r.status_code == 400 and r.json()["__type"] == "ResourceNotFound"
    assert a.http.post(task["releaseUrl"], content=b"[", headers={"Content-Type": "application/json"}).status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000  # nested deeper than Python's JSON reader goes
    r = a.http.post(task["releaseUrl"], content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "token" in r.json()["message"], r.text
    assert a.http.post(task["releaseUrl"], data={"view": "x"}).status_code == 400


def test_release_is_idempotent(service):
    started(service, "twice", TWEETS[:3], time_limit=30)
    a, b = Worker(service.url), Worker(service.url)
    task = a.task("twice")
    assert release(a, task).json()["status"] == "released"
    again = release(a, task)
    assert again.status_code == 200 and again.json() == {"status": "already released", "released": False,
                                                         "next": "/jobs/twice/"}
    assert b.task("twice")["objectId"] == "0"  # B took it: once, not twice
    assert a.task("twice")["objectId"] == "1"
    answered = a.task("twice")
    a.answer("twice", answered, {"crowd-classifier": {"label": "Neutral"}})
    assert release(a, answered).json() == {"status": "answered", "released": False, "next": "/jobs/twice/"}
    jobs = service.app.state.jobs
    lapsed = jobs.next_task("twice", "private.us-east-1.ccc", now=time.time())
    assert jobs.release_task("twice", lapsed.token, "private.us-east-1.ccc", now=time.time() + 31) == "expired"
    stale = b.task("twice")  # a page left after a reload of it: the newer page keeps the task
    assert release(b, stale, view="an older page").json()["status"] == "shown again"
    assert b.task("twice")["token"] == stale["token"]


def test_a_release_survives_a_restart(tmp_path):
    root = tmp_path / "storage"
    with Service(root, port=0).running() as svc:
        sm = sagemaker(svc.url)
        sm.create_labeling_job(**put_job(root, "kept", TWEETS[:2], labels=LABELS))
        wait_status(sm, "kept", "InProgress")
        a, x = Worker(svc.url), Worker(svc.url)
        task = a.task("kept")
        assert x.task("kept")["objectId"] == "1"  # X holds object 1 and keeps it
        assert release(a, task).json()["status"] == "released"
        cookie = dict(a.http.cookies)
    with Service(root, port=0).running() as svc:
        b, c = Worker(svc.url), Worker(svc.url)
        assert b.task("kept")["objectId"] == "0"  # released before the restart: free at once
        assert c.task("kept") is None  # object 1's reservation survived too
        a = Worker(svc.url)
        a.http.cookies.update(cookie)
        assert release(a, task).json()["status"] == "already released"


def test_the_release_form_moves_the_worker_on_without_javascript(service):
    started(service, "by-form", TWEETS[:2])
    a = Worker(service.url)
    task = a.task("by-form")
    form = re.search(r'<form class="gtrun-release" id="gtrun-release" method="post" action="([^"]+)">(.*?)</form>',
                     task["html"])
    assert form and form.group(1) == "/jobs/by-form/release" and ">Release task</button>" in form.group(2)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(2)))
    assert fields == {"token": task["token"], "object": "0"}
    html_accept = {"Accept": "text/html,application/xhtml+xml"}
    r = a.http.post(form.group(1), data=fields, headers=html_accept)
    assert r.status_code == 303 and r.headers["location"] == "/jobs/by-form/?released=0"
    following = a.http.get(r.headers["location"])
    assert '"objectId": "1"' in following.text and "this is the one you released" not in following.text
    nxt = a.task("by-form")
    a.answer("by-form", nxt, {"crowd-classifier": {"label": "Positive"}})
    last = a.task("by-form")  # nothing else is left: the released task comes back, said so
    assert last["objectId"] == "0" and last["token"] == task["token"]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', last["html"]))
    r = a.http.post("/jobs/by-form/release", data=fields, headers=html_accept, follow_redirects=True)
    assert "No other task is free for you now: this is the one you released." in r.text


def test_no_more_tasks_page_says_when_held_tasks_come_back(service):
    started(service, "held", TWEETS[:2])
    a, x, b = Worker(service.url), Worker(service.url), Worker(service.url)
    first = a.task("held")
    x.task("held")
    page = b.http.get("/jobs/held/").text
    back = datetime.datetime.fromtimestamp(math.ceil(first["expires"] / 60) * 60, datetime.timezone.utc)
    assert "No more tasks for you" in page
    assert (f"2 tasks are being worked on by other workers; the first comes back at {back:%H:%M} UTC "
            "(in 5 min) unless answered.") in page
    assert "If that was you in another browser, open this job there and choose Release task." in page
    release(a, first)
    b.answer("held", b.task("held"), {"crowd-classifier": {"label": "Positive"}})
    page = x.http.get("/jobs/held/").text  # X holds its own task: the page shows it, not the notice
    assert "gtrun-held" not in page and '"objectId": "1"' in page
    page = b.http.get("/jobs/held/").text
    assert "1 task is being worked on by another worker; it comes back at" in page


def test_the_no_more_tasks_page_looks_again_while_others_hold_tasks(service):
    """The page that names tasks other workers hold refreshes itself (and offers Check again): a
    task coming back is then shown; a page with nothing held, or of an ended job, stays put."""
    from runner.service import app

    started(service, "poll", TWEETS[:2])
    a, x, b = Worker(service.url), Worker(service.url), Worker(service.url)
    first = a.task("poll")
    x.task("poll")
    refresh = f'<meta http-equiv="refresh" content="{app.HELD_POLL_S}; url=/jobs/poll/">'
    page = b.http.get("/jobs/poll/").text
    assert "2 tasks are being worked on by other workers" in page
    assert refresh in page and page.index(refresh) < page.index("</head>")
    assert '<a class="crowd-btn" href="/jobs/poll/">Check again</a>' in page
    assert f"This page looks again every {app.HELD_POLL_S} s." in page
    assert b.task("poll") is None  # looking again takes nothing while nothing is free
    release(a, first)
    taken = b.task("poll")  # what the refresh loads once A's task is back: the task itself
    assert taken is not None and taken["objectId"] == "0" and "http-equiv" not in taken["html"]
    assert b.answer("poll", taken, {"crowd-classifier": {"label": "Positive"}}).status_code == 200
    page = b.http.get("/jobs/poll/").text  # X still holds object 1, which B could get: keep looking
    assert "1 task is being worked on by another worker" in page and refresh in page
    page = a.http.get("/jobs/poll/").text  # A, who released object 0, waits for X's too
    assert "1 task is being worked on by another worker" in page and refresh in page
    sm = sagemaker(service.url)
    sm.stop_labeling_job(LabelingJobName="poll")
    assert wait_status(sm, "poll", "Stopped") == "Stopped"
    page = b.http.get("/jobs/poll/").text  # the job ended: the refresh that loads this stops here
    assert "This job was stopped" in page and "http-equiv" not in page and "Check again" not in page

    started(service, "answered", TWEETS[:1], workers=2)
    w = Worker(service.url)
    w.answer("answered", w.task("answered"), {"crowd-classifier": {"label": "Positive"}})
    page = w.http.get("/jobs/answered/").text  # nothing held by others: nothing to look for
    assert "No more tasks for you" in page and "http-equiv" not in page and "Check again" not in page


def test_an_answer_to_a_task_that_is_no_longer_yours_says_where_to_go_next(service):
    """Refused because the task is not the worker's any more: `next` (and the bar's progress) so
    the page moves on; refused for the answer itself: no `next`, the page keeps it."""
    started(service, "stale", TWEETS[:3])
    a, b = Worker(service.url), Worker(service.url)
    label = {"crowd-classifier": {"label": "Positive"}}
    mine = a.task("stale")
    assert release(a, mine).json()["status"] == "released"  # in a second tab, say
    taken = b.task("stale")
    assert taken["objectId"] == mine["objectId"]
    assert b.answer("stale", taken, label).status_code == 200
    r = a.answer("stale", mine, label)  # the first tab submits
    assert r.status_code == 400
    assert r.json() == {"__type": "ValidationException",
                        "message": "this task was released and another worker has taken it",
                        "next": "/jobs/stale/",
                        "progress": {"labeled": 1, "total": 3, "mine": 0,
                                     "text": "1 of 3 labeled \u00b7 you answered 0"}}
    again = b.answer("stale", taken, label)  # answered already (another tab of B's, say)
    assert again.status_code == 400 and again.json()["next"] == "/jobs/stale/"
    assert again.json()["message"] == "this task was already submitted"
    assert again.json()["progress"]["mine"] == 1
    jobs = service.app.state.jobs
    lapsed = jobs.next_task("stale", "private.us-east-1.lapsed", now=time.time() - 301)  # 300 s limit
    r = a.answer("stale", {"submitUrl": mine["submitUrl"], "token": lapsed.token}, label)
    assert r.status_code == 400 and r.json()["next"] == "/jobs/stale/"
    assert r.json()["message"] == "the time limit for this task has passed; it went back to the queue"
    r = a.answer("stale", {**mine, "token": "0" * 32}, label)
    assert r.status_code == 400 and r.json()["__type"] == "ResourceNotFound" and r.json()["next"] == "/jobs/stale/"
    started(service, "other", TWEETS[:1])
    theirs = a.task("other")  # a token of another job, sent to this one: none of this job's
    r = a.answer("stale", {**mine, "token": theirs["token"]}, label)
    assert r.status_code == 400 and r.json()["__type"] == "ResourceNotFound"
    assert a.answer("other", theirs, label).status_code == 200  # still good at its own job
    bad = a.task("stale")
    r = a.http.post(bad["submitUrl"], json={"token": bad["token"], "answer": ["not", "an", "object"]})
    assert r.status_code == 400 and r.json()["__type"] == "ValidationException" and "next" not in r.json()
    r = a.http.post(bad["submitUrl"], json={"answer": {}})
    assert r.status_code == 400 and "next" not in r.json()
    sm = sagemaker(service.url)
    sm.stop_labeling_job(LabelingJobName="stale")
    r = a.answer("stale", bad, label)  # still A's, but the job ended
    assert r.status_code == 400 and r.json()["next"] == "/jobs/stale/"
    assert r.json()["message"].endswith("it takes no more answers")
