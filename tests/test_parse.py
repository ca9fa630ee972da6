"""Output manifests and worker responses -> LabeledObject: real GT files, reference §4, gtrun's service."""

from __future__ import annotations

import functools
import json
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import runner.collect.parse as parse_module
from runner.collect.parse import (
    Parser,
    ParseStats,
    StagedAnswers,
    attach_answers,
    detect,
    identify,
    label_attributes,
    parse_line,
    read_manifest,
    read_worker_responses,
    s3_lister,
    stage_worker_responses,
    task_type_of,
    worker_response_answers,
    worker_response_files,
)
from runner.collect.records import Box, LabeledObject, Span, Status, WorkerAnswer
from runner.errors import GtrunError, ManifestError, StoreError
from runner.schema import OnError, TaskType
from runner.service.server import Service
from tests.moto_fixtures import aws_env, moto_server, reset_moto  # noqa: F401
from tests.service_helpers import Worker, put_job, sagemaker

REAL = Path(__file__).resolve().parent / "data" / "real-outputs"


def real_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (REAL / name).read_text().splitlines() if x.strip()]


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def parse(line: dict[str, Any], attribute: str, task_type: TaskType | None = None,
          labels: list[str] | None = None, line_no: int = 1, **kw: Any) -> LabeledObject:
    return parse_line(line, line_no=line_no, attribute=attribute, task_type=task_type, labels=labels,
                      **kw)


# -- real Ground Truth output ---------------------------------------------------------------------


def test_real_bounding_boxes_first_line_has_zero_boxes(tmp_path):
    stats = ParseStats()
    objs = list(read_manifest(REAL / "cat_output.manifest", attribute=None, task_type=None, labels=None,
                              stats=stats))
    assert [o.task_type for o in objs] == [TaskType.bounding_box] * 4
    assert [o.object_id for o in objs] == ["0", "1", "2", "3"]
    assert [o.line_no for o in objs] == [1, 2, 3, 4]
    first, _, third, _ = objs
    assert first.status is Status.labeled and first.boxes == ()
    assert first.image_size == (601, 453, 3)  # key order width, depth, height in the file
    assert third.boxes == (Box("Cat", 239, 162, 284, 205, 0.09), Box("Cat", 221, 107, 166, 124, 0.09))
    assert first.inputs == {"source-ref": "s3://devopstar-ground-truth-input/input-images/0001.jpg"}
    assert first.job_name == "cat-ground-truth" and first.attribute == "cat-ground-truth"
    assert first.metadata["creation-date"] == "2019-01-29T13:29:11.798957"
    assert stats == ParseStats(lines=4, labeled=4)


def test_real_image_classification_label_is_an_int_named_by_class_name():
    (line,) = real_lines("ic_output_line1.jsonl")
    assert detect(line, None) == ("birds-open-images-clone", TaskType.text_classification)
    obj = parse(line, "birds-open-images-clone")
    assert line["birds-open-images-clone"] == 9 == obj.value  # the class index, as the line has it
    assert (obj.label, obj.confidence, obj.status) == ("Canary", 0.95, Status.labeled)
    assert obj.source_ref.endswith("0273f487d52c16d2.jpg") and obj.text is None


def test_label_value_as_a_string_index_as_in_the_dg():
    line = {"source": "nice", "s": "1", "s-metadata": {"confidence": 0.5, "type": "groundtruth/text-classification",
                                                      "job-name": "labeling-job/s"}}
    obj = parse(line, "s", labels=["Positive", "Negative"])
    assert (obj.label, obj.confidence, obj.text) == ("Negative", 0.5, "nice")
    line["s-metadata"]["class-name"] = "Negative"
    assert parse(line, "s").label == "Negative"  # class-name alone is enough


SENTIMENT_META = {"confidence": 0.9, "type": "groundtruth/text-classification", "job-name": "labeling-job/s"}


def test_labels_given_must_name_each_class_index_as_the_lines_do(tmp_path):
    # Ground Truth's class index is the label config's order: a list that names an index otherwise
    # than the line's class-name or class-map is not the job's, whichever of the two names wins
    line = {"source": "great", "s": 0, "s-metadata": {**SENTIMENT_META, "class-name": "Positive"}}
    assert parse(line, "s", labels=["Positive", "Negative"]).label == "Positive"
    with pytest.raises(ManifestError, match=r"^line 3: label index 0 is 'Positive' in the line \(class-name\), "
                                            r"but 'Negative' in the labels given\n  hint: .*label config"):
        parse(line, "s", labels=["Negative", "Positive", "Neutral"], line_no=3)
    later = {**line, "s": 2, "s-metadata": {**SENTIMENT_META, "class-name": "Neutral"}}
    with pytest.raises(ManifestError, match=r"^line 4: label index 2 is 'Neutral' in the line \(class-name\), "
                                            r"beyond the 2 labels given"):
        parse(later, "s", labels=["Positive", "Negative"], line_no=4)
    multi = {"source": "x", "t": [1, 0], "t-metadata": {"class-map": {"1": "sad", "0": "happy"},
                                                      "type": "groundtruth/text-classification-multilabel"}}
    assert parse(multi, "t", labels=["happy", "sad"]).labels == ("sad", "happy")
    with pytest.raises(ManifestError, match=r"^line 1: label index 1 is 'sad' in the line \(class-map\), but "
                                            r"'happy' in the labels given"):
        parse(multi, "t", labels=["sad", "happy"])
    (cat,) = real_lines("cat_output.manifest")[1:2]
    with pytest.raises(ManifestError, match=r"^line 1: box 0: label index 0 is 'Cat' in the line \(class-map\), "
                                            r"but 'Dog' in the labels given"):
        parse(cat, "cat-ground-truth", labels=["Dog", "Cat"])
    # not a malformed line to skip: the list is wrong for every line
    path = write_lines(tmp_path / "out.manifest", [line, later])
    with pytest.raises(ManifestError, match="^line 1: label index 0 is 'Positive'"):
        list(read_manifest(path, attribute=None, task_type=None, labels=["Negative", "Positive", "Neutral"],
                           on_error=OnError.skip))


