package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// This file is the engine's side of federation: events that other servers send,
// joins through other servers, and the reads other servers make. Events from other
// servers are untrusted: the federation front-end has checked their signatures and
// hashes before they get here; the engine checks them against the auth rules — at
// their own auth events, at the state before them, and at the room's current state
// — before anything is stored.

// Remote joins rooms through other servers. The federation front-end provides it
// (SetRemote), so the engine never imports a front-end.
type Remote interface {
	// JoinRemote joins userID to roomID through one of servers and returns once the
	// join is persisted here (through ImportJoin).
	JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error
	// InviteRemote has the invitee's server countersign an invite (with the room's
	// stripped state for the invitee to see) and returns the signed event.
	InviteRemote(ctx context.Context, invite gomatrixserverlib.PDU, state []gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error)
	// LeaveRemote makes userID leave (or reject an invite to) a room this server is
	// not in, through one of servers, and returns the leave event.
	LeaveRemote(ctx context.Context, roomID, userID string, servers []string) (gomatrixserverlib.PDU, error)
	// KnockRemote knocks on a room this server is not in, through one of servers,
	// and returns the knock with the room's stripped state for the knocker.
	KnockRemote(ctx context.Context, roomID, userID, reason string, servers []string) (gomatrixserverlib.PDU, []json.RawMessage, error)
	// Backfill fetches up to limit events of the room from before the given ones
	// from a server in it, signatures checked.
	Backfill(ctx context.Context, roomID string, servers []string, before []string, limit int) ([]gomatrixserverlib.PDU, error)
	// Hierarchy asks one of via for a space's summary and its children's (federation
	// /hierarchy), for rooms this server does not hold.
	Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (HierarchyRoom, []HierarchyRoom, error)
	// PublicRooms reads another server's public room directory.
	PublicRooms(ctx context.Context, server string, limit int, since, search string) (json.RawMessage, error)
	// QueryAlias asks server which room its alias names, and through which servers
	// to join it. An unknown alias is ErrNotFound.
	QueryAlias(ctx context.Context, server, alias string) (string, []string, error)
}

// SetRemote installs the way to join rooms through other servers.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// MissingEventsError says an event cannot be admitted before the events it names are
// known: auth events (fetch them and StoreOutliers) or prev events (fetch the gap, or
// the state before the event, and call ReceiveWithState).
type MissingEventsError struct {
	Auth, Prev []string
}

func (e *MissingEventsError) Error() string {
	return fmt.Sprintf("missing events: auth %v, prev %v", e.Auth, e.Prev)
}

// ErrRejected wraps the reason an event was refused by the auth rules.
var ErrRejected = errors.New("event rejected")

// RoomVersion is the version of a room this server knows.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	var v string
	err := s.db.QueryRow(ctx, `SELECT room_version FROM rooms WHERE room_id = $1`, roomID).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read room version: %w", err)
	}
	return versionImpl(v)
}

// PDU loads a stored event as it goes over federation (redacted if it was).
func (s *Service) PDU(ctx context.Context, eventID string) (gomatrixserverlib.PDU, error) {
	evs, err := s.pdus(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}

// PDUs loads the stored events among ids.
func (s *Service) PDUs(ctx context.Context, ids []string) ([]gomatrixserverlib.PDU, error) {
	return s.pdus(ctx, s.db, ids)
}

// ForwardExtremities are the room's latest events, which new events build on.
func (s *Service) ForwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("read forward extremities: %w", err)
	}
	return scanStrings(rows)
}

type querier interface {
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// rowQuerier reads one row, from the database or inside a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
}

// pdus loads the events among ids that are stored, in no particular order.
func (s *Service) pdus(ctx context.Context, q querier, ids []string) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		marks, args := storage.InList(batch)
		rows, err := q.Query(ctx, `SELECT e.event_id, e.json, e.redacted_by IS NOT NULL, r.room_version FROM events e
			JOIN rooms r ON r.room_id = e.room_id WHERE e.event_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		for rows.Next() {
			var id, raw, version string
			var redacted bool
			if err := rows.Scan(&id, &raw, &redacted, &version); err != nil {
				rows.Close()
				return nil, err
			}
			impl, err := versionImpl(version)
			if err != nil {
				rows.Close()
				return nil, err
			}
			ev, err := impl.NewEventFromTrustedJSONWithEventID(id, []byte(raw), redacted)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("parse stored event %s: %w", id, err)
			}
			out = append(out, ev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AuthChain returns the auth chain of the events: their auth events, those events'
// auth events, and so on, as far as they are stored here.
func (s *Service) AuthChain(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	frontier := slices.Clone(eventIDs)
	first := true
	for len(frontier) > 0 {
		evs, err := s.pdus(ctx, s.db, frontier)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for _, ev := range evs {
			if !first {
				out = append(out, ev)
			}
			for _, id := range ev.AuthEventIDs() {
				if !seen[id] {
					seen[id] = true
					frontier = append(frontier, id)
				}
			}
		}
		first = false
	}
	return out, nil
}

// StateBefore returns the room state before a stored (non-outlier) event.
func (s *Service) StateBefore(ctx context.Context, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	ids, err := s.stateIDsBefore(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return s.pdus(ctx, s.db, ids)
}

// StateIDsBefore returns the IDs of the room state before a stored event.
func (s *Service) StateIDsBefore(ctx context.Context, roomID, eventID string) ([]string, error) {
	return s.stateIDsBefore(ctx, roomID, eventID)
}

func (s *Service) stateIDsBefore(ctx context.Context, roomID, eventID string) ([]string, error) {
	var before, pos int64
	err := s.db.QueryRow(ctx, `SELECT snapshot_before, stream_pos FROM events WHERE event_id = $1 AND room_id = $2`, eventID, roomID).Scan(&before, &pos)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && pos < 0) {
		return nil, ErrNotFound // unknown, or an outlier whose state this server never knew
	}
	if err != nil {
		return nil, fmt.Errorf("read event: %w", err)
	}
	state, err := s.snapshotState(ctx, before, nil)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(state))
	for _, id := range state {
		ids = append(ids, id)
	}
	return ids, nil
}

// ServersInRoom returns the servers with a joined member in the room, this one
// included if it has one.
func (s *Service) ServersInRoom(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("read members: %w", err)
	}
	users, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("read members: %w", err)
	}
	return s.withPartialServers(ctx, roomID, serversOf(users))
}

// ServersSharing returns the other servers with a member in a room the user is in:
// where news of the user's devices and presence goes.
func (s *Service) ServersSharing(ctx context.Context, userID string) ([]string, error) {
	users, err := s.SharedUsers(ctx, userID)
	if err != nil {
		return nil, err
	}
	servers := serversOf(users)
	// In a room joined with partial state the members here are not all the
	// room's: the servers send_join named count too.
	rows, err := s.db.Query(ctx, `SELECT r.partial_servers FROM rooms r JOIN current_state c ON c.room_id = r.room_id
		WHERE r.partial_state AND c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("partial-state rooms of %s: %w", userID, err)
	}
	lists, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	for _, raw := range lists {
		var listed []string
		json.Unmarshal([]byte(raw), &listed)
		for _, srv := range listed {
			if !slices.Contains(servers, srv) {
				servers = append(servers, srv)
			}
		}
	}
	return slices.DeleteFunc(servers, func(srv string) bool { return srv == s.cfg.ServerName }), nil
}

// serversOf returns the servers of users, once each, sorted.
func serversOf(users []string) []string {
	var out []string
	for _, u := range users {
		if _, server, ok := strings.Cut(u, ":"); ok && !slices.Contains(out, server) {
			out = append(out, server)
		}
	}
	slices.Sort(out)
	return out
}

// withPartialServers adds, while the room's state here is partial, the servers
// send_join named: until the state is complete, the members here are not all the
// room's.
func (s *Service) withPartialServers(ctx context.Context, roomID string, servers []string) ([]string, error) {
	partial, listed, err := s.partialState(ctx, s.db, roomID)
	if err != nil || !partial {
		return servers, err
	}
	for _, srv := range listed {
		if !slices.Contains(servers, srv) {
			servers = append(servers, srv)
		}
	}
	slices.Sort(servers)
	return servers, nil
}

