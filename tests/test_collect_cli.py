"""`gtrun collect`: from a finished job's output to a dataset, a report and a card, by one command."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from runner.collect.transforms import split_of
from runner.schema import SplitConfig
from runner.service.server import Service
from tests.conftest import ROOT, Gtrun, _env, read_json, real_file
from tests.moto_fixtures import aws_env, moto_server, reset_moto  # noqa: F401
from tests.service_helpers import Worker

ANSWERS = [["Positive", "Negative", "Neutral", "Irrelevant"], ["Positive", "Positive", "Neutral", "Negative"]]


def label_run(gtrun, run, answers=ANSWERS):
    """Two workers answer every object of the run's job over real HTTP; the job completes."""
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        for labels in answers:
            worker = Worker(svc.url)
            for label in labels:
                task = worker.task(name)
                assert worker.answer(name, task, {"crowd-classifier": {"label": label}}).status_code == 200
        assert svc.app.state.jobs.describe(name)["LabelingJobStatus"] == "Completed"
    return name


def test_collect_a_run_with_its_transforms(gtrun):
    assert gtrun("run", "source.limit=4", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    name = label_run(gtrun, run)
    r = gtrun("collect", str(run))
    assert r.code == 0, r.output
    dataset = run / "dataset"
    assert {"README.md", "report.html", "report.json", "jsonl", "table", "gtrun.duckdb"} <= {p.name for p in dataset.iterdir()}
    records = [json.loads(x) for split in ("train", "validation", "test")
               for x in (dataset / "jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["workers"] == 2 for r in records)
    manifest = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()]
    by_id = {r["tweet_id"]: r for r in records}
    assert by_id[manifest[0]["tweet_id"]]["label"] == "Positive"  # both workers said so
    assert by_id[manifest[2]["tweet_id"]]["label"] == "Neutral"
    table = pq.read_table(dataset / "table" / f"{name}.parquet")
    assert table.num_rows == 4 and "label" in table.column_names
    with duckdb.connect(str(dataset / "gtrun.duckdb")) as con:  # closed: collecting again refuses an open one
        assert con.sql(f'SELECT count(*) FROM "{name}"').fetchall() == [(4,)]
    report = read_json(dataset / "report.json")
    assert report["counts"]["labeled"] == 4 and report["counts"]["answers"] == 8
    assert report["agreement"]["krippendorff_alpha"] is not None
    card = (dataset / "README.md").read_text()
    assert name in card and "config_sha256" in card and "(report.html)" in card
    # other transforms for the same output
    r = gtrun("collect", str(run), "transforms=hf_datasets,spacy")
    assert r.code == 0, r.output
    assert "  hf_datasets (in hf/): train " in r.stdout  # where to point load_dataset
    assert {p.name for p in dataset.iterdir()} >= {"hf", "spacy"} and not (dataset / "table").exists()
    on_disk = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file())
    assert read_json(dataset / "report.json")["files"] == on_disk
    # a file the user put into the dataset: collecting again would delete it with the rest, so it refuses
    (dataset / "hf" / "notes.md").write_text("mine")
    r = gtrun("collect", str(run), "transforms=jsonl")
    assert r.code == 2 and "hf/notes.md" in r.stderr and "move them out" in r.stderr, r.output
    assert (dataset / "hf" / "notes.md").read_text() == "mine" and not (dataset / "jsonl").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".dataset")) == []  # no staging folder left
    (dataset / "hf" / "notes.md").unlink()
    assert gtrun("collect", str(run), "transforms=jsonl").code == 0 and (dataset / "jsonl").is_dir()
    # output whose lines carry another attribute than the run's request names: the hint fits a run
    attribute = read_json(run / "request.json")["LabelAttributeName"]
    (output,) = gtrun.storage.rglob(f"{name}/manifests/output/output.manifest")
    output.write_text(output.read_text().replace(f'"{attribute}', '"renamed'))
    r = gtrun("collect", str(run), "transforms=jsonl")
    assert r.code == 2 and "its lines have 'renamed'" in r.stderr, r.output
    assert "collect the manifest itself: gtrun collect --manifest" in r.stderr and "--label-attribute renamed" in r.stderr
    # a malformed line of a run's output: the error names the file (the local backend's) and the line
    lines = output.read_text().replace('"renamed', f'"{attribute}').splitlines()
    output.write_text("\n".join([lines[0], "{cut", *lines[2:]]) + "\n")
    r = gtrun("collect", str(run), "transforms=jsonl")
    assert r.code == 2 and f"error: {output.resolve()}: line 2: not JSON" in r.stderr, r.output
    # an output cut short at a line's end parses: the job's object count tells; the dataset stays
    before = sorted((p.relative_to(dataset), p.read_bytes()) for p in dataset.rglob("*") if p.is_file())
    for kept in (lines[:3], []):
        output.write_text("".join(x + "\n" for x in kept))
        for steps in ("transforms=jsonl", "transforms=spacy"):  # the columnar path, the parser's
            r = gtrun("collect", str(run), steps)
            assert r.code == 2 and f"error: {output.resolve()}: {len(kept)} line" in r.stderr, r.output
            assert "but the job had 4 objects (lineage.json)" in r.stderr
            assert f"hint: collect it as it is with gtrun collect --manifest {output.resolve()} --out DIR" in r.stderr
    assert sorted((p.relative_to(dataset), p.read_bytes()) for p in dataset.rglob("*") if p.is_file()) == before


def test_collect_refuses_a_job_that_has_not_ended(gtrun):
    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    r = gtrun("collect", str(run))
    assert r.code == 2 and "Ground Truth writes its output manifest when the job ends" in r.stderr
    assert f"hint: wait for it (gtrun status {run} --wait) or stop it (gtrun stop {run}), then collect" in r.stderr
    assert not (run / "dataset").exists()


def test_a_run_is_read_with_its_own_storage_from_any_folder(gtrun, tmp_path):
    # backend.root as the default gives it: relative, i.e. under the folder the run was started in
    assert gtrun("run", "source.limit=2", "backend.root=storage", storage=False).code == 0
    (run,) = gtrun.runs()
    label_run(gtrun, run, answers=[["Positive", "Negative"]])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    there = Gtrun(elsewhere)
    r = there("status", str(run))
    assert r.code == 0 and "Completed" in r.stdout, r.output
    # the local backend's output: its s3:// URI, and the file standing in for it
    (local,) = (line.partition(" (")[2].rstrip(")") for line in r.stdout.splitlines() if line.startswith("output: s3://"))
    assert json.loads(open(local).readline())["sentiment-metadata"]["class-name"] in ("Positive", "Negative")
    r = there("collect", str(run))
    assert r.code == 0, r.output
    assert sum(len((run / "dataset" / "jsonl" / f"{s}.jsonl").read_text().splitlines())
               for s in ("train", "validation", "test")) == 2
    r = there("continue", str(run))  # its continuation goes beside it: refused elsewhere, with where to go
    assert r.code == 2 and f"was started in {tmp_path}: continue it there (cd {tmp_path})" in r.stderr, r.output
    r = there("reproduce", str(run))  # so does its reproduction, in the storage its job used
    assert r.code == 2 and f"was started in {tmp_path}: reproduce it there (cd {tmp_path})" in r.stderr, r.output
    assert list(elsewhere.iterdir()) == []  # no storage folder of its own made there
    # a run's task type, label attribute and labels are its own: the --manifest flags are refused
    for flag, value in (("--labels", "A,B"), ("--task-type", "custom"), ("--label-attribute", "foo")):
        r = gtrun("collect", str(run), flag, value)
        assert r.code == 2 and f"error: {flag}: only with --manifest" in r.stderr, r.output
    # continue labels what the job left, from its output: a source key would be recorded, not used
    for override in ("source.limit=1", "source=receipts", "job=receipts_ner"):
        r = gtrun("continue", str(run), override)
        assert r.code == 2 and f"error: {override}: continue labels the objects the run's job did not label" in r.stderr
    # the project moved with its runs and storage: read where they are now, nothing made where they were
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    there = Gtrun(moved / "elsewhere")
    r = there("status", str(moved / run.relative_to(tmp_path)))
    assert r.code == 0 and "Completed" in r.stdout, r.output
    assert not tmp_path.exists()


