"""What `gtrun collect`'s report, report.json and card say about the dataset it wrote: the transforms'
filters and label_map, a custom task's boxes, and a sweep's members (left out, provenance, task
types, objects more than one member has)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from runner.collect import collect as c
from runner.collect.records import LabeledObject, Status, WorkerAnswer
from runner.collect.report import build_report
from runner.config import setup
from runner.schema import TaskType, TransformsConfig
from runner.service.server import Service
from tests.conftest import ROOT, Gtrun, read_json
from tests.service_helpers import Worker

SENTIMENTS = ["Positive", "Negative", "Neutral", "Irrelevant"]
SPLITS = ("train", "validation", "test")
RECEIPT_BOXES = [{"label": "vendor", "left": 10, "top": 10, "width": 80, "height": 20, "tokens": [0]},
                 {"label": "total", "left": 10, "top": 200, "width": 60, "height": 20, "tokens": [1]},
                 {"label": "total", "left": 100, "top": 200, "width": 60, "height": 20, "tokens": [2]}]


def answer_all(gtrun, runs, answer, workers: int = 1) -> None:
    """`workers` workers answer every task of each run's job over real HTTP (`answer(task)`: the
    crowd-form content); each job completes."""
    with Service(gtrun.storage, port=0).running() as svc:
        for run in runs:
            name = read_json(run / "request.json")["LabelingJobName"]
            for _ in range(workers):
                worker = Worker(svc.url)
                while (task := worker.task(name)) is not None:
                    assert worker.answer(name, task, answer(task)).status_code == 200
            assert svc.app.state.jobs.describe(name)["LabelingJobStatus"] == "Completed"


def classify(task) -> dict:
    return {"crowd-classifier": {"label": "Positive"}}


def receipt(task) -> dict:
    boxes = [{k: v for k, v in b.items() if k != "tokens"} for b in RECEIPT_BOXES]
    return {"annotations": {"boundingBoxes": boxes, "inputImageProperties": {"width": 400, "height": 300}},
            "boxTokens": json.dumps(RECEIPT_BOXES)}


def jsonl_records(dataset: Path) -> list[dict]:
    return [json.loads(x) for s in SPLITS for x in (dataset / "jsonl" / f"{s}.jsonl").read_text().splitlines()]


def section(page: str, heading: str) -> str:
    """The page's panel whose heading starts with `heading`."""
    start = page.index(f"<h2>{heading}")
    return page[start:page.index("</section>", start)]


# --- 1. the transforms' filters and label_map ---------------------------------------------------


def sentiment_manifest(path: Path, n: int = 60) -> list[dict]:
    """An output manifest of a text-classification job: confidences high, low and missing, a failed
    and an unlabeled line among them; the lines written to `path`."""
    rng = random.Random(5)
    lines = []
    for i in range(n):
        line: dict = {"source": f"tweet {i}", "tweet_id": i}
        meta: dict = {"job-name": "labeling-job/t", "type": "groundtruth/text-classification",
                      "human-annotated": "yes", "creation-date": "2026-01-01T00:00:00.000000"}
        if i % 13 == 5:
            line["s-metadata"] = {"failure-reason": "ClientError: expired", "job-name": "labeling-job/t"}
        elif i % 17 != 7:
            k = rng.randrange(len(SENTIMENTS))
            line["s"] = k
            meta["class-name"] = SENTIMENTS[k]
            confidence = rng.choice([0.9, 0.3, 0.49, 0.5, None])
            if confidence is not None:
                meta["confidence"] = confidence
            line["s-metadata"] = meta
        lines.append(line)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lines


