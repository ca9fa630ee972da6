"""The columnar collect path (DuckDB) writes what the Python parser path writes, or steps aside."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from runner.collect import collect as c
from runner.collect.columnar import LABEL_KEY, SAMPLE_LINES, Columnar, NotColumnar, batch_rows, records_sql, split_code_sql
from runner.collect.transforms import SPLITS, split_of
from runner.errors import ConfigError, ManifestError
from runner.schema import OnError, SplitConfig, TaskType, TransformsConfig
from tests.moto_fixtures import aws_env, moto_server, reset_moto  # noqa: F401

TYPES = {
    TaskType.text_classification: ("sentiment", "groundtruth/text-classification", ["Positive", "Negative", "Neutral"]),
    TaskType.text_multilabel: ("topics", "groundtruth/text-classification-multilabel", ["billing", "delivery", "app"]),
    TaskType.bounding_box: ("vehicles", "groundtruth/object-detection", ["car", "bus", "bike"]),
    TaskType.named_entity: ("entities", "groundtruth/text-span", ["Person", "Place"]),
}
TEXTS = ["plain", 'quote " comma , tab \t newline \n end', "unicode é € 😀 <b>&amp;</b>", "back\\slash /"]


def output_line(task: TaskType, i: int, rng: random.Random) -> dict:
    """One output-manifest line in Ground Truth's shapes, with the awkward cases mixed in."""
    attr, kind, labels = TYPES[task]
    meta: dict = {"job-name": "labeling-job/t", "type": kind, "human-annotated": "yes",
                  "creation-date": "2026-01-01T00:00:00.000000"}
    line: dict = {"source-ref" if task is TaskType.bounding_box else "source":
                  f"s3://b/{i}.png" if task is TaskType.bounding_box else f"{rng.choice(TEXTS)} #{i}",
                  "id": i, "score": rng.random(), "flag": i % 2 == 0, "note": None if i % 5 else "n"}
    if i % 17 == 3:  # failed
        line[attr + "-metadata"] = {"failure-reason": "ClientError: expired", "type": kind, "job-name": "labeling-job/t"}
        return line
    if i % 19 == 4:  # not labeled (a stopped job)
        return line
    if task is TaskType.text_classification:
        k = rng.randrange(len(labels))
        line[attr] = k
        meta["confidence"] = rng.choice([round(rng.random(), 2), 1, None])
        if i % 3:
            meta["class-name"] = labels[k]  # else named by the job's labels
    elif task is TaskType.text_multilabel:
        chosen = rng.sample(range(len(labels)), rng.randint(0, 3))
        line[attr] = chosen
        meta["class-map"] = {str(k): labels[k] for k in chosen}
        meta["confidence-map"] = {str(k): round(rng.random(), 2) for k in chosen}
    elif task is TaskType.bounding_box:
        boxes = [{"class_id": rng.randrange(len(labels)), "left": rng.randrange(500), "top": rng.randrange(300),
                  "width": rng.randint(1, 90), "height": rng.choice([rng.randint(1, 90), 12.5])}
                 for _ in range(rng.choice([0, 1, 2, 3]))]
        line[attr] = {"image_size": [{"width": 640, "height": 480, "depth": 3}], "annotations": boxes}
        meta["objects"] = [{"confidence": rng.choice([round(rng.random(), 2), None, 1])} for _ in boxes]
        if i % 7 == 1:
            meta["objects"] = meta["objects"][:1]  # fewer items than boxes: the rest have none
        if i % 11 != 2:
            meta["class-map"] = {str(b["class_id"]): labels[b["class_id"]] for b in boxes}  # else: the labels
    else:
        spans = []
        for _ in range(rng.randint(0, 3)):
            start = rng.randrange(10)
            spans.append({"label": rng.choice(labels), "startOffset": start, "endOffset": start + rng.randint(1, 8)})
        line[attr] = {"annotations": {"labels": [{"label": x} for x in labels], "entities": spans}}
        if i % 13 != 6:
            meta["entities"] = [{"confidence": round(rng.random(), 2)} for _ in spans]
    line[attr + "-metadata"] = meta
    return line


def write_manifest(path: Path, lines: list[dict] | list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for line in lines:
            out.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")
    return path


def manifest(tmp_path: Path, task: TaskType, n: int = 600, seed: int = 1) -> Path:
    rng = random.Random(seed)
    return write_manifest(tmp_path / f"{task.value}.manifest", [output_line(task, i, rng) for i in range(n)])


def run(path: Path, task: TaskType, out: Path, settings: TransformsConfig, *, columnar: bool) -> dict:
    attr, _, labels = TYPES[task]
    output = c.Output(name=out.name, manifest_uri=str(path), storage=None, task_type=task,
                      attribute=attr, labels=labels)
    return c.collect([output], out, settings, dataset=out.name, provenance={}, use_columnar=columnar)


def dataset_files(out: Path) -> dict:
    # the jsonl lines as written, byte for byte: JSON that only parses the same is not the same file
    files = {f"jsonl/{s}": (out / "jsonl" / f"{s}.jsonl").read_bytes().splitlines()
             for s in ("train", "validation", "test") if (out / "jsonl").is_dir()}
    if (out / "table").is_dir():
        files["table"] = pq.read_table(out / "table" / f"{out.name}.parquet").to_pylist()
    for split in sorted((out / "hf").glob("*.parquet")) if (out / "hf").is_dir() else ():
        table = pq.read_table(split)  # the rows, and the schema with the `datasets` features
        files[f"hf/{split.name}"] = (table.to_pylist(), table.schema)
    # but its files' checksums (their mtimes are never the same twice; the files are compared here) and
    # the time it was collected at
    files["report"] = timeless({k: v for k, v in json.loads((out / "report.json").read_text()).items()
                                if k != "checksums"})
    files["not_labeled"] = (out / "not_labeled.jsonl").read_bytes().splitlines()
    return files


def timeless(report: dict) -> dict:
    """The report's figures but for the time it was collected at (its provenance's `collected`)."""
    assert report["provenance"]["collected"]
    return {**report, "provenance": {k: v for k, v in report["provenance"].items() if k != "collected"}}


def both_ways(path: Path, task: TaskType, out: Path, settings: TransformsConfig, *,
              refused: bool = False) -> tuple[dict, dict] | None:
    """Collect `path` through the columnar path into out/fast/ds and through the parser into
    out/slow/ds, and assert they wrote the same files: (columnar result, parser result). With
    `refused`, a ManifestError of the first is fine when the parser raises the same (then None)."""
    try:
        fast = run(path, task, out / "fast" / "ds", settings, columnar=True)
    except ManifestError as exc:
        if not refused:
            raise
        with pytest.raises(ManifestError, match=re.escape(str(exc))):  # the parser refuses the line: both paths do
            run(path, task, out / "slow" / "ds", settings, columnar=False)
        return None
    slow = run(path, task, out / "slow" / "ds", settings, columnar=False)
    assert dataset_files(out / "fast" / "ds") == dataset_files(out / "slow" / "ds")
    return fast, slow


SETTINGS = {
    "defaults": TransformsConfig(steps={"table": {}, "jsonl": {}}),
    "thresholds": TransformsConfig(steps={"table": {}, "jsonl": {}, "hf_datasets": {}}, min_confidence=0.4,
                                   split=SplitConfig(train=0.5, validation=0.5, test=0.0, salt="s")),
    "hf_datasets": TransformsConfig(steps={"hf_datasets": {}, "jsonl": {}}),
    # both filters: what they kept is counted in the pass, as the parser's path counts it
    "filters": TransformsConfig(steps={"table": {}, "jsonl": {}}, min_confidence=0.3, min_agreement=0.5),
}


@pytest.mark.parametrize("task", list(TYPES), ids=lambda t: t.value)
@pytest.mark.parametrize("name", list(SETTINGS))
def test_columnar_writes_what_the_python_path_writes(tmp_path, caplog, task, name):
    settings = SETTINGS[name]
    path = manifest(tmp_path, task)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        fast, slow = both_ways(path, task, tmp_path, settings)
    assert "(columnar)" in caplog.text  # the columnar path took it
    a = dataset_files(tmp_path / "fast" / "ds")
    kept = sum(len(a[f"jsonl/{s}"]) for s in ("train", "validation", "test"))
    assert kept == (len(a["table"]) if "table" in a else sum(len(a[f"hf/{s}.parquet"][0]) for s in SPLITS)) > 100
    assert timeless(fast["report"]) == timeless(slow["report"])
    assert {k: v.counts for k, v in fast["written"].items()} == {k: v.counts for k, v in slow["written"].items()}
    assert {k: v.skipped for k, v in fast["written"].items()} == {k: v.skipped for k, v in slow["written"].items()}
    # the objects each split got, from the counts the transforms have (the same on both paths: report.json is)
    assert a["report"]["transforms"]["split_objects"] == {s: len(a[f"jsonl/{s}"]) for s in SPLITS}
    counts = a["report"]["counts"]
    assert counts["failed"] > 0 and counts["unlabeled"] > 0 and counts["objects"] == 600
    if "hf_datasets" in settings.steps:  # a file for each split that has objects, none for an empty one
        assert {k for k in a if k.startswith("hf/")} == {f"hf/{s}.parquet" for s in SPLITS if getattr(settings.split, s)}


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.bounding_box], ids=lambda t: t.value)
@pytest.mark.parametrize("steps", [("jsonl",), ("hf_datasets", "table")], ids="+".join)
def test_inputs_in_more_than_one_split_are_counted_alike_on_both_paths(tmp_path, caplog, task, steps):
    # 600 objects of 40 inputs; a line written with ASCII escapes ("caf\u00e9") holds the same text
    rng = random.Random(5)
    field = "source-ref" if task is TaskType.bounding_box else "source"
    lines = []
    for i in range(600):
        line = output_line(task, i, rng)
        line[field] = f"s3://b/café-{i % 40}.png" if task is TaskType.bounding_box else f"café ☕ {i % 40}"
        if i == 7:
            line[field] = None  # no value: not an input of any split
        lines.append(json.dumps(line, ensure_ascii=i % 2 == 0))
    path = write_manifest(tmp_path / "dup.manifest", lines)
    settings = TransformsConfig(steps=dict.fromkeys(steps, {}))
    with caplog.at_level(logging.INFO, logger="runner.collect"):
        fast, slow = both_ways(path, task, tmp_path, settings)
    assert "(columnar)" in caplog.text and "counted from the columnar pass's hashes" in caplog.text
    assert "counted from the split files" in caplog.text  # the parser's path reads them from its files
    splits: dict[str, set[str]] = {}
    rows: dict[str, int] = {}
    for s in SPLITS:
        if "jsonl" in steps:
            records = [json.loads(x) for x in (tmp_path / "fast" / "ds" / "jsonl" / f"{s}.jsonl").read_text().splitlines()]
        else:
            hf = tmp_path / "fast" / "ds" / "hf" / f"{s}.parquet"
            records = pq.read_table(hf).to_pylist() if hf.exists() else []
        for r in records:
            if r[field] is not None:
                splits.setdefault(r[field], set()).add(s)
                rows[r[field]] = rows.get(r[field], 0) + 1
    leaked = [v for v, where in splits.items() if len(where) > 1]
    assert len(leaked) > 20  # 40 inputs of about 13 objects each: most are in two splits or three
    assert fast["report"]["transforms"]["split_leaks"] == {"field": field, "values": len(leaked),
                                                           "objects": sum(rows[v] for v in leaked)}


