-- (SQLite twin of postgres/0940; the schema is documented there.) The text lives
-- in the FTS5 table search_fts, whose rowid is search_events.pos.
CREATE TABLE search_events (
	pos INTEGER PRIMARY KEY,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	key TEXT NOT NULL,
	origin_ts BIGINT NOT NULL
);
CREATE INDEX search_events_room ON search_events (room_id, pos);
CREATE VIRTUAL TABLE search_fts USING fts5(body, tokenize = 'porter unicode61');

CREATE TABLE search_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO search_cursor (name, pos) VALUES ('search', 0), ('search_backfill', 0);
