"""The CreateLabelingJob request, its job name and label category file, and the Ground Truth rules
a config can break (checked before anything is uploaded or paid for)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from runner.build.lambdas import (
    LAMBDA_TYPES,
    consolidation_arn,
    human_task_ui_arn,
    lambda_account,
    pre_annotation_arn,
)
from runner.build.price import ALLOWED_PRICES, check_price, parse_usd, task_price
from runner.errors import ConfigError
from runner.schema import GtrunConfig, TaskType, WorkforceKind

# Patterns and limits from the SageMaker service model (botocore sagemaker/2017-07-24, shapes named in
# the comments); re.ASCII because Java's \d means [0-9].
_JOB_NAME_MAX = 63  # LabelingJobName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
_LABEL_ATTRIBUTE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}", re.ASCII)  # LabelAttributeName
_LABEL_ATTRIBUTE_MAX = 127
_KEYWORD = re.compile(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*", re.ASCII)  # TaskKeyword
_KEYWORD_MAX = 30
_KEYWORDS_MAX = 5  # TaskKeywords
_TITLE = re.compile("[\t\n\r -\ud7ff\ue000-\ufffd]*")  # TaskTitle: no control or astral characters
_TITLE_MAX = 128
_DESCRIPTION_MAX = 255  # TaskDescription: ".+", and Java's "." matches no line terminator
_LINE_TERMINATORS = "\n\r\u0085\u2028\u2029"
_WORKTEAM_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:workteam/.*", re.ASCII)
_WORKTEAM_ARN_MAX = 256
_ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+", re.ASCII)
_ROLE_ARN_MAX = 2048
# S3's rule for a bucket name (general purpose buckets): 3-63 lowercase letters, digits, dots and
# hyphens, starting and ending with a letter or digit
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_TAG_VALUE_MAX = 256  # TagValue: ([\p{L}\p{Z}\p{N}_.:/=+\-@]*); isalnum() is \p{L} and \p{N}
_TAG_VALUE_PUNCTUATION = " _.:/=+-@"
_PUBLIC_CROWD = ":394669845002:workteam/public-crowd/default"  # reference §2.3, every region

# HumanTaskConfig limits: NumberOfHumanWorkersPerDataObject 1-9 (SM); TaskTimeLimitInSeconds >= 30
# (SM), at most 8 h for text, image and custom tasks (DG); TaskAvailabilityLifetimeInSeconds >= 60
# (SM), at most 12 h on Mechanical Turk and 30 days otherwise (DG); MaxConcurrentTaskCount 1-5000.
_WORKERS = (1, 9)
_TIME_LIMIT = (30, 28_800)
_AVAILABILITY_MIN = 60
_AVAILABILITY_MAX = {WorkforceKind.public: 43_200}
_AVAILABILITY_MAX_DEFAULT = 2_592_000
_CONCURRENT = (1, 5_000)

# Label category rules (DG sms-label-cat-config-attributes, reference §3.2).
_LABEL_MAX = 256
_LABELS_MIN = {TaskType.text_classification: 2, TaskType.text_multilabel: 2,
               TaskType.bounding_box: 1, TaskType.named_entity: 1, TaskType.custom: 0}
_LABELS_MAX = {TaskType.text_multilabel: 50, TaskType.bounding_box: 50}
_LABEL_CONFIG_VERSION = "2018-11-28"

# InputConfig.DataAttributes for Mechanical Turk: jobs fail without the PII flag (DG
# sms-workforce-management-public); the adult-content flag widens the worker pool.
_PUBLIC_CONTENT_CLASSIFIERS = ["FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"]


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def job_name(dataset: str, run_time: datetime, suffix: str) -> str:
    """A LabelingJobName `<dataset>-<YYYYMMDD>-<HHMMSS>-<suffix>`, lower-case and at most 63 chars.

    Job names are unique per account and region (case-insensitively), so the suffix (the run id)
    is kept whole and the dataset part is shortened to make room.

    >>> job_name("Tweets_NBA2K", datetime(2024, 5, 17, 9, 3, 7), "a1b2")
    'tweets-nba2k-20240517-090307-a1b2'
    >>> job_name("Café reviews " * 9, datetime(2024, 5, 17, 9, 3, 7), "a1b2")
    'cafe-reviews-cafe-reviews-cafe-reviews-caf-20240517-090307-a1b2'
    """
    tail = "-".join(p for p in (run_time.strftime("%Y%m%d-%H%M%S"), _slug(suffix)) if p)
    tail = tail[:_JOB_NAME_MAX].rstrip("-")  # only a suffix of 47+ chars is cut
    room = _JOB_NAME_MAX - len(tail) - 1
    head = _slug(dataset)[:max(room, 0)].rstrip("-")
    return f"{head}-{tail}" if head else tail


def _short_display_names(labels: Sequence[str]) -> list[str]:
    """A distinct short name per label: its shortest unused prefix of 3+ chars, else prefix + n."""
    names: list[str] = []
    for label in labels:
        stem = label.strip() or label
        name = next((stem[:n] for n in range(3, len(stem) + 1) if stem[:n] not in names), None)
        counter = 2
        while name is None or name in names:
            name, counter = f"{stem[:3]}{counter}", counter + 1
        names.append(name)
    return names


def label_category_config(labels: Sequence[str], task_type: TaskType,
                          instructions: str | None) -> dict[str, Any] | None:
    """The label category configuration file (LabelCategoryConfigS3Uri), None without labels.

    >>> label_category_config(["cat", "dog"], TaskType.bounding_box, None)
    {'document-version': '2018-11-28', 'labels': [{'label': 'cat'}, {'label': 'dog'}]}
    >>> ner = label_category_config(["person", "personal", "org"], TaskType.named_entity, "<p>Hi</p>")
    >>> [x["shortDisplayName"] for x in ner["labels"]], ner["instructions"]["shortInstruction"]
    (['per', 'pers', 'org'], '<p>Hi</p>')
    """
    if not labels:
        return None
    if task_type != TaskType.named_entity:
        return {"document-version": _LABEL_CONFIG_VERSION,
                "labels": [{"label": label} for label in labels]}
    if not instructions:
        raise ConfigError("template.instructions", "is required for named_entity tasks",
                          "Ground Truth's NER label config must carry worker instructions (HTML)")
    # The NER worker UI shows shortDisplayName on each highlighted span.
    short = _short_display_names(labels)
    return {"document-version": _LABEL_CONFIG_VERSION,
            "labels": [{"label": label, "shortDisplayName": s} for label, s in zip(labels, short, strict=False)],
            "instructions": {"shortInstruction": instructions, "fullInstruction": instructions}}


def _task_price(settings: GtrunConfig) -> dict[str, Any] | None:
    price = parse_usd(settings.pricing.usd_per_task, "pricing.usd_per_task")
    if price is None:
        return None
    try:
        return task_price(price)
    except ValueError as exc:
        raise ConfigError("pricing.usd_per_task", str(exc),
                          "use a Ground Truth price such as 0.036") from None


def labeling_job_request(settings: GtrunConfig, *, job_name: str, manifest_uri: str,
                         template_uri: str | None, label_config_uri: str | None,
                         output_uri: str, role_arn: str, workteam_arn: str,
                         tags: dict[str, str]) -> dict[str, Any]:
    """The CreateLabelingJob request for `settings`, with the given names and S3 URIs."""
    template, workteam, region = settings.template, settings.workteam, settings.backend.region
    task_type = template.task_type

    input_config: dict[str, Any] = {"DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}}}
    if workteam.kind == WorkforceKind.public:
        input_config["DataAttributes"] = {"ContentClassifiers": list(_PUBLIC_CONTENT_CLASSIFIERS)}

    # UiConfig takes exactly one of the two; NER uses the AWS-hosted UI (reference §1.1).
    ui_arn = human_task_ui_arn(task_type, region)
    if ui_arn is None and template_uri is None:
        raise ValueError(f"template_uri is required for {task_type.value} tasks")
    ui_config = {"HumanTaskUiArn": ui_arn} if ui_arn else {"UiTemplateS3Uri": template_uri}

    human: dict[str, Any] = {"WorkteamArn": workteam_arn, "UiConfig": ui_config}
    # Custom tasks get no Lambdas: Ground Truth then passes the manifest line as task.input and
    # keeps every worker's answer (DG "Creating a custom worker task template").
    pre_arn = pre_annotation_arn(task_type, region)
    if pre_arn is not None:
        human["PreHumanTaskLambdaArn"] = pre_arn
    if template.keywords:
        human["TaskKeywords"] = list(template.keywords)
    human["TaskTitle"] = template.title
    human["TaskDescription"] = template.description
    human["NumberOfHumanWorkersPerDataObject"] = workteam.workers_per_object
    human["TaskTimeLimitInSeconds"] = workteam.task_time_limit_s
    human["TaskAvailabilityLifetimeInSeconds"] = workteam.task_availability_s
    if workteam.max_concurrent_tasks is not None:
        human["MaxConcurrentTaskCount"] = workteam.max_concurrent_tasks
    acs_arn = consolidation_arn(task_type, region)
    if acs_arn is not None:
        human["AnnotationConsolidationConfig"] = {"AnnotationConsolidationLambdaArn": acs_arn}
    price = _task_price(settings)
    if price is not None:
        human["PublicWorkforceTaskPrice"] = price

    request: dict[str, Any] = {
        "LabelingJobName": job_name,
        "LabelAttributeName": template.label_attribute_name,
        "InputConfig": input_config,
        "OutputConfig": {"S3OutputPath": output_uri},
        "RoleArn": role_arn,
    }
    if label_config_uri is not None:
        request["LabelCategoryConfigS3Uri"] = label_config_uri
    request["HumanTaskConfig"] = human
    if tags:
        request["Tags"] = [{"Key": key, "Value": tags[key]} for key in sorted(tags)]
    return request


def _range_problem(value: int, low: int, high: int | None) -> str | None:
    if value < low:
        return f"{value!r} is below the minimum {low}"
    if high is not None and value > high:
        return f"{value!r} is above the maximum {high}"
    return None


def check_settings(settings: GtrunConfig) -> list[ConfigError]:
    """Every Ground Truth rule the config breaks, one ConfigError per problem, in config order."""
    errors: list[ConfigError] = []

    def bad(key: str, problem: str, hint: str = "") -> None:
        errors.append(ConfigError(key, problem, hint))

    def usd(key: str, text: str | None) -> Any:
        try:
            return parse_usd(text, key)
        except ConfigError as exc:
            errors.append(exc)
            return None

    template, workteam, pricing, backend = (settings.template, settings.workteam,
                                            settings.pricing, settings.backend)
    task_type = template.task_type

    # template
    name = template.label_attribute_name
    if len(name) > _LABEL_ATTRIBUTE_MAX or not _LABEL_ATTRIBUTE.fullmatch(name):
        bad("template.label_attribute_name", f"{name!r} is not a valid LabelAttributeName",
            "1-127 letters, digits and hyphens, starting and ending with a letter or digit")
    elif name.lower().endswith("-metadata"):
        bad("template.label_attribute_name", f"{name!r} ends in '-metadata'",
            "Ground Truth writes '<name>-metadata' next to the label; pick another name")
    elif name.lower().endswith("-ref"):
        bad("template.label_attribute_name", f"{name!r} ends in '-ref'",
            f"only segmentation, video and point-cloud labels end in '-ref', not {task_type.value}")

    hint = f"{_KEYWORDS_MAX} at most, each of letters and digits separated by single spaces"
    if not 1 <= len(template.keywords) <= _KEYWORDS_MAX:
        bad("template.keywords", f"has {len(template.keywords)} keywords, not 1 to {_KEYWORDS_MAX}",
            hint)
    for i, keyword in enumerate(template.keywords):
        if not isinstance(keyword, str) or not _KEYWORD.fullmatch(keyword):
            bad(f"template.keywords[{i}]", f"{keyword!r} is not a valid TaskKeyword", hint)
        elif len(keyword) > _KEYWORD_MAX:
            bad(f"template.keywords[{i}]", f"{keyword!r} is longer than {_KEYWORD_MAX} characters")

    if not 1 <= len(template.title) <= _TITLE_MAX:
        bad("template.title", f"is {len(template.title)} characters long, not 1 to {_TITLE_MAX}")
    elif not _TITLE.fullmatch(template.title):
        bad("template.title", f"{template.title!r} has characters a TaskTitle may not contain",
            "no control characters other than tab and line breaks, no emoji or other non-BMP text")
    if not 1 <= len(template.description) <= _DESCRIPTION_MAX:
        bad("template.description",
            f"is {len(template.description)} characters long, not 1 to {_DESCRIPTION_MAX}")
    elif any(c in _LINE_TERMINATORS for c in template.description):
        bad("template.description", "has a line break; a TaskDescription is one line",
            "in YAML, fold it with '>-' instead of '|'")

    labels = template.labels
    duplicates = sorted(label for label, n in Counter(labels).items() if n > 1)
    if duplicates:
        bad("template.labels", f"lists {', '.join(map(repr, duplicates))} more than once")
    for i, label in enumerate(labels):
        if not 1 <= len(label) <= _LABEL_MAX:
            bad(f"template.labels[{i}]", f"is {len(label)} characters long, not 1 to {_LABEL_MAX}")
    low, high = _LABELS_MIN[task_type], _LABELS_MAX.get(task_type)
    if len(labels) < low:
        bad("template.labels", f"has {len(labels)} labels; {task_type.value} needs at least {low}")
    elif high is not None and len(labels) > high:
        bad("template.labels", f"has {len(labels)} labels; {task_type.value} takes at most {high}")
    if task_type == TaskType.named_entity and not template.instructions:
        bad("template.instructions", "is required for named_entity tasks",
            "Ground Truth's NER label config must carry worker instructions (HTML)")

    # workteam
    public = workteam.kind == WorkforceKind.public
    problem = _range_problem(workteam.workers_per_object, *_WORKERS)
    if problem:
        bad("workteam.workers_per_object", problem)
    problem = _range_problem(workteam.task_time_limit_s, *_TIME_LIMIT)
    if problem:
        bad("workteam.task_time_limit_s", problem, "seconds; 8 hours at most for these task types")
    most = _AVAILABILITY_MAX.get(workteam.kind, _AVAILABILITY_MAX_DEFAULT)
    problem = _range_problem(workteam.task_availability_s, _AVAILABILITY_MIN, most)
    if problem:
        bad("workteam.task_availability_s", problem,
            f"seconds; at most {most} for a {workteam.kind.value} workforce")
    if workteam.max_concurrent_tasks is not None:
        problem = _range_problem(workteam.max_concurrent_tasks, *_CONCURRENT)
        if problem:
            bad("workteam.max_concurrent_tasks", problem)
    arn = workteam.arn
    if arn is not None:
        if len(arn) > _WORKTEAM_ARN_MAX or not _WORKTEAM_ARN.fullmatch(arn):
            bad("workteam.arn", f"{arn!r} is not a workteam ARN",
                "arn:aws:sagemaker:<region>:<account>:workteam/private-crowd/<team>")
        elif arn.split(":")[3] != backend.region:
            bad("workteam.arn", f"{arn!r} is in {arn.split(':')[3]!r}, not {backend.region!r}",
                "the workteam must be in the job's region (backend.region)")
        elif public != arn.endswith(_PUBLIC_CROWD):
            bad("workteam.arn",
                f"{arn!r} {'is not' if public else 'is'} the Mechanical Turk workteam "
                f"but workteam.kind is {workteam.kind.value}",
                f"arn:aws:sagemaker:<region>{_PUBLIC_CROWD} is workteam.kind=public")

    # pricing
    price = usd("pricing.usd_per_task", pricing.usd_per_task)
    if public and pricing.usd_per_task is None:
        bad("pricing.usd_per_task", "is required for workteam.kind=public",
            "use one of " + ", ".join(str(p) for p in ALLOWED_PRICES[task_type]))
    elif not public and pricing.usd_per_task is not None:  # paid in the workforce's own way, not per task
        bad("pricing.usd_per_task", f"is for Mechanical Turk (workteam.kind=public), not a {workteam.kind.value} "
            "workforce", "a private workforce is not paid per task, a vendor sets its price in AWS Marketplace: "
            "pricing=private (usd_per_task: null)")
    if price is not None and public:
        try:
            check_price(task_type, price, "pricing.usd_per_task")
        except ConfigError as exc:
            errors.append(exc)
    usd("pricing.max_usd", pricing.max_usd)
    usd("pricing.usd_per_object_fee", pricing.usd_per_object_fee)

    # source.name is the job's gtrun:dataset tag (TagValue: 0-256 letters, numbers, spaces, _.:/=+-@)
    dataset = settings.source.name
    if len(dataset) > _TAG_VALUE_MAX or not all(c.isalnum() or c in _TAG_VALUE_PUNCTUATION for c in dataset):
        bad("source.name", f"{dataset!r} cannot be a tag value (the job's gtrun:dataset tag)",
            f"at most {_TAG_VALUE_MAX} letters, digits, spaces and {_TAG_VALUE_PUNCTUATION.strip()}")

    # backend
    if LAMBDA_TYPES[task_type] is not None:
        try:
            lambda_account(backend.region)
        except ConfigError as exc:
            errors.append(exc)
    if backend.bucket and not _BUCKET.fullmatch(backend.bucket):
        bad("backend.bucket", f"{backend.bucket!r} is not an S3 bucket name",
            "3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit")
    role = backend.role_arn
    if role is not None and (len(role) > _ROLE_ARN_MAX or not _ROLE_ARN.fullmatch(role)):
        bad("backend.role_arn", f"{role!r} is not an IAM role ARN",
            "arn:aws:iam::<12-digit account>:role/<name>")
    return errors