def test_transform_that_does_not_fit_is_a_clear_error(gtrun):
    assert gtrun("run", "source.limit=4", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    label_run(gtrun, run)
    r = gtrun("collect", str(run), "transforms=coco")
    assert r.code == 2 and "transforms.steps.coco: does not fit a text_classification job" in r.stderr
    assert not (run / "dataset").exists()


def test_collect_a_sweep_into_one_dataset_with_provenance(gtrun):
    assert gtrun("run", "-m", "source.params.entity=Xbox,NBA2K", "source.limit=4",
                 "workteam.workers_per_object=2").code == 0
    runs = gtrun.runs()
    sweep = runs[0].parent
    label_run(gtrun, runs[0])
    r = gtrun("collect", str(sweep))  # a member's job still running: it is named, with what to do
    assert r.code == 2 and f"{runs[1]}: " in r.stderr and "is InProgress" in r.stderr, r.output
    assert f"hint: wait for it (gtrun status {runs[1]} --wait) or stop it" in r.stderr
    label_run(gtrun, runs[1])
    r = gtrun("collect", str(sweep))
    assert r.code == 0, r.output
    records = [json.loads(x) for split in ("train", "validation", "test")
               for x in (sweep / "dataset" / "jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert len(records) == 8
    jobs = {r["gtrun_job"] for r in records}
    jobs_by_run = {run: read_json(run / "request.json")["LabelingJobName"] for run in runs}
    assert jobs == set(jobs_by_run.values())
    assert {r["entity"] for r in records} == {"Xbox", "NBA2K"}
    # by object id (the default): each object keeps the split it has when its run is collected alone
    thirds = ["transforms.split.train=0.34", "transforms.split.validation=0.33", "transforms.split.test=0.33"]
    assert gtrun("collect", str(sweep), *thirds).code == 0
    merged = splits(sweep / "dataset")
    alone = {}
    for run in runs:
        assert gtrun("collect", str(run), "transforms=jsonl", *thirds).code == 0
        alone.update(splits(run / "dataset"))
    assert merged == alone and len(merged) == 8
    # ... which hashing the merged ids ("<job>/<id>") would not give
    split = SplitConfig(train=0.34, validation=0.33, test=0.33)
    assert any(split_of(f"{job}/{i}", split) != split_of(str(i), split) for job in jobs for i in range(4))
    # split by an input field: each tweet lands in the same split merged as collected alone
    r = gtrun("collect", str(sweep), "transforms.split.key=tweet_id")
    assert r.code == 0, r.output
    merged = splits(sweep / "dataset")
    alone: dict = {}
    for run in runs:
        assert gtrun("collect", str(run), "transforms=jsonl", "transforms.split.key=tweet_id").code == 0
        alone.update(splits(run / "dataset"))
    assert merged == alone and len(merged) == 8
    assert merged == {t: split_of(str(t), SplitConfig(key="tweet_id")) for t in merged}
    assert "by tweet_id" in (sweep / "dataset" / "README.md").read_text()
    # a line skipped in one member is named with its member's manifest
    (output,) = gtrun.storage.rglob(f"{jobs_by_run[runs[1]]}/manifests/output/output.manifest")
    lines = output.read_text().splitlines()
    output.write_text("\n".join([lines[0], "{cut", *lines[2:]]) + "\n")
    r = gtrun("collect", str(sweep), "transforms.on_error=skip")
    assert r.code == 0 and f"(the first: line 2: in {output.resolve()}: not JSON" in r.stdout, r.output


def splits(dataset) -> dict:
    """tweet_id -> split, from a dataset's jsonl files."""
    return {json.loads(x)["tweet_id"]: split for split in ("train", "validation", "test")
            for x in (dataset / "jsonl" / f"{split}.jsonl").read_text().splitlines()}


def test_collect_output_of_a_job_gtrun_did_not_launch(gtrun, tmp_path):
    manifest = tmp_path / "output.manifest"
    shutil.copy(ROOT / "tests/data/real-outputs/cat_output.manifest", manifest)
    first = json.loads(manifest.read_text().splitlines()[0])
    attribute = next(k for k in first if f"{k}-metadata" in first)
    out = tmp_path / "cats"
    r = gtrun("collect", "--manifest", str(manifest), "--task-type", "bounding_box",
              "--label-attribute", attribute, "--out", str(out), "transforms=coco,jsonl",
              "transforms.steps.coco.images=false")  # its images are in its own account's bucket
    assert r.code == 0, r.output
    coco = {split: json.loads((out / "coco" / f"{split}.json").read_text())
            for split in ("train", "validation", "test") if (out / "coco" / f"{split}.json").exists()}
    lines = manifest.read_text().splitlines()
    assert sum(len(c["images"]) for c in coco.values()) == len(lines)
    boxes = sum(len(json.loads(x)[attribute]["annotations"]) for x in lines)
    assert sum(len(c["annotations"]) for c in coco.values()) == boxes
    assert (out / "report.json").exists() and (out / "README.md").exists()
    assert "  coco: " in r.stdout and "(annotations only: transforms.steps.coco.images=false)" in r.stdout
    assert not (out / "coco" / "images").exists()


def test_collect_reads_the_label_attribute_and_task_type_off_the_manifest(gtrun, tmp_path):
    manifest = ROOT / "tests/data/real-outputs/cat_output.manifest"
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "cats"), "transforms=coco",
              "transforms.steps.coco.images=false")
    assert r.code == 0, r.output
    assert "read from the manifest: label attribute cat-ground-truth, task type bounding_box" in r.stdout
    boxes = sum(len(json.loads(x)["cat-ground-truth"]["annotations"]) for x in manifest.read_text().splitlines())
    coco = [json.loads(p.read_text()) for p in (tmp_path / "cats" / "coco").glob("*.json")]
    assert sum(len(c["annotations"]) for c in coco) == boxes > 0
    assert read_json(tmp_path / "cats" / "report.json")["task_type"] == "bounding_box"
    # what was given is not said to be read
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "cats2"), "transforms=coco",
              "transforms.steps.coco.images=false", "--task-type", "bounding_box")
    assert r.code == 0 and "read from the manifest: label attribute cat-ground-truth\n" in r.stdout, r.output
    # a mistyped attribute would read every object as unlabeled: one error naming the right one
    r = gtrun("collect", "--manifest", str(manifest), "--label-attribute", "cat-groundtruth", "--task-type",
              "bounding_box", "--out", str(tmp_path / "typo"))
    assert r.code == 2 and not (tmp_path / "typo").exists()
    assert "label attribute 'cat-groundtruth': no line of" in r.stderr
    assert "hint: --label-attribute cat-ground-truth" in r.stderr
    # a failed object alone does not tell the task type: the error says which flag to pass
    r = gtrun("collect", "--manifest", str(ROOT / "tests/data/real-outputs/ssie_expired_line2.jsonl"),
              "--out", str(tmp_path / "expired"))
    assert r.code == 2 and "hint: pass the task type (--task-type)" in r.stderr
    assert not (tmp_path / "expired").exists()


SENTIMENT = ["Positive", "Negative", "Neutral", "Irrelevant"]  # Ground Truth's class indices 0-3


def sentiment_manifest(path):
    """A text-classification output whose first uses (Positive, Irrelevant, Negative, Neutral) are
    not in class index order: the value is the index, the metadata's class-name its name."""
    lines = []
    for i, index in enumerate([0, 3, 1, 2, 1, 0, 3, 2, 0, 1]):
        meta = {"class-name": SENTIMENT[index], "confidence": 0.9, "type": "groundtruth/text-classification",
                "job-name": "labeling-job/s", "human-annotated": "yes", "creation-date": "2026-01-01T00:00:00.000000"}
        lines.append({"source": f"text {i}", "sentiment": index, "sentiment-metadata": meta})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {x["source"]: x["sentiment"] for x in lines}


def test_the_report_and_the_card_say_how_many_objects_each_split_got(gtrun, tmp_path):
    """The card and the report gave the split ratios only; the objects each split got were said on the terminal alone."""
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    out = tmp_path / "ds"
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(out), "transforms=jsonl,hf_datasets,table",
              "transforms.split.train=0.5", "transforms.split.validation=0.3", "transforms.split.test=0.2")
    assert r.code == 0, r.output
    got = {s: len((out / "jsonl" / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "test")}
    assert sum(got.values()) == 10 and got["train"] and got["validation"], got
    assert read_json(out / "report.json")["transforms"]["split_objects"] == got
    said = (f"Objects per split (ratios 0.5 / 0.3 / 0.2): train {got['train']}, validation {got['validation']}, "
            f"test {got['test']}.")
    assert said in (out / "README.md").read_text()
    assert html.escape(said, quote=False) in (out / "report.html").read_text()
    # a dataset with no split files: no count to give
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(out), "transforms=table")
    assert r.code == 0, r.output
    assert "split_objects" not in read_json(out / "report.json")["transforms"]
    assert "Objects per split" not in (out / "README.md").read_text()


def test_labels_read_off_a_manifest_keep_ground_truths_class_indices(gtrun, tmp_path):
    manifest = tmp_path / "out.manifest"
    index = sentiment_manifest(manifest)
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=table,jsonl,hf_datasets")
    assert r.code == 0, r.output
    assert read_json(tmp_path / "ds" / "report.json")["labels"] == SENTIMENT  # not first use
    hf = [pq.read_table(p) for p in sorted((tmp_path / "ds" / "hf").glob("*.parquet"))]
    features = json.loads(hf[0].schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"]["names"] == SENTIMENT
    rows = [row for table in hf for row in table.to_pylist()]
    assert len(rows) == len(index) and all(row["label"] == index[row["source"]] for row in rows)  # GT's 1 is 1
    # the same list given: the same dataset
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "given"), "--labels", ",".join(SENTIMENT),
              "transforms=hf_datasets")
    assert r.code == 0, r.output
    given = [row for p in sorted((tmp_path / "given" / "hf").glob("*.parquet")) for row in pq.read_table(p).to_pylist()]
    assert sorted(given, key=lambda x: x["source"]) == sorted(rows, key=lambda x: x["source"])


