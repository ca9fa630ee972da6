"""ARNs of the AWS-owned Lambdas and worker UIs behind Ground Truth's built-in task types."""

from __future__ import annotations

from runner.errors import ConfigError
from runner.schema import TaskType

# Account that owns the PRE-*/ACS-* Lambdas in each region; the SageMaker service model lists
# built-in Lambdas in exactly these 12 regions (reference §2.1).
LAMBDA_ACCOUNTS: dict[str, str] = {
    "us-east-1": "432418664414",
    "us-east-2": "266458841044",
    "us-west-2": "081040173940",
    "ca-central-1": "918755190332",
    "eu-west-1": "568282634449",
    "eu-west-2": "487402164563",
    "eu-central-1": "203001061592",
    "ap-northeast-1": "477331159723",
    "ap-northeast-2": "845288260483",
    "ap-south-1": "565803892007",
    "ap-southeast-1": "377565633583",
    "ap-southeast-2": "454466003867",
}

# The `<Type>` in PRE-<Type> / ACS-<Type> (reference §2.2); custom tasks have none.
LAMBDA_TYPES: dict[TaskType, str | None] = {
    TaskType.text_classification: "TextMultiClass",
    TaskType.text_multilabel: "TextMultiClassMultiLabel",
    TaskType.bounding_box: "BoundingBox",
    TaskType.named_entity: "NamedEntityRecognition",
    TaskType.custom: None,
}

# Owner of the AWS-hosted worker UIs (HumanTaskUiArn), the same in every region (reference §2.2).
HUMAN_TASK_UI_ACCOUNT = "394669845002"


def _lambda_arn(prefix: str, task_type: TaskType, region: str) -> str | None:
    name = LAMBDA_TYPES[task_type]
    if name is None:
        return None
    return f"arn:aws:lambda:{region}:{lambda_account(region)}:function:{prefix}-{name}"


def lambda_account(region: str) -> str:
    """The account of the built-in Lambdas in `region`; a ConfigError on backend.region if it has none.

    >>> lambda_account("eu-west-1")
    '568282634449'
    """
    try:
        return LAMBDA_ACCOUNTS[region]
    except KeyError:
        raise ConfigError("backend.region",
                          f"{region!r} has no Ground Truth built-in task Lambdas",
                          "use one of " + ", ".join(LAMBDA_ACCOUNTS)) from None


def pre_annotation_arn(task_type: TaskType, region: str) -> str | None:
    """The built-in pre-annotation Lambda (PreHumanTaskLambdaArn), None for custom tasks.

    >>> pre_annotation_arn(TaskType.bounding_box, "us-east-1")
    'arn:aws:lambda:us-east-1:432418664414:function:PRE-BoundingBox'
    """
    return _lambda_arn("PRE", task_type, region)


def consolidation_arn(task_type: TaskType, region: str) -> str | None:
    """The built-in consolidation Lambda (AnnotationConsolidationLambdaArn), None for custom tasks."""
    return _lambda_arn("ACS", task_type, region)


def human_task_ui_arn(task_type: TaskType, region: str) -> str | None:
    """The AWS-hosted worker UI (HumanTaskUiArn) for NER; None for types that use a template."""
    if task_type != TaskType.named_entity:
        return None
    lambda_account(region)  # the UI is offered where the NER Lambdas are
    return (f"arn:aws:sagemaker:{region}:{HUMAN_TASK_UI_ACCOUNT}"
            ":human-task-ui/NamedEntityRecognition")