@pytest.mark.parametrize("steps", ["table,jsonl", "table", "hf_datasets", "jsonl,table.csv", "jsonl,spacy"])
def test_the_report_describes_the_dataset_after_min_confidence_and_label_map(gtrun, tmp_path, steps):
    # table,jsonl / table / hf_datasets: the columnar path writes them all (the dataset is counted
    # from its jsonl, its table, or a pass of the parser); a CSV table or spacy: the parser writes it
    lines = sentiment_manifest(tmp_path / "out.manifest")
    labeled = [x for x in lines if "s" in x]
    kept = [x for x in labeled if x["s-metadata"].get("confidence", 1) >= 0.5]
    no_confidence = sum("confidence" not in x["s-metadata"] for x in labeled)
    merged = Counter({"Positive": 0, "Negative": 0, "Neutral": 0})
    merged.update("Neutral" if x["s-metadata"]["class-name"] == "Irrelevant" else x["s-metadata"]["class-name"]
                  for x in kept)
    picked = ["transforms=" + steps.replace(".csv", ""), "transforms.min_confidence=0.5",
              "transforms.label_map.Irrelevant=Neutral"]
    if ".csv" in steps:
        picked.append("transforms.steps.table.format=csv")
    out = tmp_path / "ds"
    r = gtrun("collect", "--manifest", str(tmp_path / "out.manifest"), "--label-attribute", "s",
              "--labels", ",".join(SENTIMENTS), "--out", str(out), *picked)
    assert r.code == 0, r.output
    report = read_json(out / "report.json")
    assert report["counts"]["labeled"] == len(labeled) and 0 < len(kept) < len(labeled)  # the job's output
    assert report["transforms"]["filters"] == [
        {"option": "min_confidence", "threshold": 0.5, "objects": len(labeled), "kept": len(kept),
         "dropped": len(labeled) - len(kept), "unknown": no_confidence}]
    assert report["transforms"]["objects"] == len(kept)
    assert no_confidence and (f"transforms.min_confidence=0.5 dropped {len(labeled) - len(kept):,} of the "
                              f"{len(labeled):,} labeled objects it looked at; kept {no_confidence:,} without "
                              "a confidence") in r.stdout, r.output
    assert report["transforms"]["label_map"] == {"Irrelevant": "Neutral"}
    assert report["labels"] == SENTIMENTS and report["transforms"]["labels"] == ["Positive", "Negative", "Neutral"]
    dist = report["label_distribution"]
    assert dist["of"] == "dataset" and dist["objects"] == len(kept) and dist["counts"] == dict(merged)
    assert dist["before_transforms"]["counts"]["Irrelevant"] > 0  # the job's labels, before the label_map
    if "jsonl" in steps:
        assert Counter(x["label"] for x in jsonl_records(out)) == +merged
    card = (out / "README.md").read_text()
    assert "| min_confidence | 0.5 |" in card and "| label_map | Irrelevant → Neutral |" in card
    assert "| min_agreement | none |" in card and "| split | train 0.8 / validation 0.1 / test 0.1" in card
    assert (f"transforms.min_confidence 0.5: kept {len(kept)} of {len(labeled)} objects, left out "
            f"{len(labeled) - len(kept)} ({no_confidence} without a confidence, kept).") in card
    assert f"| In the dataset | {len(kept)} | {len(labeled) - len(kept)} below min_confidence |" in card
    labels_table = card[card.index("## Labels"):]
    assert "| Irrelevant |" not in labels_table and f"| Neutral | {merged['Neutral']} |" in labels_table
    page = (out / "report.html").read_text()
    assert "Irrelevant" not in section(page, "Label distribution") and "In the dataset" in page
    assert f"share of {len(kept)} objects in the dataset" in page


def test_min_agreement_and_label_map_on_worker_answers(gtrun):
    # two workers: they agree on objects 0 and 2; a label_map on top (the parser's path)
    assert gtrun("run", "source.limit=4", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    name = read_json(run / "request.json")["LabelingJobName"]
    answers = iter([*["Positive", "Negative", "Neutral", "Irrelevant"], *["Positive", "Positive", "Neutral", "Negative"]])
    with Service(gtrun.storage, port=0).running() as svc:
        for _ in range(2):
            worker = Worker(svc.url)
            for _ in range(4):
                task = worker.task(name)
                worker.answer(name, task, {"crowd-classifier": {"label": next(answers)}})
    r = gtrun("collect", str(run), "transforms=jsonl", "transforms.min_agreement=1",
              "transforms.label_map.Irrelevant=Neutral")
    assert r.code == 0, r.output
    dataset = run / "dataset"
    report = read_json(dataset / "report.json")
    assert report["transforms"]["filters"] == [{"option": "min_agreement", "threshold": 1, "objects": 4, "kept": 2,
                                                "dropped": 2, "unknown": 0}]
    assert report["label_distribution"]["counts"] == {"Positive": 1, "Negative": 0, "Neutral": 1}
    assert sorted(x["label"] for x in jsonl_records(dataset)) == ["Neutral", "Positive"]
    assert "Irrelevant" in report["agreement"]["per_label"]  # agreement stays on the job's labels, and says so
    page = (dataset / "report.html").read_text()
    assert "Agreement per label <span class=\"muted\">(the job's labels, before transforms.label_map)" in page
    card = (dataset / "README.md").read_text()
    assert "## Agreement per label\n\nOn the job's labels, before transforms.label_map." in card
    assert "| Irrelevant |" in card[card.index("## Agreement per label"):]
    assert "transforms.min_agreement 1: kept 2 of 4 objects, left out 2." in card



def test_a_file_edited_while_collect_writes_the_new_dataset_is_not_overwritten(gtrun):
    # the folder is checked when collect starts, and again before the new dataset takes its place
    assert gtrun("run", "source.limit=4").code == 0
    (run,) = gtrun.runs()
    answer_all(gtrun, [run], classify)
    assert gtrun("collect", str(run), "transforms=jsonl").code == 0
    dataset = run / "dataset"
    train = dataset / "jsonl" / "train.jsonl"
    name = read_json(dataset / "report.json")["dataset"]

    def edit(step: str) -> None:  # the user fixes a label while collect works
        if step.startswith("recording the files' sizes and checksums"):
            train.write_text(train.read_text().replace('"Positive"', '"Negative"', 1))

    setup()  # the resolvers a recorded config uses, as the command line registers them
    with pytest.raises(c.CollectError, match=r"/dataset is a dataset collect wrote, but jsonl/train\.jsonl changed "):
        c.collect([c.from_run(run)], dataset, TransformsConfig(steps={"jsonl": {}, "spacy": {}}), dataset=name,
                  provenance={}, show=edit)
    assert '"Negative"' in train.read_text() and not (dataset / "spacy").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".dataset")]  # the new one is not left either


