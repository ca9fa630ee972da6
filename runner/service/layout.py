"""Ground Truth's output layout under `<S3OutputPath>/<job name>/`: keys, file records, lines.

Pure string and dict builders (reference §4.1, §4.4, §6.2): no I/O, no clock. `prefix` is the job's
output path, an `s3://bucket/path` URI or a bare key prefix; a trailing "/" is ignored. Times are
UTC (naive datetimes are taken as UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from runner.service.consolidate import Answer, annotation_content

KEY_TIME = "%Y-%m-%d_%H:%M:%S"  # file names under annotations/ (reference §4.1)


def job_key(prefix: str, job: str, *parts: str) -> str:
    """`<prefix>/<job>/<parts...>`.

    >>> job_key("s3://b/out/", "tweets-1", "manifests", "output", "output.manifest")
    's3://b/out/tweets-1/manifests/output/output.manifest'
    """
    head = prefix.rstrip("/")
    return "/".join(([head] if head else []) + [job, *parts])


def output_manifest_key(prefix: str, job: str) -> str:
    """The final output manifest (`LabelingJobOutput.OutputDatasetS3Uri`).

    >>> output_manifest_key("s3://b/out", "tweets-1")
    's3://b/out/tweets-1/manifests/output/output.manifest'
    """
    return job_key(prefix, job, "manifests", "output", "output.manifest")


def worker_response_key(prefix: str, job: str, iteration: int, object_id: str | int,
                        when: datetime) -> str:
    """The worker-response file of one data object (reference §4.4).

    >>> worker_response_key("s3://b/out", "tweets-1", 1, "153", datetime(2019, 4, 18, 16, 12, 29))
    's3://b/out/tweets-1/annotations/worker-response/iteration-1/153/2019-04-18_16:12:29.json'
    """
    return job_key(prefix, job, "annotations", "worker-response", f"iteration-{iteration}",
                   str(object_id), f"{_utc(when).strftime(KEY_TIME)}.json")


def consolidation_request_key(prefix: str, job: str, iteration: int, when: datetime,
                              seq: int = 0) -> str:
    """The payload file handed to consolidation for one batch (reference §6.2).

    GT names it by the second only. Two batches of one job can close within the same second, so
    `seq` > 0 appends `-<seq>` before `.json` (gtrun's disambiguator; GT's is unknown); seq 0, the
    usual case, gives GT's exact name.

    >>> consolidation_request_key("s3://b/out", "j", 1, datetime(2020, 1, 2, 3, 4, 5))
    's3://b/out/j/annotations/consolidated-annotation/consolidation-request/iteration-1/2020-01-02_03:04:05.json'
    >>> consolidation_request_key("s3://b/out", "j", 1, datetime(2020, 1, 2, 3, 4, 5), seq=2)[-26:]
    '2020-01-02_03:04:05-2.json'
    """
    return _consolidation_key("consolidation-request", prefix, job, iteration, when, seq)


def consolidation_response_key(prefix: str, job: str, iteration: int, when: datetime,
                               seq: int = 0) -> str:
    """What consolidation returned for one batch (reference §4.1); `seq` as for the request.

    >>> consolidation_response_key("out", "j", 1, datetime(2020, 1, 2, 3, 4, 5))
    'out/j/annotations/consolidated-annotation/consolidation-response/iteration-1/2020-01-02_03:04:05.json'
    """
    return _consolidation_key("consolidation-response", prefix, job, iteration, when, seq)


def _consolidation_key(kind: str, prefix: str, job: str, iteration: int, when: datetime,
                       seq: int) -> str:
    if seq < 0:
        raise ValueError(f"seq must be 0 or more, not {seq}")
    name = _utc(when).strftime(KEY_TIME) + (f"-{seq}" if seq else "")
    return job_key(prefix, job, "annotations", "consolidated-annotation", kind,
                   f"iteration-{iteration}", f"{name}.json")


def answer_time(when: datetime) -> str:
    """`submissionTime` / `acceptanceTime`: UTC to the millisecond, with a Z (reference §4.4).

    >>> answer_time(datetime(2019, 4, 18, 16, 10, 44, 123999))
    '2019-04-18T16:10:44.123Z'
    """
    when = _utc(when)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{when.microsecond // 1000:03d}Z"


def worker_response_record(answers: Sequence[Answer]) -> dict[str, Any]:
    """The worker-response file's object: `{"answers": [...]}`, one entry per answer.

    Fields an Answer lacks are left out: `acceptanceTime` and `timeSpentInSeconds` without times
    (as in 2019 files), `workerMetadata` without a `sub` (public workers). With a `sub` the
    identity is a Cognito one (gtrun's private workforce).

    >>> duck = {"crowd-classifier": {"label": "Duck"}}
    >>> worker_response_record([Answer("public.us-east-1.W1", duck,
    ...                                submission_time=datetime(2019, 4, 18, 16, 10, 44))])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'answers': [{'workerId': 'public.us-east-1.W1',
                  'answerContent': {'crowd-classifier': {'label': 'Duck'}},
                  'submissionTime': '2019-04-18T16:10:44.000Z'}]}
    """
    out = []
    for a in answers:
        entry: dict[str, Any] = {"workerId": a.worker_id, "answerContent": dict(a.content)}
        if a.submission_time is not None:
            entry["submissionTime"] = answer_time(a.submission_time)
        if a.acceptance_time is not None:
            entry["acceptanceTime"] = answer_time(a.acceptance_time)
        if a.time_spent_s is not None:
            entry["timeSpentInSeconds"] = float(a.time_spent_s)
        if a.sub is not None:
            entry["workerMetadata"] = {"identityData": {
                "identityProviderType": "Cognito", "issuer": a.issuer or "", "sub": a.sub}}
        out.append(entry)
    return {"answers": out}


def data_object(line: Mapping[str, Any]) -> dict[str, Any]:
    """`dataObject` of a consolidation request: `s3Uri` for a `source-ref` line, else `content`.

    >>> data_object({"source": "great", "id": 1})
    {'content': 'great'}
    """
    if "source-ref" in line:
        return {"s3Uri": line["source-ref"]}
    if "source" in line:
        return {"content": line["source"]}
    raise ValueError(f"manifest line has neither source nor source-ref: {dict(line)!r}")


def consolidation_request(items: Iterable[tuple[str, Mapping[str, Any], Sequence[Answer]]],
                          ) -> list[dict[str, Any]]:
    """The consolidation-request payload: per (object id, input line, answers), every answer as a
    JSON string in `annotationData.content` (reference §6.2, ssie_consolidation_request.json).

    >>> consolidation_request([("0", {"source": "meh"}, [Answer("w1", {"answer": "ok"})])])
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'datasetObjectId': '0', 'dataObject': {'content': 'meh'},
      'annotations': [{'workerId': 'w1', 'annotationData': {'content': '{"answer":"ok"}'}}]}]
    """
    return [{"datasetObjectId": str(object_id), "dataObject": data_object(line),
             "annotations": [{"workerId": a.worker_id,
                              "annotationData": {"content": annotation_content(a)}}
                             for a in answers]}
            for object_id, line, answers in items]


def consolidation_response(items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The consolidation-response file: per (object id, consolidated content) (reference §4.3).

    >>> consolidation_response([("5", {"a": 1, "a-metadata": {}})])
    [{'datasetObjectId': '5', 'consolidatedAnnotation': {'content': {'a': 1, 'a-metadata': {}}}}]
    """
    return [{"datasetObjectId": str(object_id),
             "consolidatedAnnotation": {"content": dict(content)}}
            for object_id, content in items]


def output_line(input_line: Mapping[str, Any], consolidated: Mapping[str, Any]) -> str:
    """One output-manifest line, without the newline: the input line plus the consolidated keys.

    Input keys keep their order and values; the consolidated keys (`<attr>`, `<attr>-metadata`)
    come last, replacing any same-named input key (a rerun with the same attribute). Other label
    attributes (chained jobs) are untouched. Compact JSON, UTF-8 kept; json.dumps escapes "\\n",
    so one object is always one line.

    >>> output_line({"source": "great", "old": 1, "old-metadata": {}},
    ...             {"s": 0, "s-metadata": {"class-name": "Positive"}})
    '{"source":"great","old":1,"old-metadata":{},"s":0,"s-metadata":{"class-name":"Positive"}}'
    """
    line = {k: v for k, v in input_line.items() if k not in consolidated}
    line.update(consolidated)
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _utc(when: datetime) -> datetime:
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when