def test_split_leaks_counts_each_value_in_two_or_three_splits_once(tmp_path):
    import pyarrow as pa

    # a: train and validation; b: validation and test; c: all three; d: train twice; e: test alone;
    # no value (NULL) in two splits: not an input
    pairs = [(0, "a"), (1, "a"), (1, "b"), (2, "b"), (0, "c"), (1, "c"), (2, "c"), (2, "c"), (0, "d"), (0, "d"),
             (2, "e"), (0, None), (1, None)]
    hashes = {"a": 11, "b": 12, "c": 13, "d": 14, "e": 15}
    pq.write_table(pa.table({"s": pa.array([s for s, _ in pairs], pa.int8()),
                             "h": pa.array([hashes.get(v) for _, v in pairs], pa.uint64())}), tmp_path / "h.parquet")
    found = c.split_leaks(tmp_path, [], c.DuckDBConfig(), tmp_path / "spill", hashes=("source", tmp_path / "h.parquet"))
    assert found == {"field": "source", "values": 3, "objects": 8}  # a, b, c: 2 + 2 + 4 rows
    for split, values in (("train", "acdd"), ("validation", "abc"), ("test", "bcce")):  # the same, from jsonl files
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"source": v, "label": "x"}) + "\n" for v in values))
    files = [(s, f"{s}.jsonl") for s in ("train", "validation", "test")]
    assert c.split_leaks(tmp_path, files, c.DuckDBConfig(), tmp_path / "spill") == found


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.bounding_box], ids=lambda t: t.value)
@pytest.mark.parametrize("step", ["jsonl", "table"])
def test_jsonl_or_the_table_alone(tmp_path, caplog, task, step):
    # the pass leaves out what the other one needs: the jsonl text, or the table's string values
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        both_ways(manifest(tmp_path, task), task, tmp_path, TransformsConfig(steps={step: {}}))
    assert "(columnar)" in caplog.text
    assert {p.name for p in (tmp_path / "fast" / "ds").iterdir() if p.is_dir()} == {step}
    assert len(dataset_files(tmp_path / "fast" / "ds")) == (5 if step == "jsonl" else 3)


@pytest.mark.parametrize(("task", "old", "new"), [(TaskType.bounding_box, "bike", "car"),
                                                  (TaskType.text_classification, "Neutral", "Positive"),
                                                  (TaskType.named_entity, "Place", "Person")], ids=lambda x: str(x))
def test_a_label_map_renames_in_both_paths(tmp_path, task, old, new):
    settings = TransformsConfig(steps={"table": {}, "jsonl": {}, "hf_datasets": {}}, label_map={old: new})
    path = manifest(tmp_path, task)
    both_ways(path, task, tmp_path, settings)
    a = dataset_files(tmp_path / "fast" / "ds")
    # the report's distribution is the dataset's, after the map; the labels before it are kept beside it
    distribution = a["report"]["label_distribution"]
    assert distribution["before_transforms"]["counts"].get(old) and old not in distribution["counts"]
    key = LABEL_KEY[task]
    labels = [x if isinstance(x, str) else x["label"] for row in a["table"] for x in
              ([row[key]] if isinstance(row[key], str) else row[key] or [])]
    assert new in labels and old not in labels


def named_line(task: TaskType, i: int, rng: random.Random) -> dict:
    """output_line, each label named by the line itself (class-name, class-map), with odd class-maps
    mixed in: an index no box uses, one named twice, a null, keys that are not an index ("x", "²",
    which Python calls a digit and int() refuses), "03"."""
    attr, _, labels = TYPES[task]
    line = output_line(task, i, rng)
    meta = line.get(attr + "-metadata")
    if meta is None or "failure-reason" in meta:
        if meta is not None and i % 2:
            meta["class-map"] = {"7": "from-a-failed-line"}  # the parser reads a failed line's class-map too
        return line
    if task is TaskType.text_classification:
        meta["class-name"] = labels[line[attr]]
        if i == 40:
            meta["class-map"] = {"9": "Mixed"}  # not Ground Truth's, read all the same
    elif task is TaskType.bounding_box:
        used = {b["class_id"] for b in line[attr]["annotations"]}
        meta["class-map"] = {str(k): labels[k] for k in used}
        if i == 30:
            meta["class-map"].update({"5": "truck", "6": None, "x": "odd", "²": "odd", "03": "of-03", "01": "late"})
        if i > 200 and 1 in used:
            meta["class-map"]["1"] = "coach"  # a later name for index 1: a label of its own
    elif task is TaskType.text_multilabel and i == 30:
        meta["class-map"].update({"5": "refund", "6": None, "x": "odd", "²": "odd"})
    return line


def collect_unlabeled(path: Path, task: TaskType, attr: str, settings: TransformsConfig, out: Path,
                      columnar: bool) -> dict:
    """collect() of the manifest with no labels given, on the columnar path or the parser's."""
    output = c.Output(name="ds", manifest_uri=str(path), storage=None, task_type=task, attribute=attr, labels=[])
    return c.collect([output], out, settings, dataset="ds", provenance={}, use_columnar=columnar)


