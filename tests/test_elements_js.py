"""gtrun's own crowd-html-elements.js, driven like a worker would in headless Chromium.

A tiny HTTP server (a thread) serves runner/service/static/, test pages, a 400x300 PNG for any
/img/… path, and records the POSTs the pages submit. The bundled templates are rendered with
Ground Truth's Liquid rules (autoescape on) and answered like a worker would.

Set GTRUN_SCREENSHOTS=<dir> to save screenshots of the receipts and text-classification templates.
"""

from __future__ import annotations

import html
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser_helpers import FIND_TEXT, drag, mouse_select

HOME = Path(__file__).resolve().parent.parent
STATIC = HOME / "runner" / "service" / "static"
TEMPLATES = HOME / "templates"
CROWD_URL = "https://assets.crowd.aws/crowd-html-elements.js"
TOKEN = "tok-123"



# ------------------------------------------------------------------------------------------------
# Local server


def make_png() -> bytes:
    """A 400x300 test image with a receipt-like word at the receipts sample token's box."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (400, 300), (236, 240, 244))
    draw = ImageDraw.Draw(image)
    for x in range(0, 400, 40):
        draw.line([(x, 0), (x, 299)], fill=(214, 220, 228))
    for y in range(0, 300, 40):
        draw.line([(0, y), (399, y)], fill=(214, 220, 228))
    draw.rectangle([120, 90, 300, 220], fill=(90, 140, 200))
    draw.ellipse([40, 160, 110, 230], fill=(220, 120, 80))
    draw.text((12, 21), "TOTAL", fill=(20, 20, 20))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class App:
    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.posts: list[dict[str, Any]] = []
        self.png = make_png()
        self.url = ""


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        app: App = self.server.app
        path = urlsplit(self.path).path
        if path.startswith("/static/"):
            file = (STATIC / path.removeprefix("/static/")).resolve()
            if file.is_file() and STATIC.resolve() in file.parents:
                kind = {".js": "application/javascript; charset=utf-8",
                        ".css": "text/css; charset=utf-8"}.get(file.suffix, "application/octet-stream")
                return self._send(200, file.read_bytes(), kind)
        elif path.startswith("/img/"):
            return self._send(200, app.png, "image/png")
        elif path in app.pages:
            return self._send(200, app.pages[path].encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/done":
            return self._send(200, b"<!doctype html><p id='done'>done</p>", "text/html; charset=utf-8")
        self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        app: App = self.server.app
        path = urlsplit(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        app.posts.append({"path": path, "content_type": self.headers.get("Content-Type"),
                          "body": json.loads(raw)})
        if path == "/submit-error":
            return self._send(409, json.dumps({"message": "This task has expired."}).encode(),
                              "application/json")
        if path == "/submit-slow":
            time.sleep(0.4)
        self._send(200, json.dumps({"next": "/done"}).encode(), "application/json")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.app = App()
    httpd.app.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.app
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page(browser, server):
    server.posts.clear()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(5000)
    pg = context.new_page()
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()
    assert pg.errors == [], pg.errors  # no uncaught exception on any page


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c")


def task_page(body: str, *, task: bool = True, submit: str = "/submit", head: str = "",
              css: bool = True, script: str = '<script src="/static/crowd-html-elements.js"></script>') -> str:
    gtrun = ""
    if task:
        gtrun = ("<script>window.gtrunTask = " + script_json(
            {"job": "job-1", "objectId": "7", "token": TOKEN, "submitUrl": submit}) + ";</script>")
    link = '<link rel="stylesheet" href="/static/worker.css">' if css else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>test</title>'
            f"{link}{gtrun}{head}{script}</head><body>{body}</body></html>")


def open_page(page, server: App, html_text: str, name: str = "t") -> None:
    server.pages[f"/page/{name}"] = html_text
    page.goto(f"{server.url}/page/{name}")
    page.wait_for_function("document.querySelector('crowd-form[data-crowd-ready]') !== null")


def submitted(page, server: App) -> dict[str, Any]:
    """Wait for the page to move on after its POST; return the one POSTed body."""
    page.wait_for_url("**/done", timeout=5000)
    assert len(server.posts) == 1, server.posts
    post = server.posts[0]
    assert post["content_type"] == "application/json"
    assert set(post["body"]) == {"answer", "token"}
    assert post["body"]["token"] == TOKEN
    return post["body"]["answer"]


def click_submit(page) -> None:
    page.locator("crowd-button[form-action=submit] button").click()


def attr(value: Any) -> str:
    """A JSON attribute value as a template writes it: to_json | escape."""
    return html.escape(json.dumps(value), quote=True)


# ------------------------------------------------------------------------------------------------
# Pointer helpers


def image_box(page, selector: str) -> dict[str, float]:
    return page.eval_on_selector(selector, """img => { const r = img.getBoundingClientRect();
        return {x: r.left, y: r.top, w: r.width, h: r.height, nw: img.naturalWidth, nh: img.naturalHeight}; }""")


def drag_natural(page, selector: str, a: tuple[float, float], b: tuple[float, float]) -> None:
    """Drag between two points given in the image's natural pixels."""
    box = image_box(page, selector)
    sx, sy = box["w"] / box["nw"], box["h"] / box["nh"]
    drag(page, (box["x"] + a[0] * sx, box["y"] + a[1] * sy), (box["x"] + b[0] * sx, box["y"] + b[1] * sy))


