"""End to end, like people using the product: a job made through boto3, answered in a real browser.

For each bundled template a labeling job is created with an unmodified boto3 sagemaker client
against gtrun's local labeling service (real HTTP, one service per test). Two workers, two
separate Chromium browser contexts (so two cookies, two worker ids), open the job's worker page
and answer every task with the mouse and the keyboard: category buttons and number keys, boxes
dragged on the image, text spans selected with the mouse, text typed in a text area. Each submit
moves the page on to the next task, and at the end the page says there is nothing left.

Then what Ground Truth would leave behind is checked: DescribeLabelingJob's status and counters,
the output manifest (input fields kept, `<attr>` and `<attr>-metadata` as the answers imply), the
worker-response file of every object and the consolidation request and response files.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from runner.service.server import Service
from tests.browser_helpers import drag, mouse_select
from tests.service_helpers import TEMPLATES, on_hosted_ui, put_job, sagemaker

HOME = Path(__file__).resolve().parent.parent
RECEIPTS = HOME / "data" / "receipts"
COOKIE = "gtrun_worker"
REGION = "us-east-1"
ATTR = "label"  # put_job's LabelAttributeName
DOT = "\u00b7"
COUNTERS_DONE = {"TotalLabeled": 2, "HumanLabeled": 2, "MachineLabeled": 0,
                 "FailedNonRetryableError": 0, "Unlabeled": 0}
COUNTERS_HALF = {"TotalLabeled": 1, "HumanLabeled": 1, "MachineLabeled": 0,
                 "FailedNonRetryableError": 0, "Unlabeled": 1}
CREATION_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
KEY_TIME = re.compile(r"\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d(-\d+)?\.json")
ANSWER_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
BOX_TOLERANCE = 3  # image pixels between where the mouse went and what was recorded


# ------------------------------------------------------------------------------------------------
# Fixtures: one browser per module, one labeling service per test


@pytest.fixture
def service(tmp_path):
    with Service(tmp_path / "storage", port=0).running() as svc:
        yield svc


# ------------------------------------------------------------------------------------------------
# A worker: one browser context (its own cookie), one tab


class Person:
    """A worker at their browser: opens the job's page, reads the top bar, submits."""

    def __init__(self, browser: Any, url: str, job: str) -> None:
        self.url, self.job = url, job
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self._worker_id: str | None = None
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, via_index: bool = False) -> None:
        """Go to the job's worker page: straight to its address, or from the service's job list."""
        if via_index:
            self.page.goto(f"{self.url}/")
            link = self.page.locator("table.gtrun-jobs").get_by_role("link", name=self.job, exact=True)
            deadline = time.monotonic() + 5
            while link.count() == 0:  # still Initializing: no link yet, so refresh like a person would
                assert time.monotonic() < deadline, self.page.locator("body").inner_text()
                self.page.wait_for_timeout(200)
                self.page.reload()
            row = self.page.locator("table.gtrun-jobs tr",
                                    has=self.page.get_by_role("link", name=self.job, exact=True))
            assert row.locator("td").all_inner_texts() == [self.job, "InProgress", "0 / 2"]
            link.click()
            self.page.wait_for_url(f"{self.url}/jobs/{self.job}/")
        else:
            self.page.goto(f"{self.url}/jobs/{self.job}/")
        self._settle()
        self.worker_id()

    def _settle(self) -> None:
        """Wait until the page shows a ready task form, or the end-of-work notice."""
        self.page.wait_for_selector("crowd-form[data-crowd-ready], section.gtrun-done")
        if self.task() is not None:
            self.page.wait_for_load_state("load")  # images (the box tasks) included

    def task(self) -> dict[str, Any] | None:
        return self.page.evaluate("window.gtrunTask || null")  # type: ignore[no-any-return]

    def object_id(self) -> int | None:
        task = self.task()
        return None if task is None else int(task["objectId"])

    def progress(self) -> str:
        return self.page.locator("header.gtrun-bar .gtrun-progress").inner_text()

    def done(self) -> bool:
        notice = self.page.locator("section.gtrun-done h1")
        # nothing left for this worker; once every object is labeled the job itself is complete
        return notice.count() == 1 and notice.inner_text() in ("No more tasks for you", "This job is complete")

    def submit(self, how: str) -> None:
        """Submit the task (the Submit button, or Ctrl+Enter) and wait for the next page."""
        token = self.task()["token"]  # type: ignore[index]
        with self.page.expect_navigation():
            if how == "click":
                self.page.locator("crowd-button[form-action=submit] button").click()
            elif how == "key":
                self.page.keyboard.press("Control+Enter")
            else:
                raise ValueError(how)
        self._settle()
        after = self.task()
        assert after is None or after["token"] != token

    def worker_id(self) -> str:
        """The worker id the service derives from this browser's cookie (read while it is open)."""
        if self._worker_id is None:
            cookie = next(c["value"] for c in self.context.cookies() if c["name"] == COOKIE)
            self._worker_id = f"private.{REGION}.{cookie}"
        return self._worker_id

    def close(self) -> None:
        self.context.close()


def progress(labeled: int, mine: int, total: int = 2) -> str:
    return f"{labeled} of {total} labeled {DOT} you answered {mine}"


Answerer = Callable[[Any, dict[str, Any]], str]  # (page, manifest line) -> how to submit


def label_job(browser: Any, service: Any, request: dict[str, Any], lines: list[dict[str, Any]],
              answers: dict[tuple[str, int], Answerer]) -> dict[str, Person]:
    """Create the job through boto3; workers A and B answer every task as `answers` says.

    With 2 workers per object, both get object 0 first, then object 1 (A answers first each
    time); with 1, A gets object 0 and B object 1. The top bar's progress is checked after every
    page load, the counters half-way, and the end-of-work page at the end.
    """
    sm = sagemaker(service.url)
    name = request["LabelingJobName"]
    arn = sm.create_labeling_job(**request)["LabelingJobArn"]
    assert arn == f"arn:aws:sagemaker:{REGION}:123456789012:labeling-job/{name.lower()}"
    per_object = request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"]
    people = {"A": Person(browser, service.url, name), "B": Person(browser, service.url, name)}
    if per_object == 2:
        first = {"A": 0, "B": 0}
        # (who, object, progress shown afterwards, next object or None for the end page)
        steps = [("A", 0, progress(0, 1), 1), ("B", 0, progress(1, 1), 1),
                 ("A", 1, progress(1, 2), None), ("B", 1, progress(2, 2), None)]
    else:
        assert per_object == 1
        first = {"A": 0, "B": 1}
        steps = [("A", 0, progress(1, 1), None), ("B", 1, progress(2, 1), None)]
    try:
        for who, person in people.items():
            person.open(via_index=who == "A")
            assert person.object_id() == first[who], who
            if who == "A":  # reloading the page gives the same task back, not another one
                token = person.task()["token"]  # type: ignore[index]
                person.page.reload()
                person._settle()
                assert person.task()["token"] == token  # type: ignore[index]
            assert person.progress() == progress(0, 0)
            assert person.page.title() == request["HumanTaskConfig"]["TaskTitle"]
        assert people["A"].worker_id() != people["B"].worker_id()
        for n, (who, object_id, shown, following) in enumerate(steps):
            person = people[who]
            assert person.object_id() == object_id, (who, object_id)
            how = answers[(who, object_id)](person.page, lines[object_id])
            person.submit(how)
            assert person.progress() == shown, (who, object_id)
            assert person.object_id() == following, (who, object_id)
            if following is None:
                assert person.done(), (who, object_id)
            if n == len(steps) // 2 - 1:  # object 0 done, object 1 not yet
                d = sm.describe_labeling_job(LabelingJobName=name)
                assert d["LabelingJobStatus"] == "InProgress"
                assert d["LabelCounters"] == COUNTERS_HALF
                assert "LabelingJobOutput" not in d
        for who, person in people.items():
            person.open()  # coming back later: still nothing to do
            assert person.done(), who
            assert person.progress() == progress(2, 2 if per_object == 2 else 1)
            assert person.dialogs == [], (who, person.dialogs)
            assert person.errors == [], (who, person.errors)
    finally:
        for person in people.values():
            person.close()
    return people


