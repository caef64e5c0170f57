-- rejected marks an event other servers sent that the auth rules refused. It is
-- kept (as an outlier: in no timeline and no state) so that events built on it
-- still find their prev event: the state after a rejected event is the state
-- before it (snapshot_before; 0 when that was not known).
ALTER TABLE events ADD COLUMN rejected BOOLEAN NOT NULL DEFAULT FALSE;