def select_text(page, needle: str) -> None:
    """Select `needle` inside the entity text with a Range (as a keyboard or script selection)."""
    page.evaluate("window.__select = true")
    assert page.evaluate(FIND_TEXT, needle)
    page.evaluate("window.__select = false")


# ------------------------------------------------------------------------------------------------
# Elements


CLASSIFIER = """<crowd-form>
  <crowd-classifier name="sentiment" categories="{cats}" header="Which fits?">
    <classification-target><p>Some text</p></classification-target>
    <short-instructions><p id="short">Pick one.</p></short-instructions>
    <full-instructions header="More help"><p id="full">All the details.</p></full-instructions>
  </crowd-classifier>
</crowd-form>"""


def test_number_key_picks_a_category_and_ctrl_enter_submits(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=attr(["Positive", "Negative", "Neutral"]))))
    buttons = page.locator(".crowd-category")
    assert buttons.count() == 3
    page.keyboard.press("2")
    assert buttons.nth(1).get_attribute("aria-pressed") == "true"
    assert buttons.nth(0).get_attribute("aria-pressed") == "false"
    assert page.locator("#short").is_visible()  # short instructions shown in the side panel
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"sentiment": {"label": "Negative"}}
    assert server.posts[0]["path"] == "/submit"


def test_click_category_and_submit_button(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=html.escape("['Yes', 'No']"))))  # GT's JS-ish lists work
    page.locator(".crowd-category", has_text="No").click()
    click_submit(page)
    assert submitted(page, server) == {"sentiment": {"label": "No"}}


def test_empty_required_classifier_shows_an_alert_and_posts_nothing(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=attr(["A", "B"]))))
    click_submit(page)
    alert = page.locator("crowd-alert[type=error]")
    alert.wait_for()
    assert "Choose a category" in alert.inner_text()
    page.wait_for_timeout(200)
    assert server.posts == []
    page.keyboard.press("1")
    click_submit(page)
    assert submitted(page, server) == {"sentiment": {"label": "A"}}


