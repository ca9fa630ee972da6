"""Transforms: every file is loaded back with the library that consumes it and compared with the
LabeledObjects that produced it."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.collect.collect import ImageCopier
from runner.collect.records import Box, LabeledObject, Span, Status, WorkerAnswer
from runner.collect.transforms import (
    BATCH_ROWS,
    SPACY_IDS,
    SPLITS,
    TRANSFORMS,
    WrittenFiles,
    apply_label_map,
    athena_columns,
    athena_table_ddl,
    bio_tags,
    check_transforms,
    flat_record,
    image_names,
    keep,
    layout_box,
    mapped_labels,
    object_confidence,
    register_table,
    run_transforms,
    split_of,
    text_tokens,
    worker_agreement,
    write_coco,
    write_conll,
    write_hf_datasets,
    write_jsonl,
    write_spacy,
    write_table,
    write_yolo,
    yolo_line,
)
from runner.errors import ConfigError, ConfigErrors, StoreError
from runner.io.store import LocalStore
from runner.schema import SplitConfig, TaskType, TransformsConfig

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ["Positive", "Negative", "Neutral"]
RECEIPT_LABELS = ["vendor", "date", "total", "tax", "item", "address"]
SETTINGS = TransformsConfig()
AWKWARD = [
    "plain words",
    "a\ttab\tor two",
    "line one\nline two",
    "windows\r\nline and a lone\rcarriage return",
    'she said "hi", then left',
    '"starts with a quote',
    "comma, semicolon; pipe | and a backslash \\",
    "emoji 😀 family 👨‍👩‍👧 heart ❤️ flag 🇫🇷",
    "  leading and trailing spaces  ",
    "ünïcödé Ελληνικά 日本語 עברית",
]


def labeled(n: int, task_type: TaskType, inputs: dict | None = None, **kw) -> LabeledObject:
    return LabeledObject(line_no=n + 1, object_id=str(n), inputs=inputs or {}, attribute="attr",
                         task_type=task_type, status=kw.pop("status", Status.labeled), **kw)


def classifier(label: str, worker: str = "w") -> WorkerAnswer:
    return WorkerAnswer(worker, {"crowd-classifier": {"label": label}})


def tweets(n: int = 40) -> list[LabeledObject]:
    return [labeled(i, TaskType.text_classification,
                    {"source": AWKWARD[i % len(AWKWARD)], "tweet_id": 1000 + i},
                    label=SENTIMENT[i % 3], confidence=round(0.5 + (i % 5) / 10, 2),
                    answers=(classifier(SENTIMENT[i % 3], "a"), classifier(SENTIMENT[i % 3], "b")))
            for i in range(n)]


def multilabel(n: int = 30) -> list[LabeledObject]:
    out = []
    for i in range(n):
        chosen = tuple(name for k, name in enumerate(SENTIMENT) if (i >> k) & 1)
        out.append(labeled(i, TaskType.text_multilabel, {"source": AWKWARD[i % len(AWKWARD)]},
                           labels=chosen, confidences={c: 0.7 for c in chosen}))
    return out


NER_TEXT = "Ada Lovelace met Charles Babbage in London.\tThen 😀 Paris!"


def ner_objects() -> list[LabeledObject]:
    spans = (Span("person", 0, 12, 0.9), Span("person", 17, 32, 0.8), Span("location", 36, 42))
    out = [labeled(0, TaskType.named_entity, {"source": NER_TEXT}, entities=spans)]
    # Overlapping spans, a span that cuts a token, emoji before a span.
    out.append(labeled(1, TaskType.named_entity, {"source": NER_TEXT},
                       entities=(Span("person", 17, 32), Span("organization", 25, 32),
                                 Span("location", 51, 56), Span("location", 38, 40))))
    out += [labeled(i, TaskType.named_entity, {"source": f"Visit London {i} times"},
                    entities=(Span("location", 6, 12),)) for i in range(2, 30)]
    return out


def boxes(n: int = 30) -> list[LabeledObject]:
    out = []
    for i in range(n):
        bxs = tuple(Box(SENTIMENT[k % 3], 10 * k, 5 * k, 20 + k, 10 + k) for k in range(i % 4))
        out.append(labeled(i, TaskType.bounding_box, {"source-ref": f"s3://bucket/imgs/img-{i}.jpg"},
                           boxes=bxs, image_size=(200, 100, 3)))
    return out


def receipts(use_indices: bool = True) -> list[LabeledObject]:
    out = []
    for n, line in enumerate((ROOT / "data" / "receipts" / "receipts.jsonl").read_text().splitlines()):
        row = json.loads(line)
        inputs = {"source-ref": f"s3://b/receipts/{row['image_file']}", "receipt_id": row["receipt_id"],
                  "tokens": row["tokens"], "width": row["width"], "height": row["height"]}
        bxs = tuple(Box(e["label"], *e["box"], tokens=tuple(e["tokens"]) if use_indices else ())
                    for e in row["entities"])
        out.append(labeled(n, TaskType.custom, inputs, boxes=bxs,
                           image_size=(row["width"], row["height"], 3)))
    return out


def split_ids(objects: list[LabeledObject], settings: TransformsConfig = SETTINGS) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for o in objects:
        out[split_of(o.object_id, settings.split)].append(o.object_id)
    return out


def write(writer, objects, tmp_path, labels=SENTIMENT, settings=SETTINGS, **options) -> WrittenFiles:
    extra = {"images": image_store(tmp_path, objects)} if writer in (write_coco, write_yolo) else {}
    return writer(iter(objects), tmp_path / "tweets", labels=labels, options=options,
                  settings=settings, **extra)


def image_bytes(ref: str) -> bytes:
    """The bytes image_store puts behind a source-ref: its own, so a copy shows whose it is."""
    return b"\x89PNG image of " + ref.encode()


def image_store(tmp_path: Path, objects) -> ImageCopier:
    """A local store (a local backend's folder) holding an image for each s3:// source-ref of the
    objects, and the copier collect gives coco and yolo over it."""
    store = LocalStore(tmp_path / "store")
    for obj in objects:
        ref = obj.inputs.get("source-ref", "")
        if ref.startswith("s3://") and not store.exists(ref):
            store.put_bytes(ref, image_bytes(ref))
    return ImageCopier(store)


# --- splits -------------------------------------------------------------------------------------


def test_split_is_a_pinned_hash_of_salt_and_id():
    assert [split_of(str(i), SplitConfig()) for i in range(7)] == [
        "validation", "train", "train", "train", "train", "train", "test"]
    assert [split_of(f"id-{i}", SplitConfig()) for i in range(8)] == ["train"] * 7 + ["test"]
    assert split_of("x", SplitConfig()) == split_of("x", SplitConfig())
    other = [split_of(str(i), SplitConfig(salt="again")) for i in range(50)]
    assert other != [split_of(str(i), SplitConfig()) for i in range(50)]


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.3, 0.1), (0.5, 0.5, 0.0)])
def test_split_ratios_hold_on_ten_thousand_ids(ratios):
    split = SplitConfig(*ratios)
    counts = Counter(split_of(f"obj-{i}", split) for i in range(10_000))
    for name, ratio in zip(SPLITS, ratios):
        assert abs(counts[name] / 10_000 - ratio) <= 0.02, (name, counts)
    if ratios[2] == 0:
        assert counts["test"] == 0


@pytest.mark.parametrize(("ratios", "key"), [((0.8, 0.1, 0.2), r"^transforms\.split: "),
                                             ((1.2, -0.1, -0.1), r"^transforms\.split\.train: ")])
def test_split_ratios_must_make_one(ratios, key):
    with pytest.raises(ConfigError, match=key):
        split_of("1", SplitConfig(*ratios))


# --- label map, filters, flat records -------------------------------------------------------------


def test_label_map_renames_and_merges_everywhere():
    label_map = {"Irrelevant": "Neutral", "Negative": "Bad"}
    assert mapped_labels(["Positive", "Negative", "Neutral", "Irrelevant"], label_map) == [
        "Positive", "Bad", "Neutral"]
    multi = labeled(0, TaskType.text_multilabel, labels=("Neutral", "Irrelevant", "Positive"),
                    confidences={"Neutral": 0.4, "Irrelevant": 0.9, "Positive": 0.8},
                    answers=(WorkerAnswer("w", {"crowd-classifier-multi-select": {
                        "labels": ["Irrelevant", "Neutral"]}}),))
    out = apply_label_map(multi, label_map)
    assert out.labels == ("Neutral", "Positive")
    assert out.confidences == {"Neutral": 0.9, "Positive": 0.8}
    assert out.answers[0].content == {"crowd-classifier-multi-select": {"labels": ["Neutral"]}}
    single = apply_label_map(labeled(1, TaskType.text_classification, label="Irrelevant",
                                     answers=(classifier("Irrelevant"), classifier("Negative"))),
                             label_map)
    assert single.label == "Neutral"
    assert [a.content["crowd-classifier"]["label"] for a in single.answers] == ["Neutral", "Bad"]
    box = apply_label_map(labeled(2, TaskType.bounding_box, boxes=(Box("Negative", 1, 2, 3, 4),)),
                          label_map)
    assert box.boxes == (Box("Bad", 1, 2, 3, 4),)
    ner = apply_label_map(labeled(3, TaskType.named_entity, entities=(Span("Irrelevant", 0, 2),)),
                          label_map)
    assert ner.entities == (Span("Neutral", 0, 2),)
    assert apply_label_map(multi, {}) is multi


def test_keep_drops_unlabeled_and_low_confidence_objects():
    assert not keep(labeled(0, TaskType.text_classification, status=Status.failed))
    assert not keep(labeled(0, TaskType.text_classification, status=Status.unlabeled))
    low = labeled(0, TaskType.text_classification, label="Positive", confidence=0.4)
    assert keep(low) and keep(low, min_confidence=0.4) and not keep(low, min_confidence=0.5)
    unknown = labeled(0, TaskType.text_classification, label="Positive")
    assert keep(unknown, min_confidence=0.9, min_agreement=0.9)  # nothing to judge by
    bxs = labeled(0, TaskType.bounding_box, boxes=(Box("a", 0, 0, 1, 1, 0.9), Box("a", 5, 5, 1, 1, 0.3)))
    assert object_confidence(bxs) == 0.3 and not keep(bxs, min_confidence=0.5)
    multi = labeled(0, TaskType.text_multilabel, labels=("a", "b"), confidences={"a": 0.9, "b": 0.6})
    assert object_confidence(multi) == 0.6


def test_agreement_per_task_type():
    single = labeled(0, TaskType.text_classification, label="Positive",
                     answers=(classifier("Positive"), classifier("Positive"), classifier("Negative")))
    assert worker_agreement(single) == pytest.approx(2 / 3)
    assert keep(single, min_agreement=0.6) and not keep(single, min_agreement=0.7)
    multi = labeled(0, TaskType.text_multilabel, labels=("a", "b"), answers=(
        WorkerAnswer("1", {"crowd-classifier-multi-select": {"labels": ["a", "b"]}}),
        WorkerAnswer("2", {"crowd-classifier-multi-select": {"labels": ["a"]}})))
    assert worker_agreement(multi) == pytest.approx((1 + 0.5) / 2)
    drawn = {"boundingBoxes": [{"label": "a", "left": 0, "top": 0, "width": 10, "height": 10}]}
    image = labeled(0, TaskType.bounding_box, boxes=(Box("a", 1, 0, 10, 10),), answers=(
        WorkerAnswer("1", {"boundingBox": drawn}),
        WorkerAnswer("2", {"boundingBox": {"boundingBoxes": [*drawn["boundingBoxes"],
                                                             {**drawn["boundingBoxes"][0], "left": 50}]}}),
        WorkerAnswer("3", {})))  # drew nothing
    assert worker_agreement(image) == pytest.approx((1 + 0.5 + 0) / 3)
    ner = labeled(0, TaskType.named_entity, entities=(Span("p", 0, 10),), answers=(
        WorkerAnswer("1", {"crowd-entity-annotation": {"entities": [
            {"label": "p", "startOffset": 0, "endOffset": 9}]}}),
        WorkerAnswer("2", {"crowd-entity-annotation": {"entities": [
            {"label": "q", "startOffset": 0, "endOffset": 10}]}})))
    assert worker_agreement(ner) == pytest.approx(0.5)
    assert worker_agreement(labeled(0, TaskType.custom, label="x", answers=(
        WorkerAnswer("1", {"free": "text"}),))) is None


def test_flat_record_has_the_task_types_keys():
    t = flat_record(tweets(1)[0])
    assert t == {"source": "plain words", "tweet_id": 1000, "label": "Positive", "confidence": 0.5,
                 "workers": 2}
    m = flat_record(multilabel(4)[3])
    assert list(m) == ["source", "labels", "confidence", "workers"] and m["labels"] == ["Positive", "Negative"]
    b = flat_record(boxes(3)[2])
    assert b["boxes"][1] == {"label": "Negative", "left": 10, "top": 5, "width": 21, "height": 11}
    assert set(b) == {"source-ref", "boxes", "confidence", "workers"}
    e = flat_record(ner_objects()[0])
    assert e["entities"][2] == {"label": "location", "start": 36, "end": 42}
    assert e["confidence"] == 0.8
    r = flat_record(receipts()[0])
    assert r["boxes"][0] == {"label": "vendor", "left": 102, "top": 16, "width": 156, "height": 22,
                             "tokens": [0, 1]}
    with pytest.raises(ConfigError, match=r"^source\.columns: input field 'label'"):
        flat_record(labeled(0, TaskType.text_classification, {"label": "x"}, label="Positive"))


def test_a_custom_object_without_label_keys_keeps_its_label_value_as_annotation():
    ref = {"annotation-ref": "s3://bucket/annotations/file1-1-616696e2-ann.json"}
    obj = labeled(0, TaskType.custom, {"source-ref": "s3://b/file1.pdf", "page": "1"}, value=ref)
    assert flat_record(obj) == {"source-ref": "s3://b/file1.pdf", "page": "1", "annotation": ref, "confidence": None,
                                "workers": None}
    # boxes read out of the answers are the label (receipts' bounding-box NER): no annotation beside them
    receipt = receipts()[0]
    assert "annotation" not in flat_record(replace(receipt, value={"annotationsFromAllWorkers": []}))
    # only labeled objects, only custom ones: another task's value is in its label keys already
    assert "annotation" not in flat_record(replace(obj, status=Status.failed))
    single = flat_record(labeled(0, TaskType.text_classification, {"annotation": 1}, label="x", value=0))
    assert single == {"annotation": 1, "label": "x", "confidence": None, "workers": None}  # an input of that name
    with pytest.raises(ConfigError, match=r"^source\.columns: input field 'annotation'"):
        flat_record(labeled(0, TaskType.custom, {"annotation": "mine"}, value=ref))


def test_annotations_of_any_shape_are_json_text_in_tables(tmp_path):
    values = [{"annotation-ref": "s3://b/a.json"}, ["PER", 3], "free text, \"quoted\" | piped", 7, None, {}]
    objects = [labeled(i, TaskType.custom, {"source": f"doc {i}"}, value=v) for i, v in enumerate(values)]
    for fmt in ("parquet", "csv"):
        write(write_table, objects, tmp_path / fmt, format=fmt)
        path = tmp_path / fmt / "tweets" / "table" / f"tweets.{fmt}"
        if fmt == "parquet":
            table = pq.read_table(path)
            assert table.schema.field("annotation").type == pa.string()
            texts = table.column("annotation").to_pylist()
        else:
            with open(path, newline="", encoding="utf-8") as f:
                texts = [row["annotation"] or None for row in csv.DictReader(f)]
        assert [None if t is None else json.loads(t) for t in texts] == values
    write(write_jsonl, objects, tmp_path / "jsonl")
    folder = tmp_path / "jsonl" / "tweets" / "jsonl"
    records = [json.loads(x) for s in SPLITS for x in (folder / f"{s}.jsonl").read_text().splitlines()]
    assert {r["source"]: r["annotation"] for r in records} == {f"doc {i}": v for i, v in enumerate(values)}


# --- table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_table_csv_round_trips_awkward_text(tmp_path, fmt):
    objects = tweets(len(AWKWARD)) + [
        labeled(99, TaskType.text_classification, {"source": "no answers"}, label="Neutral")]
    written = write(write_table, objects, tmp_path, format=fmt)
    path = tmp_path / "tweets" / "table" / f"tweets.{fmt}"
    assert written.paths == [path, tmp_path / "tweets" / "gtrun.duckdb"]
    assert written.counts == {"all": len(objects)}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="," if fmt == "csv" else "\t"))
    assert [r["source"] for r in rows] == [o.inputs["source"] for o in objects]
    assert [r["label"] for r in rows] == [o.label for o in objects]
    assert rows[-1]["workers"] == "" and rows[0]["workers"] == "2"
    delim = "," if fmt == "csv" else "\t"
    read = duckdb.sql(f"SELECT source, label, confidence FROM read_csv('{path}', header = true, "
                      f"delim = '{delim}', quote = '\"', escape = '\"')").fetchall()
    assert read == [(o.inputs["source"], o.label, o.confidence) for o in objects]
    with duckdb.connect(str(tmp_path / "tweets" / "gtrun.duckdb")) as con:
        assert con.execute('SELECT source FROM "tweets" ORDER BY tweet_id').fetchall() == [
            (o.inputs["source"],) for o in objects]


def test_table_csv_joins_multilabel_labels(tmp_path):
    objects = multilabel(8)
    write(write_table, objects, tmp_path, format="csv")
    with open(tmp_path / "tweets" / "table" / "tweets.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["labels"].split("|") if r["labels"] else [] for r in rows] == [list(o.labels) for o in objects]
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.table\.format: label 'a\|b'"):
        write(write_table, [labeled(0, TaskType.text_multilabel, labels=("a|b",))], tmp_path,
              format="csv")


def test_table_parquet_keeps_types_and_registers_a_view(tmp_path):
    objects = multilabel(12)
    written = write(write_table, objects, tmp_path)
    path = tmp_path / "tweets" / "table" / "tweets.parquet"
    table = pq.read_table(path)
    assert table.schema.field("labels").type == pa.list_(pa.string())
    assert table.column("labels").to_pylist() == [list(o.labels) for o in objects]
    assert table.column("source").to_pylist() == [o.inputs["source"] for o in objects]
    assert written.counts == {"all": 12}
    with duckdb.connect(str(tmp_path / "tweets" / "gtrun.duckdb")) as con:
        assert con.execute('SELECT count(*) FROM "tweets" WHERE list_contains(labels, \'Negative\')'
                       ).fetchone() == (sum("Negative" in o.labels for o in objects),)
    columns = athena_columns(pq.read_schema(path))
    assert columns == [("source", "string"), ("labels", "array<string>"),
                       ("confidence", "double"), ("workers", "bigint")]
    register_table(path, "parquet", tmp_path / "other.duckdb", name="renamed")
    with duckdb.connect(str(tmp_path / "other.duckdb")) as con:
        assert con.execute('SELECT count(*) FROM "renamed"').fetchone() == (12,)


def test_table_parquet_streams_in_batches_and_types_late_fields(tmp_path):
    n = BATCH_ROWS * 2 + 500
    objects = (labeled(i, TaskType.text_classification,
                       {"source": f"t{i}", "score": None if i < BATCH_ROWS + 200 else i},
                       label="Positive") for i in range(n))
    write_table(objects, tmp_path / "big", labels=SENTIMENT, options={}, settings=SETTINGS)
    f = pq.ParquetFile(tmp_path / "big" / "table" / "big.parquet")
    assert f.metadata.num_rows == n and f.metadata.num_row_groups >= 3
    assert f.schema_arrow.field("score").type == pa.int64()
    assert f.read(columns=["score"]).column(0).to_pylist()[-1] == n - 1


def test_table_parquet_boxes_and_athena_ddl(tmp_path):
    write(write_table, receipts()[:3], tmp_path)
    path = tmp_path / "tweets" / "table" / "tweets.parquet"
    rows = pq.read_table(path).to_pylist()
    assert rows[0]["boxes"][0] == {"label": "vendor", "left": 102.0, "top": 16.0, "width": 156.0,
                                   "height": 22.0, "tokens": [0, 1]}
    ddl = athena_table_ddl("receipts", "s3://b/gtrun/receipts/table", athena_columns(pq.read_schema(path)))
    assert ddl.startswith("CREATE EXTERNAL TABLE `receipts` (\n  `source-ref` string,\n")
    assert ("  `boxes` array<struct<`label`:string,`left`:double,`top`:double,`width`:double,"
            "`height`:double,`tokens`:array<bigint>>>,\n") in ddl
    assert "`tokens` array<struct<`text`:string,`box`:array<bigint>>>" in ddl
    assert ddl.endswith("\n)\nSTORED AS PARQUET\nLOCATION 's3://b/gtrun/receipts/table/'")


# --- jsonl -------------------------------------------------------------------------------------------


def test_jsonl_one_flat_record_per_line_per_split(tmp_path):
    objects = tweets()
    written = write(write_jsonl, objects, tmp_path)
    expected = split_ids(objects)
    assert written.counts == {s: len(ids) for s, ids in expected.items()}
    by_id = {o.object_id: o for o in objects}
    for split in SPLITS:
        lines = (tmp_path / "tweets" / "jsonl" / f"{split}.jsonl").read_text(encoding="utf-8").split("\n")
        assert lines[-1] == ""
        records = [json.loads(x) for x in lines[:-1]]
        assert [r["tweet_id"] - 1000 for r in records] == [int(i) for i in expected[split]]
        assert records == [flat_record(by_id[i]) for i in expected[split]]


# --- Hugging Face datasets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def load_hf(hf, folder: Path):
    return hf.load_dataset("parquet", data_dir=str(folder), cache_dir=str(folder.parent / "hf-cache"))


def test_hf_datasets_single_label_is_a_classlabel(tmp_path, hf):
    objects = tweets()
    written = write(write_hf_datasets, objects, tmp_path)
    ds = load_hf(hf, tmp_path / "tweets" / "hf")
    expected = split_ids(objects)
    by_id = {o.object_id: o for o in objects}
    assert written.counts == {s: len(v) for s, v in expected.items()}
    for split in SPLITS:
        part = ds[split]
        assert part.features["label"].names == SENTIMENT
        assert part["label"] == [SENTIMENT.index(by_id[i].label) for i in expected[split]]
        assert part["source"] == [by_id[i].inputs["source"] for i in expected[split]]
        assert part.features["confidence"].dtype == "float64"


def test_hf_datasets_multilabel_ner_and_boxes(tmp_path, hf):
    write(write_hf_datasets, multilabel(), tmp_path / "m")
    ds = load_hf(hf, tmp_path / "m" / "tweets" / "hf")
    feature = ds["train"].features["labels"]
    assert feature.feature.names == SENTIMENT
    by_id = {o.object_id: o for o in multilabel()}
    ids = split_ids(multilabel())["train"]
    assert ds["train"]["labels"] == [[SENTIMENT.index(x) for x in by_id[i].labels] for i in ids]

    ner_labels = ["person", "organization", "location"]
    write(write_hf_datasets, ner_objects(), tmp_path / "n", labels=ner_labels)
    ds = load_hf(hf, tmp_path / "n" / "tweets" / "hf")
    split = split_of("0", SETTINGS.split)
    row = ds[split].filter(lambda r: r["source"] == NER_TEXT and r["entities"][0]["end"] == 12)[0]
    assert row["entities"][2] == {"label": 2, "start": 36, "end": 42}
    assert ds[split].features["entities"].feature["label"].names == ner_labels

    write(write_hf_datasets, receipts()[:10], tmp_path / "r", labels=RECEIPT_LABELS)
    ds = load_hf(hf, tmp_path / "r" / "tweets" / "hf")
    first = next(s for s in SPLITS if s in ds and "s3://b/receipts/receipt-001.png" in ds[s]["source-ref"])
    box = ds[first].features["boxes"].feature
    assert box["label"].names == RECEIPT_LABELS
    row = ds[first][ds[first]["source-ref"].index("s3://b/receipts/receipt-001.png")]
    assert row["boxes"][0]["label"] == RECEIPT_LABELS.index("vendor")
    assert row["boxes"][0]["tokens"] == [0, 1]
    assert row["tokens"][0] == {"text": "VALLEY", "box": [102, 16, 72, 22]}


def test_hf_datasets_refuses_labels_outside_the_list(tmp_path):
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.hf_datasets: object '0' has label 'Meh'"):
        write(write_hf_datasets, [labeled(0, TaskType.text_classification, label="Meh")], tmp_path)


# --- spaCy -------------------------------------------------------------------------------------------


def load_docbin(folder: Path, lang: str = "en"):
    """A split's docs, as a script reads them: its .spacy files in sorted order; each doc's
    user_data["id"] set from ids.jsonl (line n: doc n)."""
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank(lang)
    docs = [d for f in sorted(folder.glob("*.spacy")) for d in DocBin().from_disk(f).get_docs(nlp.vocab)]
    ids = [json.loads(line) for line in (folder / SPACY_IDS).read_text(encoding="utf-8").splitlines()]
    assert len(ids) == len(docs)
    for doc, object_id in zip(docs, ids):
        assert doc.user_data == {}  # no per-doc user_data: see write_spacy
        doc.user_data["id"] = object_id
    return docs


def test_spacy_ner_docs_and_reported_spans(tmp_path):
    pytest.importorskip("spacy")
    objects = ner_objects()
    written = write(write_spacy, objects, tmp_path, labels=["person", "organization", "location"])
    docs = {split: load_docbin(tmp_path / "tweets" / "spacy" / split) for split in SPLITS}
    assert {s: len(d) for s, d in docs.items()} == written.counts
    by_id = {d.user_data["id"]: d for split in SPLITS for d in docs[split]}
    first = by_id["0"]
    assert first.text == NER_TEXT
    assert [(e.text, e.label_) for e in first.ents] == [
        ("Ada Lovelace", "person"), ("Charles Babbage", "person"), ("London", "location")]
    second = by_id["1"]
    # The longer of the overlapping spans stays; "Paris" after the emoji aligns; "nd" does not.
    assert [(e.text, e.label_) for e in second.ents] == [("Charles Babbage", "person"),
                                                         ("Paris", "location")]
    assert written.problem_count == 2
    assert any("'organization' [25, 32)" in p and "overlaps" in p for p in written.problems)
    assert any("'location' [38, 40)" in p and "covers no whole token" in p for p in written.problems)
    assert [(e.text, e.label_) for e in by_id["5"].ents] == [("London", "location")]


def test_spacy_textcat_one_hot_and_multi_hot(tmp_path):
    pytest.importorskip("spacy")
    objects = tweets(12)
    write(write_spacy, objects, tmp_path / "t", lang="en")
    docs = [d for s in SPLITS for d in load_docbin(tmp_path / "t" / "tweets" / "spacy" / s)]
    by_id = {o.object_id: o for o in objects}
    for doc in docs:
        obj = by_id[doc.user_data["id"]]
        assert doc.text == obj.inputs["source"]
        assert doc.cats == {name: float(name == obj.label) for name in SENTIMENT}
    objects = multilabel(8)
    write(write_spacy, objects, tmp_path / "m")
    docs = [d for s in SPLITS for d in load_docbin(tmp_path / "m" / "tweets" / "spacy" / s)]
    by_id = {o.object_id: o for o in objects}
    assert len(docs) == 8
    for doc in docs:
        assert doc.cats == {name: float(name in by_id[doc.user_data["id"]].labels) for name in SENTIMENT}


def test_spacy_streams_chunks_that_spacy_train_reads(tmp_path, monkeypatch):
    spacy = pytest.importorskip("spacy")
    from spacy.training import Corpus

    from runner.collect import transforms

    monkeypatch.setattr(transforms, "SPACY_DOCS", 4)
    objects = tweets(40)
    stage = tmp_path / "tweets" / ".spacy.partial"
    seen_on_disk = []

    def arriving():
        for n, obj in enumerate(objects):
            if n == 30:  # the first files are written while objects still arrive
                seen_on_disk.extend(sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*.spacy")))
            yield obj

    written = write_spacy(arriving(), tmp_path / "tweets", labels=SENTIMENT, options={}, settings=SETTINGS)
    assert "train/0000.spacy" in seen_on_disk
    expected = split_ids(objects)
    root = tmp_path / "tweets" / "spacy"
    nlp = spacy.blank("en")
    for split in SPLITS:
        files = sorted(p.name for p in (root / split).glob("*.spacy"))
        assert files == [f"{i:04d}.spacy" for i in range(max(1, -(-len(expected[split]) // 4)))]
        docs = load_docbin(root / split)
        assert [d.user_data["id"] for d in docs] == expected[split] and written.counts[split] == len(docs)
        # what `spacy train --paths.train spacy/train` reads: every .spacy file under the folder
        examples = list(Corpus(root / split)(nlp))
        assert [e.reference.text for e in examples] == [d.text for d in docs]
        assert [e.reference.cats for e in examples] == [d.cats for d in docs]
    assert written.paths == [root / s for s in SPLITS]


def test_spacy_empty_split_still_has_a_file(tmp_path):
    pytest.importorskip("spacy")
    write(write_spacy, tweets(1), tmp_path)
    root = tmp_path / "tweets" / "spacy"
    assert {s: [p.name for p in (root / s).glob("*.spacy")] for s in SPLITS} == {s: ["0000.spacy"] for s in SPLITS}
    assert sorted(len(load_docbin(root / s)) for s in SPLITS) == [0, 0, 1]


def test_spacy_unknown_language_names_its_key(tmp_path):
    pytest.importorskip("spacy")
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.spacy\.lang: 'zz-nope'"):
        write(write_spacy, tweets(2), tmp_path, lang="zz-nope")


# --- CoNLL -------------------------------------------------------------------------------------------


def read_conll(path: Path) -> list[list[tuple[str, str]]]:
    docs, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        if line == "":
            docs.append(current)
            current = []
        else:
            token, tag = line.split("\t")
            current.append((token, tag))
    assert current == []
    return docs


def test_text_tokens_keep_offsets():
    tokens = text_tokens(NER_TEXT)
    assert all(NER_TEXT[a:b] == t for t, a, b in tokens)
    assert [t for t, _, _ in tokens][-4:] == ["Then", "😀", "Paris", "!"]
    assert bio_tags([(0, 3), (4, 8)], [Span("x", 1, 2), Span("y", 4, 8)]) == ["B-x", "B-y"]


def test_conll_bio_tags_for_text_ner(tmp_path):
    objects = ner_objects()
    written = write(write_conll, objects, tmp_path)
    expected = split_ids(objects)
    docs = {s: read_conll(tmp_path / "tweets" / "conll" / f"{s}.conll") for s in SPLITS}
    assert {s: len(d) for s, d in docs.items()} == {s: len(v) for s, v in expected.items()}
    first = docs[split_of("0", SETTINGS.split)][expected[split_of("0", SETTINGS.split)].index("0")]
    assert first == [("Ada", "B-person"), ("Lovelace", "I-person"), ("met", "O"),
                     ("Charles", "B-person"), ("Babbage", "I-person"), ("in", "O"),
                     ("London", "B-location"), (".", "O"), ("Then", "O"), ("😀", "O"),
                     ("Paris", "O"), ("!", "O")]
    split1 = split_of("1", SETTINGS.split)
    second = dict(docs[split1][expected[split1].index("1")])
    # overlapping "Babbage" (organization) is dropped for the longer person; "nd" tags its token.
    assert second["Charles"] == "B-person" and second["Babbage"] == "I-person"
    assert second["Paris"] == "B-location" and second["London"] == "B-location"
    # ... and both are said: "nd" tags a whole token the span covers only part of
    assert written.problem_count == 2 and "overlaps" in written.problems[0]
    assert written.problems[1] == ("object '1': span 'location' [38, 40) covers part of a token; the whole "
                                   "token is tagged")
    assert not (tmp_path / "tweets" / "conll" / "train.layout.jsonl").exists()


@pytest.mark.parametrize("use_indices", [True, False], ids=["box-tokens", "token-centres"])
def test_conll_and_layout_for_receipts(tmp_path, use_indices):
    objects = receipts(use_indices)
    written = write(write_conll, objects, tmp_path, labels=RECEIPT_LABELS)
    assert written.problems == []
    expected = split_ids(objects)
    by_id = {o.object_id: o for o in objects}
    rows = [json.loads(line) for line in
            (tmp_path / "tweets" / "conll" / f"{split_of('0', SETTINGS.split)}.layout.jsonl")
            .read_text().splitlines()]
    for split in SPLITS:
        docs = read_conll(tmp_path / "tweets" / "conll" / f"{split}.conll")
        layout = [json.loads(x) for x in
                  (tmp_path / "tweets" / "conll" / f"{split}.layout.jsonl").read_text().splitlines()]
        assert [r["id"] for r in layout] == expected[split] and len(docs) == len(layout)
        for doc, row in zip(docs, layout):
            obj = by_id[row["id"]]
            tokens = obj.inputs["tokens"]
            want = ["O"] * len(tokens)
            source = json.loads((ROOT / "data" / "receipts" / "receipts.jsonl").read_text()
                                .splitlines()[int(row["id"])])
            for entity in source["entities"]:
                for n, i in enumerate(entity["tokens"]):
                    want[i] = ("B-" if n == 0 else "I-") + entity["label"]
            assert row["ner_tags"] == want == [tag for _, tag in doc]
            assert row["tokens"] == [t["text"] for t in tokens] == [t for t, _ in doc]
            assert row["bboxes"] == [layout_box(t["box"], obj.inputs["width"], obj.inputs["height"])
                                     for t in tokens]
            assert all(0 <= v <= 1000 for b in row["bboxes"] for v in b)
    first = next(r for r in rows if r["id"] == "0")
    w, h = by_id["0"].inputs["width"], by_id["0"].inputs["height"]
    assert first["bboxes"][0] == [int(1000 * 102 / w), int(1000 * 16 / h), int(1000 * 174 / w),
                                  int(1000 * 38 / h)]


def test_a_label_with_whitespace_is_refused_for_conll_whose_readers_split_at_it(tmp_path):
    # `spacy convert` (conll_ner_to_docs) splits a line at any whitespace: "B-Product Name" would be "Product"
    objects = [labeled(0, TaskType.named_entity, {"source": "Buy Acme Widget"},
                       entities=(Span("Product Name", 4, 15),))]
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.conll: label 'Product Name' has whitespace"):
        write(write_conll, objects, tmp_path, labels=["Product Name"])
    assert not (tmp_path / "tweets" / "conll").exists()
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.conll: label 'Product Name' has whitespace"):
        check_transforms({"conll": {}}, SETTINGS, labels=["Product Name"], task_type=TaskType.named_entity)
    renamed = TransformsConfig(label_map={"Product Name": "Product_Name"})
    check_transforms({"conll": {}, "jsonl": {}}, renamed, labels=["Product Name"], task_type=TaskType.named_entity)
    check_transforms({"jsonl": {}}, SETTINGS, labels=["Product Name"], task_type=TaskType.named_entity)
    with pytest.raises(ConfigError, match=r"hint: transforms\.label_map renames 'Product' to it: a name without "
                                          r"whitespace, e.g\. 'Product_Name'$"):
        check_transforms({"conll": {}}, TransformsConfig(label_map={"Product": "Product Name"}), labels=["Product"],
                         task_type=TaskType.named_entity)
    run_transforms(lambda: iter(objects), tmp_path / "tweets", steps={"conll": {}}, settings=renamed,
                   labels=["Product Name"])
    assert read_conll(tmp_path / "tweets" / "conll" / f"{split_of('0', SETTINGS.split)}.conll") == [
        [("Buy", "O"), ("Acme", "B-Product_Name"), ("Widget", "I-Product_Name")]]


def test_conll_needs_tokens_for_image_objects(tmp_path):
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.conll: object '0' has no input field 'tokens'"):
        write(write_conll, boxes(2), tmp_path)


# --- COCO and YOLO ---------------------------------------------------------------------------------


def test_coco_loads_with_pycocotools(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    objects = boxes() + [labeled(50, TaskType.bounding_box, {"source-ref": "s3://b/x/edge.png"},
                                 boxes=(Box("Positive", 190, 90, 20, 20), Box("Negative", 300, 0, 5, 5)),
                                 image_size=(200, 100, 3))]
    written = write(write_coco, objects, tmp_path)
    by_id = {o.object_id: o for o in objects}
    expected = split_ids(objects)
    assert written.problem_count == 2  # one box cut to the image, one outside it dropped
    for split in SPLITS:
        coco = coco_module.COCO(str(tmp_path / "tweets" / "coco" / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == SENTIMENT
        images = coco.loadImgs(coco.getImgIds())
        assert len(images) == len(expected[split]) == written.counts[split]
        for image, object_id in zip(images, expected[split]):
            obj = by_id[object_id]
            assert image["coco_url"] == obj.inputs["source-ref"]
            # two buckets share no folder: file_name starts with the bucket
            assert coco.dataset["info"]["url"] == "s3://"
            assert image["file_name"] == obj.inputs["source-ref"].removeprefix("s3://")
            assert (image["width"], image["height"]) == (200, 100)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
            if object_id == "50":
                assert [a["bbox"] for a in anns] == [[190, 90, 10, 10]]
                continue
            assert [(SENTIMENT[a["category_id"] - 1], a["bbox"], a["area"], a["iscrowd"]) for a in anns] == [
                (b.label, [b.left, b.top, b.width, b.height], b.width * b.height, 0) for b in obj.boxes]
    assert any(not o.boxes for o in objects)  # images with zero boxes are listed too


def test_coco_images_of_one_name_in_two_folders_keep_their_folders(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    refs = ["s3://b/imgs/x/same.jpg", "s3://b/imgs/y/same.jpg", "s3://b/imgs/other.jpg"]
    objects = [labeled(i, TaskType.bounding_box, {"source-ref": ref}, boxes=(Box("Positive", 1, 1, 2, 2),),
                       image_size=(10, 10, 3)) for i, ref in enumerate(refs)]
    settings = TransformsConfig(split=SplitConfig(train=1.0, validation=0.0, test=0.0))
    write(write_coco, objects, tmp_path, settings=settings)
    coco = coco_module.COCO(str(tmp_path / "tweets" / "coco" / "train.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert [(i["file_name"], i["coco_url"]) for i in images] == [
        ("x/same.jpg", refs[0]), ("y/same.jpg", refs[1]), ("other.jpg", refs[2])]
    # info.url is the folder the names are under: `aws s3 sync` it, give the copy as the image root
    assert all(coco.dataset["info"]["url"] + i["file_name"] == i["coco_url"] for i in images)
    assert [len(coco.getAnnIds(imgIds=[i["id"]])) for i in images] == [1, 1, 1]


def test_coco_refuses_two_images_that_would_share_a_file_name(tmp_path):
    refs = ["https://h/imgs/a.jpg?v=1", "https://h/imgs/b.jpg", "https://h/imgs/a.jpg?v=2"]
    objects = [labeled(i, TaskType.bounding_box, {"source-ref": ref}, image_size=(10, 10, 3))
               for i, ref in enumerate(refs)]
    with pytest.raises(StoreError, match=r"^coco: two images have the file_name 'a\.jpg': object '0' "
                                         r"\(https://h/imgs/a\.jpg\?v=1\) and object '2' \(https://h/imgs/a\.jpg\?v=2\)$"):
        write(write_coco, objects, tmp_path)
    assert not (tmp_path / "tweets" / "coco").exists()


def test_image_names_are_paths_under_the_shared_folder():
    assert image_names(["s3://b/a.jpg"]) == ("s3://b/", ["a.jpg"])
    assert image_names(["s3://b/p/a.jpg", "s3://b/p/q/a.jpg"]) == ("s3://b/p/", ["a.jpg", "q/a.jpg"])
    assert image_names(["s3://b/p/a.jpg", "s3://b/pq/a.jpg"]) == ("s3://b/", ["p/a.jpg", "pq/a.jpg"])
    assert image_names(["/data/imgs/a.png", "/data/imgs/b/c.png"]) == ("/data/imgs/", ["a.png", "b/c.png"])
    assert image_names(["s3://b/a.jpg", "https://b/a.jpg"]) == ("", ["b/a.jpg", "b/a.jpg"])
    assert image_names([]) == ("", [])


def test_yolo_normalizes_exactly(tmp_path):
    assert yolo_line(2, [20, 10, 40, 30], 200, 100) == "2 0.200000 0.250000 0.200000 0.300000"
    objects = boxes(12)
    written = write(write_yolo, objects, tmp_path)
    root = tmp_path / "tweets" / "yolo"
    import yaml

    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data == {"train": "images/train", "val": "images/validation",
                    "test": "images/test", "nc": 3, "names": SENTIMENT}
    expected = split_ids(objects)
    for split in SPLITS:
        files = sorted(p.name for p in (root / "labels" / split).iterdir())
        assert files == sorted(f"img-{i}.txt" for i in expected[split])
        assert written.counts[split] == len(files)
    for obj in objects:
        lines = (root / "labels" / split_of(obj.object_id, SETTINGS.split) /
                 f"img-{obj.object_id}.txt").read_text().splitlines()
        want = []
        for b in obj.boxes:
            cx, cy = (b.left + b.width / 2) / 200, (b.top + b.height / 2) / 100
            want.append([float(SENTIMENT.index(b.label)), cx, cy, b.width / 200, b.height / 100])
        got = [[float(v) for v in line.split()] for line in lines]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=5e-7)
    box3 = (root / "labels" / split_of("3", SETTINGS.split) / "img-3.txt").read_text()
    # Box("Neutral", 20, 10, 22, 12) on 200x100: cx = 31/200, cy = 16/100.
    assert box3.splitlines()[2] == "2 0.155000 0.160000 0.110000 0.120000"


def ultralytics_dataset(yaml_file: Path) -> dict[str, Path]:
    """train/val/test as Ultralytics resolves them (ultralytics/data/utils.py, check_det_dataset):
    against `path`, else the yaml file's folder; a relative `path` against the working directory
    (else its DATASETS_DIR, left out here). Ultralytics itself needs torch: not a test dependency."""
    import yaml

    data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    path = Path(data.get("path") or yaml_file.parent)
    return {k: (path / data[k]).resolve() for k in ("train", "val", "test")}


def test_yolo_data_yaml_finds_the_images_where_the_dataset_ends_up(tmp_path, monkeypatch):
    # collect writes in a staging folder (`.<out>.<hex>.part/<dataset>`) and moves it to --out
    staging = tmp_path / ".cats.cb97904e.part" / "cats"
    write_yolo(iter(boxes(12)), staging, labels=SENTIMENT, options={}, settings=SETTINGS,
               images=image_store(tmp_path, boxes(12)))
    final = tmp_path / "datasets" / "cats"
    final.parent.mkdir()
    staging.replace(final)
    (tmp_path / ".cats.cb97904e.part").rmdir()
    yaml_file = final / "yolo" / "data.yaml"
    assert ".part" not in yaml_file.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # Ultralytics is run from anywhere
    dirs = ultralytics_dataset(yaml_file)
    assert dirs == {"train": final / "yolo" / "images" / "train", "val": final / "yolo" / "images" / "validation",
                    "test": final / "yolo" / "images" / "test"}
    # each image is in its split's folder, its label file where Ultralytics looks (img2label_paths)
    split = split_of("3", SETTINGS.split)
    image = dirs["val" if split == "validation" else split] / "img-3.jpg"
    assert image.read_bytes() == image_bytes("s3://bucket/imgs/img-3.jpg")
    label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")
    assert label.read_text().splitlines()[2] == "2 0.155000 0.160000 0.110000 0.120000"


def test_yolo_refuses_two_images_with_one_stem(tmp_path):
    same = [labeled(i, TaskType.bounding_box, {"source-ref": f"s3://b/{d}/same.jpg"},
                    image_size=(10, 10, 3)) for i, d in enumerate(["a", "b", "c", "d", "e", "f"])]
    # named as in the dataset, not by the staging folder it was written in
    with pytest.raises(StoreError, match=r"^yolo/labels/(train|validation|test)/same\.txt: two \w+ images have this "
                                         r"label file: object '\d' \(s3://b/\w/same\.jpg\) and one before it \(the "
                                         r"same image, or one of its name in another folder: "
                                         r"transforms\.steps\.yolo\.folders=true keeps the folders\)$"):
        write(write_yolo, same, tmp_path)
    assert not (tmp_path / "tweets" / ".yolo.partial").exists()


def test_yolo_folders_keeps_the_images_of_one_name_apart_where_ultralytics_finds_them(tmp_path):
    refs = [f"s3://bucket/receipts/store-{i % 3}/same.jpg" for i in range(3)] + ["s3://bucket/other.jpg"]
    objects = [labeled(i, TaskType.bounding_box, {"source-ref": ref}, boxes=(Box("Positive", 1, 2, 4, 4),),
                       image_size=(10, 10, 3)) for i, ref in enumerate(refs)]
    written = write(write_yolo, objects, tmp_path, folders=True)
    root = tmp_path / "tweets" / "yolo"
    assert written.images == 4 and sum(written.counts.values()) == 4
    images = sorted(p for p in (root / "images").rglob("*") if p.is_file())
    assert sorted(p.relative_to(root / "images").as_posix().partition("/")[2] for p in images) \
        == ["bucket/other.jpg", *(f"bucket/receipts/store-{i}/same.jpg" for i in range(3))]
    for image in images:  # Ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix .txt
        ref = "s3://" + image.relative_to(root / "images").as_posix().partition("/")[2]
        assert image.read_bytes() == image_bytes(ref)
        label = Path("/labels/".join(str(image).rsplit("/images/", 1))).with_suffix(".txt")
        assert label.read_text() == "0 0.300000 0.400000 0.400000 0.400000\n"
    assert written.paths[-3:] == [root / "images" / s for s in SPLITS]
    twice = [labeled(i, TaskType.bounding_box, {"source-ref": "s3://bucket/other.jpg"}, image_size=(10, 10, 3))
             for i in range(6)]  # one image, labeled in two merged runs, say
    with pytest.raises(StoreError, match=r"^yolo/labels/\w+/bucket/other\.txt: two \w+ images have this label file: "
                                         r".* \(the same image, or one of its name with another suffix\)$"):
        write(write_yolo, twice, tmp_path / "again", folders=True)
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.yolo\.folders: 'yes' is not true or false"):
        check_transforms({"yolo": {"folders": "yes"}}, SETTINGS, labels=SENTIMENT, task_type=TaskType.bounding_box)


def test_yolo_copies_each_image_beside_its_labels(tmp_path):
    objects = boxes(12)
    written = write(write_yolo, objects, tmp_path)
    root = tmp_path / "tweets" / "yolo"
    assert written.images == 12
    for split, ids in split_ids(objects).items():
        images = sorted((root / "images" / split).iterdir())
        assert [p.name for p in images] == sorted(f"img-{i}.jpg" for i in ids)
        assert sorted(p.stem for p in (root / "labels" / split).iterdir()) == [p.stem for p in images]
        for path in images:
            assert path.read_bytes() == image_bytes(f"s3://bucket/imgs/{path.name}")
    assert root / "images" / "train" in written.paths


def test_coco_copies_the_images_under_their_file_names_once_each(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    refs = ["s3://b/imgs/x/same.jpg", "s3://b/imgs/y/same.jpg", "s3://b/imgs/other.jpg", "s3://b/imgs/other.jpg"]
    objects = [labeled(i, TaskType.bounding_box, {"source-ref": ref}, boxes=(Box("Positive", 1, 1, 2, 2),),
                       image_size=(10, 10, 3)) for i, ref in enumerate(refs)]
    written = write(write_coco, objects, tmp_path)
    root = tmp_path / "tweets" / "coco"
    assert written.images == 3  # two objects of one image: one copy
    assert sorted(p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*") if p.is_file()) \
        == ["other.jpg", "x/same.jpg", "y/same.jpg"]
    for split in SPLITS:  # a loader joins file_name to the images folder
        coco = coco_module.COCO(str(root / f"{split}.json"))
        for image in coco.loadImgs(coco.getImgIds()):
            assert (root / "images" / image["file_name"]).read_bytes() == image_bytes(image["coco_url"])


@pytest.mark.parametrize("writer", [write_coco, write_yolo])
def test_a_missing_image_names_its_object_and_leaves_nothing_behind(tmp_path, writer):
    objects = boxes(6)
    copier = image_store(tmp_path, objects)
    (tmp_path / "store" / "bucket" / "imgs" / "img-3.jpg").unlink()
    step = "coco" if writer is write_coco else "yolo"
    with pytest.raises(StoreError, match=rf"^{step}: object '3': s3://bucket/imgs/img-3\.jpg: no such object \(looked "
                                         rf"in .*img-3\.jpg\)\n  hint: transforms\.steps\.{step}\.images=false "
                                         "writes the annotations without the images$"):
        writer(iter(objects), tmp_path / "tweets", labels=SENTIMENT, options={}, settings=SETTINGS, images=copier)
    assert sorted(p.name for p in (tmp_path / "tweets").iterdir()) == []


@pytest.mark.parametrize("writer", [write_coco, write_yolo])
def test_images_false_writes_the_annotations_alone(tmp_path, writer):
    step = "coco" if writer is write_coco else "yolo"
    written = writer(iter(boxes(6)), tmp_path / "tweets", labels=SENTIMENT, options={"images": False},
                     settings=SETTINGS)  # no copier needed
    assert written.images is None and not (tmp_path / "tweets" / step / "images").exists()
    assert sum(written.counts.values()) == 6
    with pytest.raises(ConfigError, match=rf"^transforms\.steps\.{step}\.images: there is no storage to copy the "
                                          rf"images from here\n  hint: set transforms\.steps\.{step}\.images=false"):
        writer(iter(boxes(6)), tmp_path / "again", labels=SENTIMENT, options={}, settings=SETTINGS)
    with pytest.raises(ConfigError,
                       match=rf"^transforms\.steps\.{step}\.images: 'yes' is not true or false"):
        check_transforms({step: {"images": "yes"}}, SETTINGS, labels=SENTIMENT, task_type=TaskType.bounding_box)


def test_an_image_name_that_would_leave_the_images_folder_is_refused(tmp_path):
    refs = ["s3://b/x/../a.jpg", "s3://b/y/c.jpg"]
    objects = [labeled(i, TaskType.bounding_box, {"source-ref": ref}, image_size=(10, 10, 3))
               for i, ref in enumerate(refs)]
    with pytest.raises(StoreError, match=r"^coco: image s3://b/x/\.\./a\.jpg: its name 'x/\.\./a\.jpg' is not a "
                                         r"path inside coco/images/"):
        write_coco(iter(objects), tmp_path / "tweets", labels=SENTIMENT, options={}, settings=SETTINGS,
                   images=ImageCopier(LocalStore(tmp_path / "store")))
    assert not (tmp_path / "tweets" / "coco").exists()


# --- run_transforms --------------------------------------------------------------------------------


def test_run_transforms_applies_label_map_and_filters_on_fresh_objects(tmp_path):
    calls = []
    objects = tweets(30) + [labeled(90, TaskType.text_classification, {"source": "x"},
                                    status=Status.failed)]

    def factory():
        calls.append(1)
        return iter(objects)

    settings = TransformsConfig(label_map={"Neutral": "Negative"}, min_confidence=0.6)
    out = run_transforms(factory, tmp_path / "tweets", steps={"jsonl": {}, "hf_datasets": None},
                         settings=settings, labels=SENTIMENT)
    assert len(calls) == 3  # the task type from a first look, then once per step
    kept = [o for o in objects if o.status is Status.labeled and o.confidence >= 0.6]
    assert out["jsonl"].skipped == len(objects) - len(kept)
    records = [json.loads(x) for s in SPLITS
               for x in (tmp_path / "tweets" / "jsonl" / f"{s}.jsonl").read_text().splitlines()]
    assert sorted(r["tweet_id"] for r in records) == sorted(o.inputs["tweet_id"] for o in kept)
    assert {r["label"] for r in records} == {"Positive", "Negative"}
    assert sum(out["hf_datasets"].counts.values()) == len(kept)
    table = pa.concat_tables([pq.read_table(p) for p in out["hf_datasets"].paths])
    assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]["label"][
        "names"] == ["Positive", "Negative"]


def test_run_transforms_reports_unknown_and_unfitting_steps_at_once(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        run_transforms(lambda: iter(tweets(3)), tmp_path, settings=SETTINGS, labels=SENTIMENT,
                       steps={"coco": {}, "parquet": {}, "table": {"format": "xlsx"},
                              "spacy": {"lang": "en", "model": "x"}})
    assert sorted(e.key for e in info.value.errors) == [
        "transforms.steps.coco", "transforms.steps.parquet", "transforms.steps.spacy.model",
        "transforms.steps.table.format"]
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match=r"^transforms\.steps\.coco: does not fit a named_entity job"):
        check_transforms({"coco": {}}, SETTINGS, labels=[], task_type=TaskType.named_entity)
    with pytest.raises(ConfigError, match=r"^transforms\.label_map: 'Neutrl' is not a label"):
        check_transforms({}, TransformsConfig(label_map={"Neutrl": "x"}), labels=SENTIMENT,
                         task_type=TaskType.text_classification)
    check_transforms({name: {} for name in TRANSFORMS if name != "spacy"}, SETTINGS,
                     labels=RECEIPT_LABELS, task_type=TaskType.custom)


def test_run_transforms_writes_every_image_format_for_receipts(tmp_path):
    store = LocalStore(tmp_path / "store")  # the sample's images, where the objects' source-refs say
    for obj in receipts():
        name = obj.inputs["source-ref"].rpartition("/")[2]
        store.put_file(ROOT / "data" / "receipts" / "images" / name, obj.inputs["source-ref"])
    out = run_transforms(receipts, tmp_path / "receipts", settings=SETTINGS, labels=RECEIPT_LABELS,
                         steps={"coco": {}, "yolo": {}, "conll": {}, "table": {"format": "tsv"}},
                         images=ImageCopier(store))
    assert {k: sum(v.counts.values()) for k, v in out.items()} == {
        "coco": 30, "yolo": 30, "conll": 30, "table": 30}
    assert all(p.exists() for v in out.values() for p in v.paths)
    distinct = {obj.inputs["source-ref"] for obj in receipts()}
    assert out["coco"].images == len(distinct) and out["yolo"].images == 30
    for path in (tmp_path / "receipts" / "coco" / "images").iterdir():
        assert path.read_bytes() == (ROOT / "data" / "receipts" / "images" / path.name).read_bytes()
    with duckdb.connect(str(tmp_path / "receipts" / "gtrun.duckdb")) as con:
        assert con.execute('SELECT count(*), min(receipt_id) FROM "receipts"').fetchone() == (30, 1)


def test_layout_of_receipts_whose_scan_is_finer_than_the_ocr(tmp_path):
    # The tokens' boxes are in the input's width x height (the OCR's page); the workers drew on a scan
    # of twice that size: boxes without token indices find their tokens by centre in the OCR's page.
    objects = []
    for obj in receipts(use_indices=False):
        w, h = obj.inputs["width"], obj.inputs["height"]
        scaled = tuple(Box(b.label, 2 * b.left, 2 * b.top, 2 * b.width, 2 * b.height) for b in obj.boxes)
        objects.append(dataclasses.replace(obj, boxes=scaled, image_size=(2 * w, 2 * h, 3)))
    written = write(write_conll, objects, tmp_path, labels=RECEIPT_LABELS)
    assert written.problems == []
    source = [json.loads(x) for x in (ROOT / "data" / "receipts" / "receipts.jsonl").read_text().splitlines()]
    for split in SPLITS:
        for row in map(json.loads, (tmp_path / "tweets" / "conll" / f"{split}.layout.jsonl").read_text().splitlines()):
            line = source[int(row["id"])]
            want = ["O"] * len(line["tokens"])
            for entity in line["entities"]:
                for n, i in enumerate(entity["tokens"]):
                    want[i] = ("B-" if n == 0 else "I-") + entity["label"]
            assert row["ner_tags"] == want
            assert row["bboxes"] == [layout_box(t["box"], line["width"], line["height"]) for t in line["tokens"]]


def test_a_box_overlapping_an_earlier_one_starts_its_own_entity_after_it(tmp_path):
    # A worker boxes the tax amount, then a sloppy second tax box over "Tax 10% 3.64 TOTAL": the
    # amount stays with the first box. The second's tokens after the amount ("TOTAL") must not read
    # as the amount's entity going on (B-tax I-tax B-tax I-tax): each run of a box's tokens that
    # another entity interrupts starts with B-, as IOB2 readers (seqeval, conlleval) split entities.
    tokens = [{"text": t, "box": [20 + 60 * n, 10, 50, 20]} for n, t in enumerate(["Tax", "10%", "3.64", "TOTAL", "40.01"])]
    inputs = {"source-ref": "s3://b/r.png", "tokens": tokens, "width": 400, "height": 40}
    objects = [labeled(0, TaskType.custom, inputs, image_size=(400, 40, 3),
                       boxes=(Box("tax", 135, 5, 60, 30, tokens=(2,)), Box("tax", 15, 5, 250, 30, tokens=(0, 1, 2, 3)),
                              Box("total", 255, 5, 60, 30, tokens=(4,))))]
    written = write(write_conll, objects, tmp_path, labels=RECEIPT_LABELS)
    assert written.problems == ["object '0': box 'tax' shares tokens [2] with an earlier box"]
    [row] = [json.loads(x) for s in SPLITS
             for x in (tmp_path / "tweets" / "conll" / f"{s}.layout.jsonl").read_text().splitlines()]
    assert row["ner_tags"] == ["B-tax", "I-tax", "B-tax", "B-tax", "B-total"]
