-- social_requests holds the friend requests this server has seen, one row per
-- request room (a direct-message room whose create event carries the
-- im.hongyan.friend_request marker), whichever side of it the local user is on. It
-- is derived from the room events (the invite, the join, the leave) by
-- homeserver/social's consumer of the events stream and written at once by the
-- local operations, so that a listing is one indexed read, the same on every device
-- and after a restart. state: pending, accepted, declined, cancelled, removed.
CREATE TABLE social_requests (
	room_id TEXT PRIMARY KEY,
	requester TEXT NOT NULL,
	target TEXT NOT NULL,
	message TEXT NOT NULL DEFAULT '',
	state TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	updated_ts BIGINT NOT NULL
);
CREATE INDEX social_requests_requester ON social_requests (requester, state);
CREATE INDEX social_requests_target ON social_requests (target, state);

-- social_cursor is the consumer's position in the events stream (name 'social').
CREATE TABLE social_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