# ------------------------------------------------------------------------------------------------
# What the job left in storage


def collected(service: Any, request: dict[str, Any], task_type: str, labels: list[str], steps: str) -> Path:
    """`gtrun collect`'s code on the job's output in the service's storage; the dataset folder."""
    from runner.cli import transforms_settings
    from runner.collect.collect import Output, collect
    from runner.io.store import LocalStore
    from runner.schema import TaskType

    name = request["LabelingJobName"]
    d = sagemaker(service.url).describe_labeling_job(LabelingJobName=name)
    out = Output(name=name, manifest_uri=d["LabelingJobOutput"]["OutputDatasetS3Uri"],
                 storage=LocalStore(service.root), task_type=TaskType(task_type), attribute=ATTR, labels=labels,
                 output_path=request["OutputConfig"]["S3OutputPath"])
    folder = Path(service.root).parent / "dataset"
    collect([out], folder, transforms_settings(None, [f"transforms={steps}"]), dataset=name, provenance={"job": name})
    report = json.loads((folder / "report.json").read_text())
    assert report["counts"]["objects"] == report["counts"]["labeled"]
    return folder


def local(service: Any, uri: str) -> Path:
    assert uri.startswith("s3://"), uri
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return Path(service.root) / bucket / key


def check_outputs(service: Any, request: dict[str, Any], lines: list[dict[str, Any]],
                  people: dict[str, Person], output_type: str) -> tuple[list[dict[str, Any]],
                                                                        dict[int, list[dict[str, Any]]]]:
    """Check the job's status and every file Ground Truth writes; return the output lines and
    the worker-response answers per object (in the file's order)."""
    name = request["LabelingJobName"]
    per_object = request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"]
    sm = sagemaker(service.url)
    d = sm.describe_labeling_job(LabelingJobName=name)
    assert d["LabelingJobStatus"] == "Completed"
    assert d["LabelCounters"] == COUNTERS_DONE
    base = f"{request['OutputConfig']['S3OutputPath']}/{name}"
    manifest_uri = d["LabelingJobOutput"]["OutputDatasetS3Uri"]
    assert manifest_uri == f"{base}/manifests/output/output.manifest"
    listed = sm.list_labeling_jobs()["LabelingJobSummaryList"]
    assert [(j["LabelingJobName"], j["LabelingJobStatus"]) for j in listed] == [(name, "Completed")]

    raw = local(service, manifest_uri).read_text(encoding="utf-8")
    assert raw.endswith("\n")
    out = [json.loads(x) for x in raw.splitlines()]
    assert len(out) == len(lines)
    for line, got in zip(lines, out, strict=True):
        assert list(got) == [*line, ATTR, f"{ATTR}-metadata"]  # input keys first, in order
        assert {k: got[k] for k in line} == line  # input fields kept exactly
        meta = got[f"{ATTR}-metadata"]
        assert meta["type"] == output_type
        assert meta["job-name"] == f"labeling-job/{name.lower()}"
        assert meta["human-annotated"] == "yes"
        assert CREATION_DATE.fullmatch(meta["creation-date"])

    workers = {p.worker_id() for p in people.values()}
    responses: dict[int, list[dict[str, Any]]] = {}
    answered_by: dict[int, set[str]] = {}
    for object_id in range(len(lines)):
        folder = local(service, f"{base}/annotations/worker-response/iteration-1/{object_id}")
        files = sorted(folder.iterdir())
        assert len(files) == 1 and KEY_TIME.fullmatch(files[0].name), files
        record = json.loads(files[0].read_text(encoding="utf-8"))
        assert list(record) == ["answers"]
        entries = record["answers"]
        assert len(entries) == per_object
        ids = [e["workerId"] for e in entries]
        assert len(set(ids)) == len(ids) and set(ids) <= workers, ids
        for e in entries:
            assert ANSWER_TIME.fullmatch(e["submissionTime"]) and ANSWER_TIME.fullmatch(e["acceptanceTime"])
            assert e["acceptanceTime"] <= e["submissionTime"]
            assert isinstance(e["timeSpentInSeconds"], float) and e["timeSpentInSeconds"] >= 0
            identity = e["workerMetadata"]["identityData"]
            assert identity["identityProviderType"] == "Cognito"
            assert e["workerId"] == f"private.{REGION}.{identity['sub']}"
        responses[object_id] = entries
        answered_by[object_id] = set(ids)
        if output_type == "groundtruth/custom":
            ref = out[object_id][f"{ATTR}-metadata"]["worker-response-ref"]
            assert local(service, ref) == files[0]
    if per_object == 1:  # the two objects went to the two workers
        assert answered_by[0] | answered_by[1] == workers

    consolidated = f"{base}/annotations/consolidated-annotation"
    requests = _batches(local(service, f"{consolidated}/consolidation-request/iteration-1"))
    replies = _batches(local(service, f"{consolidated}/consolidation-response/iteration-1"))
    assert sorted(requests) == sorted(replies) == [str(i) for i in range(len(lines))]
    for object_id, line in enumerate(lines):
        item = requests[str(object_id)]
        data_object = {"s3Uri": line["source-ref"]} if "source-ref" in line else {"content": line["source"]}
        assert item["dataObject"] == data_object
        assert [a["workerId"] for a in item["annotations"]] == [e["workerId"] for e in responses[object_id]]
        assert [json.loads(a["annotationData"]["content"]) for a in item["annotations"]] == \
               [e["answerContent"] for e in responses[object_id]]
        content = replies[str(object_id)]["consolidatedAnnotation"]["content"]
        assert content == {ATTR: out[object_id][ATTR], f"{ATTR}-metadata": out[object_id][f"{ATTR}-metadata"]}
    return out, responses


def _batches(folder: Path) -> dict[str, dict[str, Any]]:
    """datasetObjectId -> its item, over every consolidation file in the folder (each must parse)."""
    found: dict[str, dict[str, Any]] = {}
    files = sorted(folder.iterdir())
    assert files, folder
    for file in files:
        assert KEY_TIME.fullmatch(file.name), file.name
        batch = json.loads(file.read_text(encoding="utf-8"))
        assert isinstance(batch, list) and batch, file
        for item in batch:
            assert item["datasetObjectId"] not in found
            found[item["datasetObjectId"]] = item
    return found


def answer_of(entries: list[dict[str, Any]], person: Person) -> dict[str, Any]:
    """The answerContent the given worker submitted, from a worker-response file's answers."""
    mine = [e["answerContent"] for e in entries if e["workerId"] == person.worker_id()]
    assert len(mine) == 1
    return mine[0]


# ------------------------------------------------------------------------------------------------
# Pointer helpers (as in test_elements_js.py)


def drag_box(page: Any, box: tuple[float, float, float, float]) -> None:
    """Drag a box (left, top, width, height in the image's natural pixels) on the task image."""
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth > 0")
    page.locator(".crowd-bbox-stage").scroll_into_view_if_needed()
    r = page.eval_on_selector(".crowd-bbox-image", """img => { const r = img.getBoundingClientRect();
        return {x: r.left, y: r.top, w: r.width, h: r.height, nw: img.naturalWidth, nh: img.naturalHeight}; }""")
    sx, sy = r["w"] / r["nw"], r["h"] / r["nh"]
    left, top, width, height = box
    start = (r["x"] + left * sx, r["y"] + top * sy)
    end = (r["x"] + (left + width) * sx, r["y"] + (top + height) * sy)
    assert 0 <= start[1] and end[1] <= page.viewport_size["height"], "the image is not in view"
    drag(page, start, end)


