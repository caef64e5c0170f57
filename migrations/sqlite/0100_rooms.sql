-- (SQLite twin of postgres/0100; the schema is documented there.)
-- The room engine: events, state, memberships.

-- rooms holds each room's head: its version, the state snapshot after its latest
-- event, and the depth to give the next event. Writers of a room lock this row first,
-- so two writers (on one node or several) cannot fork a room by accident.
CREATE TABLE rooms (
	room_id TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	creator TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	current_snapshot BIGINT NOT NULL DEFAULT 0,
	depth BIGINT NOT NULL DEFAULT 0,
	visibility TEXT NOT NULL DEFAULT 'private'
);

-- events stores every event once. stream_pos orders all events of all rooms in
-- commit order (from the streams row 'events'); sync reads "events after position N".
-- snapshot_before is the state snapshot before the event, which history visibility
-- and /members?at need. json is the signed event as sent over federation, replaced by
-- its redacted form when redacted (redacted_by says by what). membership is set for
-- m.room.member events so that visibility checks need not parse JSON.
CREATE TABLE events (
	stream_pos BIGINT PRIMARY KEY,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	sender TEXT NOT NULL,
	depth BIGINT NOT NULL,
	origin_ts BIGINT NOT NULL,
	snapshot_before BIGINT NOT NULL,
	membership TEXT,
	relates_to TEXT,
	rel_type TEXT,
	redacted_by TEXT,
	json TEXT NOT NULL
);
CREATE INDEX events_room_pos ON events (room_id, stream_pos);
CREATE INDEX events_relates ON events (relates_to) WHERE relates_to IS NOT NULL;

-- state_snapshots are the room's state after each state event, stored as a delta on
-- a parent snapshot, with a full copy (parent NULL) every 32 steps so that resolving
-- any snapshot reads at most 32 deltas. A snapshot's id is the stream position of the
-- state event that made it.
CREATE TABLE state_snapshots (
	snapshot_id BIGINT PRIMARY KEY,
	room_id TEXT NOT NULL,
	parent BIGINT,
	chain_len BIGINT NOT NULL
);
CREATE TABLE state_snapshot_entries (
	snapshot_id BIGINT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (snapshot_id, type, state_key)
);

-- current_state is the state after the room's latest event, so current-state lookups
-- (auth, /state, joined rooms, members) never walk history.
CREATE TABLE current_state (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	membership TEXT,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- forward_extremities are the room's latest events (no successors yet); local sends
-- build on them and federation will add forks.
CREATE TABLE forward_extremities (
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	PRIMARY KEY (room_id, event_id)
);

-- transaction_ids makes PUT /send idempotent per device.
CREATE TABLE transaction_ids (
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (localpart, device_id, txn_id)
);

-- room_aliases maps #alias:server to a room.
CREATE TABLE room_aliases (
	alias TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- forgotten_rooms records rooms a user left and forgot.
CREATE TABLE forgotten_rooms (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);

INSERT INTO streams (name, pos) VALUES ('events', 0);