def test_real_custom_line_keeps_its_inputs_including_a_field_named_metadata():
    (line,) = real_lines("ssie_output_line1.jsonl")
    assert label_attributes(line) == ["mock_job_name"]  # "metadata" is an input, not a label attribute
    assert detect(line, None) == ("mock_job_name", TaskType.custom)
    obj = parse(line, "mock_job_name")
    assert obj.status is Status.labeled and obj.task_type is TaskType.custom
    assert set(obj.inputs) == {"source-ref", "page", "metadata"}
    assert obj.job_name == "mock_job_name"  # no "labeling-job/" prefix in this file
    assert obj.answers == ()  # the value is an annotation-ref, not annotationsFromAllWorkers
    assert obj.value == {"annotation-ref": "s3://bucket/annotations/file1-1-616696e2-ann.json"}  # kept as it is


def test_real_failed_object_has_no_type_no_job_name_and_no_value():
    (line,) = real_lines("ssie_expired_line2.jsonl")
    assert label_attributes(line) == ["mock_job_name"]
    with pytest.raises(ManifestError, match=r"has no type \(a failed object\)"):
        detect(line, None)
    with pytest.raises(ManifestError, match=r"^line 2: .*pass the task type"):
        parse(line, "mock_job_name", line_no=2)
    obj = parse(line, "mock_job_name", TaskType.custom, line_no=2)
    assert obj.status is Status.failed and obj.job_name is None and obj.object_id == "1" and obj.value is None
    assert obj.failure_reason.startswith("ClientError: Annotation tasks expired.")
    assert set(obj.inputs) == {"source-ref", "page", "metadata", "primary-annotation-ref",
                               "secondary-annotation-ref"}


def test_a_failed_line_before_any_labeled_one_gets_the_task_type_of_the_later_lines(tmp_path):
    path = write_lines(tmp_path / "out.manifest", real_lines("ssie_expired_line2.jsonl")
                       + real_lines("ssie_output_line1.jsonl"))
    parser = Parser()
    objs = list(parser.read(path))
    assert [(o.status, o.task_type, o.object_id) for o in objs] == [
        (Status.failed, TaskType.custom, "0"), (Status.labeled, TaskType.custom, "1")]
    assert parser.stats.summary() == "2 lines: 1 labeled, 1 failed, 0 unlabeled, 0 skipped"
    only_failed = write_lines(tmp_path / "failed.manifest", real_lines("ssie_expired_line2.jsonl"))
    with pytest.raises(ManifestError, match="without a type.*\n  hint: pass the task type"):
        list(read_manifest(only_failed, attribute=None, task_type=None, labels=None))
    got = list(read_manifest(only_failed, attribute=None, task_type=TaskType.custom, labels=None))
    assert got[0].status is Status.failed


def chained_line() -> dict[str, Any]:
    """A bounding-box line that a later classification job labeled too (two real lines merged)."""
    line = real_lines("cat_output.manifest")[1]
    ic = real_lines("ic_output_line1.jsonl")[0]
    line.update({k: v for k, v in ic.items() if k.startswith("birds-open-images-clone")})
    return line


def test_chained_jobs_several_label_attributes_on_one_line(tmp_path):
    line = chained_line()
    assert label_attributes(line) == ["cat-ground-truth", "birds-open-images-clone"]
    with pytest.raises(ManifestError, match="several label attributes: 'cat-ground-truth', "
                                            "'birds-open-images-clone'\n  hint: .*--label-attribute"):
        detect(line, None)
    assert detect(line, "cat-ground-truth") == ("cat-ground-truth", TaskType.bounding_box)
    assert detect(line, "birds-open-images-clone") == ("birds-open-images-clone",
                                                       TaskType.text_classification)
    with pytest.raises(ManifestError, match="'nope' is not on the line"):
        detect(line, "nope")
    boxes = parse(line, "cat-ground-truth")
    label = parse(line, "birds-open-images-clone")
    assert boxes.inputs == label.inputs == {"source-ref": line["source-ref"]}  # both attributes gone
    assert len(boxes.boxes) == 1 and label.label == "Canary"
    path = write_lines(tmp_path / "chained.manifest", [line])
    with pytest.raises(ManifestError, match="^line 1: several label attributes"):
        list(read_manifest(path, attribute=None, task_type=None, labels=None, on_error=OnError.skip))
    (obj,) = read_manifest(path, attribute="birds-open-images-clone", task_type=None, labels=None)
    assert obj.label == "Canary"


def test_identify_reads_the_attribute_and_type_off_the_first_lines_that_tell_them():
    failed, labeled = real_lines("ssie_expired_line2.jsonl")[0], real_lines("ssie_output_line1.jsonl")[0]
    lines = [json.dumps(x) for x in (failed, labeled)]
    assert identify(lines) == ("mock_job_name", TaskType.custom)  # the type comes from line 2
    cat = [json.dumps(x) for x in real_lines("cat_output.manifest")]
    assert identify(cat) == ("cat-ground-truth", TaskType.bounding_box)
    assert identify(cat, task_type=TaskType.bounding_box) == ("cat-ground-truth", TaskType.bounding_box)
    with pytest.raises(ManifestError, match="^line 1: .*'groundtruth/object-detection' is not a custom task"):
        identify(cat, task_type=TaskType.custom)  # a given type is checked against the metadata's
    with pytest.raises(ManifestError, match=r"without a type.*\n  hint: pass the task type \(--task-type\)"):
        identify(lines[:1])
    with pytest.raises(ManifestError, match="^line 1: several label attributes.*\n  hint: .*--label-attribute"):
        identify([json.dumps(chained_line())])
    assert identify([json.dumps(chained_line())], attribute="birds-open-images-clone") == (
        "birds-open-images-clone", TaskType.text_classification)
    with pytest.raises(ManifestError, match="no lines .*\n  hint: pass them"):
        identify(["", "  "])
    # a given attribute no line has: its name is what to check first
    with pytest.raises(ManifestError, match=r"^4 lines, none with label attribute 'cat-groundtruth' "
                                            r"\(no 'cat-groundtruth-metadata'\)\n  hint: check the label attribute's "
                                            r"name \(--label-attribute\)"):
        identify(cat, attribute="cat-groundtruth")
    with pytest.raises(ManifestError, match="^line 1: not JSON"):
        identify(["{not json", *cat])
    assert identify(["{not json", *cat], on_error=OnError.skip) == ("cat-ground-truth", TaskType.bounding_box)


