package social

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Request states (social_requests.state).
const (
	statePending   = "pending"
	stateAccepted  = "accepted"
	stateDeclined  = "declined"
	stateCancelled = "cancelled"
	stateRemoved   = "removed"
)

// Request is a friend request as one side sees it: UserID is the other side.
type Request struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester"`
	Target    string `json:"target"`
	Message   string `json:"message"`
	TS        int64  `json:"ts"`
}

// Requests are a user's pending requests, each side.
type Requests struct {
	Incoming []Request `json:"incoming"`
	Outgoing []Request `json:"outgoing"`
}

// Friend is one of a user's friends with what a contact list shows.
type Friend struct {
	UserID      string  `json:"user_id"`
	RoomID      string  `json:"room_id"`
	Since       int64   `json:"since"`
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
	Presence    string  `json:"presence,omitempty"`
	StatusMsg   *string `json:"status_msg,omitempty"`
	// LastActiveAgo is milliseconds since the friend was last active, when known.
	LastActiveAgo int64 `json:"last_active_ago,omitempty"`
}

type requestRow struct {
	roomID, requester, target, message, state string
	created, updated                          int64
}

// request is the request as viewer sees it.
func (r requestRow) request(viewer string) Request {
	return Request{RoomID: r.roomID, UserID: r.other(viewer), Requester: r.requester, Target: r.target, Message: r.message, TS: r.created}
}

// other is the side of the request that is not userID.
func (r requestRow) other(userID string) string {
	if r.requester == userID {
		return r.target
	}
	return r.requester
}

const requestColumns = `room_id, requester, target, message, state, created_ts, updated_ts`