// scanStrings reads one string column of rows and closes them.
func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ServerInRoom reports whether server has a joined member in the room.
func (s *Service) ServerInRoom(ctx context.Context, roomID, server string) (bool, error) {
	servers, err := s.ServersInRoom(ctx, roomID)
	if err != nil {
		return false, err
	}
	return slices.Contains(servers, server), nil
}

// JoinTemplate answers make_join: the join event userID would send, built on the
// room's current head and allowed by its current state, for the joining server to
// sign and send back.
func (s *Service) JoinTemplate(ctx context.Context, roomID, userID string) (gomatrixserverlib.ProtoEvent, string, error) {
	return s.membershipTemplate(ctx, roomID, userID, spec.Join)
}

// KnockTemplate answers make_knock.
func (s *Service) KnockTemplate(ctx context.Context, roomID, userID string) (gomatrixserverlib.ProtoEvent, string, error) {
	return s.membershipTemplate(ctx, roomID, userID, spec.Knock)
}

// LeaveTemplate answers make_leave.
func (s *Service) LeaveTemplate(ctx context.Context, roomID, userID string) (gomatrixserverlib.ProtoEvent, string, error) {
	return s.membershipTemplate(ctx, roomID, userID, spec.Leave)
}

func (s *Service) membershipTemplate(ctx context.Context, roomID, userID, membership string) (gomatrixserverlib.ProtoEvent, string, error) {
	if _, err := spec.NewUserID(userID, true); err != nil {
		return gomatrixserverlib.ProtoEvent{}, "", mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", userID)
	}
	content := map[string]any{"membership": membership}
	if membership == spec.Join {
		via, err := s.restrictedJoinAuthoriser(ctx, roomID, userID)
		if err != nil {
			return gomatrixserverlib.ProtoEvent{}, "", err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	// Built and checked as this server would send it; the joining server re-signs
	// it as its own.
	ev, err := s.buildUnsent(ctx, roomID, Proto{Sender: userID, Type: spec.MRoomMember, StateKey: &userID, Content: mustJSON(content)})
	if err != nil {
		return gomatrixserverlib.ProtoEvent{}, "", err
	}
	// prev_events and auth_events as the room version writes them: event IDs, or
	// in versions 1 and 2 [event ID, hashes] pairs.
	return gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID,
		Content:    spec.RawJSON(mustJSON(content)),
		PrevEvents: json.RawMessage(gjson.GetBytes(ev.JSON(), "prev_events").Raw),
		AuthEvents: json.RawMessage(gjson.GetBytes(ev.JSON(), "auth_events").Raw), Depth: ev.Depth(),
	}, string(ev.Version()), nil
}

// buildUnsent builds and authorises an event on the room's head without storing it.
func (s *Service) buildUnsent(ctx context.Context, roomID string, p Proto) (gomatrixserverlib.PDU, error) {
	var ev gomatrixserverlib.PDU
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		if ev, err = s.build(ctx, tx, h, p); err != nil {
			return err
		}
		return errRollback // nothing is kept
	})
	if errors.Is(err, errRollback) {
		err = nil
	}
	if err != nil {
		return nil, s.roomError(err, roomID)
	}
	return ev, nil
}

// inviteRemote invites another server's user: the invite is built here, signed by
// the invitee's server too, then admitted like any event.
func (s *Service) inviteRemote(ctx context.Context, roomID string, m Membership, content map[string]any) (Sent, error) {
	if fed, err := s.Federates(ctx, roomID); err != nil {
		return Sent{}, err
	} else if !fed {
		return Sent{}, mxerror.New(mxerror.Forbidden, "room %s does not federate: only users of this server may join", roomID)
	}
	target := m.Target
	ev, err := s.buildUnsent(ctx, roomID, Proto{Sender: m.Sender, Type: spec.MRoomMember, StateKey: &target, Content: mustJSON(content)})
	if err != nil {
		return Sent{}, err
	}
	var ids []string
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		state, err := s.currentStateMap(ctx, tx, roomID)
		for k, id := range state {
			if strippedTypes[k[0]] || (k[0] == spec.MRoomMember && k[1] == m.Sender) {
				ids = append(ids, id)
			}
		}
		return err
	})
	if err != nil {
		return Sent{}, err
	}
	state, err := s.pdus(ctx, s.db, ids)
	if err != nil {
		return Sent{}, err
	}
	signed, err := s.remote.InviteRemote(ctx, ev, state)
	if err != nil {
		return Sent{}, err
	}
	if err := s.Receive(ctx, signed); err != nil {
		return Sent{}, err
	}
	return s.sentOf(ctx, signed.EventID())
}

// strippedTypes are the state an invitee sees before joining.
var strippedTypes = map[string]bool{
	spec.MRoomCreate: true, spec.MRoomJoinRules: true, spec.MRoomName: true, "m.room.avatar": true,
	spec.MRoomCanonicalAlias: true, "m.room.encryption": true, spec.MRoomTopic: true,
}

func (s *Service) sentOf(ctx context.Context, eventID string) (Sent, error) {
	sent := Sent{EventID: eventID}
	err := s.db.QueryRow(ctx, `SELECT stream_pos, room_seq FROM events WHERE event_id = $1`, eventID).Scan(&sent.StreamPos, &sent.Seq)
	if err != nil {
		return Sent{}, fmt.Errorf("read event %s: %w", eventID, err)
	}
	return sent, nil
}

// ReceiveInvite stores an invite of a local user into a room this server is not
// in, signed by both servers, with the stripped state the inviting server sent: the
// invitee sees it in sync and can join or reject it. (In a room this server is in,
// the invite arrives over /send like any event.)
func (s *Service) ReceiveInvite(ctx context.Context, ev gomatrixserverlib.PDU, stripped []json.RawMessage) error {
	roomID := ev.RoomID().String()
	if in, err := s.ServerInRoom(ctx, roomID, s.cfg.ServerName); err != nil || in {
		return err
	}
	raw, _ := json.Marshal(stripped)
	return s.storeOutOfRoom(ctx, ev, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO remote_invite_state (room_id, user_id, json) VALUES ($1, $2, $3)
			ON CONFLICT (room_id, user_id) DO UPDATE SET json = excluded.json`, roomID, *ev.StateKey(), string(raw))
		return err
	})
}

// storeOutOfRoom records a membership event of a local user in a room this server
// is not in (an invite received, an invite rejected), so the user's room lists and
// sync show it. It has no state here to be checked against: its signatures were.
func (s *Service) storeOutOfRoom(ctx context.Context, ev gomatrixserverlib.PDU, also func(tx *storage.Tx) error) error {
	roomID := ev.RoomID().String()
	unlock := s.lockRoom(roomID)
	defer unlock()
	var notice *Notice
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		notice = nil
		// The creator is unknown until a join brings the room's state: "" keeps the
		// room from passing as one created here.
		if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, '', $3)
			ON CONFLICT (room_id) DO NOTHING`, roomID, string(ev.Version()), now().UnixMilli()); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM events WHERE event_id = $1`, ev.EventID()).Scan(&one); err == nil {
			return nil
		}
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		pos, err := s.persist(ctx, tx, h, ev, nil)
		if err != nil {
			return err
		}
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		notice = &Notice{RoomID: roomID, EventID: ev.EventID(), Type: ev.Type(), StateKey: ev.StateKey(), StreamPos: pos, Seq: h.seq}
		_, err = tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1, depth = $2, seq = $3 WHERE room_id = $4`, h.snapshot, max(h.depth, ev.Depth()), h.seq, roomID)
		return err
	})
	if err != nil {
		return fmt.Errorf("store %s in %s: %w", ev.Type(), roomID, err)
	}
	if notice != nil {
		s.publish(*notice)
	}
	return nil
}

