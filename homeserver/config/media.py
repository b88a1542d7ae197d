"""The ``media:`` section (placeholder until the media repository grows its own options)."""

from __future__ import annotations

import os

import attrs

from homeserver.config._options import BYTE_SIZE, PATH, option


@attrs.frozen
class MediaConfig:
    """Media repository storage and limits."""

    max_upload_size: int = option(50 * 1024 * 1024, BYTE_SIZE, "Largest media upload accepted.")
    media_store_path: str = option(
        "media",
        PATH,
        "Directory where uploaded and cached remote media are stored.",
        default_doc="DATA/media",
        contextual=lambda ctx: os.path.join(ctx.data_dir, "media"),
    )