def test_a_field_ending_in_metadata_without_gt_keys_is_an_input():
    line = {"source": "x", "exif-metadata": {"camera": "x100"}, "s": 0,
            "s-metadata": {"class-name": "a", "type": "groundtruth/text-classification"}}
    assert label_attributes(line) == ["s"]
    assert parse(line, "s").inputs == {"source": "x", "exif-metadata": {"camera": "x100"}}


def consolidation_content() -> list[dict[str, Any]]:
    return json.loads((REAL / "ssie_consolidation_request.json").read_text())[0]["annotations"]


def test_custom_answers_are_json_strings_inside_json():
    annotations = consolidation_content()
    assert isinstance(annotations[0]["annotationData"]["content"], str)
    line = {"source-ref": "s3://b/doc.pdf", "docs": {"annotationsFromAllWorkers": annotations},
            "docs-metadata": {"type": "groundtruth/custom", "job-name": "labeling-job/docs",
                              "human-annotated": "yes", "creation-date": "2021-11-18T02:20:00.000000"}}
    obj = parse(line, "docs")
    (answer,) = obj.answers
    assert answer.worker_id == "private.us-west-2.5666587b866afce7" and answer.seconds is None
    assert set(answer.content) >= {"document"}
    assert json.loads(answer.content["document"])["Version"] == "2021-04-30"  # the template's own string
    assert obj.workers == 1 and obj.boxes == ()


def test_real_worker_response_file(tmp_path):
    folder = tmp_path / "out" / "birds" / "annotations" / "worker-response" / "iteration-1" / "153"
    folder.mkdir(parents=True)
    shutil.copy(REAL / "ic_worker_response_153.json", folder / "2019-04-18_16:12:29.json")
    responses = read_worker_responses(tmp_path / "out", "birds")
    assert list(responses) == ["153"]
    answers = responses["153"]
    assert len(answers) == 5 and {a.content["crowd-image-classifier"]["label"] for a in answers} == {"Duck"}
    assert answers[0] == WorkerAnswer("public.us-east-1.PVT2UWMRMJM2P4TXAMYIB6ZZJE",
                                      {"crowd-image-classifier": {"label": "Duck"}}, None)  # 2019: no times
    assert read_worker_responses(tmp_path / "out" / "birds") == responses
    assert read_worker_responses(tmp_path / "out", "other-job") == {}


# -- reference §4.2, line for line, every task type ----------------------------------------------------


def test_multilabel_indices_class_map_and_confidence_map():
    line = {"source": "text", "t": [1, 0], "t-metadata": {
        "job-name": "labeling-job/t", "class-map": {"1": "sad", "0": "happy"},
        "confidence-map": {"1": 0.95, "0": 0.77}, "type": "groundtruth/text-classification-multilabel",
        "human-annotated": "yes", "creation-date": "2020-02-20T21:36:25.000201"}}
    obj = parse(line, "t")
    assert obj.task_type is TaskType.text_multilabel and obj.labels == ("sad", "happy")
    assert obj.confidences == {"sad": 0.95, "happy": 0.77} and obj.job_name == "t"
    assert obj.label is None and obj.confidence is None
    image = {"source-ref": "s3://b/i.jpg", "bg": [6, 0], "bg-metadata": {
        "class-map": {"6": "clouds", "0": "canyon"}, "confidence-map": {"6": 0.0, "0": 0.0},
        "type": "groundtruth/image-classification-multilabel"}}
    assert parse(image, "bg").labels == ("clouds", "canyon")
    none = {"source": "x", "t": [], "t-metadata": {"class-map": {}, "confidence-map": {},
                                                 "type": "groundtruth/text-classification-multilabel"}}
    assert parse(none, "t").labels == ()
    no_map = {"source": "x", "t": ["2"], "t-metadata": {"type": "groundtruth/text-classification-multilabel"}}
    assert parse(no_map, "t", labels=["a", "b", "c"]).labels == ("c",)


def test_bounding_box_line_of_the_reference():
    line = {"source-ref": "s3://b/img.png",
            "bb": {"image_size": [{"width": 500, "height": 400, "depth": 3}],
                   "annotations": [{"class_id": 0, "left": 111, "top": 134, "width": 61, "height": 128}]},
            "bb-metadata": {"objects": [{"confidence": 0.8}], "class-map": {"0": "dog"},
                            "type": "groundtruth/object-detection", "human-annotated": "yes",
                            "creation-date": "2018-10-18T22:18:13.527256", "job-name": "labeling-job/bb"}}
    obj = parse(line, "bb")
    assert obj.boxes == (Box("dog", 111.0, 134.0, 61.0, 128.0, 0.8),) and obj.image_size == (500, 400, 3)
    adjusted = {**line, "bb-metadata": {**line["bb-metadata"], "adjustment-status": "adjusted"}}
    assert parse(adjusted, "bb").metadata["adjustment-status"] == "adjusted"