// leaveRemote rejects an invite (or leaves a room) this server has no member in,
// through the servers that are in it.
func (s *Service) leaveRemote(ctx context.Context, roomID string, m Membership) (Sent, error) {
	var inviter, inviteID string
	var depth int64
	err := s.db.QueryRow(ctx, `SELECT e.sender, e.event_id, e.depth FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key = $2`, roomID, m.Target).Scan(&inviter, &inviteID, &depth)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Sent{}, fmt.Errorf("read membership: %w", err)
	}
	ev, err := s.remote.LeaveRemote(ctx, roomID, m.Target, s.viaServers(inviter, roomID))
	if err != nil && inviteID != "" {
		// The room's servers cannot be reached or refuse: the invite is still
		// declined here (an out-of-band leave, as Synapse makes), so the user
		// is rid of it; the inviter's server learns nothing.
		slog.Info("declining an invite locally", "room_id", roomID, "user_id", m.Target, "err", err)
		ev, err = s.outOfBandLeave(ctx, roomID, m.Target, inviteID, depth)
	}
	if err != nil {
		return Sent{}, err
	}
	if err := s.storeOutOfRoom(ctx, ev, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM remote_invite_state WHERE room_id = $1 AND user_id = $2`, roomID, m.Target)
		return err
	}); err != nil {
		return Sent{}, err
	}
	return s.sentOf(ctx, ev.EventID())
}

// outOfBandLeave builds, signed by this server, a leave of userID after the invite
// (or knock) that is all this server holds of the room: valid for no other server,
// it only ends the membership here.
func (s *Service) outOfBandLeave(ctx context.Context, roomID, userID, afterID string, depth int64) (gomatrixserverlib.PDU, error) {
	version, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	content, _ := json.Marshal(map[string]string{"membership": spec.Leave})
	sk := userID
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &sk, Content: content,
		PrevEvents: []string{afterID}, AuthEvents: []string{afterID}, Depth: depth + 1,
	}
	ev, err := version.NewEventBuilderFromProtoEvent(&proto).Build(now(), spec.ServerName(s.cfg.ServerName),
		gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("build out-of-band leave: %w", err)
	}
	return ev, nil
}

// knockRemote knocks on a room this server is not in through the servers the room
// ID and the client name, and keeps the knock and the stripped state the resident
// server answered with, for the knocker's sync.
func (s *Service) knockRemote(ctx context.Context, roomID string, m Membership) (Sent, error) {
	servers := s.viaServers(append(slices.Clone(m.Servers), roomID)...)
	if len(servers) == 0 {
		return Sent{}, mxerror.New(mxerror.NotFound, "unknown room %s and no server to knock through", roomID)
	}
	ev, stripped, err := s.remote.KnockRemote(ctx, roomID, m.Target, m.Reason, servers)
	if err != nil {
		return Sent{}, err
	}
	raw, _ := json.Marshal(stripped)
	if err := s.storeOutOfRoom(ctx, ev, func(tx *storage.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO remote_invite_state (room_id, user_id, json) VALUES ($1, $2, $3)
			ON CONFLICT (room_id, user_id) DO UPDATE SET json = excluded.json`, roomID, m.Target, string(raw))
		return err
	}); err != nil {
		return Sent{}, err
	}
	return s.sentOf(ctx, ev.EventID())
}

// remoteInviteState is the stripped state stored with an invite from another server.
func (s *Service) remoteInviteState(ctx context.Context, roomID, userID string) ([]map[string]any, bool, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT json FROM remote_invite_state WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read invite state: %w", err)
	}
	var out []map[string]any
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, false, fmt.Errorf("read invite state: %w", err)
	}
	return out, true, nil
}

var errRollback = errors.New("rollback")

// Receive admits an event from another server into its room, whose signatures the
// caller has verified: it must pass the auth rules at its own auth events and at the
// state before it. An event that passes those but not the room's current state is
// soft-failed: kept as an outlier, never shown. If auth or prev events are unknown,
// Receive returns a *MissingEventsError and stores nothing.
func (s *Service) Receive(ctx context.Context, ev gomatrixserverlib.PDU) error {
	return s.receive(ctx, ev, nil)
}

// ReceiveWithState admits an event whose prev events are not all known here, with
// the state before it as another server reported it (/state_ids), already verified.
func (s *Service) ReceiveWithState(ctx context.Context, ev gomatrixserverlib.PDU, stateBefore []gomatrixserverlib.PDU) error {
	if stateBefore == nil {
		stateBefore = []gomatrixserverlib.PDU{}
	}
	return s.receive(ctx, ev, stateBefore)
}

// receive is Receive and ReceiveWithState: given is the state before ev as another
// server reported it, or nil to compute it here. The checks run in the order the
// spec gives: the event itself, its auth events (outside the room's lock), then,
// under the lock and in one transaction, the state before it, the room's current
// state (soft failure), and finally the write.
func (s *Service) receive(ctx context.Context, ev gomatrixserverlib.PDU, given []gomatrixserverlib.PDU) error {
	roomID := ev.RoomID().String()
	impl, known, err := s.checkIncoming(ctx, ev)
	if err != nil || known {
		return err
	}
	// A refused event is kept as rejected (below), with the state before it
	// when that is known, and reported as ErrRejected.
	rejectedWhy, err := s.checkAtAuthEvents(ctx, ev)
	if err != nil {
		return err
	}

	unlock := s.lockRoom(roomID)
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	var notice *Notice
	var rejected error
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		notice, rejected = nil, nil
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		// While the room's state here is partial, the state before an event lacks
		// members: it is checked against its own auth events only (step 1), as
		// Synapse does during a partial-state join.
		partial, _, err := s.partialState(ctx, tx, roomID)
		if err != nil {
			return err
		}
		// 2. The state before the event: the room's current state when it extends
		// exactly our head, else resolved from the state after each prev event.
		linear := sameSet(ev.PrevEventIDs(), h.prev) && given == nil
		before, why, err := s.checkStateBefore(ctx, tx, impl, h, ev, given, linear, partial, rejectedWhy)
		if err != nil {
			return err
		}
		if why != nil {
			rejected = why
			return s.storeRejectedAt(ctx, tx, h, ev, before)
		}
		// 3. Soft failure: allowed by history, but not by where the room is now.
		if !linear && !partial {
			if softFailed, err := s.softFail(ctx, tx, ev, before); err != nil || softFailed {
				return err
			}
		}
		pos, err := s.persistReceived(ctx, tx, impl, h, ev, linear, before)
		if err != nil {
			return err
		}
		notice = &Notice{RoomID: roomID, EventID: ev.EventID(), Type: ev.Type(), StateKey: ev.StateKey(), StreamPos: pos, Seq: h.seq}
		return nil
	})
	if err != nil {
		return err
	}
	if rejected != nil {
		return rejected
	}
	if notice != nil {
		s.publish(*notice)
		unlock() // what follows writes to the room itself
		locked = false
		s.guestAccessChanged(ctx, roomID, notice.Type, notice.StateKey)
	}
	return nil
}

// checkIncoming checks what needs no auth: the event's room version is its room's,
// and it is not too large. known is true (and nothing else done) for an event
// already held here.
func (s *Service) checkIncoming(ctx context.Context, ev gomatrixserverlib.PDU) (impl gomatrixserverlib.IRoomVersion, known bool, err error) {
	impl, err = s.RoomVersion(ctx, ev.RoomID().String())
	if err != nil {
		return nil, false, err
	}
	if impl.Version() != ev.Version() {
		return nil, false, fmt.Errorf("%w: event of room version %s in a room of version %s", ErrRejected, ev.Version(), impl.Version())
	}
	if known, err := s.known(ctx, ev.EventID()); err != nil || known {
		return nil, known, err
	}
	if len(ev.JSON()) > MaxEventBytes {
		return nil, false, fmt.Errorf("%w: larger than %d bytes", ErrRejected, MaxEventBytes)
	}
	return impl, false, nil
}