# --- 2. a custom task's boxes ------------------------------------------------------------------


def collected_receipts(gtrun, transforms: str) -> tuple[Path, str]:
    """A local run of two receipts, one worker drawing RECEIPT_BOXES on each, collected with
    `transforms`: (its dataset folder, what collect printed)."""
    assert gtrun("run", "job=receipts_ner", "source.limit=2", "workteam.workers_per_object=1").code == 0
    (run,) = gtrun.runs()
    answer_all(gtrun, [run], receipt)
    r = gtrun("collect", str(run), f"transforms={transforms}")
    assert r.code == 0, r.output
    return run / "dataset", r.stdout


def test_the_receipts_report_counts_their_boxes_per_label(gtrun):
    dataset, _ = collected_receipts(gtrun, "jsonl")
    report = read_json(dataset / "report.json")
    dist = report["label_distribution"]
    assert dist["unit"] == "boxes" and dist["counts"] == {"vendor": 2, "date": 0, "total": 4, "tax": 0, "item": 0,
                                                          "address": 0}
    assert Counter(b["label"] for x in jsonl_records(dataset) for b in x["boxes"]) == +Counter(dist["counts"])
    card = (dataset / "README.md").read_text()
    assert "| vendor | 2 | 33.3% |" in card and "| total | 4 | 66.7% |" in card
    assert card.split("\n\n")[2].startswith("Labels of a custom task collected with SageMaker Ground Truth")
    page = (dataset / "report.html").read_text()
    assert "4 · 66.7%" in section(page, "Label distribution") and "share of 6 boxes" in page


def test_coco_and_yolo_of_a_local_run_copy_its_images_from_the_storage(gtrun):
    dataset, said = collected_receipts(gtrun, "coco,yolo")
    assert "2 images copied to coco/images/" in said and "2 images copied to yolo/images/<split>/" in said
    sample = ROOT / "data" / "receipts" / "images"
    for split in SPLITS:
        coco = read_json(dataset / "coco" / f"{split}.json")
        for image in coco["images"]:  # the sample's own image, by way of the run's storage
            original = (sample / image["file_name"]).read_bytes()
            assert (dataset / "coco" / "images" / image["file_name"]).read_bytes() == original
            assert (dataset / "yolo" / "images" / split / image["file_name"]).read_bytes() == original
            assert (dataset / "yolo" / "labels" / split / image["file_name"]).with_suffix(".txt").is_file()
    assert sorted(p.name for p in (dataset / "coco" / "images").iterdir()) == sorted(
        p.name for s in SPLITS for p in (dataset / "yolo" / "images" / s).iterdir())
    # report.json names the image folders, not each image; collecting again replaces them
    files = read_json(dataset / "report.json")["files"]
    assert "coco/images/" in files and "yolo/images/" in files and not any(f.endswith(".png") for f in files)
    checksums = read_json(dataset / "report.json")["checksums"]  # the files' own; not each image's
    assert "coco/train.json" in checksums and not any(f.endswith(".png") or f.endswith("/") for f in checksums)
    run = dataset.parent
    r = gtrun("collect", str(run), "transforms=coco,yolo")
    assert r.code == 0, r.output


def receipts_in_own_storage(folder: Path, images: dict[str, bytes] | None = None, prefix: str = "") -> Path:
    """A local run of two receipts in `folder`, with its own storage folder (backend.root), one
    worker drawing RECEIPT_BOXES on each; `images`: the receipt images it uploads (file name ->
    bytes; default: the sample's), under s3://gtrun/samples/receipts/images/, or named `prefix` +
    file name under s3://gtrun/<folder name>/ when a prefix is given. Returns its run directory."""
    folder.mkdir()
    run = Gtrun(folder)
    overrides = ["job=receipts_ner", "source.limit=2", "workteam.workers_per_object=1"]
    if images is not None:
        (folder / "images").mkdir()
        for name, data in images.items():
            (folder / "images" / f"{prefix}{name}").write_bytes(data)
        overrides.append(f"source.assets.files={folder / 'images'}/*.png")
    if prefix:
        to = f"s3://gtrun/{folder.name}/"
        overrides += [f"source.assets.to={to}", f"source.params.image_prefix={to}{prefix}"]
    r = run("run", *overrides)
    assert r.code == 0, r.output
    (run_dir,) = run.runs()
    answer_all(run, [run_dir], receipt)
    return run_dir


