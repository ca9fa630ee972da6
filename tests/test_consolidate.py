"""Built-in consolidation per task type, checked against Ground Truth's real output shapes."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from runner.schema import TaskType
from runner.service.consolidate import (
    Answer,
    ConsolidationError,
    JobRecord,
    WorkerRecord,
    consolidate,
    consolidate_batch,
    consolidate_in_job,
    dawid_skene,
    failed_metadata,
)
from runner.service.layout import output_line
from tests.conftest import real_file, shape

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 2, 3, 4, 5, 678901)
CREATION_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
SENTIMENT = ["Positive", "Negative", "Neutral"]


def classified(*labels: str, element: str = "crowd-classifier") -> list[Answer]:
    return [Answer(f"w{n}", {element: {"label": label}}) for n, label in enumerate(labels)]


def classify(*labels: str, labels_list=SENTIMENT) -> dict:
    return consolidate(TaskType.text_classification, label_attribute="sentiment",
                       labels=labels_list, job_name="tweets-1", answers=classified(*labels),
                       now=NOW)


# --- text classification -----------------------------------------------------------------------


def test_unanimous_answers_give_the_class_index_and_full_confidence():
    out = classify("Negative", "Negative", "Negative")
    assert out == {"sentiment": 1, "sentiment-metadata": {
        "class-name": "Negative", "confidence": 1.0, "type": "groundtruth/text-classification",
        "job-name": "labeling-job/tweets-1", "human-annotated": "yes",
        "creation-date": "2026-01-02T03:04:05.678901"}}


def test_two_against_one_takes_the_majority():
    out = classify("Neutral", "Positive", "Neutral")
    assert out["sentiment"] == 2
    assert out["sentiment-metadata"]["class-name"] == "Neutral"
    assert 0.5 < out["sentiment-metadata"]["confidence"] <= 1.0


def test_one_worker_gives_confidence_zero_as_ground_truth_writes():
    out = classify("Neutral")
    assert out["sentiment"] == 2
    assert out["sentiment-metadata"]["confidence"] == 0


@pytest.mark.parametrize(("answers", "index", "confidence"), [
    (("Positive", "Negative"), 0, 0.5),
    (("Negative", "Positive"), 0, 0.5),  # the answer order does not decide
    (("Neutral", "Negative"), 1, 0.5),
    (("Neutral", "Negative", "Positive"), 0, 0.33),
])
def test_ties_go_to_the_earliest_label(answers, index, confidence):
    out = classify(*answers)
    assert out["sentiment"] == index
    assert out["sentiment-metadata"]["confidence"] == confidence


def test_batch_em_learns_that_a_worker_is_always_wrong():
    items = {}
    for n in range(12):
        true = n % 3
        items[str(n)] = [Answer("good-1", {"crowd-classifier": {"label": SENTIMENT[true]}}),
                         Answer("good-2", {"crowd-classifier": {"label": SENTIMENT[true]}}),
                         Answer("bad", {"crowd-classifier": {"label": SENTIMENT[(true + 1) % 3]}})]
    # One good worker against the bad one: a plain vote is a tie that would go to "Positive".
    items["x"] = [Answer("bad", {"crowd-classifier": {"label": "Positive"}}),
                  Answer("good-1", {"crowd-classifier": {"label": "Neutral"}})]
    out = consolidate_batch(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                            job_name="j", items=items, now=NOW)
    assert list(out) == [*map(str, range(12)), "x"]
    assert [out[str(n)]["s"] for n in range(12)] == [n % 3 for n in range(12)]
    assert out["x"]["s"] == 2 and out["x"]["s-metadata"]["class-name"] == "Neutral"
    assert out["x"]["s-metadata"]["confidence"] > 0.9


def test_dawid_skene_gives_the_always_wrong_worker_a_low_accuracy():
    matrix = [[n % 3, n % 3, (n + 1) % 3] for n in range(12)]
    posteriors, accuracy = dawid_skene(matrix, 3)
    assert accuracy[0] > 0.9 and accuracy[1] > 0.9 and accuracy[2] < 0.1
    assert [max(range(3), key=p.__getitem__) for p in posteriors] == [n % 3 for n in range(12)]
    assert all(abs(sum(p) - 1) < 1e-9 for p in posteriors)


def test_dawid_skene_handles_missing_labels_one_class_and_priors():
    posteriors, accuracy = dawid_skene([[0, None], [None, None]], 2, worker_priors=[None, 0.9])
    assert posteriors[1] == [0.5, 0.5]  # an item nobody labelled keeps the uniform posterior
    assert accuracy[1] == 0.9  # a worker with no label keeps its prior
    assert dawid_skene([[0, 0]], 1) == ([[1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="not a class index"):
        dawid_skene([[3]], 2)


def test_worker_priors_can_outweigh_a_vote():
    answers = classified("Positive", "Negative")
    trusted = consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                          job_name="j", answers=answers, now=NOW,
                          worker_priors={"w0": 0.2, "w1": 0.95})
    assert trusted["s"] == 1


def in_job(record: JobRecord, *labels: str, labels_list=SENTIMENT):
    content, learnt = consolidate_in_job(label_attribute="s", labels=labels_list, job_name="j",
                                         answers=classified(*labels), now=NOW, record=record)
    return content["s"], content["s-metadata"]["confidence"], learnt


def learn(record: JobRecord, learnt) -> JobRecord:
    workers = dict(record.workers)
    for worker, p in learnt.correct.items():
        old = workers.get(worker, WorkerRecord())
        workers[worker] = WorkerRecord(old.answered + 1, old.correct + p)
    classes = [*record.classes, *[0.0] * (len(learnt.classes) - len(record.classes))]
    return JobRecord(workers, tuple(a + b for a, b in zip(classes, learnt.classes, strict=True)))


def test_in_a_job_a_split_vote_of_new_workers_is_likely_not_certain():
    assert in_job(JobRecord(), "Neutral", "Positive", "Neutral")[:2] == (2, 0.79)
    assert in_job(JobRecord(), "Positive", "Negative", "Positive", labels_list=SENTIMENT[:2])[:2] == (0, 0.7)
    assert in_job(JobRecord(), "Neutral", "Neutral", "Neutral")[:2] == (2, 0.98)
    assert in_job(JobRecord(), "Neutral", "Neutral")[:2] == (2, 0.92)
    assert in_job(JobRecord(), "Neutral")[:2] == (2, 0)  # one answer: 0, as GT writes
    index, confidence, learnt = in_job(JobRecord(), "Positive", "Negative")  # a tie: the earliest label
    assert (index, confidence) == (0, 0.45)  # Neutral keeps a little
    assert learnt.correct == {"w0": pytest.approx(14 / 31), "w1": pytest.approx(14 / 31)}
    assert sum(learnt.classes) == pytest.approx(1)
    assert in_job(JobRecord(), "Neutral")[2].correct == {}  # one answer says nothing of its worker


def test_in_a_job_the_workers_record_weighs_their_answers():
    record = JobRecord()
    for n in range(12):  # w0 and w1 agree on every object, w2 always differs
        true = SENTIMENT[n % 3]
        *_, learnt = in_job(record, true, true, SENTIMENT[(n + 1) % 3])
        record = learn(record, learnt)
    assert record.workers["w0"].accuracy > 0.85 > 0.25 > record.workers["w2"].accuracy
    # w2 against w0: a plain vote would be a tie going to "Positive"; w0's record decides
    index, confidence, _ = in_job(JobRecord({"w0": record.workers["w2"], "w1": record.workers["w0"]}),
                                  "Positive", "Neutral")
    assert index == 2 and confidence > 0.9
    # unanimous reliable workers: near-certain; a split among them: likely, never written as certain
    even = JobRecord({w: record.workers["w0"] for w in ("w0", "w1", "w2")}, record.classes)
    assert in_job(even, "Negative", "Negative", "Negative")[1] == 1.0
    assert 0.9 < in_job(even, "Negative", "Negative", "Positive")[1] < 0.99
    perfect = JobRecord({w: WorkerRecord(300, 300) for w in ("w0", "w1", "w2")}, record.classes)
    assert in_job(perfect, "Negative", "Negative", "Positive")[1] == 0.99  # 0.998 under the model
    # the same answers and record give the same result
    assert in_job(record, "Negative", "Positive", "Negative") == in_job(record, "Negative", "Positive", "Negative")


def test_in_a_job_bad_answers_are_refused():
    with pytest.raises(ConsolidationError, match=r"label 'Happy' is not one of"):
        in_job(JobRecord(), "Happy", "Positive")
    twice = [Answer("w1", {"crowd-classifier": {"label": "Positive"}})] * 2
    with pytest.raises(ConsolidationError, match=r"worker 'w1' answered twice"):
        consolidate_in_job(label_attribute="s", labels=SENTIMENT, job_name="j", answers=twice, now=NOW,
                           record=JobRecord())
    with pytest.raises(ConsolidationError, match=r"no answers"):
        consolidate_in_job(label_attribute="s", labels=SENTIMENT, job_name="j", answers=[], now=NOW,
                           record=JobRecord())


def test_classification_rejects_unknown_labels_and_double_answers():
    with pytest.raises(ConsolidationError, match=r"label 'Happy' is not one of"):
        classify("Happy", "Positive")
    twice = [Answer("w1", {"crowd-classifier": {"label": "Positive"}})] * 2
    with pytest.raises(ConsolidationError, match=r"^object '7': worker 'w1' answered twice"):
        consolidate_batch(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                          job_name="j", items={"7": twice}, now=NOW)


def test_the_answer_is_found_under_another_element_name_by_its_shape():
    answers = classified("Negative", "Negative", element="sentiment-picker")
    out = consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                      job_name="j", answers=answers, now=NOW)
    assert out["s"] == 1
    named = consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                        job_name="j", answers=answers, now=NOW, element_name="sentiment-picker")
    assert named == out
    with pytest.raises(ConsolidationError, match=r"no 'other' answer"):
        consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                    job_name="j", answers=answers, now=NOW, element_name="other")
    two = [Answer("w1", {"a": {"label": "Positive"}, "b": {"label": "Negative"}})]
    with pytest.raises(ConsolidationError, match=r"several answers fit"):
        consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                    job_name="j", answers=two, now=NOW)


def test_classification_line_has_the_real_image_classification_line_shape():
    real = json.loads(real_file("ic_output_line1.jsonl").read_text().splitlines()[0])
    attr = "birds-open-images-clone"
    birds = ["Duck", "Sparrow", "Woodpecker", "Owl", "Parrot", "Turkey", "Falcon", "Swan",
             "Goose", "Canary"]
    ours = json.loads(output_line(
        {"source-ref": real["source-ref"]},
        consolidate(TaskType.text_classification, label_attribute=attr, labels=birds,
                    job_name=attr, answers=classified("Canary", "Canary", "Swan"), now=NOW)))
    assert shape(ours) == shape(real)
    assert ours[attr] == real[attr] == 9
    meta, real_meta = ours[f"{attr}-metadata"], real[f"{attr}-metadata"]
    assert set(meta) == set(real_meta)
    assert meta["job-name"] == real_meta["job-name"] == f"labeling-job/{attr}"
    assert meta["type"] == real_meta["type"].replace("image", "text")
    assert CREATION_DATE.match(meta["creation-date"]) and CREATION_DATE.match(
        real_meta["creation-date"])


def test_job_name_is_lower_case_and_creation_date_is_utc():
    out = consolidate(TaskType.text_classification, label_attribute="s", labels=SENTIMENT,
                      job_name="Tweets-ABC", answers=classified("Positive"),
                      now=datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert out["s-metadata"]["job-name"] == "labeling-job/tweets-abc"
    assert out["s-metadata"]["creation-date"] == "2026-01-02T03:00:00.000000"


# --- multi-label -------------------------------------------------------------------------------


def multi(*choices: list[str]) -> dict:
    answers = [Answer(f"w{n}", {"crowd-classifier-multi-select": {"labels": c}})
               for n, c in enumerate(choices)]
    return consolidate(TaskType.text_multilabel, label_attribute="tags", labels=SENTIMENT,
                       job_name="j", answers=answers, now=NOW)


def test_multilabel_is_the_union_with_a_class_map_and_vote_shares():
    out = multi(["Positive", "Neutral"], ["Neutral"], ["Neutral"], ["Neutral", "Positive"])
    assert out["tags"] == [2, 0]
    meta = out["tags-metadata"]
    assert meta["class-map"] == {"2": "Neutral", "0": "Positive"}
    assert meta["confidence-map"] == {"2": 1.0, "0": 0.5}
    assert list(meta["class-map"]) == list(meta["confidence-map"]) == ["2", "0"]
    assert meta["type"] == "groundtruth/text-classification-multilabel"
    assert "class-name" not in meta and "confidence" not in meta


def test_multilabel_with_one_worker_none_chosen_and_bad_labels():
    one = multi(["Negative", "Positive"])
    assert one["tags"] == [1, 0]
    assert one["tags-metadata"]["confidence-map"] == {"1": 0.0, "0": 0.0}
    none = multi([], [])
    assert none["tags"] == [] and none["tags-metadata"]["class-map"] == {}
    with pytest.raises(ConsolidationError, match="'Sad' is not one of"):
        multi(["Sad"])


# --- bounding boxes ----------------------------------------------------------------------------


def boxes(worker: str, *drawn: tuple, name: str = "boundingBox") -> Answer:
    return Answer(worker, {name: {
        "boundingBoxes": [{"label": label, "left": left, "top": top, "width": w, "height": h}
                          for label, left, top, w, h in drawn],
        "inputImageProperties": {"width": 601, "height": 453}}})


def detect(*answers: Answer, labels=("Cat", "Dog")) -> dict:
    return consolidate(TaskType.bounding_box, label_attribute="bb", labels=list(labels),
                       job_name="j", answers=list(answers), now=NOW)


def test_two_workers_drawing_nearly_the_same_box_give_one_averaged_box():
    out = detect(boxes("w1", ("Cat", 100, 100, 50, 50)), boxes("w2", ("Cat", 103, 98, 50, 51)))
    assert out["bb"] == {"image_size": [{"width": 601, "height": 453, "depth": 3}],
                         "annotations": [{"class_id": 0, "left": 102, "top": 99, "width": 50,
                                          "height": 51}]}
    meta = out["bb-metadata"]
    assert meta["class-map"] == {"0": "Cat"}
    assert len(meta["objects"]) == 1 and 0.8 < meta["objects"][0]["confidence"] < 1


def test_disjoint_boxes_stay_apart_and_only_agreed_boxes_gain_confidence():
    out = detect(boxes("w1", ("Cat", 0, 0, 10, 10), ("Cat", 100, 100, 10, 10)),
                 boxes("w2", ("Cat", 100, 100, 10, 10)))
    assert [(a["left"], a["top"]) for a in out["bb"]["annotations"]] == [(0, 0), (100, 100)]
    assert out["bb-metadata"]["objects"] == [{"confidence": 0}, {"confidence": 1.0}]


def test_boxes_with_different_labels_are_never_merged():
    out = detect(boxes("w1", ("Cat", 10, 10, 50, 50)), boxes("w2", ("Dog", 10, 10, 50, 50)))
    assert [a["class_id"] for a in out["bb"]["annotations"]] == [0, 1]
    assert out["bb-metadata"]["class-map"] == {"0": "Cat", "1": "Dog"}


def test_one_workers_boxes_are_kept_as_drawn_with_confidence_zero():
    out = detect(boxes("w1", ("Dog", 1, 2, 3, 4), ("Dog", 50, 60, 70, 80)))
    assert out["bb"]["annotations"] == [
        {"class_id": 1, "left": 1, "top": 2, "width": 3, "height": 4},
        {"class_id": 1, "left": 50, "top": 60, "width": 70, "height": 80}]
    assert out["bb-metadata"]["objects"] == [{"confidence": 0}, {"confidence": 0}]
    assert out["bb-metadata"]["class-map"] == {"1": "Dog"}  # only classes that occur


def test_a_worker_contributes_at_most_one_box_to_a_cluster():
    out = detect(boxes("w1", ("Cat", 0, 0, 100, 100), ("Cat", 2, 2, 100, 100)),
                 boxes("w2", ("Cat", 1, 1, 100, 100)))
    assert len(out["bb"]["annotations"]) == 2


def test_zero_boxes_give_the_real_empty_line_shape():
    real = json.loads(real_file("cat_output.manifest").read_text().splitlines()[0])
    out = consolidate(TaskType.bounding_box, label_attribute="cat-ground-truth", labels=["Cat"],
                      job_name="cat-ground-truth", answers=[boxes("w1")], now=NOW)
    ours = json.loads(output_line({"source-ref": real["source-ref"]}, out))
    assert ours == {**real, "cat-ground-truth-metadata": {
        **real["cat-ground-truth-metadata"], "creation-date": "2026-01-02T03:04:05.678901"}}


def test_box_line_has_the_real_box_line_shape():
    real = json.loads(real_file("cat_output.manifest").read_text().splitlines()[2])
    out = consolidate(TaskType.bounding_box, label_attribute="cat-ground-truth", labels=["Cat"],
                      job_name="cat-ground-truth", now=NOW,
                      answers=[boxes(w, ("Cat", 239, 162, 284, 205), ("Cat", 221, 107, 166, 124))
                               for w in ("w1", "w2")])
    ours = json.loads(output_line({"source-ref": real["source-ref"]}, out))
    assert shape(ours) == shape(real)
    assert ours["cat-ground-truth"]["annotations"] == real["cat-ground-truth"]["annotations"]
    assert ours["cat-ground-truth"]["image_size"] == real["cat-ground-truth"]["image_size"]


def test_a_custom_named_box_element_is_found_by_shape():
    answer = boxes("w1", ("Cat", 1, 1, 5, 5), name="annotations")
    answer = Answer(answer.worker_id, {**answer.content, "boxTokens": "[]"})
    assert detect(answer)["bb"]["annotations"][0]["class_id"] == 0


# --- named entities ----------------------------------------------------------------------------

ENTITY_LABELS = ["Date", "Person", "Location"]


def spans(worker: str, *marked: tuple) -> Answer:
    return Answer(worker, {"crowd-entity-annotation": {"entities": [
        {"label": label, "startOffset": start, "endOffset": end} for label, start, end in marked]}})


def recognise(*answers: Answer) -> dict:
    return consolidate(TaskType.named_entity, label_attribute="ner", labels=ENTITY_LABELS,
                       job_name="j", answers=list(answers), now=NOW)


def test_overlapping_spans_cluster_with_mode_boundaries_and_majority_label():
    out = recognise(spans("w1", ("Date", 16, 22), ("Person", 0, 3)),
                    spans("w2", ("Date", 16, 26), ("Person", 0, 3)),
                    spans("w3", ("Person", 16, 22)))
    assert out["ner"] == {"annotations": {
        "labels": [{"label": "Date"}, {"label": "Person"}, {"label": "Location"}],
        "entities": [{"label": "Date", "startOffset": 16, "endOffset": 22},
                     {"label": "Person", "startOffset": 0, "endOffset": 3}]}}
    # (3/3 workers) x mean Jaccard (0.6, 1.0, 0.6); (2/3 workers) x 1.0
    assert out["ner-metadata"]["entities"] == [{"confidence": 0.73}, {"confidence": 0.67}]
    assert out["ner-metadata"]["type"] == "groundtruth/text-span"


def test_spans_at_half_overlap_or_less_stay_apart():
    out = recognise(spans("w1", ("Date", 0, 10)), spans("w2", ("Date", 5, 15)))  # Jaccard 1/3
    assert len(out["ner"]["annotations"]["entities"]) == 2
    out = recognise(spans("w1", ("Date", 0, 4)), spans("w2", ("Date", 0, 2)))  # Jaccard 0.5
    assert len(out["ner"]["annotations"]["entities"]) == 2


def test_label_ties_go_to_the_earliest_label_and_boundaries_to_the_lower_median():
    out = recognise(spans("w1", ("Location", 10, 20)), spans("w2", ("Date", 11, 21)))
    assert out["ner"]["annotations"]["entities"] == [
        {"label": "Date", "startOffset": 10, "endOffset": 20}]


def test_one_worker_keeps_its_spans_in_its_order_with_confidence_zero():
    out = recognise(spans("w1", ("Date", 16, 22), ("Person", 0, 3), ("Person", 0, 3)))
    assert [e["startOffset"] for e in out["ner"]["annotations"]["entities"]] == [16, 0, 0]
    assert out["ner-metadata"]["entities"] == [{"confidence": 0}] * 3


def test_no_entities_give_an_empty_list():
    out = recognise(spans("w1"), Answer("w2", {}))
    assert out["ner"]["annotations"]["entities"] == [] and out["ner-metadata"]["entities"] == []


# --- custom ------------------------------------------------------------------------------------


def test_custom_keeps_every_answer_as_a_json_string():
    contents = [{"answer": "Paris, \"France\"\nyes"}, {"answer": "Zürich", "n": 2}]
    answers = [Answer(f"private.us-east-1.w{n}", c) for n, c in enumerate(contents)]
    out = consolidate(TaskType.custom, label_attribute="answer", labels=[], job_name="j",
                      answers=answers, now=NOW,
                      worker_response_ref="s3://b/out/j/annotations/worker-response/iteration-1/0/x.json")
    kept = out["answer"]["annotationsFromAllWorkers"]
    assert [k["workerId"] for k in kept] == ["private.us-east-1.w0", "private.us-east-1.w1"]
    assert all(isinstance(k["annotationData"]["content"], str) for k in kept)
    assert [json.loads(k["annotationData"]["content"]) for k in kept] == contents
    assert out["answer-metadata"] == {
        "type": "groundtruth/custom", "job-name": "labeling-job/j", "human-annotated": "yes",
        "creation-date": "2026-01-02T03:04:05.678901",
        "worker-response-ref": "s3://b/out/j/annotations/worker-response/iteration-1/0/x.json"}
    no_ref = consolidate(TaskType.custom, label_attribute="answer", labels=[], job_name="j",
                         answers=answers, now=NOW)
    assert "worker-response-ref" not in no_ref["answer-metadata"]


# --- failures and batches ----------------------------------------------------------------------


def test_failed_metadata_has_the_real_expired_line_shape():
    real = json.loads(real_file("ssie_expired_line2.jsonl").read_text().splitlines()[0])
    reason = real["mock_job_name-metadata"]["failure-reason"]
    ours = failed_metadata("mock_job_name", reason, retry_count=1)
    assert ours == {"mock_job_name-metadata": real["mock_job_name-metadata"]}
    line = json.loads(output_line({"source-ref": "s3://b/x.pdf"}, ours))
    assert "mock_job_name" not in line
    assert {"type", "job-name"}.isdisjoint(line["mock_job_name-metadata"])


def test_objects_without_answers_cannot_be_consolidated():
    for task_type in TaskType:
        with pytest.raises(ConsolidationError, match="no answers"):
            consolidate(task_type, label_attribute="a", labels=["x"], job_name="j", answers=[],
                        now=NOW)


def test_a_batch_of_boxes_consolidates_each_object_and_names_a_bad_one():
    items = {"0": [boxes("w1", ("Cat", 0, 0, 5, 5))], "1": [boxes("w1")]}
    out = consolidate_batch(TaskType.bounding_box, label_attribute="bb", labels=["Cat"],
                            job_name="j", items=items, now=NOW)
    assert [len(out[k]["bb"]["annotations"]) for k in ("0", "1")] == [1, 0]
    with pytest.raises(ConsolidationError, match=r"^object '1': worker 'w1': label 'Dog'"):
        consolidate_batch(TaskType.bounding_box, label_attribute="bb", labels=["Cat"],
                          job_name="j", now=NOW,
                          items={"0": items["0"], "1": [boxes("w1", ("Dog", 0, 0, 5, 5))]})