// checkAtAuthEvents is step 1, the auth rules at the event's own auth events. It
// returns a *MissingEventsError if some are not held here, and otherwise, as
// rejectedWhy, why the event is refused (nil: allowed so far); a refused event is
// still stored, as rejected, once the state before it is known.
func (s *Service) checkAtAuthEvents(ctx context.Context, ev gomatrixserverlib.PDU) (rejectedWhy, err error) {
	authEvents, err := s.pdus(ctx, s.db, ev.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	if missing := missingIDs(ev.AuthEventIDs(), authEvents); len(missing) > 0 {
		// The prev events are reported too: a gap in the timeline is closed
		// first, and closing it often brings the auth events along.
		held, err := s.heldIDs(ctx, s.db, ev.PrevEventIDs(), true)
		if err != nil {
			return nil, err
		}
		var prev []string
		for _, id := range ev.PrevEventIDs() {
			if !held[id] {
				prev = append(prev, id)
			}
		}
		return nil, &MissingEventsError{Auth: missing, Prev: prev}
	}
	if err := allowedBy(ev, authEvents); err != nil {
		return fmt.Errorf("%w at its auth events: %v", ErrRejected, err), nil
	}
	if err := s.redactsElsewhere(ctx, s.db, ev); err != nil {
		return err, nil
	}
	return nil, nil
}

// checkStateBefore is step 2. For an event off our head (not linear) it finds the
// state before it — given, stored as outliers, or resolved from its prev events —
// and checks the event there; for one on our head it checks against the few current
// state events the auth rules read. While the state is partial only step 1 counts.
// why is set when the event is refused, here or at step 1 (rejectedWhy); before is
// nil for a linear event.
func (s *Service) checkStateBefore(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, h *head, ev gomatrixserverlib.PDU,
	given []gomatrixserverlib.PDU, linear, partial bool, rejectedWhy error) (before map[[2]string]string, why, err error) {
	if linear {
		if rejectedWhy != nil {
			return nil, rejectedWhy, nil
		}
		if partial {
			return nil, nil, nil
		}
		// The common case, an event on our head: only the few current state
		// events the auth rules look at are read, not the whole state.
		current, err := currentStateEvents(ctx, tx, h, gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples())
		if err != nil {
			return nil, nil, err
		}
		if err := allowedBy(ev, current); err != nil {
			return nil, fmt.Errorf("%w at the state before it: %v", ErrRejected, err), nil
		}
		return nil, nil, nil
	}
	if given != nil {
		before = stateMap(given)
		if err := s.storeOutliers(ctx, tx, given); err != nil {
			return nil, nil, err
		}
	} else if before, err = s.stateAfterAll(ctx, tx, impl, ev.PrevEventIDs()); err != nil {
		// Missing prev events are fetched first even for an event that
		// will be rejected (as Synapse does): it is then kept with the
		// state before it, and what it was built on is known.
		return nil, nil, err
	}
	if rejectedWhy != nil {
		return before, rejectedWhy, nil
	}
	if err := s.allowedAt(ctx, tx, ev, before); err != nil && !partial {
		return before, fmt.Errorf("%w at the state before it: %v", ErrRejected, err), nil
	}
	return before, nil, nil
}

// storeRejectedAt keeps a refused event as rejected, with the snapshot of the state
// before it: before when known, the room's current one when the event extends our
// head, else none.
func (s *Service) storeRejectedAt(ctx context.Context, tx *storage.Tx, h *head, ev gomatrixserverlib.PDU, before map[[2]string]string) error {
	snap := int64(0)
	switch {
	case before != nil:
		var err error
		if snap, err = s.fullSnapshot(ctx, tx, h.roomID, before); err != nil {
			return err
		}
	case sameSet(ev.PrevEventIDs(), h.prev):
		snap = h.snapshot
	}
	return s.storeRejected(ctx, tx, ev, snap)
}

// softFail is step 3 for an event off our head: one the room's current state does
// not allow is stored soft-failed (kept so that later events can build on it; never
// shown), and softFailed is true.
func (s *Service) softFail(ctx context.Context, tx *storage.Tx, ev gomatrixserverlib.PDU, before map[[2]string]string) (softFailed bool, err error) {
	roomID := ev.RoomID().String()
	current, err := s.currentStateMap(ctx, tx, roomID)
	if err != nil {
		return false, err
	}
	if err := s.allowedAt(ctx, tx, ev, current); err == nil {
		return false, nil
	}
	snap, err := s.fullSnapshot(ctx, tx, roomID, before)
	if err != nil {
		return false, err
	}
	return true, s.storeSoftFailed(ctx, tx, ev, snap)
}

// persistReceived writes an admitted event into the timeline and moves the room's
// head. An event off our head (not linear) also changes the room's state to the
// resolution of the state after it and the state at the other forward extremities,
// and the extremities to those others plus it. It returns the event's stream
// position; h is the room's new head.
func (s *Service) persistReceived(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, h *head, ev gomatrixserverlib.PDU,
	linear bool, before map[[2]string]string) (int64, error) {
	roomID := h.roomID
	prevExtremities := h.prev
	if !linear {
		snap, err := s.fullSnapshot(ctx, tx, roomID, before)
		if err != nil {
			return 0, err
		}
		h.snapshot = snap
	}
	depth := h.depth
	pos, err := s.persist(ctx, tx, h, ev, nil)
	if err != nil {
		return 0, err
	}
	h.depth = max(depth, ev.Depth())
	if !linear {
		// The room's state is now the resolution of the state after the new
		// event and the state at the other extremities.
		behind, err := s.behindFailed(ctx, tx, ev.PrevEventIDs())
		if err != nil {
			return 0, err
		}
		others := slices.DeleteFunc(slices.Clone(prevExtremities), func(id string) bool { return slices.Contains(ev.PrevEventIDs(), id) || behind[id] })
		after := maps.Clone(before)
		if sk := ev.StateKey(); sk != nil {
			after[[2]string{ev.Type(), *sk}] = ev.EventID()
		}
		resolved := after
		if len(others) > 0 {
			otherState, err := s.stateAfterAll(ctx, tx, impl, others)
			if err != nil {
				return 0, err
			}
			if resolved, err = s.resolve(ctx, tx, impl, []map[[2]string]string{after, otherState}); err != nil {
				return 0, err
			}
		}
		if err := s.replaceCurrentState(ctx, tx, roomID, resolved); err != nil {
			return 0, err
		}
		if h.snapshot, err = s.fullSnapshot(ctx, tx, roomID, resolved); err != nil {
			return 0, err
		}
		h.prev = append(others, ev.EventID())
		if _, err := tx.Exec(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, roomID); err != nil {
			return 0, err
		}
		for _, id := range h.prev {
			if _, err := tx.Exec(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, roomID, id); err != nil {
				return 0, err
			}
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1, depth = $2, seq = $3 WHERE room_id = $4`, h.snapshot, h.depth, h.seq, roomID); err != nil {
		return 0, err
	}
	return pos, nil
}

// ImportJoin stores a join made through another server: the room's state before the
// join and its auth chain, as send_join returned them and the caller verified, become
// outliers and the room's state, and the join event the first of its timeline here.
//
// With partialServers not nil the state is partial (MSC3706: member events left
// out): the room is marked so until CompletePartialState fills it in, its events are
// checked against their own auth events only, and the sender reaches the servers
// listed here.
func (s *Service) ImportJoin(ctx context.Context, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU, partialServers []string) error {
	roomID := join.RoomID().String()
	var create gomatrixserverlib.PDU
	for _, ev := range append(slices.Clone(state), authChain...) {
		if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
			create = ev
		}
	}
	if create == nil {
		return fmt.Errorf("%w: the join's state has no create event", ErrRejected)
	}
	unlock := s.lockRoom(roomID)
	defer unlock()
	var notice Notice
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id) DO UPDATE SET creator = excluded.creator`, roomID, string(join.Version()), string(create.SenderID()), now().UnixMilli()); err != nil {
			return fmt.Errorf("insert room: %w", err)
		}
		if err := s.storeOutliers(ctx, tx, authChain); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM remote_invite_state WHERE room_id = $1 AND user_id = $2`, roomID, *join.StateKey()); err != nil {
			return err
		}
		if err := s.storeOutliers(ctx, tx, state); err != nil {
			return err
		}
		before := stateMap(state)
		if err := s.replaceCurrentState(ctx, tx, roomID, before); err != nil {
			return err
		}
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		if h.snapshot, err = s.fullSnapshot(ctx, tx, roomID, before); err != nil {
			return err
		}
		pos, err := s.persist(ctx, tx, h, join, nil)
		if err != nil {
			return err
		}
		h.depth = join.Depth()
		notice = Notice{RoomID: roomID, EventID: join.EventID(), Type: join.Type(), StateKey: join.StateKey(), StreamPos: pos, Seq: h.seq}
		servers, _ := json.Marshal(partialServers)
		if partialServers == nil {
			servers = []byte("[]")
		}
		_, err = tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1, depth = $2, seq = $3, partial_state = $5, partial_servers = $6 WHERE room_id = $4`,
			h.snapshot, h.depth, h.seq, roomID, partialServers != nil, string(servers))
		return err
	})
	if err != nil {
		return fmt.Errorf("import join to %s: %w", roomID, err)
	}
	s.publish(notice)
	return nil
}