@pytest.mark.parametrize("task", list(TYPES), ids=lambda t: t.value)
def test_given_no_labels_the_columnar_pass_reads_them_as_the_parser_does(tmp_path, caplog, task):
    rng = random.Random(5)
    path = write_manifest(tmp_path / "out.manifest", [named_line(task, i, rng) for i in range(600)])
    attr = TYPES[task][0]
    settings = TransformsConfig(steps={"table": {}, "jsonl": {}, "hf_datasets": {}})

    with caplog.at_level(logging.INFO, logger="runner.collect"):
        fast = collect_unlabeled(path, task, attr, settings, tmp_path / "fast" / "ds", True)
        assert "(columnar)" in caplog.text and "the parser reads them off" not in caplog.text  # one pass
        slow = collect_unlabeled(path, task, attr, settings, tmp_path / "slow" / "ds", False)
        assert "no labels given: the parser reads them off" in caplog.text
    assert dataset_files(tmp_path / "fast" / "ds") == dataset_files(tmp_path / "slow" / "ds")
    labels = fast["report"]["labels"]
    assert labels == slow["report"]["labels"] and len(labels) >= len(TYPES[task][2])
    # a transform that needs the label list gets the same one (hf_datasets: ClassLabel names)
    features = [pq.read_schema(tmp_path / w / "ds" / "hf" / "train.parquet").metadata for w in ("fast", "slow")]
    assert features[0] == features[1] and all(json.dumps(x) in features[0][b"huggingface"].decode() for x in labels)
    if task is TaskType.bounding_box:
        # by class index (the first name of each: "01" comes after "1"'s bus), then "coach", used later
        assert labels == ["car", "bus", "bike", "of-03", "truck", "from-a-failed-line", "coach"]


def test_labels_read_off_the_output_are_in_ground_truths_class_index_order_on_both_paths(tmp_path, caplog):
    # single-label: the value is the class index, the class-name its name; first uses come in another order
    task = TaskType.text_classification
    attr, _, labels = TYPES[task]
    rng = random.Random(11)
    lines = [named_line(task, i, rng) for i in range(600)]
    for i in range(3):  # labeled lines; the first uses: Neutral, Negative, Positive
        lines[i][attr] = 2 - i
        lines[i][attr + "-metadata"]["class-name"] = labels[2 - i]
    path = write_manifest(tmp_path / "out.manifest", lines)
    settings = TransformsConfig(steps={"table": {}, "jsonl": {}, "hf_datasets": {}})

    with caplog.at_level(logging.INFO, logger="runner.collect"):
        fast = collect_unlabeled(path, task, attr, settings, tmp_path / "fast" / "ds", True)
        assert "(columnar)" in caplog.text
        slow = collect_unlabeled(path, task, attr, settings, tmp_path / "slow" / "ds", False)
    assert dataset_files(tmp_path / "fast" / "ds") == dataset_files(tmp_path / "slow" / "ds")
    # by index, the values' then the class-maps' (a failed line's {"7": ...}, line 40's {"9": "Mixed"})
    assert fast["report"]["labels"] == slow["report"]["labels"] == [*labels, "from-a-failed-line", "Mixed"]
    rows = dataset_files(tmp_path / "fast" / "ds")["hf/train.parquet"][0]
    by_source = {x["source"]: x[attr] for x in lines if x.get(attr) is not None}
    assert rows and all(row["label"] == by_source[row["source"]] for row in rows)  # hf's class index is Ground Truth's


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.text_multilabel, TaskType.bounding_box],
                         ids=lambda t: t.value)
def test_labels_that_name_an_index_otherwise_than_the_lines_stop_both_paths(tmp_path, caplog, task):
    attr, _, labels = TYPES[task]
    rng = random.Random(2)
    lines = [named_line(task, i, rng) for i in range(300)]
    path = write_manifest(tmp_path / "out.manifest", lines)
    swapped = [labels[1], labels[0], *labels[2:]]
    output = c.Output(name="ds", manifest_uri=str(path), storage=None, task_type=task, attribute=attr, labels=swapped)
    errors = []
    for columnar in (True, False):
        with pytest.raises(ManifestError) as exc:
            c.collect([output], tmp_path / f"ds-{columnar}", TransformsConfig(steps={"table": {}, "jsonl": {}}),
                      dataset="ds", provenance={}, use_columnar=columnar)
        errors.append(str(exc.value))
        assert not (tmp_path / f"ds-{columnar}").exists()
    assert errors[0] == errors[1]
    assert re.match(re.escape(str(path)) + r": line \d+: (box \d+: )?label index [01] is '\w+' in the line "
                    r"\(class-(name|map)\), but '\w+' in the labels given", errors[0]), errors[0]
    # past the lines Columnar.open learns from: the records pass steps aside for the parser to name the line
    far = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 200)]
    n, bad = next((n, x) for n, x in reversed(list(enumerate(far, 1)))
                  if attr in x and (task is not TaskType.text_classification or "class-name" in x[attr + "-metadata"]))
    assert n > SAMPLE_LINES
    if task is TaskType.text_classification:
        bad[attr + "-metadata"]["class-name"] = "Other"
    elif task is TaskType.text_multilabel:
        bad[attr], bad[attr + "-metadata"]["class-map"] = [0], {"0": "Other"}
    else:
        bad[attr]["annotations"] = [{"class_id": 0, "left": 1, "top": 2, "width": 3, "height": 4}]
        bad[attr + "-metadata"].update({"class-map": {"0": "Other"}, "objects": [{"confidence": 0.5}]})
    path = write_manifest(tmp_path / "far.manifest", far)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        assert both_ways(path, task, tmp_path / "far", TransformsConfig(steps={"table": {}, "jsonl": {}}),
                         refused=True) is None
    assert f"needs the Python parser (line {n} " in caplog.text
    with pytest.raises(ManifestError, match=f"^{re.escape(str(path))}: line {n}: .*'Other' in the line"):
        run(path, task, tmp_path / "far2" / "ds", TransformsConfig(steps={"jsonl": {}}), columnar=True)


def test_an_entity_label_not_among_the_labels_given_stops_both_paths(tmp_path, caplog):
    """Entities name their labels themselves, not by class index: one the list lacks would reach
    jsonl, conll and spacy as it is, and only hf_datasets (which indexes it) refused it."""
    task = TaskType.named_entity
    attr, _, labels = TYPES[task]
    rng = random.Random(5)
    lines = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 50)]
    n, bad = next((n, x) for n, x in reversed(list(enumerate(lines, 1)))
                  if x.get(attr) and x[attr]["annotations"]["entities"])
    assert n > SAMPLE_LINES  # past the lines Columnar.open learns from: the records pass sees it
    bad[attr]["annotations"]["entities"][0]["label"] = "Alien"
    path = write_manifest(tmp_path / "out.manifest", lines)
    for columnar in (True, False):
        with caplog.at_level(logging.INFO, logger="runner.collect.transforms"), pytest.raises(
                ManifestError, match=f"^{re.escape(str(path))}: line {n}: entity 0: label 'Alien' is not one of "
                                     r"the labels given \(Person, Place\)"):
            run(path, task, tmp_path / f"ds-{columnar}", TransformsConfig(steps={"jsonl": {}, "hf_datasets": {}}),
                columnar=columnar)
        assert not (tmp_path / f"ds-{columnar}").exists()
    assert f"needs the Python parser (line {n} " in caplog.text
    # on_error=skip reads past malformed lines, not a label list that is not the job's
    with pytest.raises(ManifestError, match="'Alien' is not one of the labels given"):
        run(path, task, tmp_path / "ds-skip", TransformsConfig(steps={"jsonl": {}}, on_error=OnError.skip), columnar=True)


