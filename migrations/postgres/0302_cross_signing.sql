-- Cross-signing keys (master, self_signing, user_signing) per user, as uploaded.
CREATE TABLE cross_signing_keys (
	user_id TEXT NOT NULL,
	key_type TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- cross_signing_sigs are signatures uploaded later through /keys/signatures/upload,
-- merged into the signed object when it is served. target_key is a device ID or a
-- cross-signing public key (base64).
CREATE TABLE cross_signing_sigs (
	target_user TEXT NOT NULL,
	target_key TEXT NOT NULL,
	signer TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature TEXT NOT NULL,
	PRIMARY KEY (target_user, target_key, signer, signer_key_id)
);