// StoreOutliers keeps events this server needs to know without having them in a
// timeline: auth events fetched from other servers, verified by the caller.
func (s *Service) StoreOutliers(ctx context.Context, evs []gomatrixserverlib.PDU) error {
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return s.storeOutliers(ctx, tx, evs) })
}

func (s *Service) storeOutliers(ctx context.Context, tx *storage.Tx, evs []gomatrixserverlib.PDU) error {
	return s.insertOutliers(ctx, tx, evs, 0, false, false)
}

// storeRejected keeps an event the auth rules refused, with the state before it
// (snapshot 0: unknown), so that events built on it place themselves after it.
func (s *Service) storeRejected(ctx context.Context, tx *storage.Tx, ev gomatrixserverlib.PDU, snapshotBefore int64) error {
	return s.insertOutliers(ctx, tx, []gomatrixserverlib.PDU{ev}, snapshotBefore, true, false)
}

// storeSoftFailed keeps a soft-failed event, never shown, with the state before
// it, so that events built on it place themselves after it (and its state).
func (s *Service) storeSoftFailed(ctx context.Context, tx *storage.Tx, ev gomatrixserverlib.PDU, snapshotBefore int64) error {
	return s.insertOutliers(ctx, tx, []gomatrixserverlib.PDU{ev}, snapshotBefore, false, true)
}

func (s *Service) insertOutliers(ctx context.Context, tx *storage.Tx, evs []gomatrixserverlib.PDU, snapshotBefore int64, rejected, softFailed bool) error {
	// A join into a large room brings tens of thousands of events: they are
	// written in multi-row statements, not one round trip (or three) each.
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.EventID()
	}
	have, err := s.heldIDs(ctx, tx, ids, false)
	if err != nil {
		return err
	}
	var fresh []gomatrixserverlib.PDU
	for _, ev := range evs {
		if !have[ev.EventID()] {
			have[ev.EventID()] = true
			fresh = append(fresh, ev)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	first, err := tx.NextStreamPositions(ctx, "outliers", int64(len(fresh)))
	if err != nil {
		return err
	}
	const cols = 14
	for start := 0; start < len(fresh); start += 200 {
		batch := fresh[start:min(start+200, len(fresh))]
		args := make([]any, 0, cols*len(batch))
		rows := make([]string, 0, len(batch))
		for i, ev := range batch {
			var membership any
			if ev.Type() == spec.MRoomMember {
				if m, err := ev.Membership(); err == nil {
					membership = m
				}
			}
			pos := -(first + int64(start+i))
			n := len(args)
			rows = append(rows, fmt.Sprintf("($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, TRUE, $%d, $%d)",
				n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9, n+10, n+11, n+12, n+13, n+14))
			args = append(args, pos, ev.EventID(), ev.RoomID().String(), ev.Type(), ev.StateKey(), string(ev.SenderID()),
				ev.Depth(), int64(ev.OriginServerTS()), snapshotBefore, membership, string(ev.JSON()), pos, rejected, softFailed)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts,
			snapshot_before, membership, json, room_seq, outlier, rejected, soft_failed) VALUES `+strings.Join(rows, ", ")+`
			ON CONFLICT (event_id) DO NOTHING`, args...); err != nil {
			// Another input of the same events (a transaction and a state fetch)
			// may have stored them since heldIDs looked: theirs stand.
			return fmt.Errorf("insert outliers: %w", err)
		}
	}
	return nil
}

// heldIDs reports which of ids are stored — only as timeline events (not outliers)
// when timelineOnly.
func (s *Service) heldIDs(ctx context.Context, q querier, ids []string, timelineOnly bool) (map[string]bool, error) {
	cond := ""
	if timelineOnly {
		// A rejected event is placed in the DAG (its successors build on it),
		// though never shown.
		cond = "(NOT outlier OR ((rejected OR soft_failed) AND snapshot_before <> 0)) AND "
	}
	have := make(map[string]bool, len(ids))
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		marks, args := storage.InList(batch)
		rows, err := q.Query(ctx, `SELECT event_id FROM events WHERE `+cond+`event_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("check events: %w", err)
		}
		found, err := scanStrings(rows)
		if err != nil {
			return nil, fmt.Errorf("check events: %w", err)
		}
		for _, id := range found {
			have[id] = true
		}
	}
	return have, nil
}

func (s *Service) known(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.db.QueryRow(ctx, `SELECT 1 FROM events WHERE event_id = $1`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// redactsElsewhere refuses a redaction of an event held here in another room: a
// server may not reach across rooms (Synapse rejects it the same way).
func (s *Service) redactsElsewhere(ctx context.Context, q rowQuerier, ev gomatrixserverlib.PDU) error {
	if ev.Type() != spec.MRoomRedaction {
		return nil
	}
	target := ev.Redacts()
	if target == "" {
		target = gjson.GetBytes(ev.Content(), "redacts").String()
	}
	var room string
	err := q.QueryRow(ctx, `SELECT room_id FROM events WHERE event_id = $1`, target).Scan(&room)
	if err == nil && room != ev.RoomID().String() {
		return fmt.Errorf("%w: it redacts %s, an event of another room", ErrRejected, target)
	}
	return nil
}

// StateBeforeFrom is the state before an event whose prev events are prevs: the
// state after each, from after (the states after prev events this server does not
// hold, as another server gave them; their events stored already) or as stored
// here, resolved when they differ.
func (s *Service) StateBeforeFrom(ctx context.Context, roomID string, prevs []string, after map[string][]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	impl, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var out []gomatrixserverlib.PDU
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var sets []map[[2]string]string
		for _, id := range prevs {
			if given, ok := after[id]; ok {
				sets = append(sets, stateMap(given))
				continue
			}
			set, err := s.stateAfterAll(ctx, tx, impl, []string{id})
			if err != nil {
				return err
			}
			sets = append(sets, set)
		}
		if len(sets) == 0 {
			return fmt.Errorf("no prev events")
		}
		resolved, err := s.resolve(ctx, tx, impl, sets)
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(resolved))
		for _, id := range resolved {
			ids = append(ids, id)
		}
		out, err = s.pdus(ctx, tx, ids)
		return err
	})
	return out, err
}