def test_a_manifest_on_s3_is_copied_aside_once_for_every_pass(tmp_path, caplog, moto_server, aws_env,  # noqa: F811
                                                               monkeypatch):
    import boto3

    reset_moto(moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)  # smart_open's client: the standard settings
    task = TaskType.bounding_box
    path = manifest(tmp_path, task)
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="gt-out")
    s3.upload_file(str(path), "gt-out", "job/manifests/output/output.manifest")
    attr, _, labels = TYPES[task]
    output = c.Output(name="ds", manifest_uri="s3://gt-out/job/manifests/output/output.manifest", storage=None,
                      task_type=task, attribute=attr, labels=labels)
    with caplog.at_level(logging.INFO, logger="runner.collect"):
        shown: list[str] = []
        remote = c.collect([output], tmp_path / "s3" / "ds", SETTINGS["defaults"], dataset="ds", provenance={},
                           show=shown.append)
    assert "copied to" in caplog.text and "(columnar)" in caplog.text
    assert shown[0] == "copying the manifest" and shown[1].startswith("copying the manifest: ")
    assert [p.name for p in (tmp_path / "s3").iterdir()] == ["ds"]  # the copy went with the staging folder
    local = run(path, task, tmp_path / "local" / "ds", SETTINGS["defaults"], columnar=False)
    assert dataset_files(tmp_path / "s3" / "ds") == dataset_files(tmp_path / "local" / "ds")
    assert timeless(remote["report"]) == timeless(local["report"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runner.collect"):  # the parser's passes read one copy too
        c.collect([output], tmp_path / "s3-parser" / "ds", SETTINGS["defaults"], dataset="ds", provenance={},
                  use_columnar=False)
    assert caplog.text.count("copied to") == 1
    assert dataset_files(tmp_path / "s3-parser" / "ds") == dataset_files(tmp_path / "local" / "ds")


def test_collect_says_what_it_is_doing_and_how_far(tmp_path):
    task = TaskType.text_classification
    path = manifest(tmp_path, task, n=10_000)
    attr, _, labels = TYPES[task]
    output = c.Output(name="ds", manifest_uri=str(path), storage=None, task_type=task, attribute=attr, labels=labels)
    settings = TransformsConfig(steps={"table": {}, "jsonl": {}, "hf_datasets": {}, "spacy": {}})
    shown: list[str] = []
    c.collect([output], tmp_path / "fast", settings, dataset="ds", provenance={}, show=shown.append)
    duckdb_pass = [x for x in shown if x.startswith("reading with DuckDB")]
    counts = [int(re.search(r": ([\d,]+) lines \(\d+%\)$", x)[1].replace(",", "")) for x in duckdb_pass[1:]]
    assert counts == sorted(counts) and counts[-1] == 10_000 and len(counts) >= 2
    assert [x for x in shown if x.startswith("writing")][0] == "writing spacy"  # the rest: the parser's
    shown.clear()
    c.collect([output], tmp_path / "slow", settings, dataset="ds", provenance={}, use_columnar=False, show=shown.append)
    steps = list(dict.fromkeys(x.split(":")[0] for x in shown))
    assert steps == ["writing table", "writing jsonl", "writing hf_datasets", "writing spacy",  # the report: the first's
                     "recording the files' sizes and checksums, looking for inputs in more than one split"]
    table_pass = [x for x in shown if x.startswith("writing table: ")]
    assert table_pass[0] == "writing table: 0 lines (0%)" and "4,096 lines" in table_pass[1]
    assert table_pass[-1].startswith("writing table: 8,192 lines (8")
    shown.clear()
    c.collect([output], tmp_path / "none", TransformsConfig(steps={}), dataset="ds", provenance={},
              use_columnar=False, show=shown.append)
    assert list(dict.fromkeys(x.split(":")[0] for x in shown)) == ["counting for the report",
                                                                   "recording the files' sizes and checksums"]


def test_the_report_counted_in_a_pass_left_unfinished_is_counted_again(tmp_path):
    task = TaskType.text_classification
    path = manifest(tmp_path, task)
    attr, _, labels = TYPES[task]
    output = c.Output(name="ds", manifest_uri=str(path), storage=None, task_type=task, attribute=attr, labels=labels)
    args = {"task_type": task, "labels": labels, "dataset": "ds"}
    def objects(stats):
        return c.objects_of(output, TransformsConfig(), stats)

    def report_pass(listing: Path) -> c._CountingPass:  # the report's figures and not_labeled.jsonl
        return c._CountingPass(objects, c.Progress(), lambda: c._Counts(builder=c.report.ReportBuilder(**args)),
                               listing)

    whole = report_pass(tmp_path / "whole.jsonl")
    expected = whole.finish().report_figures()  # a pass of its own
    counting = report_pass(tmp_path / "listed.jsonl")
    running = counting.objects()
    assert [next(running).line_no for _ in range(300)] == list(range(1, 301))  # a transform that stopped early
    assert counting.finish().report_figures() == expected and expected["counts"]["objects"] == 600
    running.close()  # the stopped pass, closed: the new listing stays as written
    assert (tmp_path / "listed.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes() != b""


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.bounding_box], ids=lambda t: t.value)
def test_a_job_that_labeled_nothing_takes_the_columnar_path_too(tmp_path, caplog, task):
    # no line has metadata: the key pass counts 0 failure-reasons (DuckDB's count_if of NULLs only is NULL)
    attr = TYPES[task][0]
    rng = random.Random(3)
    lines = [{k: v for k, v in output_line(task, i, rng).items() if not k.startswith(attr)} for i in range(300)]
    path = write_manifest(tmp_path / "out.manifest", lines)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        fast, _ = both_ways(path, task, tmp_path, SETTINGS["defaults"])
    assert "(columnar)" in caplog.text and "needs the Python parser" not in caplog.text
    assert fast["report"]["counts"]["unlabeled"] == 300
    listed = dataset_files(tmp_path / "fast" / "ds")["not_labeled"]
    assert [json.loads(x)["inputs"] for x in listed] == lines


def table_schema(out: Path) -> object:
    return pq.read_schema(out / "table" / f"{out.name}.parquet").remove_metadata()


@pytest.mark.parametrize("task", list(TYPES), ids=lambda t: t.value)
def test_a_table_no_object_reached_has_the_same_columns_on_both_paths(tmp_path, task):
    # every object left out by min_confidence, or none labeled: an empty table whose columns are
    # the input fields, the task's label key, confidence and workers, whichever path wrote it
    attr = TYPES[task][0]

    def doubtful(value):  # every confidence 0.5: min_confidence=1.0 leaves every object out
        if isinstance(value, dict):
            return {k: 0.5 if k == "confidence" or (isinstance(v, float) and k.isdigit()) else doubtful(v)
                    for k, v in value.items()}
        return [doubtful(x) for x in value] if isinstance(value, list) else value

    path = manifest(tmp_path, task, n=300)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # (an object without any confidence, no boxes say, is kept by every min_confidence: not those)
    path = write_manifest(tmp_path / "doubtful.manifest",
                          [{k: doubtful(v) if k == attr + "-metadata" else v for k, v in line.items()}
                           for line in lines if '"confidence' in json.dumps(line.get(attr + "-metadata"))
                           and json.dumps(line.get(attr + "-metadata", {}).get("confidence-map")) != "{}"])
    nothing = write_manifest(tmp_path / "nothing.manifest",
                             [{k: v for k, v in json.loads(line).items() if not k.startswith(attr)}
                              for line in path.read_text().splitlines()])
    for name, source, settings in (("filtered", path, TransformsConfig(steps={"table": {}}, min_confidence=1.0)),
                                   ("unlabeled", nothing, TransformsConfig(steps={"table": {}}))):
        fast, slow = both_ways(source, task, tmp_path / name, settings)
        assert fast["written"]["table"].counts == slow["written"]["table"].counts == {"all": 0}
        schema = table_schema(tmp_path / name / "slow" / "ds")
        assert schema == table_schema(tmp_path / name / "fast" / "ds")
        inputs = [k for k in json.loads(source.read_text().splitlines()[0]) if not k.startswith(attr)]
        assert schema.names == [*inputs, LABEL_KEY[task], "confidence", "workers"]
    csv_settings = TransformsConfig(steps={"table": {"format": "csv"}}, min_confidence=1.0)
    run(path, task, tmp_path / "csv" / "ds", csv_settings, columnar=False)
    header = (tmp_path / "csv" / "ds" / "table" / "ds.csv").read_text()
    assert header == ",".join([*inputs, LABEL_KEY[task], "confidence", "workers"]) + "\n"


def _columnar(path: Path, task: TaskType) -> Columnar | None:
    attr, _, labels = TYPES[task]
    return Columnar.open(path, attribute=attr, task_type=task, labels=labels, settings=TransformsConfig())


def test_duckdb_spills_where_collect_says_not_into_the_working_folder(tmp_path, monkeypatch):
    # DuckDB's own default is .tmp in the working folder: a project folder would get one
    task = TaskType.text_classification
    path = manifest(tmp_path, task)
    attr, _, labels = TYPES[task]
    columnar = Columnar.open(path, attribute=attr, task_type=task, labels=labels, settings=TransformsConfig(),
                             temp_directory=tmp_path / "spill")
    assert columnar is not None
    with columnar._connect(duckdb, 1) as con:
        assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == str(tmp_path / "spill")
    # collect: a folder of the dataset's staging (backend.duckdb.temp_directory when set), gone after
    monkeypatch.chdir(tmp_path)
    output = c.Output(name="ds", manifest_uri=str(path), storage=None, task_type=task, attribute=attr, labels=labels)
    c.collect([output], tmp_path / "ds", SETTINGS["defaults"], dataset="ds", provenance={})
    assert not (tmp_path / ".tmp").exists() and ".spill" not in {p.name for p in (tmp_path / "ds").rglob("*")}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left either


def test_lines_it_cannot_read_the_same_way_send_collect_to_the_python_path(tmp_path, caplog):
    task = TaskType.text_classification
    rng = random.Random(2)
    good = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 50)]
    opened = _columnar(write_manifest(tmp_path / "good.manifest", good), task)
    assert opened is not None and opened.write(jsonl=None, table=None).lines == len(good)
    chained = dict(good[-1], other=1, **{"other-metadata": {"type": "groundtruth/text-classification",
                                                           "job-name": "labeling-job/x"}})
    retyped = dict(good[-1], id="seven")  # an int field turns into a string after the sample
    extra = dict(good[-1], extra="x")  # a field the first lines do not have
    as_text = dict(good[-1], sentiment="1")  # a class index as a string of digits
    null_reason = dict(good[-1], **{"sentiment-metadata": {"failure-reason": None, "type": "groundtruth/text-classification"}})
    out_of_range = dict(good[-1], sentiment=7, **{"sentiment-metadata": {"type": "groundtruth/text-classification"}})
    settings = SETTINGS["defaults"]
    null_value = dict(good[-1], sentiment=None, **{"sentiment-metadata": None})  # a label value, no metadata
    not_gt = dict(good[-1], **{"sentiment-metadata": {"class-name": "Positive"}})  # none of Ground Truth's keys
    meta = {"type": "groundtruth/text-classification", "job-name": "labeling-job/t"}
    answers = dict(good[-1], **{"sentiment-metadata": {**meta, "worker-response-ref": "s3://b/responses/0.json"}})
    for i, bad in enumerate([chained, retyped, extra, as_text, null_reason, out_of_range, null_value, not_gt, answers]):
        path = write_manifest(tmp_path / f"bad{i}.manifest", [*good, bad])
        columnar = _columnar(path, task)
        assert columnar is not None  # the first lines are fine ...
        with pytest.raises(NotColumnar):  # ... the last one is not
            columnar.write(jsonl=None, table=None)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
            if both_ways(path, task, tmp_path / f"bad{i}", settings, refused=True) is None:
                continue
        assert "needs the Python parser" in caplog.text and "(columnar)" not in caplog.text
        assert not list((tmp_path / f"bad{i}" / "fast" / "ds").glob(".*"))  # no scratch folder left behind
    custom = write_manifest(tmp_path / "custom.manifest", good)
    assert Columnar.open(custom, attribute="sentiment", task_type=TaskType.custom, labels=[],
                         settings=TransformsConfig()) is None
    not_json = write_manifest(tmp_path / "first.manifest", ["{not json", *good])
    assert _columnar(not_json, task) is None  # the first lines already need the parser
    hashed = [{("#" + k if k == "id" else k): v for k, v in line.items()} for line in good]
    assert _columnar(write_manifest(tmp_path / "hashed.manifest", hashed), task) is None  # "#": the SQL's own names


