-- remote_invite_state keeps the stripped state an inviting server sent along with an
-- invite into a room this server is not in, so the invitee's client can show the
-- room (name, avatar, encryption, who invited) before joining. Dropped on join.
CREATE TABLE remote_invite_state (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	json TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