def test_the_dataset_folder_loads_with_datasets_as_its_card_says(gtrun, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    manifest = tmp_path / "out.manifest"
    index = sentiment_manifest(manifest)
    # spaCy's ids.jsonl (and YOLO's label .txt files, the COCO .json) are files datasets would take for splits
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=jsonl,hf_datasets,spacy")
    assert r.code == 0, r.output
    loaded = datasets.load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].features["label"].names == SENTIMENT
    rows = [row for split in loaded.values() for row in split]
    assert sorted((row["source"], row["label"]) for row in rows) == sorted(index.items())
    card = (tmp_path / "ds" / "README.md").read_text(encoding="utf-8")
    assert '`datasets.load_dataset("<this folder>")` loads the train, validation, test splits from hf/' in card
    # jsonl alone, with an empty split (datasets refuses one): the splits with objects
    lines = manifest.read_text().splitlines(keepends=True)[:3]
    manifest.write_text("".join(lines))
    assert sorted(split_of(str(i), SplitConfig()) for i in range(3)) == ["train", "train", "validation"]
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "few"), "transforms=table,jsonl")
    assert r.code == 0, r.output
    loaded = datasets.load_dataset(str(tmp_path / "few"), cache_dir=str(tmp_path / "cache"))
    assert {name: split.num_rows for name, split in loaded.items()} == {"train": 2, "validation": 1}
    front = yaml.safe_load((tmp_path / "few" / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    (config,) = front["configs"]
    assert config["data_files"] == [
        {"split": "train", "path": "jsonl/train.jsonl"}, {"split": "validation", "path": "jsonl/validation.jsonl"}]
    digest = hashlib.sha256("".join(f"{path} {hashlib.sha256((tmp_path / 'few' / path).read_bytes()).hexdigest()}\n"
                                    for path in ("jsonl/train.jsonl", "jsonl/validation.jsonl")).encode()).hexdigest()
    assert config["description"] == f"gtrun dataset, files sha256 {digest}"


def test_datasets_loads_each_dataset_folder_as_it_is_now_not_another_from_its_cache(gtrun, tmp_path, monkeypatch):
    """`datasets` caches a folder's splits under the folder's name and its card's `configs`, which
    are the same for every dataset collect writes (dataset/, hf/train.parquet, ...): without more in
    the card, a second dataset loaded the first one's rows, and a dataset collected again its old rows."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "cache")
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    first, second = tmp_path / "a" / "dataset", tmp_path / "b" / "dataset"
    assert gtrun("collect", "--manifest", str(manifest), "--out", str(first), "transforms=hf_datasets").code == 0
    assert sorted(row["source"] for split in datasets.load_dataset(str(first), cache_dir=cache).values()
                  for row in split) == sorted(f"text {i}" for i in range(10))
    manifest.write_text(manifest.read_text().replace('"text ', '"other '))
    assert gtrun("collect", "--manifest", str(manifest), "--out", str(second), "transforms=hf_datasets").code == 0
    loaded = datasets.load_dataset(str(second), cache_dir=cache)
    assert sorted(row["source"] for split in loaded.values() for row in split) == sorted(f"other {i}" for i in range(10))
    # collected again with its labels merged: the same files, the same row counts, other labels
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(second), "transforms=hf_datasets",
              "transforms.label_map={Irrelevant: Neutral}")
    assert r.code == 0, r.output
    loaded = datasets.load_dataset(str(second), cache_dir=cache)
    assert loaded["train"].features["label"].names == ["Positive", "Negative", "Neutral"]
    # jsonl alone loads likewise
    assert gtrun("collect", "--manifest", str(manifest), "--out", str(first), "transforms=jsonl").code == 0
    loaded = datasets.load_dataset(str(first), cache_dir=cache)
    assert sorted(row["source"] for split in loaded.values() for row in split) == sorted(f"other {i}" for i in range(10))


def test_a_label_map_to_a_name_one_typo_from_a_label_says_which_it_made(gtrun, tmp_path):
    """Merging Irrelevant into Neutral written Neutrl made a fifth class, Neutrl, without a word."""
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    args = ["collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=hf_datasets"]
    r = gtrun(*args, "transforms.label_map={Irrelevant: Neutrl}")
    assert r.code == 0, r.output
    assert ("warning: transforms.label_map: Irrelevant → Neutrl makes a new label, beside Neutral; "
            "did you mean transforms.label_map.Irrelevant=Neutral?") in r.stdout, r.output
    assert read_json(tmp_path / "ds" / "report.json")["transforms"]["labels"] == ["Positive", "Negative", "Neutral", "Neutrl"]
    for ok in ("{Irrelevant: Neutral}", "{Irrelevant: Other}", "{Neutral: Neutrals}"):  # a merge, new names
        r = gtrun(*args, f"transforms.label_map={ok}")
        assert r.code == 0 and "warning" not in r.stdout, r.output


def test_a_label_map_key_one_typo_from_a_label_names_the_label_meant(gtrun, tmp_path):
    """A label_map key that is not a label was refused without a word of the label it nearly is."""
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    args = ["collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=jsonl"]
    r = gtrun(*args, "transforms.label_map={Irelevant: Neutral}")
    assert r.code == 2 and not (tmp_path / "ds").exists(), r.output
    assert "transforms.label_map: 'Irelevant' is not a label of the job" in r.stderr, r.output
    assert "hint: did you mean transforms.label_map.Irrelevant=Neutral?" in r.stderr, r.output
    r = gtrun(*args, "transforms.label_map={Other: Neutral}")  # nearly no label: no guess
    assert r.code == 2 and "'Other' is not a label of the job" in r.stderr and "did you mean" not in r.stderr, r.output


def test_labels_given_that_contradict_the_lines_are_one_clear_error(gtrun, tmp_path):
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    args = ["collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds")]
    r = gtrun(*args, "--labels", "Negative,Positive,Neutral,Irrelevant")  # accepted silently before
    assert r.code == 2 and not (tmp_path / "ds").exists(), r.output
    assert "line 1: label index 0 is 'Positive' in the line (class-name), but 'Negative' in the labels given" in r.stderr
    assert "hint: give the labels (--labels) in the order of the job's label config" in r.stderr
    r = gtrun(*args, "--labels", "Positive,Negative")  # "label index 3 is out of range" before, the name unsaid
    assert r.code == 2 and "line 2: label index 3 is 'Irrelevant' in the line (class-name), beyond the 2 labels given" \
        in r.stderr, r.output
    r = gtrun(*args, "--labels", "Negative,Positive,Neutral,Irrelevant", "transforms.on_error=skip")
    assert r.code == 2 and "line 1: label index 0 is 'Positive'" in r.stderr  # the list is wrong, not a line


def test_a_mistyped_label_attribute_is_named_before_the_task_type_is_asked_for(gtrun, tmp_path):
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "--label-attribute", "sentimnt")
    assert r.code == 2 and not (tmp_path / "ds").exists(), r.output
    assert f"label attribute 'sentimnt': no line of {manifest} has it; its lines have 'sentiment'" in r.stderr
    assert "hint: --label-attribute sentiment" in r.stderr and "--task-type" not in r.stderr


def test_a_custom_tasks_label_value_is_kept_in_every_format(gtrun, tmp_path):
    labeled = json.loads((ROOT / "tests/data/real-outputs/ssie_output_line1.jsonl").read_text())
    expired = json.loads((ROOT / "tests/data/real-outputs/ssie_expired_line2.jsonl").read_text())
    # what another consolidation Lambda could write: any JSON, not one shape
    other = {**labeled, "page": "2", "mock_job_name": [{"label": "PER", "start": 0}, "unsure"]}
    text = {**labeled, "page": "3", "mock_job_name": "free text, \"quoted\""}
    manifest = tmp_path / "out.manifest"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in (labeled, expired, other, text)))
    values = {x["page"]: x["mock_job_name"] for x in (labeled, other, text)}
    assert values["1"] == {"annotation-ref": "s3://bucket/annotations/file1-1-616696e2-ann.json"}
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=table,jsonl,hf_datasets")
    assert r.code == 0, r.output
    records = [json.loads(x) for split in ("train", "validation", "test")
               for x in (tmp_path / "ds" / "jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert {x["page"]: x["annotation"] for x in records} == values  # the JSON value itself
    assert all(list(x)[-3:] == ["annotation", "confidence", "workers"] for x in records)
    table = pq.read_table(tmp_path / "ds" / "table" / "ds.parquet")
    assert table.schema.field("annotation").type == pa.string()  # its JSON text: one column for any shape
    assert {row["page"]: json.loads(row["annotation"]) for row in table.to_pylist()} == values
    hf = [row for p in (tmp_path / "ds" / "hf").glob("*.parquet") for row in pq.read_table(p).to_pylist()]
    assert {row["page"]: json.loads(row["annotation"]) for row in hf} == values
    with duckdb.connect(str(tmp_path / "ds" / "gtrun.duckdb"), read_only=True) as con:
        assert con.sql("""SELECT annotation::JSON->>'annotation-ref' FROM ds WHERE page = '1'""").fetchall() == [
            (values["1"]["annotation-ref"],)]
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "csv"), "transforms=table",
              "transforms.steps.table.format=csv")
    assert r.code == 0, r.output
    with open(tmp_path / "csv" / "table" / "csv.csv", newline="", encoding="utf-8") as f:
        assert {row["page"]: json.loads(row["annotation"]) for row in csv.DictReader(f)} == values


def test_collect_a_manifest_on_s3(gtrun, tmp_path, moto_server, aws_env, monkeypatch):  # noqa: F811
    """--manifest s3://...: read with the standard AWS settings (here AWS_ENDPOINT_URL_S3: moto's server)."""
    import boto3

    reset_moto(moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="gt-out")
    manifest = ROOT / "tests/data/real-outputs/cat_output.manifest"
    s3.put_object(Bucket="gt-out", Key="cats/manifests/output/output.manifest", Body=manifest.read_bytes())
    uri = "s3://gt-out/cats/manifests/output/output.manifest"
    r = gtrun("collect", "--manifest", uri, "--out", str(tmp_path / "cats"), "transforms=jsonl")
    assert r.code == 0, r.output
    assert "label attribute cat-ground-truth, task type bounding_box" in r.stdout
    records = [json.loads(x) for p in (tmp_path / "cats" / "jsonl").glob("*.jsonl") for x in p.read_text().splitlines()]
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert sorted(len(r["boxes"]) for r in records) == sorted(len(x["cat-ground-truth"]["annotations"]) for x in lines)
    assert uri in (tmp_path / "cats" / "README.md").read_text()
    # coco and yolo copy the images, read from S3 as the manifest was; one missing is one error, no dataset
    refs = [x["source-ref"] for x in lines]
    s3.create_bucket(Bucket="devopstar-ground-truth-input")
    for ref in refs[1:]:
        s3.put_object(Bucket="devopstar-ground-truth-input", Key=ref.split("/", 3)[3], Body=f"image {ref}".encode())
    r = gtrun("collect", "--manifest", uri, "--out", str(tmp_path / "images"), "transforms=coco,yolo")
    assert r.code == 2 and not (tmp_path / "images").exists(), r.output
    assert (f"error: coco: object '0': {refs[0]}: cannot read the image (NoSuchKey: The specified key does not "
            "exist.)\n  hint: transforms.steps.coco.images=false writes the annotations without the images") in r.stderr
    s3.put_object(Bucket="devopstar-ground-truth-input", Key=refs[0].split("/", 3)[3], Body=f"image {refs[0]}".encode())
    r = gtrun("collect", "--manifest", uri, "--out", str(tmp_path / "images"), "transforms=coco,yolo")
    assert r.code == 0, r.output
    assert "4 images copied to coco/images/" in r.stdout and "4 images copied to yolo/images/<split>/" in r.stdout
    coco = tmp_path / "images" / "coco"
    for split in ("train", "validation", "test"):
        for image in json.loads((coco / f"{split}.json").read_text())["images"]:
            assert (coco / "images" / image["file_name"]).read_bytes() == f"image {image['coco_url']}".encode()
            name = image["coco_url"].rpartition("/")[2]
            assert (tmp_path / "images" / "yolo" / "images" / split / name).read_bytes() == \
                f"image {image['coco_url']}".encode()
    # yolo.folders keeps each image's bucket and key, set on collect's command line
    r = gtrun("collect", "--manifest", uri, "--out", str(tmp_path / "nested"), "transforms=yolo",
              "transforms.steps.yolo.folders=true")
    assert r.code == 0, r.output
    yolo = tmp_path / "nested" / "yolo"
    for ref in refs:
        key = ref.removeprefix("s3://")
        [image] = yolo.glob(f"images/*/{key}")
        assert image.read_bytes() == f"image {ref}".encode()
        assert Path("/labels/".join(str(image).rsplit("/images/", 1))).with_suffix(".txt").is_file()
    r = gtrun("collect", "--manifest", "s3://gt-out/cats/missing.manifest", "--out", str(tmp_path / "none"))
    assert r.code == 2 and "s3://gt-out/cats/missing.manifest" in r.stderr and not (tmp_path / "none").exists()


def test_a_manifest_on_s3_without_credentials_is_one_error(gtrun):
    r = gtrun("collect", "--manifest", "s3://gtrun/jobs/tweets/output/output.manifest", "--out", "d",
              env={"AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                   "AWS_CONFIG_FILE": "/nonexistent", "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                   "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None})
    assert r.code == 2 and "Traceback" not in r.stderr, r.output
    assert "s3://gtrun/jobs/tweets/output/output.manifest: cannot read the output manifest (no AWS credentials" \
        in r.stderr and "gtrun status <run>" in r.stderr
    assert not (gtrun.cwd / "d").exists()
    r = gtrun("collect", "--manifest", "s3://gtrun", "--out", "d")  # a bucket, no object
    assert r.code == 2 and "--manifest s3://gtrun: not an object's URI (s3://bucket/key)" in r.stderr, r.output


def test_failed_and_unlabeled_objects_are_listed_with_their_inputs(gtrun, tmp_path):
    expired = json.loads((ROOT / "tests/data/real-outputs/ssie_expired_line2.jsonl").read_text())
    labeled = json.loads((ROOT / "tests/data/real-outputs/ssie_output_line1.jsonl").read_text())
    unlabeled = {k: v for k, v in labeled.items() if not k.startswith("mock_job_name")}
    manifest = tmp_path / "out.manifest"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in (labeled, expired, unlabeled)))
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=jsonl")
    assert r.code == 0, r.output
    listed = [json.loads(x) for x in (tmp_path / "ds" / "not_labeled.jsonl").read_text().splitlines()]
    meta = expired["mock_job_name-metadata"]
    assert listed == [
        {"object_id": "1", "status": "failed", "failure_reason": meta["failure-reason"],
         "inputs": {k: v for k, v in expired.items() if k != "mock_job_name-metadata"}},
        {"object_id": "2", "status": "unlabeled", "failure_reason": None, "inputs": unlabeled}]
    assert "is listed, with its input fields, in <code>not_labeled.jsonl</code>" in \
        (tmp_path / "ds" / "report.html").read_text()
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "The 2 failed or unlabeled objects are listed, with their input fields, in " \
           "[not_labeled.jsonl](not_labeled.jsonl)." in card and "](report.html)" in card


def test_collecting_again_keeps_the_files_edited_since(gtrun):
    """The user fixes labels by hand in the dataset, then collects again to add a format: refused,
    naming what changed, and nothing of the edits is lost."""
    assert gtrun("run", "source.limit=4", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    name = label_run(gtrun, run)
    assert gtrun("collect", str(run)).code == 0
    dataset = run / "dataset"
    # report.json records each file collect wrote, but itself and the database DuckDB changes when it opens it
    checksums = read_json(dataset / "report.json")["checksums"]
    on_disk = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file())
    assert sorted(checksums) == [f for f in on_disk if f not in ("report.json", "gtrun.duckdb")]
    for file, was in checksums.items():
        data = (dataset / file).read_bytes()
        assert was["bytes"] == len(data) and was["sha256"] == hashlib.sha256(data).hexdigest()
    edited = next(p for p in sorted((dataset / "jsonl").glob("*.jsonl")) if p.stat().st_size)  # a split with objects
    split = edited.relative_to(dataset).as_posix()
    written = edited.read_bytes()
    lines = [json.loads(x) for x in written.decode().splitlines()]
    lines[0]["label"] = "Irrelevant" if lines[0]["label"] != "Irrelevant" else "Neutral"  # a label fixed by hand
    edits = "".join(json.dumps(x) + "\n" for x in lines)
    edited.write_text(edits)
    card = dataset / "README.md"
    card.write_text(card.read_text().replace(name, name.upper(), 1))  # the same size: told by its checksum
    table = dataset / "table" / f"{name}.parquet"
    os.utime(table, ns=(0, 0))  # touched (copied without its times, say), but the same bytes: not a change
    r = gtrun("collect", str(run), "transforms=hf_datasets,jsonl")
    assert r.code == 2 and f"but README.md, {split} changed since collect wrote them, which collecting again " \
                           "would overwrite" in r.stderr, r.output
    assert "copy your edits elsewhere first, or collect into another folder (--out)" in r.stderr
    assert "parquet" not in r.stderr and "Traceback" not in r.stderr
    assert edited.read_text() == edits and name.upper() in card.read_text() and not (dataset / "hf").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".dataset")) == []  # no staging folder left
    # the edits kept elsewhere, and the changed files deleted: collect writes them anew
    shutil.move(edited, run / "my-fixes.jsonl")
    card.unlink()
    r = gtrun("collect", str(run), "transforms=hf_datasets,jsonl")
    assert r.code == 0, r.output
    assert (dataset / "hf").is_dir() and edited.read_bytes() == written and (run / "my-fixes.jsonl").read_text() == edits
    # a dataset nobody edited is replaced, as before
    assert gtrun("collect", str(run), "transforms=jsonl").code == 0 and not (dataset / "hf").exists()