def test_a_malformed_line_is_still_named_by_the_parser(tmp_path):
    task = TaskType.text_classification
    rng = random.Random(3)
    lines = [output_line(task, i, rng) for i in range(40)]
    path = write_manifest(tmp_path / "m.manifest", [*lines[:20], "{not json", *lines[20:]])
    with pytest.raises(ManifestError, match=r"line 21: not JSON"):
        run(path, task, tmp_path / "out", TransformsConfig(steps={"jsonl": {}}), columnar=True)
    skip = TransformsConfig(steps={"jsonl": {}}, on_error="skip")
    result = run(path, task, tmp_path / "out", skip, columnar=True)
    assert result["report"]["parse"]["skipped"] == 1


@pytest.mark.parametrize("bad", ["cut", "shape"])
def test_a_line_duckdb_refuses_is_named_once_by_the_parser(tmp_path, caplog, bad):
    # past the lines Columnar.open learns from, so that DuckDB reads it first. For a line that is
    # not JSON DuckDB names the line after it: the log keeps no line number of DuckDB's
    task = TaskType.text_classification
    rng = random.Random(4)
    lines = [json.dumps(output_line(task, i, rng)) for i in range(SAMPLE_LINES + 200)]
    n = SAMPLE_LINES + 101
    line = json.loads(lines[n - 1])
    line["sentiment"], line["sentiment-metadata"] = 1, {"type": TYPES[task][1], "confidence": "high"}
    lines[n - 1] = lines[n - 1][:-2] if bad == "cut" else json.dumps(line)
    path = write_manifest(tmp_path / "m.manifest", lines)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"), \
            pytest.raises(ManifestError, match=rf"line {n}: " + ("not JSON" if bad == "cut" else ".*confidence")):
        run(path, task, tmp_path / "out", TransformsConfig(steps={"jsonl": {}}), columnar=True)
    [why] = [r.getMessage() for r in caplog.records if "needs the Python parser" in r.getMessage()]
    assert "Invalid Input Error" in why and not re.search(r"\bline \d", why)


def test_out_of_memory_is_a_reason_to_take_the_python_path(tmp_path):
    task = TaskType.bounding_box
    attr, _, labels = TYPES[task]
    columnar = Columnar.open(manifest(tmp_path, task, n=3000), attribute=attr, task_type=task, labels=labels,
                             settings=TransformsConfig(), memory_limit="2MB")
    assert columnar is not None
    (tmp_path / "jsonl").mkdir()
    with pytest.raises(NotColumnar, match="Out of Memory"):
        columnar.write(jsonl=tmp_path / "jsonl", table=tmp_path / "t.parquet")


def test_blank_lines_and_split_chunks_match_the_python_path(tmp_path, monkeypatch):
    monkeypatch.setattr("runner.collect.columnar._Splits.CHUNK", 100)  # several chunks of split codes
    task = TaskType.named_entity
    rng = random.Random(4)
    lines = [json.dumps(output_line(task, i, rng), ensure_ascii=False) for i in range(450)]
    for at in (0, 77, 78, 300):
        lines.insert(at, "")  # blank lines: not objects, for the parser either
    path = write_manifest(tmp_path / "blank.manifest", lines)
    fast, _ = both_ways(path, task, tmp_path, SETTINGS["defaults"])
    assert fast["report"]["parse"]["lines"] == 450


def test_floats_and_control_characters_are_written_as_json_dumps_writes_them(tmp_path, caplog):
    # DuckDB writes 1e16 as 10000000000000000.0 (to_json) or 1e16 (a leaf's text), and the control
    # characters' escapes in upper case: the jsonl lines must still be json.dumps's, byte for byte
    floats = [2.5e-05, 1e16, 1e-7, 1e22, 123456789012345678.0, 1e300, -0.0, 5e-324, 0.1]
    confidences = [2.5e-05, 1e-7, 1e-300, -0.0, 5e-324, 0.1, 0.30000000000000004, 1.0]  # in [0, 1]
    sides = [0.0, 1e-4, 12.5, 9999999999999998.0, 0.30000000000000004]  # to_json writes these as Python does
    texts = ["vt\x0bff\x0cesc\x1b[0m", "a literal \\u001B", "backslash, then esc \\\x1b", "\\\\u001F",
             "".join(chr(i) for i in range(32)), "ends in a backslash \\"]

    def odd(task: TaskType, side: float | None = None) -> Path:
        attr = TYPES[task][0]
        rng = random.Random(9)
        lines = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 60)]
        for i, line in enumerate(lines[SAMPLE_LINES:]):
            line["score"] = floats[i % len(floats)]
            line["source-ref" if task is TaskType.bounding_box else "source"] = texts[i % len(texts)]
            meta = line.get(attr + "-metadata") or {}
            for item in [meta, *meta.get("objects", []), *meta.get("entities", [])]:
                if item.get("confidence") is not None:
                    item["confidence"] = confidences[(i + 1) % len(confidences)]
            for box in line.get(attr, {}).get("annotations", []) if task is TaskType.bounding_box else []:
                box["left"], box["width"] = sides[i % len(sides)], sides[(i + 1) % len(sides)]
        if side is not None:
            lines[-1][attr]["annotations"] = [{"class_id": 0, "left": side, "top": 0, "width": 1, "height": 1}]
        return write_manifest(tmp_path / f"{task.value}-{side}.manifest", lines)

    for task in TYPES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
            both_ways(odd(task), task, tmp_path / task.value, SETTINGS["defaults"])
        assert "(columnar)" in caplog.text
        written = b"".join((tmp_path / task.value / "fast" / "ds" / "jsonl" / f"{s}.jsonl").read_bytes()
                           for s in SPLITS)
        assert b"1e+16" in written and b"2.5e-05" in written and b"\\u001b" in written
    for side in (5e-05, 1e16):  # a box side that to_json writes otherwise: the parser takes the manifest
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
            both_ways(odd(TaskType.bounding_box, side), TaskType.bounding_box, tmp_path / str(side), SETTINGS["defaults"])
        assert "needs the Python parser" in caplog.text and "(columnar)" not in caplog.text


