"""Helpers for tests of the local labeling service: jobs put in storage, workers over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from runner.io.labeling import local_client
from runner.io.store import LocalStore

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TEAM = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/gtrun-local"
BUILTIN = {"text_classification": ("TextMultiClass", "text_classification.liquid"),
           "text_multilabel": ("TextMultiClassMultiLabel", "text_multilabel.liquid"),
           "bounding_box": ("BoundingBox", "bounding_box.liquid"),
           "named_entity": ("NamedEntityRecognition", "named_entity.liquid")}


def put_job(root: Path, name: str, lines: list[dict[str, Any]], *, task_type: str = "text_classification",
            labels: list[str] | None = None, workers: int = 1, time_limit: int = 300,
            availability: int | None = None, template: str | None = None) -> dict[str, Any]:
    """Write a job's inputs to storage; return its CreateLabelingJob request."""
    store = LocalStore(root)
    base = f"s3://b/jobs/{name}"
    store.put_bytes(f"{base}/manifest.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    lambda_type, file = BUILTIN.get(task_type, (None, "custom.liquid"))
    store.put_bytes(f"{base}/template.liquid", (template or (TEMPLATES / file).read_text()).encode())
    htc: dict[str, Any] = {
        "WorkteamArn": TEAM, "UiConfig": {"UiTemplateS3Uri": f"{base}/template.liquid"},
        "TaskTitle": "Label it", "TaskDescription": "Label the object", "TaskKeywords": ["test"],
        "NumberOfHumanWorkersPerDataObject": workers, "TaskTimeLimitInSeconds": time_limit}
    if availability:
        htc["TaskAvailabilityLifetimeInSeconds"] = availability
    if lambda_type:
        htc["PreHumanTaskLambdaArn"] = f"arn:aws:lambda:us-east-1:432418664414:function:PRE-{lambda_type}"
        htc["AnnotationConsolidationConfig"] = {
            "AnnotationConsolidationLambdaArn": f"arn:aws:lambda:us-east-1:432418664414:function:ACS-{lambda_type}"}
    request = {"LabelingJobName": name, "LabelAttributeName": "label",
               "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": f"{base}/manifest.jsonl"}}},
               "OutputConfig": {"S3OutputPath": f"{base}/output"},
               "RoleArn": "arn:aws:iam::123456789012:role/gtrun-local", "HumanTaskConfig": htc}
    if labels:
        config = {"document-version": "2018-11-28", "labels": [{"label": x} for x in labels]}
        store.put_bytes(f"{base}/labels.json", json.dumps(config).encode())
        request["LabelCategoryConfigS3Uri"] = f"{base}/labels.json"
    return request


NER_UI = "arn:aws:sagemaker:us-east-1:394669845002:human-task-ui/NamedEntityRecognition"


def on_hosted_ui(root: Path, request: dict[str, Any], instructions: dict[str, str] | None) -> dict[str, Any]:
    """A NER job's request (put_job's) as gtrun builds it: AWS's hosted worker UI (HumanTaskUiArn),
    no template, and the worker instructions in the label category configuration."""
    request["HumanTaskConfig"]["UiConfig"] = {"HumanTaskUiArn": NER_UI}
    store = LocalStore(root)
    config = json.loads(store.get_bytes(request["LabelCategoryConfigS3Uri"]))
    config["labels"] = [{"label": x["label"], "shortDisplayName": x["label"][:3]} for x in config["labels"]]
    if instructions is not None:
        config["instructions"] = instructions
    store.put_bytes(request["LabelCategoryConfigS3Uri"], json.dumps(config).encode())
    return request


def sagemaker(url: str) -> Any:
    return local_client(url, "us-east-1")


class Worker:
    """A worker's browser session without a browser: cookies, the task page, the answer POST."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)

    def task(self, job: str) -> dict[str, Any] | None:
        page = self.http.get(f"/jobs/{job}/")
        page.raise_for_status()
        found = re.search(r"window\.gtrunTask = (\{.*?\});</script>", page.text)
        return {**json.loads(found.group(1)), "html": page.text} if found else None

    def answer(self, job: str, task: dict[str, Any], answer: dict[str, Any]) -> httpx.Response:
        return self.http.post(task["submitUrl"], json={"token": task["token"], "answer": answer})
