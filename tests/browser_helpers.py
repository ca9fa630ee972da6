"""What the browser tests share: a mouse drag and a text selection in gtrun's crowd elements.

The `browser` fixture (Debian's Chromium driven by Playwright) is in conftest.py.
"""

from __future__ import annotations

from typing import Any

FIND_TEXT = """(needle) => {
  const root = document.querySelector('crowd-entity-annotation .crowd-entity-text');
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('.crowd-entity-tag, .crowd-entity-remove')) continue;
    const i = n.data.indexOf(needle);
    if (i < 0) continue;
    const r = document.createRange();
    r.setStart(n, i); r.setEnd(n, i + needle.length);
    if (window.__select) { const s = getSelection(); s.removeAllRanges(); s.addRange(r); return true; }
    r.setStart(n, i); r.setEnd(n, i + 1);
    const a = r.getBoundingClientRect();
    r.setStart(n, i + needle.length - 1); r.setEnd(n, i + needle.length);
    const b = r.getBoundingClientRect();
    return {x0: a.left + 1, y0: a.top + a.height / 2, x1: b.right - 1, y1: b.top + b.height / 2};
  }
  return null;
}"""


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=3)
    page.mouse.move(*end, steps=3)
    page.mouse.up()


def mouse_select(page: Any, needle: str) -> None:
    """Select `needle` in the entity text with a mouse drag across its characters."""
    where = page.evaluate(FIND_TEXT, needle)
    assert where, needle
    drag(page, (where["x0"], where["y0"]), (where["x1"], where["y1"]))