def box_near(got: dict[str, Any], want: tuple[float, float, float, float], label: str | None = None) -> bool:
    if label is not None and got.get("label") != label:
        return False
    return all(abs(got[k] - v) <= BOX_TOLERANCE for k, v in zip(("left", "top", "width", "height"), want))


def says(page: Any, message: str) -> None:
    """Wait until the annotation element's status line (what a worker reads) says `message`."""
    sync_api.expect(page.locator("crowd-entity-annotation .crowd-status")).to_have_text(message)


def span(label: str, needle: str, text: str) -> dict[str, Any]:
    start = text.index(needle)  # Python counts code points, as Ground Truth's offsets do
    return {"label": label, "startOffset": start, "endOffset": start + len(needle)}


def choose(page: Any, name: str) -> None:
    """Click a category (or label) button by its visible name."""
    page.locator(".crowd-category, .crowd-label-choice").filter(has=page.get_by_text(name, exact=True)).click()


def pressed(page: Any, names: list[str]) -> None:
    """Wait until exactly these category buttons show as pressed (what the worker sees)."""
    sync_api.expect(page.locator(".crowd-category[aria-pressed=true] > span")).to_have_text(names)


def label_chosen(page: Any, name: str) -> None:
    """Wait until the box element shows `name` as the label for new boxes."""
    sync_api.expect(page.locator("crowd-bounding-box .crowd-label-choice[aria-pressed=true] > span:last-child")
                    ).to_have_text(name)


# ------------------------------------------------------------------------------------------------
# text_classification

SENTIMENTS = ["Positive", "Negative", "Neutral"]
TWEETS = [{"source": "Loving the new console \U0001f3ae, best gift ever", "tweet_id": 101},
          {"source": "Battery died after an hour\u2026 again", "tweet_id": 102}]


