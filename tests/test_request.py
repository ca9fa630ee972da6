import json
import re
from dataclasses import replace
from datetime import datetime

import pytest

from runner.build.lambdas import (
    LAMBDA_ACCOUNTS,
    consolidation_arn,
    human_task_ui_arn,
    pre_annotation_arn,
)
from runner.build.request import (
    check_settings,
    job_name,
    label_category_config,
    labeling_job_request,
)
from runner.check import validate_request
from runner.errors import ConfigError, ConfigErrors, collect_errors
from runner.schema import (
    BackendConfig,
    BackendKind,
    GtrunConfig,
    PricingConfig,
    SourceConfig,
    TaskType,
    TemplateConfig,
    TransformsConfig,
    WorkforceKind,
    WorkteamConfig,
)

JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
RUN_TIME = datetime(2024, 5, 17, 9, 3, 7)
ROLE = "arn:aws:iam::123456789012:role/service-role/GroundTruthExecution"
PRIVATE_TEAM = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/reviewers"
PUBLIC_TEAM = "arn:aws:sagemaker:us-east-1:394669845002:workteam/public-crowd/default"

TEMPLATES = {
    TaskType.text_classification: TemplateConfig(
        task_type=TaskType.text_classification, file="text_classification.liquid",
        labels=["Positive", "Negative", "Neutral", "Irrelevant"],
        title="What is the sentiment of this tweet?",
        description="Read the tweet about the entity and choose its sentiment.",
        keywords=["tweet", "sentiment", "text classification"],
        instructions="<p>Choose the sentiment.</p>", label_attribute_name="sentiment"),
    TaskType.text_multilabel: TemplateConfig(
        task_type=TaskType.text_multilabel, file="text_multilabel.liquid",
        labels=["Positive", "Negative", "Neutral"], title="Tag the text",
        description="Read the text and choose every category that applies.",
        keywords=["text", "classification", "multi label"],
        instructions="<p>Choose all categories that apply.</p>", label_attribute_name="labels"),
    TaskType.bounding_box: TemplateConfig(
        task_type=TaskType.bounding_box, file="bounding_box.liquid", labels=["car", "bike"],
        title="Draw a box around each object",
        description="Draw a tight box around every object of each category.",
        keywords=["image", "bounding box"], instructions="<p>One tight box per object.</p>",
        label_attribute_name="boxes"),
    TaskType.named_entity: TemplateConfig(
        task_type=TaskType.named_entity, file="named_entity.liquid",
        labels=["person", "organization", "location"], title="Highlight the named entities",
        description="Select each name in the text and give it its entity type.",
        keywords=["text", "entities"], instructions="<p>Highlight each name.</p>",
        label_attribute_name="entities"),
    TaskType.custom: TemplateConfig(
        task_type=TaskType.custom, file="receipts_ner.liquid",
        labels=["vendor", "date", "total"], title="Label the fields of a receipt",
        description="Draw a box around each field of the receipt and give it its entity label.",
        keywords=["receipt", "image", "entities"], instructions="<p>Box the fields.</p>",
        label_attribute_name="receipt-entities"),
}


def make_settings(task_type=TaskType.text_classification, kind=WorkforceKind.private,
                  region="us-east-1"):
    public = kind == WorkforceKind.public
    team = (f"arn:aws:sagemaker:{region}:394669845002:workteam/public-crowd/default" if public
            else f"arn:aws:sagemaker:{region}:123456789012:workteam/private-crowd/reviewers")
    return GtrunConfig(
        source=SourceConfig(name="tweets", table="labeling_prediction",
                            columns={"source": "tweet_text"}),
        template=TEMPLATES[task_type],
        workteam=WorkteamConfig(kind=kind, arn=team, workers_per_object=3 if public else 1,
                                task_time_limit_s=300 if public else 3600,
                                task_availability_s=21600 if public else 864000,
                                max_concurrent_tasks=500 if public else None),
        pricing=PricingConfig(usd_per_task="0.036" if public else None, max_usd="100"),
        transforms=TransformsConfig(),
        backend=BackendConfig(kind=BackendKind.aws, region=region, bucket="my-bucket",
                              prefix="gtrun", role_arn=ROLE),
    )