FIELDS = """<crowd-form>
  <crowd-input name="title" label="Title" required></crowd-input>
  <crowd-input label="no name, not submitted"></crowd-input>
  <crowd-text-area name="notes" label="Notes" rows="3"></crowd-text-area>
  <crowd-checkbox name="quality" value="blurry">Blurry</crowd-checkbox>
  <crowd-checkbox name="quality" value="dim" checked>Dim</crowd-checkbox>
  <crowd-checkbox name="agree">I agree</crowd-checkbox>
  <crowd-radio-group>
    <crowd-radio-button name="yes" value="yes">Yes</crowd-radio-button>
    <crowd-radio-button name="no" value="no">No</crowd-radio-button>
  </crowd-radio-group>
  <crowd-radio-button name="size" value="small">Small</crowd-radio-button>
  <crowd-radio-button name="size" value="large">Large</crowd-radio-button>
  <crowd-classifier-multi-select name="topics" categories='{cats}' header="Topics"
      exclusion-category="{ text: 'None of these' }"></crowd-classifier-multi-select>
  <label>Native <input name="native_text" value="x"></label>
  <select name="native_select"><option value="a">A</option><option value="b">B</option></select>
  <input type="checkbox" name="native_check" value="checked-value">
  <input type="checkbox" name="native_unchecked">
  <input type="hidden" name="computed" id="computed" value="before">
  <input name="disabled_native" value="skip" disabled>
</crowd-form>
<script>
  document.querySelector('crowd-form').onsubmit = function () {
    document.getElementById('computed').value = 'set by onsubmit';
  };
  document.querySelector('crowd-form').addEventListener('submit', function () {
    if (document.getElementById('extra')) return;
    var input = document.createElement('input');
    input.type = 'hidden'; input.name = 'extra'; input.id = 'extra'; input.value = 'added by listener';
    document.querySelector('crowd-form').appendChild(input);
  });
</script>"""


def test_fields_checkboxes_radios_and_native_inputs(page, server):
    open_page(page, server, task_page(FIELDS.replace("{cats}", attr(["sports", "games", "news"]))))
    click_submit(page)  # the required crowd-input is empty
    page.locator("crowd-alert[type=error]").wait_for()
    assert "Title is required" in page.locator("crowd-alert[type=error]").inner_text()
    page.wait_for_timeout(150)
    assert server.posts == []

    page.get_by_label("Title").fill("A <b>title</b>")
    page.get_by_label("Notes").click()
    page.keyboard.type("line one")
    page.keyboard.press("Enter")
    page.keyboard.type("line two")
    page.get_by_text("Blurry").click()
    page.get_by_text("Dim").click()  # unchecks the pre-checked box
    page.get_by_text("No", exact=True).click()
    page.get_by_text("Large").click()
    page.locator(".crowd-category", has_text="games").click()
    page.locator(".crowd-category", has_text="news").click()
    page.locator("select[name=native_select]").select_option("b")
    page.locator("input[name=native_check]").check()
    click_submit(page)
    assert submitted(page, server) == {
        "title": "A <b>title</b>",
        "notes": "line one\nline two",
        "quality": {"blurry": True, "dim": False},
        "agree": {"on": False},
        "yes": {"yes": False},
        "no": {"no": True},
        "size": {"small": False, "large": True},
        "topics": {"labels": ["games", "news"]},
        "native_text": "x",
        "native_select": "b",
        "native_check": "checked-value",
        "computed": "set by onsubmit",
        "extra": "added by listener",
    }


def test_exclusion_category_and_number_keys_in_multi_select(page, server):
    body = ("<crowd-form><crowd-classifier-multi-select name='m' categories='[\"a\", \"b\"]' header='H'"
            " exclusion-category=\"{ text: 'None' }\"></crowd-classifier-multi-select></crowd-form>")
    open_page(page, server, task_page(body))
    page.keyboard.press("1")
    page.keyboard.press("2")
    assert page.evaluate("crowdHtmlElements.collectAnswer(document.querySelector('crowd-form'))") == {
        "m": {"labels": ["a", "b"]}}
    page.locator(".crowd-category-exclusion").click()
    assert page.locator(".crowd-category[aria-pressed=true]").all_inner_texts() == ["0\nNone"]
    click_submit(page)
    assert submitted(page, server) == {"m": {"labels": []}}


def test_image_classifier(page, server):
    body = ("<crowd-form><crowd-image-classifier name='animal' src='/img/a.png' header='Which animal?'"
            " categories=\"['Cat', 'Dog']\"></crowd-image-classifier></crowd-form>")
    open_page(page, server, task_page(body))
    page.wait_for_function("document.querySelector('.crowd-target-image').naturalWidth === 400")
    page.keyboard.press("2")
    click_submit(page)
    assert submitted(page, server) == {"animal": {"label": "Dog"}}