def test_text_classification(browser, service):
    request = put_job(service.root, "tweets-sentiment", TWEETS, task_type="text_classification",
                      labels=SENTIMENTS, workers=2)

    def a0(page, line):
        assert page.locator("classification-target").inner_text().strip() == line["source"]
        page.keyboard.press("1")
        pressed(page, ["Positive"])
        return "key"

    def b0(page, line):
        choose(page, "Positive")
        pressed(page, ["Positive"])
        return "click"

    def a1(page, line):
        assert page.locator("classification-target").inner_text().strip() == line["source"]
        choose(page, "Neutral")
        choose(page, "Negative")  # changed her mind
        pressed(page, ["Negative"])
        return "click"

    def b1(page, line):
        page.keyboard.press("3")
        pressed(page, ["Neutral"])
        return "key"

    people = label_job(browser, service, request, TWEETS, {("A", 0): a0, ("B", 0): b0, ("A", 1): a1, ("B", 1): b1})
    out, responses = check_outputs(service, request, TWEETS, people, "groundtruth/text-classification")
    a, b = people["A"], people["B"]
    assert answer_of(responses[0], a) == answer_of(responses[0], b) == {"crowd-classifier": {"label": "Positive"}}
    assert answer_of(responses[1], a) == {"crowd-classifier": {"label": "Negative"}}
    assert answer_of(responses[1], b) == {"crowd-classifier": {"label": "Neutral"}}
    # Both agree: class 0, likely (two new workers, three labels). A 1-1 tie: the earlier label in the
    # job's list, under 1/2 as the third label keeps a little.
    assert out[0][ATTR] == 0
    assert (out[0][f"{ATTR}-metadata"]["class-name"], out[0][f"{ATTR}-metadata"]["confidence"]) == ("Positive", 0.92)
    assert out[1][ATTR] == 1
    assert (out[1][f"{ATTR}-metadata"]["class-name"], out[1][f"{ATTR}-metadata"]["confidence"]) == ("Negative", 0.43)
    for line in out:
        assert set(line[f"{ATTR}-metadata"]) == {"class-name", "confidence", "type", "job-name",
                                                 "human-annotated", "creation-date"}
    # gtrun collect on this output: records with both workers, loadable by Hugging Face datasets
    dataset = collected(service, request, "text_classification", SENTIMENTS, "jsonl,hf_datasets")
    records = {r["tweet_id"]: r for f in (dataset / "jsonl").glob("*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    assert {k: (r["label"], r["workers"]) for k, r in records.items()} == {
        TWEETS[0]["tweet_id"]: ("Positive", 2), TWEETS[1]["tweet_id"]: ("Negative", 2)}
    import datasets
    loaded = datasets.load_dataset("parquet", data_dir=str(dataset / "hf"))
    split = next(iter(loaded.values()))
    assert split.features["label"].names == SENTIMENTS
    report = json.loads((dataset / "report.json").read_text())
    assert report["counts"]["answers"] == 4


# ------------------------------------------------------------------------------------------------
# text_multilabel


def test_text_multilabel(browser, service):
    request = put_job(service.root, "tweets-tags", TWEETS, task_type="text_multilabel",
                      labels=SENTIMENTS, workers=2)

    def a0(page, line):
        assert page.locator("classification-target").inner_text().strip() == line["source"]
        choose(page, "Positive")
        choose(page, "Neutral")
        pressed(page, ["Positive", "Neutral"])
        return "click"

    def b0(page, line):
        page.keyboard.press("3")
        pressed(page, ["Neutral"])
        return "key"

    def a1(page, line):
        choose(page, "Negative")
        pressed(page, ["Negative"])
        return "key"

    def b1(page, line):
        choose(page, "Negative")
        choose(page, "Positive")
        choose(page, "Positive")  # ticked, then unticked
        pressed(page, ["Negative"])
        return "click"

    people = label_job(browser, service, request, TWEETS, {("A", 0): a0, ("B", 0): b0, ("A", 1): a1, ("B", 1): b1})
    out, responses = check_outputs(service, request, TWEETS, people, "groundtruth/text-classification-multilabel")
    a, b = people["A"], people["B"]
    key = "crowd-classifier-multi-select"
    assert answer_of(responses[0], a) == {key: {"labels": ["Positive", "Neutral"]}}
    assert answer_of(responses[0], b) == {key: {"labels": ["Neutral"]}}
    assert answer_of(responses[1], a) == answer_of(responses[1], b) == {key: {"labels": ["Negative"]}}
    # Every class at least one worker chose; confidence = the share of workers who chose it.
    assert out[0][ATTR] == [2, 0]
    meta0 = out[0][f"{ATTR}-metadata"]
    assert meta0["class-map"] == {"2": "Neutral", "0": "Positive"}
    assert meta0["confidence-map"] == {"2": 1.0, "0": 0.5}
    assert out[1][ATTR] == [1]
    meta1 = out[1][f"{ATTR}-metadata"]
    assert meta1["class-map"] == {"1": "Negative"} and meta1["confidence-map"] == {"1": 1.0}
    assert "class-name" not in meta0 and "confidence" not in meta0


# ------------------------------------------------------------------------------------------------
# bounding_box, on two receipt images

BOX_LABELS = ["vendor", "total"]


def receipt_lines(count: int = 2) -> list[dict[str, Any]]:
    with (RECEIPTS / "receipts.jsonl").open(encoding="utf-8") as f:
        return [json.loads(x) for x in f.readlines()[:count]]


def gold(line: dict[str, Any], label: str) -> dict[str, Any]:
    return next(e for e in line["entities"] if e["label"] == label)


def iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    w = min(a["left"] + a["width"], b["left"] + b["width"]) - max(a["left"], b["left"])
    h = min(a["top"] + a["height"], b["top"] + b["height"]) - max(a["top"], b["top"])
    inter = max(w, 0) * max(h, 0)
    return inter / (a["width"] * a["height"] + b["width"] * b["height"] - inter)


def test_bounding_box(browser, service):
    receipts = receipt_lines()
    images = Path(service.root) / "b" / "images"
    images.mkdir(parents=True)
    lines = []
    for r in receipts:
        shutil.copy(RECEIPTS / "images" / r["image_file"], images / r["image_file"])
        lines.append({"source-ref": f"s3://b/images/{r['image_file']}", "receipt_id": r["receipt_id"]})
    request = put_job(service.root, "receipt-boxes", lines, task_type="bounding_box", labels=BOX_LABELS, workers=2)
    # Where each worker drags, in image pixels: around the receipts' vendor and total fields.
    v0, t0 = gold(receipts[0], "vendor")["box"], gold(receipts[0], "total")["box"]
    t1, v1 = gold(receipts[1], "total")["box"], gold(receipts[1], "vendor")["box"]
    drawn = {
        ("A", 0): [("vendor", (v0[0] - 2, v0[1] - 2, v0[2] + 4, v0[3] + 4)),
                   ("total", (t0[0] - 2, t0[1] - 2, t0[2] + 4, t0[3] + 4))],
        ("B", 0): [("vendor", (v0[0], v0[1], v0[2] + 2, v0[3] + 2)),
                   ("total", (t0[0] + 1, t0[1], t0[2] + 2, t0[3] + 2))],
        ("A", 1): [("total", (t1[0] - 3, t1[1] - 3, t1[2] + 6, t1[3] + 6))],
        ("B", 1): [("total", (t1[0], t1[1], t1[2], t1[3])), ("vendor", tuple(v1))],  # B also boxes the vendor
    }

    def answerer(who: str, object_id: int, how: str) -> Answerer:
        def answer(page, line):
            image = page.locator(".crowd-bbox-image")
            assert "/storage/b/images/" in image.get_attribute("src")  # a signed read of the s3 URI
            for n, (label, box) in enumerate(drawn[(who, object_id)]):
                if n % 2 == 0:
                    choose(page, label)  # click the label button…
                else:
                    page.keyboard.press(str(BOX_LABELS.index(label) + 1))  # …or press its number key
                label_chosen(page, label)
                drag_box(page, box)
                sync_api.expect(page.locator(".crowd-bbox:not(.crowd-draft)")).to_have_count(n + 1)
            assert page.locator(".crowd-bbox .crowd-bbox-tag").all_inner_texts() == \
                   [label for label, _ in drawn[(who, object_id)]]
            return how
        return answer

    plan = {("A", 0): answerer("A", 0, "click"), ("B", 0): answerer("B", 0, "key"),
            ("A", 1): answerer("A", 1, "key"), ("B", 1): answerer("B", 1, "click")}
    people = label_job(browser, service, request, lines, plan)
    out, responses = check_outputs(service, request, lines, people, "groundtruth/object-detection")

    for object_id, r in enumerate(receipts):
        got: dict[str, list[dict[str, Any]]] = {}
        for who in ("A", "B"):
            answer = answer_of(responses[object_id], people[who])
            assert list(answer) == ["boundingBox"]
            value = answer["boundingBox"]
            assert value["inputImageProperties"] == {"width": r["width"], "height": r["height"]}
            boxes = value["boundingBoxes"]
            assert len(boxes) == len(drawn[(who, object_id)])
            for box, (label, want) in zip(boxes, drawn[(who, object_id)], strict=True):
                assert box_near(box, want, label), (who, object_id, box, want)
                assert all(isinstance(box[k], int) for k in ("left", "top", "width", "height"))
            got[who] = boxes
        value = out[object_id][ATTR]
        meta = out[object_id][f"{ATTR}-metadata"]
        assert value["image_size"] == [{"width": r["width"], "height": r["height"], "depth": 3}]
        # Same-label boxes of the two workers become one: their mean, in image pixels.
        if object_id == 0:
            pairs = [(got["A"][0], got["B"][0]), (got["A"][1], got["B"][1])]
        else:
            pairs = [(got["A"][0], got["B"][0]), (got["B"][1], None)]  # B's vendor box: only B drew it
        assert len(value["annotations"]) == len(pairs) == len(meta["objects"])
        for ann, obj, (x, y) in zip(value["annotations"], meta["objects"], pairs, strict=True):
            assert ann["class_id"] == BOX_LABELS.index(x["label"])
            members = [x] if y is None else [x, y]
            for k in ("left", "top", "width", "height"):
                mean = sum(m[k] for m in members) / len(members)
                assert ann[k] == math.floor(mean + 0.5), (object_id, k, ann, members)
            wanted = [w for who in ("A", "B") for label, w in drawn[(who, object_id)] if label == x["label"]]
            mean_dragged = tuple(sum(w[i] for w in wanted) / len(wanted) for i in range(4))
            assert box_near(ann, mean_dragged), (ann, mean_dragged)
            assert obj["confidence"] == (0 if y is None else round(iou(x, y), 2))
        assert all(o["confidence"] > 0.5 for o in meta["objects"] if o["confidence"])
        assert meta["class-map"] == {"0": "vendor", "1": "total"}


# ------------------------------------------------------------------------------------------------
# named_entity

NER_LABELS = ["person", "organization", "location"]
NER_LINES = [{"source": "\U0001f3ae Ana Silva joined Acme Corp in Z\u00fcrich \U0001f600 today.", "doc": "a"},
             {"source": "Bob met Carol at the Louvre in Paris.", "doc": "b"}]


def test_named_entity(browser, service):
    request = put_job(service.root, "entities", NER_LINES, task_type="named_entity", labels=NER_LABELS, workers=2)

    def marks(page):
        words = page.locator("mark.crowd-entity .crowd-entity-words").all_inner_texts()
        labels = page.locator("mark.crowd-entity").evaluate_all("ms => ms.map(m => m.dataset.label)")
        return list(zip(words, labels, strict=True))

    def text_shown(page, line):
        assert page.locator(".crowd-entity-text").inner_text() == line["source"]

    # Like a person, each step waits for what the page says back (the status line under the text)
    # before the next one: input events sent faster than that can overtake each other.
    def a0(page, line):  # label first, then drag over the words
        text_shown(page, line)
        choose(page, "person")
        says(page, "Now select the words labeled person in the text.")
        mouse_select(page, "Ana Silva")
        says(page, "Labeled \u201cAna Silva\u201d as person.")
        choose(page, "organization")
        says(page, "Now select the words labeled organization in the text.")
        mouse_select(page, "Acme Corp")
        says(page, "Labeled \u201cAcme Corp\u201d as organization.")
        assert marks(page) == [("Ana Silva", "person"), ("Acme Corp", "organization")]
        return "key"

    def b0(page, line):  # drag over the words first, then the label
        mouse_select(page, "Ana Silva")
        says(page, "Choose the entity type for \u201cAna Silva\u201d.")
        choose(page, "person")
        says(page, "Labeled \u201cAna Silva\u201d as person.")
        choose(page, "location")
        says(page, "Now select the words labeled location in the text.")
        mouse_select(page, "Z\u00fcrich")
        says(page, "Labeled \u201cZ\u00fcrich\u201d as location.")
        assert marks(page) == [("Ana Silva", "person"), ("Z\u00fcrich", "location")]
        return "click"

    def a1(page, line):
        text_shown(page, line)
        page.keyboard.press("1")
        says(page, "Now select the words labeled person in the text.")
        mouse_select(page, "Bob")
        says(page, "Labeled \u201cBob\u201d as person.")
        page.keyboard.press("3")
        says(page, "Now select the words labeled location in the text.")
        mouse_select(page, "Paris")
        says(page, "Labeled \u201cParis\u201d as location.")
        assert marks(page) == [("Bob", "person"), ("Paris", "location")]
        return "click"

    def b1(page, line):
        mouse_select(page, "Bob")
        says(page, "Choose the entity type for \u201cBob\u201d.")
        page.keyboard.press("1")  # labels the selection, and stays the current label…
        says(page, "Labeled \u201cBob\u201d as person.")
        page.keyboard.press("3")  # …until another is chosen
        says(page, "Now select the words labeled location in the text.")
        mouse_select(page, "Paris.")  # takes the full stop too
        says(page, "Labeled \u201cParis.\u201d as location.")
        assert marks(page) == [("Bob", "person"), ("Paris.", "location")]
        return "key"

    people = label_job(browser, service, request, NER_LINES, {("A", 0): a0, ("B", 0): b0, ("A", 1): a1, ("B", 1): b1})
    out, responses = check_outputs(service, request, NER_LINES, people, "groundtruth/text-span")
    a, b = people["A"], people["B"]
    t0, t1 = NER_LINES[0]["source"], NER_LINES[1]["source"]
    key = "crowd-entity-annotation"
    # Offsets count code points: the emoji before "Ana" is one character, not two UTF-16 units.
    assert answer_of(responses[0], a) == {key: {"entities": [span("person", "Ana Silva", t0),
                                                             span("organization", "Acme Corp", t0)]}}
    assert span("person", "Ana Silva", t0)["startOffset"] == 2
    assert answer_of(responses[0], b) == {key: {"entities": [span("person", "Ana Silva", t0),
                                                             span("location", "Z\u00fcrich", t0)]}}
    assert answer_of(responses[1], a) == {key: {"entities": [span("person", "Bob", t1),
                                                             span("location", "Paris", t1)]}}
    assert answer_of(responses[1], b) == {key: {"entities": [span("person", "Bob", t1),
                                                             span("location", "Paris.", t1)]}}
    labels = [{"label": x} for x in NER_LABELS]
    assert out[0][ATTR] == {"annotations": {"labels": labels, "entities": [
        span("person", "Ana Silva", t0), span("organization", "Acme Corp", t0), span("location", "Z\u00fcrich", t0)]}}
    assert out[0][f"{ATTR}-metadata"]["entities"] == [{"confidence": 1.0}, {"confidence": 0}, {"confidence": 0}]
    # "Paris" and "Paris." overlap (Jaccard 5/6): one entity, the lower median end, i.e. "Paris".
    assert out[1][ATTR] == {"annotations": {"labels": labels, "entities": [
        span("person", "Bob", t1), span("location", "Paris", t1)]}}
    assert out[1][f"{ATTR}-metadata"]["entities"] == [{"confidence": 1.0}, {"confidence": 0.83}]


def test_named_entity_on_the_hosted_ui_shows_the_jobs_title_and_instructions(browser, service):
    """gtrun's NER jobs name AWS's hosted worker UI, so the service shows its bundled NER page: with
    the job's TaskTitle as the element's header and the label configuration's instructions."""
    instructions = {"shortInstruction": "<p>Mark <b>every</b> person.</p>",
                    "fullInstruction": "<p>Titles such as Dr. are not part of a name.</p>"}
    request = on_hosted_ui(service.root, put_job(service.root, "hosted", NER_LINES, task_type="named_entity",
                                                 labels=NER_LABELS), instructions)
    request["HumanTaskConfig"]["TaskTitle"] = "People, places & firms"
    sagemaker(service.url).create_labeling_job(**request)
    worker = Person(browser, service.url, "hosted")
    worker.open(via_index=True)
    page = worker.page
    sync_api.expect(page.locator("crowd-entity-annotation .crowd-header")).to_have_text("People, places & firms")
    sync_api.expect(page.locator(".crowd-short-instructions")).to_contain_text("Mark every person.")
    assert page.locator(".crowd-short-instructions b").inner_text() == "every"
    sync_api.expect(page.locator(".crowd-full-instructions")).to_contain_text("Titles such as Dr. are not part of a name.")
    assert "Highlight each named entity" not in page.locator("body").inner_text()
    worker.close()


# ------------------------------------------------------------------------------------------------
# custom

QUESTIONS = [{"source": "Which console is this about? New Xbox <b>Series</b> out \U0001f3ae", "tweet_id": 7},
             {"source": "Where was it filmed?\nIn Lisbon, mostly.", "tweet_id": 8}]


def test_custom(browser, service):
    request = put_job(service.root, "questions", QUESTIONS, task_type="custom", workers=2)
    typed = {("A", 0): "Xbox", ("B", 0): "The Xbox Series \U0001f3ae",
             ("A", 1): "Lisbon", ("B", 1): "Lisbon\nmostly"}

    def answerer(who: str, object_id: int, how: str) -> Answerer:
        def answer(page, line):
            shown = page.locator("crowd-form p[style*=pre-wrap]").inner_text()
            assert shown == line["source"]  # as text: the <b> is not markup
            area = page.get_by_label("Your answer")
            area.click()
            for n, part in enumerate(typed[(who, object_id)].split("\n")):
                if n:
                    page.keyboard.press("Enter")
                page.keyboard.type(part)
            assert area.input_value() == typed[(who, object_id)]
            return how  # Ctrl+Enter from inside the text area submits too
        return answer

    plan = {("A", 0): answerer("A", 0, "key"), ("B", 0): answerer("B", 0, "click"),
            ("A", 1): answerer("A", 1, "click"), ("B", 1): answerer("B", 1, "key")}
    people = label_job(browser, service, request, QUESTIONS, plan)
    out, responses = check_outputs(service, request, QUESTIONS, people, "groundtruth/custom")
    for object_id in range(2):
        order = ["A", "B"]  # A answered each object first
        assert [e["workerId"] for e in responses[object_id]] == [people[w].worker_id() for w in order]
        assert [e["answerContent"] for e in responses[object_id]] == \
               [{"answer": typed[(w, object_id)]} for w in order]
        every = out[object_id][ATTR]["annotationsFromAllWorkers"]
        assert [x["workerId"] for x in every] == [people[w].worker_id() for w in order]
        assert [json.loads(x["annotationData"]["content"]) for x in every] == \
               [{"answer": typed[(w, object_id)]} for w in order]
        assert list(out[object_id][ATTR]) == ["annotationsFromAllWorkers"]


# ------------------------------------------------------------------------------------------------
# receipts_ner: boxes over OCR tokens, each with an entity label (a custom task)

RECEIPT_LABELS = ["vendor", "date", "total", "tax", "item", "address"]


def test_receipts_ner(browser, service):
    receipts = receipt_lines()
    images = Path(service.root) / "b" / "receipts"
    images.mkdir(parents=True)
    lines = []
    for r in receipts:
        shutil.copy(RECEIPTS / "images" / r["image_file"], images / r["image_file"])
        lines.append({"source-ref": f"s3://b/receipts/{r['image_file']}", **r})
    template = (TEMPLATES / "receipts_ner.liquid").read_text(encoding="utf-8")
    request = put_job(service.root, "receipt-fields", lines, task_type="custom", workers=1, template=template)
    # Each worker boxes some fields of their receipt, 3 px around the words, and labels them.
    fields = {("A", 0): ["total", "vendor"], ("B", 1): ["date", "tax"]}

    def around(box: list[int]) -> tuple[int, int, int, int]:
        return (box[0] - 3, box[1] - 3, box[2] + 6, box[3] + 6)

    def answerer(who: str, object_id: int, how: str) -> Answerer:
        def answer(page, line):
            header = page.locator("crowd-bounding-box .crowd-header").first.inner_text()
            assert f"Receipt {line['receipt_id']}" in header
            page.wait_for_function("document.querySelectorAll('#token-boxes .token-box').length > 0")
            assert page.locator("#token-boxes .token-box").count() == len(line["tokens"])
            for n, label in enumerate(fields[(who, object_id)]):
                if n == 0:
                    page.keyboard.press(str(RECEIPT_LABELS.index(label) + 1))
                else:
                    choose(page, label)
                label_chosen(page, label)
                drag_box(page, around(gold(line, label)["box"]))
                sync_api.expect(page.locator(".crowd-bbox:not(.crowd-draft)")).to_have_count(n + 1)
            assert page.locator(".crowd-bbox .crowd-bbox-tag").all_inner_texts() == fields[(who, object_id)]
            return how
        return answer

    plan = {("A", 0): answerer("A", 0, "click"), ("B", 1): answerer("B", 1, "key")}
    people = label_job(browser, service, request, lines, plan)
    out, responses = check_outputs(service, request, lines, people, "groundtruth/custom")
    for object_id, who in ((0, "A"), (1, "B")):
        line = lines[object_id]
        [entry] = responses[object_id]
        assert entry["workerId"] == people[who].worker_id()
        every = out[object_id][ATTR]["annotationsFromAllWorkers"]
        assert [x["workerId"] for x in every] == [people[who].worker_id()]
        content = json.loads(every[0]["annotationData"]["content"])
        assert content == entry["answerContent"]
        assert set(content) == {"annotations", "boxTokens"}
        assert content["annotations"]["inputImageProperties"] == {"width": line["width"], "height": line["height"]}
        boxes = content["annotations"]["boundingBoxes"]
        box_tokens = json.loads(content["boxTokens"])  # a JSON string, from a hidden input
        assert len(boxes) == len(box_tokens) == len(fields[(who, object_id)])
        for box, entity, label in zip(boxes, box_tokens, fields[(who, object_id)], strict=True):
            want = gold(line, label)
            assert box_near(box, around(want["box"]), label), (box, want)
            assert {k: entity[k] for k in ("label", "left", "top", "width", "height")} == box
            assert entity["tokens"] == want["tokens"]  # the words under the box: the receipt's own
            assert entity["text"] == " ".join(line["tokens"][i]["text"] for i in want["tokens"])
    # gtrun collect on this output: the layout document-NER models train on (tokens, boxes, BIO tags)
    dataset = collected(service, request, "custom", RECEIPT_LABELS, "conll,jsonl")
    layout = [json.loads(x) for x in sorted((dataset / "conll").glob("*.layout.jsonl"))
              for x in x.read_text().splitlines()]
    assert len(layout) == 2
    for doc in layout:
        object_id = 0 if doc["tokens"] == [t["text"] for t in lines[0]["tokens"]] else 1
        who = "A" if object_id == 0 else "B"
        want = {}
        for label in fields[(who, object_id)]:
            for n, i in enumerate(gold(lines[object_id], label)["tokens"]):
                want[i] = ("B-" if n == 0 else "I-") + label
        assert doc["ner_tags"] == [want.get(i, "O") for i in range(len(doc["tokens"]))]
        assert all(0 <= v <= 1000 for box in doc["bboxes"] for v in box)


def test_receipts_ner_on_a_scan_finer_than_its_ocr(browser, service):
    """The receipts' template takes the tokens' boxes to be in the manifest's width x height, and the
    worker's boxes in the image's own pixels: a scan at twice the OCR's resolution is labeled (and
    its tokens found under the boxes) as well as one at the same. The layout file's boxes are the
    tokens' in 0-1000 of the page, whatever the scan's size."""
    from PIL import Image

    receipts = receipt_lines()
    images = Path(service.root) / "b" / "scans"
    images.mkdir(parents=True)
    lines = []
    for r in receipts:
        with Image.open(RECEIPTS / "images" / r["image_file"]) as im:
            im.resize((2 * r["width"], 2 * r["height"])).save(images / r["image_file"])
        lines.append({"source-ref": f"s3://b/scans/{r['image_file']}", **r})  # width, height, tokens: the OCR's
    template = (TEMPLATES / "receipts_ner.liquid").read_text(encoding="utf-8")
    request = put_job(service.root, "receipt-scans", lines, task_type="custom", workers=1, template=template)
    fields = {0: ["vendor", "total"], 1: ["address", "date"]}

    def answerer(object_id: int) -> Answerer:
        def answer(page, line):
            page.wait_for_function("document.querySelectorAll('#token-boxes .token-box').length > 0")
            for label in fields[object_id]:
                choose(page, label)
                x, y, w, h = gold(line, label)["box"]
                drag_box(page, (2 * x - 6, 2 * y - 6, 2 * w + 12, 2 * h + 12))  # in the scan's pixels
            return "click"
        return answer

    people = label_job(browser, service, request, lines, {("A", 0): answerer(0), ("B", 1): answerer(1)})
    check_outputs(service, request, lines, people, "groundtruth/custom")
    dataset = collected(service, request, "custom", RECEIPT_LABELS, "conll,coco")
    layout = {doc["tokens"][0]: doc for x in sorted((dataset / "conll").glob("*.layout.jsonl"))
              for doc in map(json.loads, x.read_text().splitlines())}
    for object_id, line in enumerate(lines):
        doc = layout[line["tokens"][0]["text"]]
        want = {}
        for label in fields[object_id]:
            for n, i in enumerate(gold(line, label)["tokens"]):
                want[i] = ("B-" if n == 0 else "I-") + label
        assert doc["ner_tags"] == [want.get(i, "O") for i in range(len(line["tokens"]))]
        x, y, w, h = line["tokens"][0]["box"]
        assert doc["bboxes"][0] == [int(1000 * x / line["width"]), int(1000 * y / line["height"]),
                                    int(1000 * (x + w) / line["width"]), int(1000 * (y + h) / line["height"])]
    coco = json.loads(next((dataset / "coco").glob("train.json")).read_text())
    assert {(i["width"], i["height"]) for i in coco["images"]} <= {(2 * r["width"], 2 * r["height"]) for r in lines}


IMAGE_CORNER = "i => { const r = i.getBoundingClientRect(); return [r.left, r.top]; }"


def test_a_receipt_larger_than_the_screen_is_zoomed_to_label_it(browser, service):
    """A receipt scanned at 4x (1440 x ~1800 pixels) is shown whole, shrunk to the window; the worker
    zooms in (the + key, the Zoom in button) to read and box its small print at full size, scrolls to
    it, zooms back to the whole receipt (0) and boxes another field. The boxes are in the scan's
    pixels whatever the zoom, and the OCR's token outlines follow the image."""
    from PIL import Image

    [r] = receipt_lines(1)
    images = Path(service.root) / "b" / "big"
    images.mkdir(parents=True)
    with Image.open(RECEIPTS / "images" / r["image_file"]) as im:
        im.resize((4 * r["width"], 4 * r["height"])).save(images / r["image_file"])
    line = {**r, "source-ref": f"s3://b/big/{r['image_file']}", "width": 4 * r["width"], "height": 4 * r["height"],
            "tokens": [{"text": t["text"], "box": [4 * v for v in t["box"]]} for t in r["tokens"]]}
    template = (TEMPLATES / "receipts_ner.liquid").read_text(encoding="utf-8")
    request = put_job(service.root, "big-receipt", [line], task_type="custom", workers=1, template=template)
    sagemaker(service.url).create_labeling_job(**request)
    person = Person(browser, service.url, "big-receipt")
    try:
        person.open()
        page = person.page
        page.wait_for_function("document.querySelectorAll('#token-boxes .token-box').length > 0")

        def scale() -> float:
            b = page.eval_on_selector(".crowd-bbox-image", "i => i.getBoundingClientRect().width / i.naturalWidth")
            return float(b)

        def corner() -> list[float]:  # the image's top left corner in the window
            return page.eval_on_selector(".crowd-bbox-image", IMAGE_CORNER)  # type: ignore[no-any-return]

        fit = scale()
        assert fit < 0.5  # the whole receipt in the window: its print too small to box
        page.locator(".crowd-bbox-stage").click(position={"x": 5, "y": 5})  # the image has the keys
        for _ in range(3):
            page.keyboard.press("+")
        page.get_by_role("button", name="Zoom in").click()
        assert scale() >= 1
        frame = page.locator(".crowd-bbox-frame")
        assert frame.evaluate("f => f.scrollHeight > f.clientHeight")  # scrolled within the frame
        total = gold(line | {"entities": [{**e, "box": [4 * v for v in e["box"]]} for e in r["entities"]]}, "total")
        x, y, w, h = total["box"]
        frame.hover()
        for _ in range(40):  # scroll the frame with the wheel until the total is in view
            img = corner()
            edge = frame.bounding_box()
            right = img[0] + (x + w + 12) * scale() - min(edge["x"] + edge["width"], page.viewport_size["width"])
            down = img[1] + (y + h + 12) * scale() - min(edge["y"] + edge["height"], page.viewport_size["height"])
            if right < 0 and down < 0:
                break
            page.mouse.wheel(100 if right >= 0 else 0, 100 if down >= 0 else 0)
            page.wait_for_timeout(50)
        choose(page, "total")
        img = corner()
        k = scale()
        drag(page, (img[0] + (x - 12) * k, img[1] + (y - 12) * k), (img[0] + (x + w + 12) * k, img[1] + (y + h + 12) * k))
        token = line["tokens"][total["tokens"][0]]["box"]
        outline = page.locator("#token-boxes .token-box").nth(total["tokens"][0]).bounding_box()
        img = corner()
        assert abs(outline["x"] - (img[0] + token[0] * k)) < 2 and abs(outline["width"] - token[2] * k) < 2
        page.keyboard.press("0")  # the whole receipt again
        assert abs(scale() - fit) < 1e-3
        choose(page, "vendor")
        vx, vy, vw, vh = [4 * v for v in gold(r, "vendor")["box"]]
        drag_box(page, (vx - 12, vy - 12, vw + 24, vh + 24))
        person.submit("key")
        assert person.errors == []
    finally:
        person.close()
    [entry] = json.loads(next(local(service, request["OutputConfig"]["S3OutputPath"]).rglob(
        "worker-response/**/*.json")).read_text())["answers"]
    content = entry["answerContent"]
    boxes = content["annotations"]["boundingBoxes"]
    assert [b["label"] for b in boxes] == ["total", "vendor"]
    assert all(abs(a - b) <= 4 for a, b in zip([boxes[0][k] for k in ("left", "top", "width", "height")],
                                               (x - 12, y - 12, w + 24, h + 24)))
    assert [e["tokens"] for e in json.loads(content["boxTokens"])] == [total["tokens"], gold(r, "vendor")["tokens"]]


# ------------------------------------------------------------------------------------------------
# Task data with markup and script: shown as text, never run

XSS_TWEETS = [{"source": "<img src=x onerror=alert(1)> free \U0001f4b8 now", "tweet_id": 1},
              {"source": "</p><script>alert(2)</script>\"quoted\" & 'single' <svg onload=alert(3)>", "tweet_id": 2}]
XSS_LABELS = ["Safe", "<b>Spam</b>", "<img src=y onerror=alert(4)>"]


def test_markup_in_the_data_is_text(browser, service):
    request = put_job(service.root, "xss-tweets", XSS_TWEETS, task_type="text_classification",
                      labels=XSS_LABELS, workers=1)
    sm = sagemaker(service.url)
    sm.create_labeling_job(**request)
    person = Person(browser, service.url, "xss-tweets")
    fired: list[str] = []
    person.page.on("dialog", lambda d: fired.append(d.message))
    try:
        person.open()
        for object_id, line in enumerate(XSS_TWEETS):
            page = person.page
            assert person.object_id() == object_id
            page.wait_for_timeout(300)  # time for an injected onerror/onload to fire
            target = page.locator("classification-target p")
            assert target.inner_text() == line["source"]
            assert page.get_by_text(line["source"], exact=True).is_visible()
            assert page.locator("main img, main svg, crowd-form script, classification-target *:not(p)").count() == 0
            assert page.locator(".crowd-category > span").all_inner_texts() == XSS_LABELS
            if object_id == 0:
                choose(page, "<b>Spam</b>")
                pressed(page, ["<b>Spam</b>"])
                person.submit("key")
                assert person.progress() == progress(1, 1)
            else:
                choose(page, "<img src=y onerror=alert(4)>")
                pressed(page, ["<img src=y onerror=alert(4)>"])
                person.submit("click")
        assert person.done() and person.progress() == progress(2, 2)
        assert fired == [] and person.dialogs == [] and person.errors == []
    finally:
        person.close()
    out, responses = check_outputs(service, request, XSS_TWEETS, {"A": person}, "groundtruth/text-classification")
    assert [r[0]["answerContent"] for r in responses.values()] == [
        {"crowd-classifier": {"label": "<b>Spam</b>"}}, {"crowd-classifier": {"label": XSS_LABELS[2]}}]
    assert [(x[ATTR], x[f"{ATTR}-metadata"]["class-name"], x[f"{ATTR}-metadata"]["confidence"]) for x in out] == [
        (1, "<b>Spam</b>", 0), (2, XSS_LABELS[2], 0)]  # one worker: confidence 0
    assert [x["source"] for x in out] == [t["source"] for t in XSS_TWEETS]


def test_every_bundled_template_is_covered():
    tested = {"text_classification", "text_multilabel", "bounding_box", "named_entity", "custom", "receipts_ner"}
    assert {p.stem for p in TEMPLATES.glob("*.liquid")} == tested
    assert {p.stem for p in (HOME / "conf" / "template").glob("*.yaml")} == tested



# ------------------------------------------------------------------------------------------------
# Release task, and a page left without an answer: the task goes back to the queue at once


def release_calls(service: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Every release the service takes from now on: (job, token, worker, view) and what it did.
    A spy: the real release runs."""
    jobs = service.app.state.jobs
    real, calls = jobs.release_task, []

    def spy(*args: Any) -> str:
        try:
            result: str = real(*args)
        except Exception as exc:
            calls.append((args, type(exc).__name__))
            raise
        calls.append((args, result))
        return result

    jobs.release_task = spy
    return calls


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def started(service: Any, name: str, count: int) -> None:
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, name, TWEETS[:count], labels=SENTIMENTS))
    wait_for(lambda: sm.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"] == "InProgress")


def test_release_task_moves_the_worker_on_and_frees_the_task(browser, service):
    from tests.service_helpers import Worker

    started(service, "release-it", 2)
    calls = release_calls(service)
    a, b = Person(browser, service.url, "release-it"), Worker(service.url)
    try:
        a.open()
        assert a.object_id() == 0
        actions = a.page.locator("crowd-form .crowd-form-actions")
        assert actions.locator("button").all_inner_texts() == ["Submit", "Release task"]  # next to Submit
        assert a.page.locator("header.gtrun-bar form.gtrun-release button").inner_text() == "Release task"
        with a.page.expect_navigation():
            actions.get_by_role("button", name="Release task").click()
        a._settle()
        assert a.object_id() == 1  # the next task, not the one given back
        assert a.page.locator(".gtrun-released").count() == 0
        taken = b.task("release-it")
        assert taken is not None and taken["objectId"] == "0"  # another worker has it at once
        with a.page.expect_navigation():  # the bar's button: nothing else is free, so the same task
            a.page.locator("header.gtrun-bar").get_by_role("button", name="Release task").click()
        a._settle()
        assert a.object_id() == 1
        assert a.page.locator("header.gtrun-bar .gtrun-released").inner_text() == (
            "No other task is free for you now: this is the one you released.")
        choose(a.page, "Neutral")
        a.submit("click")
        assert a.done() and a.errors == []
        time.sleep(0.3)  # a leaving page's beacon would have come by now
        assert [(args[3], result) for args, result in calls] == [(None, "released"), (None, "released")]
    finally:
        a.close()


def test_release_task_works_without_javascript(browser, service):
    started(service, "no-script", 2)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{service.url}/jobs/no-script/")
        assert page.locator("input[name=object]").get_attribute("value") == "0"
        with page.expect_navigation():
            page.get_by_role("button", name="Release task").click()
        assert page.url == f"{service.url}/jobs/no-script/?released=0"
        assert page.locator("input[name=object]").get_attribute("value") == "1"
    finally:
        context.close()


def test_leaving_or_closing_the_page_releases_its_task(browser, service):
    from tests.service_helpers import Worker

    started(service, "walk-away", 1)
    calls = release_calls(service)
    a, b = Person(browser, service.url, "walk-away"), Worker(service.url)
    try:
        a.open()
        token = a.task()["token"]  # type: ignore[index]
        assert b.task("walk-away") is None  # A holds the only object
        a.page.goto(f"{service.url}/")  # A goes elsewhere without answering
        taken = wait_for(lambda: b.task("walk-away"))
        assert taken["objectId"] == "0"
        assert calls[-1][0][2] == a.worker_id() and calls[-1][1] == "released"
        assert b.http.post(taken["releaseUrl"], json={"token": taken["token"]}).json()["status"] == "released"
        a.open()
        assert a.object_id() == 0 and a.task()["token"] == token  # type: ignore[index]
        a.page.close(run_before_unload=True)  # the tab is closed
        again = wait_for(lambda: b.task("walk-away"))
        assert again["objectId"] == "0"
        assert [result for _, result in calls] == ["released", "released", "released"]
    finally:
        a.close()


def test_a_reload_keeps_the_task(browser, service):
    from tests.service_helpers import Worker

    started(service, "reload-me", 1)
    calls = release_calls(service)
    a, b = Person(browser, service.url, "reload-me"), Worker(service.url)
    try:
        a.open()
        token = a.task()["token"]  # type: ignore[index]
        for n in (1, 2):
            a.page.reload()
            a._settle()
            assert a.task()["token"] == token  # type: ignore[index]
            # The old page's beacon comes after the new page was given the task: it is ignored.
            wait_for(lambda n=n: len(calls) == n)
            assert calls[-1][1] == "shown again"
        assert b.task("reload-me") is None
        choose(a.page, "Positive")
        a.submit("click")
        assert a.done() and a.errors == []
    finally:
        a.close()


# ------------------------------------------------------------------------------------------------
# Pages that would go stale: "No more tasks for you" while others hold tasks, a dead task's submit


def test_the_no_more_tasks_page_shows_a_task_once_it_comes_back(browser, service, monkeypatch):
    from runner.service import app

    started(service, "comes-back", 1)
    a, b = Person(browser, service.url, "comes-back"), Person(browser, service.url, "comes-back")
    try:
        a.open()
        monkeypatch.setattr(app, "HELD_POLL_S", 3600)  # no reload while the notice is read
        b.open()
        assert b.done() and b.task() is None
        assert b.page.locator(".gtrun-held").inner_text().startswith(
            "1 task is being worked on by another worker; it comes back at")
        assert b.page.locator("meta[http-equiv=refresh]").get_attribute("content") == "3600; url=/jobs/comes-back/"
        monkeypatch.setattr(app, "HELD_POLL_S", 1)  # 15 s in use
        with b.page.expect_navigation():
            b.page.get_by_role("link", name="Check again").click()
        b.page.wait_for_selector("section.gtrun-done .gtrun-held")  # still held: the same notice
        a.page.close(run_before_unload=True)  # A closes the page: the task is back at once
        b.page.wait_for_selector("crowd-form[data-crowd-ready]", timeout=5_000)  # no click: it looked again
        b._settle()
        assert b.object_id() == 0
        choose(b.page, "Positive")
        b.submit("click")
        assert b.page.locator("section.gtrun-done h1").inner_text() == "This job is complete"
        assert b.page.locator("meta[http-equiv=refresh]").count() == 0
        assert b.page.get_by_role("link", name="Check again").count() == 0
        b.page.evaluate("window.__stayed = true")
        b.page.wait_for_timeout(1_500)  # longer than the poll: the ended job's page is not reloaded
        assert b.page.evaluate("window.__stayed === true")
        assert b.errors == [] and b.dialogs == []
    finally:
        a.close()
        b.close()


def test_a_submit_after_the_task_was_taken_moves_the_worker_on(browser, service):
    """Two tabs on one task: released in one, taken and answered by B, then submitted in the other."""
    from tests.service_helpers import Worker

    started(service, "two-tabs", 2)
    calls = release_calls(service)
    a, b = Person(browser, service.url, "two-tabs"), Worker(service.url)
    try:
        a.open()
        tab2 = a.context.new_page()
        tab2.goto(f"{service.url}/jobs/two-tabs/")
        tab2.wait_for_selector("crowd-form[data-crowd-ready]")
        assert tab2.evaluate("window.gtrunTask.token") == a.task()["token"]  # type: ignore[index]
        with tab2.expect_navigation():
            tab2.locator("crowd-form .crowd-form-actions").get_by_role("button", name="Release task").click()
        tab2.wait_for_selector("crowd-form[data-crowd-ready]")
        assert tab2.evaluate("window.gtrunTask.objectId") == "1"
        taken = b.task("two-tabs")
        assert taken is not None and taken["objectId"] == "0"
        assert b.answer("two-tabs", taken, {"crowd-classifier": {"label": "Negative"}}).status_code == 200
        assert a.progress() == progress(0, 0)  # tab 1 does not know yet
        choose(a.page, "Positive")
        a.page.locator("crowd-button[form-action=submit] button").click()
        alert = a.page.locator("crowd-form crowd-alert[type=warning]")
        sync_api.expect(alert).to_contain_text(
            "Your answer was not recorded: This task was released and another worker has taken it.")
        assert alert.locator(".crowd-alert-dismiss").count() == 0  # it stays: the page has nothing else to do
        assert a.progress() == progress(1, 0)  # the bar is brought up to date
        assert a.page.locator("header.gtrun-bar progress").evaluate("p => [p.value, p.max]") == [1, 2]
        assert a.page.locator("crowd-button[form-action=submit] button").is_disabled()
        assert a.page.locator("crowd-form .crowd-form-actions").get_by_role("button", name="Release task").is_disabled()
        assert a.page.locator("header.gtrun-bar").get_by_role("button", name="Release task").is_disabled()
        next_task = alert.get_by_role("link", name="Next task")
        sync_api.expect(next_task).to_be_focused()
        a.page.keyboard.press("Control+Enter")  # submitting again does nothing now
        a.page.wait_for_timeout(200)
        assert a.page.url == f"{service.url}/jobs/two-tabs/" and alert.count() == 1
        with a.page.expect_navigation():
            next_task.click()
        a._settle()
        assert a.object_id() == 1  # the task tab 2 shows: A still holds it
        assert a.progress() == progress(1, 0)
        choose(a.page, "Neutral")
        a.submit("click")
        assert a.page.locator("section.gtrun-done h1").inner_text() == "This job is complete"
        assert [result for _, result in calls] == ["released"]  # the dead page gave nothing back on leaving
        assert a.errors == [] and a.dialogs == []
    finally:
        a.close()


def test_a_submit_that_fails_otherwise_keeps_the_page_and_the_answer(browser, service):
    started(service, "keep-it", 1)
    a = Person(browser, service.url, "keep-it")
    try:
        a.open()
        token = a.task()["token"]  # type: ignore[index]
        choose(a.page, "Negative")
        submit = a.page.locator("crowd-button[form-action=submit] button")
        alert = a.page.locator("crowd-form crowd-alert[type=error]")
        a.page.route("**/answers", lambda route: route.abort())  # the network fails
        submit.click()
        sync_api.expect(alert).to_contain_text("Submission failed: ")
        a.page.unroute("**/answers")
        refused = {"__type": "ValidationException", "message": "the answer must be a JSON object keyed by element name"}
        a.page.route("**/answers", lambda route: route.fulfill(status=400, json=refused))
        submit.click()
        sync_api.expect(alert.locator(".crowd-alert-content")).to_have_text(
            "Submission failed: the answer must be a JSON object keyed by element name")
        a.page.unroute("**/answers")
        assert alert.locator(".crowd-alert-dismiss").count() == 1
        assert a.page.get_by_role("link", name="Next task").count() == 0
        assert submit.is_enabled() and a.task()["token"] == token  # type: ignore[index]
        pressed(a.page, ["Negative"])  # the answer is still chosen
        a.submit("click")  # and goes in once the service takes it
        assert a.page.locator("section.gtrun-done h1").inner_text() == "This job is complete"
    finally:
        a.close()
