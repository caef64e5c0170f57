-- erased marks an account deactivated with erase: true (the spec's "erasure"). Its
-- events are shown pruned, as if redacted, to every reader who was not joined to the
-- room when they were sent; those who were keep seeing them whole.
ALTER TABLE accounts ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