def test_a_dataset_collected_before_checksums_were_recorded_is_replaced(gtrun, tmp_path):
    manifest = str(ROOT / "tests/data/real-outputs/cat_output.manifest")
    out = tmp_path / "ds"
    assert gtrun("collect", "--manifest", manifest, "--out", str(out), "transforms=jsonl").code == 0
    report = read_json(out / "report.json")
    del report["checksums"]  # report.json as collect wrote it before it recorded them
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    written = (out / "jsonl" / "train.jsonl").read_bytes()
    (out / "jsonl" / "train.jsonl").write_text("an edit collect cannot tell from its own\n")
    r = gtrun("collect", "--manifest", manifest, "--out", str(out), "transforms=jsonl")
    assert r.code == 0, r.output
    assert (out / "jsonl" / "train.jsonl").read_bytes() == written and "checksums" in read_json(out / "report.json")


def test_out_is_replaced_only_when_collect_wrote_it(gtrun, tmp_path):
    manifest = str(ROOT / "tests/data/real-outputs/cat_output.manifest")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = gtrun("collect", "--manifest", manifest, "--out", str(mine))
    assert r.code == 2 and "holds files collect did not write" in r.stderr and "read from" not in r.stdout
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left either
    (tmp_path / "a-file").write_text("x")
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "a-file"))
    assert r.code == 2 and "a file, not a folder" in r.stderr and (tmp_path / "a-file").read_text() == "x"
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "a-file" / "ds"))
    assert r.code == 2 and "a-file/ds: cannot write the dataset there (Not a directory" in r.stderr, r.output
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("job: {}\n")  # a run's record
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "run" / ".hydra" / "ds"))
    assert r.code == 2 and "inside a run's .hydra folder" in r.stderr and not (tmp_path / "run" / ".hydra" / "ds").exists()
    shutil.rmtree(tmp_path / "run")
    assert "Traceback" not in r.stderr and (tmp_path / "a-file").read_text() == "x"
    # a label_map value that is not a name (a dotted override nests a mapping) is named
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "lm"), "transforms.label_map.cat.x=y")
    assert r.code == 2 and "transforms.label_map.cat: {'x': 'y'} is not a label name" in r.stderr, r.output
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "lm"), 'transforms.label_map.cat=""')
    assert r.code == 2 and "transforms.label_map.cat: '' is not a label name" in r.stderr, r.output
    assert not (tmp_path / "lm").exists()
    for _ in range(2):  # a dataset collect wrote, and an empty folder, are replaced
        r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "ds"), "transforms=table")
        assert r.code == 0, r.output
    # a table the user made in the dataset's database would go with it: refused
    with duckdb.connect(str(tmp_path / "ds" / "gtrun.duckdb")) as con:
        con.execute('CREATE TABLE my_cats AS FROM "ds" LIMIT 2')
    r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "ds"), "transforms=table")
    assert r.code == 2 and "gtrun.duckdb holds my_cats, which collect did not create" in r.stderr, r.output
    with duckdb.connect(str(tmp_path / "ds" / "gtrun.duckdb")) as con:
        assert con.sql("SELECT count(*) FROM my_cats").fetchall() == [(2,)]
        # ... and so would one that another program holds open (collect cannot see what it holds)
        r = gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "ds"), "transforms=table")
        assert r.code == 2 and "gtrun.duckdb: cannot read it (" in r.stderr and "close the program" in r.stderr, r.output
        assert con.sql("SELECT count(*) FROM my_cats").fetchall() == [(2,)]
        con.execute("DROP TABLE my_cats")
    assert gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "ds"), "transforms=table").code == 0
    (tmp_path / "empty").mkdir()
    assert gtrun("collect", "--manifest", manifest, "--out", str(tmp_path / "empty")).code == 0
    assert (tmp_path / "empty" / "report.json").is_file()