def build(settings, **overrides):
    args = dict(
        job_name=job_name(settings.source.name, RUN_TIME, "a1b2c3"),
        manifest_uri="s3://my-bucket/gtrun/tweets/input.manifest",
        template_uri="s3://my-bucket/gtrun/tweets/template.liquid",
        label_config_uri="s3://my-bucket/gtrun/tweets/labels.json",
        output_uri="s3://my-bucket/gtrun/output/",
        role_arn=settings.backend.role_arn,
        workteam_arn=settings.workteam.arn,
        tags={"run": "a1b2c3", "dataset": "tweets", "gtrun:version": "0.1.0"},
    )
    args.update(overrides)
    return labeling_job_request(settings, **args)


def with_(settings, group, **changes):
    return replace(settings, **{group: replace(getattr(settings, group), **changes)})


# --- job_name ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dataset", "suffix"), [
    ("tweets", "a1b2c3"),
    ("Tweets_NBA2K", "RUN_01"),
    ("x" * 200, "a1b2c3"),
    ("a_" * 60, "a1b2c3"),
    ("Ünïcödé — 数据集 ✓", "a1b2c3"),
    ("数据集", "a1b2c3"),
    ("___", "a1b2c3"),
    ("", ""),
    ("tweets", "s" * 100),
    ("ab-" * 30, "-x-"),
    ("y" * 42, "a1b2"),  # exactly 63
    ("y" * 43, "a1b2"),  # one too many
])
def test_job_name_always_fits_labeling_job_name(dataset, suffix):
    name = job_name(dataset, RUN_TIME, suffix)
    assert JOB_NAME.fullmatch(name), name
    assert len(name) <= 63
    assert name == name.lower()
    assert "20240517-090307" in name


def test_job_name_keeps_the_suffix_and_shortens_the_dataset():
    name = job_name("y" * 43, RUN_TIME, "a1b2")
    assert name == "y" * 42 + "-20240517-090307-a1b2"
    assert job_name("y" * 42, RUN_TIME, "a1b2") == name
    assert job_name("Ünïcödé_Set", RUN_TIME, "r1") == "unicode-set-20240517-090307-r1"
    assert job_name("数据集", RUN_TIME, "r1") == "20240517-090307-r1"


# --- label_category_config -----------------------------------------------------------------------

def test_label_config_is_none_without_labels():
    assert label_category_config([], TaskType.custom, None) is None


@pytest.mark.parametrize("task_type", [t for t in TaskType if t != TaskType.named_entity])
def test_label_config_standard_format(task_type):
    assert label_category_config(["a", "b"], task_type, "<p>x</p>") == {
        "document-version": "2018-11-28", "labels": [{"label": "a"}, {"label": "b"}]}


def test_ner_label_config_has_unique_short_names_and_instructions():
    labels = ["person", "personal", "per", "Person", "pe", "organization"]
    config = label_category_config(labels, TaskType.named_entity, "<p>Go</p>")
    shorts = [x["shortDisplayName"] for x in config["labels"]]
    assert [x["label"] for x in config["labels"]] == labels
    assert len(set(shorts)) == len(shorts)
    assert shorts[0] == "per" and shorts[-1] == "org"
    assert config["instructions"] == {"shortInstruction": "<p>Go</p>", "fullInstruction": "<p>Go</p>"}


def test_ner_label_config_needs_instructions():
    with pytest.raises(ConfigError, match=r"^template\.instructions: "):
        label_category_config(["person"], TaskType.named_entity, None)


# --- lambdas -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("task_type", "name"), [
    (TaskType.text_classification, "TextMultiClass"),
    (TaskType.text_multilabel, "TextMultiClassMultiLabel"),
    (TaskType.bounding_box, "BoundingBox"),
    (TaskType.named_entity, "NamedEntityRecognition"),
])
@pytest.mark.parametrize(("region", "account"), [
    ("us-east-1", "432418664414"),
    ("eu-west-1", "568282634449"),
])
def test_built_in_lambdas(task_type, name, region, account):
    assert (pre_annotation_arn(task_type, region)
            == f"arn:aws:lambda:{region}:{account}:function:PRE-{name}")
    assert (consolidation_arn(task_type, region)
            == f"arn:aws:lambda:{region}:{account}:function:ACS-{name}")


