-- federation_cursor holds the outgoing sender's position in the events stream (name
-- 'federation_out'): the last event it has queued for other servers. It used to be a
-- row of the core's streams table, which sync reads as its own; each table has one
-- owning package, so federation keeps its cursor here and reads events only through
-- the room engine (rooms.Service.EventsSince).
CREATE TABLE federation_cursor (
	name TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
INSERT INTO federation_cursor (name, pos) SELECT name, pos FROM streams WHERE name = 'federation_out';
DELETE FROM streams WHERE name = 'federation_out';
