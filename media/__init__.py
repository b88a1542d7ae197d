"""The media repository (issue 7): uploads, downloads, thumbnails, quotas, over a content-addressed blob store.

Modules: :mod:`media.repository` (orchestration), :mod:`media.store` (tables), :mod:`media.blobstore`
and :mod:`media.providers` (bytes on disk), :mod:`media.validation` (type detection, allow list,
image checks), :mod:`media.thumbnails`, :mod:`media.rest` (JSON endpoints), :mod:`media.download`
and :mod:`media.serving` (streamed responses). Wired by ``homeserver/app/feature_media.py``.
"""

__all__: list[str] = []
