-- (SQLite twin of postgres/0800; the schema is documented there.)
CREATE TABLE appservice_state (
	as_id TEXT PRIMARY KEY,
	pos BIGINT NOT NULL,
	next_txn BIGINT NOT NULL DEFAULT 1,
	lease_node TEXT NOT NULL DEFAULT '',
	lease_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE appservice_queue (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	as_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	json TEXT NOT NULL,
	txn_id BIGINT,
	created_ts BIGINT NOT NULL
);
CREATE INDEX appservice_queue_as ON appservice_queue (as_id, id);
