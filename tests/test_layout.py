"""Ground Truth's output layout: keys, worker-response and consolidation files, output lines."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from runner.schema import TaskType
from runner.service.consolidate import Answer, consolidate, failed_metadata
from runner.service.layout import (
    answer_time,
    consolidation_request,
    consolidation_request_key,
    consolidation_response,
    consolidation_response_key,
    output_line,
    output_manifest_key,
    worker_response_key,
    worker_response_record,
)
from tests.conftest import real_file, shape

ROOT = Path(__file__).resolve().parent.parent
WHEN = datetime(2019, 4, 18, 16, 10, 44, 217995)
ANSWER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["s3://b/out", "s3://b/out/"])
def test_keys_follow_ground_truths_layout(prefix):
    base = "s3://b/out/job-1"
    assert output_manifest_key(prefix, "job-1") == f"{base}/manifests/output/output.manifest"
    assert worker_response_key(prefix, "job-1", 1, "153", WHEN) == \
        f"{base}/annotations/worker-response/iteration-1/153/2019-04-18_16:10:44.json"
    assert consolidation_request_key(prefix, "job-1", 1, WHEN) == (
        f"{base}/annotations/consolidated-annotation/consolidation-request/iteration-1/"
        "2019-04-18_16:10:44.json")
    assert consolidation_response_key(prefix, "job-1", 2, WHEN) == (
        f"{base}/annotations/consolidated-annotation/consolidation-response/iteration-2/"
        "2019-04-18_16:10:44.json")


def test_batches_in_the_same_second_get_a_sequence_suffix_only_when_needed():
    keys = [consolidation_response_key("p", "j", 1, WHEN, seq=n) for n in range(3)]
    assert [k.rsplit("/", 1)[1] for k in keys] == [
        "2019-04-18_16:10:44.json", "2019-04-18_16:10:44-1.json", "2019-04-18_16:10:44-2.json"]
    with pytest.raises(ValueError):
        consolidation_request_key("p", "j", 1, WHEN, seq=-1)


def test_key_times_are_utc_and_a_bare_prefix_works():
    aware = datetime(2019, 4, 18, 18, 10, 44, tzinfo=timezone(timedelta(hours=2)))
    assert worker_response_key("", "j", 1, 0, aware) == \
        "j/annotations/worker-response/iteration-1/0/2019-04-18_16:10:44.json"


# --- worker-response file ----------------------------------------------------------------------


def test_worker_response_record_has_the_real_files_shape():
    real = json.loads(real_file("ic_worker_response_153.json").read_text())
    answers = [Answer(a["workerId"], a["answerContent"],
                      submission_time=datetime.strptime(a["submissionTime"], "%Y-%m-%dT%H:%M:%SZ"))
               for a in real["answers"]]
    ours = worker_response_record(answers)
    assert shape(ours) == shape(real)
    assert [a["answerContent"] for a in ours["answers"]] == \
        [a["answerContent"] for a in real["answers"]]
    assert [a["workerId"] for a in ours["answers"]] == [a["workerId"] for a in real["answers"]]
    assert all(ANSWER_TIME.match(a["submissionTime"]) for a in real["answers"] + ours["answers"])
    assert ours["answers"][0]["submissionTime"] == "2019-04-18T16:10:44.000Z"
    assert json.loads(json.dumps(ours)) == ours


def test_worker_response_record_carries_newer_fields_for_private_workers():
    answer = Answer("private.us-east-1.abc", {"crowd-classifier": {"label": "Positive"}},
                    submission_time=WHEN, acceptance_time=WHEN - timedelta(seconds=30),
                    time_spent_s=12, sub="3f1c-user", issuer="https://cognito-idp.example/pool")
    (entry,) = worker_response_record([answer])["answers"]
    assert entry == {
        "workerId": "private.us-east-1.abc",
        "answerContent": {"crowd-classifier": {"label": "Positive"}},
        "submissionTime": "2019-04-18T16:10:44.217Z",
        "acceptanceTime": "2019-04-18T16:10:14.217Z",
        "timeSpentInSeconds": 12.0,
        "workerMetadata": {"identityData": {"identityProviderType": "Cognito",
                                            "issuer": "https://cognito-idp.example/pool",
                                            "sub": "3f1c-user"}}}


def test_answer_times_are_utc_milliseconds():
    aware = datetime(2019, 4, 18, 11, 10, 44, 999999, tzinfo=timezone(timedelta(hours=-5)))
    assert answer_time(aware) == "2019-04-18T16:10:44.999Z"


# --- consolidation request and response ---------------------------------------------------------


def test_consolidation_request_has_the_real_payload_shape():
    real = json.loads(real_file("ssie_consolidation_request.json").read_text())
    content = json.loads(real[0]["annotations"][0]["annotationData"]["content"])
    ours = consolidation_request([
        ("0", {"source-ref": real[0]["dataObject"]["s3Uri"], "page": "1"},
         [Answer(real[0]["annotations"][0]["workerId"], content)])])
    assert shape(ours) == shape(real)
    assert ours[0]["dataObject"] == real[0]["dataObject"]
    assert json.loads(ours[0]["annotations"][0]["annotationData"]["content"]) == content
    # GT's string is compact and keeps non-ASCII characters as they are.
    assert ours[0]["annotations"][0]["annotationData"]["content"] == \
        real[0]["annotations"][0]["annotationData"]["content"]


def test_consolidation_request_sends_text_as_content():
    (item,) = consolidation_request([(7, {"source": "great"}, [])])
    assert item == {"datasetObjectId": "7", "dataObject": {"content": "great"}, "annotations": []}
    with pytest.raises(ValueError, match="neither source nor source-ref"):
        consolidation_request([("0", {"id": 1}, [])])


def test_consolidation_response_wraps_each_objects_content():
    content = consolidate(TaskType.text_classification, label_attribute="s", labels=["a", "b"],
                          job_name="j", answers=[Answer("w", {"crowd-classifier": {"label": "b"}})],
                          now=WHEN)
    out = consolidation_response([("5", content)])
    assert out == [{"datasetObjectId": "5", "consolidatedAnnotation": {"content": content}}]
    assert json.loads(json.dumps(out)) == out


# --- output lines ------------------------------------------------------------------------------


def test_output_line_keeps_the_input_fields_their_order_and_types():
    line = {"source": "Zürich\nline two", "id": 7, "score": 0.25, "flag": False, "none": None,
            "tokens": [{"text": "TOTAL", "box": [1, 2, 3, 4]}]}
    consolidated = {"s": 1, "s-metadata": {"class-name": "b", "confidence": 0.5}}
    text = output_line(line, consolidated)
    assert "\n" not in text and "Zürich" in text
    parsed = json.loads(text)
    assert list(parsed) == [*line, "s", "s-metadata"]
    assert parsed == {**line, **consolidated}
    assert ", " not in text.replace("Zürich\\nline two", "")  # compact separators


def test_output_line_overwrites_its_own_attribute_and_leaves_chained_ones_alone():
    earlier = {"source-ref": "s3://b/i.png", "animal": 0, "animal-metadata": {"class-name": "cat"},
               "s": 9, "s-metadata": {"class-name": "old"}, "id": 1}
    parsed = json.loads(output_line(earlier, {"s": 1, "s-metadata": {"class-name": "new"}}))
    assert list(parsed) == ["source-ref", "animal", "animal-metadata", "id", "s", "s-metadata"]
    assert parsed["animal"] == 0 and parsed["animal-metadata"] == {"class-name": "cat"}
    assert parsed["s"] == 1 and parsed["s-metadata"] == {"class-name": "new"}


def test_output_line_for_a_failed_object_adds_only_metadata():
    parsed = json.loads(output_line({"source": "x"}, failed_metadata("s", "ClientError: expired")))
    assert parsed == {"source": "x", "s-metadata": {"retry-count": 0,
                                                   "failure-reason": "ClientError: expired",
                                                   "human-annotated": "true"}}