func scanRequests(rows *sql.Rows, err error) ([]requestRow, error) {
	if err != nil {
		return nil, fmt.Errorf("read friend requests: %w", err)
	}
	defer rows.Close()
	var out []requestRow
	for rows.Next() {
		var r requestRow
		if err := rows.Scan(&r.roomID, &r.requester, &r.target, &r.message, &r.state, &r.created, &r.updated); err != nil {
			return nil, fmt.Errorf("read friend requests: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// requestIn returns the request of a room, ok false if the room is none.
func (s *Service) requestIn(ctx context.Context, roomID string) (requestRow, bool, error) {
	rows, err := scanRequests(s.d.DB.Query(ctx, `SELECT `+requestColumns+` FROM social_requests WHERE room_id = $1`, roomID))
	if err != nil || len(rows) == 0 {
		return requestRow{}, false, err
	}
	return rows[0], true, nil
}

// between returns the newest request from requester to target in state.
func (s *Service) between(ctx context.Context, requester, target, state string) (requestRow, bool, error) {
	rows, err := scanRequests(s.d.DB.Query(ctx, `SELECT `+requestColumns+` FROM social_requests
		WHERE requester = $1 AND target = $2 AND state = $3 ORDER BY created_ts DESC`, requester, target, state))
	if err != nil || len(rows) == 0 {
		return requestRow{}, false, err
	}
	return rows[0], true, nil
}

// friendship returns the accepted request between a and b, either way.
func (s *Service) friendship(ctx context.Context, a, b string) (requestRow, bool, error) {
	if r, ok, err := s.between(ctx, a, b, stateAccepted); err != nil || ok {
		return r, ok, err
	}
	return s.between(ctx, b, a, stateAccepted)
}

// record inserts a request row; a row for the room already there is kept.
func (s *Service) record(ctx context.Context, r requestRow) error {
	_, err := s.d.DB.Exec(ctx, `INSERT INTO social_requests (`+requestColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id) DO NOTHING`, r.roomID, r.requester, r.target, r.message, r.state, r.created, r.updated)
	if err != nil {
		return fmt.Errorf("record friend request in %s: %w", r.roomID, err)
	}
	return nil
}

// transition moves a request from one state to another and reports whether this
// call did it: the local operation and the consumer both try, and exactly one of
// them carries out what follows (account data, notices).
func (s *Service) transition(ctx context.Context, roomID, from, to string) (bool, error) {
	res, err := s.d.DB.Exec(ctx, `UPDATE social_requests SET state = $1, updated_ts = $2 WHERE room_id = $3 AND state = $4`,
		to, nowMs(), roomID, from)
	if err != nil {
		return false, fmt.Errorf("friend request %s: %s → %s: %w", roomID, from, to, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// settle moves a request from one state to another. It reports whether the
// request is now in state to (so the caller applies the idempotent account data
// changes: the local operation and the consumer may both get here, and each must
// find the account data right when it returns) and whether this call moved it (so
// only one of them publishes the notice).
func (s *Service) settle(ctx context.Context, roomID, from, to string) (now, did bool, err error) {
	if did, err = s.transition(ctx, roomID, from, to); err != nil || did {
		return did, did, err
	}
	r, ok, err := s.requestIn(ctx, roomID)
	return ok && r.state == to, false, err
}

// checkUser answers whether userID names an existing user: a local account that is
// not deactivated, or a remote user whose server answers a profile query.
func (s *Service) checkUser(ctx context.Context, userID string) error {
	if _, err := spec.NewUserID(userID, true); err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", userID)
	}
	if s.isLocal(userID) {
		a, err := s.d.Users.Account(ctx, s.localpart(userID))
		if errors.Is(err, users.ErrNotFound) || (err == nil && a.Deactivated) {
			return mxerror.New(mxerror.NotFound, "user %s does not exist", userID)
		}
		return err
	}
	if _, err := s.d.Users.ProfileOf(ctx, userID); err != nil {
		var mx *mxerror.Error
		if errors.As(err, &mx) {
			return mxerror.New(mxerror.NotFound, "user %s was not found on their server", userID)
		}
		return err
	}
	return nil
}

// RequestFriend sends a friend request from a local user. Asking again while a
// request is pending returns that request (idempotent); asking someone whose own
// request to you is pending accepts theirs; asking a friend is M_BAD_STATE;
// yourself M_INVALID_PARAM; a user who does not exist M_NOT_FOUND; someone you
// blocked M_FORBIDDEN (unblock first). A request to someone who blocked you is
// made and then declined by their server, which tells you nothing more.
func (s *Service) RequestFriend(ctx context.Context, from, to, message string) (Request, error) {
	if to == "" {
		return Request{}, mxerror.New(mxerror.MissingParam, "user_id is required")
	}
	if _, err := spec.NewUserID(to, true); err != nil {
		return Request{}, mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", to)
	}
	if to == from {
		return Request{}, mxerror.New(mxerror.InvalidParam, "you cannot befriend yourself")
	}
	if len(message) > 1000 {
		return Request{}, mxerror.New(mxerror.TooLarge, "the message is longer than 1000 bytes")
	}
	if blocked, err := s.Ignores(ctx, from, to); err != nil {
		return Request{}, err
	} else if blocked {
		return Request{}, mxerror.New(mxerror.Forbidden, "you blocked %s; unblock them first", to)
	}
	if _, ok, err := s.friendship(ctx, from, to); err != nil {
		return Request{}, err
	} else if ok {
		return Request{}, mxerror.New(mxerror.BadState, "%s is already your friend", to)
	}
	if r, ok, err := s.between(ctx, from, to, statePending); err != nil {
		return Request{}, err
	} else if ok {
		return r.request(from), nil
	}
	if r, ok, err := s.between(ctx, to, from, statePending); err != nil {
		return Request{}, err
	} else if ok {
		if _, err := s.Accept(ctx, from, to); err != nil {
			return Request{}, err
		}
		return r.request(from), nil
	}
	if err := s.checkUser(ctx, to); err != nil {
		return Request{}, err
	}
	marker, _ := json.Marshal(map[string]any{FriendRequestMarker: map[string]string{"requester": from, "target": to, "message": message}})
	roomID, err := s.d.Rooms.CreateRoom(ctx, from, rooms.CreateRequest{Preset: "trusted_private_chat", IsDirect: true, CreationContent: marker})
	if err != nil {
		return Request{}, fmt.Errorf("friend request room: %w", err)
	}
	now := nowMs()
	row := requestRow{roomID: roomID, requester: from, target: to, message: message, state: statePending, created: now, updated: now}
	// Recorded before the invite, so the consumer that sees the invite finds it.
	if err := s.record(ctx, row); err != nil {
		return Request{}, err
	}
	if _, err := s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: from, Target: to, Membership: "invite", IsDirect: true, Reason: message}); err != nil {
		// The request never reached them: no room, no request.
		s.d.DB.Exec(ctx, `DELETE FROM social_requests WHERE room_id = $1`, roomID)
		s.d.Rooms.SetMembership(ctx, roomID, rooms.Membership{Sender: from, Target: from, Membership: "leave"})
		return Request{}, err
	}
	if err := s.addDirect(ctx, from, to, roomID); err != nil {
		return Request{}, err
	}
	return row.request(from), nil
}

// Requests lists a user's pending requests, newest first.
func (s *Service) Requests(ctx context.Context, userID string) (Requests, error) {
	out := Requests{Incoming: []Request{}, Outgoing: []Request{}}
	rows, err := scanRequests(s.d.DB.Query(ctx, `SELECT `+requestColumns+` FROM social_requests
		WHERE state = 'pending' AND (requester = $1 OR target = $1) ORDER BY created_ts DESC`, userID))
	if err != nil {
		return out, err
	}
	for _, r := range rows {
		if r.target == userID {
			out.Incoming = append(out.Incoming, r.request(userID))
		} else {
			out.Outgoing = append(out.Outgoing, r.request(userID))
		}
	}
	return out, nil
}

// Accept accepts requester's pending request: the user joins the request room.
// A request that is not pending (never made, cancelled, answered) is M_NOT_FOUND.
func (s *Service) Accept(ctx context.Context, userID, requester string) (string, error) {
	r, ok, err := s.between(ctx, requester, userID, statePending)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", mxerror.New(mxerror.NotFound, "no pending friend request from %s", requester)
	}
	if _, err := s.d.Rooms.JoinByIDOrAlias(ctx, rooms.SelfJoin{UserID: userID, Room: r.roomID, Via: []string{serverOf(requester)}}); err != nil {
		var mx *mxerror.Error
		if errors.As(err, &mx) && mx.Code == mxerror.Forbidden {
			// The invite is gone (withdrawn while we looked): so is the request.
			if _, terr := s.transition(ctx, r.roomID, statePending, stateCancelled); terr != nil {
				return "", terr
			}
			return "", mxerror.New(mxerror.NotFound, "the friend request from %s was withdrawn", requester)
		}
		return "", err
	}
	if err := s.accepted(ctx, r); err != nil {
		return "", err
	}
	return r.roomID, nil
}

// accepted moves the request to accepted, once, and records the friendship for
// both sides' local users.
func (s *Service) accepted(ctx context.Context, r requestRow) error {
	now, did, err := s.settle(ctx, r.roomID, statePending, stateAccepted)
	if err != nil || !now {
		return err
	}
	since := nowMs()
	for _, pair := range [][2]string{{r.requester, r.target}, {r.target, r.requester}} {
		if err := s.addFriend(ctx, pair[0], pair[1], r.roomID, since); err != nil {
			return err
		}
		if err := s.addDirect(ctx, pair[0], pair[1], r.roomID); err != nil {
			return err
		}
	}
	if did {
		s.publish(Notice{UserID: r.requester, Kind: KindFriendAccepted, RoomID: r.roomID, From: r.target})
	}
	return nil
}

// Decline declines requester's pending request: the user rejects the invite.
func (s *Service) Decline(ctx context.Context, userID, requester string) error {
	r, ok, err := s.between(ctx, requester, userID, statePending)
	if err != nil {
		return err
	}
	if !ok {
		return mxerror.New(mxerror.NotFound, "no pending friend request from %s", requester)
	}
	return s.decline(ctx, r)
}

func (s *Service) decline(ctx context.Context, r requestRow) error {
	if _, err := s.d.Rooms.SetMembership(ctx, r.roomID, rooms.Membership{Sender: r.target, Target: r.target, Membership: "leave"}); err != nil {
		return err
	}
	return s.ended(ctx, r, stateDeclined, r.target)
}

// Cancel withdraws the user's pending request to target: the invite is rescinded
// and the requester leaves the room.
func (s *Service) Cancel(ctx context.Context, userID, target string) error {
	r, ok, err := s.between(ctx, userID, target, statePending)
	if err != nil {
		return err
	}
	if !ok {
		return mxerror.New(mxerror.NotFound, "no pending friend request to %s", target)
	}
	if _, err := s.d.Rooms.SetMembership(ctx, r.roomID, rooms.Membership{Sender: userID, Target: target, Membership: "kick", Reason: "friend request withdrawn"}); err != nil {
		var mx *mxerror.Error
		if !errors.As(err, &mx) {
			return err
		}
		// Already answered or gone: the requester's leave below still ends it.
	}
	if err := s.ended(ctx, r, stateCancelled, userID); err != nil {
		return err
	}
	_, err = s.d.Rooms.SetMembership(ctx, r.roomID, rooms.Membership{Sender: userID, Target: userID, Membership: "leave"})
	return err
}

// ended moves a pending request to declined or cancelled, once, tells the other
// side, and drops the room from the local sides' m.direct.
func (s *Service) ended(ctx context.Context, r requestRow, state, by string) error {
	now, did, err := s.settle(ctx, r.roomID, statePending, state)
	if err != nil || !now {
		return err
	}
	if did {
		kind := KindFriendDeclined
		if state == stateCancelled {
			kind = KindFriendCancelled
		}
		s.publish(Notice{UserID: r.other(by), Kind: kind, RoomID: r.roomID, From: by})
	}
	for _, u := range []string{r.requester, r.target} {
		if err := s.removeDirect(ctx, u, r.other(u), r.roomID); err != nil {
			return err
		}
	}
	return nil
}

// Friends lists the user's friends with their profile and presence.
func (s *Service) Friends(ctx context.Context, userID string) ([]Friend, error) {
	rows, err := scanRequests(s.d.DB.Query(ctx, `SELECT `+requestColumns+` FROM social_requests
		WHERE state = 'accepted' AND (requester = $1 OR target = $1)`, userID))
	if err != nil {
		return nil, err
	}
	out := []Friend{}
	seen := map[string]bool{}
	for _, r := range rows {
		f := Friend{UserID: r.other(userID), RoomID: r.roomID, Since: r.updated}
		if seen[f.UserID] {
			continue // two crossing requests both accepted: one friend
		}
		seen[f.UserID] = true
		if p, err := s.d.Users.ProfileOf(ctx, f.UserID); err == nil {
			f.DisplayName, f.AvatarURL = p.DisplayName, p.AvatarURL
		}
		if s.d.Presence != nil {
			if st, err := s.d.Presence.GetFor(ctx, userID, f.UserID); err == nil {
				f.Presence, f.StatusMsg, f.LastActiveAgo = st.Presence, st.StatusMsg, st.LastActiveAgo
			}
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// RemoveFriend ends a friendship: the user leaves the friends' room, and both
// sides' account data forget it (the other side's server when it sees the leave).
func (s *Service) RemoveFriend(ctx context.Context, userID, friend string) error {
	r, ok, err := s.friendship(ctx, userID, friend)
	if err != nil {
		return err
	}
	if !ok {
		return mxerror.New(mxerror.NotFound, "%s is not your friend", friend)
	}
	if _, err := s.d.Rooms.SetMembership(ctx, r.roomID, rooms.Membership{Sender: userID, Target: userID, Membership: "leave"}); err != nil {
		return err
	}
	return s.removed(ctx, r, userID)
}

// removed moves an accepted request to removed, once, and forgets the friendship
// on both local sides.
func (s *Service) removed(ctx context.Context, r requestRow, by string) error {
	now, did, err := s.settle(ctx, r.roomID, stateAccepted, stateRemoved)
	if err != nil || !now {
		return err
	}
	for _, u := range []string{r.requester, r.target} {
		if err := s.removeFriend(ctx, u, r.other(u)); err != nil {
			return err
		}
		if err := s.removeDirect(ctx, u, r.other(u), r.roomID); err != nil {
			return err
		}
	}
	if did {
		s.publish(Notice{UserID: r.other(by), Kind: KindFriendRemoved, RoomID: r.roomID, From: by})
	}
	return nil
}

// Block adds other to the user's m.ignored_user_list and declines their pending
// request. Sync and native delivery then hide their messages and invites (the
// spec's ignore semantics); a friendship is kept until removed.
func (s *Service) Block(ctx context.Context, userID, other string) error {
	if _, err := spec.NewUserID(other, true); err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", other)
	}
	if other == userID {
		return mxerror.New(mxerror.InvalidParam, "you cannot block yourself")
	}
	if err := s.editAccountData(ctx, userID, IgnoredType, func(obj map[string]any) bool {
		ignored, _ := obj["ignored_users"].(map[string]any)
		if ignored == nil {
			ignored = map[string]any{}
		}
		if _, ok := ignored[other]; ok {
			return false
		}
		ignored[other] = map[string]any{}
		obj["ignored_users"] = ignored
		return true
	}); err != nil {
		return err
	}
	if r, ok, err := s.between(ctx, other, userID, statePending); err != nil {
		return err
	} else if ok {
		return s.decline(ctx, r)
	}
	return nil
}

// Unblock removes other from the user's m.ignored_user_list.
func (s *Service) Unblock(ctx context.Context, userID, other string) error {
	return s.editAccountData(ctx, userID, IgnoredType, func(obj map[string]any) bool {
		ignored, _ := obj["ignored_users"].(map[string]any)
		if _, ok := ignored[other]; !ok {
			return false
		}
		delete(ignored, other)
		obj["ignored_users"] = ignored
		return true
	})
}

// Blocked lists the users the user blocked (ignores).
func (s *Service) Blocked(ctx context.Context, userID string) ([]string, error) {
	obj, err := s.readAccountData(ctx, userID, IgnoredType)
	if err != nil {
		return nil, err
	}
	ignored, _ := obj["ignored_users"].(map[string]any)
	out := make([]string, 0, len(ignored))
	for u := range ignored {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, nil
}

// Ignores reports whether userID (a local user) ignores other.
func (s *Service) Ignores(ctx context.Context, userID, other string) (bool, error) {
	set, err := s.IgnoredSet(ctx, userID)
	return set[other], err
}

// IgnoredSet is the set of users userID (a local user) ignores. The rooms
// engine's visibility filter asks it on every read (rooms.Config.Ignored), so it
// is cached until the user's account data changes. The set is shared: callers
// must not change it.
func (s *Service) IgnoredSet(ctx context.Context, userID string) (map[string]bool, error) {
	if !s.isLocal(userID) {
		return nil, nil
	}
	s.ignoredMu.Lock()
	set, ok := s.ignored[userID]
	s.ignoredMu.Unlock()
	if ok {
		return set, nil
	}
	obj, err := s.readAccountData(ctx, userID, IgnoredType)
	if err != nil {
		return nil, err
	}
	ignored, _ := obj["ignored_users"].(map[string]any)
	set = make(map[string]bool, len(ignored))
	for u := range ignored {
		set[u] = true
	}
	// Without a bus nothing would say the set went stale: keep none.
	if s.cfg.Bus != nil {
		s.ignoredMu.Lock()
		if len(s.ignored) > 100_000 {
			clear(s.ignored)
		}
		s.ignored[userID] = set
		s.ignoredMu.Unlock()
	}
	return set, nil
}

// onAccountData drops a user's cached ignore set when their account data changes.
func (s *Service) onAccountData(m *nats.Msg) {
	var n users.AccountDataNotice
	if json.Unmarshal(m.Data, &n) != nil {
		return
	}
	s.ignoredMu.Lock()
	delete(s.ignored, n.UserID)
	s.ignoredMu.Unlock()
}

func (s *Service) addFriend(ctx context.Context, userID, friend, roomID string, since int64) error {
	return s.editAccountData(ctx, userID, FriendsType, func(obj map[string]any) bool {
		friends, _ := obj["friends"].(map[string]any)
		if friends == nil {
			friends = map[string]any{}
		}
		if cur, ok := friends[friend].(map[string]any); ok && cur["room_id"] == roomID {
			return false
		}
		friends[friend] = map[string]any{"room_id": roomID, "since": since}
		obj["friends"] = friends
		return true
	})
}

func (s *Service) removeFriend(ctx context.Context, userID, friend string) error {
	return s.editAccountData(ctx, userID, FriendsType, func(obj map[string]any) bool {
		friends, _ := obj["friends"].(map[string]any)
		if _, ok := friends[friend]; !ok {
			return false
		}
		delete(friends, friend)
		obj["friends"] = friends
		return true
	})
}

func (s *Service) addDirect(ctx context.Context, userID, other, roomID string) error {
	return s.editAccountData(ctx, userID, DirectType, func(obj map[string]any) bool {
		list, _ := obj[other].([]any)
		if slices.Contains(list, any(roomID)) {
			return false
		}
		obj[other] = append(list, roomID)
		return true
	})
}

func (s *Service) removeDirect(ctx context.Context, userID, other, roomID string) error {
	return s.editAccountData(ctx, userID, DirectType, func(obj map[string]any) bool {
		list, _ := obj[other].([]any)
		i := slices.Index(list, any(roomID))
		if i < 0 {
			return false
		}
		list = slices.Delete(list, i, i+1)
		if len(list) == 0 {
			delete(obj, other)
		} else {
			obj[other] = list
		}
		return true
	})
}

func serverOf(userID string) string {
	_, server, _ := cutColon(userID)
	return server
}

func cutColon(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
