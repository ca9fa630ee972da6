"""Config schema: one dataclass per config group, registered in Hydra's ConfigStore.

The primary config's defaults list starts with `gtrun_schema`, which types every group: a group
file (bundled or the user's own, with no boilerplate) is merged into its dataclass, so a misspelled
key or a value of the wrong type fails when the config is composed, naming its full key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class TaskType(str, Enum):
    text_classification = "text_classification"
    text_multilabel = "text_multilabel"
    bounding_box = "bounding_box"
    named_entity = "named_entity"
    custom = "custom"


class WorkforceKind(str, Enum):
    private = "private"
    public = "public"
    vendor = "vendor"


class BackendKind(str, Enum):
    local = "local"
    aws = "aws"


@dataclass
class AssetsConfig:
    """Local files the manifest points at (images), copied to storage before the query runs."""

    files: str = MISSING  # glob
    to: str = MISSING  # s3://bucket/prefix/ they are copied under, by file name


@dataclass
class SourceConfig:
    name: str = MISSING  # dataset key: job names, sweep dirs
    database: str = "default"
    table: str = MISSING
    # manifest field -> column or SQL expression; one of `source` / `source-ref` is required
    columns: Dict[str, str] = field(default_factory=dict)
    where: Optional[str] = None
    params: Dict[str, Any] = field(default_factory=dict)  # bound as :name, never pasted
    order_by: List[str] = field(default_factory=list)
    limit: Optional[int] = None
    sql: Optional[str] = None  # one SELECT instead of columns/where/order_by/limit
    files: List[str] = field(default_factory=list)  # local backend: globs that back the table
    assets: Optional[AssetsConfig] = None


@dataclass
class TemplateConfig:
    task_type: TaskType = MISSING
    file: str = MISSING  # a Liquid file under templates/ (or a path)
    labels: List[str] = field(default_factory=list)
    title: str = MISSING
    description: str = MISSING
    keywords: List[str] = field(default_factory=list)
    instructions: Optional[str] = None  # HTML; short instructions for the worker
    label_attribute_name: str = MISSING


@dataclass
class WorkteamConfig:
    kind: WorkforceKind = WorkforceKind.private
    arn: Optional[str] = None  # local backend: its own team when unset
    workers_per_object: int = 1
    task_time_limit_s: int = 3600
    task_availability_s: int = 864000
    max_concurrent_tasks: Optional[int] = None


@dataclass
class PricingConfig:
    usd_per_task: Optional[str] = None  # Decimal string, e.g. "0.036"; required for public
    max_usd: Optional[str] = None  # budget guard: plan and run refuse an estimate above it
    usd_per_object_fee: str = "0.08"  # Ground Truth's own per-object charge


class OnError(str, Enum):
    stop = "stop"
    skip = "skip"


@dataclass
class SplitConfig:
    """Deterministic train/validation/test split by a stable hash of the object id."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    salt: str = "gtrun"  # change it to draw another split
    # an input field whose value (a string or an integer) identifies an object across jobs, e.g.
    # tweet_id or source-ref: its hash then splits the object the same way in every job and sweep;
    # unset: the object id (the line's position in its job's output)
    key: Optional[str] = None


@dataclass
class TransformsConfig:
    # transform name -> its options; the transforms group's options each add one
    # (`transforms=[table,jsonl]`, or on collect's command line `transforms=hf_datasets,conll`)
    steps: Dict[str, Any] = field(default_factory=dict)
    on_error: OnError = OnError.stop  # a malformed output line: stop, or skip it (and count it)
    split: SplitConfig = field(default_factory=SplitConfig)
    label_map: Dict[str, str] = field(default_factory=dict)  # rename or merge labels: old -> new
    label_schema: Optional[str] = None  # the label set's version, recorded with the dataset
    min_confidence: Optional[float] = None  # drop objects below it
    min_agreement: Optional[float] = None  # drop objects whose workers agree less (0-1)


@dataclass
class DuckDBConfig:
    memory_limit: str = "140MB"  # DuckDB's buffer pool: larger sorts spill to temp_directory
    threads: Optional[int] = None
    temp_directory: Optional[str] = None


@dataclass
class EndpointsConfig:
    """Endpoint overrides (tests, S3-compatible stores); unset: AWS's own."""

    s3: Optional[str] = None
    athena: Optional[str] = None
    sagemaker: Optional[str] = None


@dataclass
class AthenaConfig:
    workgroup: str = "primary"
    database: Optional[str] = None  # default: source.database
    output_location: Optional[str] = None  # default: s3://<bucket>/<prefix>/athena/
    poll_s: float = 0.5  # first poll delay; doubles up to 5 s
    timeout_s: float = 1800.0


@dataclass
class BackendConfig:
    kind: BackendKind = BackendKind.local
    region: str = "us-east-1"
    bucket: str = ""  # required; the local backend's default is gtrun (conf/backend/local.yaml)
    prefix: str = "jobs"
    role_arn: Optional[str] = None  # local backend: a stand-in role when unset
    root: str = "outputs/storage"  # local: the folder that stands in for S3 buckets
    duckdb: DuckDBConfig = field(default_factory=DuckDBConfig)
    # aws: credentials from boto3's standard chain (the region is `region`); `profile` picks a named profile
    profile: Optional[str] = None
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    athena: AthenaConfig = field(default_factory=AthenaConfig)
    max_attempts: int = 5  # botocore's standard retry mode


@dataclass
class JobConfig:
    name: Optional[str] = None  # the preset's name (job=<name>)
    labeling_job_name: Optional[str] = None  # fixed LabelingJobName; default: <dataset>-<date>-<time>-<hex>


@dataclass
class GtrunConfig:
    source: SourceConfig = MISSING
    template: TemplateConfig = MISSING
    workteam: WorkteamConfig = MISSING
    pricing: PricingConfig = MISSING
    transforms: TransformsConfig = MISSING
    backend: BackendConfig = MISSING
    job: JobConfig = field(default_factory=JobConfig)


def register_schemas() -> None:
    """Store the root schema in Hydra's ConfigStore (it types every group)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="gtrun_schema", node=GtrunConfig)
