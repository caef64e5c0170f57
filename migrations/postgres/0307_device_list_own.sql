-- own_pos is the latest position at which anything the user's own devices must
-- refetch changed: every change stream_pos records, and also those only the user
-- may see (a new user-signing key). A user's own devices are told from own_pos,
-- everyone else from stream_pos.
ALTER TABLE device_list_changes ADD COLUMN own_pos BIGINT NOT NULL DEFAULT 0;
UPDATE device_list_changes SET own_pos = stream_pos;
