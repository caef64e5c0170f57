-- (SQLite twin of postgres/0200; the schema is documented there.)
-- Read receipts: the latest receipt of each type a user sent in a room (per thread).
-- thread_id '' is the unthreaded receipt. stream_pos comes from the streams row
-- 'receipts', so sync can send the receipts after a position.
CREATE TABLE receipts (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	thread_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL,
	ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);
INSERT INTO streams (name, pos) VALUES ('receipts', 0);
