"""The quality report: agreement metrics on textbook data, figures per task type on hand-built
objects, report.json / report.html / dataset card."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner.collect.agreement import (
    FleissKappa,
    box_iou,
    fleiss_kappa,
    fleiss_kappa_table,
    krippendorff_alpha_nominal,
    matched_iou,
    mean_pairwise_iou,
    mean_pairwise_span_f1,
    per_label_agreement,
    set_jaccard,
    span_f1,
)
from runner.collect.records import Box, LabeledObject, Span, Status, WorkerAnswer
from runner.collect.report import (
    DISPUTED_MAX,
    add_dataset,
    build_report,
    card_markdown,
    headline,
    label_distribution,
    report_from_counts,
    report_html,
    write_card,
    write_report,
)
from runner.schema import TaskType
from runner.service.consolidate import box_iou as _iou  # the IoU consolidation matches boxes with

ROOT = Path(__file__).resolve().parent.parent
approx = pytest.approx

# --- textbook data -------------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers,
# twelve units, values 1-5, missing data (None). Published: alpha_nominal = 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
# Wikipedia's "Krippendorff's alpha" computational example (three coders, fifteen units),
# nominal alpha = 0.691 (fast-krippendorff's tests pin 0.691358).
WIKIPEDIA_ALPHA = [
    [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
    [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
    [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
]
# Wikipedia's "Fleiss' kappa" worked example: 10 subjects x 5 categories, 14 raters each;
# P-bar = 0.378, P_e = 0.213, kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def units(coders: list[list[int | None]]) -> list[list[int]]:
    """Observer-by-unit rows -> one list of values per unit, missing values dropped."""
    return [[v for v in column if v is not None] for column in zip(*coders, strict=True)]


def brute_force_alpha(values_per_unit: list[list[object]]) -> float:
    """Nominal alpha straight from Krippendorff's coincidence matrix (the reference to compare)."""
    o: dict[tuple[object, object], float] = {}
    for unit in values_per_unit:
        m = len(unit)
        if m < 2:
            continue
        for i, c in enumerate(unit):
            for j, k in enumerate(unit):
                if i != j:
                    o[c, k] = o.get((c, k), 0.0) + 1 / (m - 1)
    n_c: dict[object, float] = {}
    for (c, _), v in o.items():
        n_c[c] = n_c.get(c, 0.0) + v
    n = sum(n_c.values())
    d_o = sum(v for (c, k), v in o.items() if c != k)
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n - 1)
    return 1 - d_o / d_e


def test_alpha_matches_krippendorff_2011_nominal_example():
    assert round(krippendorff_alpha_nominal(units(KRIPPENDORFF_2011)), 3) == 0.743
    assert krippendorff_alpha_nominal(units(KRIPPENDORFF_2011)) == approx(
        brute_force_alpha(units(KRIPPENDORFF_2011)))


def test_alpha_matches_wikipedia_example():
    assert round(krippendorff_alpha_nominal(units(WIKIPEDIA_ALPHA)), 6) == 0.691358


def test_alpha_on_strings_and_random_data_matches_the_coincidence_matrix():
    # fast-krippendorff's string example: 0.722222.
    data = [["pos", "neg", "neu", None], ["pos", "neg", "neu", "pos"], ["pos", "neg", "pos", "pos"]]
    assert round(krippendorff_alpha_nominal(units(data)), 6) == 0.722222
    rnd = random.Random(7)
    for _ in range(20):
        sample = [[rnd.choice("abcd") for _ in range(rnd.randint(0, 5))] for _ in range(30)]
        if krippendorff_alpha_nominal(sample) is not None:
            assert krippendorff_alpha_nominal(sample) == approx(brute_force_alpha(sample))


def test_alpha_is_none_when_undefined():
    assert krippendorff_alpha_nominal([]) is None
    assert krippendorff_alpha_nominal([["a"], ["b"]]) is None  # nothing pairable
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a", "a"]]) is None  # no variation
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"]]) == 1.0


