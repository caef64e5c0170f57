-- state_completed_pos is the events-stream position taken when a partial-state
-- room got its whole state: a sync across it sends the room as newly joined, so
-- clients learn the members that arrived in the background.
ALTER TABLE rooms ADD COLUMN state_completed_pos BIGINT NOT NULL DEFAULT 0;
CREATE INDEX rooms_state_completed ON rooms (state_completed_pos) WHERE state_completed_pos > 0;
-- Every sync asks which rooms are still partial: a handful at most, found by index.
CREATE INDEX rooms_partial_state ON rooms (room_id) WHERE partial_state;
