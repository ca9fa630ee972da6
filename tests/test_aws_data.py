"""The aws backend's data path against moto's server over HTTP: S3Store, AthenaSource, retries.

Real services on 127.0.0.1 (moto for S3 and Athena, tests/faults.py's proxy for faults) and real
DuckDB; no mocks of gtrun code. moto does not run SQL: each test runs the source's SELECT in DuckDB
(or builds the rows), queues them as the canned Athena result, and checks what gtrun makes of
Athena's result CSV, byte for byte against the local backend where both apply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hydra import compose, initialize_config_dir

from runner.build.manifest import json_lines_query
from runner.build.sql import Query, count_query, select_query
from runner.config import CONF_DIR, setup, to_settings
from runner.errors import ConfigError, GtrunError, QueryError, StoreError
from runner.io import aws
from runner.io.athena import (
    AthenaSource,
    decimal_json,
    execution_parameters,
    parameter_literal,
    result_records,
)
from runner.io.backends import backend_for
from runner.io.query import DuckDBSource
from runner.io.s3 import S3Store
from runner.pipeline import stream_manifest
from runner.schema import (
    AthenaConfig,
    BackendConfig,
    BackendKind,
    DuckDBConfig,
    EndpointsConfig,
    GtrunConfig,
    SourceConfig,
)
from tests.faults import FaultProxy, target
from tests.moto_fixtures import aws_env, moto_server, queue_athena_results, reset_moto, set_athena_transition  # noqa: F401

MiB = 1 << 20


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def moto(moto_server: str, aws_env: dict[str, str]) -> str:  # noqa: F811
    reset_moto(moto_server)
    set_athena_transition(moto_server, None)
    return moto_server


def make_backend(url: str, bucket: str, *, s3: str | None = None, athena: str | None = None,
                 max_attempts: int = 3, timeout_s: float = 10.0) -> BackendConfig:
    return BackendConfig(kind=BackendKind.aws, region="us-east-1", bucket=bucket, prefix="gtrun",
                         endpoints=EndpointsConfig(s3=s3 or url, athena=athena or url),
                         athena=AthenaConfig(poll_s=0.01, timeout_s=timeout_s), max_attempts=max_attempts)


@pytest.fixture
def bucket(moto: str) -> str:
    name = f"gtrun-{uuid.uuid4().hex[:12]}"
    aws.client(make_backend(moto, name), "s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def backend(moto: str, bucket: str) -> BackendConfig:
    return make_backend(moto, bucket)


def athena_source(backend: BackendConfig, source: SourceConfig) -> AthenaSource:
    return AthenaSource(aws.client(backend, "athena"), aws.client(backend, "s3"), backend, source)


def settings(*overrides: str) -> GtrunConfig:
    setup()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return to_settings(compose("config", list(overrides)))


ATHENA_TYPES = {"BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint", "TINYINT": "tinyint",
                "VARCHAR": "varchar", "DOUBLE": "double", "FLOAT": "real", "BOOLEAN": "boolean",
                "DATE": "date"}


def duckdb_result(source: SourceConfig) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """The source's SELECT run by DuckDB over source.files: (name, Athena type) columns and rows."""
    src = DuckDBSource.open(source, DuckDBConfig())
    try:
        cur = src.execute(select_query(source, "duckdb"))
        columns = [(d[0], ATHENA_TYPES[str(d[1]).split("(")[0]]) for d in cur.description]
        return columns, cur.fetchall()
    finally:
        src.close()


def local_manifest(source: SourceConfig) -> bytes:
    """The manifest the local backend builds: DuckDBSource + json_lines_query, as Pipeline.run does."""
    query = select_query(source, "duckdb")
    src = DuckDBSource.open(source, DuckDBConfig())
    try:
        out = io.BytesIO()
        stream_manifest(src.stream_lines(json_lines_query(query, list(query.fields or ()))), [out])
        return out.getvalue()
    finally:
        src.close()


def athena_manifest(src: AthenaSource, query: Query, fields: list[str] | None = None) -> bytes:
    return b"".join(bytes(chunk) for chunk, _ in src.stream_lines(query, fields))


def executed(backend: BackendConfig, query_id: str) -> dict[str, Any]:
    execution: dict[str, Any] = aws.client(backend, "athena").get_query_execution(
        QueryExecutionId=query_id)["QueryExecution"]
    return execution


