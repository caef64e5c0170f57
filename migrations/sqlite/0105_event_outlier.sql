-- outlier marks the events held outside every timeline (see 0103). Events fetched by
-- backfill also take negative stream positions, below everything this server saw
-- live, but they are timeline: history from before this server joined a room, which
-- /messages pages into. Timeline queries read NOT outlier.
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE events SET outlier = TRUE WHERE stream_pos < 0;