def _shapes_read_json_refuses_or_cannot_see(task: TaskType, line: dict) -> list[dict]:
    """Lines of `task` in shapes that read_json refuses or reads as another line would read."""
    attr = TYPES[task][0]
    meta = attr + "-metadata"
    duplicate = dict(line)  # written below with a duplicate key: the parser takes the last value
    items = "objects" if task is TaskType.bounding_box else "entities"
    out = [duplicate, dict(line, **{meta: {**line[meta], items: {"0": {"confidence": 1}}}})]  # not a list
    if task is TaskType.bounding_box:
        value = dict(line[attr], image_size=[{"width": 640, "height": 480, "depth": None}])
        out.append(dict(line, **{attr: value}))  # a null depth: int(None) fails in the parser
        out.append(dict(line, **{meta: dict(line[meta], objects=[1] * len(line[attr]["annotations"]))}))
    return out


@pytest.mark.parametrize("task", [TaskType.bounding_box, TaskType.named_entity], ids=lambda t: t.value)
def test_shapes_read_json_refuses_or_cannot_see_take_the_python_path(tmp_path, caplog, task):
    rng = random.Random(5)
    good = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 20)]
    last = next(line for line in reversed(good)
                if TYPES[task][0] in line and (task is not TaskType.bounding_box or line[TYPES[task][0]]["annotations"]))
    for i, bad in enumerate(_shapes_read_json_refuses_or_cannot_see(task, last)):
        text = json.dumps(bad, ensure_ascii=False)
        if i == 0:
            text = text[:-1] + ', "id": 123456}'  # a duplicate key
        path = write_manifest(tmp_path / f"bad{i}.manifest", [*good, text])
        columnar = _columnar(path, task)
        assert columnar is not None
        with pytest.raises(NotColumnar):
            columnar.write(jsonl=None, table=None)
        both_ways(path, task, tmp_path / f"bad{i}", SETTINGS["defaults"], refused=True)


def test_out_of_memory_on_several_threads_goes_on_on_one(tmp_path, caplog):
    # 100,000 NER lines (46 MB): DuckDB's JSON reader keeps a buffer per thread, which a 64MB
    # limit holds for one thread and not for two or more.
    task = TaskType.named_entity
    path = manifest(tmp_path, task, n=100_000, seed=6)
    attr, _, labels = TYPES[task]

    def write(threads: int | None, out: Path) -> tuple:
        columnar = Columnar.open(path, attribute=attr, task_type=task, labels=labels, settings=TransformsConfig(),
                                 memory_limit="64MB", threads=threads)
        assert columnar is not None
        (out / "jsonl").mkdir(parents=True)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="runner.collect.columnar"):
            result = columnar.write(jsonl=out / "jsonl", table=out / "t.parquet")
        files = {s: (out / "jsonl" / f"{s}.jsonl").read_bytes() for s in ("train", "validation", "test")}
        return result, files, pq.read_table(out / "t.parquet").to_pylist(), caplog.text

    result, files, table, text = write(None, tmp_path / "several")
    if (os.cpu_count() or 1) > 1:  # once more on the same threads, then on one
        assert re.search(r"goes on from line \d+ on the same threads(.|\n)*goes on from line \d+ on one thread", text)
    assert result.lines == 100_000
    assert len(table) == result.table == sum(result.jsonl.values()) == result.status["labeled"] > 80_000
    assert sum(len(x.splitlines()) for x in files.values()) == len(table)
    # backend.duckdb.threads = 1: one thread from the start, and the same files to the byte
    one, one_files, one_table, one_text = write(1, tmp_path / "one")
    assert "on one thread" not in one_text
    assert (one, one_files, one_table) == (result, files, table)


def test_batches_hold_about_the_same_text_whatever_the_line_width(tmp_path):
    assert batch_rows(380) == 8_192 and batch_rows(622) == 4_096 and batch_rows(990) == 2_048  # single, boxes, NER
    assert batch_rows(10) == 8_192 and batch_rows(1_000_000) == 2_048 and batch_rows(0) == 8_192
    assert all(batch_rows(w) % 2_048 == 0 for w in range(1, 5_000, 37))
    task = TaskType.named_entity
    attr, _, labels = TYPES[task]
    wide = manifest(tmp_path, task, n=50)
    opened = Columnar.open(wide, attribute=attr, task_type=task, labels=labels, settings=TransformsConfig())
    assert opened is not None
    assert opened.batch_rows == batch_rows(wide.stat().st_size / 50)


def test_split_codes_in_sql_are_split_of_even_at_the_bounds():
    # split_of's number for each id; bounds set to some ids' own numbers, where "<" decides
    number = [int.from_bytes(hashlib.sha256(f"s\0{i}".encode()).digest()[:8], "big") / 2**64 for i in range(3000)]
    low, high = sorted((number[7], number[11]))
    configs = [SplitConfig(salt="s"), SplitConfig(train=low, validation=high - low, test=1 - high, salt="s"),
               SplitConfig(train=low, validation=1 - low, test=0.0, salt="s"),
               SplitConfig(train=1.0, validation=0.0, test=0.0, salt="s"),
               SplitConfig(train=0.0, validation=0.0, test=1.0, salt="s")]
    con = duckdb.connect()
    for split in configs:
        sql = [SPLITS[code] for (code,) in con.sql(split_code_sql(split, 0, 3000)).fetchall()]
        assert sql == [split_of(str(i), split) for i in range(3000)], split
    at_bound = configs[1]
    assert number[min((7, 11), key=lambda i: number[i])] == at_bound.train
    assert split_of(str(min((7, 11), key=lambda i: number[i])), at_bound) == "validation"  # not below its own number
    assert [SPLITS[c] for (c,) in con.sql(split_code_sql(at_bound, 7, 12)).fetchall()] == [
        split_of(str(i), at_bound) for i in range(7, 12)]


@pytest.mark.parametrize("task", list(TYPES), ids=lambda t: t.value)
@pytest.mark.parametrize("field", ["text", "number"])
def test_a_split_key_splits_both_paths_by_the_fields_value(tmp_path, caplog, task, field):
    key = ("source-ref" if task is TaskType.bounding_box else "source") if field == "text" else "id"
    rng = random.Random(5)
    lines = [output_line(task, i, rng) for i in range(600)]
    for line in lines:
        line["id"] += 10_000  # the id field is not the object id (the line's index)
    path = write_manifest(tmp_path / "m.manifest", lines)
    settings = TransformsConfig(steps={"jsonl": {}, "hf_datasets": {}, "table": {}},
                                split=SplitConfig(train=0.6, validation=0.2, test=0.2, salt="k", key=key))
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        both_ways(path, task, tmp_path, settings)
    assert "(columnar)" in caplog.text
    records = {s: [json.loads(x) for x in (tmp_path / "fast" / "ds" / "jsonl" / f"{s}.jsonl").read_text().splitlines()]
               for s in SPLITS}
    assert all(split_of(str(r[key]), settings.split) == s for s, rows in records.items() for r in rows)
    by_index = [s for s, rows in records.items() for r in rows if split_of(str(r["id"] - 10_000), settings.split) != s]
    assert by_index and sum(map(len, records.values())) > 400  # the object id would have split them otherwise


@pytest.mark.parametrize(("value", "problem"), [(None, "has ticket = None, not a string or an integer"),
                                                (2.5, "has ticket = 2.5, not a string or an integer"),
                                                ("absent", "has no input field 'ticket'")])