def test_named_entities_overlapping_spans_kept_with_their_confidences():
    text = "Meet Ada Lovelace at Somerset House on 10 Dec 1815."
    line = {"source": text, "ner": {"annotations": {
        "labels": [{"label": "Person", "shortDisplayName": "per"}, {"label": "Place"}, {"label": "Date"}],
        "entities": [{"label": "Person", "startOffset": 5, "endOffset": 17},
                     {"label": "Person", "startOffset": 9, "endOffset": 17},  # overlaps the first
                     {"label": "Place", "startOffset": 21, "endOffset": 35},
                     {"label": "Date", "startOffset": 39, "endOffset": 50}]}},
            "ner-metadata": {"job-name": "labeling-job/ner", "type": "groundtruth/text-span",
                             "creation-date": "2020-10-29T00:40:39.398470", "human-annotated": "yes",
                             "entities": [{"confidence": 0.5}, {"confidence": 0}, {"confidence": 1},
                                          {"confidence": 0.25}]}}
    obj = parse(line, "ner")
    assert obj.entities == (Span("Person", 5, 17, 0.5), Span("Person", 9, 17, 0.0), Span("Place", 21, 35, 1.0),
                            Span("Date", 39, 50, 0.25))
    assert [text[s.start:s.end] for s in obj.entities] == ["Ada Lovelace", "Lovelace", "Somerset House",
                                                           "10 Dec 1815"]
    emoji = {"source": "\U0001f4b8 Ada", "ner": {"annotations": {"entities": [
        {"label": "Person", "startOffset": 2, "endOffset": 5}]}},
        "ner-metadata": {"type": "groundtruth/text-span", "entities": [{"confidence": 0}]}}
    span = parse(emoji, "ner").entities[0]
    assert emoji["source"][span.start:span.end] == "Ada"  # code points, not UTF-16 units


def test_groundtruth_custom_spelling_and_recipe_lambda_value():
    line = {"source": "a", "c": {"annotationsFromAllWorkers": [
        {"workerId": "w1", "annotationData": {"content": json.dumps({"answer": "yes"})}},
        {"workerId": "w2", "annotationData": {"content": json.dumps({"answer": "no"})}},
        {"workerId": "w3", "annotationData": {"s3Uri": "s3://b/answer.json"}}]},  # by reference: left out
        "c-metadata": {"type": "groundTruth/custom", "job_name": "c", "creation_date": "2020-01-01"}}
    obj = parse(line, "c")
    assert obj.task_type is TaskType.custom and obj.job_name == "c"
    assert [(a.worker_id, a.content) for a in obj.answers] == [("w1", {"answer": "yes"}), ("w2", {"answer": "no"})]
    assert task_type_of("GROUNDTRUTH/TEXT-SPAN") is TaskType.named_entity
    with pytest.raises(ManifestError, match="'groundtruth/semantic-segmentation' is not one gtrun collects"):
        task_type_of("groundtruth/semantic-segmentation")


def receipt_answer(boxes: list[tuple[str, int, int, int, int, list[int]]]) -> dict[str, Any]:
    """What gtrun's receipts_ner.liquid submits."""
    bounding = [{"label": b[0], "left": b[1], "top": b[2], "width": b[3], "height": b[4]} for b in boxes]
    tokens = [{**box, "tokens": b[5], "text": " ".join(f"w{t}" for t in b[5])}
              for box, b in zip(bounding, boxes, strict=True)]
    return {"annotations": {"boundingBoxes": bounding, "inputImageProperties": {"width": 360, "height": 448}},
            "boxTokens": json.dumps(tokens)}


def receipt_line(*answers: dict[str, Any]) -> dict[str, Any]:
    return {"source-ref": "s3://b/receipt-001.png", "receipt_id": 1,
            "receipt-entities": {"annotationsFromAllWorkers": [
                {"workerId": f"private.us-east-1.w{i}",
                 "annotationData": {"content": json.dumps(a, separators=(",", ":"))}}
                for i, a in enumerate(answers)]},
            "receipt-entities-metadata": {
                "type": "groundtruth/custom", "job-name": "labeling-job/receipts", "human-annotated": "yes",
                "creation-date": "2026-01-01T00:00:00.000000",
                "worker-response-ref": "s3://b/out/receipts/annotations/worker-response/iteration-1/41/"
                                       "2026-01-01_00:00:00.json"}}


TOTAL = ("total", 250, 400, 60, 20, [30, 31])
VENDOR = ("vendor", 20, 10, 200, 30, [0, 1])
DATE = ("date", 20, 50, 80, 15, [4])


def test_bounding_box_ner_boxes_carry_their_tokens():
    obj = parse(receipt_line(receipt_answer([VENDOR, TOTAL])), "receipt-entities", line_no=42)
    assert obj.object_id == "41"  # from worker-response-ref, not the line index
    assert obj.boxes == (Box("vendor", 20, 10, 200, 30, tokens=(0, 1)), Box("total", 250, 400, 60, 20, tokens=(30, 31)))
    assert obj.image_size == (360, 448, 3) and obj.workers == 1
    assert set(obj.answers[0].content) == {"annotations", "boxTokens"}


def test_bounding_box_ner_takes_the_answer_that_agrees_most_with_the_others():
    odd = receipt_answer([DATE])
    usual = receipt_answer([VENDOR, TOTAL])
    close = receipt_answer([("vendor", 22, 11, 198, 30, [0, 1]), TOTAL])
    obj = parse(receipt_line(odd, usual, close), "receipt-entities")
    assert [b.label for b in obj.boxes] == ["vendor", "total"] and obj.boxes[0].left == 20  # `usual`, earlier
    two = parse(receipt_line(odd, usual), "receipt-entities")
    assert [b.label for b in two.boxes] == ["date"]  # two workers: no majority, the first worker's


