"""The bundled sample data, regrown byte for byte from fixed seeds.

    python -m runner.samples [--out DIR]      # DIR defaults to the project's data/

writes
- ``tweets/labeling_prediction.csv``: tweets a sentiment model scored (the `tweets` source);
- ``receipts/receipts.jsonl`` and ``receipts/images/receipt-NNN.png``: receipt images with the
  OCR words drawn on them, their pixel boxes and the ground-truth entities (the `receipts` source).

Everything comes from seeded ``random.Random`` instances; nothing reads the clock.
The receipts use Pillow's built-in bitmap font (what ``ImageFont.load_default()`` returns without
FreeType), so pixels and boxes do not depend on the FreeType version; the text is drawn at 1x and
scaled up 2x with nearest-neighbour sampling, which keeps it crisp and the boxes exact.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TWEETS_CSV = Path("tweets/labeling_prediction.csv")
RECEIPTS_JSONL = Path("receipts/receipts.jsonl")
RECEIPT_IMAGES = Path("receipts/images")

TWEETS_SEED = 2026
RECEIPTS_SEED = 1881  # the year the cash register was patented
TWEET_COUNT = 400
RECEIPT_COUNT = 30
FIRST_TWEET_ID = 1001

# --------------------------------------------------------------------------------------------
# Tweets

ENTITIES = ("Borderlands", "Xbox", "NBA2K", "Nvidia", "Fortnite", "Microsoft", "Overwatch",
            "Amazon")
SENTIMENTS = ("Positive", "Negative", "Neutral", "Irrelevant")
SENTIMENT_WEIGHTS = (30, 30, 25, 15)
TWEET_COLUMNS = ("tweet_id", "entity", "tweet_text", "sentiment", "score", "date")
LOW_SCORE_SHARE = 0.45  # rows the model is unsure of (score < 0.8): what the tweets job labels

_BODIES = {
    "Positive": (
        "Just finished a {n}-hour {e} session and I'm still grinning",
        "{e} absolutely nailed the new update",
        "Can't stop playing {e}, best money I've spent this year",
        "Shoutout to the {e} team for fixing the servers so fast",
        "The new {e} trailer gave me chills",
        "{e} support sorted out my account in {n} minutes. Impressed",
    ),
    "Negative": (
        "{e} servers are down again. {n} hours of progress gone",
        "Why does {e} crash every time I open the map",
        "Asked for a refund. {e} is not worth it in this state",
        "The new {e} prices are a joke",
        "{e} support closed my ticket without reading it",
        "Lag spikes all night on {e}, unplayable",
    ),
    "Neutral": (
        "{e} patch notes are out today",
        "Anyone know when the {e} sale ends?",
        "Downloading the {e} update now, {n} GB to go",
        "The {e} event starts at {n}:00 UTC on Friday",
        "Watching {e} streams while dinner cooks",
        "Reading through the {e} quarterly report",
    ),
    "Irrelevant": (
        "Saw a {e} billboard on the way to work. Anyway, my sourdough finally rose",
        "My cat walked across the keyboard mid {e} match, she is the real MVP of naps",
        "Left my {e} hoodie at the gym, again",
        "Rainy Monday, coffee number {n}. Nothing to do with {e}",
        "Who else is watching the football tonight? Not {e} related",
    ),
}
_OPENERS = ("", "", "", "", "Honestly, ", "ok so ", "@{handle} ", "Update: ")
_CLOSERS = ("", "", "", "", " #{tag}", " lol", "!!", " #gaming")
_HANDLES = ("pixelpete", "gamer_kat", "nova_plays", "lagking", "mo_reviews", "quietqueue")

# The awkward rows every consumer must survive: CSV quoting, non-ASCII, control characters, HTML
# (which the worker templates must show escaped). {t} is the ordinary text, {e} the entity.
AWKWARD_TEXTS = (
    '{t}, "{e}" fans know, right?',
    "{t} \U0001f3ae\U0001f525",
    "{t} \u2014 caf\u00e9 cr\u00e8me time, tr\u00e8s bien, se\u00f1or Zo\u00eb",
    "{t}\t#{e}",
    "{t}.\nEdit: {e} replied, still waiting",
    "<b>bold</b> & <script>alert(1)</script> {t}",
    '"{t}"',
)
AWKWARD_EVERY = 9  # one row in nine is awkward


def tweet_text(rng: random.Random, entity: str, sentiment: str, awkward: str | None) -> str:
    """One generated tweet about `entity` in the tone of `sentiment`, wrapped in `awkward`."""
    body = rng.choice(_BODIES[sentiment]).format(e=entity, n=rng.randint(2, 12))
    opener = rng.choice(_OPENERS).format(handle=rng.choice(_HANDLES))
    if opener.endswith((", ", "so ")) and not body.startswith(entity):
        body = body[0].lower() + body[1:]  # "Honestly, the new ..."
    closer = rng.choice(_CLOSERS).format(tag=entity.lower())
    text = opener + body + closer
    return awkward.format(t=text, e=entity) if awkward else text


def predicted(rng: random.Random, truth: str, score: float) -> str:
    """The model's label: right when it is sure, a coin flip away from the truth when it is not."""
    if score >= 0.8 or rng.random() < 0.5:
        return truth
    return rng.choice([s for s in SENTIMENTS if s != truth])


