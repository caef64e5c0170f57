-- partial_state marks a room joined through another server with partial state
-- (MSC3706: the member events left out of send_join's answer) until the whole
-- state has been fetched in the background; partial_servers are the servers in the
-- room as send_join listed them, which the sender uses until then.
ALTER TABLE rooms ADD COLUMN partial_state BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE rooms ADD COLUMN partial_servers TEXT NOT NULL DEFAULT '[]';
