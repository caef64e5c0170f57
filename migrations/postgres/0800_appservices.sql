-- appservice_state is each application service's place in the world, by its
-- registration ID: pos is the last position of the events stream its sender has
-- looked at (events after it are still to be considered for the service),
-- next_txn the number its next transaction will carry, and lease_node the node
-- that sends its transactions until lease_until (ms): with several nodes, one at
-- a time sends, and only it queues ephemeral events, which every node hears. A
-- registration removed from the configuration leaves its row; one added later
-- starts at the stream's end.
CREATE TABLE appservice_state (
	as_id TEXT PRIMARY KEY,
	pos BIGINT NOT NULL,
	next_txn BIGINT NOT NULL DEFAULT 1,
	lease_node TEXT NOT NULL DEFAULT '',
	lease_until BIGINT NOT NULL DEFAULT 0
);

-- appservice_queue holds what is still to be pushed to each application service, in
-- the order it was queued: kind is 'event' (a room event in the client format),
-- 'ephemeral' (typing, receipt, presence) or 'to_device'. txn_id is NULL until the
-- row is put in a transaction; from then on the transaction is retried with the
-- same rows and the same ID until the service answers 2xx, and the rows are deleted.
-- Nothing is sent before it is here, so a restart loses nothing and sends nothing twice
-- under a new ID.
CREATE TABLE appservice_queue (
	id BIGSERIAL PRIMARY KEY,
	as_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	json TEXT NOT NULL,
	txn_id BIGINT,
	created_ts BIGINT NOT NULL
);
CREATE INDEX appservice_queue_as ON appservice_queue (as_id, id);