def test_what_a_killed_collect_left_is_cleared_by_the_next(gtrun, tmp_path):
    lines = ROOT.joinpath("tests/data/real-outputs/cat_output.manifest").read_text().splitlines()
    manifest = tmp_path / "big.manifest"
    with manifest.open("w") as f:
        for i in range(150_000):  # long enough to be killed while it writes
            f.write(lines[i % len(lines)].replace("0001.jpg", f"{i}.jpg") + "\n")
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "runner", "collect", "--manifest", str(manifest), "--out", str(out),
            "transforms=jsonl", "transforms.on_error=skip", "--task-type", "bounding_box"]
    proc = subprocess.Popen(args, cwd=gtrun.cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".ds.*.part/.owner")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    (left,) = tmp_path.glob(".ds.*.part")
    # one whose process still runs (here: this test's) is another collect's: left alone
    running = tmp_path / ".ds.0000beef.part"
    running.mkdir()
    (running / ".owner").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    r = gtrun("collect", "--manifest", str(ROOT / "tests/data/real-outputs/cat_output.manifest"), "--out", str(out))
    assert r.code == 0, r.output
    assert not left.exists() and running.is_dir()
    # killed after it moved the old dataset aside, before the new one went in: the old one is put back
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = tmp_path / ".ds.0000dead.part"
    aside.mkdir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    out.replace(aside / ".replaced")
    (aside / ".owner").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    r = gtrun("collect", "--manifest", str(ROOT / "tests/data/real-outputs/cat_output.manifest"), "--out", str(out),
              "transforms.label_map.dog=cat")  # fails once it has begun: what is in --out then is the old one
    assert r.code == 2 and "transforms.label_map" in r.stderr, r.output
    assert not aside.exists() and sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # the dataset "ds.v2" has a staging folder ".ds.v2.<hex>.part" too: not ds's to clear, nor to put back
    other = tmp_path / ".ds.v2.0000dead.part"
    (other / ".replaced").mkdir(parents=True)
    (other / ".owner").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    shutil.rmtree(out)
    r = gtrun("collect", "--manifest", str(ROOT / "tests/data/real-outputs/cat_output.manifest"), "--out", str(out))
    assert r.code == 0 and "put back" not in r.output, r.output
    assert (other / ".replaced").is_dir()


def test_a_malformed_line_stops_or_is_skipped(gtrun, tmp_path):
    good = {"source": "a", "s": 0, "s-metadata": {"class-name": "pos", "confidence": 0.9, "human-annotated": "yes",
                                                  "type": "groundtruth/text-classification", "job-name": "labeling-job/x",
                                                  "creation-date": "2026-01-01T00:00:00.000000"}}
    manifest = tmp_path / "out.manifest"
    manifest.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "source": "b"}) + "\n")
    args = ["--manifest", str(manifest), "--task-type", "text_classification", "--label-attribute", "s",
            "--labels", "pos,neg"]
    r = gtrun("collect", *args, "--out", str(tmp_path / "d1"), "transforms=jsonl")
    assert r.code == 2 and f"error: {manifest}: line 2: not JSON" in r.stderr and not (tmp_path / "d1").exists()
    first = tmp_path / "first.manifest"  # the attribute and task type read off a bad first line: named too
    first.write_text("{not json\n" + json.dumps(good) + "\n")
    r = gtrun("collect", "--manifest", str(first), "--out", str(tmp_path / "d1"))
    assert r.code == 2 and f"error: {first}: line 1: not JSON" in r.stderr, r.output
    r = gtrun("collect", *args, "--out", str(tmp_path / "d2"), "transforms=jsonl", "transforms.on_error=skip")
    assert r.code == 0, r.output
    report = read_json(tmp_path / "d2" / "report.json")
    assert report["counts"]["labeled"] == 2 and report["parse"]["skipped"] == 1
    # the person at the terminal, reading the card or the page sees the skipped line too
    assert "read past 1 malformed line (the first: line 2: not JSON" in r.stdout, r.output
    card = (tmp_path / "d2" / "README.md").read_text()
    assert "## Skipped lines" in card and "| 2 | not JSON" in card
    page = (tmp_path / "d2" / "report.html").read_text()
    assert "read past 1 malformed line of the output manifest" in page and "line 2: not JSON" in page

    for labels, problem in [("pos,pos,neg", "--labels: 'pos' is listed twice"), ("pos,,neg", "has an empty name")]:
        r = gtrun("collect", *args[:-1], labels, "--out", str(tmp_path / "d4"))
        assert r.code == 2 and problem in r.stderr and not (tmp_path / "d4").exists(), r.output
    # the label set's version given to collect is the dataset's, in its card and report
    r = gtrun("collect", *args, "--out", str(tmp_path / "d5"), "transforms=jsonl", "transforms.on_error=skip",
              "transforms.label_schema=v2")
    assert r.code == 0, r.output
    assert "| label_schema | v2 |" in (tmp_path / "d5" / "README.md").read_text()
    # an option alone keeps the default transforms (table and jsonl), with the option applied
    r = gtrun("collect", *args, "--out", str(tmp_path / "d3"), "transforms.on_error=skip")
    assert r.code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "d3").iterdir() if p.is_dir()) == ["jsonl", "table"]


def test_a_split_key_with_few_values_says_its_split_is_uneven(gtrun, tmp_path):
    meta = {"class-name": "pos", "confidence": 0.9, "human-annotated": "yes", "type": "groundtruth/text-classification",
            "job-name": "labeling-job/x", "creation-date": "2026-01-01T00:00:00.000000"}
    manifest = tmp_path / "out.manifest"
    manifest.write_text("".join(json.dumps({"source": f"t{i}", "id": i, "group": f"g{i % 2}", "s": 0, "s-metadata": meta})
                                + "\n" for i in range(100)))
    args = ["--manifest", str(manifest), "--label-attribute", "s", "--labels", "pos,neg", "transforms=jsonl"]
    r = gtrun("collect", *args, "--out", str(tmp_path / "by-group"), "transforms.split.key=group")
    assert r.code == 0 and "warning: transforms.split.key=group split 100 objects as train " in r.stdout, r.output
    assert "every object with the same group goes to one split" in r.stdout
    r = gtrun("collect", *args, "--out", str(tmp_path / "by-id"), "transforms.split.key=id")  # one value each
    assert r.code == 0 and "warning" not in r.stdout, r.output