def test_lambda_regions_are_the_twelve_listed():
    assert len(LAMBDA_ACCOUNTS) == 12
    assert all(re.fullmatch(r"\d{12}", a) for a in LAMBDA_ACCOUNTS.values())


def test_custom_tasks_have_no_lambdas_in_any_region():
    for region in ("us-east-1", "us-west-1"):
        assert pre_annotation_arn(TaskType.custom, region) is None
        assert consolidation_arn(TaskType.custom, region) is None


def test_only_ner_uses_a_hosted_ui():
    assert (human_task_ui_arn(TaskType.named_entity, "eu-west-1")
            == "arn:aws:sagemaker:eu-west-1:394669845002:human-task-ui/NamedEntityRecognition")
    for task_type in TaskType:
        if task_type != TaskType.named_entity:
            assert human_task_ui_arn(task_type, "eu-west-1") is None


@pytest.mark.parametrize("function", [pre_annotation_arn, consolidation_arn, human_task_ui_arn])
def test_unsupported_region_is_a_backend_region_error(function):
    with pytest.raises(ConfigError, match=r"^backend\.region: 'us-west-1'") as info:
        function(TaskType.named_entity, "us-west-1")
    assert "eu-west-1" in str(info.value)  # the hint lists the supported regions


# --- labeling_job_request ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [WorkforceKind.private, WorkforceKind.public])
@pytest.mark.parametrize("task_type", list(TaskType))
def test_request_for_every_task_type_passes_the_service_model(task_type, kind):
    settings = make_settings(task_type, kind)
    assert check_settings(settings) == []
    request = build(settings)
    validate_request(request)

    human = request["HumanTaskConfig"]
    assert request["LabelingJobName"] == "tweets-20240517-090307-a1b2c3"
    assert request["LabelAttributeName"] == settings.template.label_attribute_name
    assert "StoppingConditions" not in request
    assert request["LabelCategoryConfigS3Uri"] == "s3://my-bucket/gtrun/tweets/labels.json"
    if task_type == TaskType.named_entity:
        assert human["UiConfig"] == {"HumanTaskUiArn": (
            "arn:aws:sagemaker:us-east-1:394669845002:human-task-ui/NamedEntityRecognition")}
    else:
        assert human["UiConfig"] == {"UiTemplateS3Uri": "s3://my-bucket/gtrun/tweets/template.liquid"}
    if task_type == TaskType.custom:
        assert "PreHumanTaskLambdaArn" not in human
        assert "AnnotationConsolidationConfig" not in human
    else:
        assert human["PreHumanTaskLambdaArn"] == pre_annotation_arn(task_type, "us-east-1")
        assert human["PreHumanTaskLambdaArn"].startswith(
            "arn:aws:lambda:us-east-1:432418664414:function:PRE-")
        assert human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"] == (
            consolidation_arn(task_type, "us-east-1"))
    if kind == WorkforceKind.public:
        assert request["InputConfig"]["DataAttributes"] == {"ContentClassifiers": [
            "FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"]}
        assert human["PublicWorkforceTaskPrice"] == {
            "AmountInUsd": {"Dollars": 0, "Cents": 3, "TenthFractionsOfACent": 6}}
        assert human["MaxConcurrentTaskCount"] == 500
    else:
        assert "DataAttributes" not in request["InputConfig"]
        assert "PublicWorkforceTaskPrice" not in human
        assert "MaxConcurrentTaskCount" not in human


def test_request_is_deterministic_and_tags_are_sorted():
    settings = make_settings(TaskType.bounding_box, WorkforceKind.public, region="eu-west-1")
    first = build(settings)
    second = build(settings, tags={"gtrun:version": "0.1.0", "run": "a1b2c3", "dataset": "tweets"})
    assert json.dumps(first) == json.dumps(second)
    assert [t["Key"] for t in first["Tags"]] == ["dataset", "gtrun:version", "run"]
    assert first["HumanTaskConfig"]["PreHumanTaskLambdaArn"] == (
        "arn:aws:lambda:eu-west-1:568282634449:function:PRE-BoundingBox")
    validate_request(first)


