"""The media config section: thumbnail sizes, allow list entries, quotas."""

from __future__ import annotations

import pytest

from homeserver.config.errors import ConfigError
from homeserver.config.loader import parse_config
from homeserver.config.media import DEFAULT_THUMBNAIL_SIZES, ThumbnailSize


def _media(section: dict[str, object]) -> object:
    return parse_config({"server": {"server_name": "t"}, "media": section}, "/tmp").media


class MediaConfigTests:
    def test_defaults(self) -> None:
        """Frozen legacy media, no previews, no quota, the spec's thumbnail sizes."""
        config = parse_config({"server": {"server_name": "t"}}, "/tmp").media
        assert (config.legacy_unauthenticated_media, config.url_preview_enabled, config.default_quota) == ("frozen", False, None)
        assert config.thumbnail_sizes == DEFAULT_THUMBNAIL_SIZES
        assert "application/octet-stream" in config.allowed_content_types

    def test_thumbnail_sizes_as_strings_or_mappings(self) -> None:
        """'WxH method' strings and {width, height, method} mappings (the generated form) both parse."""
        config: object = _media({"thumbnail_sizes": ["10x20 crop", "30x40", {"width": 5, "height": 6, "method": "scale"}]})
        assert config.thumbnail_sizes == (  # type: ignore[attr-defined]
            ThumbnailSize(10, 20, "crop"), ThumbnailSize(30, 40, "scale"), ThumbnailSize(5, 6, "scale"))

    @pytest.mark.parametrize("bad", ["10x crop", "0x10 crop", "10x10 zoom", 5, {"width": True, "height": 1, "method": "crop"}, "99999x1"])
    def test_bad_thumbnail_sizes(self, bad: object) -> None:
        """Malformed sizes name their YAML path."""
        with pytest.raises(ConfigError, match="thumbnail_sizes"):
            _media({"thumbnail_sizes": [bad]})

    @pytest.mark.parametrize("section", [{"allowed_content_types": ["text/html; x"]}, {"default_quota": -1},
                                         {"legacy_unauthenticated_media": "maybe"}, {"max_image_pixels": 0}])
    def test_bad_values(self, section: dict[str, object]) -> None:
        """Bad option values are config errors."""
        with pytest.raises(ConfigError):
            _media(section)

    def test_sizes(self) -> None:
        """Sizes accept units."""
        assert _media({"default_quota": "1G", "max_upload_size": "10M"}).default_quota == 1024**3  # type: ignore[attr-defined]
