-- dehydrated_devices holds each user's dehydrated device (MSC3814): a device with
-- keys but no access token, whose private keys the client keeps encrypted in
-- device_data, so that messages sent while all the user's devices were offline can
-- be decrypted by the next device that logs in. Its devices row makes it a device
-- like any other for key queries and to-device messages.
CREATE TABLE dehydrated_devices (
	localpart TEXT PRIMARY KEY,
	device_id TEXT NOT NULL,
	device_data TEXT NOT NULL
);
