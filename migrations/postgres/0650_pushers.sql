-- pushers are the push gateways a user's devices asked to be woken through
-- (/pushers/set, the native pushers.set op). One row per (user, app_id, pushkey):
-- setting it again updates the row and keeps its id, so what is queued for it
-- stays queued. kind is 'http' (the only kind served). pushkey_ts is when the
-- pushkey was set, in milliseconds. data is the pusher's data object as JSON
-- (url, format, and whatever else the app put there; everything but url is sent
-- back to the gateway). device_id is the device whose access token set the
-- pusher: deleting the device (logout, device deletion, a password change that
-- logs other devices out) deletes its pushers. failing_since is when delivery to
-- this pusher started failing (0: it is not), so that giving up survives a
-- restart. lease_node and lease_until (ms) say which node's worker sends this
-- pusher's queue, so that two nodes never send it at once.
CREATE TABLE pushers (
	id BIGSERIAL PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL DEFAULT '',
	kind TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	pushkey_ts BIGINT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL DEFAULT '',
	lang TEXT NOT NULL,
	data TEXT NOT NULL,
	failing_since BIGINT NOT NULL DEFAULT 0,
	lease_node TEXT NOT NULL DEFAULT '',
	lease_until BIGINT NOT NULL DEFAULT 0,
	UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);
CREATE INDEX pushers_device ON pushers (user_id, device_id);

-- pusher_queue holds what is still to be sent to each pusher, in order: kind
-- 'event' rows carry a push.Notification as JSON, 'badge' rows ask for a
-- counts-only push after a receipt lowered the user's unread counts. A row is
-- deleted once the gateway accepted it, or given up on; deleting a pusher deletes
-- its rows.
CREATE TABLE pusher_queue (
	id BIGSERIAL PRIMARY KEY,
	pusher_id BIGINT NOT NULL,
	kind TEXT NOT NULL,
	notification TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX pusher_queue_pusher ON pusher_queue (pusher_id, id);

-- pusher_cursor holds the delivery scanner's position in push's notifications
-- stream (name 'pusher'): the last notification it has queued for pushers.
CREATE TABLE pusher_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
