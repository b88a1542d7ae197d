"""Thumbnail generation with Pillow (spec "Thumbnails"); every function here blocks: run it on a thread.

* ``scale`` keeps the aspect ratio and fits the image inside the requested box (so one side may
  be smaller than asked for, as the spec describes).
* ``crop`` scales the image to cover the box, then cuts the middle to the box's size, so the result
  has the requested aspect ratio.
* Thumbnails are never upscaled: when the original is smaller than the box it is returned as is
  (the caller serves the original instead, see :func:`serves_original`).
* ``animated`` thumbnails of animated GIF/WebP are animated WebP (the spec's preferred format);
  without it the first frame is used. Static output is JPEG for JPEG sources, PNG otherwise.

Decoding is bounded: the pixel count is checked from the header before anything is decoded, and
animated thumbnails are only made when every frame together stays within twice the budget.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from sc_proto.errors import Codes, MatrixError

METHODS = ("crop", "scale")
MAX_ANIMATED_FRAMES = 500


@dataclass(frozen=True)
class Thumbnail:
    """A generated thumbnail.

    Attributes:
        data: the encoded image.
        content_type: ``image/jpeg``, ``image/png`` or ``image/webp``.
        width: pixels.
        height: pixels.
        animated: more than one frame.
    """

    data: bytes
    content_type: str
    width: int
    height: int
    animated: bool


def scaled_size(src_width: int, src_height: int, width: int, height: int) -> tuple[int, int]:
    """The ``scale`` result size: the largest size within the box keeping the aspect (never upscaled)."""
    if src_width <= width and src_height <= height:
        return src_width, src_height
    ratio = min(width / src_width, height / src_height)
    return max(1, round(src_width * ratio)), max(1, round(src_height * ratio))


def cropped_size(src_width: int, src_height: int, width: int, height: int) -> tuple[int, int]:
    """The ``crop`` result size: the box, reduced where the original is smaller (never upscaled)."""
    return min(width, src_width), min(height, src_height)


def thumbnail_size(src_width: int, src_height: int, width: int, height: int, method: str) -> tuple[int, int]:
    """The size a thumbnail of ``method`` for the box ``width`` x ``height`` would have."""
    if method == "crop":
        return cropped_size(src_width, src_height, width, height)
    return scaled_size(src_width, src_height, width, height)


def serves_original(src_width: int, src_height: int, width: int, height: int) -> bool:
    """Whether the original is no larger than the box (the spec then prefers the original itself)."""
    return src_width <= width and src_height <= height


def make_thumbnail(
    path: str, width: int, height: int, method: str, animated: bool, max_pixels: int
) -> Thumbnail:
    """Generates a thumbnail of the image file at ``path``.

    Args:
        path: the image file.
        width: the requested box width (>= 1).
        height: the requested box height (>= 1).
        method: ``crop`` or ``scale``.
        animated: make an animated thumbnail when the image is animated.
        max_pixels: refuse larger images.

    Raises:
        MatrixError: 413 ``M_TOO_LARGE`` for an image above ``max_pixels``; 400 ``M_UNKNOWN`` for
            content that cannot be thumbnailed.
    """
    from PIL import Image, ImageOps

    if method not in METHODS or width < 1 or height < 1:
        raise ValueError("bad thumbnail request")
    try:
        with Image.open(path) as image:
            src_width, src_height = image.size
            if src_width * src_height > max_pixels:
                raise MatrixError(413, Codes.TOO_LARGE, "Content is too large to thumbnail")
            frames = int(getattr(image, "n_frames", 1) or 1)
            if animated and frames > 1 and frames <= MAX_ANIMATED_FRAMES and frames * src_width * src_height <= 2 * max_pixels:
                return _animated(image, width, height, method)
            source_format = image.format
            if source_format == "JPEG":
                image.draft("RGB", (width, height))
            image.seek(0)
            frame = ImageOps.exif_transpose(image) if source_format == "JPEG" else image
            return _static(frame, width, height, method, source_format == "JPEG")
    except MatrixError:
        raise
    except Exception:
        raise MatrixError(400, Codes.UNKNOWN, "Cannot generate thumbnails for the requested content") from None


def _resize(frame: Any, width: int, height: int, method: str) -> Any:
    from PIL import Image

    src_width, src_height = frame.size
    if method == "scale":
        size = scaled_size(src_width, src_height, width, height)
        return frame if size == frame.size else frame.resize(size, Image.Resampling.LANCZOS)
    factor = min(1.0, max(width / src_width, height / src_height))
    covered = (max(1, math.ceil(src_width * factor)), max(1, math.ceil(src_height * factor)))
    if covered != frame.size:
        frame = frame.resize(covered, Image.Resampling.LANCZOS)
    out_width, out_height = min(width, covered[0]), min(height, covered[1])
    left, top = (covered[0] - out_width) // 2, (covered[1] - out_height) // 2
    return frame.crop((left, top, left + out_width, top + out_height))


def _has_alpha(frame: Any) -> bool:
    return frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info)


def _static(frame: Any, width: int, height: int, method: str, source_is_jpeg: bool) -> Thumbnail:
    alpha = _has_alpha(frame)
    frame = frame.convert("RGBA" if alpha else "RGB")
    result = _resize(frame, width, height, method)
    out = io.BytesIO()
    if source_is_jpeg and not alpha:
        result.save(out, format="JPEG", quality=85, optimize=False)
        content_type = "image/jpeg"
    else:
        result.save(out, format="PNG", compress_level=6)
        content_type = "image/png"
    return Thumbnail(out.getvalue(), content_type, result.size[0], result.size[1], False)


def _animated(image: Any, width: int, height: int, method: str) -> Thumbnail:
    from PIL import ImageSequence

    frames = []
    durations = []
    for frame in ImageSequence.Iterator(image):
        durations.append(int(frame.info.get("duration", image.info.get("duration", 100)) or 100))
        frames.append(_resize(frame.convert("RGBA"), width, height, method))
    out = io.BytesIO()
    frames[0].save(
        out, format="WEBP", save_all=True, append_images=frames[1:], duration=durations, loop=0, quality=80
    )
    return Thumbnail(out.getvalue(), "image/webp", frames[0].size[0], frames[0].size[1], True)
