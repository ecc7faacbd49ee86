"""The plain synthetic bin look: flat sprites scattered on an empty fabric pod, every item in clear view.

The generator's first look, unchanged (style "plain" draws the same bytes as before the realistic look came):
the demo trains on it. The realistic look is data_tools.synth_render; docs/benchmarks.md (sim-to-real) has what
each look does on real ABID photos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data_tools.synth_render import Item
from data_tools.synth_render import shade as _shade

_FABRICS = [(204, 188, 120), (194, 176, 108), (214, 198, 140), (186, 172, 128), (160, 158, 150)]


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


def _item_sprite(rng: np.random.Generator, p: Item, w: int, h: int) -> Image.Image:
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


def render_bin(rng: np.random.Generator, w: int, h: int, units: Sequence[Item]) -> Image.Image:
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