# -- the bundled tweets source: Athena path == local path ------------------------------------------
@pytest.mark.parametrize("overrides, parameters", [
    ((), ["0.8", "NULL", "NULL"]),
    (("source.params.entity=Xbox", "source.params.threshold=0.9"), ["0.9", "'Xbox'", "'Xbox'"]),
])
def test_tweets_manifest_is_byte_identical_to_the_local_backend(backend, moto, overrides, parameters):
    config = replace(settings(*overrides), backend=backend)
    source = config.source
    columns, rows = duckdb_result(source)
    assert rows and [c for c, _ in columns] == ["entity", "source", "tweet_id"]
    queue_athena_results(moto, columns, rows)

    # What Pipeline.run does on the aws backend: open_source, select_query, lines, stream_manifest.
    aws_backend = backend_for(config)
    src = aws_backend.open_source()
    assert isinstance(src, AthenaSource)
    query = select_query(source, aws_backend.dialect)
    out = io.BytesIO()
    written = stream_manifest(aws_backend.lines(src, query, list(query.fields or ())), [out])

    expected = local_manifest(source)
    got = out.getvalue()
    assert got.splitlines() == expected.splitlines()  # line for line first: a readable diff
    assert got == expected and written.objects == len(rows)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    # The SQL went with `?` and the values as ExecutionParameters, never pasted in.
    execution = executed(backend, src.query_ids[-1])
    assert execution["Query"] == query.sql and query.sql.count("?") == 3
    assert execution["ExecutionParameters"] == parameters
    for value in ("0.8", "0.9", "Xbox"):
        assert value not in execution["Query"]
    assert execution["QueryExecutionContext"] == {"Database": "ml_workshop_db"}
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(f"s3://{backend.bucket}/gtrun/athena/")


def test_the_tweets_text_has_the_hard_cases():
    """The parity test above is only as good as its data: quotes, commas and newlines included."""
    _, rows = duckdb_result(settings().source)
    texts = [r[1] for r in rows]
    assert any('"' in t for t in texts) and any("\n" in t for t in texts) and any("," in t for t in texts)


# -- values: NULL vs '', quoting, types ---------------------------------------------------------------
HARD_TEXT = ['plain', '', None, 'say "hi"', '""', '"', 'a,b', 'line\nbreak', 'crlf\r\nend', 'cr\ronly',
             'tab\there', 'ünïcødé 🎉 日本', '\\back\\slash', ',', '\n', 'x' * 5000, 'trailing space ',
             "it's", '{"json": "text"}', '\x01ctl']


def hard_rows() -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(HARD_TEXT):
        rows.append({"source": f"object {i}", "id": i * 10**12 if i % 2 else -i, "note": text,
                     "score": None if i % 5 == 0 else i / 8, "ok": [True, False, None][i % 3],
                     "price": None if i % 4 == 0 else Decimal(f"{i}.{i:02d}0"),
                     "cost": None if i % 3 == 0 else Decimal(f"{i}.{i % 10}0"),
                     "day": dt.date(2026, 1, 1 + i)})
    return rows


HARD_TYPES = {"source": "varchar", "id": "bigint", "note": "varchar", "score": "double", "ok": "boolean",
              "price": "decimal(38,3)", "cost": "decimal(10,2)", "day": "date"}
HARD_SOURCE = SourceConfig(name="hard", database="db", table="t", columns={c: c for c in HARD_TYPES})


Canned = tuple[list[tuple[str, str]], list[tuple[Any, ...]]]


def canned(query: Query, types: dict[str, str], rows: list[dict[str, Any]]) -> Canned:
    """Columns and rows in the order of the query's SELECT list (its fields)."""
    names = list(query.fields or ())
    return [(n.lower(), types[n]) for n in names], [tuple(r[n] for n in names) for r in rows]


