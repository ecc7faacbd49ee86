"""Synthetic bins in ABID layout, so everything runs offline.

Each bin is drawn like an ABID photo: a fabric pod seen from the front (back wall, side walls,
floor), items as boxes, books and bags of varied colour, size and rotation, some overlapping
and partly hidden, elastic straps across the front, and uneven lighting. The metadata lists
made-up products (ASIN, name, dimensions, weight), sometimes with quantity > 1 of one product.

Counts follow ABID's histogram by default (`ABID_COUNT_SHARES`: about a third of the bins hold more than 5
items, up to 15 here); `counts="uniform"` draws 0..max_count evenly, as the generator did before.

With `mismatch_rate > 0` some bins get metadata whose EXPECTED_QUANTITY differs from the
number of items drawn (a stock mismatch), in both directions and across any class boundary (see
`mismatched_record`); `truth.csv` records what was really drawn.

Every bin is a pure function of (seed, index), so a run is reproducible and parallel
generation gives the same bytes as sequential.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from data_tools.layout import IMAGES_DIR, METADATA_DIR, normalize_bin_id

TRUTH = "truth.csv"
TRUTH_FIELDS = ("bin_id", "drawn_count", "expected_quantity", "mismatch")

# ABID pods are mostly yellow-beige fabric; a few are grey
_FABRICS = [(204, 188, 120), (194, 176, 108), (214, 198, 140), (186, 172, 128), (160, 158, 150)]
# cardboard, paper and plastic tones dominate real bins; printed colours are the exception
_NEUTRALS = [(168, 128, 86), (150, 112, 74), (186, 152, 110), (228, 226, 218), (205, 200, 190), (60, 58, 56),
             (120, 118, 112)]
_BRANDS = ["Acme", "Northwind", "Café Bleu", "Müller & Söhne", "Señor Verde", "Ōkami", "BrightLine", "Kestrel",
           "Hofmann", "Zephyr", "Lumière", "Tundra", "Quokka", "Vantage", "Élan"]
_ADJECTIVES = ["Premium", "Compact", "Deluxe", "Organic", "Wireless", "Stainless", "Classic", "Ultra", "Mini",
               "Heavy-Duty", "Eco", "Portable", "Rechargeable", "Vintage", "Soft-Touch"]
_NOUNS = {
    "box": ["Oil Filter", "Phone Charger", "Coffee Grinder", "LED Bulb 4-Pack", "Board Game", "Desk Lamp",
            "Toner Cartridge", "Bluetooth Speaker", "Tea Sampler", "Screwdriver Set"],
    "book": ["Paperback Novel", "Cookbook", "Notebook A5", "Travel Guide", "Colouring Book", "Field Manual",
             "Sketchbook", "Workbook"],
    "bag": ["Gummy Bears 1kg", "Dog Treats", "Cable Organizer Pouch", "Yoga Socks", "Zip Ties 100pc",
            "Potting Soil", "Baby Wipes", "Cotton T-Shirt"],
}
_KINDS = ("box", "book", "bag")

# Shares of bins holding 0..15 items, shaped like ABID's count histogram. Sources: abid_challenge's dataset
# statistics (535,234 bins, mean 5.1 items, 90% hold fewer than 10) and its counting split (36,032 of the
# 53,523 validation bins, 67.3%, hold 0-5 items; always predicting 3 scores 24.8% there, so 3 items is
# 16.7% of all bins). Counts 1, 2, 4 and 5 keep their ratios to 3 from the 1-5 class sizes of the public
# ABID counting subset (1,228 / 2,299 / 2,666 / 2,373 / 1,875 bins); empty bins get the rest of the 67.3%.
# Above 5 the share decays geometrically so that 10% of bins hold 10 or more (ABID's tail runs much further;
# here it stops at 15). Mean 4.9 items.
ABID_COUNT_SHARES: tuple[float, ...] = (
    0.019, 0.077, 0.144, 0.167, 0.149, 0.117,  # 0-5: 67.3%
    0.085, 0.063, 0.046, 0.033,  # 6-9: 22.7%
    0.024, 0.020, 0.017, 0.014, 0.013, 0.012,  # 10-15: 10.0%
)
COUNT_DISTRIBUTIONS = ("abid", "uniform")
# Share of injected mismatches whose record is a count drawn afresh from ABID's histogram (a record of 9 on a
# bin of 3, of 4 on a bin of 8) instead of one or two items off the truth.
FAR_MISMATCH_SHARE = 0.25


@dataclass(frozen=True)
class SynthOptions:
    n: int
    out: Path
    seed: int = 0
    max_count: int = len(ABID_COUNT_SHARES) - 1  # counts drawn are 0..max_count
    counts: str = "abid"  # "abid": ABID_COUNT_SHARES cut at max_count; "uniform": 0..max_count evenly
    mismatch_rate: float = 0.0
    width: int = 320
    height: int = 288
    size_jitter: float = 0.15  # photos vary in size like ABID's
    start_id: int = 1
    count_weights: tuple[float, ...] | None = None  # weights of 0, 1, ...; wins over `counts`
    quality: int = 88
    workers: int = 1
    images: bool = True  # False: metadata and truth only (fast; for benchmarks of metadata handling)


@dataclass(frozen=True)
class Product:
    kind: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    rel_w: float  # item size as a fraction of the photo width
    rel_h: float
    asin: str
    name: str
    quantity: int
    dims_in: tuple[float, float, float]
    weight_lb: float


def _colour(rng: np.random.Generator, neutral_share: float = 0.55) -> tuple[int, int, int]:
    if rng.random() < neutral_share:
        base = _NEUTRALS[int(rng.integers(0, len(_NEUTRALS)))]
        return _shade(base, float(rng.uniform(0.85, 1.12)))
    hue = rng.random()
    sat = 0.2 + 0.55 * rng.random()
    val = 0.35 + 0.6 * rng.random()
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _asin(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "B0" + "".join(alphabet[i] for i in rng.integers(0, len(alphabet), 8))


def make_product(rng: np.random.Generator, quantity: int) -> Product:
    kind = _KINDS[int(rng.integers(0, 3))]
    if kind == "book":
        rel_w, rel_h = rng.uniform(0.16, 0.28), rng.uniform(0.22, 0.36)
    elif kind == "bag":
        rel_w, rel_h = rng.uniform(0.2, 0.36), rng.uniform(0.16, 0.3)
    else:
        rel_w, rel_h = rng.uniform(0.14, 0.36), rng.uniform(0.12, 0.3)
    noun = _NOUNS[kind][int(rng.integers(0, len(_NOUNS[kind])))]
    name = f"{_BRANDS[int(rng.integers(0, len(_BRANDS)))]} {_ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))]} {noun}"
    depth = rng.uniform(0.4, 1.5) if kind == "book" else rng.uniform(1.0, 6.0)
    return Product(
        kind=kind, colour=_colour(rng), accent=_colour(rng, neutral_share=0.2), rel_w=float(rel_w), rel_h=float(rel_h),
        asin=_asin(rng), name=name, quantity=quantity,
        dims_in=(round(float(rel_w) * 40, 2), round(float(rel_h) * 40, 2), round(float(depth), 2)),
        weight_lb=round(float(rng.uniform(0.05, 4.0)), 3),
    )


def split_quantity(rng: np.random.Generator, total: int) -> list[int]:
    """Split `total` units over 1..total products; repeated units of one product are common in ABID."""
    if total == 0:
        return []
    n_products = int(rng.integers(1, total + 1))
    cuts = sorted(rng.choice(np.arange(1, total), size=n_products - 1, replace=False).tolist()) if n_products > 1 else []
    bounds = [0, *cuts, total]
    return [bounds[i + 1] - bounds[i] for i in range(n_products)]


def metadata_doc(products: Sequence[Product]) -> dict:
    data = {}
    for p in products:
        length, width, height = p.dims_in
        data[p.asin] = {
            "asin": p.asin,
            "height": {"unit": "IN", "value": height},
            "length": {"unit": "IN", "value": length},
            "name": p.name,
            "normalizedName": p.name,
            "quantity": p.quantity,
            "weight": {"unit": "pounds", "value": p.weight_lb},
            "width": {"unit": "IN", "value": width},
        }
    return {"BIN_FCSKU_DATA": data, "EXPECTED_QUANTITY": sum(p.quantity for p in products)}


# ---------------------------------------------------------------- drawing

def _shade(c: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(v * k))) for v in c)  # type: ignore[return-value]


def _label_plate(rng: np.random.Generator, d: ImageDraw.ImageDraw, x: int, y: int, w: int, h: int) -> None:
    """The bin's code plate on the lip: white card, a few glyph blocks and a QR-like square."""
    d.rectangle((x, y, x + w, y + h), fill=(236, 234, 226))
    glyph = max(2, h // 2)
    for k in range(3):
        gx = x + h // 3 + k * (glyph + 2)
        d.rectangle((gx, y + h // 4, gx + glyph - 1, y + 3 * h // 4), fill=(40, 40, 44))
    qx, cell = x + w - h, max(1, (h - 4) // 5)
    for i in range(5):
        for j in range(5):
            if rng.random() < 0.5:
                d.rectangle((qx + i * cell, y + 2 + j * cell, qx + (i + 1) * cell - 1, y + 2 + (j + 1) * cell - 1),
                            fill=(30, 30, 34))


_LIP_TOP, _LIP_BOTTOM = 0.05, 0.07  # the pod's front edges, as fractions of the photo height


def _draw_pod(rng: np.random.Generator, w: int, h: int, fabric: tuple[int, int, int]
              ) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The empty fabric pod seen from the front; returns it and the box where items may sit."""
    img = Image.new("RGB", (w, h), _shade(fabric, 0.72))
    d = ImageDraw.Draw(img)
    lip_top, lip_bottom = int(h * _LIP_TOP), int(h * _LIP_BOTTOM)
    left, right = int(w * rng.uniform(0.03, 0.1)), int(w * (1 - rng.uniform(0.03, 0.1)))
    top, back_bottom = lip_top + int(h * rng.uniform(0.03, 0.08)), int(h * rng.uniform(0.6, 0.75))
    d.rectangle((left, top, right, back_bottom), fill=_shade(fabric, 0.92))  # back wall
    d.polygon([(left, back_bottom), (right, back_bottom), (w, h), (0, h)], fill=fabric)  # floor
    d.polygon([(0, 0), (left, top), (left, back_bottom), (0, h)], fill=_shade(fabric, 0.78))  # left wall
    d.polygon([(w, 0), (right, top), (right, back_bottom), (w, h)], fill=_shade(fabric, 0.84))  # right wall
    for x in np.linspace(left, right, int(rng.integers(2, 5)))[1:-1]:  # fabric seams
        d.line([(int(x), top), (int(x), back_bottom)], fill=_shade(fabric, 0.82), width=max(1, w // 200))
    return img, (0, lip_top, w, h - lip_bottom)


def _draw_lips(rng: np.random.Generator, img: Image.Image, fabric: tuple[int, int, int]) -> None:
    """The front edges of the pod (drawn over the items) with their label plates."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    lip_top, lip_bottom = int(h * _LIP_TOP), int(h * _LIP_BOTTOM)
    d.rectangle((0, 0, w, lip_top), fill=_shade(fabric, 1.05))
    d.rectangle((0, h - lip_bottom, w, h), fill=_shade(fabric, 1.05))
    plate_w = int(w * rng.uniform(0.25, 0.35))
    _label_plate(rng, d, int(w * rng.uniform(0.3, 0.45)), 1, plate_w, max(4, lip_top - 2))
    _label_plate(rng, d, int(w * rng.uniform(0.3, 0.45)), h - lip_bottom + 1, plate_w, max(4, lip_bottom - 2))


def _item_sprite(rng: np.random.Generator, p: Product, w: int, h: int) -> Image.Image:
    iw, ih = max(6, int(p.rel_w * w * rng.uniform(0.92, 1.08))), max(6, int(p.rel_h * w * rng.uniform(0.92, 1.08)))
    sprite = Image.new("RGBA", (iw, ih), (0, 0, 0, 0))
    d = ImageDraw.Draw(sprite)
    line = max(1, iw // 40)
    if p.kind == "box":
        top_band = max(2, ih // 5)
        d.rectangle((0, 0, iw - 1, ih - 1), fill=(*p.colour, 255), outline=(*_shade(p.colour, 0.5), 255), width=line)
        d.rectangle((0, 0, iw - 1, top_band), fill=(*_shade(p.colour, 1.3), 255))
        d.rectangle((int(iw * 0.15), int(ih * 0.45), int(iw * 0.6), int(ih * 0.8)), fill=(235, 235, 230, 255))
        for x in range(int(iw * 0.18), int(iw * 0.57), max(2, iw // 30)):  # barcode
            d.line([(x, int(ih * 0.55)), (x, int(ih * 0.75))], fill=(20, 20, 20, 255), width=1)
        d.rectangle((int(iw * 0.45), 0, int(iw * 0.55), ih - 1), fill=(200, 180, 140, 170))  # tape
    elif p.kind == "book":
        spine = max(2, iw // 7)
        d.rectangle((0, 0, iw - 1, ih - 1), fill=(*p.colour, 255))
        d.rectangle((0, 0, spine, ih - 1), fill=(*_shade(p.colour, 0.6), 255))
        d.rectangle((iw - max(2, iw // 20), 2, iw - 1, ih - 3), fill=(240, 236, 220, 255))  # page edges
        for k in range(3):  # title lines
            y = int(ih * (0.18 + 0.1 * k))
            d.rectangle((spine + iw // 8, y, int(iw * (0.85 - 0.15 * k)), y + max(1, ih // 28)), fill=(*p.accent, 255))
        d.ellipse((int(iw * 0.35), int(ih * 0.5), int(iw * 0.8), int(ih * 0.85)), fill=(*p.accent, 220))
    else:  # a soft bag: wobbly outline, translucent plastic with highlights and crinkles
        n = 18
        cx, cy = iw / 2, ih / 2
        pts = []
        for k in range(n):
            a = 2 * math.pi * k / n
            r = 1 - 0.12 * rng.random()
            pts.append((cx + (iw / 2 - 1) * r * _superellipse(math.cos(a)),
                        cy + (ih / 2 - 1) * r * _superellipse(math.sin(a))))
        d.polygon(pts, fill=(*p.colour, 235), outline=(*_shade(p.colour, 0.6), 255))
        d.ellipse((int(iw * 0.3), int(ih * 0.3), int(iw * 0.7), int(ih * 0.7)), fill=(*p.accent, 230))
        for _ in range(3):
            x0, y0 = rng.uniform(0.15, 0.8) * iw, rng.uniform(0.15, 0.8) * ih
            d.line([(x0, y0), (x0 + iw * 0.15, y0 + ih * rng.uniform(-0.1, 0.1))], fill=(255, 255, 255, 140), width=line)
        d.line([(iw * 0.1, ih * 0.12), (iw * 0.9, ih * 0.12)], fill=(*_shade(p.colour, 0.5), 255), width=line * 2)  # seal
    return sprite.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BICUBIC, expand=True)


def _superellipse(v: float, power: float = 0.6) -> float:
    """A squarer-than-round outline for bags."""
    return math.copysign(abs(v) ** power, v)


def _place(rng: np.random.Generator, sprite: Image.Image, floor: tuple[int, int, int, int],
           placed: list[tuple[float, float, float]]) -> tuple[int, int]:
    """A position inside the floor box that does not hide earlier items completely."""
    x0, y0, x1, y1 = floor
    sw, sh = sprite.size
    best, best_gap = (x0, y0), -1.0
    radius = 0.35 * (sw + sh) / 2
    for _ in range(12):
        x = int(rng.uniform(x0, max(x0 + 1, x1 - sw)))
        y = int(rng.uniform(y0, max(y0 + 1, y1 - sh)))
        cx, cy = x + sw / 2, y + sh / 2
        gap = min((math.hypot(cx - px, cy - py) - (radius + pr) for px, py, pr in placed), default=1e9)
        if gap > 0:  # edges may overlap, centres stay apart: partly hidden, never fully
            return x, y
        if gap > best_gap:
            best, best_gap = (x, y), gap
    return best


def _draw_straps(rng: np.random.Generator, img: Image.Image) -> None:
    """Elastic bands across the front: each a sheaf of thin, translucent, slightly sagging strands."""
    w, h = img.size
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    tone = int(rng.integers(200, 240))
    for k in range(int(rng.integers(1, 4))):
        centre = h * (0.22 + 0.28 * k + rng.uniform(-0.06, 0.06))
        band = h * rng.uniform(0.06, 0.16)
        sag, slope = h * rng.uniform(0.0, 0.03), h * rng.uniform(-0.04, 0.04)
        spacing = max(2.0, h / 110)
        xs = np.linspace(0, w, 16)
        for offset in np.arange(-band / 2, band / 2, spacing):
            pts = [(float(x), float(centre + offset + slope * (x / w - 0.5) + sag * math.sin(math.pi * x / w)))
                   for x in xs]
            d.line(pts, fill=(tone, tone, tone - 8, int(rng.integers(90, 170))), width=1)
    img.paste(overlay, (0, 0), overlay)


def _light(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Uneven lighting: a soft spotlight, a global exposure change and sensor noise."""
    w, h = img.size
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.0, 0.6) * h
    dist = np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
    gain = rng.uniform(0.85, 1.15) * (1.2 - rng.uniform(0.3, 0.6) * dist)
    cast = np.array([1.0, rng.uniform(0.96, 1.0), rng.uniform(0.86, 0.96)], dtype=np.float32)  # warm lamps
    arr = arr * gain[..., None] * cast + rng.normal(0, 4.0, arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))


def render_bin(rng: np.random.Generator, w: int, h: int, units: Sequence[Product]) -> Image.Image:
    fabric = _FABRICS[int(rng.integers(0, len(_FABRICS)))]
    img, floor = _draw_pod(rng, w, h, fabric)
    placed: list[tuple[float, float, float]] = []
    shadow_blur = ImageFilter.GaussianBlur(radius=max(1, w // 120))
    for p in units:
        sprite = _item_sprite(rng, p, w, h)
        x, y = _place(rng, sprite, floor, placed)
        alpha = sprite.getchannel("A")
        shadow = Image.new("RGBA", sprite.size, (0, 0, 0, 110))
        shadow.putalpha(alpha.point(lambda a: a * 110 // 255).filter(shadow_blur))
        off = max(1, w // 90)
        img.paste(shadow, (x + off, y + off), shadow)
        img.paste(sprite, (x, y), sprite)
        sw, sh = sprite.size
        placed.append((x + sw / 2, y + sh / 2, 0.35 * (sw + sh) / 2))
    _draw_straps(rng, img)
    _draw_lips(rng, img, fabric)
    return _light(rng, img)


# ---------------------------------------------------------------- one bin, many bins

def count_probabilities(opts: SynthOptions) -> np.ndarray:
    """P(count = k) for k in 0..max_count: the weights given, else the named distribution cut at max_count."""
    size = opts.max_count + 1
    if opts.count_weights is not None:
        if len(opts.count_weights) > size:
            raise ValueError(f"{len(opts.count_weights)} count weights given for counts 0..{opts.max_count}")
        weights = np.zeros(size)
        weights[:len(opts.count_weights)] = opts.count_weights
    elif opts.counts == "abid":
        weights = np.zeros(size)
        shares = ABID_COUNT_SHARES[:size]
        weights[:len(shares)] = shares
    elif opts.counts == "uniform":
        weights = np.ones(size)
    else:
        raise ValueError(f"unknown count distribution {opts.counts!r}; choose one of {', '.join(COUNT_DISTRIBUTIONS)}")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("count weights must be non-negative numbers, not all zero")
    return weights / weights.sum()


def mismatched_record(rng: np.random.Generator, drawn: int) -> int:
    """A stock record that disagrees with the `drawn` items, too high or too low.

    Mostly one or two items off; a `FAR_MISMATCH_SHARE` of records is any other count from ABID's histogram,
    so records cross every class boundary both ways (a record of 9 on a bin of 3, of 4 on a bin of 8).
    """
    if rng.random() < FAR_MISMATCH_SHARE:
        shares = np.asarray(ABID_COUNT_SHARES)
        if drawn < len(shares):
            shares[drawn] = 0.0
        return int(rng.choice(len(shares), p=shares / shares.sum()))
    delta = int(rng.choice([-2, -1, 1, 2], p=[0.15, 0.35, 0.35, 0.15]))
    claim = drawn + delta
    return claim if claim >= 0 else drawn + abs(delta)


def synth_bin(opts: SynthOptions, index: int) -> tuple[str, bytes | None, bytes, tuple[str, int, int, int]]:
    """(bin id, JPEG bytes or None, metadata JSON bytes, truth row) for bin number `index`."""
    rng = np.random.default_rng([opts.seed, index])
    bin_id = normalize_bin_id(opts.start_id + index)
    drawn = int(rng.choice(opts.max_count + 1, p=count_probabilities(opts)))
    mismatch = bool(rng.random() < opts.mismatch_rate)
    claimed = mismatched_record(rng, drawn) if mismatch else drawn

    products = [make_product(rng, q) for q in split_quantity(rng, claimed)]
    units = [p for p in products for _ in range(p.quantity)]
    rng.shuffle(units)
    if drawn < claimed:  # stock says more than the bin holds: some listed units are missing
        units = units[:drawn]
    elif drawn > claimed:  # the bin holds units nobody recorded
        extra = make_product(rng, drawn - claimed)
        units += [extra] * extra.quantity

    meta = json.dumps(metadata_doc(products), indent=4, ensure_ascii=False).encode("utf-8")
    truth = (bin_id, drawn, claimed, int(drawn != claimed))
    if not opts.images:
        return bin_id, None, meta, truth
    jitter = 1 + opts.size_jitter * rng.uniform(-1, 1, size=2)
    w, h = max(32, int(opts.width * jitter[0])), max(32, int(opts.height * jitter[1]))
    buf = io.BytesIO()
    render_bin(rng, w, h, units).save(buf, "JPEG", quality=opts.quality)
    return bin_id, buf.getvalue(), meta, truth


def _write_chunk(opts: SynthOptions, indices: Sequence[int]) -> list[tuple[str, int, int, int]]:
    truth = []
    for index in indices:
        bin_id, jpeg, meta, row = synth_bin(opts, index)
        if jpeg is not None:
            (opts.out / IMAGES_DIR / f"{bin_id}.jpg").write_bytes(jpeg)
        (opts.out / METADATA_DIR / f"{bin_id}.json").write_bytes(meta)
        truth.append(row)
    return truth


def generate(opts: SynthOptions, progress: bool | None = None) -> list[tuple[str, int, int, int]]:
    """Write `opts.n` bins under `opts.out` in ABID layout plus truth.csv; returns the truth rows."""
    if opts.n < 0:
        raise ValueError("n must not be negative")
    if not 0.0 <= opts.mismatch_rate <= 1.0:
        raise ValueError("mismatch rate must lie in [0, 1]")
    count_probabilities(opts)
    if opts.images:
        (opts.out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (opts.out / METADATA_DIR).mkdir(parents=True, exist_ok=True)
    chunk = 64 if opts.images else 2048
    chunks = [list(range(i, min(opts.n, i + chunk))) for i in range(0, opts.n, chunk)]
    truth: list[tuple[str, int, int, int]] = []
    bar = tqdm(total=opts.n, desc="synth", unit="bin", disable=None if progress is None else not progress)
    if opts.workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(opts.workers) as pool:
            for rows in pool.map(_write_chunk, [opts] * len(chunks), chunks):
                truth += rows
                bar.update(len(rows))
    else:
        for chunk in chunks:
            truth += _write_chunk(opts, chunk)
            bar.update(len(chunk))
    bar.close()
    with (opts.out / TRUTH).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TRUTH_FIELDS)
        writer.writerows(truth)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k not in ("out", "workers")}
    (opts.out / "synth.json").write_text(json.dumps(options, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return truth


def read_truth(path: Path) -> dict[str, tuple[int, int, bool]]:
    """{bin id: (drawn count, expected quantity, mismatch)} from a truth.csv."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["bin_id"]: (int(r["drawn_count"]), int(r["expected_quantity"]), r["mismatch"] == "1")
                for r in csv.DictReader(fh)}
