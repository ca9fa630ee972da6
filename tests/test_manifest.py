"""Manifest lines: the Python builder and DuckDB's JSON path give the same bytes."""

import hashlib
import json

import pytest

from runner.build.manifest import json_lines_query, manifest_line
from runner.build.sql import select_query
from runner.errors import ConfigError, ManifestError, QueryError
from runner.io.query import START_OVER, DuckDBSource
from runner.pipeline import stream_manifest
from runner.schema import DuckDBConfig, SourceConfig

AWKWARD = [
    (1, "plain", 0.5),
    (2, 'quote " comma , tab \t newline \n end', 0.1),
    (3, "unicode é € 😀 and <script>alert(1)</script> &amp;", 0.2),
    (4, "control \x01 char", 0.3),
]


@pytest.fixture
def csv_file(tmp_path):
    import csv
    path = tmp_path / "t.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "score"])
        w.writerows(AWKWARD)
    return path


def source(path, **over):
    base = dict(name="t", database="d", table="t", columns={"source": "text", "id": "id", "score": "score"},
                order_by=["id"], files=[str(path)])
    base.update(over)
    return SourceConfig(**base)


def stream(src_cfg):
    src = DuckDBSource.open(src_cfg, DuckDBConfig())
    q = select_query(src_cfg, "duckdb")
    try:
        data = b"".join(chunk for chunk, _ in src.stream_lines(json_lines_query(q, q.fields), batch_rows=2))
        names, rows = src.rows(q, 100)
    finally:
        src.close()
    return data, rows


def test_duckdb_lines_equal_python_lines(csv_file):
    data, rows = stream(source(csv_file))
    python = "".join(manifest_line(r, row_number=i) + "\n" for i, r in enumerate(rows, 1)).encode()
    assert data == python
    lines = data.decode().splitlines()
    assert len(lines) == len(AWKWARD)  # a newline in a value never splits a line
    assert [json.loads(x)["source"] for x in lines] == [r[1] for r in AWKWARD]
    assert all(isinstance(json.loads(x)["id"], int) for x in lines)  # an id stays an int


def test_empty_source_value_is_an_error_naming_the_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,a\n2,\n3,c\n")
    hint = "\n  hint: leave the row out of the query (source.where, or source.sql when it is set), or fix it in the data"
    with pytest.raises(ManifestError) as err:
        stream(source(path, columns={"source": "text", "id": "id"}))
    assert str(err.value) == "row 2 (id=2): source.columns.source: the data object is empty" + hint
    with pytest.raises(ManifestError) as err:
        stream(source(path, columns={"source-ref": "text", "id": "id"}))
    assert str(err.value) == "row 1 (id=1): source.columns.source-ref: the data object is empty or not an s3:// URI" + hint
    with pytest.raises(ManifestError) as err:  # a row without an id field: its position alone
        stream(source(path, columns={"source": "text"}))
    assert str(err.value) == "row 2: source.columns.source: the data object is empty" + hint
    with pytest.raises(ManifestError) as err:  # a text id, and a NULL one
        stream(source(path, columns={"source": "text", "item_id": "'k' || id", "null_id": "NULL"}))
    assert str(err.value).startswith("row 2 (item_id='k2'): ")
    with pytest.raises(ManifestError) as err:
        stream(source(path, columns={"source": "text", "null_id": "NULL"}))
    assert str(err.value).startswith("row 2 (null_id=None): ")
    with pytest.raises(ManifestError, match=r"^row 5 \(id=1\): source is empty"):
        manifest_line({"source": "", "id": 1}, row_number=5)


def test_source_ref_must_be_an_s3_uri():
    assert json.loads(manifest_line({"source-ref": "s3://b/k.png"})) == {"source-ref": "s3://b/k.png"}
    with pytest.raises(ManifestError, match="not an s3:// URI"):
        manifest_line({"source-ref": "/etc/passwd"})


