-- federation_leases gives each destination to one node at a time: a node sends a
-- destination's queue only while it holds an unexpired lease, renewed as it sends
-- and released when it stops, so several nodes never send the same queue twice.
CREATE TABLE federation_leases (
	destination TEXT PRIMARY KEY,
	node TEXT NOT NULL,
	until_ts BIGINT NOT NULL
);
