-- End-to-end encryption: the server stores and hands out keys; it never decrypts.

-- device_keys holds each device's signed identity keys as uploaded (JSON).
CREATE TABLE device_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

-- one_time_keys are claimed (and deleted) one at a time by other devices.
CREATE TABLE one_time_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, key_id)
);

-- fallback_keys: one per device and algorithm, handed out (and marked used, but kept)
-- when one-time keys run out.
CREATE TABLE fallback_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm)
);

-- device_list_changes records the latest position at which a user's device list or
-- device keys changed, so sync can tell others to refetch them.
CREATE TABLE device_list_changes (
	user_id TEXT PRIMARY KEY,
	stream_pos BIGINT NOT NULL
);
CREATE INDEX device_list_changes_stream ON device_list_changes (stream_pos);

-- to_device holds messages for one device until the device acknowledges them by
-- syncing past their position; id comes from the streams row 'to_device'.
CREATE TABLE to_device (
	id BIGINT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL
);
CREATE INDEX to_device_target ON to_device (user_id, device_id, id);

-- to_device_txns makes PUT /sendToDevice idempotent per sending device.
CREATE TABLE to_device_txns (
	sender TEXT NOT NULL,
	sender_device TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (sender, sender_device, txn_id)
);

INSERT INTO streams (name, pos) VALUES ('device_lists', 0);
INSERT INTO streams (name, pos) VALUES ('to_device', 0);
