-- rejected marks an event other servers sent that the auth rules refused;
-- soft_failed one they allow but the room's current state does not (soft
-- failure). Both are kept as outliers — in no timeline and not in the current
-- state — but placed in the DAG, so that events built on them find their prev
-- events: snapshot_before is the state before the event (0 when that was not
-- known), and the state after a rejected event is the state before it.
ALTER TABLE events ADD COLUMN rejected BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;
