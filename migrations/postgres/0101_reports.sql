-- event_reports holds users' reports of events (and of whole rooms: event_id '') for
-- server admins to review.
CREATE TABLE event_reports (
	id BIGINT PRIMARY KEY,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	reason TEXT,
	score BIGINT,
	received_ts BIGINT NOT NULL
);
CREATE INDEX events_room_ts ON events (room_id, origin_ts);
INSERT INTO streams (name, pos) VALUES ('event_reports', 0);
