-- (SQLite twin of postgres/0602; the schema is documented there.)
-- push_room_notifications holds one row per event for the outcome most of the
-- room's local members share ("notify" with the same actions, no highlight):
-- it stands for every local user joined in the state before the event except
-- the sender and the users with a push_notifications row for the event, which
-- then hold exceptions only (mentions, highlights, own rules, and notify = false
-- for a member the event does not notify). A message then writes O(1 + exceptions)
-- rows instead of one per member. pos takes a position of the same
-- 'push_notifications' stream; the other columns are as in push_notifications.
CREATE TABLE push_room_notifications (
	pos INTEGER PRIMARY KEY, -- the rowid (postgres: BIGINT)
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	event_pos BIGINT NOT NULL,
	sender TEXT NOT NULL,
	actions TEXT NOT NULL,
	ts BIGINT NOT NULL
);
CREATE INDEX push_room_notifications_counts ON push_room_notifications (room_id, event_pos, thread_id, sender);

-- notify = false: the event does not notify the user though the room's shared
-- row says it notifies its members.
ALTER TABLE push_notifications ADD COLUMN notify BOOLEAN NOT NULL DEFAULT TRUE;
DROP INDEX push_notifications_counts;
CREATE INDEX push_notifications_counts ON push_notifications (user_id, room_id, event_pos, thread_id, highlight, notify);
-- The exceptions of one event, for expanding its shared row.
CREATE INDEX push_notifications_event ON push_notifications (event_pos);
