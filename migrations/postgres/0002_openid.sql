-- openid_tokens are the short-lived tokens a user asks for (POST /openid/request_token)
-- to prove their identity to a third party (widgets, integration managers), which
-- checks them with this server's /_matrix/federation/v1/openid/userinfo.
CREATE TABLE openid_tokens (
	token TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