def test_a_custom_crowd_bounding_box_without_box_tokens_gives_boxes_without_tokens():
    answer = {"box": {"boundingBoxes": [{"label": "cat", "left": 1, "top": 2, "width": 3, "height": 4}],
                      "inputImageProperties": {"width": 10, "height": 20}}, "note": "ok"}
    obj = parse(receipt_line(answer), "receipt-entities")
    assert obj.boxes == (Box("cat", 1, 2, 3, 4),) and obj.image_size == (10, 20, 3)
    answer["box"]["boundingBoxes"][0]["width"] = "inf"  # no JSON number in the dataset
    with pytest.raises(ManifestError, match=r"boundingBoxes\[0\]: left, top, width, height \(1.0, 2.0, inf, 4.0\) are not all "):
        parse(receipt_line(answer), "receipt-entities")


def test_a_line_without_the_attribute_is_unlabeled():
    line = {"source": "not labeled yet", "id": 7}
    obj = parse(line, "s", TaskType.text_classification, line_no=8)
    assert (obj.status, obj.object_id, obj.inputs, obj.label) == (Status.unlabeled, "7", line, None)
    with pytest.raises(ManifestError, match="^line 8: .*cannot tell the task type"):
        parse(line, "s", line_no=8)


def test_worker_response_times_give_seconds():
    record = {"answers": [
        {"workerId": "a", "answerContent": {"x": 1}, "timeSpentInSeconds": 12.5,
         "acceptanceTime": "2020-01-01T00:00:00.000Z", "submissionTime": "2020-01-01T00:01:00.000Z"},
        {"workerId": "b", "answerContent": {"x": 2},
         "acceptanceTime": "2020-01-01T00:00:00.250Z", "submissionTime": "2020-01-01T00:00:30.750Z"}]}
    assert [a.seconds for a in worker_response_answers(record, where="f")] == [12.5, 30.5]
    with pytest.raises(ManifestError, match=r"^f: not a worker-response file"):
        worker_response_answers({"answer": []}, where="f")


def test_the_latest_iteration_wins_and_answers_attach_by_object_id(tmp_path):
    base = tmp_path / "job" / "annotations" / "worker-response"

    def put(iteration: int, object_id: str, name: str, workers: list[str]) -> None:
        folder = base / f"iteration-{iteration}" / object_id
        folder.mkdir(parents=True, exist_ok=True)
        answers = [{"workerId": w, "answerContent": {"crowd-classifier": {"label": "a"}}} for w in workers]
        (folder / name).write_text(json.dumps({"answers": answers}))

    put(1, "0", "2020-01-01_00:00:00.json", ["w1"])
    put(1, "1", "2020-01-01_00:00:00.json", ["old"])
    put(2, "1", "2020-01-02_00:00:00.json", ["w1", "w2"])
    put(1, "10", "2020-01-01_00:00:00.json", ["w3"])
    responses = read_worker_responses(tmp_path / "job")
    assert list(responses) == ["0", "1", "10"]
    assert [a.worker_id for a in responses["1"]] == ["w1", "w2"]
    meta = {"class-name": "a", "confidence": 0, "type": "groundtruth/text-classification"}
    lines = [{"source": str(i), "s": 0, "s-metadata": meta} for i in range(3)]
    objs = list(attach_answers(Parser().parse_lines(json.dumps(x) for x in lines), responses))
    assert [o.workers for o in objs] == [1, 2, 0]


def test_staged_answers_are_found_in_any_order_with_memory_flat_in_order(tmp_path, monkeypatch):
    base = tmp_path / "job" / "annotations" / "worker-response" / "iteration-1"
    ids = [str(i) for i in range(0, 120) if i % 7]  # objects 0, 7, 14, ... have no file
    for i in ids:
        (base / i).mkdir(parents=True)
        answers = [{"workerId": f"w{k}", "answerContent": {"crowd-classifier": {"label": f"{i}:{k}"}},
                    "timeSpentInSeconds": k + 0.5} for k in range(1 + int(i) % 3)]
        (base / i / "2020-01-01_00:00:00.json").write_text(json.dumps({"answers": answers}))
    for i in ids[::5]:  # a later iteration of some objects: its file is the one read
        (base.parent / "iteration-2" / i).mkdir(parents=True)
        (base.parent / "iteration-2" / i / "2020-01-01_00:00:00.json").write_text(json.dumps({"answers": []}))
    files = list(worker_response_files(tmp_path / "job"))
    assert [object_id for object_id, _ in files] == ids  # object order: "2" before "10"
    assert [object_id for object_id, uri in files if "/iteration-2/" in uri] == ids[::5]
    monkeypatch.setattr(parse_module, "LISTING_CHUNK", 7)  # listed in sorted runs of 7, merged
    assert list(worker_response_files(tmp_path / "job", folder=tmp_path)) == files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".listing")] == []
    assert stage_worker_responses(iter(files), tmp_path / "answers") == len(ids)
    expected = read_worker_responses(tmp_path / "job")
    wanted = [str(i) for i in range(125)]
    with StagedAnswers(tmp_path / "answers") as staged:  # the manifest's order: one pass, no index
        assert [staged.get(i) for i in wanted] == [expected.get(i) for i in wanted]
        assert staged.offsets is None
        assert staged.get("124") is None and staged.get("117") == expected["117"]  # back: an index from then on
        assert staged.offsets is not None
    shuffled = [*wanted, "5", "5", "3", "100", "9"]
    random.Random(4).shuffle(shuffled)
    with StagedAnswers(tmp_path / "answers") as staged:
        assert [staged.get(i) for i in shuffled] == [expected.get(i) for i in shuffled]
    with StagedAnswers(tmp_path / "answers") as staged:  # a repeated id, found or not
        assert [staged.get(i) for i in ("1", "1", "7", "7", "8")] == [expected.get(i) for i in ("1", "1", "7", "7", "8")]
        assert staged.offsets is None


