"""moto's server on 127.0.0.1 for the aws backend's tests (S3 and Athena over real HTTP).

Import the fixtures into a test module (pytest picks up imported fixtures):

    from tests.moto_fixtures import aws_env, moto_server, queue_athena_results  # noqa: F401

- `moto_server` (session scope, one per xdist worker): `python -m moto.server -H 127.0.0.1 -p <free
  port>` in a subprocess; yields its URL, terminates it at the end.
- `aws_env`: fake credentials and region in the environment (monkeypatch), no shared config files,
  no instance metadata lookups: boto3 never reaches beyond 127.0.0.1 nor reads the user's profile.
- `queue_athena_results(url, columns, rows)`: queue one canned Athena result.

moto does not run SQL. Each StartQueryExecution pops the next queued result (if any) and writes it
as CSV to `<OutputLocation>/<QueryExecutionId>.csv` when that bucket exists. moto writes every
VarCharValue as `f'"{value}"'` without doubling embedded quotes, and a NULL (a Datum without
VarCharValue) as an empty unquoted field. Real Athena doubles embedded `"`; so this helper
pre-doubles `"` in each VarCharValue: moto's CSV file is then byte-for-byte what Athena writes. The
flip side: moto's GetQueryResults returns the doubled text, so tests read values only from the CSV
(as gtrun does) and use GetQueryResults for ColumnInfo only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

ACCOUNT = "123456789012"
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing", "AWS_SECURITY_TOKEN": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 1.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (127.0.0.1 only)
        return int(response.status)


def post_json(url: str, body: Any) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (127.0.0.1 only)
        return int(response.status)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server on 127.0.0.1 (one per test session / xdist worker); yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_CREDENTIALS, AWS_DEFAULT_REGION=REGION)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                _get(f"{url}/moto-api/data.json")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {url} within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def reset_moto(url: str) -> None:
    """Forget every bucket, object, query and queued result."""
    post_json(f"{url}/moto-api/reset", {})


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Fake credentials and region in the environment; no profile, shared files or IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    nowhere = tmp_path_factory.mktemp("no-aws-config")
    values = {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": REGION,
              "AWS_CONFIG_FILE": str(nowhere / "config"),
              "AWS_SHARED_CREDENTIALS_FILE": str(nowhere / "credentials"),
              "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def athena_text(value: Any) -> str | None:
    """A Python value as Athena renders it in results (None: SQL NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "inf" in text or "nan" in text:  # Java's Double.toString: 1.0E-5, Infinity, NaN
            special = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
            if text in special:
                return special[text]
            mantissa, exponent = text.split("e")
            mantissa = mantissa if "." in mantissa else mantissa + ".0"
            return f"{mantissa}E{int(exponent)}"
        return text
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _datum(text: str | None) -> dict[str, str]:
    # Pre-doubled quotes: moto writes f'"{value}"' as is (see the module docstring).
    return {} if text is None else {"VarCharValue": text.replace('"', '""')}


PRECISION = {"tinyint": 3, "smallint": 5, "integer": 10, "bigint": 19, "real": 24, "double": 53,
             "varchar": 2147483647, "boolean": 0, "date": 0, "timestamp": 3, "json": 0}


def column_info(name: str, kind: str) -> dict[str, Any]:
    """ColumnInfo as Athena returns it: `decimal(38,3)` becomes Type decimal, Precision 38, Scale 3."""
    base, _, args = kind.partition("(")
    numbers = [int(x) for x in args.rstrip(")").split(",") if x.strip().isdigit()]
    precision = numbers[0] if numbers else PRECISION.get(base, 0)
    scale = numbers[1] if len(numbers) > 1 else 0
    return {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": name, "Label": name,
            "Type": base, "Precision": precision, "Scale": scale, "Nullable": "UNKNOWN",
            "CaseSensitive": base in ("varchar", "char")}


def queue_athena_results(url: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]],
                         account: str = ACCOUNT, region: str = REGION) -> None:
    """Queue one canned result for the next StartQueryExecution in `account`/`region`.

    `columns` are (name, Athena type); the first row repeats the names, as GetQueryResults does;
    a None value is a SQL NULL (a Datum without VarCharValue); other values are rendered as Athena
    renders them as text (`athena_text`). moto's CSV of it matches real Athena's format.
    """
    header = [{"VarCharValue": name.replace('"', '""')} for name, _ in columns]
    data = [{"Data": header}]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} values for {len(columns)} columns")
        data.append({"Data": [_datum(athena_text(v)) for v in row]})
    info = [column_info(name, kind) for name, kind in columns]
    status = post_json(f"{url}/moto-api/static/athena/query-results",
                       {"account_id": account, "region": region,
                        "results": [{"rows": data, "column_info": info}]})
    if status != 201:
        raise RuntimeError(f"moto refused the canned Athena result: HTTP {status}")


def set_athena_transition(url: str, transition: dict[str, Any] | None) -> None:
    """moto's state manager for Athena executions (None: back to its default, immediate)."""
    if transition is None:
        post_json(f"{url}/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})
    else:
        post_json(f"{url}/moto-api/state-manager/set-transition",
                  {"model_name": "athena::execution", "transition": transition})


__all__ = ["moto_server", "aws_env", "queue_athena_results", "reset_moto", "athena_text",
           "set_athena_transition", "free_port", "ACCOUNT", "REGION"]
