"""How a synthetic bin photo is drawn, matched by eye to real ABID photos.

A real ABID photo looks straight into one fabric pod bin: yellow fabric lips above and below (each with the
bin's code label), the yellow edges of the neighbouring bins at the sides, a shadowed back wall, and elastic
straps across the front (bands of many thin, light strands that hide a good part of the items). The items
stand or lie face-on, packed side by side and stacked, often several identical units of one product next to
each other; most are cardboard, white retail boxes, books and white or clear plastic bags. The camera leaves a
warm yellow cast, low contrast, often strong blur and noise, and JPEG artefacts.

Every item drawn stays at least `MIN_VISIBLE` visible (not hidden by other items or the lips), so the label
stays true. Identical units of one product share one drawn look. Pure function of the generator passed in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

# fabric of the pods: mostly yellow, some beige or grey
FABRICS: list[RGB] = [(222, 196, 104), (214, 190, 110), (228, 206, 128), (206, 186, 120), (200, 190, 150),
                      (176, 172, 160)]
# label plates on the lips
_LABEL_COLOURS: list[RGB] = [(238, 236, 228), (240, 150, 90), (236, 170, 180), (120, 150, 210), (240, 220, 120)]
# The least share of an item's own area that stays in view, drawn per bin: real bins hide items behind others
# (an ABID count includes items no camera sees), so some synthetic items show only a corner.
MIN_VISIBLE = (0.05, 0.35)
_REFERENCE_WIDTH = 487  # ABID's median photo width: blur and strand sizes are given at this width


class Item(Protocol):
    """What the renderer needs of a product: its kind, colours, size in the bin and a seed for its look."""

    kind: str
    colour: RGB
    accent: RGB
    rel_w: float  # width as a share of the bin's inside width
    rel_h: float  # height as a share of the bin's inside height
    look: int


def shade(c: Sequence[int], k: float) -> RGB:
    return tuple(max(0, min(255, int(v * k))) for v in c)  # type: ignore[return-value]


def _mix(a: Sequence[int], b: Sequence[int], t: float) -> RGB:
    return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


# ---------------------------------------------------------------- the pod

def _draw_pod(rng: np.random.Generator, w: int, h: int, fabric: RGB) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The inside of an empty pod and the neighbours' edges; returns the image and the inside box (x0, y0, x1, y1).

    Empty fabric is never flat: light falls off with depth, the cloth folds, side walls and the floor turn away
    from the camera. A model that took any flat region for "empty" would call a bin full of plain boxes empty.
    """
    top, bottom = int(h * rng.uniform(0.05, 0.12)), int(h * rng.uniform(0.07, 0.14))
    left, right = int(w * rng.uniform(0.0, 0.07)), int(w * rng.uniform(0.0, 0.07))
    depth = rng.uniform(0.3, 1.0)  # how dark the inside is
    wall = np.array(shade(_mix(fabric, (200, 196, 188), rng.uniform(0.1, 0.7)), depth), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = np.linspace(rng.uniform(0.7, 1.1), rng.uniform(0.8, 1.15), h, dtype=np.float32)[:, None]  # falls off
    folds = 1 + rng.uniform(0.03, 0.12) * np.sin(xx / w * rng.uniform(4, 14) + rng.uniform(0, 6.3)
                                                 + 0.8 * np.sin(yy / h * rng.uniform(1, 4)))
    inset = rng.uniform(0.06, 0.2)  # the side walls of the bin, in perspective: darker trapezoids
    side = np.minimum(xx / w, 1 - xx / w) < inset * (1 - 0.6 * yy / h)
    floor = yy > h * rng.uniform(0.6, 0.85)
    lighting = light * folds * np.where(side, rng.uniform(0.7, 0.9), 1.0) * np.where(floor, rng.uniform(0.9, 1.2), 1.0)
    grain = np.asarray(Image.fromarray(rng.normal(0, 6, (max(2, h // 12), max(2, w // 12))).astype(np.float32),
                                       mode="F").resize((w, h), Image.Resampling.BICUBIC))
    arr = wall[None, None, :] * lighting[..., None] + grain[..., None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for x in np.linspace(left, w - right, int(rng.integers(2, 5)))[1:-1]:  # seams in the back wall
        d.line([(int(x), 0), (int(x), h)], fill=shade(wall.astype(int), 0.85), width=max(1, w // 160))
    edge = shade(fabric, rng.uniform(0.8, 1.0))
    if left:
        d.rectangle((0, 0, left, h), fill=edge)
        d.line([(left, 0), (left, h)], fill=shade(edge, 0.7), width=max(1, w // 250))
    if right:
        d.rectangle((w - right, 0, w, h), fill=edge)
        d.line([(w - right, 0), (w - right, h)], fill=shade(edge, 0.7), width=max(1, w // 250))
    return img, (left, top, w - right, h - bottom)


def _draw_lips(rng: np.random.Generator, img: Image.Image, inside: tuple[int, int, int, int], fabric: RGB) -> None:
    """The fabric lips above and below the bin (opaque: they hide what is behind them), with code labels."""
    w, h = img.size
    _, top, _, bottom = inside
    d = ImageDraw.Draw(img)
    lip = shade(fabric, rng.uniform(0.95, 1.08))
    d.rectangle((0, 0, w, top), fill=lip)
    d.rectangle((0, bottom, w, h), fill=lip)
    d.line([(0, top), (w, top)], fill=shade(lip, 0.75), width=max(1, h // 120))
    d.line([(0, bottom), (w, bottom)], fill=shade(lip, 0.8), width=max(1, h // 120))
    for y0, y1 in ((0, top), (bottom, h)):
        lh = int((y1 - y0) * rng.uniform(0.5, 0.85))
        if lh >= 3:
            lw = int(lh * rng.uniform(2.5, 4.5))
            x = int(w * rng.uniform(0.25, 0.6))
            y = y0 + (y1 - y0 - lh) // 2
            _label(rng, d, x, y, lw, lh)


def _label(rng: np.random.Generator, d: ImageDraw.ImageDraw, x: int, y: int, w: int, h: int) -> None:
    """A bin code label: a coloured card, a few black glyphs, a QR-like square."""
    d.rectangle((x, y, x + w, y + h), fill=_LABEL_COLOURS[int(rng.integers(0, len(_LABEL_COLOURS)))])
    glyph = max(1, int(h * 0.45))
    for k in range(3):
        gx = x + max(1, h // 4) + k * (glyph + max(1, glyph // 3))
        d.rectangle((gx, y + h // 4, gx + glyph - 1, y + 3 * h // 4), fill=(30, 30, 34))
    q = max(2, int(h * 0.8))
    qx, qy = x + w - q - max(1, h // 8), y + (h - q) // 2
    d.rectangle((qx, qy, qx + q, qy + q), fill=(245, 245, 240))
    cell = max(1, q // 5)
    for i in range(5):
        for j in range(5):
            if rng.random() < 0.5:
                d.rectangle((qx + i * cell, qy + j * cell, qx + (i + 1) * cell - 1, qy + (j + 1) * cell - 1),
                            fill=(25, 25, 28))


def _draw_rod(rng: np.random.Generator, img: Image.Image, inside: tuple[int, int, int, int]) -> None:
    """Some bins have a metal tension rod across the top, with a hook."""
    x0, y0, x1, y1 = inside
    y = int(y0 + (y1 - y0) * rng.uniform(0.05, 0.35))
    d = ImageDraw.Draw(img)
    thick = max(1, img.size[1] // 70)
    d.line([(0, y), (img.size[0], y + int(rng.uniform(-0.03, 0.03) * img.size[1]))], fill=(150, 150, 150),
           width=thick)
    hx = int(img.size[0] * rng.uniform(0.3, 0.8))
    d.ellipse((hx, y - 2 * thick, hx + 5 * thick, y + 2 * thick), outline=(170, 170, 168), width=max(1, thick // 2))


def _draw_straps(rng: np.random.Generator, img: Image.Image, severity: float) -> None:
    """Elastic straps: up to three bands of many thin light strands, sagging a little, across the whole width."""
    w, h = img.size
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    scale = h / (_REFERENCE_WIDTH / 1.4)
    spacing = max(1.5, rng.uniform(2.8, 4.5) * scale)
    bands = int(np.clip(round(severity * 3 + rng.uniform(-0.6, 0.6)), 0, 3))
    centres = np.sort(rng.uniform(0.15, 0.9, size=bands))
    for centre in centres:
        band = h * rng.uniform(0.1, 0.3)
        sag, slope = h * rng.uniform(0.0, 0.03), h * rng.uniform(-0.03, 0.03)
        tone, alpha = int(rng.integers(225, 256)), int(rng.integers(160, 240))
        width = max(1, int(round(scale * rng.uniform(1.2, 2.4))))
        xs = np.linspace(0, w, 12)
        for offset in np.arange(-band / 2, band / 2, spacing):
            a = int(np.clip(alpha + rng.normal(0, 20), 60, 250))
            pts = [(float(x), float(h * centre + offset + slope * (x / w - 0.5) + sag * math.sin(math.pi * x / w)))
                   for x in xs]
            d.line(pts, fill=(tone, tone, tone - 8, a), width=width)
    img.paste(overlay, (0, 0), overlay)


# ---------------------------------------------------------------- items

def _face(rng: np.random.Generator, size: tuple[int, int], base: RGB, accent: RGB, kind: str) -> Image.Image:
    """The front of one product: its base colour with print, labels, tape or crinkles."""
    iw, ih = size
    img = Image.new("RGB", (iw, ih), base)
    d = ImageDraw.Draw(img)
    dark = shade(base, 0.45) if sum(base) > 240 else shade(base, 1.8)
    if kind == "book" and iw < ih * 0.45:  # standing spine-on: title bands across the spine
        for _ in range(int(rng.integers(1, 4))):
            y = int(ih * rng.uniform(0.05, 0.85))
            d.rectangle((0, y, iw, y + max(1, int(ih * rng.uniform(0.02, 0.08)))), fill=accent)
    elif kind == "book" and ih < iw * 0.35:  # lying flat: page edges
        d.rectangle((0, int(ih * 0.2), iw, int(ih * 0.8)), fill=(236, 232, 220))
        for y in range(int(ih * 0.25), int(ih * 0.8), max(2, ih // 6)):
            d.line([(0, y), (iw, y)], fill=(200, 196, 186))
    else:
        motif = rng.random()
        if motif < 0.35:  # a picture block
            x0, y0 = rng.uniform(0.05, 0.5) * iw, rng.uniform(0.05, 0.5) * ih
            box = (int(x0), int(y0), int(x0 + rng.uniform(0.25, 0.5) * iw), int(y0 + rng.uniform(0.2, 0.5) * ih))
            (d.ellipse if rng.random() < 0.4 else d.rectangle)(box, fill=accent)
        elif motif < 0.55:  # a printed band
            y0 = rng.uniform(0.0, 0.7) * ih
            d.rectangle((0, int(y0), iw, int(y0 + rng.uniform(0.1, 0.35) * ih)), fill=accent)
        elif motif < 0.7:  # stripes: domain randomisation
            step = max(2, int(iw * rng.uniform(0.05, 0.2)))
            for x in range(0, iw, 2 * step):
                d.rectangle((x, 0, x + step - 1, ih), fill=_mix(base, accent, 0.6))
        for _ in range(int(rng.integers(0, 5))):  # text lines
            x0, y0 = rng.uniform(0.05, 0.6) * iw, rng.uniform(0.05, 0.9) * ih
            d.rectangle((int(x0), int(y0), int(x0 + rng.uniform(0.15, 0.5) * iw), int(y0 + max(1, ih * 0.025))),
                        fill=dark)
        if kind == "box" and rng.random() < 0.5:  # shipping label with a barcode
            lx, ly = rng.uniform(0.05, 0.55) * iw, rng.uniform(0.1, 0.6) * ih
            lw, lh = rng.uniform(0.2, 0.4) * iw, rng.uniform(0.12, 0.3) * ih
            d.rectangle((int(lx), int(ly), int(lx + lw), int(ly + lh)), fill=(240, 240, 236))
            for x in range(int(lx + lw * 0.1), int(lx + lw * 0.9), max(2, int(lw // 12))):
                d.line([(x, int(ly + lh * 0.4)), (x, int(ly + lh * 0.85))], fill=(30, 30, 30))
        if kind == "box" and rng.random() < 0.4:  # tape
            tx = rng.uniform(0.3, 0.6) * iw
            d.rectangle((int(tx), 0, int(tx + max(2, iw * 0.08)), ih), fill=shade(base, 1.12))
    return img


def _bag_shape(rng: np.random.Generator, iw: int, ih: int) -> Image.Image:
    """A soft pack's outline: a wobbly rounded rectangle, as an L mask."""
    mask = Image.new("L", (iw, ih), 0)
    pts = []
    for k in range(20):
        a = 2 * math.pi * k / 20
        r = 1 - 0.1 * rng.random()
        pts.append((iw / 2 + (iw / 2 - 1) * r * math.copysign(abs(math.cos(a)) ** 0.5, math.cos(a)),
                    ih / 2 + (ih / 2 - 1) * r * math.copysign(abs(math.sin(a)) ** 0.5, math.sin(a))))
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    return mask


def item_sprite(item: Item, iw: int, ih: int) -> Image.Image:
    """The product's look at iw x ih px (RGBA): the same for every unit of one product in one bin."""
    rng = np.random.default_rng(item.look)
    iw, ih = max(3, iw), max(3, ih)
    face = _face(rng, (iw, ih), item.colour, item.accent, item.kind)
    lit = np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.7, 0.95), ih, dtype=np.float32)  # lit from above
    arr = np.asarray(face, dtype=np.float32) * lit[:, None, None]
    if item.kind == "bag":  # crinkles and highlights of plastic film
        arr += rng.normal(0, 10, (1, 1, 1)) + _crinkles(rng, iw, ih)[..., None]
    face = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(face)
    d.rectangle((0, 0, iw - 1, ih - 1), outline=shade(item.colour, 0.5), width=max(1, min(iw, ih) // 25))
    if item.kind == "bag":
        alpha = _bag_shape(rng, iw, ih)
        if rng.random() < 0.4:  # clear film: what is behind shows through
            alpha = alpha.point(lambda a: a * 200 // 255)
    else:
        alpha = Image.new("L", (iw, ih), 255)
    sprite = face.convert("RGBA")
    sprite.putalpha(alpha)
    return sprite


def _crinkles(rng: np.random.Generator, iw: int, ih: int) -> np.ndarray:
    """Low-frequency light and dark streaks of crumpled film, in grey levels around 0."""
    small = rng.normal(0, 14, (max(2, ih // 24), max(2, iw // 24))).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((iw, ih), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


# ---------------------------------------------------------------- layout

def _sizes(rng: np.random.Generator, items: Sequence[Item], inside: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Pixel sizes: each product's own shape, scaled so the bin is about as full as real bins with that many."""
    x0, y0, x1, y1 = inside
    bw, bh = x1 - x0, y1 - y0
    n = len(items)
    # the items' fronts add up to about this share of the inside: above 1 they hide each other. Real item sizes
    # hardly shrink with the count (a bin of five holds five big items, some behind the others), so neither do these
    fill = min(1.6, rng.uniform(0.45, 0.8) + 0.12 * n)
    area = sum(it.rel_w * it.rel_h for it in items)
    k = math.sqrt(fill / max(area, 1e-6))
    sizes = []
    for it in items:
        f = min(k, 0.92 / it.rel_w, 0.95 / it.rel_h)
        sizes.append((max(3, int(it.rel_w * f * bw)), max(3, int(it.rel_h * f * bh))))
    return sizes


def _layout(rng: np.random.Generator, sizes: Sequence[tuple[int, int]],
            inside: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """Top-left corners: side by side on the floor from a random start, stacked where a row is full, a few in front."""
    x0, y0, x1, y1 = inside
    bw, bh = x1 - x0, y1 - y0
    skyline = np.zeros(bw + 1, dtype=np.int32)  # height of what stands on each column, in px
    floor = y1 + int(bh * rng.uniform(0.0, 0.08))  # items sink a little behind the lower lip
    cursor = x0 + int(bw * rng.uniform(-0.05, 0.2))
    out = []
    for iw, ih in sizes:
        x = cursor + int(iw * rng.uniform(-0.1, 0.04))
        if x + iw > x1 + iw * 0.15 or rng.random() < 0.12:  # row full (or by chance): somewhere else, on top
            x = int(rng.uniform(x0 - 0.1 * iw, max(x0 - 0.1 * iw + 1, x1 - 0.9 * iw)))
        a, b = max(0, x - x0), min(bw, x - x0 + iw)
        base = int(skyline[a:b].max()) if b > a else 0
        if rng.random() < 0.15:  # in front of whatever is there (hides part of it)
            base = int(bh * rng.uniform(0.0, 0.05))
        y = floor - base - ih
        if b > a:
            skyline[a:b] = np.maximum(skyline[a:b], base + ih)
        out.append((x, y))
        cursor = max(cursor, x + iw)
    return out


def _least_visible(sprites: Sequence[Image.Image], positions: Sequence[tuple[int, int]], size: tuple[int, int],
                   inside: tuple[int, int, int, int]) -> float:
    """The smallest share of its own area that any item keeps in view (later items hide earlier ones; lips hide)."""
    w, h = size
    ids = np.zeros((h, w), dtype=np.int16)
    areas = []
    for k, (sprite, (x, y)) in enumerate(zip(sprites, positions, strict=True), start=1):
        mask = np.asarray(sprite.getchannel("A")) > 100
        areas.append(int(mask.sum()))
        sx0, sy0 = max(0, -x), max(0, -y)
        cx0, cy0, cx1, cy1 = max(0, x), max(0, y), min(w, x + sprite.size[0]), min(h, y + sprite.size[1])
        if cx1 > cx0 and cy1 > cy0:
            window = ids[cy0:cy1, cx0:cx1]
            window[mask[sy0:sy0 + cy1 - cy0, sx0:sx0 + cx1 - cx0]] = k
    ids[:inside[1]] = 0
    ids[inside[3]:] = 0
    visible = np.bincount(ids.ravel(), minlength=len(areas) + 1)[1:]
    return min((v / max(a, 1) for v, a in zip(visible, areas, strict=True)), default=1.0)


def _shadows(img: Image.Image, sprites: Sequence[Image.Image], positions: Sequence[tuple[int, int]]) -> None:
    """A soft dark halo under each item, so neighbours separate a little as in real light."""
    w, h = img.size
    layer = Image.new("L", (w, h), 0)
    for sprite, (x, y) in zip(sprites, positions, strict=True):
        layer.paste(sprite.getchannel("A").point(lambda a: 90 if a > 100 else 0), (x + max(1, w // 120), y))
    layer = layer.filter(ImageFilter.GaussianBlur(max(1, w // 100)))
    img.paste(Image.new("RGB", (w, h), (20, 16, 8)), (0, 0), layer)


# ---------------------------------------------------------------- the camera

def _camera(rng: np.random.Generator, img: Image.Image, severity: float) -> Image.Image:
    """Warm cast, haze (low contrast), uneven exposure, blur and sensor noise, the worse the higher `severity`."""
    w, h = img.size
    arr = np.asarray(img, dtype=np.float32)
    cast = np.array([1.0, rng.uniform(0.92, 0.99), rng.uniform(0.7, 0.9)], dtype=np.float32)
    haze = severity * rng.uniform(0.0, 0.3)
    haze_colour = np.array([205, 195, 160], dtype=np.float32) * rng.uniform(0.8, 1.1)
    gain = rng.uniform(0.8, 1.15)
    grey = arr.mean(axis=2, keepdims=True)
    arr = grey + (arr - grey) * (1 - severity * rng.uniform(0.1, 0.5))  # washed-out colours
    arr = (arr * cast * (1 - haze) + haze_colour * haze) * gain
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    scale = w / _REFERENCE_WIDTH
    radius = rng.uniform(0.3, 1.2) + (rng.uniform(1.0, 4.0) if severity > 0.8 else 0.0)  # a fifth badly blurred
    out = out.filter(ImageFilter.GaussianBlur(radius=max(0.2, radius * scale)))
    noise = rng.uniform(1.0, 2.0 + 4.0 * severity)
    arr = np.asarray(out, dtype=np.float32) + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_bin(rng: np.random.Generator, w: int, h: int, units: Sequence[Item]) -> Image.Image:
    """The photo of one bin holding `units` (identical units are the same object, drawn alike)."""
    fabric = FABRICS[int(rng.integers(0, len(FABRICS)))]
    severity = float(rng.uniform(0, 1))  # from a clean photo to the worst ABID ones: the clean ones teach counting
    img, inside = _draw_pod(rng, w, h, fabric)
    sizes = _sizes(rng, units, inside)
    looks: dict[int, Image.Image] = {}
    sprites = []
    for unit, (iw, ih) in zip(units, sizes, strict=True):
        key = id(unit)
        if key not in looks:
            looks[key] = item_sprite(unit, iw, ih)
        sprites.append(looks[key])
    min_visible = float(rng.uniform(*MIN_VISIBLE))
    best = None
    for _ in range(8):
        positions = _layout(rng, [s.size for s in sprites], inside)
        worst = _least_visible(sprites, positions, (w, h), inside)
        if best is None or worst > best[0]:
            best = (worst, positions)
        if worst >= min_visible:
            break
    positions = best[1] if best else []
    _shadows(img, sprites, positions)
    for sprite, (x, y) in zip(sprites, positions, strict=True):
        img.paste(sprite, (x, y), sprite)
    if rng.random() < 0.15:
        _draw_rod(rng, img, inside)
    _draw_straps(rng, img, severity)
    _draw_lips(rng, img, inside, fabric)
    return _camera(rng, img, severity)


def jpeg_bytes(rng: np.random.Generator, img: Image.Image, max_quality: int) -> bytes:
    """JPEG at a quality drawn up to `max_quality` (ABID photos carry visible compression artefacts)."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(max(20, max_quality - 45), max_quality + 1)))
    return buf.getvalue()