// behindFailed returns the events an event's prev events reach through rejected
// and soft-failed events: an event built on a soft-failed one also succeeds what
// that one was built on, which must stop being a forward extremity (as in
// Synapse), or it would dangle there.
func (s *Service) behindFailed(ctx context.Context, tx *storage.Tx, prevs []string) (map[string]bool, error) {
	out := map[string]bool{}
	frontier := slices.Clone(prevs)
	for steps := 0; len(frontier) > 0 && steps < 100; steps++ {
		id := frontier[0]
		frontier = frontier[1:]
		var raw string
		var failed bool
		err := tx.QueryRow(ctx, `SELECT json, rejected OR soft_failed FROM events WHERE event_id = $1`, id).Scan(&raw, &failed)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !failed) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read prev event: %w", err)
		}
		for _, p := range gjson.Get(raw, "prev_events").Array() {
			pid := p.String()
			if p.IsArray() { // room versions 1 and 2: [event_id, hashes]
				pid = p.Array()[0].String()
			}
			if !out[pid] {
				out[pid] = true
				frontier = append(frontier, pid)
			}
		}
	}
	return out, nil
}

// stateAfterAll is the state after the given events, resolved when they differ. An
// event without known state (unknown, or an outlier) makes it a MissingEventsError.
func (s *Service) stateAfterAll(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, ids []string) (map[[2]string]string, error) {
	var sets []map[[2]string]string
	var missing []string
	for _, id := range ids {
		var before, pos int64
		var typ string
		var sk sql.NullString
		var rejected, softFailed bool
		err := tx.QueryRow(ctx, `SELECT snapshot_before, stream_pos, type, state_key, rejected, soft_failed FROM events WHERE event_id = $1`, id).
			Scan(&before, &pos, &typ, &sk, &rejected, &softFailed)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && pos < 0 && !((rejected || softFailed) && before != 0)) {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read prev event: %w", err)
		}
		state, err := s.snapshotState(ctx, before, nil)
		if err != nil {
			return nil, err
		}
		if sk.Valid && !rejected { // the state after a rejected event is the state before it
			state[[2]string{typ, sk.String}] = id
		}
		sets = append(sets, state)
	}
	if len(missing) > 0 {
		return nil, &MissingEventsError{Prev: missing}
	}
	if len(sets) == 1 {
		return sets[0], nil
	}
	return s.resolve(ctx, tx, impl, sets)
}

// resolve runs the room version's state resolution over state sets.
func (s *Service) resolve(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, sets []map[[2]string]string) (map[[2]string]string, error) {
	ids := map[string]bool{}
	conflicted := false
	for k, id := range sets[0] {
		for _, other := range sets[1:] {
			if other[k] != id {
				conflicted = true
			}
		}
	}
	for _, set := range sets {
		if len(set) != len(sets[0]) {
			conflicted = true
		}
		for _, id := range set {
			ids[id] = true
		}
	}
	if !conflicted {
		return sets[0], nil
	}
	all := make([]string, 0, len(ids))
	for id := range ids {
		all = append(all, id)
	}
	events, err := s.pdus(ctx, tx, all)
	if err != nil {
		return nil, err
	}
	chain, err := s.AuthChain(ctx, all)
	if err != nil {
		return nil, err
	}
	resolved, err := gomatrixserverlib.ResolveConflicts(impl.Version(), events, chain, userIDForSender, func(string) bool { return false })
	if err != nil {
		return nil, fmt.Errorf("resolve state: %w", err)
	}
	return stateMap(resolved), nil
}

// allowedAt checks ev against the auth rules at a state.
func (s *Service) allowedAt(ctx context.Context, tx *storage.Tx, ev gomatrixserverlib.PDU, state map[[2]string]string) error {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	var ids []string
	for _, t := range needed.Tuples() {
		if id, ok := state[[2]string{t.EventType, t.StateKey}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := s.pdus(ctx, tx, ids)
	if err != nil {
		return err
	}
	return allowedBy(ev, evs)
}

func allowedBy(ev gomatrixserverlib.PDU, authEvents []gomatrixserverlib.PDU) error {
	provider, err := gomatrixserverlib.NewAuthEvents(authEvents)
	if err != nil {
		return err
	}
	return gomatrixserverlib.Allowed(ev, provider, userIDForSender)
}

func (s *Service) currentStateMap(ctx context.Context, tx *storage.Tx, roomID string) (map[[2]string]string, error) {
	rows, err := tx.Query(ctx, `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("read current state: %w", err)
	}
	defer rows.Close()
	out := map[[2]string]string{}
	for rows.Next() {
		var typ, key, id string
		if err := rows.Scan(&typ, &key, &id); err != nil {
			return nil, err
		}
		out[[2]string{typ, key}] = id
	}
	return out, rows.Err()
}

// replaceCurrentState sets the room's current state to state, whose events are stored.
func (s *Service) replaceCurrentState(ctx context.Context, tx *storage.Tx, roomID string, state map[[2]string]string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM current_state WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("replace current state: %w", err)
	}
	ids := make([]string, 0, len(state))
	for _, id := range state {
		ids = append(ids, id)
	}
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		args := []any{roomID}
		marks := make([]string, len(batch))
		for i, id := range batch {
			args = append(args, id)
			marks[i] = fmt.Sprintf("$%d", i+2)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, stream_pos, membership)
			SELECT $1, type, state_key, event_id, stream_pos, membership FROM events WHERE event_id IN (`+strings.Join(marks, ", ")+`)`, args...); err != nil {
			return fmt.Errorf("replace current state: %w", err)
		}
	}
	return nil
}

// fullSnapshot records state as a full snapshot under a fresh negative ID (positive
// IDs are the stream positions of the state events that made them).
func (s *Service) fullSnapshot(ctx context.Context, tx *storage.Tx, roomID string, state map[[2]string]string) (int64, error) {
	var n int64
	if err := tx.NextStreamPos(ctx, "outliers", &n); err != nil {
		return 0, err
	}
	id := -n
	if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent, chain_len) VALUES ($1, $2, NULL, 0)`, id, roomID); err != nil {
		return 0, fmt.Errorf("insert snapshot: %w", err)
	}
	if err := insertSnapshotEntries(ctx, tx, id, state); err != nil {
		return 0, err
	}
	return id, nil
}

// insertSnapshotEntries writes state as the entries of snapshot id, in multi-row
// statements (a large room's state is tens of thousands of entries).
func insertSnapshotEntries(ctx context.Context, tx *storage.Tx, id int64, state map[[2]string]string) error {
	keys := make([][2]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	for start := 0; start < len(keys); start += 300 {
		batch := keys[start:min(start+300, len(keys))]
		args := []any{id}
		rows := make([]string, len(batch))
		for i, k := range batch {
			args = append(args, k[0], k[1], state[k])
			rows[i] = fmt.Sprintf("($1, $%d, $%d, $%d)", len(args)-2, len(args)-1, len(args))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES `+strings.Join(rows, ", "), args...); err != nil {
			return fmt.Errorf("insert snapshot entries: %w", err)
		}
	}
	return nil
}

// Backfill returns up to limit events before (and including) the given ones,
// walking prev_events backwards, for a server in the room paginating its history:
// those its history visibility hides come redacted.
func (s *Service) Backfill(ctx context.Context, roomID string, r Reader, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	evs, err := s.walkBack(ctx, roomID, from, nil, limit)
	if err != nil {
		return nil, err
	}
	return s.visiblePDUs(ctx, roomID, r, evs, true)
}

// MissingEvents answers get_missing_events: events reachable backwards from latest,
// stopping at earliest, at most limit, oldest first; those the reader's history
// visibility hides come redacted.
func (s *Service) MissingEvents(ctx context.Context, roomID string, r Reader, earliest, latest []string, limit int) ([]gomatrixserverlib.PDU, error) {
	var start []string
	evs, err := s.pdus(ctx, s.db, latest)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if ev.RoomID().String() == roomID {
			start = append(start, ev.PrevEventIDs()...)
		}
	}
	out, err := s.walkBack(ctx, roomID, start, earliest, limit)
	if err != nil {
		return nil, err
	}
	if out, err = s.visiblePDUs(ctx, roomID, r, out, true); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	return out, nil
}

