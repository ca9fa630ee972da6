"""The sample-data generator: deterministic, committed output current, readable by DuckDB."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from omegaconf import OmegaConf
from PIL import Image

from runner import samples

HOME = Path(__file__).resolve().parent.parent
DATA = samples.DATA_DIR
CSV_PATH = DATA / samples.TWEETS_CSV
JSONL_PATH = DATA / samples.RECEIPTS_JSONL
IMAGES = DATA / samples.RECEIPT_IMAGES


def generated_files(root: Path) -> dict[str, Path]:
    """Relative path -> file, for everything the generator writes under root."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "README.md"}


def receipts() -> list[dict[str, Any]]:
    return [json.loads(line) for line in JSONL_PATH.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    samples.main(["--out", str(out)])
    return out


@pytest.fixture
def db():
    con = duckdb.connect()
    yield con
    con.close()


def test_generator_is_deterministic(fresh, tmp_path):
    samples.main(["--out", str(tmp_path)])
    first, second = generated_files(fresh), generated_files(tmp_path)
    assert list(second) == list(first)
    assert len(first) == 2 + samples.RECEIPT_COUNT
    differ = [name for name in first if first[name].read_bytes() != second[name].read_bytes()]
    assert differ == []


def test_committed_data_is_a_fresh_generation(fresh):
    """data/ can be regrown with `python -m runner.samples`; regrow it when this fails."""
    made, committed = generated_files(fresh), generated_files(DATA)
    assert list(committed) == list(made)
    for name, path in made.items():
        if name.endswith(".png"):
            # Pixels, not bytes: another Pillow may link another zlib and compress differently.
            with Image.open(path) as new, Image.open(committed[name]) as old:
                assert (old.mode, old.size) == (new.mode, new.size), name
                assert old.tobytes() == new.tobytes(), name
        else:
            assert committed[name].read_bytes() == path.read_bytes(), name


def test_duckdb_reads_the_tweets_csv(db):
    rel = db.sql(f"SELECT * FROM read_csv('{CSV_PATH}')")
    assert rel.columns == list(samples.TWEET_COLUMNS)
    assert [str(t) for t in rel.types] == [
        "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "DATE"]
    got = rel.order("tweet_id").fetchall()

    expected = samples.tweet_rows(random.Random(samples.TWEETS_SEED), samples.TWEET_COUNT)
    assert len(got) == len(expected) == samples.TWEET_COUNT
    assert [(r[0], r[2]) for r in got] == [(r["tweet_id"], r["tweet_text"]) for r in expected]
    texts = [r[2] for r in got]
    for awkward in ("\n", "\t", '"', ",", "\u00e9", "\U0001f3ae", "<script>alert(1)</script>"):
        assert any(awkward in t for t in texts), awkward


def test_csv_module_reads_the_same_rows():
    with CSV_PATH.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = samples.tweet_rows(random.Random(samples.TWEETS_SEED), samples.TWEET_COUNT)
    assert rows == [{k: str(v) for k, v in r.items()} for r in expected]
    assert all(re.fullmatch(r"0\.\d{3}", r["score"]) for r in rows)


def test_tweet_values(db):
    rel = db.sql(f"SELECT * FROM read_csv('{CSV_PATH}')")  # noqa: F841 - DuckDB's SQL reads it as `rel`
    stats = db.sql("""
        SELECT count(*), count(DISTINCT tweet_id), min(score), max(score),
               avg((score < 0.8)::INT), min(date), max(date)
        FROM rel""").fetchall()[0]
    n, ids, low, high, unsure, first, last = stats
    assert ids == n
    assert 0.30 <= low and high <= 0.999
    assert 0.40 <= unsure <= 0.50
    assert first.year == last.year == 2026
    sentiments = {r[0] for r in db.sql("SELECT DISTINCT sentiment FROM rel").fetchall()}
    assert sentiments == set(samples.SENTIMENTS)


def test_every_entity_has_unsure_rows(db):
    rel = db.sql(f"SELECT * FROM read_csv('{CSV_PATH}')")  # noqa: F841 - DuckDB's SQL reads it as `rel`
    counts = dict(db.sql("""
        SELECT entity, count(*) FILTER (WHERE score < 0.8) FROM rel GROUP BY entity""").fetchall())
    assert set(counts) == set(samples.ENTITIES) >= {"Borderlands", "Xbox", "NBA2K"}
    assert min(counts.values()) > 0


def test_duckdb_reads_the_receipts_jsonl(db):
    rel = db.sql(f"SELECT * FROM read_json_auto('{JSONL_PATH}')")
    assert rel.columns == ["receipt_id", "image_file", "width", "height", "tokens", "entities"]
    assert [str(t) for t in rel.types[:4]] == ["BIGINT", "VARCHAR", "BIGINT", "BIGINT"]
    tokens, entities = rel.types[4], rel.types[5]
    assert tokens.id == entities.id == "list"
    assert [(n, str(t)) for n, t in tokens.child.children] == [
        ("text", "VARCHAR"), ("box", "BIGINT[]")]
    assert [(n, str(t)) for n, t in entities.child.children] == [
        ("label", "VARCHAR"), ("box", "BIGINT[]"), ("tokens", "BIGINT[]")]
    ids = [r[0] for r in rel.order("receipt_id").fetchall()]
    assert ids == list(range(1, samples.RECEIPT_COUNT + 1))


def test_receipt_records_match_their_images():
    for rec in receipts():
        with Image.open(IMAGES / rec["image_file"]) as image:
            assert image.size == (rec["width"], rec["height"])
        for token in rec["tokens"]:
            left, top, width, height = token["box"]
            assert token["text"] and " " not in token["text"]
            assert width > 0 and height > 0
            assert 0 <= left and left + width <= rec["width"], token
            assert 0 <= top and top + height <= rec["height"], token
        for entity in rec["entities"]:
            assert entity["label"] in samples.ENTITY_LABELS
            assert entity["tokens"]
            covered = [rec["tokens"][i]["box"] for i in entity["tokens"]]
            assert entity["box"] == samples.union(covered)
        labels = {e["label"] for e in rec["entities"]}
        assert labels == set(samples.ENTITY_LABELS), rec["receipt_id"]


def test_token_boxes_are_where_the_words_are_drawn():
    """Each box has ink in it, and no ink lies outside every box."""
    for rec in receipts():
        with Image.open(IMAGES / rec["image_file"]) as image:
            page = image.convert("L")
        for token in rec["tokens"]:
            left, top, width, height = token["box"]
            crop = page.crop((left, top, left + width, top + height))
            assert crop.getextrema()[0] < 128, (rec["image_file"], token)
            page.paste(255, (left, top, left + width, top + height))
        assert page.getextrema() == (255, 255), rec["image_file"]


def test_images_are_small():
    total = sum(p.stat().st_size for p in IMAGES.glob("*.png"))
    assert total < 1_000_000


@pytest.mark.parametrize("name, path", [
    ("tweets", CSV_PATH), ("receipts", JSONL_PATH)])
def test_source_config_columns_exist(db, name, path):
    """conf/source/<name>.yaml maps manifest fields to columns the sample file has."""
    config = OmegaConf.load(HOME / "conf" / "source" / f"{name}.yaml")
    columns = OmegaConf.to_container(config.columns)
    reader = "read_csv" if path.suffix == ".csv" else "read_json_auto"
    have = set(db.sql(f"SELECT * FROM {reader}('{path}')").columns)
    plain = {v for v in columns.values() if re.fullmatch(r"\w+", v)}
    expressions = [v for v in columns.values() if v not in plain]
    assert plain <= have
    for expr in expressions:  # e.g. ":image_prefix || image_file"
        assert set(re.findall(r"(?<![:\w])([a-z_]\w*)", expr)) <= have, expr