def test_null_empty_string_quotes_newlines_and_types_match_the_local_backend(backend, moto, tmp_path):
    rows = sorted(hard_rows(), key=lambda r: r["id"])
    # The same rows as a Parquet file (types, NULL and '' kept) for the local backend.
    con = duckdb.connect()
    con.execute("CREATE TABLE t (source VARCHAR, id BIGINT, note VARCHAR, score DOUBLE, ok BOOLEAN, "
                "price DECIMAL(38,3), cost DECIMAL(10,2), day DATE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [tuple(r.values()) for r in rows])
    parquet = tmp_path / "t.parquet"
    con.execute(f"COPY t TO '{parquet}' (FORMAT PARQUET)")
    con.close()
    expected = local_manifest(replace(HARD_SOURCE, files=[str(parquet)], order_by=["id"]))

    query = select_query(HARD_SOURCE, "athena")
    queue_athena_results(moto, *canned(query, HARD_TYPES, rows))
    got = athena_manifest(athena_source(backend, HARD_SOURCE), query)
    assert got.split(b"\n") == expected.split(b"\n")

    lines = [json.loads(x) for x in got.decode().splitlines()]
    assert len(lines) == len(rows)
    for row, line in zip(rows, lines, strict=True):
        assert line["note"] == row["note"]  # None stays null, '' stays "", quotes/newlines/tabs/unicode exact
        assert type(line["id"]) is int and line["id"] == row["id"]
        assert line["ok"] is row["ok"]
        assert line["price"] == (None if row["price"] is None else float(row["price"]))
        assert line["cost"] == (None if row["cost"] is None else float(row["cost"]))
        assert line["day"] == row["day"].isoformat()
    # Decimals are JSON numbers with exact digits, written as DuckDB writes the same column type.
    assert b'"price":1.010,' in got and b'"price":2.020,' in got
    assert b'"cost":1.1,' in got and b'"cost":10.0,' in got
    assert sum(1 for x in lines if x["note"] is None) == 1 and sum(1 for x in lines if x["note"] == "") == 1


def test_decimals_keep_their_digits(backend, moto):
    columns = [("big", "decimal(38,2)"), ("source", "varchar")]
    queue_athena_results(moto, columns, [(Decimal("12345678901234567890123456.78"), "a"),
                                         (Decimal("0.10"), "b")])
    source = replace(HARD_SOURCE, columns={"source": "source", "big": "big"})
    got = athena_manifest(athena_source(backend, source), select_query(source, "athena"))
    assert got == (b'{"big":12345678901234567890123456.78,"source":"a"}\n'
                   b'{"big":0.10,"source":"b"}\n')
    assert decimal_json("-0.500", 10) == "-0.5" and decimal_json("5", 15) == "5.0"
    assert decimal_json("-0.500", 16) == "-0.500" and decimal_json("05", None) == "5.0"


def test_several_decimals_land_in_their_own_keys(backend, moto):
    """source.sql's column order differs from the line's sorted keys."""
    source = SourceConfig(name="d", database="db", table="t",
                          sql="SELECT b AS zeta, c AS alpha, t AS source FROM db.t ORDER BY t")
    query = select_query(source, "athena")
    assert query.fields == ("zeta", "alpha", "source")
    queue_athena_results(moto, [("zeta", "decimal(38,1)"), ("alpha", "decimal(38,3)"), ("source", "varchar")],
                         [(Decimal("9.5"), Decimal("0.125"), "a"), (None, Decimal("-1.000"), "b")])
    got = athena_manifest(athena_source(backend, source), query)
    assert got == (b'{"alpha":0.125,"source":"a","zeta":9.5}\n'
                   b'{"alpha":-1.000,"source":"b","zeta":null}\n')


def test_json_columns_are_embedded_and_nested_types_name_the_column(backend, moto):
    source = replace(HARD_SOURCE, columns={"source": "source", "meta": "meta"})
    queue_athena_results(moto, [("meta", "json"), ("source", "varchar")], [({"b": [1, 2], "a": "x"}, "s")])
    got = athena_manifest(athena_source(backend, source), select_query(source, "athena"))
    assert json.loads(got) == {"meta": {"a": "x", "b": [1, 2]}, "source": "s"}

    queue_athena_results(moto, [("meta", "array"), ("source", "varchar")], [("[1, 2]", "s")])
    with pytest.raises(ConfigError, match=r"^source\.columns\.meta: column 'meta' is an Athena array") as err:
        athena_manifest(athena_source(backend, source), select_query(source, "athena"))
    assert "CAST(meta AS JSON)" in str(err.value)


def test_an_empty_object_field_is_a_manifest_error_with_its_row(backend, moto):
    source = replace(HARD_SOURCE, columns={"source": "source", "id": "id"})
    queue_athena_results(moto, [("id", "bigint"), ("source", "varchar")], [(1, "ok"), (2, None)])
    with pytest.raises(GtrunError, match=r"^row 2 \(id=2\): source is empty"):
        athena_manifest(athena_source(backend, source), select_query(source, "athena"))


def test_mixed_case_fields_come_back_as_configured(backend, moto):
    """Athena lower-cases column names; the manifest keeps the config's spelling."""
    source = replace(HARD_SOURCE, columns={"source": "note", "tweetId": "id"})
    queue_athena_results(moto, [("source", "varchar"), ("tweetid", "bigint")], [("t", 7)])
    query = select_query(source, "athena")
    assert athena_manifest(athena_source(backend, source), query) == b'{"source":"t","tweetId":7}\n'


def test_a_count_that_is_no_number_is_one_error(backend, moto):
    source = settings().source
    src = athena_source(backend, source)
    for answer in ([("abc",)], [(None,)], []):  # what no count query of Athena's answers: no crash
        queue_athena_results(moto, [("objects", "varchar")], answer)
        with pytest.raises(QueryError, match=r"^source: the count query returned .*, not a count$"):
            src.count(count_query(select_query(source, "athena"), "athena"))


def test_count_rows_and_output_fields(backend, moto):
    source = settings().source
    query = select_query(source, "athena")
    src = athena_source(backend, source)
    queue_athena_results(moto, [("objects", "bigint")], [(406,)])
    assert src.count(count_query(query, "athena")) == 406
    queue_athena_results(moto, [("entity", "varchar"), ("source", "varchar"), ("tweet_id", "bigint")],
                         [("Xbox", "a", 1), (None, "", 2), ("c", "c", 3)])
    names, rows = src.rows(query, 2)
    assert names == ["entity", "source", "tweet_id"]
    assert rows == [{"entity": "Xbox", "source": "a", "tweet_id": 1},
                    {"entity": None, "source": "", "tweet_id": 2}]
    queue_athena_results(moto, [("entity", "varchar"), ("source", "varchar")], [])
    assert src.output_fields(query) == ["entity", "source"]
    assert "LIMIT 0" in executed(backend, src.query_ids[-1])["Query"]
    assert len(src.query_ids) == 3
    src.close()


def test_a_result_that_does_not_match_its_columns_is_a_query_error(backend, moto):
    source = replace(HARD_SOURCE, columns={"source": "source"})
    src = athena_source(backend, source)
    src.start(select_query(source, "athena"))  # nothing queued: moto writes no result file
    with pytest.raises(QueryError, match="does not exist"):
        athena_manifest(src, select_query(source, "athena"))


# -- the result CSV reader ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, records", [
    ('"a","b"\n"1",""\n', [["a", "b"], ["1", ""]]),
    ('"a","b"\n"1",\n', [["a", "b"], ["1", None]]),
    ('"a","b"\n,"2"\n', [["a", "b"], [None, "2"]]),
    ('"a","b"\n,\n', [["a", "b"], [None, None]]),
    ('"a","b"\n"",""\n', [["a", "b"], ["", ""]]),
    ('"a"\n\n""\n"x"\n', [["a"], [None], [""], ["x"]]),  # one column: NULL is an empty line
    ('"a","b"\n"say ""hi""",",,"\n', [["a", "b"], ['say "hi"', ",,"]]),
    ('"a","b"\n"l1\nl2\r\nl3\r",\n', [["a", "b"], ["l1\nl2\r\nl3\r", None]]),
    ('"a","b","c"\n,"""",\n', [["a", "b", "c"], [None, '"', None]]),
    ('"a","b"\r\n"1",\r\n', [["a", "b"], ["1", None]]),
])
def test_result_records_tell_null_from_empty_string(text, records):
    assert list(result_records(io.StringIO(text, newline=""))) == records