def test_a_submit_handler_can_cancel(page, server):
    body = CLASSIFIER.format(cats=attr(["A"])) + """<script>
      document.querySelector('crowd-form').addEventListener('submit', function (e) {
        window.cancelled = (window.cancelled || 0) + 1; e.preventDefault(); });
    </script>"""
    open_page(page, server, task_page(body))
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.cancelled === 1")
    page.wait_for_timeout(200)
    assert server.posts == []


def test_a_throwing_submit_handler_blocks_submission(page, server):
    body = CLASSIFIER.format(cats=attr(["A"])) + """<script>
      document.querySelector('crowd-form').onsubmit = function () { null.boom(); };
    </script>"""
    open_page(page, server, task_page(body))
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    page.locator("crowd-alert[type=error]").wait_for()
    assert "submit handler failed" in page.locator("crowd-alert[type=error]").inner_text()
    assert server.posts == []
    assert len(page.errors) == 1 and "boom" in page.errors[0]
    page.errors.clear()


BBOX = """<style>
  .crowd-bbox-frame {{ text-align: left; }}
  crowd-bounding-box .crowd-bbox-image {{ width: {width}px; max-width: none; max-height: none; }}
</style>
<crowd-form>
  <crowd-bounding-box name="boxes" src="/img/test.png" header="Box things" labels='{labels}' {extra}>
    <short-instructions>Box every thing.</short-instructions>
  </crowd-bounding-box>
</crowd-form>"""


def image_point(page, x: float, y: float) -> tuple[float, float]:
    """A point given in natural pixels → viewport pixels."""
    box = image_box(page, ".crowd-bbox-image")
    return box["x"] + x * box["w"] / box["nw"], box["y"] + y * box["h"] / box["nh"]


@pytest.mark.parametrize("width", [200, 700])
def test_bounding_box_drag_in_natural_pixels(page, server, width):
    open_page(page, server, task_page(BBOX.format(width=width, labels=attr(["car", "person"]), extra="")))
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth === 400")
    box = image_box(page, ".crowd-bbox-image")
    assert (box["w"], box["h"]) == (width, width * 0.75)  # displayed scaled, not at 400x300
    drag(page, image_point(page, 40, 60), image_point(page, 240, 160))      # label 1 (car)
    page.keyboard.press("2")                                               # label 2 (person)
    drag(page, image_point(page, 300, 200), image_point(page, 280, 120))   # drawn right-to-left
    assert page.locator(".crowd-bbox").count() == 2
    # Move the first box by (+20, +12) natural pixels, dragging from its middle.
    start = image_point(page, 140, 110)
    end = image_point(page, 160, 122)
    drag(page, start, end)
    # Select the second box and delete it with the keyboard, then draw a third.
    page.mouse.click(*image_point(page, 290, 160))
    page.keyboard.press("Delete")
    assert page.locator(".crowd-bbox").count() == 1
    drag(page, image_point(page, 0, 0), image_point(page, 420, 320))       # clamped to the image
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"boxes": {
        "boundingBoxes": [
            {"label": "car", "left": 60, "top": 72, "width": 200, "height": 100},
            {"label": "person", "left": 0, "top": 0, "width": 400, "height": 300},
        ],
        "inputImageProperties": {"height": 300, "width": 400},
    }}


def test_bounding_box_initial_value(page, server):
    initial = [{"label": "car", "left": 10, "top": 20, "width": 30, "height": 40}]
    body = BBOX.format(width=400, labels=attr(["car"]), extra=f"initial-value='{attr(initial)}'")
    open_page(page, server, task_page(body))
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth === 400")
    form = "document.querySelector('crowd-form')"
    assert page.evaluate(f"crowdHtmlElements.collectAnswer({form})") == {"boxes": {
        "boundingBoxes": initial, "inputImageProperties": {"height": 300, "width": 400},
        "initialValueModified": False}}
    # Resize it from its bottom-right corner handle.
    page.mouse.click(*image_point(page, 25, 40))
    handle = page.locator(".crowd-handle-se").bounding_box()
    drag(page, (handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2), image_point(page, 60, 80))
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"boxes": {
        "boundingBoxes": [{"label": "car", "left": 10, "top": 20, "width": 50, "height": 60}],
        "inputImageProperties": {"height": 300, "width": 400},
        "initialValueModified": True}}