def test_an_object_without_a_usable_split_key_is_named_on_both_paths(tmp_path, monkeypatch, caplog, value, problem):
    monkeypatch.setattr("runner.collect.columnar.SAMPLE_LINES", 50)  # the odd line comes after the sample
    rng = random.Random(6)
    lines = [{"ticket": f"T-{i}", **output_line(TaskType.text_classification, i, rng)} for i in range(300)]
    odd = next(i for i in range(200, 300) if "sentiment" in lines[i])  # a labeled line
    if value == "absent":
        del lines[odd]["ticket"]
    else:
        lines[odd]["ticket"] = value
    path = write_manifest(tmp_path / "m.manifest", lines)
    settings = TransformsConfig(steps={"jsonl": {}}, split=SplitConfig(key="ticket"))
    error = (rf"^transforms\.split\.key: object '{odd}' {re.escape(problem)}\n"
             r"  hint: name a field every object has, with a string or integer value \(source, id")
    for columnar in (True, False):
        with pytest.raises(ConfigError, match=error), caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
            run(path, TaskType.text_classification, tmp_path / f"ds-{columnar}", settings, columnar=columnar)
    # the columnar path read up to the odd line and left it to the parser, which named it
    reason = {None: "an object without a value for transforms.split.key", 2.5: "line", "absent": "other keys"}[value]
    assert re.search(rf"needs the Python parser \(.*{reason}", caplog.text), caplog.text


def test_key_names_inside_values_do_not_send_collect_to_the_python_path(tmp_path):
    # The key pass looks for "failure-reason" in the metadata and "depth" in the image size only:
    # the same words in an input field's text are text.
    for task, field in ((TaskType.text_classification, "source"), (TaskType.bounding_box, "source-ref")):
        rng = random.Random(8)
        lines = [output_line(task, i, rng) for i in range(300)]
        for i in range(0, 300, 3):
            lines[i][field] = '"failure-reason": "depth"' if i % 2 else "failure-reason"
        path = write_manifest(tmp_path / f"{task.value}.manifest", lines)
        columnar = _columnar(path, task)
        assert columnar is not None
        assert columnar.write(jsonl=None, table=None).lines == 300  # no NotColumnar
        both_ways(path, task, tmp_path / task.value, SETTINGS["defaults"])


def test_the_columnar_path_does_not_load_pandas(tmp_path):
    # pandas costs some 40 MB of memory; pyarrow loads it when it converts a Python value to Arrow
    path = manifest(tmp_path, TaskType.bounding_box, n=200)
    attr, _, labels = TYPES[TaskType.bounding_box]
    code = f"""
import sys
from pathlib import Path
from runner.collect import collect as c
from runner.schema import TaskType, TransformsConfig
output = c.Output(name="ds", manifest_uri={str(path)!r}, storage=None, task_type=TaskType.bounding_box,
                  attribute={attr!r}, labels={labels!r})
result = c.collect([output], Path({str(tmp_path / "ds")!r}), TransformsConfig(steps={{"table": {{}}, "jsonl": {{}}}}),
                   dataset="ds", provenance={{}})
assert result["report"]["counts"]["objects"] == 200
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert (tmp_path / "ds" / "table" / "ds.parquet").is_file()


def test_ground_truth_keys_count_when_they_are_there_even_null(tmp_path):
    # The parser takes metadata naming any of Ground Truth's keys as label metadata, null or not
    task = TaskType.text_classification
    rng = random.Random(9)
    lines = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 20)]
    lines[-1]["sentiment-metadata"] = {"job-name": None, "class-name": TYPES[task][2][lines[-1]["sentiment"]]}
    path = write_manifest(tmp_path / "nulls.manifest", lines)
    columnar = _columnar(path, task)
    assert columnar is not None
    assert columnar.write(jsonl=None, table=None).status["labeled"] > 0  # no NotColumnar
    both_ways(path, task, tmp_path, SETTINGS["defaults"])


def test_a_records_pass_that_stops_early_stops_the_key_pass(tmp_path, monkeypatch):
    # The key pass runs beside the records pass on a cursor of its own: when the records pass
    # stops at a line it cannot read, write() interrupts the key pass instead of waiting for it.
    # The key pass here is a query of some minutes, standing in for a very large manifest's.
    task = TaskType.text_classification
    rng = random.Random(10)
    good = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 50)]
    path = write_manifest(tmp_path / "m.manifest", [*good, dict(good[-1], sentiment="1")])  # an index as text
    columnar = _columnar(path, task)
    assert columnar is not None
    monkeypatch.setattr("runner.collect.columnar.keys_sql", lambda *a, **k: (
        "SELECT count(*), 0, 0, 0, 0, 0 FROM range(100000000000) t(i) WHERE hash(i) % 7 = 3"))
    raised: list = []

    def write() -> None:
        try:
            columnar.write(jsonl=None, table=None)
        except NotColumnar as exc:
            raised.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and raised and "line" in str(raised[0])


@pytest.mark.parametrize("task", [TaskType.text_multilabel, TaskType.bounding_box], ids=lambda t: t.value)
def test_jobs_with_many_labels_read_class_maps_as_maps(tmp_path, monkeypatch, task):
    # A class-map of a job with more than MAX_STRUCT_LABELS labels is read as a MAP, not a struct:
    # with the threshold at 1, the test jobs' few labels take that way
    monkeypatch.setattr("runner.collect.columnar.MAX_STRUCT_LABELS", 1)
    path = manifest(tmp_path, task, seed=11)
    attr, _, labels = TYPES[task]
    columnar = _columnar(path, task)
    assert columnar is not None
    assert "MAP(VARCHAR" in records_sql(path, attr, task, labels, columnar.layout, SETTINGS["defaults"])
    both_ways(path, task, tmp_path, SETTINGS["defaults"])


def _labeled(task: TaskType, rng: random.Random) -> dict:
    """A labeled line with at least one box, span or chosen class (so that it has confidences)."""
    attr = TYPES[task][0]
    for i in range(10_000):
        line = output_line(task, i, rng)
        value = line.get(attr)
        if value is None:
            continue
        if task is TaskType.text_multilabel and not value:
            continue
        if task is TaskType.bounding_box and not value["annotations"]:
            continue
        if task is TaskType.named_entity and not value["annotations"]["entities"]:
            continue
        return line
    raise AssertionError("no labeled line")


def _with_confidences(task: TaskType, line: dict, values: list) -> dict:
    """The line with these confidences (the first for single-label)."""
    attr = TYPES[task][0]
    meta = dict(line[attr + "-metadata"])
    if task is TaskType.text_classification:
        meta["confidence"] = values[0]
    elif task is TaskType.text_multilabel:
        chosen = list(range(len(values)))
        line = dict(line, **{attr: chosen})
        meta["class-map"] = {str(k): TYPES[task][2][k] for k in chosen}
        meta["confidence-map"] = {str(k): v for k, v in zip(chosen, values, strict=True)}
    elif task is TaskType.bounding_box:
        box = line[attr]["annotations"][0]
        line = dict(line, **{attr: dict(line[attr], annotations=[box] * len(values))})
        meta["class-map"] = {str(box["class_id"]): TYPES[task][2][box["class_id"]]}
        meta["objects"] = [{"confidence": v} for v in values]
    else:
        span = line[attr]["annotations"]["entities"][0]
        line = dict(line, **{attr: {"annotations": {"entities": [span] * len(values)}}})
        meta["entities"] = [{"confidence": v} for v in values]
    return dict(line, **{attr + "-metadata": meta})


@pytest.mark.parametrize("task", list(TYPES), ids=lambda t: t.value)
def test_a_confidence_that_is_not_a_number_in_0_1_stops_both_paths(tmp_path, caplog, task):
    """inf and NaN are no JSON numbers: the columnar path wrote them as `inf` and `nan` (then
    could not read its own jsonl back), and took the lowest confidence past a NaN. Both paths now
    name the line, as they do a confidence outside [0, 1]; -0.0 reads as 0.0 whatever the order of
    the confidences."""
    rng = random.Random(7)
    good = [output_line(task, i, rng) for i in range(SAMPLE_LINES + 20)]
    labeled = _labeled(task, rng)
    many = 1 if task is TaskType.text_classification else 2
    for i, values in enumerate([["inf"], ["nan"], ["-Infinity"], [float("nan")], [float("inf")],
                                [0.2, "nan"], ["nan", 0.2], [1.5], [-0.1], [0.2, 7], ["1.01"]]):
        if len(values) > many:
            continue
        bad = _with_confidences(task, labeled, values)
        path = write_manifest(tmp_path / f"bad{i}.manifest", [*good, json.dumps(bad, ensure_ascii=False)])
        columnar = _columnar(path, task)
        assert columnar is not None
        with pytest.raises(NotColumnar):
            columnar.write(jsonl=None, table=None)
        assert both_ways(path, task, tmp_path / f"bad{i}", SETTINGS["thresholds"], refused=True) is None
        with pytest.raises(ManifestError, match=rf"line {len(good) + 1}: .*(not a finite number|not JSON|not between 0 and 1)"):
            run(path, task, tmp_path / f"bad{i}" / "again", SETTINGS["thresholds"], columnar=False)
    if many == 1:
        return
    for order in ([0.0, -0.0], [-0.0, 0.0]):
        path = write_manifest(tmp_path / "zero.manifest", [*good, dict(_with_confidences(task, labeled, order), id=-1)])
        fast, _ = both_ways(path, task, tmp_path / f"zero{order[0]}", SETTINGS["defaults"])
        records = [json.loads(x) for s in SPLITS
                   for x in (tmp_path / f"zero{order[0]}" / "fast" / "ds" / "jsonl" / f"{s}.jsonl").read_text().splitlines()]
        assert [str(r["confidence"]) for r in records if r["id"] == -1] == ["0.0"]


def test_fields_that_differ_only_in_case_take_the_python_path(tmp_path):
    """DuckDB's names ignore case: "id" beside "ID" stopped the columnar path with a binder error."""
    task = TaskType.text_classification
    rng = random.Random(8)
    for i, extra in enumerate([{"ID": "A-1"}, {"Sentiment": "x"}, {"Label": "y"}]):
        lines = [dict(output_line(task, n, rng), **extra) for n in range(60)]
        path = write_manifest(tmp_path / f"case{i}.manifest", lines)
        assert _columnar(path, task) is None
        both_ways(path, task, tmp_path / f"case{i}", SETTINGS["defaults"])


