"""Rules for one user sample: a safe key, a caption, an image. Each check looks at one
sample's bytes only, so it runs the same on any stream of samples.

Every check returns `(reason, detail, value)`: reason is None when the input passes.
"""

from __future__ import annotations

import io
import unicodedata
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

REENCODE_QUALITY = 95
# Control characters a caption may carry: line breaks and tabs are ordinary text.
_CAPTION_CONTROLS_ALLOWED = {"\n", "\t"}
# Raster formats PIL decodes in-process (JPEG includes MPO); others, such as EPS, which
# PIL hands to Ghostscript, are never opened.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# JPEG modes the trainer decodes as they are; anything else is re-encoded to RGB.
_JPEG_MODES_KEPT = ("RGB", "L")


def _has_control_char(text: str, allowed: set[str] = frozenset()) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in text)


# --------------------------------------------------------------------------- keys


def check_name(name: str) -> tuple[str | None, str, str]:
    """(reason, detail, normalised name) for a member or file name inside the input.

    A name that could escape a folder when a shard is unpacked (`..`, an absolute path, a
    backslash, a NUL or another control character) is unsafe; otherwise `.` and empty
    segments are dropped (`./a//b.jpg` -> `a/b.jpg`) and the name is put in Unicode NFC.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name read through surrogateescape
        return "key_unsafe", "name is not valid UTF-8", name
    if _has_control_char(name):
        return "key_unsafe", "name has a NUL or control character", name
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "key_unsafe", "absolute path or backslash in name", name
    parts = name.split("/")
    if ".." in parts:
        return "key_unsafe", "'..' in name", name
    clean = "/".join(p for p in parts if p not in ("", "."))
    return None, "", unicodedata.normalize("NFC", clean)  # macOS writes names decomposed (NFD)


# --------------------------------------------------------------------------- captions


def check_caption(data: bytes, max_chars: int) -> tuple[str | None, str, str]:
    """(reason, detail, cleaned caption): UTF-8, no control characters, not blank, not too long."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return "caption_not_utf8", str(e)[:200], ""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").strip()  # Windows line ends are ordinary text
    if _has_control_char(text, _CAPTION_CONTROLS_ALLOWED):
        return "caption_control_chars", "caption has a NUL or control character", ""
    if not text:
        return "caption_empty", "empty caption", ""
    if len(text) > max_chars:
        return "caption_too_long", f"{len(text)} > {max_chars} characters", ""
    return None, "", text


# --------------------------------------------------------------------------- images


def _open_checked(data: bytes) -> tuple[str | None, str, Image.Image | None]:
    """Open and fully decode; the pixel count is checked before decoding (bombs)."""
    if len(data) == 0:
        return "image_empty", "zero-byte image", None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.width * im.height > limit:
                return "image_too_large", f"{im.width}x{im.height} pixels > PIL limit {limit}", None
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "image_too_large", str(e)[:200], None
    except UnidentifiedImageError:
        return "image_undecodable", f"not an image of a supported format ({', '.join(IMAGE_FORMATS)})", None
    except Exception as e:  # noqa: BLE001 - any decoder failure means undecodable
        return "image_undecodable", f"{type(e).__name__}: {e}"[:200], None
    if im.width < 1 or im.height < 1:
        return "image_undecodable", "image has no pixels", None
    return None, "", im


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB pixels: transparency over white, 16/32-bit grey scaled to 8 bits, CMYK etc. converted."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.split()[-1])
        return bg
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im, dtype=np.int64)
        # 16-bit samples keep their top byte; a 32-bit image holding 8-bit values keeps them
        shift = 8 if im.mode.startswith("I;16") or wide.max(initial=0) > 255 else 0
        return Image.fromarray(np.clip(wide >> shift, 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def check_image(data: bytes) -> tuple[str | None, str, tuple[bytes, bool] | None]:
    """(reason, detail, (jpeg bytes, re-encoded?)). An RGB or grey JPEG keeps its bytes;
    every other image that decodes is converted to RGB and re-encoded as JPEG."""
    reason, detail, im = _open_checked(data)
    if im is None:
        return reason, detail, None
    try:
        if im.format == "JPEG" and im.mode in _JPEG_MODES_KEPT:
            return None, "", (data, False)
        buf = io.BytesIO()
        to_rgb(im).save(buf, format="JPEG", quality=REENCODE_QUALITY, optimize=False)
    except Exception as e:  # noqa: BLE001 - an image PIL cannot convert is as bad as one it cannot read
        return "image_undecodable", f"cannot convert to RGB: {type(e).__name__}: {e}"[:200], None
    finally:
        im.close()
    return None, "", (buf.getvalue(), True)