def test_missing_column_names_the_config_key(csv_file):
    with pytest.raises(ConfigError, match=r"^source\.columns\.entity: column 'entity' is not in d\.t") as err:
        stream(source(csv_file, columns={"source": "text", "entity": "entity"}))
    assert "id, text, score" in str(err.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^source\.files\[0\]: no file matches"):
        DuckDBSource.open(source(tmp_path / "nope.csv"), DuckDBConfig())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": \n')
    with pytest.raises(QueryError, match=str(bad)):
        stream(source(bad, columns={"source": "text", "id": "id"}))


def test_lines_over_ground_truths_limit_are_refused():
    with pytest.raises(ManifestError, match="Ground Truth allows 100000"):
        manifest_line({"source": "x" * 100_001})


def test_streamed_lines_over_the_limit_name_the_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,a\n2," + "é" * 100_001 + "\n")
    with pytest.raises(ManifestError, match=r"^row 2 \(id=2\): the manifest line has 100\d+ characters"):
        stream(source(path, columns={"source": "text", "id": "id"}))


def test_the_limit_counts_characters_not_bytes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,a\n2," + "é" * 60_000 + "\n")  # 120,000 bytes, 60,000 characters
    lines = stream(source(path, columns={"source": "text", "id": "id"}))[0].splitlines()
    assert [json.loads(x)["id"] for x in lines] == [1, 2] and len(lines[1].decode()) < 100_000 < len(lines[1])


def test_nan_and_infinity_are_refused_naming_the_row_and_field(tmp_path):
    # JSON has no NaN or Infinity: a line holding one is not JSON to Ground Truth (or to collect)
    path = tmp_path / "t.csv"
    path.write_text('id,text,score,note\n1,a,0.5,NaN\n2,b,nan,"Infinity, NaN"\n3,c,inf,x\n')
    with pytest.raises(ManifestError) as err:
        stream(source(path, columns={"source": "text", "id": "id", "score": "score", "note": "note"}))
    assert str(err.value).startswith("row 2 (id=2): score: NaN or Infinity, which JSON cannot hold: ")
    with pytest.raises(ManifestError) as err:  # in a list, and in two fields
        stream(source(path, columns={"source": "text", "id": "id", "s": "[score]", "t": "-score"}))
    assert str(err.value).startswith("row 2 (id=2): s, t: NaN or Infinity, which JSON cannot hold: ")
    with pytest.raises(ManifestError, match=r"^row 4 \(id=3\): score: NaN or Infinity"):
        manifest_line({"source": "c", "id": 3, "score": float("inf")}, row_number=4)
    with pytest.raises(ManifestError, match=r"^row 1: s: NaN or Infinity"):
        manifest_line({"source": "c", "s": {"x": [float("nan")]}}, row_number=1)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_value_of_another_type_after_duckdbs_sample_is_read(tmp_path, suffix, caplog):
    """DuckDB types a file's columns from its first 20,480 rows: a later "n/a" in a column of numbers
    stopped the query, and the source has no setting to change it. The file is typed from every row."""
    rows = [(i, f"text {i}", "n/a" if i == 25_000 else i % 5) for i in range(1, 25_001)]
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_text("id,text,stars\n" + "".join(f"{i},{t},{s}\n" for i, t, s in rows))
    else:
        path.write_text("".join(json.dumps({"id": i, "text": t, "stars": s}) + "\n" for i, t, s in rows))
    data, _ = stream(source(path, columns={"source": "text", "id": "id", "stars": "stars"}))
    lines = data.decode().splitlines()
    assert len(lines) == 25_000 and json.loads(lines[-1])["stars"] == "n/a"
    # a CSV column is text now; a JSON one keeps each value as the line has it
    assert json.loads(lines[0]) == {"id": 1, "source": "text 1", "stars": "1" if suffix == ".csv" else 1}
    assert f"{path}: reading it again, its columns typed from every row" in caplog.text


@pytest.mark.parametrize("table", ["t", "d.other", "x.t"])
def test_source_sql_reading_another_table_names_the_one_there_is(csv_file, table):
    sql = f"SELECT text AS source FROM {table} ORDER BY id"
    with pytest.raises(ConfigError) as err:
        stream(source(csv_file, columns={}, order_by=[], sql=sql))
    assert str(err.value).startswith("source.sql: Catalog Error: Table with name "), err.value
    assert str(err.value).endswith("hint: source.files are the table d.t (source.database, source.table): "
                                   "write FROM d.t"), err.value


@pytest.fixture(scope="module")
def sort_csv(tmp_path_factory):
    """300,000 rows (~35 MB): sorting them under a 40 MB limit fits DuckDB on 1 thread, not on 2."""
    import duckdb

    path = tmp_path_factory.mktemp("sort") / "rows.csv"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT i AS id, repeat('x', 100) || i AS text, hash(i) % 1000 AS score "
                f"FROM range(300000) t(i)) TO '{path}'")
    con.close()
    return path


def stream_sorted(path, settings):
    cfg = source(path, order_by=["score", "id"])
    src = DuckDBSource.open(cfg, settings)
    q = select_query(cfg, "duckdb")
    try:
        chunks = list(src.stream_lines(json_lines_query(q, q.fields)))
        return b"".join(c for c, _ in chunks), sum(n for _, n in chunks)
    finally:
        src.close()


def test_a_sort_out_of_memory_on_several_threads_runs_again_on_one(sort_csv, caplog):
    data, rows = stream_sorted(sort_csv, DuckDBConfig(memory_limit="40MB", threads=2))
    assert "running the query again on 1 thread" in caplog.text
    assert rows == 300_000 and data.count(b"\n") == 300_000
    keys = [(o["score"], o["id"]) for o in map(json.loads, data.splitlines())]
    assert keys == sorted(keys)


def test_out_of_memory_on_one_thread_names_the_memory_limit(sort_csv):
    with pytest.raises(QueryError, match=r"ran out of memory under backend\.duckdb\.memory_limit=16MB"):
        stream_sorted(sort_csv, DuckDBConfig(memory_limit="16MB", threads=1))


def test_a_query_run_again_starts_the_manifest_over(tmp_path):
    """DuckDB out of memory after some rows on several threads: stream_lines yields START_OVER,
    then every line again (a 20M-row sort under the default limit does this)."""
    counted = []
    with open(tmp_path / "a", "wb") as a, open(tmp_path / "b", "wb") as b:
        written = stream_manifest([(b'{"source":"x"}\n{"source":"y"}\n', 2), START_OVER,
                                   (b'{"source":"x"}\n', 1), (b'{"source":"y"}\n{"source":"z"}\n', 2)],
                                  [a, b], counted.append)
    expected = b'{"source":"x"}\n{"source":"y"}\n{"source":"z"}\n'
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == expected
    assert written.objects == 3 == sum(counted) and written.first_line == {"source": "x"}
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
