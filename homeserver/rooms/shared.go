package rooms

// Subqueries on the room engine's tables for other packages' SQL. Presence and the
// user directory filter their own rows by who shares a room with whom in one query;
// a Go API returning those users would read every member of every room the user is
// in (tens of thousands in a large public room) on each sync wake-up. The engine owns
// the text, so its tables stay named only here and a schema change is made in one
// place.

// SharedRoomMembersSQL returns a subquery selecting the user ID of every member
// joined to a room that the user bound to placeholder (such as "$1") is joined to,
// that user included. Use it as `x IN (` + SharedRoomMembersSQL("$1") + `)`.
func SharedRoomMembersSQL(placeholder string) string {
	return `SELECT o.state_key FROM current_state me JOIN current_state o ON o.room_id = me.room_id
		WHERE me.type = 'm.room.member' AND me.state_key = ` + placeholder + ` AND me.membership = 'join'
		AND o.type = 'm.room.member' AND o.membership = 'join'`
}

// PublicRoomMembersSQL is a subquery selecting the user ID of every member joined
// to a room published in this server's room directory.
const PublicRoomMembersSQL = `SELECT c.state_key FROM current_state c JOIN rooms r ON r.room_id = c.room_id
		WHERE r.visibility = 'public' AND c.type = 'm.room.member' AND c.membership = 'join'`
