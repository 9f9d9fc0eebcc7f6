"""What a customer's image must be, and what is kept of it: the rules of a photo or screenshot in the chat.

An upload is untrusted bytes that staff's browsers will show, so nothing of it is kept as it came:

* only PNG, JPEG and WebP, told by their signatures (never by the name or the browser's type): SVG, HTML, GIF and
  everything else are refused before a decoder sees them;
* at most ``ATTACHMENT_MAX_BYTES``, and at most ``ATTACHMENT_MAX_PIXELS`` as the header says, checked before a
  single pixel is decoded (a decompression bomb is a small file declaring a huge image);
* no markup a browser could run (``<script``, ``<svg``, ``<html``…) outside the compressed pixels — before the
  image's end, in its metadata, or appended after it: such a file is also a web page (a polyglot) and is refused;
* decoded whole (a truncated or damaged file is refused: Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off), turned
  upright by its EXIF orientation, scaled to at most ``ATTACHMENT_MAX_SIDE`` pixels a side (an animation keeps its
  first frame), and re-encoded in its own format from the pixels alone: no EXIF (camera, GPS position), XMP, ICC
  profile, text chunk or comment survives. Only these new bytes are stored and served (conversations/attachments.py).

``reencode`` is CPU work with the GIL released in Pillow's codecs; the upload view runs it on a small pool of its own
(``ATTACHMENT_THREADS``), never on the event loop.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

#: Pillow's format name -> the content type it is stored and served as (``Attachment.ContentType``).
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: Pixel modes each format is written in; anything else is converted first (palette, CMYK, 16-bit…).
_MODES = {"PNG": {"L", "LA", "RGB", "RGBA"}, "JPEG": {"L", "RGB"}, "WEBP": {"RGB", "RGBA"}}
_SAVE_OPTIONS = {"PNG": {"compress_level": 6}, "JPEG": {"quality": 85}, "WEBP": {"quality": 90, "method": 4}}
#: Markup a browser would act on if it ever read the file as a page or an SVG document.
_MARKUP = re.compile(rb"<(?:script|html|svg|iframe|object|embed|body|!doctype\s+html)[\s/>]", re.IGNORECASE)

# The refusals, each with what the customer is told (``detail``) and the HTTP status of the upload's answer.
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
TOO_MANY_PIXELS = "too_many_pixels"
DAMAGED = "damaged"
POLYGLOT = "polyglot"
HTTP_STATUS = {TOO_LARGE: 413, NOT_AN_IMAGE: 415, TOO_MANY_PIXELS: 422, DAMAGED: 422, POLYGLOT: 422}


class ImageRefused(Exception):
    """The upload is not an image we keep; ``code`` is one of the refusals above, ``detail`` says why in words."""

    def __init__(self, code: str, detail: str) -> None:
        assert code in HTTP_STATUS, code
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Reencoded:
    """The image as it will be stored and served."""

    data: bytes
    content_type: str
    width: int
    height: int


def reencode(data: bytes) -> Reencoded:
    """The upload ``data`` re-encoded by the rules above, or ``ImageRefused``."""
    if len(data) > settings.ATTACHMENT_MAX_BYTES:
        raise ImageRefused(TOO_LARGE, too_large(len(data)))
    kind = sniff(data)
    if kind is None:
        raise ImageRefused(NOT_AN_IMAGE, _not_an_image(data))
    if any(_MARKUP.search(part) for part in outside_pixels(data, kind)):
        raise ImageRefused(POLYGLOT, "The file is an image and also a web page (it holds page markup); it was refused.")
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            _check_pixels(image.width, image.height)
            image.draft(None, _bounds(image.width, image.height))  # JPEG: decode at 1/2, 1/4, 1/8 scale if enough
            image.load()
            return _encoded(_cleaned(image), kind)
    except ImageRefused:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard: a header declaring far past our limit
        raise ImageRefused(TOO_MANY_PIXELS, f"The image has too many pixels; {_pixel_limit()}.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageRefused(DAMAGED, "The image is damaged or incomplete and cannot be read.") from exc


def sniff(data: bytes) -> str | None:
    """The format by the file's signature: "PNG", "JPEG", "WEBP", or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _not_an_image(data: bytes) -> str:
    accepted = "Only PNG, JPEG and WebP images can be attached"
    if data.lstrip()[:1] == b"<":  # SVG, HTML, XML: text a browser could run, never an attachment
        return f"{accepted}; this file is text (SVG, HTML or XML), not a photo or screenshot."
    return f"{accepted}; this file is not one of them."