def test_request_without_label_config_or_tags():
    request = build(make_settings(TaskType.custom), label_config_uri=None, tags={})
    assert "LabelCategoryConfigS3Uri" not in request and "Tags" not in request
    validate_request(request)


def test_request_in_unsupported_region_is_a_backend_region_error():
    settings = make_settings(TaskType.text_classification, region="us-west-1")
    with pytest.raises(ConfigError, match=r"^backend\.region: "):
        build(settings)
    validate_request(build(make_settings(TaskType.custom, region="us-west-1")))


def test_unencodable_price_is_a_pricing_error():
    settings = with_(make_settings(), "pricing", usd_per_task="0.0365")
    with pytest.raises(ConfigError, match=r"^pricing\.usd_per_task: "):
        build(settings)


# --- validate_request ----------------------------------------------------------------------------

def broken(path, value):
    request = build(make_settings(TaskType.text_classification, WorkforceKind.public))
    *parents, last = path
    target = request
    for key in parents:
        target = target[key]
    target[last] = value
    return request


@pytest.mark.parametrize(("path", "value", "message"), [
    (["LabelingJobName"], "tweets_2024", r"request\.LabelingJobName: 'tweets_2024' does not match"),
    (["LabelingJobName"], "x" * 64, r"request\.LabelingJobName: is 64 characters long, above"),
    (["HumanTaskConfig", "NumberOfHumanWorkersPerDataObject"], 12,
     r"request\.HumanTaskConfig\.NumberOfHumanWorkersPerDataObject: 12 is above the maximum 9"),
    (["HumanTaskConfig", "TaskKeywords"], ["a", "b", "c", "d", "e", "f"],
     r"request\.HumanTaskConfig\.TaskKeywords: has 6 items, above the maximum 5"),
    (["HumanTaskConfig", "TaskKeywords"], ["multi-label"],
     r"request\.HumanTaskConfig\.TaskKeywords\[0\]: 'multi-label' does not match"),
    (["RoleArn"], "arn:aws:iam::12345:role/x",
     r"request\.RoleArn: 'arn:aws:iam::12345:role/x' does not match"),
    (["RoleArn"], "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/x", r"request\.RoleArn: "),  # Java \d is ASCII
    (["LabelAttributeName"], "my_label", r"request\.LabelAttributeName: "),
    (["HumanTaskConfig", "TaskDescription"], "two\nlines", r"request\.HumanTaskConfig\.TaskDescription: "),
    (["HumanTaskConfig", "TaskTitle"], "bell\x07", r"request\.HumanTaskConfig\.TaskTitle: "),
    (["HumanTaskConfig", "MaxConcurrentTaskCount"], 5001,
     r"request\.HumanTaskConfig\.MaxConcurrentTaskCount: 5001 is above the maximum 5000"),
    (["HumanTaskConfig", "TaskTimeLimitInSeconds"], 10,
     r"request\.HumanTaskConfig\.TaskTimeLimitInSeconds: "),  # botocore's own min check
    (["HumanTaskConfig", "PublicWorkforceTaskPrice", "AmountInUsd", "Cents"], 100,
     r"request\.HumanTaskConfig\.PublicWorkforceTaskPrice\.AmountInUsd\.Cents: 100 is above"),
    (["HumanTaskConfig", "NumberOfHumanWorkersPerDataObject"], True,
     r"request\.HumanTaskConfig\.NumberOfHumanWorkersPerDataObject: True is a boolean"),
    (["InputConfig", "DataAttributes", "ContentClassifiers"], ["FreeOfPII"],
     r"request\.InputConfig\.DataAttributes\.ContentClassifiers\[0\]: 'FreeOfPII' is not one of"),
    (["HumanTaskConfig", "UiConfig"], {}, r"request\.HumanTaskConfig\.UiConfig: needs exactly one"),
    (["Tags"], [{"Key": "team", "Value": "a\tb"}], r"request\.Tags\[0\]\.Value: "),
    (["Tags"], [{"Key": "t", "Value": str(i)} for i in range(51)], r"request\.Tags: has 51 items"),
])
def test_broken_request_names_the_path(path, value, message):
    # One problem: the message is that line; several: one "- " line each.
    with pytest.raises(ConfigErrors, match=r"(^|\n- )" + message):
        validate_request(broken(path, value))