NER_TEXT = "\U0001f3ae Ana met Bob \U0001f600 in Paris caf\u00e9 today"
NER = """<crowd-form>
  <crowd-entity-annotation name="ner" header="Mark entities" labels='{labels}' text="{text}">
    <short-instructions>Mark people and places.</short-instructions>
  </crowd-entity-annotation>
</crowd-form>"""
NER_LABELS = [{"label": "person", "shortDisplayName": "PER"}, {"label": "place", "fullDisplayName": "Place"}, "thing"]


def span(label: str, needle: str, text: str = NER_TEXT) -> dict[str, Any]:
    start = text.index(needle)  # Python indexes code points: what Ground Truth's offsets count
    return {"label": label, "startOffset": start, "endOffset": start + len(needle)}


def test_entity_annotation_offsets_are_code_points(page, server):
    open_page(page, server, task_page(NER.format(labels=attr(NER_LABELS), text=html.escape(NER_TEXT))))
    # Pick a label, then drag across "Bob" with the mouse (after two emoji: 2 UTF-16 units each).
    page.locator(".crowd-label-choice", has_text="person").click()
    mouse_select(page, "Bob")
    assert page.locator("mark.crowd-entity").count() == 1
    # Select first (a script/keyboard selection, with spaces around it), then choose the label.
    select_text(page, " Paris ")
    page.locator(".crowd-label-choice", has_text="Place").click()
    # Select, then the number key for the label.
    select_text(page, "caf\u00e9")
    page.keyboard.press("3")
    select_text(page, "Ana")
    page.keyboard.press("1")
    assert page.locator("mark.crowd-entity").count() == 4
    assert page.locator("mark.crowd-entity .crowd-entity-tag").all_inner_texts() == ["PER", "PER", "Place", "thing"]
    # Remove "Ana" with its x button; the text is unchanged.
    page.get_by_role("button", name="Remove person \u201cAna\u201d").first.click()
    assert page.locator("mark.crowd-entity").count() == 3
    assert page.locator(".crowd-entity-text").evaluate(
        "el => Array.from(el.querySelectorAll('.crowd-entity-tag, .crowd-entity-remove')).reduce("
        "(t, n) => t.replace(n.textContent, ''), el.textContent)") == NER_TEXT
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"ner": {"entities": [
        span("person", "Bob"), span("place", "Paris"), span("thing", "caf\u00e9")]}}


def test_entity_annotation_initial_value_and_emoji_span(page, server):
    initial = [span("thing", "\U0001f600")]
    body = (NER.replace("text=", "initial-value='{initial}' text=").replace("{initial}", attr(initial))
            .replace("{labels}", attr(NER_LABELS)).replace("{text}", html.escape(NER_TEXT)))
    open_page(page, server, task_page(body))
    assert page.locator("mark.crowd-entity .crowd-entity-words").all_inner_texts() == ["\U0001f600"]
    select_text(page, "\U0001f3ae Ana")
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"ner": {"entities": [span("person", "\U0001f3ae Ana"), initial[0]]}}


XSS = "<img src=x onerror=alert(1)> & <script>alert(2)</script>"


