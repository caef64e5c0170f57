-- Rows other servers cause are pruned by age (federation/prune.go): a remembered
-- /send answer after a day (a retry comes within minutes), a queued PDU or EDU for
-- a destination unreachable for a week (it catches up through get_missing_events
-- and backfill when it returns). These indexes find the old rows without a scan.
CREATE INDEX federation_txns_created ON federation_txns (created_ts);
CREATE INDEX federation_queue_created ON federation_queue (created_ts);
