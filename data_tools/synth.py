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
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools import synth_plain, synth_render
from data_tools.layout import IMAGES_DIR, METADATA_DIR, normalize_bin_id
from data_tools.synth_render import shade as _shade

TRUTH = "truth.csv"
TRUTH_FIELDS = ("bin_id", "drawn_count", "expected_quantity", "mismatch")

# cardboard, paper and plastic tones dominate real bins; printed colours are the exception
_NEUTRALS = [(168, 128, 86), (150, 112, 74), (186, 152, 110), (228, 226, 218), (205, 200, 190), (60, 58, 56),
             (120, 118, 112)]
_CARDBOARD = [(176, 136, 92), (160, 122, 80), (190, 156, 112), (150, 118, 84)]
_WHITES = [(236, 236, 232), (222, 220, 214), (244, 242, 236), (210, 212, 214)]
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
STYLES = ("mixed", "realistic", "plain")
PLAIN_SHARE = 0.5  # of "mixed" bins drawn in the plain look
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
    style: str = "mixed"  # "realistic" (synth_render), "plain" (synth_plain) or "mixed": each bin either way


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
    look: int = 0  # seed of the drawn look: every unit of the product looks the same


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


def _item_colour(rng: np.random.Generator, kind: str) -> tuple[int, int, int]:
    """Cardboard, white and dark packs dominate real bins; printed colours are the rest."""
    r = rng.random()
    if kind == "box" and r < 0.45:
        return _shade(_CARDBOARD[int(rng.integers(0, len(_CARDBOARD)))], float(rng.uniform(0.85, 1.1)))
    if kind != "book" and r < 0.75:
        return _shade(_WHITES[int(rng.integers(0, len(_WHITES)))], float(rng.uniform(0.9, 1.05)))
    if r < 0.82:
        return _shade((50, 48, 46), float(rng.uniform(0.6, 1.4)))
    return _colour(rng, neutral_share=0.3)


def _item_shape(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    """(width, height) as shares of the bin's inside: boxes, books standing, face-on or lying flat, soft packs."""
    if kind == "book":
        r = rng.random()
        if r < 0.4:
            return float(rng.uniform(0.04, 0.1)), float(rng.uniform(0.45, 0.8))
        if r < 0.7:
            return float(rng.uniform(0.18, 0.32)), float(rng.uniform(0.35, 0.6))
        return float(rng.uniform(0.25, 0.45)), float(rng.uniform(0.05, 0.12))
    if kind == "bag":
        return float(rng.uniform(0.25, 0.6)), float(rng.uniform(0.2, 0.55))
    return float(rng.uniform(0.15, 0.5)), float(rng.uniform(0.2, 0.6))


def _plain_shape(rng: np.random.Generator, kind: str) -> tuple[float, float]:
    """(width, height) as shares of the photo width: the plain look's flat sprites (the generator's first look)."""
    if kind == "book":
        return float(rng.uniform(0.16, 0.28)), float(rng.uniform(0.22, 0.36))
    if kind == "bag":
        return float(rng.uniform(0.2, 0.36)), float(rng.uniform(0.16, 0.3))
    return float(rng.uniform(0.14, 0.36)), float(rng.uniform(0.12, 0.3))


def make_product(rng: np.random.Generator, quantity: int, style: str = "realistic") -> Product:
    """A made-up product; `style` "plain" draws it exactly as the plain look always has (same numbers, same seed)."""
    kind = _KINDS[int(rng.integers(0, 3))]
    rel_w, rel_h = _plain_shape(rng, kind) if style == "plain" else _item_shape(rng, kind)
    noun = _NOUNS[kind][int(rng.integers(0, len(_NOUNS[kind])))]
    name = f"{_BRANDS[int(rng.integers(0, len(_BRANDS)))]} {_ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))]} {noun}"
    depth = rng.uniform(0.4, 1.5) if kind == "book" else rng.uniform(1.0, 6.0)
    colour = _colour(rng) if style == "plain" else _item_colour(rng, kind)
    accent = _colour(rng, neutral_share=0.2)
    asin = _asin(rng)
    scale = (40, 40) if style == "plain" else (30, 20)
    weight = round(float(rng.uniform(0.05, 4.0)), 3)
    return Product(
        kind=kind, colour=colour, accent=accent, rel_w=rel_w, rel_h=rel_h, asin=asin, name=name, quantity=quantity,
        dims_in=(round(rel_w * scale[0], 2), round(rel_h * scale[1], 2), round(float(depth), 2)),
        weight_lb=weight, look=0 if style == "plain" else int(rng.integers(0, 2**31)),
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
    style = opts.style
    if style == "mixed":
        style = "plain" if rng.random() < PLAIN_SHARE else "realistic"

    products = [make_product(rng, q, style) for q in split_quantity(rng, claimed)]
    units = [p for p in products for _ in range(p.quantity)]
    rng.shuffle(units)
    if drawn < claimed:  # stock says more than the bin holds: some listed units are missing
        units = units[:drawn]
    elif drawn > claimed:  # the bin holds units nobody recorded
        extra = make_product(rng, drawn - claimed, style)
        units += [extra] * extra.quantity

    meta = json.dumps(metadata_doc(products), indent=4, ensure_ascii=False).encode("utf-8")
    truth = (bin_id, drawn, claimed, int(drawn != claimed))
    if not opts.images:
        return bin_id, None, meta, truth
    jitter = 1 + opts.size_jitter * rng.uniform(-1, 1, size=2)
    w, h = max(32, int(opts.width * jitter[0])), max(32, int(opts.height * jitter[1]))
    return bin_id, _photo(rng, opts, style, w, h, units), meta, truth


def _photo(rng: np.random.Generator, opts: SynthOptions, style: str, w: int, h: int, units: Sequence[Product]) -> bytes:
    if style == "plain":
        buf = io.BytesIO()
        synth_plain.render_bin(rng, w, h, units).save(buf, "JPEG", quality=opts.quality)
        return buf.getvalue()
    return synth_render.jpeg_bytes(rng, synth_render.render_bin(rng, w, h, units), opts.quality)


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
    if opts.style not in STYLES:
        raise ValueError(f"unknown style {opts.style!r}; choose one of {', '.join(STYLES)}")
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