func (s *Service) walkBack(ctx context.Context, roomID string, from, stop []string, limit int) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	for _, id := range stop {
		seen[id] = true
	}
	var out []gomatrixserverlib.PDU
	frontier := slices.DeleteFunc(slices.Clone(from), func(id string) bool { return seen[id] })
	for len(frontier) > 0 && len(out) < limit {
		for _, id := range frontier {
			seen[id] = true
		}
		evs, err := s.pdus(ctx, s.db, frontier)
		if err != nil {
			return nil, err
		}
		slices.SortFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(b.Depth() - a.Depth()) })
		frontier = frontier[:0]
		for _, ev := range evs {
			if ev.RoomID().String() != roomID || len(out) >= limit {
				continue
			}
			out = append(out, ev)
			for _, p := range ev.PrevEventIDs() {
				if !seen[p] {
					seen[p] = true
					frontier = append(frontier, p)
				}
			}
		}
	}
	return out, nil
}

// stateMap indexes state events by (type, state_key).
func stateMap(evs []gomatrixserverlib.PDU) map[[2]string]string {
	out := make(map[[2]string]string, len(evs))
	for _, ev := range evs {
		if sk := ev.StateKey(); sk != nil {
			out[[2]string{ev.Type(), *sk}] = ev.EventID()
		}
	}
	return out
}

func missingIDs(want []string, have []gomatrixserverlib.PDU) []string {
	got := map[string]bool{}
	for _, ev := range have {
		got[ev.EventID()] = true
	}
	var out []string
	for _, id := range want {
		if !got[id] {
			out = append(out, id)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// ErrUnbatched marks the events ReceiveBatch left for Receive: those that do not
// extend the room's head (forks, gaps) or lack auth events.
var ErrUnbatched = errors.New("not admitted in a batch")

// ReceiveBatch admits events of one room, in order, in a single transaction as long
// as each extends the room's head — the steady state of a conversation with another
// server, where a transaction carries a chain of new events. It returns one error
// per event; ErrUnbatched entries are to be admitted one by one (Receive), in order.
func (s *Service) ReceiveBatch(ctx context.Context, evs []gomatrixserverlib.PDU) []error {
	errs := make([]error, len(evs))
	if len(evs) == 0 {
		return errs
	}
	roomID := evs[0].RoomID().String()
	impl, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	unlock := s.lockRoom(roomID)
	var notices []Notice
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		notices = notices[:0]
		clear(errs)
		authCache := map[string]gomatrixserverlib.PDU{}
		stateCache := map[[2]string]gomatrixserverlib.PDU{}
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		partial, _, err := s.partialState(ctx, tx, roomID)
		if err != nil {
			return err
		}
		for i, ev := range evs {
			switch {
			case ev.RoomID().String() != roomID || ev.Version() != impl.Version():
				errs[i] = fmt.Errorf("%w: not an event of %s", ErrRejected, roomID)
				continue
			case len(ev.JSON()) > MaxEventBytes:
				errs[i] = fmt.Errorf("%w: larger than %d bytes", ErrRejected, MaxEventBytes)
				continue
			case !sameSet(ev.PrevEventIDs(), h.prev):
				errs[i] = ErrUnbatched
				continue
			}
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1 FROM events WHERE event_id = $1`, ev.EventID()).Scan(&one); err == nil {
				continue // known already
			}
			// A chain of messages shares its auth events and the state they are
			// checked against: both are read once per batch, not once per event.
			var want []string
			for _, id := range ev.AuthEventIDs() {
				if _, ok := authCache[id]; !ok {
					want = append(want, id)
				}
			}
			loaded, err := s.pdus(ctx, tx, want)
			if err != nil {
				return err
			}
			for _, a := range loaded {
				authCache[a.EventID()] = a
			}
			var authEvents []gomatrixserverlib.PDU
			for _, id := range ev.AuthEventIDs() {
				if a, ok := authCache[id]; ok {
					authEvents = append(authEvents, a)
				}
			}
			if len(authEvents) < len(ev.AuthEventIDs()) {
				errs[i] = ErrUnbatched
				continue
			}
			// A refused event is kept as rejected, on the state before it (the
			// head's: the batch extends it event by event).
			if err := allowedBy(ev, authEvents); err != nil || s.redactsElsewhere(ctx, tx, ev) != nil {
				errs[i] = fmt.Errorf("%w at its auth events: %v", ErrRejected, errors.Join(err, s.redactsElsewhere(ctx, tx, ev)))
				if err := s.storeRejected(ctx, tx, ev, h.snapshot); err != nil {
					return err
				}
				continue
			}
			var current []gomatrixserverlib.PDU
			for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
				k := [2]string{t.EventType, t.StateKey}
				st, ok := stateCache[k]
				if !ok {
					got, err := currentStateEvents(ctx, tx, h, []gomatrixserverlib.StateKeyTuple{t})
					if err != nil {
						return err
					}
					st = nil
					if len(got) > 0 {
						st = got[0]
					}
					stateCache[k] = st
				}
				if st != nil {
					current = append(current, st)
				}
			}
			if err := allowedBy(ev, current); err != nil && !partial {
				errs[i] = fmt.Errorf("%w at the state before it: %v", ErrRejected, err)
				if err := s.storeRejected(ctx, tx, ev, h.snapshot); err != nil {
					return err
				}
				continue
			}
			depth := h.depth
			pos, err := s.persist(ctx, tx, h, ev, nil)
			if err != nil {
				return err
			}
			h.depth = max(depth, ev.Depth())
			if sk := ev.StateKey(); sk != nil {
				stateCache[[2]string{ev.Type(), *sk}] = ev
			}
			notices = append(notices, Notice{RoomID: roomID, EventID: ev.EventID(), Type: ev.Type(), StateKey: ev.StateKey(), StreamPos: pos, Seq: h.seq})
		}
		_, err = tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1, depth = $2, seq = $3 WHERE room_id = $4`, h.snapshot, h.depth, h.seq, roomID)
		return err
	})
	unlock()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for _, n := range notices {
		s.publish(n)
	}
	for _, n := range notices {
		s.guestAccessChanged(ctx, n.RoomID, n.Type, n.StateKey)
	}
	return errs
}

// backfill fetches history from before the oldest timeline event held here, when
// that event's predecessors are not held (a room joined through another server),
// and stores what passes the auth rules at its own auth events as timeline below
// everything this server saw live. It returns how many events it stored.
func (s *Service) backfill(ctx context.Context, roomID string, limit int) (int, error) {
	oldest, before, more, err := s.oldestHeld(ctx, roomID)
	if err != nil || !more {
		return 0, err
	}
	oldestID := oldest.EventID()
	servers, err := s.ServersInRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	servers = slices.DeleteFunc(servers, func(srv string) bool { return srv == s.cfg.ServerName })
	if len(servers) == 0 {
		return 0, nil
	}
	evs, err := s.remote.Backfill(ctx, roomID, servers, []string{oldestID}, min(max(limit, 10), 100))
	if err != nil {
		return 0, err
	}
	// Newest first: each takes the next position down.
	slices.SortFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(b.Depth() - a.Depth()) })
	stored := 0
	unlock := s.lockRoom(roomID)
	defer unlock()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		stored = 0
		ids := make([]string, len(evs))
		for i, ev := range evs {
			ids[i] = ev.EventID()
		}
		timeline, err := s.heldIDs(ctx, tx, ids, true)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.RoomID().String() != roomID || timeline[ev.EventID()] || ev.Depth() >= oldest.Depth() {
				continue
			}
			authEvents, err := s.pdus(ctx, tx, ev.AuthEventIDs())
			if err != nil {
				return err
			}
			if len(missingIDs(ev.AuthEventIDs(), authEvents)) > 0 || allowedBy(ev, authEvents) != nil {
				continue // not provably allowed: left out of history
			}
			var n int64
			if err := tx.NextStreamPos(ctx, "outliers", &n); err != nil {
				return err
			}
			var membership, relatesTo, relType any
			if ev.Type() == spec.MRoomMember {
				if m, err := ev.Membership(); err == nil {
					membership = m
				}
			}
			if rel := gjson.GetBytes(ev.Content(), "m\\.relates_to"); rel.IsObject() {
				if id := rel.Get("event_id").String(); id != "" {
					relatesTo, relType = id, rel.Get("rel_type").String()
				}
			}
			// The state before backfilled history is not fetched event by event:
			// it is read as the state the room had when this server joined, which
			// is what history visibility needs for members who can see the past.
			if _, err := tx.Exec(ctx, `DELETE FROM events WHERE event_id = $1 AND outlier`, ev.EventID()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts,
				snapshot_before, membership, relates_to, rel_type, json, room_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $1)`,
				-n, ev.EventID(), roomID, ev.Type(), ev.StateKey(), string(ev.SenderID()), ev.Depth(), int64(ev.OriginServerTS()),
				before, membership, relatesTo, relType, string(ev.JSON())); err != nil {
				return fmt.Errorf("insert backfilled %s: %w", ev.EventID(), err)
			}
			stored++
		}
		return nil
	})
	return stored, err
}

// oldestHeld returns the room's oldest timeline event held here, the snapshot before
// it, and whether history from before it is missing (its prev events are not held).
func (s *Service) oldestHeld(ctx context.Context, roomID string) (gomatrixserverlib.PDU, int64, bool, error) {
	var oldestID string
	var before int64
	err := s.db.QueryRow(ctx, `SELECT event_id, snapshot_before FROM events WHERE room_id = $1 AND NOT outlier
		ORDER BY stream_pos LIMIT 1`, roomID).Scan(&oldestID, &before)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("oldest event: %w", err)
	}
	oldest, err := s.PDU(ctx, oldestID)
	if err != nil {
		return nil, 0, false, err
	}
	if len(oldest.PrevEventIDs()) == 0 {
		return oldest, before, false, nil // the room's create event: nothing before it
	}
	held, err := s.heldIDs(ctx, s.db, oldest.PrevEventIDs(), true)
	if err != nil {
		return nil, 0, false, err
	}
	return oldest, before, len(held) < len(oldest.PrevEventIDs()), nil
}

// historyElsewhere reports whether other servers hold history of the room from
// before the oldest event held here.
func (s *Service) historyElsewhere(ctx context.Context, roomID string) (bool, error) {
	_, _, more, err := s.oldestHeld(ctx, roomID)
	return more, err
}

// ServerAllowed reports whether another server may take part in the room: the room
// federates (its create event's m.federate is not false) and its server ACL
// (m.room.server_acl), if any, allows the server's name.
func (s *Service) ServerAllowed(ctx context.Context, roomID, server string) (bool, error) {
	rows, err := s.db.Query(ctx, `SELECT c.type, c.event_id, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type IN ('m.room.create', 'm.room.server_acl') AND c.state_key = ''`, roomID)
	if err != nil {
		return false, fmt.Errorf("read server ACL: %w", err)
	}
	defer rows.Close()
	allowed := true
	for rows.Next() {
		var typ, eventID, raw string
		if err := rows.Scan(&typ, &eventID, &raw); err != nil {
			return false, err
		}
		if typ == spec.MRoomCreate {
			allowed = allowed && federates(raw)
		} else {
			allowed = allowed && s.acls.get(eventID, raw).allows(server)
		}
	}
	return allowed, rows.Err()
}

// Federates reports whether the room may be shared with other servers: its create
// event's m.federate is not false.
func (s *Service) Federates(ctx context.Context, roomID string) (bool, error) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.create' AND c.state_key = ''`, roomID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil // known here only by an invite or knock: its server decides
	}
	if err != nil {
		return false, fmt.Errorf("read create event: %w", err)
	}
	return federates(raw), nil
}