def test_fleiss_kappa_matches_wikipedia_worked_example():
    assert round(fleiss_kappa_table(FLEISS_WIKIPEDIA), 3) == 0.210
    raw = [[c for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_WIKIPEDIA]
    assert fleiss_kappa(raw, range(5)) == approx(0.20993070442195522)


def test_fleiss_kappa_uses_the_most_common_rater_count():
    mixed = [["a", "a", "b"], ["b", "b", "b"], ["a", "b", "c"], ["c", "c"], ["x"]]
    acc = FleissKappa()
    for unit in mixed:
        acc.add(unit)
    assert (acc.raters, acc.units, acc.skipped) == (3, 3, 1)  # ["x"] is not pairable at all
    assert fleiss_kappa(mixed, ["a", "b", "c"]) == approx(1 / 46)
    assert fleiss_kappa([["a", "a"], ["b", "b", "b"]]) is None  # tie -> 3 raters, one category
    assert fleiss_kappa([["a"]]) is None


def test_box_iou_matches_consolidation_and_matching_is_greedy():
    rnd = random.Random(3)
    for _ in range(200):
        a, b = ([rnd.uniform(0, 50) for _ in range(4)] for _ in range(2))
        assert box_iou(a, b) == approx(_iou(a, b))
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    # C overlaps A (IoU 9/11) better than B (IoU 3/17): A-C matched, B unmatched counts 0.
    a = [("car", 0, 0, 10, 10), ("car", 8, 0, 10, 10)]
    c = [("car", 1, 0, 10, 10)]
    assert matched_iou(a, c) == approx((9 / 11) / 2)
    assert matched_iou([("car", 0, 0, 10, 10)], [("bus", 0, 0, 10, 10)]) == 0.0  # labels differ
    assert matched_iou([], []) == 1.0
    assert mean_pairwise_iou([[("car", 0, 0, 10, 10)]]) is None


def test_span_f1_is_exact_match():
    assert span_f1([("PER", 0, 3)], [("PER", 0, 3)]) == 1.0
    assert span_f1([("PER", 0, 3)], [("PER", 0, 4)]) == 0.0
    assert span_f1([("PER", 0, 3), ("LOC", 5, 9)], [("PER", 0, 3)]) == approx(2 / 3)
    assert span_f1([], []) == 1.0
    assert mean_pairwise_span_f1([[("A", 0, 1)], [("A", 0, 1)], []]) == approx(1 / 3)
    assert set_jaccard({"a", "b"}, {"a"}) == 0.5


def test_per_label_agreement():
    got = per_label_agreement([["pos", "pos", "neg"], ["neg", "neg", "neg"], ["pos", "neu", "neg"],
                               ["neu", "neu"]], ["pos", "neg", "neu", "unused"])
    assert got == {"pos": approx(1 / 5), "neg": approx(3 / 7), "neu": approx(1 / 3), "unused": None}
    multi = per_label_agreement([[{"a", "b"}, {"a"}, set()], [{"c"}, {"c"}]], ["a", "b", "c"])
    assert multi == {"a": approx(1 / 3), "b": 0.0, "c": 1.0}


def test_agreement_module_imports_only_the_stdlib():
    code = ("import sys, runner.collect.agreement; "
            "print(','.join(m for m in ('omegaconf', 'runner.schema', 'hydra', 'boto3') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.strip() == ""


# --- build_report on hand-built objects ---------------------------------------------------------

EVIL = "<script>alert('x')</script> & \"quoted\""


def obj(line: int, task: TaskType, status: Status = Status.labeled, *, answers=(), text=None,
        ref=None, **fields) -> LabeledObject:
    inputs = {"source": text} if text is not None else {"source-ref": ref or f"s3://b/{line}.png"}
    return LabeledObject(line_no=line, object_id=f"obj-{line}", inputs=inputs, attribute="attr",
                         task_type=task, status=status, answers=tuple(answers), **fields)


def cls(worker: str, label: str, seconds: float | None = None) -> WorkerAnswer:
    return WorkerAnswer(worker, {"crowd-classifier": {"label": label}}, seconds)


def classification_objects() -> list[LabeledObject]:
    t = TaskType.text_classification
    return [
        obj(1, t, text=EVIL, label="pos",
            answers=[cls("a", "pos", 10), cls("b", "pos", 20), cls("c", "neg", 30)]),
        obj(2, t, text="two", label="neg",
            answers=[cls("a", "neg", 12), cls("b", "neg", 14), cls("c", "neg", 16)]),
        obj(3, t, text="three", label="pos",
            answers=[cls("a", "pos", 5), cls("b", "neu", 5), cls("c", "neg", 5)]),
        obj(4, t, Status.failed, text="four", failure_reason="ClientError: Annotation tasks expired."),
        obj(5, t, Status.failed, text="five"),
        obj(6, t, Status.unlabeled, text="six"),
        obj(7, t, text="seven", label="neu", answers=[cls("a", "neu"), cls("b", "neu", 9)]),
        obj(8, t, text="eight", label="pos",
            answers=[WorkerAnswer("a", {"something-else": {"x": 1}}, 4), cls("b", "pos", 7)]),
    ]


def test_classification_report():
    report = build_report(iter(classification_objects()), task_type="text_classification",
                          labels=["pos", "neg", "neu"], dataset="tweets")
    assert report["task_type"] == "text_classification" and report["dataset"] == "tweets"
    assert report["counts"] == {
        "objects": 8, "labeled": 5, "failed": 2, "unlabeled": 1,
        "failed_reasons": {"ClientError: Annotation tasks expired.": 1, "unknown": 1},
        "answers": 13, "unreadable_answers": 1,
        "answers_per_object": {"0": 3, "2": 2, "3": 3},
    }
    assert report["label_distribution"] == {"of": "labeled", "unit": "objects", "objects": 5,
                                            "counts": {"pos": 3, "neg": 1, "neu": 1}}
    agreement = report["agreement"]
    assert agreement["measure"] == "pairwise agreement"
    assert agreement["objects"] == 4  # objects 1, 2, 3, 7; object 8 has one readable answer
    assert agreement["mean"] == approx((1 / 3 + 1 + 0 + 1) / 4, abs=1e-4)
    # n = 11 pairable values (pos 3, neg 5, neu 3), observed disagreement 2 + 3 = 5:
    # alpha = 1 - 10 * 5 / (121 - 43).
    assert agreement["krippendorff_alpha"] == approx(1 - 50 / 78, abs=1e-4)
    assert agreement["krippendorff_alpha"] == approx(
        brute_force_alpha([["pos", "pos", "neg"], ["neg"] * 3, ["pos", "neu", "neg"], ["neu"] * 2]),
        abs=1e-4)
    # Three-rater objects only: P-bar = 4/9, P_e = 35/81 -> kappa = 1/46; object 7 skipped.
    assert agreement["fleiss_kappa"] == {"value": approx(1 / 46, abs=1e-4), "raters": 3,
                                         "objects": 3, "of": 4, "skipped": 1}
    # over which objects, of those alpha takes, the page and the card say
    rows = {name: note for name, _, note in headline(report)}
    assert rows["Krippendorff's α"] == "over 4 objects"
    assert rows["Fleiss' κ"] == "over 3 of 4 objects (3 raters each; 1 with another rater count skipped)"
    assert "over 3 of 4 objects (3 raters each; 1 with another rater count skipped)" in report_html(report)
    assert agreement["per_label"] == {"pos": {"agreement": 0.2, "pairs": 5},
                                      "neg": {"agreement": approx(3 / 7, abs=1e-4), "pairs": 7},
                                      "neu": {"agreement": approx(1 / 3, abs=1e-4), "pairs": 3}}
    workers = report["workers"]
    assert workers["count"] == 3
    assert workers["median_seconds"] == 9.5  # 4 5 5 5 7 9 | 10 12 14 16 20 30
    assert workers["by_worker"] == {
        "a": {"tasks": 5, "median_seconds": 7.5, "pairs": 7, "agreement": approx(4 / 7, abs=1e-4)},
        "b": {"tasks": 5, "median_seconds": 9.0, "pairs": 7, "agreement": approx(4 / 7, abs=1e-4)},
        "c": {"tasks": 3, "median_seconds": 16.0, "pairs": 6, "agreement": approx(1 / 3, abs=1e-4)},
    }
    disputed = report["disputed"]
    assert [(d["object_id"], d["agreement"]) for d in disputed] == [("obj-3", 0.0),
                                                                     ("obj-1", approx(0.3333))]
    assert disputed[1] == {
        "object_id": "obj-1", "line_no": 1, "status": "labeled", "agreement": 0.3333, "item": EVIL,
        "consolidated": "pos",
        "answers": [{"worker_id": "a", "answer": "pos", "seconds": 10.0},
                    {"worker_id": "b", "answer": "pos", "seconds": 20.0},
                    {"worker_id": "c", "answer": "neg", "seconds": 30.0}]}


def test_disputed_list_keeps_the_lowest_twenty_in_order():
    t = TaskType.text_classification
    rnd = random.Random(11)
    objects, scores = [], {}
    for line in range(1, 101):
        labels = [rnd.choice("xyz") for _ in range(3)]
        objects.append(obj(line, t, text=str(line), label=labels[0],
                           answers=[cls(f"w{i}", x) for i, x in enumerate(labels)]))
        pairs = [labels[0] == labels[1], labels[0] == labels[2], labels[1] == labels[2]]
        scores[line] = sum(pairs) / 3
    report = build_report(objects, task_type=t, labels=["x", "y", "z"], dataset="d")
    expected = sorted((s, line) for line, s in scores.items() if s < 1)[:DISPUTED_MAX]
    assert [(d["agreement"], d["line_no"]) for d in report["disputed"]] == [
        (round(s, 4), line) for s, line in expected]


def test_multilabel_report():
    t = TaskType.text_multilabel

    def ml(worker, *labels):
        return WorkerAnswer(worker, {"crowd-classifier-multi-select": {"labels": list(labels)}})

    objects = [
        obj(1, t, text="one", labels=("a", "b"),
            answers=[ml("w1", "a", "b"), ml("w2", "a"), WorkerAnswer("w3", {})]),
        obj(2, t, text="two", labels=("c",), answers=[ml("w1", "c"), ml("w2", "c")]),
        obj(3, t, Status.failed, text="three", failure_reason="no answers"),
    ]
    report = build_report(objects, task_type=t, labels=["a", "b", "c"], dataset="topics")
    assert report["counts"]["objects"] == 3 and report["counts"]["failed"] == 1
    assert report["label_distribution"]["counts"] == {"a": 1, "b": 1, "c": 1}
    agreement = report["agreement"]
    assert agreement["measure"] == "mean pairwise Jaccard"
    assert agreement["mean"] == approx((1 / 6 + 1) / 2, abs=1e-4)
    # yes/no units per (object, label): T 5, F 10, observed disagreement 4 -> 1 - 14 * 4 / 100.
    assert agreement["krippendorff_alpha"] == approx(0.44, abs=1e-4)
    assert "fleiss_kappa" not in agreement
    assert agreement["per_label"] == {"a": {"agreement": approx(1 / 3, abs=1e-4), "pairs": 3},
                                      "b": {"agreement": 0.0, "pairs": 2},
                                      "c": {"agreement": 1.0, "pairs": 1}}
    assert report["disputed"][0]["answers"][2] == {"worker_id": "w3", "answer": [],
                                                   "seconds": None}


def test_bounding_box_report():
    t = TaskType.bounding_box

    def bb(worker, *boxes):
        return WorkerAnswer(worker, {"boundingBox": {
            "boundingBoxes": [{"label": b[0], "left": b[1], "top": b[2], "width": b[3],
                               "height": b[4]} for b in boxes],
            "inputImageProperties": {"width": 100, "height": 80}}}, 30)

    objects = [
        obj(1, t, boxes=(Box("car", 2, 0, 10, 10), Box("person", 50, 50, 10, 10)),
            image_size=(100, 80, 3),
            answers=[bb("w1", ("car", 0, 0, 10, 10)), bb("w2", ("car", 5, 0, 10, 10)),
                     bb("w3", ("car", 0, 0, 10, 10), ("person", 50, 50, 10, 10))]),
        obj(2, t, answers=[bb("w1"), bb("w2")]),  # both drew nothing: they agree
        obj(3, t, Status.failed, failure_reason="ClientError: Annotation tasks expired."),
    ]
    report = build_report(objects, task_type=t, labels=["car", "person"], dataset="streets")
    assert report["counts"]["labeled"] == 2 and report["counts"]["failed"] == 1
    assert report["label_distribution"] == {"of": "labeled", "unit": "boxes", "objects": 2,
                                            "counts": {"car": 1, "person": 1}}
    agreement = report["agreement"]
    # Object 1: w1-w2 1/3, w1-w3 (1 + 0) / 2, w2-w3 (1/3 + 0) / 2 -> mean 1/3; object 2: 1.
    assert agreement["mean_iou"] == agreement["mean"] == approx((1 / 3 + 1) / 2, abs=1e-4)
    assert agreement["objects"] == 2
    assert agreement["per_label"] == {"car": {"agreement": approx(5 / 9, abs=1e-4), "pairs": 3},
                                      "person": {"agreement": 0.0, "pairs": 2}}
    [entry] = report["disputed"]
    assert entry["object_id"] == "obj-1" and entry["agreement"] == approx(1 / 3, abs=1e-4)
    assert entry["image_size"] == [100, 80] and entry["item"] == "s3://b/1.png"
    assert entry["answers"][1]["answer"] == [{"label": "car", "left": 5.0, "top": 0.0,
                                              "width": 10.0, "height": 10.0}]
    assert entry["consolidated"][1]["label"] == "person"


def test_named_entity_report():
    t = TaskType.named_entity
    text = "Ann met Bob in Paris"

    def ner(worker, *spans):
        return WorkerAnswer(worker, {"crowd-entity-annotation": {"entities": [
            {"label": s[0], "startOffset": s[1], "endOffset": s[2]} for s in spans]}}, 40)

    objects = [
        obj(1, t, text=text, entities=(Span("PER", 0, 3), Span("PER", 8, 11), Span("LOC", 15, 20)),
            answers=[ner("w1", ("PER", 0, 3), ("PER", 8, 11), ("LOC", 15, 20)),
                     ner("w2", ("PER", 0, 3), ("PER", 8, 11)),
                     ner("w3", ("PER", 0, 3), ("ORG", 8, 11), ("LOC", 15, 20))]),
        obj(2, t, Status.unlabeled, text="nothing here"),
    ]
    report = build_report(objects, task_type=t, labels=["PER", "ORG", "LOC"], dataset="news")
    assert report["counts"]["unlabeled"] == 1
    assert report["label_distribution"]["counts"] == {"PER": 2, "ORG": 0, "LOC": 1}
    agreement = report["agreement"]
    assert agreement["span_f1"] == approx((0.8 + 2 / 3 + 0.4) / 3, abs=1e-4)
    assert agreement["per_label"] == {"PER": {"agreement": approx(7 / 9, abs=1e-4), "pairs": 3},
                                      "ORG": {"agreement": 0.0, "pairs": 2},
                                      "LOC": {"agreement": approx(1 / 3, abs=1e-4), "pairs": 3}}
    [entry] = report["disputed"]
    assert entry["answers"][2]["answer"][1] == {"label": "ORG", "start": 8, "end": 11,
                                                "text": "Bob"}
    assert report["workers"]["median_seconds"] == 40.0


def test_custom_task_has_counts_and_workers_only():
    t = TaskType.custom
    objects = [obj(1, t, answers=[WorkerAnswer("w1", {"anything": 1}, 3.0)]),
               obj(2, t, Status.failed, failure_reason="x")]
    report = build_report(objects, task_type=t, labels=["vendor", "total"], dataset="c")
    assert report["counts"]["objects"] == 2 and report["counts"]["failed_reasons"] == {"x": 1}
    assert report["agreement"] == {"measure": None, "objects": 0, "mean": None, "per_label": {}}
    assert report["workers"]["by_worker"]["w1"]["tasks"] == 1
    assert report["disputed"] == []
    # its answers hold nothing a label distribution counts: no table of zeros, in the card or the page
    assert report["label_distribution"]["counts"] == {}
    assert "## Labels" not in card_markdown({}, report)  # the page: test_a_custom_task_counts_what_its_objects_carry


def test_a_custom_task_counts_what_its_objects_carry(tmp_path):
    t = TaskType.custom
    nothing = build_report([obj(1, t, answers=[WorkerAnswer("w1", {"anything": 1})])], task_type=t,
                           labels=["vendor", "total"], dataset="c")
    assert "Label distribution" not in write_report(nothing, tmp_path / "nothing")[1].read_text()
    boxes = [obj(1, t, boxes=(Box("vendor", 1, 2, 3, 4), Box("total", 5, 6, 7, 8)), image_size=(40, 30, 3)),
             obj(2, t, boxes=(Box("total", 1, 2, 3, 4),), image_size=(40, 30, 3))]
    report = build_report(boxes, task_type=t, labels=["vendor", "date", "total"], dataset="receipts")
    assert report["label_distribution"] == {"of": "labeled", "unit": "boxes", "objects": 2,
                                            "counts": {"vendor": 1, "date": 0, "total": 2}}
    card = card_markdown({}, report)
    assert "| label | boxes | share |\n|---|---:|---:|\n| vendor | 1 | 33.3% |\n| date | 0 | 0.0% |\n" in card
    page = write_report(report, tmp_path / "boxes")[1].read_text()
    assert "2 · 66.7%" in page and "share of 3 boxes labeled" in page


def test_multilabel_shares_are_of_objects_and_objects_with_no_label_are_counted(tmp_path):
    t = TaskType.text_multilabel
    objects = [obj(1, t, text="a", labels=("happy",)), obj(2, t, text="b", labels=("happy", "sad")),
               obj(3, t, text="c", labels=("sad",)), obj(4, t, text="d", labels=()),
               obj(5, t, text="e", labels=("angry",)), obj(6, t, Status.failed, text="f")]
    report = build_report(objects, task_type=t, labels=["happy", "sad", "angry"], dataset="moods")
    assert report["label_distribution"] == {"of": "labeled", "unit": "objects", "objects": 5, "without_label": 1,
                                            "counts": {"happy": 2, "sad": 2, "angry": 1}}
    page = write_report(report, tmp_path)[1].read_text()
    assert "share of 5 objects labeled; an object can have several labels" in page
    assert "2 · 40.0%" in page and "1 · 20.0%" in page  # not 2 of 5 label picks (33.3%)
    assert "1 of them has no label." in page
    card = card_markdown({}, report)
    assert "| happy | 2 | 40.0% |" in card and "| angry | 1 | 20.0% |" in card
    assert "they can add up to more than 100%. 1 of them has no label." in card


@pytest.mark.parametrize("task", list(TaskType), ids=lambda t: t.value)
def test_the_card_says_what_it_holds_in_plain_words(task):
    card = card_markdown({}, build_report([], task_type=task, labels=["a"], dataset="d"))
    first = card.split("\n\n")[2]
    words = {TaskType.text_classification: "Single-label classification labels",  # image classification too
             TaskType.text_multilabel: "Multi-label classification labels",
             TaskType.bounding_box: "Bounding boxes", TaskType.named_entity: "Named-entity spans",
             TaskType.custom: "Labels of a custom task"}[task]
    assert first.startswith(f"{words} collected with SageMaker Ground Truth by gtrun. ")
    assert not re.search(r"(boxes|entities|task) labels", first)


# --- report.json, report.html, dataset card ----------------------------------------------------


@pytest.fixture
def report():
    return build_report(classification_objects(), task_type=TaskType.text_classification,
                        labels=["pos", "neg", "neu", "<b>bold</b>"],
                        dataset="<img src=x onerror=alert(1)>")


def test_report_json_round_trips_with_sorted_keys(report, tmp_path):
    json_path, _ = write_report(report, tmp_path / "out")
    text = json_path.read_text(encoding="utf-8")
    assert json.loads(text) == report
    assert text == json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_report_html_escapes_task_data_and_is_self_contained(report, tmp_path):
    _, html_path = write_report(report, tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert "<script" not in page and "<img" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert re.findall(r"<[^>]*\b(?:src|href)\s*=", page) == []  # no external assets
    assert page.count("<svg") >= 2  # label distribution and per-label agreement charts
    for figure in ("Krippendorff", "Fleiss", "Most disputed", "ClientError: Annotation tasks"):
        assert figure in page


def _long_id_objects(task: TaskType) -> tuple[list[LabeledObject], list[str]]:
    """Twelve labeled objects of the task type, three workers each with Ground Truth's long ids
    ("private.us-east-1.<32 hex>"), answers drawn at random: (objects, labels)."""
    workers = [f"private.us-east-1.{i:032x}" for i in range(3)]
    rng = random.Random(4)
    objects = []
    for i in range(12):
        if task is TaskType.bounding_box:
            def answer(_w: str) -> dict:
                boxes = [{"label": rng.choice(["car", "bus"]), "left": rng.randrange(80), "top": rng.randrange(60),
                          "width": 15, "height": 12} for _ in range(rng.randint(1, 3))]
                return {"boundingBox": {"boundingBoxes": boxes, "inputImageProperties": {"width": 100, "height": 80}}}
            objects.append(obj(i, task, boxes=(Box("car", 2, 0, 10, 10),), image_size=(100, 80, 3),
                               answers=[WorkerAnswer(w, answer(w), 12.5) for w in workers]))
        elif task is TaskType.named_entity:
            text = f"Ann met Bob in Paris on day {i} " * 3
            def answer(_w: str) -> dict:
                spans = [{"label": rng.choice(["PER", "LOC"]), "startOffset": s, "endOffset": s + 3} for s in (0, 8, 15)]
                return {"crowd-entity-annotation": {"entities": spans}}
            objects.append(obj(i, task, text=text, entities=(Span("PER", 0, 3),),
                               answers=[WorkerAnswer(w, answer(w), 20) for w in workers]))
        else:
            objects.append(obj(i, task, text=f"tweet {i} " * 12, label="pos",
                               answers=[cls(w, rng.choice(["pos", "neg"]), 3.5) for w in workers]))
    labels = {TaskType.bounding_box: ["car", "bus"], TaskType.named_entity: ["PER", "LOC"]}.get(task, ["pos", "neg"])
    return objects, labels


def test_the_page_shows_worker_ids_without_the_prefix_they_all_share(tmp_path):
    objects, labels = _long_id_objects(TaskType.text_classification)
    t = TaskType.text_classification
    page = write_report(build_report(iter(objects), task_type=t, labels=labels, dataset="d"), tmp_path / "a")[1].read_text()
    one = "private.us-east-1." + "0" * 31 + "1"
    assert f'<span title="{one}">{"0" * 31}1</span>' in page
    assert f">{one}<" not in page and "without the <code>private.us-east-1.</code> they all start with" in page
    assert f'"{one}"' in (tmp_path / "a" / "report.json").read_text()  # report.json keeps whole ids
    # workers of two workforces share no prefix: the page shows whole ids
    mixed = objects + [obj(99, t, text="x", label="pos", answers=[cls("public.us-east-1.ABC", "pos"), cls(one, "neg")])]
    page = write_report(build_report(iter(mixed), task_type=t, labels=labels, dataset="d"), tmp_path / "b")[1].read_text()
    assert f">{one}<" in page and "public.us-east-1.ABC" in page and "they all start with" not in page


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.bounding_box, TaskType.named_entity],
                         ids=lambda t: t.value)
@pytest.mark.parametrize("width", [1200, 700])
def test_report_panels_hold_their_content_in_a_browser(browser, tmp_path, task, width):
    # Ground Truth's worker ids are long: the workers' table, in a half-width panel, used to run
    # past its panel's edge
    objects, labels = _long_id_objects(task)
    _, html_path = write_report(build_report(iter(objects), task_type=task, labels=labels, dataset="d"), tmp_path)
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(html_path.as_uri())
        overflowing = page.evaluate("""() => [...document.querySelectorAll('.panel')]
            .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.querySelector('h2').textContent)""")
        assert page.locator("h2", has_text="Workers").count() == 1 and overflowing == []
    finally:
        page.close()


def test_report_without_worker_answers_says_why_there_is_no_agreement(report, tmp_path):
    t = TaskType.bounding_box
    consolidated = [obj(i, t, boxes=(Box("car", 1, 2, 3, 4),)) for i in range(3)]  # an output manifest's
    bare = build_report(iter(consolidated), task_type=t, labels=["car", "bus"], dataset="streets")
    _, html_path = write_report(bare, tmp_path / "bare")
    page = html_path.read_text(encoding="utf-8")
    assert "No worker answers: an output manifest holds each object's consolidated label only" in page
    assert "no pairs" not in page
    _, html_path = write_report(report, tmp_path / "answered")  # with answers: the chart, no such note
    page = html_path.read_text(encoding="utf-8")
    assert "No worker answers" not in page and "pairs" in page


def test_card_mentions_every_provenance_key(report, tmp_path):
    provenance = {"run_dir": "outputs/2026-01-01/12-00-00", "job_name": "tweets-20260101",
                  "config_hash": "3f2a9c", "source_fingerprint": "sha256:abc|def",
                  "workforce": "private", "workers_per_object": 3, "usd_per_task": "0.036",
                  "created": "2026-01-01T12:00:00Z", "labels": ["pos", "neg"]}
    path = write_card(tmp_path, provenance, report)
    assert path == tmp_path / "dataset" / "README.md"
    card = path.read_text(encoding="utf-8")
    for key in provenance:
        assert f"| {key} |" in card
    assert "sha256:abc\\|def" in card  # a pipe would split the table cell
    assert '["pos", "neg"]' in card
    assert "<img" not in card and "<b>" not in card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["pretty_name"] == report["dataset"]  # escaped as \u003c, read back as "<"
    assert "| Objects | 8 |" in card and "| Failed | 2 |" in card
    assert "Krippendorff" in card and "Fleiss" in card


def _large_report(objects: int) -> dict:
    """A collect's figures for a large tweets job (no worker answers), min_confidence and a label_map applied."""
    labeled, failed = objects - objects // 500, objects // 500
    names = ["Positive", "Negative", "Neutral", "Irrelevant"]
    report = report_from_counts(task_type=TaskType.text_classification, labels=names, dataset="tweets-20260101-120000",
                                status={"labeled": labeled, "failed": failed},
                                reasons=[("ClientError: Annotation tasks expired.", failed)],
                                distribution=[(n, labeled // 4) for n in names])
    kept = labeled // 2
    add_dataset(report, objects=kept, distribution=label_distribution(
        TaskType.text_classification, "objects", names[:3], {"Positive": kept // 2, "Negative": kept // 4,
                                                             "Neutral": kept - kept // 2 - kept // 4}, kept),
                options={"label_map": {"Irrelevant": "Neutral"}, "min_confidence": 0.5, "min_agreement": None,
                         "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "salt": "gtrun", "key": None}},
                filters=[{"option": "min_confidence", "threshold": 0.5, "objects": labeled, "kept": kept,
                          "dropped": labeled - kept, "unknown": 0}])
    return report


@pytest.mark.parametrize("objects", [200_000, 12_345_678])
@pytest.mark.parametrize("width", [1280, 900, 700, 400])
def test_large_counts_fit_their_cards_and_file_names_do_not_break(browser, tmp_path, objects, width):
    report = _large_report(objects)
    assert report["counts"]["objects"] == objects and "In the dataset" in [row[0] for row in headline(report)]
    _, html_path = write_report(report, tmp_path)
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(html_path.as_uri())
        cards = page.evaluate("""() => [...document.querySelectorAll('.card')].map(card => {
            const box = card.getBoundingClientRect(), value = card.querySelector('.v').getBoundingClientRect();
            return {name: card.querySelector('.k').textContent, fits: card.scrollWidth <= card.clientWidth + 1
                    && value.right <= box.right - 8 && value.left >= box.left}})""")
        assert [c["name"] for c in cards if not c["fits"]] == [] and len(cards) == 9
        overflowing = page.evaluate("""() => [...document.querySelectorAll('.panel')]
            .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.querySelector('h2').textContent)""")
        assert overflowing == []
        # a file name breaks only when its line cannot hold it whole (as on a phone)
        broken = page.evaluate("""() => [...document.querySelectorAll('code')]
            .filter(c => c.getClientRects().length > 1).map(c => c.textContent)""")
        assert broken == [] if width >= 700 else "not_labeled.jsonl" not in broken
    finally:
        page.close()


def test_workers_who_drew_the_same_box_agree_fully_and_are_not_disputed():
    box = ("car", 925.18, 201.74, 27.03, 68.24)  # (left + width) - left is not width in floating point
    assert box_iou(box[1:], box[1:]) == 1.0
    answers = [WorkerAnswer(w, {"boundingBox": {"boundingBoxes": [
        dict(zip(("label", "left", "top", "width", "height"), box))]}}, 10) for w in ("w1", "w2")]
    report = build_report([obj(1, TaskType.bounding_box, boxes=(Box(*box),), answers=answers)],
                          task_type=TaskType.bounding_box, labels=["car"], dataset="d")
    assert report["agreement"]["mean_iou"] == 1.0
    assert report["disputed"] == []


def test_a_card_is_graded_on_the_figure_not_on_its_rounded_digits():
    t = TaskType.text_classification
    units = [["a", "a"], ["b", "b"]] * 13 + [["a", "b"], ["b", "a"], ["b", "a"]]
    objects = [obj(i, t, text=str(i), label=u[0], answers=[cls(f"w{j}", x) for j, x in enumerate(u)])
               for i, u in enumerate(units, 1)]
    report = build_report(objects, task_type=t, labels=["a", "b"], dataset="d")
    assert report["agreement"]["krippendorff_alpha"] == approx(0.7967, abs=1e-4)  # below .800
    page = report_html(report)
    cards = {k: v for v, k in re.findall(
        r'<div class="card (\w*)"><div class="k">([^<]*)</div>', page)}
    assert cards["Krippendorff&#x27;s α"] == "fair" and cards["Fleiss&#x27; κ"] == "fair"
    assert ("Krippendorff's α", "0.797", "over 29 objects") in headline(report)


@pytest.mark.parametrize("task", [TaskType.text_classification, TaskType.text_multilabel])
def test_an_undefined_coefficient_says_why_and_the_page_says_what_the_figures_mean(task):
    answer = (lambda w: cls(w, "a")) if task is TaskType.text_classification else (
        lambda w: WorkerAnswer(w, {"crowd-classifier-multi-select": {"labels": ["a"]}}))
    objects = [obj(i, task, text=str(i), label="a", labels=("a",), answers=[answer("w1"), answer("w2")])
               for i in (1, 2)]
    report = build_report(objects, task_type=task, labels=["a"], dataset="d")
    assert report["agreement"]["krippendorff_alpha"] is None  # every answer the same: 0/0
    rows = {name: (value, note) for name, value, note in headline(report)}
    assert rows["Krippendorff's α"][0] == "n/a" and rows["Krippendorff's α"][1].startswith("undefined: every ")
    if task is TaskType.text_classification:
        assert rows["Fleiss' κ"] == ("n/a", "undefined: every answer is the same label; 2 raters, 2 objects")
    page = report_html(report)
    assert "1 is full agreement, 0 what chance alone gives" in page or "1 full agreement, 0 chance" in page
    assert "A card is green from 0.800, orange from 0.667, red below." in page
