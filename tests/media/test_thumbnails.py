"""Thumbnail sizes and methods (spec "Thumbnails") and the choice among stored thumbnails."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from media.repository import choose_thumbnail
from media.store import ThumbnailRecord
from media.thumbnails import cropped_size, make_thumbnail, scaled_size, serves_original
from sc_proto.errors import MatrixError
from tests.media import samples


def _file(tmp_path: Any, data: bytes) -> str:
    path = str(tmp_path / "img")
    with open(path, "wb") as f:
        f.write(data)
    return path


class SizeTests:
    def test_scale_fits_the_box(self) -> None:
        """scale keeps the aspect ratio within the box and never upscales."""
        assert scaled_size(1000, 500, 320, 240) == (320, 160)
        assert scaled_size(500, 1000, 320, 240) == (120, 240)
        assert scaled_size(100, 50, 320, 240) == (100, 50)

    def test_crop_is_the_box(self) -> None:
        """crop gives the box, shrunk only where the original is smaller."""
        assert cropped_size(1000, 500, 96, 96) == (96, 96)
        assert cropped_size(50, 500, 96, 96) == (50, 96)

    def test_serves_original(self) -> None:
        """The original is served when it fits in the box."""
        assert serves_original(32, 32, 32, 32)
        assert not serves_original(33, 10, 32, 32)


class GenerationTests:
    @pytest.mark.parametrize("method,box,expected", [("scale", (320, 240), (320, 160)), ("crop", (96, 96), (96, 96)),
                                                     ("crop", (200, 50), (200, 50))])
    def test_methods(self, tmp_path: Any, method: str, box: tuple[int, int], expected: tuple[int, int]) -> None:
        """Generated thumbnails have the computed size; PNG for PNG sources, JPEG for JPEG sources."""
        for fmt, content_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
            thumb = make_thumbnail(_file(tmp_path, samples.image_bytes(fmt, (1000, 500))), *box, method, False, 10**8)
            assert (thumb.width, thumb.height, thumb.content_type) == (*expected, content_type)
            with Image.open(io.BytesIO(thumb.data)) as image:
                assert image.size == expected

    def test_animated(self, tmp_path: Any) -> None:
        """animated=True on an animated GIF gives an animated WebP; False the first frame as PNG."""
        path = _file(tmp_path, samples.animated_gif((200, 100), frames=3))
        animated = make_thumbnail(path, 50, 50, "crop", True, 10**8)
        assert (animated.content_type, animated.animated, animated.width) == ("image/webp", True, 50)
        with Image.open(io.BytesIO(animated.data)) as image:
            assert image.n_frames == 3
        static = make_thumbnail(path, 50, 50, "crop", False, 10**8)
        assert (static.content_type, static.animated) == ("image/png", False)

    def test_limits_and_garbage(self, tmp_path: Any) -> None:
        """Too many pixels is 413 M_TOO_LARGE; non-images are 400 M_UNKNOWN."""
        with pytest.raises(MatrixError) as raised:
            make_thumbnail(_file(tmp_path, samples.image_bytes("PNG", (100, 100))), 10, 10, "scale", False, 9999)
        assert raised.value.http_status == 413
        with pytest.raises(MatrixError) as raised:
            make_thumbnail(_file(tmp_path, samples.PDF), 10, 10, "scale", False, 10**8)
        assert (raised.value.http_status, raised.value.errcode.value) == (400, "M_UNKNOWN")


def _row(width: int, height: int, method: str, tw: int, th: int, animated: bool = False) -> ThumbnailRecord:
    return ThumbnailRecord("m", width, height, method, animated, tw, th, "image/png", "0" * 64, 1)


class ChoiceTests:
    def test_smallest_sufficient_one(self) -> None:
        """The smallest stored thumbnail at least as large as the request produces is chosen."""
        stored = [_row(320, 240, "scale", 320, 160), _row(640, 480, "scale", 640, 320), _row(800, 600, "scale", 800, 400)]
        assert choose_thumbnail(stored, 1000, 500, 300, 300, "scale", False) == stored[0]
        assert choose_thumbnail(stored, 1000, 500, 500, 500, "scale", False) == stored[1]
        assert choose_thumbnail(stored, 1000, 500, 900, 900, "scale", False) is None
        assert choose_thumbnail(stored, 1000, 500, 300, 300, "scale", True) is None

    def test_crop_needs_the_aspect(self) -> None:
        """A crop thumbnail of another aspect ratio is not used."""
        stored = [_row(96, 96, "crop", 96, 96)]
        assert choose_thumbnail(stored, 1000, 500, 64, 64, "crop", False) == stored[0]
        assert choose_thumbnail(stored, 1000, 500, 90, 45, "crop", False) is None
        assert choose_thumbnail(stored, 1000, 500, 64, 64, "scale", False) is None
