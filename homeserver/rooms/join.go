package rooms

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// SelfJoin is a user's request to join (or knock on) a room named by ID or alias.
// Every front-end (the client API's /join and /knock, the native join op) fills
// one in and calls JoinByIDOrAlias, so alias resolution and the choice of servers
// to join through are decided here once.
type SelfJoin struct {
	// UserID is the local user who joins.
	UserID string
	// Room is a room ID (!id:server) or a room alias (#name:server). An alias on
	// another server is resolved by asking that server over federation.
	Room string
	// Via lists servers to try, in order, when the room is not held here. The
	// servers an alias lookup returns are tried after them. Empty is fine.
	Via []string
	// Reason goes into the membership event's content; empty for none.
	Reason string
	// Knock asks to knock instead of join.
	Knock bool
	// Content holds extra keys for the membership event's content (a per-room
	// displayname or avatar_url, or anything a client wants there), as a client's
	// /join body may carry. See Membership.Content.
	Content map[string]json.RawMessage
}

// JoinByIDOrAlias joins (or knocks on) the room j names and returns its ID. An
// alias that resolves nowhere, here or on its server, is M_NOT_FOUND; a name that
// is neither an ID nor an alias is M_INVALID_PARAM.
func (s *Service) JoinByIDOrAlias(ctx context.Context, j SelfJoin) (string, error) {
	roomID := j.Room
	servers := append([]string(nil), j.Via...)
	switch {
	case strings.HasPrefix(j.Room, "#"):
		id, aliasServers, err := s.LookupAlias(ctx, j.Room)
		if err != nil {
			// Any failure, including an unreachable alias server, reads as an
			// unknown alias: the client can do nothing else with it.
			return "", mxerror.New(mxerror.NotFound, "unknown room alias %s", j.Room)
		}
		roomID = id
		servers = append(servers, aliasServers...)
	case strings.HasPrefix(j.Room, "!"):
	default:
		return "", mxerror.New(mxerror.InvalidParam, "%q is neither a room ID nor an alias", j.Room)
	}
	membership := "join"
	if j.Knock {
		membership = "knock"
	}
	if _, err := s.SetMembership(ctx, roomID, Membership{Sender: j.UserID, Target: j.UserID,
		Membership: membership, Reason: j.Reason, Servers: servers, Content: j.Content}); err != nil {
		return "", err
	}
	return roomID, nil
}

// CheckRoomID is M_INVALID_PARAM unless id is a well-formed room ID. Front-ends
// call it on every room ID a request names, so a malformed one gets the same
// answer from each of them.
func CheckRoomID(id string) error {
	if _, err := spec.NewRoomID(id); err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a valid room ID", id)
	}
	return nil
}