func federates(createJSON string) bool {
	f := gjson.Get(createJSON, "content.m\\.federate")
	return !f.Exists() || f.Type != gjson.False
}

// RemotePublicRooms reads another server's room directory over federation.
func (s *Service) RemotePublicRooms(ctx context.Context, server string, limit int, since, search string) (json.RawMessage, error) {
	if s.remote == nil {
		return nil, mxerror.New(mxerror.NotFound, "federation is off: cannot list %s's rooms", server)
	}
	return s.remote.PublicRooms(ctx, server, limit, since, search)
}

// StatePartial reports whether the room's state here is still partial (joined
// with partial state, the rest not fetched yet): this server cannot vouch for
// the room's state to others until it is whole.
func (s *Service) StatePartial(ctx context.Context, roomID string) (bool, error) {
	partial, _, err := s.partialState(ctx, s.db, roomID)
	return partial, err
}

// partialState reports whether the room's state here is still partial, and the
// servers send_join listed.
func (s *Service) partialState(ctx context.Context, q rowQuerier, roomID string) (bool, []string, error) {
	var partial bool
	var raw string
	err := q.QueryRow(ctx, `SELECT partial_state, partial_servers FROM rooms WHERE room_id = $1`, roomID).Scan(&partial, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("read partial state: %w", err)
	}
	var servers []string
	json.Unmarshal([]byte(raw), &servers)
	return partial, servers, nil
}

// PartialStateRoomIDs lists the rooms whose state here is still partial.
func (s *Service) PartialStateRoomIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id FROM rooms WHERE partial_state`)
	if err != nil {
		return nil, fmt.Errorf("read partial-state rooms: %w", err)
	}
	ids, err := scanStrings(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// PartialRoom is a room whose state here is still partial.
type PartialRoom struct {
	RoomID, JoinEventID string
	Servers             []string
}

// PartialStateRooms lists the rooms still waiting for their whole state (after a
// restart, their completion starts again).
func (s *Service) PartialStateRooms(ctx context.Context) ([]PartialRoom, error) {
	rows, err := s.db.Query(ctx, `SELECT room_id, partial_servers FROM rooms WHERE partial_state`)
	if err != nil {
		return nil, fmt.Errorf("read partial-state rooms: %w", err)
	}
	var out []PartialRoom
	for rows.Next() {
		var p PartialRoom
		var raw string
		if err := rows.Scan(&p.RoomID, &raw); err != nil {
			rows.Close()
			return nil, err
		}
		json.Unmarshal([]byte(raw), &p.Servers)
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		// The join is the first event of the room's timeline here.
		if err := s.db.QueryRow(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos > 0 AND NOT outlier
			ORDER BY stream_pos LIMIT 1`, out[i].RoomID).Scan(&out[i].JoinEventID); err != nil {
			return nil, fmt.Errorf("read partial-state join: %w", err)
		}
	}
	return out, nil
}

// ServersAt returns the servers with a joined member in the room's state just after
// a stored event: the servers that event is sent to. (The current membership would
// send an event from before a server joined to that server too.)
func (s *Service) ServersAt(ctx context.Context, eventID string) ([]string, error) {
	var roomID string
	var before int64
	var typ string
	var sk, membership sql.NullString
	err := s.db.QueryRow(ctx, `SELECT room_id, snapshot_before, type, state_key, membership FROM events WHERE event_id = $1`, eventID).
		Scan(&roomID, &before, &typ, &sk, &membership)
	if err != nil {
		return nil, fmt.Errorf("read event %s: %w", eventID, err)
	}
	state, err := s.snapshotState(ctx, before, nil)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k, id := range state {
		if k[0] == spec.MRoomMember && !(typ == spec.MRoomMember && sk.Valid && k[1] == sk.String) {
			ids = append(ids, id)
		}
	}
	joined := map[string]bool{}
	if typ == spec.MRoomMember && sk.Valid && membership.String == spec.Join {
		joined[sk.String] = true
	}
	for start := 0; start < len(ids); start += 500 {
		batch := ids[start:min(start+500, len(ids))]
		marks, args := storage.InList(batch)
		rows, err := s.db.Query(ctx, `SELECT state_key FROM events WHERE membership = 'join' AND event_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read members: %w", err)
		}
		users, err := scanStrings(rows)
		if err != nil {
			return nil, fmt.Errorf("read members: %w", err)
		}
		for _, u := range users {
			joined[u] = true
		}
	}
	users := make([]string, 0, len(joined))
	for u := range joined {
		users = append(users, u)
	}
	return s.withPartialServers(ctx, roomID, serversOf(users))
}