def test_staging_answers_says_how_many_objects_it_has_read(tmp_path):
    base = tmp_path / "job" / "annotations" / "worker-response" / "iteration-1"
    body = json.dumps({"answers": [{"workerId": "w", "answerContent": {"crowd-classifier": {"label": "a"}}}]})
    for i in range(2100):
        (base / str(i)).mkdir(parents=True)
        (base / str(i) / "2020-01-01_00:00:00.json").write_text(body)
    heard: list[int] = []
    count = stage_worker_responses(worker_response_files(tmp_path / "job"), tmp_path / "answers", on_object=heard.append)
    assert count == 2100 and heard == [1000, 2000]
    assert len((tmp_path / "answers").read_text().splitlines()) == 2100


def test_attached_answers_replace_a_custom_labels_and_choose_boxes_again():
    (obj,) = Parser().parse_lines([json.dumps(receipt_line())])  # the label kept no answers
    assert obj.object_id == "41" and obj.answers == () and obj.boxes == ()
    files = {"41": [WorkerAnswer("w1", receipt_answer([TOTAL]), 8.0)]}
    (done,) = attach_answers([obj], files)
    assert done.workers == 1 and done.answers[0].seconds == 8.0
    assert done.boxes == (Box("total", 250, 400, 60, 20, tokens=(30, 31)),)


# -- malformed lines ------------------------------------------------------------------------------------

GOOD = {"source": "ok", "s": 0, "s-metadata": {"class-name": "a", "type": "groundtruth/text-classification"}}
BOX_META = {"type": "groundtruth/object-detection", "objects": [{"confidence": 0.5}]}
BOXES = {"annotations": [{"class_id": 0, "left": 1, "top": 2, "width": 3, "height": 4}], "image_size": []}


@pytest.mark.parametrize(("line", "attribute", "labels", "problem"), [
    ({"source": "x", "s": 3, "s-metadata": {"type": "groundtruth/text-classification"}}, "s", ["a", "b"],
     "label index 3 is out of range for 2 labels"),
    ({"source": "x", "s": "two", "s-metadata": {"type": "groundtruth/text-classification"}}, "s", ["a"],
     "label value 'two' is not a class index"),
    ({"source": "x", "s": 0, "s-metadata": {"type": "groundtruth/text-classification"}}, "s", None,
     "no class-name in the metadata and no labels"),
    ({"source-ref": "s3://b/i", "bb": BOXES, "bb-metadata": BOX_META}, "bb", None,
     "box 0: class 0 is not in the metadata \\(no class-map\\), and no labels name it"),
    ({"source-ref": "s3://b/i", "bb": {**BOXES, "annotations": [{**BOXES["annotations"][0], "class_id": 2}]},
      "bb-metadata": BOX_META}, "bb", ["car", "bus"], "box 0: class 2 is not in the metadata \\(no class-map\\), and "
     "the labels given name classes 0 to 1$"),
    ({"source-ref": "s3://b/i", "bb": {**BOXES, "annotations": [{**BOXES["annotations"][0], "class_id": 1}]},
      "bb-metadata": BOX_META}, "bb", ["car"], "box 0: class 1 is not in the metadata \\(no class-map\\), and "
     "the one label given is class 0$"),
    ({"source-ref": "s3://b/i", "bb": {**BOXES, "annotations": [{**BOXES["annotations"][0], "left": "NaN"}]},
      "bb-metadata": BOX_META}, "bb", ["car"],
     "box 0: left, top, width, height \\(nan, 2.0, 3.0, 4.0\\) are not all finite numbers$"),
    ({"source-ref": "s3://b/i", "bb": {"annotations": [{"class_id": 0}]},
      "bb-metadata": {**BOX_META, "class-map": {"0": "dog"}}}, "bb", None, "box 0 is not \\{class_id, left"),
    ({"source": "x", "t": [0, 4], "t-metadata": {"type": "groundtruth/text-classification-multilabel",
                                               "class-map": {"0": "a"}}}, "t", None, "class 4 is not in class-map"),
    ({"source": "x", "n": {"annotations": {"entities": [{"label": "P", "startOffset": 5, "endOffset": 2}]}},
      "n-metadata": {"type": "groundtruth/text-span"}}, "n", None, "entity 0: offsets \\[5, 2\\) are not a span"),
    ({"source": "x", "n": {"entities": []}, "n-metadata": {"type": "groundtruth/text-span"}}, "n", None,
     "has no annotations.entities list"),
    ({"source": "x", "c": {"annotationsFromAllWorkers": [{"workerId": "w", "annotationData": {"content": "{no"}}]},
      "c-metadata": {"type": "groundtruth/custom"}}, "c", None,
     "annotationsFromAllWorkers\\[0\\]: content is not JSON"),
    ({"source": "x", "s": 0, "s-metadata": {"type": "groundtruth/semantic-segmentation"}}, "s", None,
     "is not one gtrun collects"),
    ({"source": "x", "s-metadata": {"type": "groundtruth/text-classification"}}, "s", None,
     "no 's' label value, and s-metadata has no failure-reason"),
    ({"source": "x", "s": 0, "s-metadata": {"class-name": "a", "type": "groundtruth/text-classification",
                                           "confidence": "high"}}, "s", None, "confidence 'high' is not a number"),
    ({"source-ref": "s3://b/i", "bb": {"annotations": [], "image_size": [{"width": float("inf"), "height": 4}]},
      "bb-metadata": BOX_META}, "bb", None, "image_size .* is not \\[\\{width, height, depth\\}\\]"),
])
def test_a_malformed_line_names_its_line_number(line, attribute, labels, problem):
    with pytest.raises(ManifestError, match=f"^line 7: .*{problem}"):
        parse(line, attribute, labels=labels, line_no=7)