def test_a_small_dataset_whose_split_by_object_id_leaves_a_split_empty_says_so(gtrun, tmp_path):
    meta = {"class-name": "pos", "confidence": 0.9, "human-annotated": "yes", "type": "groundtruth/text-classification",
            "job-name": "labeling-job/x", "creation-date": "2026-01-01T00:00:00.000000"}
    manifest = tmp_path / "out.manifest"  # two objects: one of the three splits gets none, whatever the hash
    manifest.write_text("".join(json.dumps({"source": f"t{i}", "s": 0, "s-metadata": meta}) + "\n" for i in range(2)))
    args = ["--manifest", str(manifest), "--label-attribute", "s", "--labels", "pos,neg", "transforms=jsonl"]
    r = gtrun("collect", *args, "--out", str(tmp_path / "small"))
    said = " ".join(r.stdout.split())
    assert r.code == 0 and "warning: the split by object id split 2 objects as train " in said, r.output
    assert "no objects (a share of a few objects can get none: collect more, or set its ratio to 0)" in said
    assert "every object with the same" not in said  # that is the keyed split's reason
    empty = [s for s in ("train", "validation", "test") if not (tmp_path / "small" / "jsonl" / f"{s}.jsonl").read_text()]
    assert empty and all(s in said.partition("as train")[2].partition("no objects")[0] for s in empty)
    r = gtrun("collect", *args, "--out", str(tmp_path / "two-splits"), "transforms.split.validation=0",
              "transforms.split.test=0", "transforms.split.train=1")
    assert r.code == 0 and "warning" not in r.stdout, r.output  # a ratio of 0 is meant to be empty


def test_a_split_key_that_leaves_a_small_datasets_split_empty_says_so(gtrun, tmp_path):
    # five objects, each its own id: ids 1-5 all hash into train, so validation and test get none
    meta = {"class-name": "pos", "confidence": 0.9, "human-annotated": "yes", "type": "groundtruth/text-classification",
            "job-name": "labeling-job/x", "creation-date": "2026-01-01T00:00:00.000000"}
    manifest = tmp_path / "out.manifest"
    manifest.write_text("".join(json.dumps({"source": f"t{i}", "id": i, "group": f"g{i % 2}", "s": 0, "s-metadata": meta})
                                + "\n" for i in range(1, 6)))
    assert {split_of(str(i), SplitConfig(key="id")) for i in range(1, 6)} == {"train"}
    args = ["--manifest", str(manifest), "--label-attribute", "s", "--labels", "pos,neg", "transforms=jsonl"]
    for key in ("id", "group"):
        r = gtrun("collect", *args, "--out", str(tmp_path / key), f"transforms.split.key={key}")
        said = " ".join(r.stdout.split())
        assert r.code == 0 and f"warning: transforms.split.key={key} split 5 objects as train 5, validation 0, " \
            "test 0 for ratios 0.8/0.1/0.1" in said, r.output
        assert "validation and test have no objects" in said
        assert (tmp_path / key / "jsonl" / "validation.jsonl").read_text() == ""


def test_the_same_text_in_two_splits_is_said_with_the_key_that_keeps_it_in_one(gtrun):
    """The bundled tweets hold the same text under several tweet ids: split by object id (or by
    tweet_id), a model is tested on texts it was trained on, unless collect says so."""
    assert gtrun("run").code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        while (task := worker.task(name)) is not None:
            assert worker.answer(name, task, {"crowd-classifier": {"label": "Negative"}}).status_code == 200
    dataset = run / "dataset"

    def splits_of_each_text():
        seen: dict[str, set[str]] = {}
        for split in ("train", "validation", "test"):
            for line in (dataset / "jsonl" / f"{split}.jsonl").read_text().splitlines():
                seen.setdefault(json.loads(line)["source"], set()).add(split)
        return seen

    for key in ("null", "tweet_id"):  # by object id, by tweet id
        r = gtrun("collect", str(run), "transforms=jsonl,hf_datasets", f"transforms.split.key={key}")
        assert r.code == 0, r.output
        leaked = {text for text, splits in splits_of_each_text().items() if len(splits) > 1}
        assert leaked  # the sample's duplicates, split apart
        found = read_json(dataset / "report.json")["transforms"]["split_leaks"]
        assert found["field"] == "source" and found["values"] == len(leaked), found
        values = f"{len(leaked)} source value{'s are' if len(leaked) != 1 else ' is'}"
        assert (f"warning: {values} in more than one split" in r.stdout
                and "transforms.split.key=source" in r.stdout), r.output
        assert "in more than one split" in (dataset / "README.md").read_text()
    r = gtrun("collect", str(run), "transforms=jsonl,hf_datasets")  # the tweets job's own: by the text
    assert r.code == 0 and "more than one split" not in r.stdout, r.output
    assert read_json(dataset / "report.json")["provenance"]["split"].endswith(", by source)")
    assert all(len(splits) == 1 for splits in splits_of_each_text().values())
    assert read_json(dataset / "report.json")["transforms"]["split_leaks"] == {"field": "source", "values": 0, "objects": 0}


def test_a_dataset_line_of_several_megabytes_is_looked_for_in_more_than_one_split(gtrun, tmp_path):
    """A line over the columnar reader's 4 MB goes to the parser, whose jsonl line is as long: the
    split-leak count read it with DuckDB's JSON reader, which ran out of memory under the 140MB
    limit (a traceback, after the dataset was written)."""
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines[0]["source"] = "a long text " * 1_000_000  # 12 MB
    lines[1]["source"] = lines[0]["source"]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [split_of(str(i), SplitConfig()) for i in (0, 1)] == ["validation", "train"]  # the copies apart
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=jsonl")
    assert r.code == 0, r.output
    assert read_json(tmp_path / "ds" / "report.json")["transforms"]["split_leaks"] == {
        "field": "source", "values": 1, "objects": 2}


def test_one_text_in_two_splits_is_said_in_the_singular(gtrun, tmp_path):
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines[1]["source"] = lines[0]["source"]  # objects 0 and 1: validation and train
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=jsonl")
    assert r.code == 0, r.output
    assert "warning: 1 source value is in more than one split (2 objects): transforms.split.key=source" in r.stdout, \
        r.output


def test_filters_that_leave_no_object_say_so_and_why(gtrun):
    """One worker per object (the bundled default): Ground Truth's confidence is 0 for every object,
    so any min_confidence drops them all; collect said only how many it dropped, and wrote empty splits."""
    assert gtrun("run", "source.limit=6").code == 0
    (run,) = gtrun.runs()
    label_run(gtrun, run, answers=[["Positive", "Negative", "Neutral", "Irrelevant", "Positive", "Negative"]])
    r = gtrun("collect", str(run), "transforms=jsonl,hf_datasets", "transforms.min_confidence=0.5")
    assert r.code == 0, r.output
    assert "warning: the dataset has no object: transforms.min_confidence=0.5 left out all 6" in r.stdout, r.output
    assert ("Ground Truth gives an object labeled by one worker a confidence of 0" in r.stdout
            and "workteam.workers_per_object" in r.stdout), r.output
    card = (run / "dataset" / "README.md").read_text()
    assert "The dataset has no object" in card and "a confidence of 0" in card
    # one that keeps some: no such warning
    r = gtrun("collect", str(run), "transforms=jsonl", "transforms.min_confidence=0")
    assert r.code == 0 and "dataset has no object" not in r.stdout and "min_confidence" not in r.stdout, r.output
    assert "Ground Truth gives an object labeled by one worker" not in r.stdout


def test_filters_that_leave_no_object_leave_no_empty_hf_folder_and_the_card_says_why(gtrun, tmp_path):
    """hf/ was left an empty folder, and the card had no configs without a word, when the filters
    dropped every object: on the parser's path (a run, with its worker answers) and the columnar one
    (a manifest read alone)."""
    assert gtrun("run", "source.limit=4").code == 0
    (run,) = gtrun.runs()
    label_run(gtrun, run, answers=[["Positive", "Negative", "Neutral", "Irrelevant"]])
    manifest = tmp_path / "out.manifest"
    sentiment_manifest(manifest)  # every confidence 0.9
    for target, dataset, kept in (([str(run)], run / "dataset", 4), (["--manifest", str(manifest), "--out", str(tmp_path / "ds")],
                                                                     tmp_path / "ds", 10)):
        r = gtrun("collect", *target, "transforms=jsonl,hf_datasets", "transforms.min_confidence=0.95")
        assert r.code == 0 and "the dataset has no object" in r.stdout, r.output
        assert not (dataset / "hf").exists(), sorted(p.name for p in dataset.iterdir())
        card = (dataset / "README.md").read_text()
        assert "configs:" not in card
        said = ("`datasets.load_dataset(\"<this folder>\")` has nothing to load: the dataset has no object "
                f"(transforms.min_confidence=0.95 left out all {kept}), so hf/ has no file and this card no `configs`.")
        assert said in card, card
        r = gtrun("collect", *target, "transforms=jsonl,hf_datasets")  # collected again, with its objects
        assert r.code == 0 and sorted(p.name for p in (dataset / "hf").iterdir()), r.output
        assert "configs:" in (dataset / "README.md").read_text() and "nothing to load" not in (dataset / "README.md").read_text()