def test_task_text_is_shown_as_text_never_run(page, server):
    body = f"""<crowd-form>
      <crowd-entity-annotation name="ner" header="{html.escape(XSS)}" labels='{attr([XSS])}'
          text="{html.escape(XSS)}"></crowd-entity-annotation>
      <crowd-classifier name="c" header="{html.escape(XSS)}" categories='{attr([XSS, "ok"])}'></crowd-classifier>
      <crowd-bounding-box name="b" src="/img/x.png" header="h" labels='{attr([XSS])}'></crowd-bounding-box>
    </crowd-form>"""
    open_page(page, server, task_page(body))
    page.wait_for_timeout(300)
    assert page.dialogs == []
    assert page.locator(".crowd-entity-text").inner_text() == XSS
    assert page.locator("crowd-entity-annotation .crowd-header").inner_text() == XSS
    assert page.locator(".crowd-category").first.inner_text().endswith(XSS)
    assert page.locator("crowd-bounding-box .crowd-label-choice").first.inner_text().endswith(XSS)
    assert page.locator("crowd-form img:not(.crowd-bbox-image), crowd-form script").count() == 0
    select_text(page, "<img src=x")
    page.locator("crowd-entity-annotation .crowd-label-choice").click()
    page.locator("crowd-classifier .crowd-category").first.click()
    page.wait_for_timeout(100)
    assert page.locator("crowd-form img:not(.crowd-bbox-image), crowd-form script").count() == 0
    assert page.dialogs == []
    answer = page.evaluate("crowdHtmlElements.collectAnswer(document.querySelector('crowd-form'))")
    assert answer["ner"] == {"entities": [{"label": XSS, "startOffset": 0, "endOffset": 10}]}
    assert answer["c"] == {"label": XSS}


# ------------------------------------------------------------------------------------------------
# Submission contract


def test_without_gtrun_task_the_answer_is_previewed(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=attr(["A", "B"])), task=False))
    page.keyboard.press("2")
    click_submit(page)
    alert = page.locator("crowd-alert[type=info]")
    alert.wait_for()
    assert json.loads(alert.locator("pre").inner_text()) == {"sentiment": {"label": "B"}}
    assert server.posts == []


def test_an_error_response_shows_its_message_and_reenables(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=attr(["A"])), submit="/submit-error"))
    page.keyboard.press("1")
    click_submit(page)
    alert = page.locator("crowd-alert[type=error]")
    alert.wait_for()
    assert "This task has expired." in alert.inner_text()
    assert page.locator("crowd-button[form-action=submit] button").is_enabled()
    assert len(server.posts) == 1
    click_submit(page)  # may be tried again
    page.wait_for_function("document.querySelectorAll('crowd-alert[type=error]').length === 1")
    page.wait_for_timeout(200)
    assert len(server.posts) == 2


def test_never_submits_twice(page, server):
    open_page(page, server, task_page(CLASSIFIER.format(cats=attr(["A"])), submit="/submit-slow"))
    page.keyboard.press("1")
    click_submit(page)
    assert page.locator("crowd-button[form-action=submit] button").is_disabled()
    page.keyboard.press("Control+Enter")
    page.evaluate("document.querySelector('crowd-form').submit()")
    assert submitted(page, server) == {"sentiment": {"label": "A"}}


def test_loaded_twice_defines_once(page, server):
    tag = '<script src="/static/crowd-html-elements.js"></script>'
    body = ("<crowd-form><crowd-classifier-multi-select name='m' categories='[\"a\", \"b\"]' header='H'>"
            "</crowd-classifier-multi-select></crowd-form>" + tag)
    open_page(page, server, task_page(body, css=False, script=tag))
    page.keyboard.press("1")  # one keydown listener: toggled once, not twice
    assert page.evaluate("crowdHtmlElements.collectAnswer(document.querySelector('crowd-form'))") == {
        "m": {"labels": ["a"]}}
    assert page.locator("link[data-gtrun-worker-css]").count() == 1  # added once, next to the script


def test_crowd_instructions_and_alert(page, server):
    body = """<crowd-form>
      <crowd-instructions link-text="How to do this" link-type="button">
        <short-summary><p>Short summary.</p></short-summary>
        <detailed-instructions><p id="detail">Details here.</p></detailed-instructions>
        <positive-example><p>Good.</p></positive-example>
        <negative-example><p>Bad.</p></negative-example>
      </crowd-instructions>
      <crowd-alert type="warning" dismissible>Careful now.</crowd-alert>
      <crowd-input name="a" label="A"></crowd-input>
    </crowd-form>"""
    open_page(page, server, task_page(body))
    assert not page.locator("#detail").is_visible()
    page.get_by_role("button", name="How to do this").click()
    assert page.locator("#detail").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#detail").is_visible()
    assert page.locator("crowd-alert[type=warning]").get_attribute("role") == "alert"
    page.get_by_role("button", name="Dismiss").click()
    assert page.locator("crowd-alert").count() == 0
    page.get_by_label("A").fill("typed")
    page.keyboard.press("Control+Enter")  # from inside the input
    assert submitted(page, server) == {"a": "typed"}