@pytest.mark.parametrize("value", ["Équipe données", "team_a:b/c=d+e-f@g", "x\u00a0y", "٣"])
def test_tag_values_accept_unicode_letters_numbers_and_spaces(value):
    validate_request(broken(["Tags"], [{"Key": value, "Value": value}]))


def test_validate_request_reports_every_problem_at_once():
    request = broken(["LabelingJobName"], "tweets_2024")
    human = request["HumanTaskConfig"]
    human["NumberOfHumanWorkersPerDataObject"] = 12
    human["TaskKeywords"] = ["a", "b", "c", "d", "e", "f"]
    request["RoleArn"] = "not-a-role-arn-at-all"
    del human["TaskTitle"]
    with pytest.raises(ConfigErrors, match=r"^5 config problems:") as info:
        validate_request(request)
    assert [e.key for e in info.value.errors] == [
        "request.HumanTaskConfig.NumberOfHumanWorkersPerDataObject",
        "request.HumanTaskConfig.TaskKeywords",
        "request.HumanTaskConfig.TaskTitle",
        "request.LabelingJobName",
        "request.RoleArn",
    ]


# --- check_settings ------------------------------------------------------------------------------

def first_error(settings):
    errors = check_settings(settings)
    assert len(errors) == 1, [str(e) for e in errors]
    with pytest.raises(ConfigError) as info:
        collect_errors(errors)
    return info.value


