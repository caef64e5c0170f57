-- The device lists of other servers' users this server shares rooms with, as
-- their servers reported them (GET /user/devices, then m.device_list_update
-- EDUs): key queries are answered from here instead of asking the other server
-- every time, and still answered while it is down. stale marks a list whose
-- updates went missing (or that changed without saying how): the next query
-- fetches it again. changes counts the updates received: a fetch that began
-- before one arrived does not clear stale.
CREATE TABLE remote_device_lists (
	user_id TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL,
	stale BOOLEAN NOT NULL,
	changes BIGINT NOT NULL DEFAULT 0,
	master_key TEXT,
	self_signing_key TEXT
);
CREATE TABLE remote_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	keys TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
