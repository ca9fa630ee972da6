"""The SQL builder: one SELECT from the source group, params bound in order, never pasted."""

import duckdb
import pytest

from runner.build.sql import count_query, referenced_columns, render_sql, select_query
from runner.errors import ConfigError
from runner.schema import SourceConfig


def tweets(**over):
    base = dict(name="tweets", database="db", table="preds",
                columns={"source": "tweet_text", "tweet_id": "tweet_id", "entity": "entity"},
                where="score < :threshold AND (:entity IS NULL OR entity = :entity)",
                params={"threshold": 0.8, "entity": None}, order_by=["score", "tweet_id"])
    base.update(over)
    return SourceConfig(**base)


@pytest.fixture
def db():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA db; CREATE TABLE db.preds (tweet_id BIGINT, entity TEXT, tweet_text TEXT, score DOUBLE)")
    con.execute("INSERT INTO db.preds VALUES (1,'Xbox','a',0.5),(2,'NBA2K','b',0.9),(3,'Xbox','c',0.1),"
                "(4,'NBA2K','it''s; DROP TABLE x',0.2)")
    yield con
    con.close()


def run(con, q):
    return con.execute(q.sql, list(q.params)).fetchall()


def test_columns_become_sorted_aliases_and_params_bind_in_order(db):
    q = select_query(tweets(), "duckdb")
    assert q.fields == ("entity", "source", "tweet_id")
    assert q.param_names == ("threshold", "entity", "entity")
    assert "?" in q.sql and ":threshold" not in q.sql and "0.8" not in q.sql
    assert run(db, q) == [("Xbox", "c", 3), ("NBA2K", "it's; DROP TABLE x", 4), ("Xbox", "a", 1)]


def test_optional_param_filters_when_set(db):
    q = select_query(tweets(params={"threshold": 0.8, "entity": "NBA2K"}), "duckdb")
    assert run(db, q) == [("NBA2K", "it's; DROP TABLE x", 4)]


def test_param_value_is_never_pasted_into_sql(db):
    evil = "x' OR '1'='1"
    q = select_query(tweets(params={"threshold": 0.8, "entity": evil}), "duckdb")
    assert evil not in q.sql
    assert run(db, q) == []


def test_placeholder_order_follows_the_text_not_the_tree(db):
    src = tweets(columns={"source": ":prefix || tweet_text", "n": "tweet_id"},
                 where="entity = :entity AND score < :threshold",
                 params={"prefix": ">", "entity": "Xbox", "threshold": 0.3}, order_by=[])
    q = select_query(src, "duckdb")
    assert q.param_names == ("prefix", "entity", "threshold")
    assert run(db, q) == [(3, ">c")]


def test_sql_mode_one_select_with_params(db):
    src = tweets(sql="SELECT tweet_text AS source, tweet_id FROM db.preds WHERE score > :t ORDER BY tweet_id",
                 params={"t": 0.4})
    q = select_query(src, "duckdb")
    assert q.fields == ("source", "tweet_id")
    assert run(db, q) == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("sql, problem", [
    ("DELETE FROM db.preds", "must be a SELECT, not DELETE"),
    ("SELECT 1 AS source; SELECT 2 AS source", "must be one SELECT, found 2"),
    ("SELEC tweet_text FROM db.preds", "does not parse"),
    ("DROP TABLE db.preds", "must be a SELECT"),
])
def test_sql_that_is_not_one_select_is_refused(sql, problem):
    with pytest.raises(ConfigError, match=r"^source\.sql: ") as err:
        select_query(tweets(sql=sql), "duckdb")
    assert problem in str(err.value)


def test_unparsable_column_expression_names_its_key():
    with pytest.raises(ConfigError, match=r"^source\.columns\.source: cannot parse"):
        select_query(tweets(columns={"source": "tweet_text +* ("}), "duckdb")


@pytest.mark.parametrize(("over", "key"), [
    ({"columns": {"source": "Tweet Text"}}, "source.columns.source"),
    ({"order_by": ["Tweet Id"]}, "source.order_by[0]"),
])
def test_a_column_name_with_a_space_is_not_read_as_an_alias(db, over, key):
    # sqlglot reads `Tweet Text` as `Tweet AS Text`: the query then fails with a bare parser error
    with pytest.raises(ConfigError) as err:
        select_query(tweets(**over), "duckdb")
    assert str(err.value).startswith(f"{key}: ") and " reads as a column and an alias" in str(err.value)
    assert "hint: quote a column name that has a space" in str(err.value)
    with pytest.raises(ConfigError, match=r"hint: the key names it: write 'body' alone$"):
        select_query(tweets(columns={"source": "body AS text"}), "duckdb")
    db.execute('CREATE TABLE db.spaced ("Tweet Text" TEXT, "Tweet Id" INT); INSERT INTO db.spaced VALUES (\'a\', 1)')
    quoted = select_query(tweets(table="spaced", columns={"source": '"Tweet Text"'}, order_by=['"Tweet Id"'],
                                 where=None, params={}), "duckdb")
    assert run(db, quoted) == [("a",)]


def test_unknown_parameter_names_the_key():
    with pytest.raises(ConfigError, match=r"^source\.where: uses parameter :limitt"):
        select_query(tweets(where="score < :limitt"), "duckdb")


@pytest.mark.parametrize("columns, problem", [
    ({"text": "tweet_text"}, "neither source nor source-ref"),
    ({"source": "a", "source-ref": "b"}, "both source and source-ref"),
    ({"source": "a", "$bad": "b"}, "starts with '$'"),
])
def test_manifest_fields_follow_ground_truth_rules(columns, problem):
    with pytest.raises(ConfigError, match=r"^source\.columns: ") as err:
        select_query(tweets(columns=columns, where=None, params={}), "duckdb")
    assert problem in str(err.value)


def test_athena_dialect_and_count(db):
    q = select_query(tweets(), "athena")
    assert q.sql.startswith('SELECT entity AS "entity"')
    c = count_query(select_query(tweets(), "duckdb"), "duckdb")
    assert run(db, c) == [(3,)]


def test_referenced_columns_map_keys_to_columns():
    refs = referenced_columns(tweets())
    assert refs["source.columns.source"] == {"tweet_text"}
    assert refs["source.where"] == {"score", "entity"}


def test_render_sql_records_params():
    text = render_sql(select_query(tweets(), "duckdb"))
    assert text.splitlines()[1:] == ["-- ? threshold = 0.8", "-- ? entity = None", "-- ? entity = None"]