@pytest.mark.parametrize("text", ['"a"\n"unclosed\n', '"a","b"\n"1"x,"2"\n'])
def test_malformed_result_csv_is_a_query_error(text):
    with pytest.raises(QueryError, match=r"^Athena result line \d+: malformed CSV"):
        list(result_records(io.StringIO(text, newline="")))


# -- parameters ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, literal", [
    ("Xbox", "'Xbox'"), ("it's", "'it''s'"), ("", "''"), ("'; DROP TABLE t; --", "'''; DROP TABLE t; --'"),
    ("ünï", "'ünï'"), (0, "0"), (-42, "-42"), (10**20, "100000000000000000000"), (0.8, "0.8"),
    (-1.5, "-1.5"), (1e-05, "1e-05"), (True, "true"), (False, "false"), (None, "NULL"),
    (Decimal("1.50"), "1.50"), (dt.date(2026, 1, 2), "DATE '2026-01-02'"),
    (dt.datetime(2026, 1, 2, 3, 4, 5), "TIMESTAMP '2026-01-02 03:04:05'"),
])
def test_execution_parameters_are_sql_literals(value, literal):
    assert execution_parameters([value], ["p"]) == [literal]
    assert parameter_literal(value, "k") == literal


@pytest.mark.parametrize("value, problem", [
    (float("nan"), "has no SQL literal"), (float("inf"), "has no SQL literal"),
    (["a", "b"], "cannot be a query parameter"), ({"a": 1}, "cannot be a query parameter"),
    ("x" * 1023, "at most 1024"),
])
def test_bad_parameters_name_their_key(value, problem):
    with pytest.raises(ConfigError, match=rf"^source\.params\.entity: .*{problem}"):
        execution_parameters(["ok", value], ["threshold", "entity"])


