-- The media repository. media holds one row per mxc:// URI this server serves; the
-- bytes live in a backend (local directory or S3) under their SHA-256, so identical
-- uploads share one stored object. media_id is unique per origin server; local media
-- has origin = this server's name. upload_pending marks an ID reserved by
-- /media/v1/create whose bytes have not arrived yet.
CREATE TABLE media (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	uploader TEXT NOT NULL DEFAULT '',
	content_type TEXT NOT NULL DEFAULT '',
	upload_name TEXT NOT NULL DEFAULT '',
	size BIGINT NOT NULL DEFAULT 0,
	sha256 TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	upload_pending BOOLEAN NOT NULL DEFAULT FALSE,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	quarantined BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader);
CREATE INDEX media_created ON media (created_ts);

-- media_thumbnails caches generated thumbnails, stored in the backend like media.
CREATE TABLE media_thumbnails (
	origin TEXT NOT NULL,
	media_id TEXT NOT NULL,
	width INTEGER NOT NULL,
	height INTEGER NOT NULL,
	method TEXT NOT NULL,
	content_type TEXT NOT NULL,
	size BIGINT NOT NULL,
	sha256 TEXT NOT NULL,
	PRIMARY KEY (origin, media_id, width, height, method)
);
