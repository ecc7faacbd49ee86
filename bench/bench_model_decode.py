"""Decode and resize, per photo on one core: PIL (draft mode, as modeling.preprocessing does it) against
torchvision.io.decode_jpeg (libjpeg-turbo) with torchvision's antialiased resize, and what each changes in pixels.

    .venv/bin/python -m bench.bench_model_decode [--side 224]

Photos: the scoring benchmark's 300 synthetic 500x450 JPEGs and, when present, the 100 real ABID photos of
../shared/abid-sample. Each way is timed best of --rounds over all photos (bytes already in memory, one thread);
pixel differences are against the shared preprocessing's output (`EvalTransform(load_image(...))`).

- pil (draft 2x): the shared preprocessing: libjpeg scales by 1/2, 1/4, 1/8 while decoding when the photo keeps
  at least twice the target side, then PIL's bilinear (antialiased) resize.
- pil (draft 1x): reduced-size decoding down to the target side itself (cheaper, changes pixels).
- torchvision: decode_jpeg at full size (it has no reduced-size decoding), then resize(antialias=True).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as tvf

from bench import OUT
from bench.bench_model_predict import ensure_photos
from modeling.preprocessing import EvalTransform, load_image, to_uint8_tensor

ABID = Path(__file__).resolve().parent.parent.parent / "shared" / "abid-sample" / "bin-images"


def ways(side: int) -> dict[str, Callable[[bytes], torch.Tensor]]:
    shared = EvalTransform(side)

    def pil_draft(data: bytes, factor: int) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (factor * side, factor * side))
            rgb = img.convert("RGB")
        return to_uint8_tensor(rgb.resize((side, side), Image.Resampling.BILINEAR))

    def torchvision_way(data: bytes) -> torch.Tensor:
        decoded = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                              apply_exif_orientation=True)
        return tvf.resize(decoded, [side, side], antialias=True)

    return {"pil (draft 2x, shared)": lambda d: shared(load_image(d, side)),
            "pil (draft 1x)": lambda d: pil_draft(d, 1),
            "torchvision decode_jpeg": torchvision_way}


def measure(photos: list[bytes], side: int, rounds: int) -> None:
    reference = [EvalTransform(side)(load_image(d, side)) for d in photos]
    for name, way in ways(side).items():
        out = [way(d) for d in photos]
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for d in photos:
                way(d)
            best = min(best, time.perf_counter() - start)
        diff = np.concatenate([(o.int() - r.int()).abs().flatten().numpy() for o, r in zip(out, reference,
                                                                                         strict=True)])
        print(f"  {name:<26} {1000 * best / len(photos):6.2f} ms/photo   pixels: max diff {diff.max():3d}, "
              f"mean {diff.mean():.3f}, {np.mean(diff > 0):.1%} differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {"synthetic 500x450": ensure_photos(OUT / "model-predict" / "photos", 300, 500, 450)}
    if ABID.is_dir():
        sets["real ABID (../shared/abid-sample)"] = sorted(ABID.glob("*.jpg"))
    for title, paths in sets.items():
        photos = [p.read_bytes() for p in paths]
        print(f"{title}: {len(photos)} photos, to {args.side}x{args.side}, best of {args.rounds}, one thread")
        measure(photos, args.side, args.rounds)


if __name__ == "__main__":
    main()
