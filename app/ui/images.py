"""Photos for the pages: small JPEG bytes, cached, read only from allowed places (S3 photos through the
workspace's cache, see audit.photos).

`st.image` re-encodes whatever it is given on every rerun, so pages pass it these cached bytes
(keyed by path, modification time and size) instead of full photos.
"""

from __future__ import annotations

import io
import os

import streamlit as st
from PIL import ImageOps

from app.ui.context import AppContext, allowed_roots
from app.ui.text import plain
from audit.photos import local_photo
from binaudit.workspace import UnsafePath
from modeling.preprocessing import ImageDecodeError, load_image

THUMB_SIDE = 224
DETAIL_SIDE = 900


@st.cache_data(show_spinner=False, max_entries=5000)
def _jpeg(path: str, mtime: float, side: int, boxed: bool) -> bytes:
    """JPEG bytes of the photo fitted into side x side (aspect kept); `boxed` pads it to a 4:3 box
    so a grid of thumbnails lines up."""
    img = load_image(path, target_side=side)
    img.thumbnail((side, side))
    if boxed:
        img = ImageOps.pad(img, (side, side * 3 // 4), color=(245, 244, 240))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def photo_bytes(ctx: AppContext, image_uri: str, side: int = THUMB_SIDE,
                roots: list[str] | None = None) -> tuple[bytes | None, str | None]:
    """(JPEG bytes, None) or (None, why the photo cannot be shown). Pass `roots` when showing many."""
    try:
        path = local_photo(image_uri, ctx.workspace, allowed_roots(ctx) if roots is None else roots)
        return _jpeg(str(path), os.path.getmtime(path), side, side <= THUMB_SIDE), None
    except UnsafePath as exc:
        return None, str(exc)
    except FileNotFoundError as exc:
        return None, str(exc) if "S3" in str(exc) else f"photo not found: {image_uri}"
    except ImageDecodeError as exc:
        return None, f"cannot show the photo: {exc}"
    except OSError as exc:  # S3 did not answer
        return None, str(exc)


def show_photo(ctx: AppContext, image_uri: str, *, side: int = THUMB_SIDE, caption: str | None = None,
               roots: list[str] | None = None) -> None:
    data, problem = photo_bytes(ctx, image_uri, side, roots)
    if data is None:
        st.warning(plain(problem), icon=":material/broken_image:")
    else:
        st.image(data, caption=caption, width="stretch")
