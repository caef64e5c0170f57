-- (SQLite twin of postgres/0001; the schema is documented there.)
-- Accounts, devices and tokens: who may use this server and how they prove it.

-- accounts holds one row per local user, keyed by localpart (the user ID is
-- @localpart:server_name). password_hash is a PHC string (argon2id, or bcrypt for
-- imported accounts); empty means password login is impossible. A deactivated account
-- keeps its row forever so that its user ID is never handed out again.
CREATE TABLE accounts (
	localpart TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL DEFAULT '',
	is_guest BOOLEAN NOT NULL DEFAULT FALSE,
	is_admin BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated BOOLEAN NOT NULL DEFAULT FALSE,
	created_ts BIGINT NOT NULL
);

-- devices are a user's logged-in sessions. A device exists while it has an access
-- token; deleting the device deletes its tokens (and, later, its keys).
CREATE TABLE devices (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT,
	created_ts BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL DEFAULT 0,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (localpart, device_id)
);

-- access_tokens stores SHA-256 digests of access tokens, never the tokens, so a
-- leaked database does not log anyone in. refresh_hash is the digest of the refresh
-- token issued with it, if any; expires_ts 0 means the token does not expire.
CREATE TABLE access_tokens (
	token_hash TEXT PRIMARY KEY,
	refresh_hash TEXT UNIQUE,
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_device ON access_tokens (localpart, device_id);

-- login_tokens are short-lived single-use tokens for m.login.token.
CREATE TABLE login_tokens (
	token_hash TEXT PRIMARY KEY,
	localpart TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);

-- uia_sessions remembers the stages a user-interactive auth session has completed and
-- what it was started for, so a client cannot reuse it for another request.
CREATE TABLE uia_sessions (
	session_id TEXT PRIMARY KEY,
	purpose TEXT NOT NULL,
	localpart TEXT NOT NULL DEFAULT '',
	completed TEXT NOT NULL DEFAULT '[]',
	registration_token TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL
);

-- registration_tokens gate registration when it requires m.login.registration_token.
-- uses_allowed NULL is unlimited, expiry_ts NULL never expires; pending counts UIA
-- sessions that validated the token but have not finished registering.
CREATE TABLE registration_tokens (
	token TEXT PRIMARY KEY,
	uses_allowed BIGINT,
	pending BIGINT NOT NULL DEFAULT 0,
	completed BIGINT NOT NULL DEFAULT 0,
	expiry_ts BIGINT
);

-- profiles holds the global displayname and avatar of each local user.
CREATE TABLE profiles (
	localpart TEXT PRIMARY KEY,
	displayname TEXT,
	avatar_url TEXT
);

-- streams hands out positions for the per-user streams (account data, ...): a write
-- takes the next position in the same transaction as the row it positions, so a
-- reader that has seen position N has seen every write up to N once they commit.
CREATE TABLE streams (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO streams (name, pos) VALUES ('account_data', 0);

-- account_data is per-user (room_id '') or per-room JSON content by type.
CREATE TABLE account_data (
	localpart TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (localpart, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (localpart, stream_pos);

-- filters are the sync filters a user uploaded; filter_id counts up per user.
CREATE TABLE filters (
	localpart TEXT NOT NULL,
	filter_id BIGINT NOT NULL,
	content TEXT NOT NULL,
	PRIMARY KEY (localpart, filter_id)
);
