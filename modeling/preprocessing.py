"""The one preprocessing path: training, evaluation, the SageMaker handler, the predictor and the app use it.

Photo -> RGB PIL image (`load_image`) -> square uint8 tensor (`EvalTransform` / `TrainTransform`) -> batch ->
float, normalised (`normalize_batch`, on the model's device). Images travel as uint8 until the batch is on
its device: a quarter of the bytes through DataLoader workers and host-to-GPU copies.

Squash, not letterbox: the whole photo is resized to `image_size` x `image_size`, ignoring its aspect ratio.
Bin photos run from about 315x240 to 785x1069 px (aspect 0.3-3.3). Letterboxing a 3:1 photo into a square
leaves two thirds of the input as padding and shrinks every item threefold, so the apparent item size would
vary with the photo's shape; squashing keeps every input pixel on image content and keeps items at a size that
depends on the bin, not on the camera crop. Counting needs to separate objects, not to judge their proportions,
and the network sees the same distortion in training and in serving (the abid_challenge baselines squash too).
Nothing is ever center-cropped: an item at the edge of the photo counts.

Training adds a horizontal flip, mild colour jitter and a mild scale/aspect jitter that only ever zooms out
(the photo is shrunk to 85-100% per axis and placed at a random spot on a mean-coloured square), so no item
is cut off and the label stays true.

Large JPEGs are decoded in draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding, to the smallest
scale that keeps at least `DRAFT_FACTOR` x the target side on each axis, so a 12 MP upload costs little
more than an ABID photo.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import ColorJitter

from modeling.settings import MAX_IMAGE_SIZE

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE_MODES = ("squash",)
# Far above any bin photo (ABID tops out near 0.8 MP); guards against decompression bombs.
MAX_PIXELS = 40_000_000
# Decode JPEGs at no less than this multiple of the target side: enough detail for an antialiased resize.
DRAFT_FACTOR = 2
ACCEPTED_FORMATS = "JPEG or PNG"

ImageSource = bytes | bytearray | memoryview | str | os.PathLike


class ImageDecodeError(ValueError):
    """The input is not a usable image; the message says what was wrong."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns a photo into model input; stored in model_config.json and read back by serving."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_mode: str = "squash"

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:  # 16: the smallest a ResNet still reduces to 1x1
            raise ValueError(f"image_size must be from 16 to {MAX_IMAGE_SIZE} px, got {self.image_size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize_mode!r} is not supported; only: {', '.join(RESIZE_MODES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std positive")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            image_size=int(data["image_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            resize_mode=str(data.get("resize_mode", "squash")),
        )


# ---------------------------------------------------------------- decoding

def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageDecodeError("empty input (0 bytes)")
        return Image.open(io.BytesIO(bytes(source)))
    try:
        return Image.open(os.fspath(source))
    except FileNotFoundError:
        raise ImageDecodeError(f"file not found: {os.fspath(source)}") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"is a folder, not an image: {os.fspath(source)}") from None
    except PermissionError as exc:
        raise ImageDecodeError(f"cannot read {os.fspath(source)}: {exc.strerror}") from None


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(f"image too large: {width}x{height} px is over the {max_pixels:,} pixel limit")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")


def probe_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """(width, height, format) from the header alone; raises ImageDecodeError for non-images and huge images."""
    try:
        with _open(source) as img:
            _check_pixels(img, max_pixels)
            return img.size[0], img.size[1], str(img.format)
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(_reason(exc)) from None


def load_image(source: ImageSource, target_side: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode bytes or a file into an RGB image; JPEGs in draft mode when `target_side` is given.

    Raises ImageDecodeError (bad, truncated or non-image input, or more than `max_pixels` pixels).
    """
    try:
        img = _open(source)
        try:
            _check_pixels(img, max_pixels)
            if target_side:
                side = DRAFT_FACTOR * target_side
                img.draft("RGB", (side, side))  # no-op for formats other than JPEG
            img.load()
            rgb = _to_rgb(img)
        finally:
            img.close()
        ImageOps.exif_transpose(rgb, in_place=True)  # phone photos; ABID photos carry no orientation
        return rgb
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(_reason(exc)) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """A new RGB image (the source is closed after this, which invalidates its pixels)."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # transparent pixels become white, as most viewers show them
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        return f"not a recognised image format (expected {ACCEPTED_FORMATS})"
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large: {text}"
    if "truncated" in text.lower():
        return "truncated image (the file ends before the picture does)"
    return f"could not decode image ({text}); expected {ACCEPTED_FORMATS}"


# ---------------------------------------------------------------- transforms

def resize_square(img: Image.Image, side: int) -> Image.Image:
    """Squash the whole photo to side x side (see the module docstring for why not pad or crop)."""
    if img.size == (side, side):
        return img
    return img.resize((side, side), Image.Resampling.BILINEAR)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image (a channels-last view; `normalize_batch` makes it float)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


class EvalTransform:
    """RGB image -> (3, side, side) uint8 tensor: squash to the square side, nothing cropped."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_uint8_tensor(resize_square(img, self.side))

    def __repr__(self) -> str:
        return f"EvalTransform(side={self.side})"


class TrainTransform:
    """Eval transform plus horizontal flip, mild colour jitter and a zoom-out-only scale/aspect jitter."""

    def __init__(self, side: int, mean: Sequence[float] = IMAGENET_MEAN, min_scale: float = 0.85,
                 flip_p: float = 0.5, color: float = 0.2, hue: float = 0.02) -> None:
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        self.side = side
        self.min_scale = min_scale
        self.flip_p = flip_p
        self.fill = tuple(int(round(255 * m)) for m in mean)  # normalises to zero
        self.color_jitter = ColorJitter(brightness=color, contrast=color, saturation=color, hue=hue)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        scale = self.min_scale + (1 - self.min_scale) * torch.rand(2)
        width, height = (max(1, round(self.side * float(s))) for s in scale)
        img = img.resize((width, height), Image.Resampling.BILINEAR)
        if float(torch.rand(1)) < self.flip_p:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = self.color_jitter(img)
        if (width, height) != (self.side, self.side):
            canvas = Image.new("RGB", (self.side, self.side), self.fill)
            x = int(torch.randint(0, self.side - width + 1, (1,)))
            y = int(torch.randint(0, self.side - height + 1, (1,)))
            canvas.paste(img, (x, y))
            img = canvas
        return to_uint8_tensor(img)

    def __repr__(self) -> str:
        return f"TrainTransform(side={self.side}, min_scale={self.min_scale}, flip_p={self.flip_p}, {self.color_jitter})"


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, H, W) uint8 tensors -> one (N, 3, H, W) batch in channels_last memory, in a single copy.

    `to_uint8_tensor` gives channels-last views, so stacking them as (N, H, W, 3) and permuting costs one copy,
    and `normalize_batch(..., torch.channels_last)` then needs no reordering pass.
    """
    return torch.stack([img.permute(1, 2, 0) for img in images]).permute(0, 3, 1, 2)


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                    memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float32 (x / 255 - mean) / std, on the batch's device, in `memory_format`."""
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch.dtype}")
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    x = batch.contiguous(memory_format=memory_format).float()
    return x.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)