def test_a_task_type_that_contradicts_the_metadata_is_an_error():
    with pytest.raises(ManifestError, match="^line 1: s-metadata: type .* is not a bounding_box task"):
        parse(GOOD, "s", TaskType.bounding_box)


def test_bad_json_stops_with_its_line_number_or_is_skipped_and_counted(tmp_path):
    lines = [GOOD, "{not json", GOOD, "[1, 2]", "",
             {"source": "x", "s": 9, "s-metadata": {"type": "groundtruth/text-classification"}}, GOOD]
    path = write_lines(tmp_path / "out.manifest", lines)
    with pytest.raises(ManifestError, match=r"^line 2: not JSON \(Expecting property name"):
        list(read_manifest(path, attribute=None, task_type=None, labels=["a", "b"]))
    stats = ParseStats()
    objs = list(read_manifest(path, attribute=None, task_type=None, labels=["a", "b"],
                              on_error=OnError.skip, stats=stats))
    assert [o.line_no for o in objs] == [1, 3, 7]
    assert [o.object_id for o in objs] == ["0", "2", "5"]  # the blank line 5 is no object
    assert (stats.lines, stats.labeled, stats.skipped_count) == (6, 3, 3)
    assert [n for n, _ in stats.skipped] == [2, 4, 6]
    assert stats.skipped[1][1] == "not a JSON object: [1, 2]" and "out of range for 2 labels" in stats.skipped[2][1]
    assert stats.summary() == "6 lines: 3 labeled, 0 failed, 0 unlabeled, 3 skipped"


def test_skipped_reasons_are_capped_but_all_counted(monkeypatch):
    monkeypatch.setattr("runner.collect.parse.MAX_SKIPPED_KEPT", 2)
    parser = Parser(task_type=TaskType.text_classification, on_error=OnError.skip)
    assert list(parser.parse_lines(["{"] * 5)) == []
    assert parser.stats.skipped_count == 5 and len(parser.stats.skipped) == 2


def test_errors_are_gtrun_errors_and_a_missing_file_is_a_store_error(tmp_path):
    assert issubclass(ManifestError, GtrunError)
    with pytest.raises(StoreError, match="cannot read it"):
        list(read_manifest(tmp_path / "none.manifest", attribute=None, task_type=None, labels=None))
    with pytest.raises(StoreError, match="needs a list_fn"):
        read_worker_responses("s3://b/out", "job")


def test_a_manifest_without_any_label_attribute_asks_for_one(tmp_path):
    path = write_lines(tmp_path / "out.manifest", [{"source": "a"}, {"source": "b"}])
    with pytest.raises(ManifestError, match="2 lines without a label attribute.*\n  hint: .*--label-attribute"):
        list(read_manifest(path, attribute=None, task_type=None, labels=None))
    objs = list(read_manifest(path, attribute="s", task_type=TaskType.text_classification, labels=None))
    assert [o.status for o in objs] == [Status.unlabeled, Status.unlabeled]


def test_read_manifest_streams_gzip_through_smart_open(tmp_path):
    import gzip

    path = tmp_path / "out.manifest.gz"
    path.write_bytes(gzip.compress((REAL / "cat_output.manifest").read_bytes()))
    assert len(list(read_manifest(str(path), attribute=None, task_type=None, labels=None))) == 4


# -- S3 (moto's server), local service ------------------------------------------------------------------


def test_manifest_and_worker_responses_from_s3(moto_server, aws_env):  # noqa: F811
    import boto3

    reset_moto(moto_server)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"gtrun-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    job = "out/birds"
    s3.put_object(Bucket=bucket, Key=f"{job}/manifests/output/output.manifest",
                  Body=(REAL / "cat_output.manifest").read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{job}/annotations/worker-response/iteration-1/2/2019-04-18_16:12:29.json",
                  Body=(REAL / "ic_worker_response_153.json").read_bytes())
    objs = list(read_manifest(f"s3://{bucket}/{job}/manifests/output/output.manifest", attribute=None,
                              task_type=None, labels=None, transport_params={"client": s3}))
    assert len(objs) == 4
    responses = read_worker_responses(f"s3://{bucket}/out", "birds", list_fn=s3_lister(s3),
                                      open_fn=lambda uri: __import__("smart_open").open(
                                          uri, "rb", transport_params={"client": s3}))
    assert list(responses) == ["2"] and len(responses["2"]) == 5
    assert [o.workers for o in attach_answers(objs, responses)] == [0, 0, 5, 0]
    # many files are read on several threads, in object order; the first bad one is named
    record = json.loads((REAL / "ic_worker_response_153.json").read_text())
    for i in range(3, 40):
        answers = record["answers"][: 1 + i % 5]
        s3.put_object(Bucket=bucket, Key=f"{job}/annotations/worker-response/iteration-1/{i}/2019-04-18_16:12:29.json",
                      Body=json.dumps({**record, "answers": answers}).encode())
    read = functools.partial(read_worker_responses, f"s3://{bucket}/out", "birds", list_fn=s3_lister(s3),
                             open_fn=lambda uri: __import__("smart_open").open(uri, "rb", transport_params={"client": s3}))
    threaded = read(readers=8)
    assert threaded == read(readers=1) and list(threaded) == [str(i) for i in range(2, 40)]
    assert [len(threaded[str(i)]) for i in range(3, 40)] == [1 + i % 5 for i in range(3, 40)]
    bad = f"{job}/annotations/worker-response/iteration-1/17/2019-04-18_16:12:30.json"
    s3.put_object(Bucket=bucket, Key=bad, Body=b"{not json")
    with pytest.raises(ManifestError, match=f"s3://{bucket}/{bad}: not JSON"):
        read(readers=8)


