-- peeks are the rooms a device looks into without joining (MSC2753 peeking, POST
-- /peek/{roomIdOrAlias}): world-readable rooms only. stream_pos is the events
-- position the peek began at: the next sync sends the room afresh.
CREATE TABLE peeks (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, room_id)
);