@pytest.mark.parametrize(("task_type", "kind", "group", "changes", "message"), [
    (TaskType.text_classification, "private", "template", {"label_attribute_name": "my_label"},
     r"template\.label_attribute_name: 'my_label' is not a valid"),
    (TaskType.text_classification, "private", "template", {"label_attribute_name": "a" * 128},
     r"template\.label_attribute_name: "),
    (TaskType.text_classification, "private", "template", {"label_attribute_name": "x-metadata"},
     r"template\.label_attribute_name: 'x-metadata' ends in '-metadata'"),
    (TaskType.bounding_box, "private", "template", {"label_attribute_name": "boxes-ref"},
     r"template\.label_attribute_name: 'boxes-ref' ends in '-ref'"),
    (TaskType.text_classification, "private", "workteam", {"workers_per_object": 0},
     r"workteam\.workers_per_object: 0 is below the minimum 1"),
    (TaskType.text_classification, "private", "workteam", {"workers_per_object": 10},
     r"workteam\.workers_per_object: 10 is above the maximum 9"),
    (TaskType.text_classification, "private", "workteam", {"task_time_limit_s": 29},
     r"workteam\.task_time_limit_s: 29 is below"),
    (TaskType.text_classification, "private", "workteam", {"task_time_limit_s": 28801},
     r"workteam\.task_time_limit_s: 28801 is above"),
    (TaskType.text_classification, "private", "workteam", {"task_availability_s": 59},
     r"workteam\.task_availability_s: 59 is below"),
    (TaskType.text_classification, "private", "workteam", {"task_availability_s": 2592001},
     r"workteam\.task_availability_s: 2592001 is above the maximum 2592000"),
    (TaskType.text_classification, "public", "workteam", {"task_availability_s": 43201},
     r"workteam\.task_availability_s: 43201 is above the maximum 43200"),
    (TaskType.text_classification, "private", "workteam", {"max_concurrent_tasks": 0},
     r"workteam\.max_concurrent_tasks: 0 is below"),
    (TaskType.text_classification, "private", "workteam", {"max_concurrent_tasks": 5001},
     r"workteam\.max_concurrent_tasks: 5001 is above"),
    (TaskType.text_classification, "private", "template", {"keywords": []},
     r"template\.keywords: has 0 keywords"),
    (TaskType.text_classification, "private", "template", {"keywords": list("abcdef")},
     r"template\.keywords: has 6 keywords"),
    (TaskType.text_classification, "private", "template", {"keywords": ["a", "b", "multi-label"]},
     r"template\.keywords\[2\]: 'multi-label' is not a valid TaskKeyword"),
    (TaskType.text_classification, "private", "template", {"keywords": ["two  spaces"]},
     r"template\.keywords\[0\]: "),
    (TaskType.text_classification, "private", "template", {"keywords": ["k" * 31]},
     r"template\.keywords\[0\]: '.*' is longer than 30"),
    (TaskType.text_classification, "private", "template", {"title": ""},
     r"template\.title: is 0 characters long"),
    (TaskType.text_classification, "private", "template", {"title": "t" * 129},
     r"template\.title: is 129 characters long"),
    (TaskType.text_classification, "private", "template", {"title": "Sentiment 😀"},
     r"template\.title: "),
    (TaskType.text_classification, "private", "template", {"description": "d" * 256},
     r"template\.description: is 256 characters long"),
    (TaskType.text_classification, "private", "template", {"description": "one\ntwo"},
     r"template\.description: has a line break"),
    (TaskType.text_classification, "private", "template", {"labels": ["a", "b", "a"]},
     r"template\.labels: lists 'a' more than once"),
    (TaskType.text_classification, "private", "template", {"labels": ["a", "b" * 257]},
     r"template\.labels\[1\]: is 257 characters long"),
    (TaskType.text_classification, "private", "template", {"labels": ["only"]},
     r"template\.labels: has 1 labels; text_classification needs at least 2"),
    (TaskType.text_multilabel, "private", "template", {"labels": ["only"]},
     r"template\.labels: has 1 labels; text_multilabel needs at least 2"),
    (TaskType.text_multilabel, "private", "template", {"labels": [f"l{i}" for i in range(51)]},
     r"template\.labels: has 51 labels; text_multilabel takes at most 50"),
    (TaskType.bounding_box, "private", "template", {"labels": []},
     r"template\.labels: has 0 labels; bounding_box needs at least 1"),
    (TaskType.bounding_box, "private", "template", {"labels": [f"l{i}" for i in range(51)]},
     r"template\.labels: has 51 labels; bounding_box takes at most 50"),
    (TaskType.named_entity, "private", "template", {"labels": []},
     r"template\.labels: has 0 labels; named_entity needs at least 1"),
    (TaskType.named_entity, "private", "template", {"instructions": None},
     r"template\.instructions: is required for named_entity"),
    (TaskType.text_classification, "public", "pricing", {"usd_per_task": None},
     r"pricing\.usd_per_task: is required for workteam\.kind=public"),
    (TaskType.bounding_box, "public", "pricing", {"usd_per_task": "0.012"},
     r"pricing\.usd_per_task: '0.012' is not a Ground Truth price for bounding_box"),
    (TaskType.text_classification, "public", "pricing", {"usd_per_task": "cheap"},
     r"pricing\.usd_per_task: 'cheap' is not a number"),
    (TaskType.text_classification, "public", "pricing", {"usd_per_task": "0.0365"},
     r"pricing\.usd_per_task: '0.0365' is not a Ground Truth price"),
    (TaskType.text_classification, "private", "pricing", {"usd_per_task": "0.036"},
     r"pricing\.usd_per_task: is for Mechanical Turk \(workteam\.kind=public\), not a private workforce"),
    (TaskType.bounding_box, "vendor", "pricing", {"usd_per_task": "0.0365"},
     r"pricing\.usd_per_task: is for Mechanical Turk \(workteam\.kind=public\), not a vendor workforce"),
    (TaskType.text_classification, "private", "pricing", {"max_usd": "lots"},
     r"pricing\.max_usd: 'lots' is not a number"),
    (TaskType.text_classification, "private", "pricing", {"usd_per_object_fee": "-1"},
     r"pricing\.usd_per_object_fee: '-1' is negative"),
    (TaskType.text_classification, "private", "workteam", {"arn": "my-team"},
     r"workteam\.arn: 'my-team' is not a workteam ARN"),
    (TaskType.text_classification, "private", "workteam",
     {"arn": "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/x"},
     r"workteam\.arn: .* is in 'eu-west-1', not 'us-east-1'"),
    (TaskType.text_classification, "private", "workteam", {"arn": PUBLIC_TEAM},
     r"workteam\.arn: .* is the Mechanical Turk workteam but workteam\.kind is private"),
    (TaskType.text_classification, "public", "workteam", {"arn": PRIVATE_TEAM},
     r"workteam\.arn: .* is not the Mechanical Turk workteam but workteam\.kind is public"),
    (TaskType.text_classification, "private", "backend",
     {"role_arn": "arn:aws:iam::123456789012:user/me"},
     r"backend\.role_arn: 'arn:aws:iam::123456789012:user/me' is not an IAM role ARN"),
])
def test_check_settings_names_the_key(task_type, kind, group, changes, message):
    settings = with_(make_settings(task_type, WorkforceKind(kind)), group, **changes)
    with pytest.raises(ConfigError, match="^" + message):
        raise first_error(settings)


