"""`gtrun preview`: the template rendered for real rows by the labeling service, as PNG screenshots."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from runner.errors import GtrunError
from runner.service.server import Service

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_path() -> str:
    """Debian's Chromium (the browser gtrun drives; `playwright install` is not needed)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise GtrunError("preview: no Chromium found; install Debian's `chromium` package")


def _post(url: str, data: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        raise GtrunError(f"preview: {json.loads(exc.read()).get('message', exc)}") from None


def screenshots(root: str, template: str, inputs: list[dict[str, Any]], folder: Path, title: str) -> list[Path]:
    """One full-page PNG per task input, rendered through a labeling service started for the call."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    with Service(root, port=0).running() as service, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            for i, task_input in enumerate(inputs, 1):
                made = _post(f"{service.url}/preview", {"template": template, "input": task_input, "title": title})
                page.goto(service.url + made["url"], wait_until="networkidle")
                path = folder / f"row-{i:03d}.png"
                page.screenshot(path=str(path), full_page=True)
                shots.append(path)
        finally:
            browser.close()
    return shots
