-- (SQLite twin of postgres/0500; the schema is documented there.)
-- server_keys caches other servers' signing keys (and holds our own), fetched
-- directly or through notaries. valid_until_ts bounds when a key may verify;
-- expired_ts is set for old_verify_keys, which verify only what was signed before.
CREATE TABLE server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (server_name, key_id)
);

-- federation_queue holds what is still to be sent to each destination: PDUs and EDUs
-- in the order they were queued. A row is deleted once the destination acknowledged
-- the transaction carrying it, so a restart resumes where sending stopped.
CREATE TABLE federation_queue (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	destination TEXT NOT NULL,
	kind TEXT NOT NULL,
	json TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_destination ON federation_queue (destination, id);

-- federation_txns makes inbound /send idempotent per origin and transaction ID: a
-- repeated transaction gets the first one's answer.
CREATE TABLE federation_txns (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	response TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
