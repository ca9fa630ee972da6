"""`gtrun preview`: real rows, rendered by the labeling service, screenshotted by Debian's Chromium."""

from PIL import Image


def test_preview_saves_a_screenshot_per_row(gtrun):
    r = gtrun("preview", "job=receipts_ner", "--rows", "2")
    assert r.code == 0, r.output
    shots = sorted((gtrun.cwd / "outputs" / "previews").rglob("*.png"))
    assert [p.name for p in shots] == ["row-001.png", "row-002.png"]
    for shot in shots:
        with Image.open(shot) as img:
            assert img.width == 1200 and img.height > 600
            # the receipt image was served and drawn: a white page on the dark image panel
            colors = img.convert("L").getcolors(maxcolors=1 << 20)
            assert max(count for count, value in colors if value > 250) > 50_000
    assert gtrun.jobs() == []  # nothing submitted
    # a second preview has a folder of its own, even in the same second
    assert gtrun("preview", "job=receipts_ner", "--rows", "1").code == 0
    folders = sorted(p for p in (gtrun.cwd / "outputs" / "previews").iterdir())
    assert len(folders) == 2 and [len(list(f.glob("*.png"))) for f in folders] == [2, 1]


def test_preview_of_a_template_that_needs_a_missing_field(gtrun, tmp_path):
    t = tmp_path / "t.liquid"
    t.write_text("<crowd-form>{{ task.input.nope }}</crowd-form>\n")
    r = gtrun("preview", "template=custom", f"template.file={t}")
    assert r.code == 2 and "task.input.nope" in r.stderr
