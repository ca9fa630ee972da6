"""The labeling-job part of SageMaker's API, in SageMaker's wire protocol (JSON 1.1).

An unmodified boto3 `sagemaker` client with `endpoint_url` pointing here works: requests are
`POST /` with `X-Amz-Target: SageMaker.<Operation>`; errors are `{"__type": code, "message": …}`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from runner.check import operation_problems
from runner.service.jobs import LabelingJobs
from runner.service.store import ServiceError, ValidationError

PAGE_DEFAULT = 10
SUMMARY_KEYS = ("LabelingJobName", "LabelingJobArn", "CreationTime", "LastModifiedTime", "LabelingJobStatus",
                "LabelCounters", "FailureReason", "LabelingJobOutput", "InputConfig")


def wire(value: Any) -> Any:
    """Datetimes as epoch seconds, as SageMaker's JSON protocol sends timestamps."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value


def _validate(operation: str, params: Mapping[str, Any]) -> None:
    problems = operation_problems(operation, params)
    if problems:
        detail = "; ".join(f"{path.removeprefix('request.') or 'request'} {what}" for path, what in problems[:10])
        raise ValidationError(f"{len(problems)} validation error(s) detected: {detail}")


def create(jobs: LabelingJobs, params: dict[str, Any]) -> dict[str, Any]:
    return {"LabelingJobArn": jobs.create(params)}


def describe(jobs: LabelingJobs, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.describe(params["LabelingJobName"])


def stop(jobs: LabelingJobs, params: dict[str, Any]) -> dict[str, Any]:
    jobs.stop(params["LabelingJobName"])
    return {}


def _token(offset: int, params: Mapping[str, Any]) -> str:
    key = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "k": key}, sort_keys=True).encode()).decode()


def _offset(token: str | None, params: Mapping[str, Any]) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        key = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
        if data["k"] != json.loads(json.dumps(key, sort_keys=True)):
            raise ValueError
        return int(data["o"])
    except (ValueError, KeyError, TypeError):
        raise ValidationError("Invalid pagination token: it belongs to another query") from None


def list_jobs(jobs: LabelingJobs, params: dict[str, Any]) -> dict[str, Any]:
    """ListLabelingJobs: filters, sort, pagination."""
    summaries = []
    for d in jobs.describe_all():
        created, modified = d["CreationTime"].timestamp(), d["LastModifiedTime"].timestamp()
        if "CreationTimeAfter" in params and not created > float(params["CreationTimeAfter"]):
            continue
        if "CreationTimeBefore" in params and not created < float(params["CreationTimeBefore"]):
            continue
        if "LastModifiedTimeAfter" in params and not modified > float(params["LastModifiedTimeAfter"]):
            continue
        if "LastModifiedTimeBefore" in params and not modified < float(params["LastModifiedTimeBefore"]):
            continue
        if params.get("NameContains") and params["NameContains"].lower() not in d["LabelingJobName"].lower():
            continue
        if params.get("StatusEquals") and d["LabelingJobStatus"] != params["StatusEquals"]:
            continue
        summary = {k: d[k] for k in SUMMARY_KEYS if k in d}
        htc = d["HumanTaskConfig"]
        summary["WorkteamArn"] = htc["WorkteamArn"]
        if "PreHumanTaskLambdaArn" in htc:
            summary["PreHumanTaskLambdaArn"] = htc["PreHumanTaskLambdaArn"]
        if "AnnotationConsolidationConfig" in htc:
            summary["AnnotationConsolidationLambdaArn"] = \
                htc["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"]
        summaries.append(summary)
    sort_by = params.get("SortBy", "CreationTime")
    field = {"Name": "LabelingJobName", "CreationTime": "CreationTime", "Status": "LabelingJobStatus"}[sort_by]
    summaries.sort(key=lambda s: (s[field], s["LabelingJobName"]),
                   reverse=params.get("SortOrder", "Ascending") == "Descending")
    offset = _offset(params.get("NextToken"), params)
    size = int(params.get("MaxResults", PAGE_DEFAULT))
    page = summaries[offset:offset + size]
    out: dict[str, Any] = {"LabelingJobSummaryList": page}
    if offset + size < len(summaries):
        out["NextToken"] = _token(offset + size, params)
    return out


def render_ui_template(jobs: LabelingJobs, params: dict[str, Any]) -> dict[str, Any]:
    """RenderUiTemplate: the template rendered for one task input, with Ground Truth's Liquid."""
    return jobs.render_ui_template(params)


def list_workteams(jobs: LabelingJobs, params: dict[str, Any], region: str = "us-east-1") -> dict[str, Any]:
    """ListWorkteams: the local service's one team (anyone who opens a worker URL)."""
    return {"Workteams": local_workteams(region)}


def local_workteams(region: str) -> list[dict[str, Any]]:
    """The local service's workteams, the same for every storage folder (ListWorkteams' list)."""
    from runner.io.backends import LOCAL_ACCOUNT

    now = datetime.fromtimestamp(0).astimezone()
    return [{"WorkteamName": "gtrun-local", "MemberDefinitions": [],
             "WorkteamArn": f"arn:aws:sagemaker:{region}:{LOCAL_ACCOUNT}:workteam/private-crowd/gtrun-local",
             "Description": "gtrun's local labeling service: anyone who opens a worker URL",
             "SubDomain": "127.0.0.1", "CreateDate": now, "LastUpdatedDate": now}]


OPERATIONS: dict[str, Callable[[LabelingJobs, dict[str, Any]], dict[str, Any]]] = {
    "CreateLabelingJob": create,
    "DescribeLabelingJob": describe,
    "ListLabelingJobs": list_jobs,
    "StopLabelingJob": stop,
    "RenderUiTemplate": render_ui_template,
    "ListWorkteams": list_workteams,
}


def handle(jobs: LabelingJobs, target: str, body: bytes, region: str = "us-east-1") -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for one API call (`region`: from the request's signature scope)."""
    service, _, operation = target.partition(".")
    if service != "SageMaker" or operation not in OPERATIONS:
        return 400, {"__type": "UnknownOperationException",
                     "message": f"gtrun's labeling service does not implement {target or 'this call'}"}
    try:
        params = json.loads(body or b"{}")
        if not isinstance(params, dict):
            raise ValueError
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's reader goes
        return 400, {"__type": "SerializationException", "message": "the request body is not a JSON object"}
    try:
        _validate(operation, params)
        if operation == "ListWorkteams":
            return 200, wire(list_workteams(jobs, params, region))
        return 200, wire(OPERATIONS[operation](jobs, params))
    except ServiceError as exc:
        return exc.status, {"__type": exc.code, "message": str(exc)}
