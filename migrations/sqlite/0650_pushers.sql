-- (SQLite twin of postgres/0650; the schema is documented there.)
CREATE TABLE pushers (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
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
	id INTEGER PRIMARY KEY AUTOINCREMENT,
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
