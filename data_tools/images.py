"""Check that a bin photo is a whole, decodable JPEG, and write it (optionally smaller) into a dataset."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
# Far above any bin photo (ABID tops out near 0.8 MP); guards against decompression bombs.
MAX_PIXELS = 40_000_000


class BadImage(ValueError):
    """The bytes are not a usable JPEG; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int


def inspect_jpeg(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Decode the whole JPEG (at 1/8 scale, which still reads every byte) or raise BadImage.

    Draft-mode decoding makes libjpeg skip most of the inverse DCT, so this costs a fraction of a
    full decode while still catching truncated and corrupt entropy data.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    if not data.startswith(JPEG_MAGIC):
        kind = "PNG" if data.startswith(b"\x89PNG") else "text" if data[:64].isascii() else "unknown data"
        raise BadImage(f"not a JPEG (starts like {kind})")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise BadImage(f"image too large: {width}x{height} px is over the {max_pixels:,} pixel limit")
            img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            img.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            raise BadImage(f"truncated JPEG ({len(data)} bytes)") from None
        raise BadImage(f"corrupt or unreadable JPEG: {reason}") from None
    return ImageInfo(width, height)


def write_image(data: bytes, dest: Path, info: ImageInfo, max_side: int | None, quality: int = 90) -> ImageInfo:
    """Write the photo to `dest` atomically; resize first when its longer side exceeds `max_side`.

    Returns the size of what was written. Unresized photos are copied byte for byte.
    """
    out_info = info
    if max_side and max(info.width, info.height) > max_side:
        scale = max_side / max(info.width, info.height)
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", size)  # decode straight at the nearest larger DCT scale
            small = img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=quality, optimize=True)
        data = buf.getvalue()
        out_info = ImageInfo(*size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return out_info


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
