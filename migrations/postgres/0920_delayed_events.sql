-- delayed_events holds the events clients scheduled with MSC4140's delay parameter and
-- that have not fired or been cancelled yet, one row each. homeserver/delayed owns it:
-- send_ts is when the event is due (running_since + delay_ms; a restart moves both),
-- and the scheduler claims a due row by deleting it, so exactly one node sends it.
-- state_key is NULL for a message event; txn_id is the client's transaction ID
-- (device and txnId of a PUT /send) so that a retried request schedules once.
CREATE TABLE delayed_events (
	delay_id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	txn_id TEXT,
	room_id TEXT NOT NULL,
	event_type TEXT NOT NULL,
	state_key TEXT,
	content TEXT NOT NULL,
	delay_ms BIGINT NOT NULL,
	running_since BIGINT NOT NULL,
	send_ts BIGINT NOT NULL
);
CREATE INDEX delayed_events_user ON delayed_events (user_id);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events (user_id, txn_id);
CREATE INDEX delayed_events_due ON delayed_events (send_ts);
CREATE INDEX delayed_events_state ON delayed_events (room_id, event_type, state_key);