def tweet_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """`n` scored tweets, ordered by tweet_id; `score` is a 3-decimal string, `date` ISO."""
    rows = []
    for i in range(n):
        entity = rng.choice(ENTITIES)
        truth = rng.choices(SENTIMENTS, weights=SENTIMENT_WEIGHTS)[0]
        unsure = rng.random() < LOW_SCORE_SHARE
        # Integers in thousandths, so rounding can never push 0.7999 up to the threshold.
        score = rng.randint(300, 799) / 1000 if unsure else rng.randint(800, 999) / 1000
        awkward = (AWKWARD_TEXTS[(i // AWKWARD_EVERY) % len(AWKWARD_TEXTS)]
                   if i % AWKWARD_EVERY == AWKWARD_EVERY // 2 else None)
        rows.append({
            "tweet_id": FIRST_TWEET_ID + i,
            "entity": entity,
            "tweet_text": tweet_text(rng, entity, truth, awkward),
            "sentiment": predicted(rng, truth, score),
            "score": f"{score:.3f}",
            "date": (date(2026, 1, 1) + timedelta(days=rng.randrange(365))).isoformat(),
        })
    return rows


def tweets_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as UTF-8 CSV with a header; fields with commas, quotes or newlines are quoted."""
    buf = io.StringIO(newline="")
    # "\n" rows: one line ending throughout, so a newline inside a quoted text is unambiguous.
    writer = csv.DictWriter(buf, fieldnames=TWEET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------------
# Receipts

ENTITY_LABELS = ("vendor", "date", "total", "tax", "item", "address")
SCALE = 2  # drawn at 1x, saved at 2x
CANVAS_WIDTH = 180  # 1x; the image is SCALE times wider
MARGIN = 8
LINE_HEIGHT = 13
RULE = "-" * 27

_VENDORS = (  # name, street, city, what it sells
    ("CORNER CAFE", "12 Market Street", "Springfield, OR 97477", "cafe"),
    ("BYTE BAKERY", "7 Baker Lane", "Eugene, OR 97401", "cafe"),
    ("SUNRISE DELI", "220 Elm Street", "Bend, OR 97701", "cafe"),
    ("GREEN GROCER", "48 Oak Avenue", "Portland, OR 97205", "grocery"),
    ("VALLEY MARKET", "301 Main St", "Salem, OR 97301", "grocery"),
    ("HARBOR BOOKS", "5 Pier Road", "Astoria, OR 97103", "shop"),
    ("MOUNTAIN GEAR", "9 Summit Way", "Hood River, OR 97031", "shop"),
    ("CITY PHARMACY", "77 Center Blvd", "Medford, OR 97501", "pharmacy"),
)
_ITEMS = {  # name, price in cents; at least 7 each (a receipt has 3 to 7 lines)
    "cafe": (("Oat milk latte", 450), ("Croissant", 325), ("Bagel", 275), ("Green tea", 300),
             ("Muffin", 350), ("Sandwich", 875), ("Soup of the day", 695), ("Orange juice", 395)),
    "grocery": (("Apples 1kg", 349), ("Sourdough loaf", 650), ("Olive oil", 1199),
                ("Coffee beans", 1450), ("Chocolate bar", 199), ("Eggs 12", 429),
                ("Whole milk", 259), ("Basmati rice", 389)),
    "shop": (("Paperback novel", 1599), ("Notebook", 599), ("Hiking socks", 1800),
             ("Water bottle", 2200), ("Trail map", 899), ("Headlamp", 3499), ("Gift card", 2500)),
    "pharmacy": (("Aspirin", 749), ("Sunscreen", 1299), ("Plasters", 425), ("Toothpaste", 389),
                 ("Vitamin C", 999), ("Hand cream", 675), ("Cough drops", 349)),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Segment:
    """Words drawn together on one line; tokens with the same `entity` key form one entity."""

    text: str
    align: str = "left"  # left | right | center
    entity: str | None = None  # e.g. "item:2"; the label is the part before ":"


@dataclass(frozen=True)
class Token:
    text: str
    xy: tuple[int, int]  # where it is drawn, 1x
    box: tuple[int, int, int, int]  # left, top, width, height, 1x
    entity: str | None


def money(cents: int) -> str:
    """Cents as a till prints them.

    >>> money(1205)
    '12.05'
    """
    return f"{cents // 100}.{cents % 100:02d}"


def receipt_date(rng: random.Random) -> list[Segment]:
    """The date line, in one of the formats tills print; only the date words are the entity."""
    day = date(2026, 1, 1) + timedelta(days=rng.randrange(365))
    text = rng.choice((day.isoformat(), day.strftime("%d/%m/%Y"),
                       f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"))
    clock = f"{rng.randint(7, 21):02d}:{rng.randrange(60):02d}"
    return [Segment("Date:"), Segment(text, entity="date:0"), Segment(clock, "right")]


def receipt_lines(rng: random.Random) -> list[list[Segment]]:
    """The printed lines of one random receipt: header, items with prices, tax and total."""
    vendor, street, city, kind = rng.choice(_VENDORS)
    items = rng.sample(_ITEMS[kind], rng.randint(3, 7))
    lines = [
        [Segment(vendor, "center", "vendor:0")],
        [Segment(street, "center", "address:0")],
        [Segment(city, "center", "address:0")],
        [Segment(f"Tel 555-{rng.randrange(10000):04d}", "center")],
        receipt_date(rng),
        [Segment(RULE)],
    ]
    subtotal = 0
    for i, (name, unit) in enumerate(items):
        qty = rng.choices((1, 2, 3), weights=(6, 2, 1))[0]
        subtotal += qty * unit
        label = f"{qty}x {name}" if qty > 1 else name
        key = f"item:{i}"
        lines.append([Segment(label, entity=key), Segment(money(qty * unit), "right", key)])
    rate = rng.choice((5, 8, 10))
    tax = (subtotal * rate + 50) // 100
    lines += [
        [Segment(RULE)],
        [Segment("Subtotal"), Segment(money(subtotal), "right")],
        [Segment(f"Tax {rate}%"), Segment(money(tax), "right", "tax:0")],
        [Segment("TOTAL"), Segment(money(subtotal + tax), "right", "total:0")],
        [Segment("Thank you!", "center")],
    ]
    return lines


def receipt_font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font: FreeType-independent, so pixels and boxes are stable."""
    # load_default_imagefont() is Pillow >= 10.1; before that load_default() returned this font.
    loader = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    font = loader()
    assert isinstance(font, ImageFont.ImageFont)  # either loader gives the bitmap font (see above)
    return font


def layout(lines: Sequence[Sequence[Segment]], draw: ImageDraw.ImageDraw,
           font: ImageFont.ImageFont) -> list[Token]:
    """Every word of `lines` with where it is drawn and its `draw.textbbox`, at 1x."""
    space = round(draw.textlength(" ", font=font))
    tokens = []
    for row, segments in enumerate(lines):
        y = MARGIN + row * LINE_HEIGHT
        cursor = MARGIN  # left-aligned segments follow one another
        for seg in segments:
            words = seg.text.split()
            widths = [round(draw.textlength(w, font=font)) for w in words]
            span = sum(widths) + space * (len(words) - 1)
            x = {"left": cursor, "right": CANVAS_WIDTH - MARGIN - span,
                 "center": (CANVAS_WIDTH - span) // 2}[seg.align]
            for word, width in zip(words, widths, strict=False):
                # Pillow types the box as floats; a bitmap font drawn at whole pixels gives ints
                left, top, right, bottom = map(int, draw.textbbox((x, y), word, font=font))
                tokens.append(Token(word, (x, y), (left, top, right - left, bottom - top),
                                    seg.entity))
                x += width + space
            if seg.align == "left":
                cursor = x
    return tokens


def canvas_height(lines: Sequence[Sequence[Segment]]) -> int:
    return 2 * MARGIN + len(lines) * LINE_HEIGHT


def draw_receipt(tokens: Sequence[Token], height: int, font: ImageFont.ImageFont) -> Image.Image:
    """The receipt as a grayscale image SCALE times the 1x canvas, black words on white paper."""
    image = Image.new("L", (CANVAS_WIDTH, height), 255)
    draw = ImageDraw.Draw(image)
    for token in tokens:
        draw.text(token.xy, token.text, font=font, fill=0)
    return image.resize((CANVAS_WIDTH * SCALE, height * SCALE), Image.Resampling.NEAREST)


def union(boxes: Sequence[Sequence[int]]) -> list[int]:
    """The [left, top, width, height] box that covers all `boxes`.

    >>> union([[1, 2, 3, 4], [10, 0, 2, 2]])
    [1, 0, 11, 6]
    """
    left = min(b[0] for b in boxes)
    top = min(b[1] for b in boxes)
    right = max(b[0] + b[2] for b in boxes)
    bottom = max(b[1] + b[3] for b in boxes)
    return [left, top, right - left, bottom - top]


def receipt_record(receipt_id: int, tokens: Sequence[Token], height: int) -> dict[str, Any]:
    """One receipts.jsonl object; boxes in pixels of the saved (scaled) image."""
    boxes = [[v * SCALE for v in t.box] for t in tokens]
    members: dict[str, list[int]] = {}
    for i, token in enumerate(tokens):
        if token.entity:
            members.setdefault(token.entity, []).append(i)
    # Key order is the column order DuckDB infers: tokens STRUCT(text, box), entities
    # STRUCT(label, box, tokens).
    return {
        "receipt_id": receipt_id,
        "image_file": image_file(receipt_id),
        "width": CANVAS_WIDTH * SCALE,
        "height": height * SCALE,
        "tokens": [{"text": t.text, "box": b} for t, b in zip(tokens, boxes, strict=False)],
        "entities": [{"label": key.split(":")[0], "box": union([boxes[i] for i in idx]),
                      "tokens": idx} for key, idx in members.items()],
    }


def image_file(receipt_id: int) -> str:
    return f"receipt-{receipt_id:03d}.png"


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)  # Pillow writes no timestamp chunk
    return buf.getvalue()


def receipts(rng: random.Random, n: int) -> list[tuple[dict[str, Any], Image.Image]]:
    """`n` receipts as (receipts.jsonl record, image), receipt_id 1..n."""
    font = receipt_font()
    scratch = ImageDraw.Draw(Image.new("L", (1, 1)))  # textbbox needs a Draw, not its pixels
    out = []
    for receipt_id in range(1, n + 1):
        lines = receipt_lines(rng)
        tokens = layout(lines, scratch, font)
        height = canvas_height(lines)
        out.append((receipt_record(receipt_id, tokens, height),
                    draw_receipt(tokens, height, font)))
    return out


# --------------------------------------------------------------------------------------------
# Writing


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runner.samples",
                                     description="Regrow gtrun's sample data.")
    parser.add_argument("--out", type=Path, default=DATA_DIR,
                        help=f"folder to write into (default: {DATA_DIR})")
    out: Path = parser.parse_args(argv).out
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = tweet_rows(random.Random(TWEETS_SEED), TWEET_COUNT)
    write_file(out / TWEETS_CSV, tweets_csv(rows))
    log.info("wrote %d tweets to %s", len(rows), out / TWEETS_CSV)

    made = receipts(random.Random(RECEIPTS_SEED), RECEIPT_COUNT)
    images = out / RECEIPT_IMAGES
    for record, image in made:
        write_file(images / record["image_file"], png(image))
    keep = {record["image_file"] for record, _ in made}
    for stale in sorted(images.glob("receipt-*.png")):  # left over from a larger RECEIPT_COUNT
        if stale.name not in keep:
            stale.unlink()
    lines = "".join(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
                    for record, _ in made)
    write_file(out / RECEIPTS_JSONL, lines.encode("utf-8"))
    log.info("wrote %d receipts to %s and %s", len(made), out / RECEIPTS_JSONL, images)


if __name__ == "__main__":
    main()