# -- query states ----------------------------------------------------------------------------------------
def failing(state: str, reason: str, message: str) -> Any:
    def rewrite(method: str, path: str, headers: Any, body: bytes) -> bytes | None:
        if not target(headers).endswith("GetQueryExecution"):
            return None
        answer = json.loads(body)
        answer["QueryExecution"]["Status"].update(
            State=state, StateChangeReason=reason,
            AthenaError={"ErrorCategory": 2, "ErrorType": 1006, "Retryable": False, "ErrorMessage": message})
        return json.dumps(answer).encode()
    return rewrite


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_a_failed_query_raises_one_query_error_with_athenas_reason(moto, bucket, state):
    """moto's executions only ever succeed; the proxy rewrites GetQueryExecution's answer."""
    reason = "COLUMN_NOT_FOUND: line 1:8: Column 'nope' cannot be resolved"
    with FaultProxy(moto, rewrite=failing(state, reason, "Column 'nope' cannot be resolved or "
                                          "requester is not authorized")) as proxy:
        backend = make_backend(moto, bucket, athena=proxy.url)
        source = replace(HARD_SOURCE, columns={"source": "nope"})
        src = athena_source(backend, source)
        with pytest.raises(QueryError) as err:
            athena_manifest(src, select_query(source, "athena"))
    message = str(err.value)
    assert message.startswith(f"source: Athena query {src.query_ids[0]} {state.lower()}: {reason}")
    assert "requester is not authorized" in message and "error type 1006" in message
    assert not isinstance(err.value.__cause__, GtrunError) and err.value.__context__ is None
    assert len(proxy.calls("GetQueryExecution")) == 1 and not proxy.calls("StopQueryExecution")


def test_a_query_that_runs_too_long_is_stopped(moto, bucket):
    def running(method: str, path: str, headers: Any, body: bytes) -> bytes | None:
        if target(headers).endswith("GetQueryExecution"):
            answer = json.loads(body)
            answer["QueryExecution"]["Status"]["State"] = "RUNNING"
            return json.dumps(answer).encode()
        return None

    with FaultProxy(moto, rewrite=running) as proxy:
        backend = make_backend(moto, bucket, athena=proxy.url, timeout_s=0.3)
        source = replace(HARD_SOURCE, columns={"source": "source"})
        src = athena_source(backend, source)
        with pytest.raises(QueryError, match=r"is still RUNNING after 0\.3 s \(backend\.athena\.timeout_s\)"):
            athena_manifest(src, select_query(source, "athena"))
        polls = len(proxy.calls("GetQueryExecution"))
        assert 2 <= polls <= 10  # waits of 0.01 s doubling: 0.01, 0.02, 0.04, 0.08, 0.16 ...
        assert len(proxy.calls("StopQueryExecution")) == 1


def test_polls_until_moto_moves_the_query_through_queued_and_running(moto, bucket):
    set_athena_transition(moto, {"progression": "manual", "times": 2})
    try:
        with FaultProxy(moto) as proxy:
            backend = make_backend(moto, bucket, athena=proxy.url)
            source = replace(HARD_SOURCE, columns={"source": "source"})
            queue_athena_results(moto, [("source", "varchar")], [("a",), ("b",)])
            got = athena_manifest(athena_source(backend, source), select_query(source, "athena"))
        assert got == b'{"source":"a"}\n{"source":"b"}\n'
        assert len(proxy.calls("GetQueryExecution")) >= 3
    finally:
        set_athena_transition(moto, None)


def test_a_throttled_start_query_execution_is_retried(moto, bucket):
    def throttle_once(method: str, path: str, headers: Any, attempt: int) -> str | None:
        return "throttle" if target(headers).endswith("StartQueryExecution") and attempt == 1 else None

    with FaultProxy(moto, throttle_once) as proxy:
        backend = make_backend(moto, bucket, athena=proxy.url)
        source = replace(HARD_SOURCE, columns={"source": "source"})
        queue_athena_results(moto, [("source", "varchar")], [("a",)])
        got = athena_manifest(athena_source(backend, source), select_query(source, "athena"))
    assert got == b'{"source":"a"}\n'
    assert [fault for *_, fault in proxy.calls("StartQueryExecution")] == ["throttle", None]


