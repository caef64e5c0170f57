-- server_key_docs keeps each key document a server gave, as it signed it, under
-- every key ID it lists: this server, as a notary, vouches from here for keys of
-- servers that are unreachable now or no longer list an old key.
CREATE TABLE server_key_docs (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	doc TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
