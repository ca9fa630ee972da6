"""boto3 sessions and clients for the `aws` backend.

Credentials come from boto3's standard chain (environment, `backend.profile` / AWS_PROFILE, the
shared files, an instance or task role); gtrun never reads, logs or stores them. Endpoints can be
overridden per service (`backend.endpoints.*`: moto in the tests, an S3-compatible store), and
every client retries in botocore's `standard` mode: throttling (`ThrottlingException`, S3
`SlowDown`), 5xx answers and lost connections, with exponential backoff, `backend.max_attempts`
attempts in all.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import boto3
import botocore.config
import botocore.exceptions

from runner import __version__
from runner.errors import ConfigError
from runner.schema import BackendConfig

Service = Literal["s3", "athena", "sagemaker"]
SERVICES: tuple[Service, ...] = ("s3", "athena", "sagemaker")


def session(backend: BackendConfig) -> boto3.Session:
    """A boto3 session for `backend.profile` (None: the default chain) in `backend.region`."""
    return boto3.Session(profile_name=backend.profile or None, region_name=backend.region)


def chain_region(backend: BackendConfig) -> str | None:
    """The region boto3's own chain names (AWS_DEFAULT_REGION, the profile's `region`), which gtrun
    does not use: its calls go to `backend.region`. None when the chain names none (or no profile)."""
    try:
        region: str | None = boto3.Session(profile_name=backend.profile or None).region_name
    except botocore.exceptions.BotoCoreError:
        return None  # a missing profile: the call that needs it says so
    return region


def client_config(backend: BackendConfig, service: Service) -> botocore.config.Config:
    """Retries in standard mode; 16 pooled S3 connections; path-style S3 addressing when the S3 endpoint
    is overridden."""
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": backend.max_attempts},
        "user_agent_extra": f"gtrun/{__version__}",
    }
    if service == "s3":  # collect reads worker-response files on parse.READERS threads, a connection each
        options["max_pool_connections"] = 16
    if service == "s3" and backend.endpoints.s3:
        # A local endpoint (moto, MinIO) has no per-bucket DNS names: bucket.127.0.0.1 does not resolve.
        options["s3"] = {"addressing_style": "path"}
    return botocore.config.Config(**options)


def client(backend: BackendConfig, service: Service, boto_session: boto3.Session | None = None) -> Any:
    """A boto3 client for `service`, at `backend.endpoints.<service>` when that is set."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; gtrun uses {', '.join(SERVICES)}")
    endpoint = getattr(backend.endpoints, service) or None
    try:
        return (boto_session or session(backend)).client(
            service, region_name=backend.region, endpoint_url=endpoint,
            config=client_config(backend, service))
    except botocore.exceptions.ProfileNotFound as exc:
        # the profile set, or boto3's own from the environment
        key = "backend.profile" if backend.profile or not os.environ.get("AWS_PROFILE") else "AWS_PROFILE (environment)"
        raise ConfigError(key, str(exc), "a profile of ~/.aws/config, or unset") from None
    except botocore.exceptions.InvalidRetryConfigurationError as exc:
        raise ConfigError("backend.max_attempts", str(exc), "1 or more") from None
    except ValueError as exc:  # an endpoint URL botocore cannot use
        raise ConfigError(f"backend.endpoints.{service}", str(exc)) from None


__all__ = ["session", "client", "client_config", "chain_region", "SERVICES"]