def test_throttled_beyond_max_attempts_is_a_query_error(moto, bucket):
    def always(method: str, path: str, headers: Any, attempt: int) -> str | None:
        return "throttle" if target(headers).endswith("StartQueryExecution") else None

    with FaultProxy(moto, always) as proxy:
        backend = make_backend(moto, bucket, athena=proxy.url, max_attempts=2)
        source = replace(HARD_SOURCE, columns={"source": "source"})
        with pytest.raises(QueryError, match=r"did not start the query .*ThrottlingException: Rate exceeded"):
            athena_source(backend, source).start(select_query(source, "athena"))
    assert len(proxy.calls("StartQueryExecution")) == 2


# -- S3Store -------------------------------------------------------------------------------------------------
def s3_store(backend: BackendConfig, **kwargs: Any) -> S3Store:
    return S3Store(aws.client(backend, "s3"), **kwargs)


def pending_uploads(backend: BackendConfig) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = aws.client(backend, "s3").list_multipart_uploads(
        Bucket=backend.bucket).get("Uploads", [])
    return uploads


def test_s3_store_round_trip(backend, tmp_path):
    store = s3_store(backend)
    uri = f"s3://{backend.bucket}/a/b.json"
    store.put_bytes(uri, b"{}")
    assert store.get_bytes(uri) == b"{}" and store.exists(uri)
    assert not store.exists(f"s3://{backend.bucket}/a/c.json")
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1000))
    store.put_file(path, f"s3://{backend.bucket}/f.bin")
    with store.open_read(f"s3://{backend.bucket}/f.bin") as src:
        assert src.read() == path.read_bytes()
    with store.open_write(f"s3://{backend.bucket}/empty"):
        pass
    assert store.get_bytes(f"s3://{backend.bucket}/empty") == b""
    with pytest.raises(StoreError, match=rf"^s3://{backend.bucket}/nope: no such object$"):
        store.get_bytes(f"s3://{backend.bucket}/nope")
    with pytest.raises(StoreError, match=r"^s3://no-such-bucket-gtrun/k: .*NoSuchBucket"):
        store.put_bytes("s3://no-such-bucket-gtrun/k", b"x")
    with pytest.raises(StoreError, match="is not an s3://bucket/key URI"):
        store.put_bytes("/etc/passwd", b"x")