@pytest.mark.parametrize("task_type", [t for t in TaskType if t != TaskType.custom])
def test_check_settings_unsupported_region(task_type):
    error = first_error(make_settings(task_type, region="us-west-1"))
    assert error.key == "backend.region"
    assert str(error).startswith("backend.region: 'us-west-1' has no Ground Truth built-in task")
    assert "us-east-1, us-east-2, us-west-2" in str(error)


def test_custom_tasks_may_use_any_region_and_no_labels():
    settings = make_settings(TaskType.custom, region="us-west-1")
    settings = with_(settings, "template", labels=[])
    assert check_settings(settings) == []


def test_private_workteam_without_price_or_arn_is_fine():
    settings = with_(make_settings(), "workteam", arn=None)
    settings = with_(settings, "backend", role_arn=None)
    assert check_settings(settings) == []


def test_check_settings_reports_several_problems_at_once():
    settings = make_settings(TaskType.bounding_box, WorkforceKind.public, region="us-west-1")
    settings = with_(settings, "template", label_attribute_name="boxes-metadata",
                     keywords=["image", "bounding-box"], labels=[])
    settings = with_(settings, "workteam", workers_per_object=12, task_availability_s=864000,
                     arn="arn:aws:sagemaker:us-west-1:394669845002:workteam/public-crowd/default")
    settings = with_(settings, "pricing", usd_per_task="0.012")
    settings = with_(settings, "backend", role_arn="arn:aws:iam::123:role/x")
    errors = check_settings(settings)
    assert [e.key for e in errors] == [
        "template.label_attribute_name",
        "template.keywords[1]",
        "template.labels",
        "workteam.workers_per_object",
        "workteam.task_availability_s",
        "pricing.usd_per_task",
        "backend.region",
        "backend.role_arn",
    ]
    with pytest.raises(ConfigErrors, match=r"^8 config problems:\n- template\.label_attribute_name: "):
        collect_errors(errors)


@pytest.mark.parametrize("task_type", list(TaskType))
def test_settings_that_pass_make_requests_that_pass(task_type):
    # The two layers agree at the edges: every limit at its maximum still validates.
    settings = make_settings(task_type, WorkforceKind.public)
    labels = [f"label {i}" for i in range(50 if task_type != TaskType.custom else 3)]
    settings = with_(settings, "template", title="t" * 128, description="d" * 255,
                     keywords=["k" * 30, "a b", "c", "d", "e"], labels=labels,
                     label_attribute_name="a" * 127)
    settings = with_(settings, "workteam", workers_per_object=9, task_time_limit_s=28800,
                     task_availability_s=43200, max_concurrent_tasks=5000)
    settings = with_(settings, "pricing", usd_per_task="1.200")
    assert check_settings(settings) == []
    validate_request(build(settings))