# ------------------------------------------------------------------------------------------------
# The bundled templates, rendered the way the service does


TWEET = ('He said "Xbox, again?" & it\'s <b>bold</b> & <script>alert(1)</script>\n'
         "second line\tafter a tab, caf\u00e9 \U0001f3ae")
SENTIMENTS = ["Positive", "Negative", "Neutral", "Irrelevant"]
NER_TEMPLATE_LABELS = ["person", "organization", "it's \"odd\" <label>"]
RECEIPT = {"source-ref": "s3://b/r.png", "receipt_id": 1,
           "tokens": [{"text": "TOTAL", "box": [10, 20, 50, 12]}], "width": 400, "height": 300}
INPUTS: dict[str, dict[str, Any]] = {
    "text_classification": {"taskObject": TWEET, "labels": SENTIMENTS},
    "text_multilabel": {"taskObject": TWEET, "labels": SENTIMENTS},
    "named_entity": {"taskObject": TWEET, "labels": NER_TEMPLATE_LABELS},
    "bounding_box": {"taskObject": "s3://b/images/cat.png", "labels": ["object", "car's \"wheel\""]},
    "custom": {"source": TWEET, "tweet_id": 1050, "entity": "Xbox"},
    "receipts_ner": RECEIPT,
}


def render_template(name: str, task_input: dict[str, Any], server: App) -> str:
    from liquid import Environment
    from markupsafe import Markup

    env = Environment(autoescape=True)
    env.filters["to_json"] = lambda value: json.dumps(value)
    env.filters["grant_read_access"] = lambda uri: f"{server.url}/img/{uri.removeprefix('s3://')}"
    env.filters["skip_autoescape"] = lambda value: Markup(value)
    env.filters["escape_once"] = lambda value: Markup(html.escape(html.unescape(str(value))))
    source = (TEMPLATES / f"{name}.liquid").read_text(encoding="utf-8")
    source = source.replace(CROWD_URL, "/static/crowd-html-elements.js")
    body = env.from_string(source).render(task={"input": task_input})
    bar = ('<header class="gtrun-bar"><span class="gtrun-bar-title">tweets-sentiment-20260227</span>'
           '<progress class="gtrun-bar-progress" value="3" max="10">3 of 10</progress>'
           '<span class="gtrun-bar-count">3 / 10</span><span class="gtrun-bar-spacer"></span>'
           '<span class="gtrun-bar-meta">Object 7</span></header>')
    return task_page(bar + body, css=False, script="")


def test_every_template_is_covered():
    assert sorted(p.stem for p in TEMPLATES.glob("*.liquid")) == sorted(INPUTS)


def answer_text_classification(page):
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    return {"crowd-classifier": {"label": "Negative"}}


def answer_text_multilabel(page):
    page.locator(".crowd-category", has_text="Positive").click()
    page.locator(".crowd-category", has_text="Irrelevant").click()
    click_submit(page)
    return {"crowd-classifier-multi-select": {"labels": ["Positive", "Irrelevant"]}}


def answer_named_entity(page):
    select_text(page, "Xbox")
    page.locator(".crowd-label-choice", has_text="organization").click()
    page.keyboard.press("3")  # the current label is sticky until another is chosen
    mouse_select(page, "second")
    click_submit(page)
    return {"crowd-entity-annotation": {"entities": [
        span("organization", "Xbox", TWEET), span("it's \"odd\" <label>", "second", TWEET)]}}


def answer_bounding_box(page):
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth > 0")
    page.keyboard.press("2")
    drag_natural(page, ".crowd-bbox-image", (120, 90), (300, 220))
    click_submit(page)
    return {"boundingBox": {"boundingBoxes": [{"label": "car's \"wheel\"", "left": 120, "top": 90,
                                               "width": 180, "height": 130}],
                            "inputImageProperties": {"height": 300, "width": 400}}}


