-- Message search (homeserver/search, docs/search.md). search_events holds one row
-- per indexed event: the text of m.room.message's body, m.room.name's name or
-- m.room.topic's topic (key names which), as a tsvector searched through the GIN
-- index. pos is the event's events-stream position (recent order, pagination).
-- Encrypted events are never indexed. search_cursor holds the indexer's own
-- cursors: 'search' moves up the events stream, 'search_backfill' down through
-- history backfilled from other servers (negative positions).
CREATE TABLE search_events (
	pos BIGINT PRIMARY KEY,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	key TEXT NOT NULL,
	origin_ts BIGINT NOT NULL,
	vec TSVECTOR NOT NULL
);
CREATE INDEX search_events_vec ON search_events USING GIN (vec);
CREATE INDEX search_events_room ON search_events (room_id, pos);

CREATE TABLE search_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO search_cursor (name, pos) VALUES ('search', 0), ('search_backfill', 0);
