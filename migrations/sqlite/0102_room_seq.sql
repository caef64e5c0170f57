-- room_seq numbers each room's events 1, 2, 3, … in commit order. The native
-- protocol's pushes carry it, so a client sees a gap at once and resumes after a
-- reconnect (or a server restart) with its last seq per room. rooms.seq is the
-- room's latest; both are written in the event's transaction.
ALTER TABLE rooms ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN room_seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET room_seq = (SELECT COUNT(*) FROM events e WHERE e.room_id = events.room_id AND e.stream_pos <= events.stream_pos);
UPDATE rooms SET seq = COALESCE((SELECT MAX(room_seq) FROM events WHERE events.room_id = rooms.room_id), 0);
CREATE UNIQUE INDEX events_room_seq ON events (room_id, room_seq);