def other_images() -> dict[str, bytes]:
    """The sample's receipt images with a byte changed in each: as long, other bytes."""
    images = {}
    for path in (ROOT / "data" / "receipts" / "images").glob("*.png"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        images[path.name] = bytes(data)
    return images


def test_merged_runs_of_two_storages_copy_each_objects_image_from_its_own_run(tmp_path):
    theirs = other_images()
    first = receipts_in_own_storage(tmp_path / "a")
    second = receipts_in_own_storage(tmp_path / "b", theirs, prefix="b-")
    # each run's images are in its own storage only
    assert (tmp_path / "b" / "storage" / "gtrun" / "b").is_dir() and not (tmp_path / "a" / "storage" / "gtrun" / "b").exists()
    r = Gtrun(tmp_path)("collect", str(first), str(second), "--out", str(tmp_path / "merged"), "transforms=coco,yolo")
    assert r.code == 0, r.output
    assert "4 images copied to coco/images/" in r.stdout and "4 images copied to yolo/images/<split>/" in r.stdout
    sample = ROOT / "data" / "receipts" / "images"

    def original(ref: str) -> bytes:  # each run's own image behind the ref its object has
        name = ref.rsplit("/", 1)[1]
        return theirs[name.removeprefix("b-")] if ref.startswith("s3://gtrun/b/") else (sample / name).read_bytes()

    dataset = tmp_path / "merged"
    refs = []
    for split in SPLITS:
        for image in read_json(dataset / "coco" / f"{split}.json")["images"]:
            refs.append(image["coco_url"])
            assert (dataset / "coco" / "images" / image["file_name"]).read_bytes() == original(image["coco_url"])
            name = image["coco_url"].rsplit("/", 1)[1]
            assert (dataset / "yolo" / "images" / split / name).read_bytes() == original(image["coco_url"])
    assert sorted(refs) == ["s3://gtrun/b/b-receipt-001.png", "s3://gtrun/b/b-receipt-002.png",
                            "s3://gtrun/samples/receipts/images/receipt-001.png",
                            "s3://gtrun/samples/receipts/images/receipt-002.png"]


def test_merged_runs_that_keep_other_images_under_one_uri_are_one_coco_error(tmp_path):
    first = receipts_in_own_storage(tmp_path / "a")
    other = receipts_in_own_storage(tmp_path / "b", other_images())  # the same URIs, in its own storage
    same = receipts_in_own_storage(tmp_path / "c")  # the sample's images, in its own storage
    collect = Gtrun(tmp_path)
    r = collect("collect", str(first), str(other), "--out", str(tmp_path / "merged"), "transforms=coco")
    assert r.code == 2
    message = " ".join(r.stderr.split())
    jobs = [read_json(run / "request.json")["LabelingJobName"] for run in (first, other)]
    assert (f"error: coco: object '{jobs[1]}/0': s3://gtrun/samples/receipts/images/receipt-001.png: {jobs[1]} "
            f"and {jobs[0]} keep different images under this URI, each in its own storage, and the dataset has one "
            "receipt-001.png (collect them one by one) hint: transforms.steps.coco.images=false writes the "
            "annotations without the images") == message, r.stderr
    assert not (tmp_path / "merged").exists()
    # the same images in two storages: copied once, the sample's
    r = collect("collect", str(first), str(same), "--out", str(tmp_path / "merged"), "transforms=coco")
    assert r.code == 0, r.output
    assert "2 images copied to coco/images/" in r.stdout
    images = tmp_path / "merged" / "coco" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["receipt-001.png", "receipt-002.png"]
    for path in images.iterdir():
        assert path.read_bytes() == (ROOT / "data" / "receipts" / "images" / path.name).read_bytes()


def test_the_receipts_report_has_the_mean_iou_of_two_workers_boxes(gtrun):
    # receipt 0: the same total, a vendor box 3 px right and 2 px lower; receipt 1: one box, two labels
    assert gtrun("run", "job=receipts_ner", "source.limit=2", "workteam.workers_per_object=2").code == 0
    (run,) = gtrun.runs()
    vendor = [{"label": "vendor", "left": 10, "top": 10, "width": 80, "height": 20, "tokens": [0]},
              {"label": "vendor", "left": 13, "top": 12, "width": 80, "height": 20, "tokens": [0]}]
    total = {"label": "total", "left": 10, "top": 200, "width": 60, "height": 20, "tokens": [1]}
    boxes = {"0": [[vendor[0], total], [vendor[1], total]],
             "1": [[{"label": "date", "left": 10, "top": 50, "width": 60, "height": 20, "tokens": [2]}],
                   [{"label": "tax", "left": 10, "top": 50, "width": 60, "height": 20, "tokens": [2]}]]}
    name = read_json(run / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        for i in range(2):
            worker = Worker(svc.url)
            while (task := worker.task(name)) is not None:
                drawn = boxes[task["objectId"]][i]
                answer = {"annotations": {"boundingBoxes": [{k: v for k, v in b.items() if k != "tokens"}
                                                            for b in drawn],
                                          "inputImageProperties": {"width": 400, "height": 300}},
                          "boxTokens": json.dumps(drawn)}
                assert worker.answer(name, task, answer).status_code == 200
        assert svc.app.state.jobs.describe(name)["LabelingJobStatus"] == "Completed"
    r = gtrun("collect", str(run), "transforms=jsonl")
    assert r.code == 0, r.output
    dataset = run / "dataset"
    report = read_json(dataset / "report.json")
    # by hand: overlap 77 x 18 = 1386 px of two 80 x 20 boxes, union 1600 + 1600 - 1386
    iou = 1386 / 1814
    receipt0 = (iou + 1.0) / 2  # matched_iou: the vendor pair and the total pair over 2 matches
    agreement = report["agreement"]
    assert agreement["measure"] == "mean pairwise IoU" and agreement["objects"] == 2
    assert agreement["mean"] == agreement["mean_iou"] == pytest.approx((receipt0 + 0.0) / 2, abs=1e-4)
    assert agreement["per_label"] == {
        "vendor": {"agreement": pytest.approx(iou, abs=1e-4), "pairs": 1}, "date": {"agreement": 0.0, "pairs": 1},
        "total": {"agreement": 1.0, "pairs": 1}, "tax": {"agreement": 0.0, "pairs": 1},
        "item": {"agreement": None, "pairs": 0}, "address": {"agreement": None, "pairs": 0}}
    assert report["counts"]["unreadable_answers"] == 0
    by_worker = report["workers"]["by_worker"]
    assert len(by_worker) == 2 and all(w["pairs"] == 2 and w["agreement"] == pytest.approx(receipt0 / 2, abs=1e-4)
                                       for w in by_worker.values())
    disputed = report["disputed"]
    assert [(x["object_id"], x["agreement"]) for x in disputed] == [("1", 0.0), ("0", pytest.approx(receipt0, abs=1e-4))]
    assert [[b["label"] for b in a["answer"]] for a in disputed[0]["answers"]] == [["date"], ["tax"]]
    assert [a["answer"][0] for a in disputed[1]["answers"]] == [
        {"label": "vendor", "left": 10.0, "top": 10.0, "width": 80.0, "height": 20.0},
        {"label": "vendor", "left": 13.0, "top": 12.0, "width": 80.0, "height": 20.0}]
    assert disputed[1]["image_size"] == [400, 300] and disputed[1]["consolidated"][0]["label"] == "vendor"
    page = (dataset / "report.html").read_text()
    assert f"{iou:.2f} · 1 pairs" in section(page, "Agreement per label")
    panel = section(page, "Most disputed objects")
    assert "(lowest mean pairwise IoU, up to 20)" in panel and panel.count("<svg") == 2
    assert "<rect x=\"13\" y=\"12\" width=\"80\" height=\"20\"" in panel and "13,12 80×20" in panel
    card = (dataset / "README.md").read_text()
    assert f"| Mean pairwise IoU | {agreement['mean']:.2f} | over 2 objects |" in card
    assert f"| vendor | 1 | 33.3% | {iou:.2f} |" in card and "| tax | 0 | 0.0% | 0.00 |" in card


def test_a_custom_task_without_boxes_has_no_agreement_and_a_bad_box_answer_is_unreadable():
    def custom(i: int, *contents: dict) -> LabeledObject:
        return LabeledObject(i, str(i), {}, "a", TaskType.custom, Status.labeled,
                             answers=tuple(WorkerAnswer(f"w{n}", x) for n, x in enumerate(contents)))

    text = [custom(1, {"note": {"text": "a"}}, {"note": {"text": "b"}})]
    report = build_report(text, task_type=TaskType.custom, labels=["vendor"], dataset="d")
    assert report["agreement"] == {"measure": None, "objects": 0, "mean": None, "per_label": {}}
    assert report["counts"]["unreadable_answers"] == 0 and report["disputed"] == []
    box = {"label": "vendor", "left": 0, "top": 0, "width": 10, "height": 10}
    boxed = [*text, custom(2, {"a": {"boundingBoxes": [box]}}, {"a": {"boundingBoxes": [box]}},
                           {"boxTokens": "not json"}, {"note": {"text": "c"}})]
    report = build_report(boxed, task_type=TaskType.custom, labels=["vendor"], dataset="d")
    assert report["agreement"]["mean_iou"] == 1.0 and report["agreement"]["objects"] == 1
    assert report["counts"]["unreadable_answers"] == 2  # the bad boxTokens, and no boxes beside two with boxes


# --- 5. sweeps -----------------------------------------------------------------------------------


def test_a_sweep_names_the_members_it_left_out_and_records_each_member(gtrun, tmp_path):
    r = gtrun("run", "-m", "source.params.entity=Xbox,NBA2K,NoSuchEntity", "source.limit=2",
              "workteam.workers_per_object=1")
    assert r.code == 2  # the third member found no rows
    runs = gtrun.runs()
    answer_all(gtrun, runs, classify)
    sweep = runs[0].parent
    failed = next(p for p in sweep.iterdir() if p.name.startswith("2_"))
    assert c.sweep_members(sweep) == runs and len(runs) == 2
    (left,) = c.left_out_members(sweep)
    assert left.startswith(f"{failed.name} (failed: ") and "no rows" in left
    r = gtrun("collect", str(sweep))
    assert r.code == 0, r.output
    card = (sweep / "dataset" / "README.md").read_text()
    assert f"1 member of the sweep left out: {failed.name} (failed: " in card
    report = read_json(sweep / "dataset" / "report.json")
    assert report["sweep"]["left_out"] == [left]
    # report.json names each member as the card does, not only how many there were
    assert report["provenance"]["sweep"] == str(sweep) and report["provenance"]["left_out"] == [left]
    assert [m["member"] for m in report["provenance"]["members"]] == [run.name for run in runs]
    assert report["provenance"]["jobs"] == [read_json(run / "request.json")["LabelingJobName"] for run in runs]
    # each member's provenance, as a run's card has it
    setup()  # the resolvers a recorded config uses, as the command line registers them
    provenance = c.merged_provenance([c.from_run(run) for run in runs])
    assert provenance["workers_per_object"] == [1] and provenance["left_out"] == [left]
    for member, run in zip(provenance["members"], runs, strict=True):
        lineage = read_json(run / "lineage.json")
        assert member["member"] == run.name and member["job"] == read_json(run / "request.json")["LabelingJobName"]
        assert member["status"] == "Completed" and member["workers_per_object"] == 1
        assert member["config_sha256"] == lineage["config_sha256"] and member["source_files"] == lineage["source_files"]
        assert member["created"] and member["ended"] and member["usd_per_task"]
        row = next(line for line in card.splitlines() if line.startswith(f"| {run.name} |"))
        assert member["job"] in row and lineage["config_sha256"] in row and "| Completed |" in row
    assert "## Sweep members\n\n| member | job | status | config_sha256 | source_files | workers_per_object |" in card
    # the command's result names them too (for the command line to print)
    result = c.collect([c.from_run(run) for run in runs], tmp_path / "again", TransformsConfig(steps={"jsonl": {}}),
                       dataset="again", provenance=provenance)
    assert result["left_out"] == [left]
    # members of another sweep: nothing overlaps
    assert "overlap" in result["report"]["sweep"] and result["report"]["sweep"]["overlap"]["objects"] == 0
    assert "more than one member" not in card


def test_a_sweep_whose_stopped_member_was_continued_says_to_collect_the_continuation_with_it(gtrun):
    # the second member's job is stopped with one object labeled; `gtrun continue` labels the other
    assert gtrun("run", "-m", "source.params.entity=Xbox,NBA2K", "source.limit=2",
                 "workteam.workers_per_object=1").code == 0
    done, stopped = gtrun.runs()
    sweep = done.parent
    answer_all(gtrun, [done], classify)
    name = read_json(stopped / "request.json")["LabelingJobName"]
    with Service(gtrun.storage, port=0).running() as svc:
        worker = Worker(svc.url)
        worker.answer(name, worker.task(name), classify(None))
        svc.app.state.jobs.stop(name)
    assert gtrun("continue", str(stopped)).code == 0
    (continuation,) = [p for p in gtrun.runs() if p not in (done, stopped)]
    assert continuation.parent != sweep  # beside the folder it was started in, not in the sweep
    answer_all(gtrun, [continuation], classify)
    # the sweep alone: the member's second object is not labeled here, but its continuation labeled it
    r = gtrun("collect", str(sweep), "transforms=jsonl")
    assert r.code == 0 and "collected 4 objects (3 labeled, 0 failed, 1 unlabeled)" in r.stdout, r.output
    said = " ".join(r.stdout.split())
    assert f"warning: {stopped.name} was continued by {continuation.resolve()} (gtrun continue)" in said, r.stdout
    assert f"gtrun collect {sweep} {continuation.resolve()} --out DIR" in said
    report = read_json(sweep / "dataset" / "report.json")
    assert report["continued"] == [{"member": stopped.name, "run": str(stopped),
                                    "continuation": str(continuation.resolve())}]
    for page in ("README.md", "report.html"):
        text = " ".join((sweep / "dataset" / page).read_text().split())
        assert f"{stopped.name} was continued by {continuation.resolve()} (gtrun continue)" in text, page
    # collected with it, as the warning says: every object labeled once, and no warning
    r = gtrun("collect", str(sweep), str(continuation), "--out", str(gtrun.cwd / "whole"), "transforms=jsonl")
    assert r.code == 0 and "collected 4 objects (4 labeled, 0 failed, 0 unlabeled)" in r.stdout, r.output
    assert "continued by" not in r.stdout and "continued" not in read_json(gtrun.cwd / "whole" / "report.json")
    # the run alone, too
    r = gtrun("collect", str(stopped), "transforms=jsonl")
    assert r.code == 0 and f"gtrun collect {stopped} {continuation.resolve()} --out DIR" in " ".join(r.stdout.split())


def test_a_sweep_of_two_task_types_says_which_member_has_which(gtrun):
    assert gtrun("run", "-m", "job=tweets_sentiment,receipts_ner", "source.limit=1",
                 "workteam.workers_per_object=1").code == 0
    tweets, receipts = sorted(gtrun.runs(), key=lambda p: p.name)
    answer_all(gtrun, [tweets], classify)
    answer_all(gtrun, [receipts], receipt)
    r = gtrun("collect", str(tweets.parent))
    assert r.code == 2
    message = " ".join(r.stderr.split())
    assert "the outputs mix task types (custom, text_classification): " in message, r.stderr
    assert f"{tweets.name} is text_classification" in message and f"{receipts.name} is custom" in message
    assert "hint: collect the members one by one: gtrun collect <member dir>" in message
    assert "TaskType." not in r.stderr


def test_two_sweeps_merged_name_each_member_with_its_sweep(gtrun):
    # two batches swept over the same entity: each sweep has a member 0_tweets-xbox
    for batch in ("0.8", "0.9"):
        assert gtrun("run", "-m", "source.params.entity=Xbox", f"source.params.threshold={batch}", "source.limit=1",
                     "workteam.workers_per_object=1").code == 0
    runs = gtrun.runs()
    answer_all(gtrun, runs, classify)
    first, second = sorted({run.parent for run in runs})
    assert {run.name for run in runs} == {"0_tweets-xbox"}
    r = gtrun("collect", str(first), str(second), "--out", str(gtrun.cwd / "both"))
    assert r.code == 0, r.output
    provenance = read_json(gtrun.cwd / "both" / "report.json")["provenance"]
    assert provenance["folders"] == [str(first), str(second)]
    assert [m["member"] for m in provenance["members"]] == [f"{first.name}/0_tweets-xbox", f"{second.name}/0_tweets-xbox"]
    card = (gtrun.cwd / "both" / "README.md").read_text()
    assert f"| {first.name}/0_tweets-xbox |" in card and f"| {second.name}/0_tweets-xbox |" in card


def test_two_sweeps_merged_name_a_member_left_out_with_its_sweep(gtrun):
    # each sweep has a member 0_tweets-xbox; the second's 1_tweets-nosuchentity failed (no rows)
    for entity, code in (("Xbox,NBA2K", 0), ("Xbox,NoSuchEntity", 2)):
        assert gtrun("run", "-m", f"source.params.entity={entity}", "source.limit=1",
                     "workteam.workers_per_object=1").code == code
    runs = gtrun.runs()
    answer_all(gtrun, runs, classify)
    first, second = sorted({run.parent for run in runs})
    failed = second / "1_tweets-nosuchentity"
    assert failed.is_dir() and not (failed / "job.json").exists()
    r = gtrun("collect", str(first), str(second), "--out", str(gtrun.cwd / "both"), "transforms=jsonl")
    assert r.code == 0, r.output
    assert f"left out: {second.name}/{failed.name} (failed: " in r.stdout, r.output
    report = read_json(gtrun.cwd / "both" / "report.json")
    (left,) = report["sweep"]["left_out"]
    assert left.startswith(f"{second.name}/{failed.name} (failed: ") and report["provenance"]["left_out"] == [left]
    assert [m["member"] for m in report["provenance"]["members"]] == [
        f"{first.name}/0_tweets-xbox", f"{first.name}/1_tweets-nba2k", f"{second.name}/0_tweets-xbox"]
    card = " ".join((gtrun.cwd / "both" / "README.md").read_text().split())
    assert f"1 member of the sweep left out: {second.name}/{failed.name} (failed: " in card
    # one sweep alone: its members by their own names
    r = gtrun("collect", str(second), "transforms=jsonl")
    assert r.code == 0 and f"left out: {failed.name} (failed: " in r.stdout, r.output


def test_a_sweep_whose_members_label_the_same_objects_says_so(gtrun):
    # two thresholds over the same entity: the three lowest-scored tweets are in both members
    assert gtrun("run", "-m", "source.params.threshold=0.8,0.9", "source.params.entity=Xbox", "source.limit=3",
                 "workteam.workers_per_object=1").code == 0
    runs = gtrun.runs()
    answer_all(gtrun, runs, classify)
    sweep = runs[0].parent
    assert [x["tweet_id"] for x in map(json.loads, (runs[0] / "manifest.jsonl").read_text().splitlines())] == \
        [x["tweet_id"] for x in map(json.loads, (runs[1] / "manifest.jsonl").read_text().splitlines())]
    r = gtrun("collect", str(sweep), "transforms.split.key=null")  # by object id (the tweets job splits by source)
    assert r.code == 0, r.output
    report = read_json(sweep / "dataset" / "report.json")
    assert report["sweep"] == {"members": 2, "left_out": [],
                               "overlap": {"objects": 3, "rows": 6, "fields": ["entity", "source", "tweet_id"]}}
    card = " ".join((sweep / "dataset" / "README.md").read_text().split())
    assert "3 objects appear in more than one member (6 rows in all, same input fields)" in card
    assert ("hint: set transforms.split.key to an input field that names the object (entity, source, tweet_id), "
            "so that every copy lands in the same split.") in card
    assert "3 objects appear in more than one member" in (sweep / "dataset" / "report.html").read_text()
    assert "warning: 3 objects appear in more than one member; transforms.split.key=<an input" in r.stdout
    r = gtrun("collect", str(sweep), "transforms.split.key=tweet_id")
    assert r.code == 0, r.output
    said = " ".join(r.stdout.split())  # the key is set: not told to set it
    assert "note: 3 objects appear in more than one member: the dataset has them more than once, each in one " \
           "split by transforms.split.key=tweet_id" in said and "<an input field" not in said, r.stdout
    card = " ".join((sweep / "dataset" / "README.md").read_text().split())
    assert "transforms.split.key=tweet_id puts the copies that share its value in the same split" in card


def test_overlap_is_counted_in_sorted_runs_on_disk(tmp_path):
    # many more objects than one run holds: the runs are merged, memory holds one run at a time
    members = ["a", "b", "c"]
    overlap = c._Overlap(tmp_path / "runs", members, run=7)

    def obj(i: int, member: str) -> LabeledObject:
        return LabeledObject(i, str(i), {"source": f"text {i}", "n": i, "gtrun_job": member}, "s",
                             TaskType.text_classification, Status.labeled)

    for i in range(100):
        overlap.add(obj(i, "a"))
    for i in range(50, 130):  # 50 objects in a and b
        overlap.add(obj(i, "b"))
    for i in range(120, 125):  # 5 in b and c, twice in c
        overlap.add(obj(i, "c"))
        overlap.add(obj(i, "c"))
    for i in range(200, 210):  # twice in c alone: not across members
        overlap.add(obj(i, "c"))
        overlap.add(obj(i, "c"))
    assert len(list((tmp_path / "runs").iterdir())) > 10
    assert overlap.figures() == {"objects": 55, "rows": 50 * 2 + 5 * 3, "fields": ["source", "n"]}
    assert not (tmp_path / "runs").exists()


def test_sweep_members_that_submitted_no_job_are_left_out(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "multirun.yaml").parent.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # Hydra writes it in every sweep's folder
    for name, files in {"0_a": {"job.json": "{}", "status.json": '{"status": "Completed"}'},
                        "1_b": {"status.json": json.dumps({"status": "failed", "error": "manifest: no rows\nmore"})},
                        "2_c": {".hydra/config.yaml": ""},
                        "dataset": {"report.json": "{}"}}.items():
        for rel, text in files.items():
            (sweep / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (sweep / name / rel).write_text(text)
    assert c.sweep_members(sweep) == [sweep / "0_a"]
    assert c.left_out_members(sweep) == ["1_b (failed: manifest: no rows more)",
                                         "2_c (created no labeling job)"]
    (sweep / "0_a" / "job.json").unlink()
    with pytest.raises(c.RecordError, match=re.escape("no member submitted a job: 0_a (created no labeling job")):
        c.sweep_members(sweep)