def answer_custom(page):
    page.get_by_label("Your answer").fill("An Xbox \U0001f3ae")
    page.keyboard.press("Control+Enter")
    return {"answer": "An Xbox \U0001f3ae"}


def answer_receipts_ner(page):
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth > 0")
    page.keyboard.press("3")
    drag_natural(page, ".crowd-bbox-image", (5, 15), (70, 40))
    assert page.locator("#token-boxes .token-box").count() == 1
    click_submit(page)
    box = {"label": "total", "left": 5, "top": 15, "width": 65, "height": 25}
    return {"annotations": {"boundingBoxes": [box], "inputImageProperties": {"height": 300, "width": 400}},
            "boxTokens": [dict(box, tokens=[0], text="TOTAL")]}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_bundled_template(page, server, name):
    open_page(page, server, render_template(name, INPUTS[name], server), name=name)
    assert page.locator("link[data-gtrun-worker-css]").count() == 1
    page.wait_for_function("getComputedStyle(document.querySelector('crowd-form')).maxWidth === '1240px'")
    shots = os.environ.get("GTRUN_SCREENSHOTS")
    if shots and name in ("receipts_ner", "text_classification"):
        if name == "receipts_ner":
            page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth > 0")
            page.keyboard.press("1")
            drag_natural(page, ".crowd-bbox-image", (120, 90), (300, 220))
            page.keyboard.press("3")
            drag_natural(page, ".crowd-bbox-image", (5, 15), (70, 40))
            page.mouse.click(*image_point(page, 200, 150))
        else:
            page.keyboard.press("2")
        page.locator("details.crowd-full-instructions").first.evaluate("d => d.open = true")
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
        page.reload()
        page.wait_for_function("document.querySelector('crowd-form[data-crowd-ready]') !== null")
    assert page.dialogs == []
    expected = globals()[f"answer_{name}"](page)
    answer = submitted(page, server)
    if name == "receipts_ner":
        answer["boxTokens"] = json.loads(answer["boxTokens"])
    assert answer == expected
    assert page.dialogs == []  # the tweet's <script>alert(1)</script> never ran


def test_bounding_box_undo_and_redo(page, server):
    # A box deleted by a stray Backspace, or moved by mistake, comes back with Ctrl+Z (or Undo);
    # Ctrl+Shift+Z / Ctrl+Y (or Redo) does it again, as in Ground Truth's box tool.
    open_page(page, server, task_page(BBOX.format(width=400, labels=attr(["car", "person"]), extra="")))
    page.wait_for_function("document.querySelector('.crowd-bbox-image').naturalWidth === 400")
    drag(page, image_point(page, 40, 60), image_point(page, 240, 160))
    page.keyboard.press("2")
    drag(page, image_point(page, 300, 200), image_point(page, 380, 280))
    page.keyboard.press("Backspace")                     # the selected (second) box, by mistake
    assert page.locator(".crowd-bbox").count() == 1
    page.keyboard.press("Control+z")
    assert page.locator(".crowd-bbox").count() == 2
    page.mouse.click(*image_point(page, 140, 110))       # select the first box, nudge it twice
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("ArrowDown")
    page.get_by_role("button", name="Undo").click()      # back one step: the nudge down
    page.keyboard.press("Control+z")                     # and the nudge right
    page.keyboard.press("Control+Shift+z")               # redo the nudge right
    page.locator(".crowd-label-choice").first.click()    # the focus on a label button: keys still undo
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    page.get_by_role("button", name="Redo").click()      # the nudge down again
    assert page.get_by_role("button", name="Redo").is_disabled()
    page.keyboard.press("Control+Enter")
    assert submitted(page, server) == {"boxes": {
        "boundingBoxes": [
            {"label": "car", "left": 50, "top": 61, "width": 200, "height": 100},
            {"label": "person", "left": 300, "top": 200, "width": 80, "height": 80},
        ],
        "inputImageProperties": {"height": 300, "width": 400},
    }}
