"""Every worker template renders under Ground Truth's rules: autoescape on, strict variables."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from liquid import Environment, StrictUndefined
from markupsafe import Markup
from omegaconf import OmegaConf

from runner.build.template import fill_job_values

HOME = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((HOME / "templates").glob("*.liquid"))
CROWD_JS = '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>'

TWEET = ('He said "Xbox, again?" & it\'s <b>bold</b> & <script>alert(1)</script>\n'
         "second line\tafter a tab, caf\u00e9 \U0001f3ae")
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
TEXT_TEMPLATES = ["text_classification", "text_multilabel", "named_entity", "custom"]
SENTIMENTS = ["Positive", "Negative", "Neutral", "Irrelevant"]
NER_LABELS = ["person", "organization", "it's \"odd\" <label>"]
IMAGE_URI = "s3://gtrun/samples/receipts/images/receipt-001.png"
IMAGE_URL = "http://127.0.0.1/storage/gtrun/samples/receipts/images/receipt-001.png"


def grant_read_access(uri: str) -> str:
    """Stand-in for GT's presigning filter: s3://b/k -> a local storage URL."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"http://127.0.0.1/storage/{bucket}/{key}"


def environment() -> Environment:
    env = Environment(autoescape=True, undefined=StrictUndefined)
    # A plain str, so autoescape escapes it like any value, as GT does; `| escape` is built in.
    env.filters["to_json"] = lambda value: json.dumps(value)
    env.filters["grant_read_access"] = grant_read_access
    env.filters["skip_autoescape"] = lambda value: Markup(value)
    return env


def render(name: str, task_input: dict[str, Any]) -> str:
    """The template as gtrun builds it (the job's title and instructions filled in), rendered."""
    source = (HOME / "templates" / f"{name}.liquid").read_text(encoding="utf-8")
    source = fill_job_values(source, {"title": "The question", "instructions": "<p>Do it well.</p>"}, name)
    return environment().from_string(source).render(task={"input": task_input})


def receipt_line() -> dict[str, Any]:
    """A manifest line as conf/source/receipts.yaml builds it, from the first sample receipt."""
    path = HOME / "data" / "receipts" / "receipts.jsonl"
    rec = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return {"source-ref": IMAGE_URI.replace("receipt-001.png", rec["image_file"]),
            "receipt_id": rec["receipt_id"], "tokens": rec["tokens"],
            "width": rec["width"], "height": rec["height"]}


# Built-in task types get {taskObject, labels} from the PRE Lambda; custom tasks the manifest line.
INPUTS: dict[str, dict[str, Any]] = {
    "text_classification": {"taskObject": TWEET, "labels": SENTIMENTS},
    "text_multilabel": {"taskObject": TWEET, "labels": SENTIMENTS},
    "named_entity": {"taskObject": TWEET, "labels": NER_LABELS},
    "bounding_box": {"taskObject": IMAGE_URI, "labels": ["object", "car's \"wheel\""]},
    "custom": {"source": TWEET, "tweet_id": 1050, "entity": "Xbox"},
    "receipts_ner": receipt_line(),
}


class Elements(HTMLParser):
    """Start tags with their (entity-decoded) attributes, as the browser would see them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def first(self, tag: str) -> dict[str, str | None]:
        return next(attrs for name, attrs in self.tags if name == tag)


def shown_text(out: str) -> str:
    """The text a pre-wrap paragraph shows, decoded."""
    match = re.search(r'<p style="white-space: pre-wrap">(.*?)</p>', out, re.DOTALL)
    assert match, "no pre-wrap paragraph"
    return html.unescape(match.group(1))


def test_every_template_has_a_sample_input():
    assert sorted(p.stem for p in TEMPLATES) == sorted(INPUTS)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_renders_strictly(path):
    out = render(path.stem, INPUTS[path.stem])
    assert CROWD_JS in out
    assert "{{" not in out and "{%" not in out
    tags = [name for name, _ in Elements(out).tags]
    assert tags.count("crowd-form") == 1
    assert "short-instructions" in tags
    assert Elements(out).first("full-instructions").get("header")


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
def test_text_is_shown_escaped(name):
    out = render(name, INPUTS[name])
    assert ESCAPED_SCRIPT in out
    assert "<script>alert(1)" not in out
    assert "<b>bold" not in out


@pytest.mark.parametrize("name, element, answer_key", [
    ("text_classification", "crowd-classifier", "crowd-classifier"),
    ("text_multilabel", "crowd-classifier-multi-select", "crowd-classifier-multi-select"),
])
def test_classifiers(name, element, answer_key):
    out = render(name, INPUTS[name])
    attrs = Elements(out).first(element)
    assert attrs["name"] == answer_key
    assert attrs["header"]
    assert json.loads(attrs["categories"]) == SENTIMENTS
    assert shown_text(out) == TWEET


def test_bounding_box():
    attrs = Elements(render("bounding_box", INPUTS["bounding_box"])).first("crowd-bounding-box")
    assert attrs["name"] == "boundingBox"
    assert attrs["src"] == IMAGE_URL
    assert json.loads(attrs["labels"]) == INPUTS["bounding_box"]["labels"]


def test_named_entity_labels_become_objects():
    out = render("named_entity", INPUTS["named_entity"])
    attrs = Elements(out).first("crowd-entity-annotation")
    assert attrs["name"] == "crowd-entity-annotation"
    assert attrs["text"] == TWEET  # offsets count characters of exactly this text
    assert json.loads(attrs["labels"]) == [
        {"label": label, "shortDisplayName": label[:3]} for label in NER_LABELS]


def test_custom_shows_the_source():
    out = render("custom", INPUTS["custom"])
    assert shown_text(out) == TWEET
    assert Elements(out).first("crowd-text-area")["name"] == "answer"


def test_receipts_ner_carries_tokens_and_labels():
    line = INPUTS["receipts_ner"]
    elements = Elements(render("receipts_ner", line))
    box = elements.first("crowd-bounding-box")
    assert box["name"] == "annotations"
    assert box["src"] == IMAGE_URL  # the tokens are drawn over this image (no second copy)
    assert [tag for tag, _ in elements.tags if tag == "img"] == []
    assert str(line["receipt_id"]) in box["header"]
    config = OmegaConf.load(HOME / "conf" / "template" / "receipts_ner.yaml")
    assert json.loads(box["labels"]) == list(config.labels)
    ocr = elements.first("div")
    assert ocr["id"] == "ocr"
    assert json.loads(ocr["data-tokens"]) == line["tokens"]
    assert (int(ocr["data-width"]), int(ocr["data-height"])) == (line["width"], line["height"])
    hidden = [a for tag, a in elements.tags if tag == "input"]
    assert hidden == [{"type": "hidden", "name": "boxTokens", "id": "box-tokens", "value": "[]"}]


def test_receipts_ner_token_text_cannot_break_out():
    evil = "</div></script><script>alert(1)</script>\"'&"
    line = dict(INPUTS["receipts_ner"], tokens=[{"text": evil, "box": [1, 2, 3, 4]}])
    out = render("receipts_ner", line)
    assert "<script>alert(1)" not in out
    assert json.loads(Elements(out).first("div")["data-tokens"]) == line["tokens"]