def too_large(size: int) -> str:
    """Why a file of ``size`` bytes is refused."""
    return f"The image is {_megabytes(size)}; the limit is {_megabytes(settings.ATTACHMENT_MAX_BYTES)}."


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _check_pixels(width: int, height: int) -> None:
    if width * height > settings.ATTACHMENT_MAX_PIXELS:
        raise ImageRefused(TOO_MANY_PIXELS, f"The image is {width}×{height} pixels; {_pixel_limit()}.")


def _pixel_limit() -> str:
    return f"the limit is {settings.ATTACHMENT_MAX_PIXELS / 1_000_000:g} megapixels"


def _bounds(width: int, height: int) -> tuple[int, int]:
    """The largest size within ``ATTACHMENT_MAX_SIDE`` a side with the image's proportions."""
    side = settings.ATTACHMENT_MAX_SIDE
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _cleaned(image: Image.Image) -> Image.Image:
    """The pixels only: a mode the format writes, scaled within bounds, upright, with no metadata left to copy."""
    kind = image.format
    if image.mode not in _MODES[kind]:
        alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha and "RGBA" in _MODES[kind] else "RGB")
    if max(image.size) > settings.ATTACHMENT_MAX_SIDE:
        image = image.resize(_bounds(*image.size), Image.Resampling.LANCZOS)
    upright = ImageOps.exif_transpose(image)
    upright.info = {}  # EXIF, XMP, ICC profile, text chunks, comments: none is written back
    return upright


def _encoded(image: Image.Image, kind: str) -> Reencoded:
    out = io.BytesIO()
    image.save(out, kind, **_SAVE_OPTIONS[kind])
    return Reencoded(out.getvalue(), CONTENT_TYPES[kind], image.width, image.height)


# --- Where markup could hide: everything but the compressed pixels ----------------------------------------------
def outside_pixels(data: bytes, kind: str) -> list[bytes]:
    """The parts of the file that are not compressed pixel data (headers, metadata, anything after the image's end),
    where a polyglot keeps its page. Pixel data is left out: it is compressed noise, and scanning it would refuse an
    honest photo now and then. A structure that stops making sense ends the walk: the rest is returned whole."""
    walk = {"PNG": _png_parts, "JPEG": _jpeg_parts, "WEBP": _webp_parts}[kind]
    return list(walk(data))


def _png_parts(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if kind not in (b"IDAT", b"fdAT"):
            yield data[pos:end]
        pos = end
        if kind == b"IEND":
            break
    yield data[pos:]


def _jpeg_parts(data: bytes):
    pos = 2  # after SOI
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            break  # not a marker where one must be: scan the rest
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            pos += 2
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield data[pos:end]
        pos = end
        if marker == 0xDA:  # start of scan: entropy-coded pixels up to the next marker that is not RSTn or stuffing
            pos = _scan_end(data, pos)
    yield data[pos:]


def _scan_end(data: bytes, pos: int) -> int:
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7 and following != 0xFF:
            return pos
        pos += 1 if following == 0xFF else 2


def _webp_parts(data: bytes):
    riff_end = min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    yield data[:12]
    pos = 12
    while pos + 8 <= riff_end:
        kind, size = struct.unpack("<4sI", data[pos : pos + 8])
        end = pos + 8 + size + (size & 1)
        if kind not in (b"VP8 ", b"VP8L", b"ALPH", b"ANMF"):
            yield data[pos:end]
        pos = end
    yield data[max(pos, riff_end) :]
