-- (SQLite twin of postgres/0600; the schema is documented there.)
-- push_notifications holds the push evaluator's decisions: one row for every event
-- a local user's push rules say notifies them (the matching rule's actions include
-- "notify"). pos is the row's position in the 'push_notifications' stream, taken in
-- the same transaction that moves push_cursor past the event, so a reader that
-- walks pos (the pushers, sync) never skips a row committed later. event_pos is the
-- event's position in the events stream: unread counts are the rows after the
-- event of the user's latest read receipt. thread_id is the event's thread root
-- ('' for the main timeline); actions is the rule's actions as a JSON array;
-- highlight is true when a highlight tweak (true or valueless) came with notify;
-- ts is the event's origin_server_ts.
CREATE TABLE push_notifications (
	pos INTEGER PRIMARY KEY, -- the rowid: one B-tree less per row than BIGINT (postgres: BIGINT)
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	event_pos BIGINT NOT NULL,
	actions TEXT NOT NULL,
	highlight BOOLEAN NOT NULL,
	ts BIGINT NOT NULL
);
CREATE INDEX push_notifications_counts ON push_notifications (user_id, room_id, event_pos);
CREATE INDEX push_notifications_user ON push_notifications (user_id, pos);

-- push_cursor holds the evaluator's position in the events stream (name
-- 'evaluator'): the last event whose notifications are stored.
CREATE TABLE push_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);

INSERT INTO streams (name, pos) VALUES ('push_notifications', 0);
