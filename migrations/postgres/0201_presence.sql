-- presence is each user's last set presence. stream_pos (from the streams row
-- 'presence') moves when the state or status message changes, or when activity is
-- recorded after a quiet minute, so sync sends only real changes.
CREATE TABLE presence (
	user_id TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_pos);
INSERT INTO streams (name, pos) VALUES ('presence', 0);
