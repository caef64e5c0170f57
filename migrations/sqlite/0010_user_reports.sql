-- user_reports holds users' reports of other users (POST /users/{userId}/report,
-- spec v1.14) for server admins to review.
CREATE TABLE user_reports (
	id BIGINT PRIMARY KEY,
	user_id TEXT NOT NULL,
	reporter TEXT NOT NULL,
	reason TEXT NOT NULL,
	received_ts BIGINT NOT NULL
);
CREATE INDEX user_reports_user ON user_reports (user_id);
INSERT INTO streams (name, pos) VALUES ('user_reports', 0);
