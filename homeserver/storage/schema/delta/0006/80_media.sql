-- The media repository (issue 7, docs/media.md).

-- Content-addressed blobs on disk (or an object store), shared by every row that holds the same bytes.
-- refcount counts the local_media and media_thumbnails rows pointing at the blob; the file is deleted
-- only once it reaches 0.
CREATE TABLE media_blobs (
    sha256 TEXT NOT NULL PRIMARY KEY,
    size BIGINT NOT NULL,
    refcount BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- Local media: one row per mxc://<us>/<media_id>. A row reserved by POST /media/v1/create has
-- sha256 NULL until its upload (and expires at unused_expires_ts); size counts towards the uploader's
-- quota once uploaded.
CREATE TABLE local_media (
    media_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    unused_expires_ts BIGINT,
    uploaded_ts BIGINT,
    content_type TEXT,
    size BIGINT,
    sha256 TEXT,
    filename TEXT,
    width INTEGER,
    height INTEGER,
    frames INTEGER,
    quarantined_by TEXT,
    last_access_ts BIGINT
);
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_unused ON local_media (unused_expires_ts);
CREATE INDEX local_media_access ON local_media (last_access_ts);
CREATE INDEX local_media_sha256 ON local_media (sha256);

-- Generated thumbnails (also blobs). width/height/method/animated is the size asked for; the image
-- itself is thumb_width x thumb_height.
CREATE TABLE media_thumbnails (
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    animated SMALLINT NOT NULL,
    thumb_width INTEGER NOT NULL,
    thumb_height INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (media_id, width, height, method, animated)
);

-- Per-user storage use, updated in the same transaction as local_media (audit STORAGE-3):
-- quota_bytes NULL means the configured default.
CREATE TABLE media_usage (
    user_id TEXT NOT NULL PRIMARY KEY,
    used_bytes BIGINT NOT NULL,
    file_count BIGINT NOT NULL,
    quota_bytes BIGINT
);