def wait_status(client: Any, name: str, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_labeling_job(LabelingJobName=name)["LabelingJobStatus"]
        if status == wanted or time.monotonic() > deadline:
            return str(status)
        time.sleep(0.05)


def test_output_of_gtruns_own_service_two_workers(tmp_path):
    tweets = [{"source": f"tweet {i}", "tweet_id": i} for i in range(3)]
    labels = ["Positive", "Negative", "Neutral"]
    with Service(tmp_path / "storage", port=0).running() as service:
        sm = sagemaker(service.url)
        sm.create_labeling_job(**put_job(service.root, "tweets-2w", tweets, labels=labels, workers=2))
        assert wait_status(sm, "tweets-2w", "InProgress") == "InProgress"
        votes = {"a": ["Positive", "Negative", "Neutral"], "b": ["Positive", "Negative", "Positive"]}
        for chosen in votes.values():
            worker = Worker(service.url)
            for _ in chosen:
                task = worker.task("tweets-2w")
                label = chosen[int(task["objectId"])]
                assert worker.answer("tweets-2w", task, {"crowd-classifier": {"label": label}}).status_code == 200
        assert wait_status(sm, "tweets-2w", "Completed") == "Completed"
        described = sm.describe_labeling_job(LabelingJobName="tweets-2w")
    manifest = described["LabelingJobOutput"]["OutputDatasetS3Uri"]
    root = service.root / manifest.removeprefix("s3://").split("/tweets-2w/manifests/")[0]
    parser = Parser(labels=labels)
    objs = list(attach_answers(parser.read(service.root / manifest.removeprefix("s3://")),
                               read_worker_responses(root, "tweets-2w")))
    assert parser.stats == ParseStats(lines=3, labeled=3)
    assert [o.inputs for o in objs] == tweets
    assert [o.task_type for o in objs] == [TaskType.text_classification] * 3
    assert [o.label for o in objs[:2]] == ["Positive", "Negative"] and objs[2].label in ("Neutral", "Positive")
    assert [o.workers for o in objs] == [2, 2, 2]
    assert [o.job_name for o in objs] == ["tweets-2w"] * 3
    for obj in objs:
        assert all(a.worker_id.startswith("private.us-east-1.") and a.seconds is not None and a.seconds >= 0
                   for a in obj.answers)
        assert [a.content["crowd-classifier"]["label"] for a in obj.answers] == \
            [votes["a"][int(obj.object_id)], votes["b"][int(obj.object_id)]]


# -- the fast paths build the same records ------------------------------------------------------------


def every_kind_of_line() -> list[tuple[dict[str, Any], str, TaskType | None]]:
    lines: list[tuple[dict[str, Any], str, TaskType | None]] = [
        (x, "cat-ground-truth", None) for x in real_lines("cat_output.manifest")]
    lines += [(real_lines("ic_output_line1.jsonl")[0], "birds-open-images-clone", None),
              (real_lines("ssie_output_line1.jsonl")[0], "mock_job_name", None),
              (real_lines("ssie_expired_line2.jsonl")[0], "mock_job_name", TaskType.custom),
              (chained_line(), "birds-open-images-clone", None),
              (receipt_line(receipt_answer([VENDOR, TOTAL])), "receipt-entities", None),
              ({"source": "x", "t": [1, 0], "t-metadata": {
                  "class-map": {"1": "sad", "0": "happy"}, "confidence-map": {"1": 0.5, "0": 0.25},
                  "type": "groundtruth/text-classification-multilabel"}}, "t", None),
              ({"source": "Ada", "n": {"annotations": {"entities": [{"label": "P", "startOffset": 0, "endOffset": 3}]}},
                "n-metadata": {"type": "groundtruth/text-span", "entities": [{"confidence": 0.5}]}}, "n", None),
              ({"source": "unlabeled"}, "s", TaskType.text_classification)]
    return lines


def test_records_built_without_the_constructor_equal_constructed_ones(monkeypatch):
    import dataclasses

    import runner.collect.parse as module

    assert module.DIRECT_INIT  # records.py has the fields and defaults parse.py expects
    fast = [parse(line, attr, kind) for line, attr, kind in every_kind_of_line()]
    monkeypatch.setattr(module, "DIRECT_INIT", False)
    slow = [parse(line, attr, kind) for line, attr, kind in every_kind_of_line()]
    assert fast == slow and [repr(x) for x in fast] == [repr(x) for x in slow]
    names = {f.name for f in dataclasses.fields(LabeledObject)}
    for obj in fast:
        assert set(vars(obj)) == names
        assert all(set(vars(b)) == {f.name for f in dataclasses.fields(Box)} for b in obj.boxes)
        assert all(set(vars(s)) == {f.name for f in dataclasses.fields(Span)} for s in obj.entities)
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.label = "changed"  # type: ignore[misc]
        assert dataclasses.replace(obj, line_no=99).line_no == 99
    assert fast[1].boxes[0] == Box("Cat", 237.0, 165.0, 164.0, 157.0, 0.09) and hash(fast[1].boxes[0])


def test_cached_key_layouts_still_look_at_each_lines_metadata_values():
    meta = {"class-name": "a", "type": "groundtruth/text-classification"}
    chained = {"source": "1", "old": 0, "old-metadata": {"type": "groundtruth/custom"}, "s": 0, "s-metadata": meta}
    plain = {"source": "2", "old": 0, "old-metadata": {"camera": "x100"}, "s": 0, "s-metadata": meta}
    objs = list(Parser(attribute="s").parse_lines(json.dumps(x) for x in [chained, plain, chained]))
    assert [o.inputs for o in objs] == [{"source": "1"}, {"source": "2", "old": 0, "old-metadata": {"camera": "x100"}},
                                        {"source": "1"}]
