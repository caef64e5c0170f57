-- server_key_docs keeps each server's key document as it signed it, so that this
-- server, as a notary, can vouch for keys of a server that is unreachable now.
CREATE TABLE server_key_docs (
	server_name TEXT PRIMARY KEY,
	doc TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL
);