def test_input_fields_that_change_along_the_manifest_keep_every_value(gtrun, tmp_path):
    """Output manifests are not tables: a field may first appear after thousands of lines, widen
    from integer to float, or hold values of no one type. Every file keeps every value."""
    n = 2_500
    meta = {"class-name": "pos", "confidence": 0.9, "human-annotated": "yes", "job-name": "labeling-job/x",
            "type": "groundtruth/text-classification", "creation-date": "2026-01-01T00:00:00.000000"}
    lines = []
    for i in range(n):
        line: dict = {"source": f"text {i}", "id": i, "score": 1 if i < 2_000 else 0.5, "ref": i if i % 2 else str(i)}
        if i >= 2_200:
            line["lang"] = "fr"
        line["meta"] = {"a": i} if i < 1_500 else {"a": i, "b": "x"}  # a key more, deep in a value
        if i == n - 1:
            line["id"] = 2 ** 64 - 1  # no int64 holds it
        lines.append({**line, "s": 0, "s-metadata": meta})
    manifest = tmp_path / "out.manifest"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = ["--manifest", str(manifest), "--label-attribute", "s", "--labels", "pos,neg"]
    r = gtrun("collect", *args, "--out", str(tmp_path / "ds"), "transforms=table,hf_datasets,jsonl")
    assert r.code == 0, r.output
    table = pq.read_table(tmp_path / "ds" / "table" / "ds.parquet")
    assert table.schema.field("score").type == pa.float64() and table.schema.field("lang").type == pa.string()
    assert table.schema.field("ref").type == pa.string() and table.schema.field("id").type == pa.string()
    rows = table.to_pylist()
    assert len(rows) == n
    for line, row in zip(lines, rows, strict=True):
        assert row["source"] == line["source"] and row["score"] == line["score"]
        assert row["lang"] == line.get("lang")  # null before it first appears
        assert row["meta"] == {"b": None, **line["meta"]}
        assert json.loads(row["ref"]) == line["ref"] and json.loads(row["id"]) == line["id"]  # JSON text
    hf = [r for split in ("train", "validation", "test") if (tmp_path / "ds/hf" / f"{split}.parquet").exists()
          for r in pq.read_table(tmp_path / "ds/hf" / f"{split}.parquet").to_pylist()]
    assert sorted(r["source"] for r in hf) == sorted(x["source"] for x in lines)
    assert {r["source"]: r["lang"] for r in hf} == {x["source"]: x.get("lang") for x in lines}
    assert all(json.loads(r["id"]) == int(r["source"].split()[1]) for r in hf if r["source"] != f"text {n - 1}")
    assert not list((tmp_path / "ds").rglob(".*.parquet.*"))  # no part left behind
    jsonl = [json.loads(x) for split in ("train", "validation", "test")
             for x in (tmp_path / "ds/jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert {x["source"]: x["id"] for x in jsonl} == {x["source"]: x["id"] for x in lines}  # JSON keeps them as they are
    # csv: the late column, empty in the rows before it
    r = gtrun("collect", *args, "--out", str(tmp_path / "csv"), "transforms=table", "transforms.steps.table.format=csv")
    assert r.code == 0, r.output
    with open(tmp_path / "csv/table/csv.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and all(len(row) == len(rows[-1]) for row in rows)
    assert [row["lang"] for row in rows] == [x.get("lang", "") for x in lines]
    with duckdb.connect(str(tmp_path / "csv" / "gtrun.duckdb"), read_only=True) as con:
        assert con.execute('SELECT count(*), count(lang) FROM "csv"').fetchone() == (n, n - 2_200)


def test_a_manifest_in_ground_truths_layout_brings_its_worker_answers(gtrun, tmp_path):
    """collect --manifest <job>/manifests/output/output.manifest reads the worker responses beside
    it (<job>/annotations/worker-response/), as collect of the run does: the same agreement figures."""
    assert gtrun("run", "source.limit=3", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        for labels in (["Positive", "Negative", "Neutral"], ["Positive", "Neutral", "Neutral"]):  # two workers
            worker = Worker(svc.url)
            for label in labels:
                worker.answer(name, worker.task(name), {"crowd-classifier": {"label": label}})
    assert gtrun("collect", str(run)).code == 0
    (manifest,) = gtrun.storage.rglob("manifests/output/output.manifest")
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"),
              "--labels", "Positive,Negative,Neutral,Irrelevant")
    assert r.code == 0, r.output
    mine, theirs = read_json(tmp_path / "ds" / "report.json"), read_json(run / "dataset" / "report.json")
    assert mine["counts"]["answers"] == theirs["counts"]["answers"] == 6
    assert mine["agreement"] == theirs["agreement"] and mine["agreement"]["krippendorff_alpha"] is not None
    assert mine["workers"] == theirs["workers"] and mine["workers"]["count"] == 2


def test_continue_of_a_job_that_labeled_everything_is_refused_before_a_run_starts(gtrun):
    assert gtrun("run", "source.limit=2").code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        while (task := worker.task(name)) is not None:
            worker.answer(name, task, {"crowd-classifier": {"label": "Positive"}})
    r = gtrun("continue", str(run))
    assert r.code == 2 and "its job labeled every object; nothing to continue" in r.stderr, r.output
    assert gtrun.runs(every=True) == [run] and len(gtrun.jobs()) == 1


def test_continue_labels_what_a_stopped_job_left(gtrun):
    assert gtrun("run", "source.limit=4").code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    r = gtrun("continue", str(run))  # the job is still running: refused before a run directory is made
    assert r.code == 2 and "Ground Truth writes its output manifest when the job ends" in r.stderr, r.output
    assert gtrun.runs(every=True) == [run]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        for _ in range(2):
            task = worker.task(name)
            worker.answer(name, task, {"crowd-classifier": {"label": "Positive"}})
        svc.app.state.jobs.stop(name)
    r = gtrun("continue", str(run), "workteam.workers_per_object=2")
    assert r.code == 0, r.output
    (new,) = [p for p in gtrun.runs() if p != run]
    lines = (new / "manifest.jsonl").read_text().splitlines()
    first = (run / "manifest.jsonl").read_text().splitlines()
    assert lines == first[2:]  # the two objects nobody labeled, as they were
    request = read_json(new / "request.json")
    assert request["LabelingJobName"] != name
    assert request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] == 2
    assert (new / "query.sql").read_text().startswith(f"-- continues {run.resolve()}")
    assert read_json(new / "lineage.json")["continues"] == str(run.resolve())
    # once continued, the run is not continued again (its objects would be labeled twice) ...
    r = gtrun("continue", str(run))
    assert r.code == 2 and f"was continued already by {new.resolve()}" in r.stderr
    # ... and a continuation has no query to reproduce
    r = gtrun("reproduce", str(new))
    assert r.code == 2 and f"continues {run.resolve()}" in r.stderr
    assert f"`gtrun reproduce {run.resolve()}` reproduces the run it continues" in r.stderr
    assert len(gtrun.jobs()) == 2
    for pair in ((run, new), (new, run)):  # diff says which continues which, whichever comes first
        d = gtrun("diff", *map(str, pair))
        assert d.code == 1 and f"{new} continues {run} (gtrun continue)" in " ".join(d.stdout.split()), d.output
    # the continuation labeled, it is collected alone (its card says what it continues) or with its run
    later = read_json(new / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        for who in (Worker(svc.url), Worker(svc.url)):
            while (task := who.task(later)) is not None:
                who.answer(later, task, {"crowd-classifier": {"label": "Negative"}})
        svc.app.state.jobs.tick()
    r = gtrun("collect", str(new))
    assert r.code == 0, r.output
    assert f"this run continues {run.resolve()}; to have both in one dataset: gtrun collect {run.resolve()} " in r.stdout
    assert f"| continues | {run.resolve()} |" in (new / "dataset" / "README.md").read_text()
    db = new / "dataset" / "gtrun.duckdb"  # the table's view, named after the job (a "-" in it): how to query it
    (query,) = (line.partition("query it: ")[2] for line in r.stdout.splitlines() if "query it: " in line)
    assert shlex.split(query) == ["python", "-c", f"import duckdb; duckdb.connect({str(db)!r}).sql('FROM \"{later}\"').show()"]
    shown = subprocess.run(shlex.split(query), capture_output=True, text=True, cwd=gtrun.cwd)  # it runs as printed
    assert shown.returncode == 0 and "confidence" in shown.stdout.splitlines()[1], shown.stderr  # the header
    with duckdb.connect(str(db), read_only=True) as con:
        assert len(con.sql(f'FROM "{later}"').fetchall()) == 2
    r = gtrun("collect", str(run), str(new))
    assert r.code == 2 and "several runs or sweeps are merged into one dataset: say where with --out DIR" in r.stderr
    r = gtrun("collect", str(run), str(new), "--out", str(gtrun.cwd / "whole"), "transforms=jsonl")
    assert r.code == 0, r.output
    records = [json.loads(x) for split in ("train", "validation", "test")
               for x in (gtrun.cwd / "whole" / "jsonl" / f"{split}.jsonl").read_text().splitlines()]
    assert sorted(r["label"] for r in records) == ["Negative", "Negative", "Positive", "Positive"]
    # the objects the first job left are the continuation's: each counted once, none left unlabeled
    assert "collected 4 objects (4 labeled, 0 failed, 0 unlabeled)" in r.stdout and "more than one member" not in r.stdout
    assert read_json(gtrun.cwd / "whole" / "report.json")["counts"]["unlabeled"] == 0
    assert (gtrun.cwd / "whole" / "not_labeled.jsonl").read_text() == ""
    card = (gtrun.cwd / "whole" / "README.md").read_text()
    assert name in card and later in card and "| sweep |" not in card  # two runs of a day's folder: no sweep
    assert "## Merged runs" in card and "Sweep members" not in card
    row = next(line for line in card.splitlines() if line.startswith(f"| {new.name} |"))
    assert row.rstrip(" |").endswith(str(run.resolve()))  # the members' table says which continues which
    r = gtrun("collect", str(run), str(run), "--out", str(gtrun.cwd / "twice"))
    assert r.code == 2 and "is given twice" in r.stderr


def test_a_continued_run_is_known_as_such_after_its_project_moved_or_was_copied(tmp_path):
    # lineage.json records the run a continuation continues by its path then: read where it is now
    project = tmp_path / "project"
    project.mkdir()
    gtrun = Gtrun(project)
    assert gtrun("run", "source.limit=4", "backend.root=storage", storage=False).code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        for _ in range(2):
            worker.answer(name, worker.task(name), {"crowd-classifier": {"label": "Positive"}})
        svc.app.state.jobs.stop(name)
    assert gtrun("continue", str(run)).code == 0
    (new,) = [p for p in gtrun.runs() if p != run]
    later = read_json(new / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        while (task := worker.task(later)) is not None:
            worker.answer(later, task, {"crowd-classifier": {"label": "Negative"}})
        svc.app.state.jobs.tick()
    for where in ("moved", "copied"):
        if where == "moved":
            project = project.rename(tmp_path / "moved")
        else:
            project = Path(shutil.copytree(project, tmp_path / "copied"))
        here = Gtrun(project)
        run_now, new_now = (project / r.relative_to(r.parents[3]) for r in (run, new))
        r = here("continue", str(run_now))  # its objects would be labeled twice
        assert r.code == 2 and f"was continued already by {new_now}" in r.stderr, r.output
        r = here("collect", str(new_now))
        assert r.code == 0 and f"this run continues {run_now}; to have both in one dataset" in r.stdout, r.output
        assert f"| continues | {run_now} |" in (new_now / "dataset" / "README.md").read_text()
        r = here("collect", str(run_now), str(new_now), "--out", str(project / "whole"), "transforms=jsonl")
        assert r.code == 0 and "collected 4 objects (4 labeled, 0 failed, 0 unlabeled)" in r.stdout, r.output
        assert (project / "whole" / "not_labeled.jsonl").read_text() == ""
        r = here("reproduce", str(new_now))
        assert r.code == 2 and f"continues {run_now}: its objects came from that run's output" in r.stderr


def test_what_a_transform_could_not_write_is_said_and_recorded(gtrun, tmp_path):
    # a span over part of a word: spacy leaves it out, conll tags the whole word; both are said
    meta = {"entities": [{"confidence": 0.9}], "job-name": "labeling-job/ner", "type": "groundtruth/text-span",
            "human-annotated": "yes", "creation-date": "2026-01-01T00:00:00"}
    lines = [{"source": "Downloading the app", "ents": {"annotations": {"entities": [
                 {"label": "Company", "startOffset": 0, "endOffset": 3}]}}, "ents-metadata": meta},
             {"source": "Acme ships", "ents": {"annotations": {"entities": [
                 {"label": "Company", "startOffset": 0, "endOffset": 4}]}}, "ents-metadata": meta}]
    manifest = tmp_path / "output.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), "transforms=spacy,conll")
    assert r.code == 0, r.output
    assert ("  warning: spacy: 1 problem (the first: object '0': span 'Company' [0, 3) 'Dow' covers no whole "
            "token; dropped); report.json lists the first 1") in r.stdout
    assert ("  warning: conll: 1 problem (the first: object '0': span 'Company' [0, 3) covers part of a token; "
            "the whole token is tagged)") in r.stdout
    problems = read_json(tmp_path / "ds" / "report.json")["transforms"]["problems"]
    assert {step: found["count"] for step, found in problems.items()} == {"spacy": 1, "conll": 1}
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "spacy: 1 problem writing its files (the first: object '0': span 'Company' [0, 3) 'Dow'" in card


def test_collect_overrides_that_are_wrong_are_named_with_the_one_meant(gtrun, tmp_path):
    manifest = real_file("cat_output.manifest")
    for override, said in [
        ("transforms.min_agreeement=0.5", "error: transforms.min_agreeement: Key 'min_agreeement' not in "
                                          "'TransformsConfig'\n  hint: did you mean transforms.min_agreement?"),
        ("transforms.table.format=csv", "hint: a transform's options are set as transforms.steps.table.<option>"),
        ("source.limit=3", "error: source.limit: collect takes only transforms=... and transforms.<key>=... overrides"),
    ]:
        r = gtrun("collect", "--manifest", str(manifest), "--out", str(tmp_path / "out"), override)
        assert r.code == 2 and said in r.stderr, r.output
        assert not (tmp_path / "out").exists()
    # one manifest at a time, and no run beside it: it used to take the last and drop the rest quietly
    for more in (["--manifest", str(real_file("ic_output_line1.jsonl"))], [str(tmp_path)]):
        r = gtrun("collect", "--manifest", str(manifest), *more, "--out", str(tmp_path / "out"))
        assert r.code == 2 and "--manifest: collect reads one output manifest at a time" in r.stderr, r.output
        assert not (tmp_path / "out").exists()


def test_merging_runs_with_other_labels_says_so_and_the_summary_says_what_filters_dropped(gtrun):
    assert gtrun("run", "source.limit=2").code == 0
    assert gtrun("run", "source.limit=2", "template.labels=[Good,Bad]").code == 0
    first, second = gtrun.runs()
    with Service(gtrun.storage, port=0).running() as svc:
        for run, label in ((first, "Positive"), (second, "Good")):
            name = read_json(run / "request.json")["LabelingJobName"]
            worker = Worker(svc.url)
            while (task := worker.task(name)) is not None:
                worker.answer(name, task, {"crowd-classifier": {"label": label}})
        svc.app.state.jobs.tick()
    r = gtrun("collect", str(first), str(second), "--out", str(gtrun.cwd / "both"), "transforms.min_confidence=0.99")
    assert r.code == 0, r.output
    assert "warning: the runs label with different labels: " in r.stdout and "Good, Bad" in r.stdout
    report = read_json(gtrun.cwd / "both" / "report.json")
    (f,) = report["transforms"]["filters"]
    said = f"transforms.min_confidence=0.99 dropped {f['dropped']} of the 4 labeled objects it looked at"
    assert f["dropped"] > 0 and said in r.stdout
    # the older set mapped into the newer one: what label_map is for, nothing to warn of
    r = gtrun("collect", str(first), str(second), "--out", str(gtrun.cwd / "mapped"),
              "transforms.label_map.Good=Positive", "transforms.label_map.Bad=Negative")
    assert r.code == 0 and "different labels" not in r.output, r.output
    # a label left unmapped is named as the runs label after the map
    r = gtrun("collect", str(first), str(second), "--out", str(gtrun.cwd / "half"), "transforms.label_map.Good=Positive")
    assert r.code == 0, r.output
    assert "warning: the runs label with different labels after transforms.label_map: " in r.stdout
    assert ": Positive, Bad (transforms.label_map" in r.stdout, r.stdout


def test_image_names_with_a_hash_or_a_question_mark_are_kept_from_run_to_dataset(gtrun, tmp_path):
    """An S3 key may hold `#` and `?`: `s3://b/shot#1.png` is the object `shot#1.png`, not `shot`
    with a fragment. Two such images were one object, `shot` (the second copy over the first), and
    the datasets' copies lost their names and suffixes."""
    import io

    from PIL import Image

    from tests.test_bad_input import _own_images

    def png(width: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, 30), "white").save(out, "PNG")
        return out.getvalue()

    files = {"shot#1.png": png(40), "shot#2.png": png(50), "why?.png": png(60), "50% off.png": png(70)}
    args = _own_images(tmp_path, files, list(files))
    assert gtrun("run", *args, "transforms.split.train=1", "transforms.split.validation=0",
                 "transforms.split.test=0", "transforms=[coco,yolo]").code == 0
    (run,) = gtrun.runs()
    stored = gtrun.storage / "gtrun" / "mine"
    assert sorted(p.name for p in stored.iterdir()) == sorted(files)
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        for _ in files:
            task = worker.task(name)
            src = html.unescape(task["html"].split('src="/storage/', 1)[1].split('"', 1)[0])
            image = worker.http.get("/storage/" + src)  # what the worker's browser is shown
            assert image.status_code == 200, src
            width = Image.open(io.BytesIO(image.content)).size[0]
            box = {"label": "cat", "left": 10, "top": 5, "width": 10, "height": 10}
            answer = {"boundingBox": {"boundingBoxes": [box], "inputImageProperties": {"width": width, "height": 30}}}
            assert worker.answer(name, task, answer).status_code == 200
        assert svc.app.state.jobs.describe(name)["LabelingJobStatus"] == "Completed"
    out = [json.loads(x) for x in (gtrun.storage / "gtrun" / "jobs" / name / "output" / name / "manifests" / "output"
                                   / "output.manifest").read_text().splitlines()]
    # each image was shown as itself: its own width came back
    assert {line["source-ref"].rsplit("/", 1)[1]: line["boxes"]["image_size"][0]["width"] for line in out} == \
        {"shot#1.png": 40, "shot#2.png": 50, "why?.png": 60, "50% off.png": 70}
    r = gtrun("collect", str(run))
    assert r.code == 0, r.output
    dataset = run / "dataset"
    coco = read_json(dataset / "coco" / "train.json")
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(files)
    assert sorted(p.name for p in (dataset / "coco" / "images").iterdir()) == sorted(files)
    for image in coco["images"]:
        assert (dataset / "coco" / "images" / image["file_name"]).read_bytes() == \
            files[image["file_name"]], image
    assert sorted(p.name for p in (dataset / "yolo" / "images" / "train").iterdir()) == sorted(files)
    assert sorted(p.name for p in (dataset / "yolo" / "labels" / "train").iterdir()) == \
        sorted(n.rsplit(".", 1)[0] + ".txt" for n in files)