def test_a_byte_order_mark_and_lines_of_white_space_read_alike_on_both_paths(tmp_path):
    task = TaskType.named_entity
    rng = random.Random(9)
    lines = [json.dumps(output_line(task, i, rng), ensure_ascii=False) for i in range(SAMPLE_LINES + 30)]
    lines[0] = "\ufeff" + lines[0]  # an editor's UTF-8 byte-order mark: the parser refused line 1
    path = write_manifest(tmp_path / "bom.manifest", lines)
    columnar = _columnar(path, task)
    assert columnar is not None and columnar.write(jsonl=None, table=None).lines == SAMPLE_LINES + 30
    fast, _ = both_ways(path, task, tmp_path / "bom", SETTINGS["thresholds"])
    assert fast["report"]["parse"]["lines"] == SAMPLE_LINES + 30 and fast["report"]["parse"]["skipped"] == 0
    for at in (SAMPLE_LINES + 5, SAMPLE_LINES + 10):  # past the first lines, which must have no gap
        lines.insert(at, "      \t")  # white space only: the parser took it for a malformed line
    path = write_manifest(tmp_path / "spaces.manifest", lines)
    fast, _ = both_ways(path, task, tmp_path / "spaces", SETTINGS["thresholds"])  # the parser's path, now
    assert fast["report"]["parse"]["lines"] == SAMPLE_LINES + 30 and fast["report"]["parse"]["skipped"] == 0


def test_the_parser_keeps_integers_beyond_64_bits(tmp_path):
    """orjson reads an integer past 64 bits as a float (1.2345678901234569e+23): the parser reads
    such a line with json, which keeps it exact; the columnar path leaves it to the parser."""
    task = TaskType.text_classification
    rng = random.Random(10)
    lines = [dict(output_line(task, i, rng), big=123456789012345678901234 + i, low=-9223372036854775809)
             for i in range(50)]
    path = write_manifest(tmp_path / "big.manifest", lines)
    fast, _ = both_ways(path, task, tmp_path, SETTINGS["defaults"])
    records = sorted((json.loads(x) for s in SPLITS
                      for x in (tmp_path / "fast" / "ds" / "jsonl" / f"{s}.jsonl").read_text().splitlines()),
                     key=lambda r: r["id"])
    assert [r["big"] for r in records] == [123456789012345678901234 + r["id"] for r in records]
    assert {r["low"] for r in records} == {-9223372036854775809}


def test_an_empty_failure_reason_is_counted_as_unknown_on_both_paths(tmp_path, caplog):
    # The parser's report counts a failed object whose failure-reason is "" as "unknown"; the
    # columnar pass counted it as "", a reason of its own
    task = TaskType.bounding_box
    attr = TYPES[task][0]
    rng = random.Random(12)
    lines = [output_line(task, i, rng) for i in range(300)]
    failed = [line for line in lines if "failure-reason" in line.get(attr + "-metadata", {})]
    failed[1][attr + "-metadata"]["failure-reason"] = ""
    failed[2][attr + "-metadata"]["failure-reason"] = "unknown"
    path = write_manifest(tmp_path / "m.manifest", lines)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        fast, _ = both_ways(path, task, tmp_path, SETTINGS["defaults"])
    assert "(columnar)" in caplog.text
    assert fast["report"]["counts"]["failed_reasons"] == {"ClientError: expired": len(failed) - 2, "unknown": 2}


def test_a_value_nested_deeper_than_pythons_json_reads_leaves_the_first_lines_to_the_parser(tmp_path, caplog):
    # Columnar.open learned the first lines with json.loads, which raises RecursionError on a value
    # nested some thousand deep: collect stopped there, where the parser's path (orjson) reads it
    task = TaskType.text_classification
    rng = random.Random(13)
    lines = [json.dumps(output_line(task, i, rng), ensure_ascii=False) for i in range(100)]
    lines[5] = lines[5][:-1] + ', "deep": ' + "[" * 3000 + "]" * 3000 + "}"  # a labeled line
    path = write_manifest(tmp_path / "deep.manifest", lines)
    assert _columnar(path, task) is None
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        fast, _ = both_ways(path, task, tmp_path, TransformsConfig(steps={}))  # the report alone
    assert "(columnar)" not in caplog.text and fast["report"]["counts"]["objects"] == 100


@pytest.mark.parametrize("name", ["", "a\0b"], ids=["empty", "nul"])
def test_an_input_field_duckdb_cannot_name_takes_the_python_path(tmp_path, caplog, name):
    # A field named "" stopped the columnar pass with DuckDB's parser error (a zero-length
    # identifier), one with a NUL with pyarrow's KeyError (DuckDB's name ends at the NUL)
    task = TaskType.text_classification
    rng = random.Random(14)
    lines = [{name: f"v{i}", **output_line(task, i, rng)} for i in range(100)]
    path = write_manifest(tmp_path / "m.manifest", lines)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        both_ways(path, task, tmp_path, SETTINGS["defaults"])
    assert "(columnar)" not in caplog.text and _columnar(path, task) is None
    jsonl = tmp_path / "fast" / "ds" / "jsonl"
    records = [json.loads(x) for s in SPLITS for x in (jsonl / f"{s}.jsonl").read_text().splitlines()]
    assert records and all(r[name].startswith("v") for r in records)


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.text_multilabel, TaskType.bounding_box],
                         ids=lambda t: t.value)
def test_a_class_index_of_the_largest_64_bit_integer_leaves_the_line_to_the_parser(tmp_path, monkeypatch, caplog,
                                                                                    task):
    # records_sql looks a class index up 1-based (index + 1): 2**63 - 1 overflowed, and DuckDB's
    # OutOfRangeException stopped collect instead of the parser naming the line
    monkeypatch.setattr("runner.collect.columnar.SAMPLE_LINES", 50)  # the odd line comes after the sample
    monkeypatch.setattr("runner.collect.columnar.MAX_STRUCT_LABELS", 1)  # class-maps read as maps
    attr = TYPES[task][0]
    index = 2**63 - 1
    rng = random.Random(15)
    lines = [output_line(task, i, rng) for i in range(300)]
    n, odd = next((n, x) for n, x in enumerate(lines[100:], 101) if x.get(attr))
    meta = odd[attr + "-metadata"]
    if task is TaskType.text_classification:
        odd[attr] = index
        meta["class-name"] = "Other"
    elif task is TaskType.text_multilabel:
        odd[attr] = [index]
        meta.update({"class-map": {str(index): "Other"}, "confidence-map": {str(index): 0.5}})
    else:
        odd[attr]["annotations"] = [{"class_id": index, "left": 1, "top": 2, "width": 3, "height": 4}]
        meta.update({"class-map": {str(index): "Other"}, "objects": [{"confidence": 0.5}]})
    path = write_manifest(tmp_path / "m.manifest", lines)
    with caplog.at_level(logging.INFO, logger="runner.collect.transforms"):
        assert both_ways(path, task, tmp_path, SETTINGS["defaults"], refused=True) is None
    assert "needs the Python parser (Out of Range Error" in caplog.text
    with pytest.raises(ManifestError, match=f"line {n}: .*label index {index} is 'Other' in the line"):
        run(path, task, tmp_path / "again" / "ds", SETTINGS["defaults"], columnar=True)
