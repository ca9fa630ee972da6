"""The labeling service shows task data as text, keeps storage reads inside the root, and listens on
loopback unless told otherwise."""

from __future__ import annotations

import time

import httpx
import pytest

from runner.service.jobs import Signer
from runner.service.server import Service
from tests.service_helpers import Worker, put_job, sagemaker

XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\"><svg onload=alert(1)>",
    "' onmouseover='alert(1)",
    "</textarea><script>alert(1)</script>",
    "{{ 7*7 }} {% raw %}",
    "javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">x</a>",
]


@pytest.fixture
def service(tmp_path):
    with Service(tmp_path / "storage", port=0).running() as svc:
        yield svc


def test_task_text_is_escaped_in_every_text_template(service):
    lines = [{"source": x, "n": i} for i, x in enumerate(XSS)]
    for kind, labels in (("text_classification", ["a", "b"]), ("text_multilabel", ["a", "b"]),
                         ("named_entity", ["person"]), ("custom", None)):
        name = kind.replace("_", "-")
        request = put_job(service.root, name, lines, task_type=kind, labels=labels, workers=1)
        sagemaker(service.url).create_labeling_job(**request)
        worker = Worker(service.url)
        seen = 0
        while (task := worker.task(name)) is not None:
            page = task["html"]
            body = page.split("<main>", 1)[1]
            for payload in XSS:
                if "<" in payload or '"' in payload:
                    assert payload not in body, (kind, payload)
            assert "<script>alert(1)</script>" not in body
            assert "onerror=alert(1)>" not in body
            worker.answer(name, task, {"answer": "x"} if kind == "custom" else
                          {"crowd-classifier": {"label": "a"}} if kind == "text_classification" else
                          {"crowd-classifier-multi-select": {"labels": ["a"]}} if kind == "text_multilabel" else
                          {"crowd-entity-annotation": {"entities": []}})
            seen += 1
        assert seen == len(XSS)


def test_signed_storage_urls(service):
    (service.root / "b").mkdir(parents=True)
    (service.root / "b" / "img.png").write_bytes(b"png")
    (service.root / "secret.txt").write_text("outside any bucket")
    signer: Signer = service.app.state.jobs.signer
    url = signer.url("s3://b/img.png")
    assert httpx.get(service.url + url).content == b"png"
    assert httpx.get(service.url + url.replace("sig=", "sig=0")).status_code == 404  # tampered
    assert httpx.get(service.url + "/storage/b/img.png").status_code == 404  # unsigned
    expired = signer.url("s3://b/img.png", now=time.time() - 7200)
    assert httpx.get(service.url + expired).status_code == 404
    # a valid signature for a path that leaves the root is still refused
    for path in ("b/../secret.txt", "b/%2e%2e/secret.txt", "../secret.txt", ".gtrun/signing-key"):
        expires = int(time.time()) + 60
        sig = signer._sig(path, expires)
        r = httpx.get(f"{service.url}/storage/{path}?expires={expires}&sig={sig}")
        assert r.status_code == 404 and b"outside" not in r.content


def test_listens_on_loopback_by_default(tmp_path):
    svc = Service(tmp_path / "s", port=0)
    try:
        assert svc.sock.getsockname()[0] == "127.0.0.1"
        assert svc.url.startswith("http://127.0.0.1:")
    finally:
        svc.sock.close()


def test_a_loopback_service_answers_loopback_names_only(service):
    """A web page whose name its attacker rebinds to 127.0.0.1 (DNS rebinding) reaches a loopback
    service as its own origin, with its own name in Host: it could read the task data, answer and
    stop jobs. A service on loopback answers only requests that name the loopback."""
    sm = sagemaker(service.url)
    sm.create_labeling_job(**put_job(service.root, "private", [{"source": "secret tweet"}], labels=["A", "B"]))
    port = service.port
    for host in ("attacker.example", f"attacker.example:{port}", f"127.0.0.1.nip.io:{port}"):
        for r in (httpx.get(service.url + "/", headers={"Host": host}),
                  httpx.get(service.url + "/jobs/private/", headers={"Host": host}),
                  httpx.post(service.url + "/", headers={"Host": host, "X-Amz-Target": "SageMaker.StopLabelingJob"},
                             content=b'{"LabelingJobName": "private"}')):
            assert r.status_code == 400 and "secret" not in r.text and "--host" in r.text, (host, r.text)
    assert sm.describe_labeling_job(LabelingJobName="private")["LabelingJobStatus"] != "Stopped"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", "localhost", f"[::1]:{port}"):
        assert httpx.get(service.url + "/", headers={"Host": host}).status_code == 200, host
    assert "secret tweet" in Worker(service.url).task("private")["html"]


def test_a_service_on_another_address_answers_any_name(tmp_path):
    with Service(tmp_path / "s", host="127.0.0.2", port=0).running() as svc:  # as --host 0.0.0.0 would
        r = httpx.get(f"{svc.url}/", headers={"Host": f"labeling.example:{svc.port}"})
        assert r.status_code == 200


def test_a_malformed_preview_request_is_one_400(service):
    for body in ("{not json", "[1]", '{"template": 3, "input": {}}', '{"template": "x"}', "[" * 100_000):
        r = httpx.post(f"{service.url}/preview", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["message"].startswith("send {"), (body[:20], r.text)
    r = httpx.post(f"{service.url}/preview", json={"template": "<p>{{ task.input.source }}</p>", "input": {"source": "hi"}})
    assert r.status_code == 200 and "hi" in httpx.get(f"{service.url}{r.json()['url']}").text