def test_an_aws_runs_images_are_copied_from_its_s3(backend, tmp_path):
    from runner.collect.collect import ImageCopier
    from runner.io.store import LocalStore

    store = s3_store(backend)
    image = os.urandom(3000)
    store.put_bytes(f"s3://{backend.bucket}/imgs/a.jpg", image)
    copy = ImageCopier(store)  # what collect gives coco and yolo for a run on the aws backend
    copy(f"s3://{backend.bucket}/imgs/a.jpg", tmp_path / "a.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == image
    with pytest.raises(StoreError, match=rf"^s3://{backend.bucket}/imgs/b\.jpg: no such object$"):
        copy(f"s3://{backend.bucket}/imgs/b.jpg", tmp_path / "b.jpg")
    assert not (tmp_path / "b.jpg").exists()
    with pytest.raises(StoreError, match=rf"^s3://{backend.bucket}/imgs/a\.jpg: cannot write the image to a\.jpg "
                       r"\(File exists\)$"):  # a copy never overwrites a file of the dataset
        copy(f"s3://{backend.bucket}/imgs/a.jpg", tmp_path / "a.jpg")
    assert (tmp_path / "a.jpg").read_bytes() == image
    # two aws runs merged: each has a client of its own, to one S3 endpoint: one storage, nothing read
    # again to compare an image both have (a different file there would be named if it were read)
    merged = ImageCopier(store, {"job-a": store, "job-b": s3_store(backend)})
    (tmp_path / "other.jpg").write_bytes(b"not the image")
    merged.check(f"s3://{backend.bucket}/imgs/a.jpg", tmp_path / "other.jpg", "job-b", "job-a")
    elsewhere = LocalStore(tmp_path / "storage")
    elsewhere.put_bytes(f"s3://{backend.bucket}/imgs/a.jpg", b"a local image")
    local = ImageCopier(store, {"job-a": store, "job-b": elsewhere})  # another storage: read, compared
    with pytest.raises(StoreError, match="job-b and job-a keep different images under this URI"):
        local.check(f"s3://{backend.bucket}/imgs/a.jpg", tmp_path / "other.jpg", "job-b", "job-a")


@pytest.mark.parametrize("first", ["x", "x/same.jpg"])
def test_an_image_whose_name_is_anothers_folder_is_one_error(backend, tmp_path, first):
    """S3 holds imgs/x and imgs/x/same.jpg; a folder holds one or the other: coco names the object."""
    from runner.collect.collect import ImageCopier
    from runner.collect.records import Box, LabeledObject, Status
    from runner.collect.transforms import write_coco
    from runner.schema import TaskType, TransformsConfig

    store = s3_store(backend)
    refs = [f"s3://{backend.bucket}/imgs/{first}", f"s3://{backend.bucket}/imgs/{({'x', 'x/same.jpg'} - {first}).pop()}"]
    for ref in refs:
        store.put_bytes(ref, b"image")
    objects = [LabeledObject(line_no=i + 1, object_id=str(i), inputs={"source-ref": ref}, attribute="boxes",
                             task_type=TaskType.bounding_box, status=Status.labeled, boxes=(Box("a", 1, 1, 2, 2),),
                             image_size=(10, 10, 3)) for i, ref in enumerate(refs)]
    with pytest.raises(StoreError, match=r"^coco: object '[01]': s3://.*: cannot (write the image to x|make the folder "
                       r"of same\.jpg) \(.*\)\n  hint: transforms\.steps\.coco\.images=false"):
        write_coco(iter(objects), tmp_path / "ds", labels=["a"], options={}, settings=TransformsConfig(),
                   images=ImageCopier(store))
    assert list((tmp_path / "ds").iterdir()) == []


def test_small_objects_are_one_put_and_large_ones_multipart(moto, bucket):
    with FaultProxy(moto) as proxy:
        backend = make_backend(moto, bucket, s3=proxy.url)
        store = s3_store(backend, part_size=5 * MiB)
        store.put_bytes(f"s3://{bucket}/small", b"x" * 1000)
        assert [(m, p) for m, p, *_ in proxy.log] == [("PUT", f"/{bucket}/small")]
        data = os.urandom(5 * MiB) + b"tail" * 1000
        with store.open_write(f"s3://{bucket}/large") as out:
            for i in range(0, len(data), 1 << 16):
                out.write(memoryview(data)[i:i + (1 << 16)])  # what stream_manifest writes
        assert store.get_bytes(f"s3://{bucket}/large") == data
    paths = [p for m, p, *_ in proxy.log if m in ("PUT", "POST")]
    assert sum("uploads" in p and "uploadId" not in p for p in paths) == 1  # CreateMultipartUpload
    assert sum("partNumber=" in p for p in paths) == 2
    assert pending_uploads(make_backend(moto, bucket)) == []


@pytest.mark.parametrize("fault", ["500", "503-slowdown", "drop-response"])
def test_an_s3_put_that_fails_once_is_retried(moto, bucket, fault):
    def once(method: str, path: str, headers: Any, attempt: int) -> str | None:
        return fault if method == "PUT" and attempt == 1 else None

    with FaultProxy(moto, once) as proxy:
        backend = make_backend(moto, bucket, s3=proxy.url)
        s3_store(backend).put_bytes(f"s3://{bucket}/m.jsonl", b'{"source":"x"}\n')
    assert [f for m, _, _, f in proxy.log if m == "PUT"] == [fault, None]
    assert s3_store(make_backend(moto, bucket)).get_bytes(f"s3://{bucket}/m.jsonl") == b'{"source":"x"}\n'


def test_a_multipart_upload_whose_parts_keep_failing_leaves_nothing(moto, bucket):
    def parts_fail(method: str, path: str, headers: Any, attempt: int) -> str | None:
        return "500" if method == "PUT" and "partNumber=" in path else None

    with FaultProxy(moto, parts_fail) as proxy:
        backend = make_backend(moto, bucket, s3=proxy.url, max_attempts=2)
        store = s3_store(backend, part_size=5 * MiB)
        uri = f"s3://{bucket}/manifest.jsonl"
        with pytest.raises(StoreError, match=rf"^{uri}: cannot write: InternalError"):
            with store.open_write(uri) as out:
                out.write(b"x" * (6 * MiB))
    direct = make_backend(moto, bucket)
    assert not s3_store(direct).exists(uri)
    assert pending_uploads(direct) == []
    assert any(m == "DELETE" and "uploadId=" in p for m, p, *_ in proxy.log)  # AbortMultipartUpload


def test_an_error_inside_the_with_aborts_the_upload(backend):
    store = s3_store(backend, part_size=5 * MiB)
    uri = f"s3://{backend.bucket}/m.jsonl"
    store.put_bytes(uri, b"complete")
    for size in (100, 6 * MiB):  # a pending single PUT, and a multipart upload with a part sent
        with pytest.raises(RuntimeError, match="interrupted"):
            with store.open_write(uri) as out:
                out.write(b"y" * size)
                raise RuntimeError("interrupted")
        assert store.get_bytes(uri) == b"complete"  # the previous object survives
        assert pending_uploads(backend) == []


# -- credentials never show --------------------------------------------------------------------------------
def test_credentials_never_appear_in_error_messages(moto, bucket, monkeypatch):
    secrets = {"AWS_ACCESS_KEY_ID": "AKIAGTRUNSECRET00001",
               "AWS_SECRET_ACCESS_KEY": "gtrun/Secret+Key/abc123",
               "AWS_SESSION_TOKEN": "gtrun-session-token-xyz"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    errors: list[BaseException] = []
    backend = make_backend(moto, bucket)
    store = s3_store(backend)
    source = replace(HARD_SOURCE, columns={"source": "source"})
    attempts = [
        lambda: store.get_bytes(f"s3://{bucket}/missing"),
        lambda: store.put_bytes("s3://no-such-bucket-gtrun/k", b"x"),
        lambda: s3_store(make_backend("http://127.0.0.1:9", bucket, max_attempts=1)).get_bytes(f"s3://{bucket}/k"),
        lambda: athena_source(make_backend("http://127.0.0.1:9", bucket, max_attempts=1), source).count(
            select_query(source, "athena")),
        lambda: athena_source(replace(backend, athena=AthenaConfig(workgroup="nope")), source).count(
            select_query(source, "athena")),
    ]
    with FaultProxy(moto, rewrite=failing("FAILED", "boom", "boom")) as proxy:
        attempts.append(lambda: athena_source(make_backend(moto, bucket, athena=proxy.url), source).count(
            select_query(source, "athena")))
        for attempt in attempts:
            with pytest.raises(GtrunError) as err:
                attempt()
            errors.append(err.value)
    assert len(errors) == len(attempts)
    for exc in errors:
        chain: list[BaseException] = []
        e: BaseException | None = exc
        while e is not None and len(chain) < 10:
            chain.append(e)
            e = e.__cause__ or e.__context__
        text = "\n".join(f"{x!s} {x!r}" for x in chain)
        for value in secrets.values():
            assert value not in text, f"{value!r} shows in {text!r}"


# -- aws.py ------------------------------------------------------------------------------------------------
def test_clients_use_the_endpoint_standard_retries_and_path_style(aws_env):  # noqa: F811
    backend = BackendConfig(kind=BackendKind.aws, region="eu-west-1", max_attempts=7,
                            endpoints=EndpointsConfig(s3="http://127.0.0.1:1"))
    s3 = aws.client(backend, "s3")
    assert s3.meta.endpoint_url == "http://127.0.0.1:1" and s3.meta.region_name == "eu-west-1"
    assert s3.meta.config.retries == {"mode": "standard", "total_max_attempts": 7}  # 7 in all, 6 retries
    assert s3.meta.config.s3["addressing_style"] == "path"
    athena = aws.client(backend, "athena")
    assert athena.meta.endpoint_url == "https://athena.eu-west-1.amazonaws.com"
    with pytest.raises(ValueError, match="unknown service"):
        aws.client(backend, "ec2")  # type: ignore[arg-type]


@pytest.mark.real_aws
@pytest.mark.skipif(not os.environ.get("GTRUN_REAL_AWS") or not os.environ.get("GTRUN_ATHENA_OUTPUT"),
                    reason="needs a real AWS account: GTRUN_REAL_AWS=1 GTRUN_ATHENA_OUTPUT=s3://bucket/prefix/")
def test_real_athena_takes_null_as_an_execution_parameter():
    """Opt-in check of the NULL finding against real Athena (standard credential chain)."""
    backend = BackendConfig(kind=BackendKind.aws, region=os.environ.get("AWS_REGION", "us-east-1"),
                            athena=AthenaConfig(output_location=os.environ["GTRUN_ATHENA_OUTPUT"]))
    source = SourceConfig(name="null", database="default", table="t",
                          sql="SELECT x AS source FROM (VALUES 'a') AS v(x) WHERE :p IS NULL OR x = :p",
                          params={"p": None})
    src = athena_source(backend, source)
    assert athena_manifest(src, select_query(source, "athena")) == b'{"source":"a"}\n'
