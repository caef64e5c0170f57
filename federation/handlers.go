package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/httpapi"
)

// send handles PUT /send/{txnId}: each PDU is checked and admitted on its own (one
// bad event does not sink the others), EDUs are applied, and the answer is kept so a
// retried transaction gets the same one without being processed twice.
func (s *Service) send(r *fedRequest) (any, error) {
	ctx := r.Context()
	txnID := r.Vars["txnId"]
	var earlier string
	err := s.deps.DB.QueryRow(ctx, `SELECT response FROM federation_txns WHERE origin = $1 AND txn_id = $2`, r.Origin, txnID).Scan(&earlier)
	if err == nil {
		return json.RawMessage(earlier), nil
	}
	txn, err := decodeTransaction(r.Body)
	if err != nil {
		return nil, err
	}
	results := map[string]any{}
	report := func(id string, err error) {
		if errors.Is(err, rooms.ErrRejected) {
			// Refused by the auth rules: the transaction itself was processed
			// fine, and like Synapse we report no error for the event.
			s.log.Info("rejected PDU", "origin", r.Origin, "event_id", id, "err", err)
			err = nil
		}
		if err != nil {
			s.log.Info("refused PDU", "origin", r.Origin, "event_id", id, "err", err)
			results[id] = map[string]string{"error": err.Error()}
		} else {
			results[id] = struct{}{}
		}
	}
	// Checked one by one, then admitted per room in order: a chain of events on a
	// room's head goes in as one database transaction.
	byRoom := map[string][]gomatrixserverlib.PDU{}
	var order []string
	rc := roomChecks{}
	for _, raw := range txn.PDUs {
		ev, err := s.checkPDU(ctx, r.Origin, raw, rc)
		if ev == nil {
			continue // not even an event ID to answer for
		}
		if err != nil {
			report(ev.EventID(), s.rescind(ctx, r.Origin, ev, err))
			continue
		}
		room := ev.RoomID().String()
		if byRoom[room] == nil {
			order = append(order, room)
		}
		byRoom[room] = append(byRoom[room], ev)
	}
	for _, room := range order {
		evs := byRoom[room]
		errs := s.deps.Rooms.ReceiveBatch(ctx, evs)
		for i, ev := range evs {
			if errors.Is(errs[i], rooms.ErrUnbatched) {
				version, err := s.deps.Rooms.RoomVersion(ctx, room)
				if err == nil {
					err = s.admit(ctx, r.Origin, version, ev, 0)
				}
				errs[i] = err
			}
			report(ev.EventID(), errs[i])
		}
	}
	for _, edu := range txn.EDUs {
		if err := s.receiveEDU(ctx, r.Origin, edu); err != nil {
			s.log.Info("refused EDU", "origin", r.Origin, "type", edu.Type, "err", err)
		}
	}
	resp, _ := json.Marshal(map[string]any{"pdus": results})
	if _, err := s.deps.DB.Exec(ctx, `INSERT INTO federation_txns (origin, txn_id, response, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, r.Origin, txnID, string(resp), time.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("record transaction: %w", err)
	}
	return json.RawMessage(resp), nil
}

// checkPDU parses one PDU of a transaction and checks what federation alone can:
// that its room is one we are in, that the origin is in it, and its signatures and
// hashes. It returns nil when the PDU cannot even be parsed.
func (s *Service) checkPDU(ctx context.Context, origin string, raw json.RawMessage, rc roomChecks) (gomatrixserverlib.PDU, error) {
	roomID := pduRoomID(raw)
	c, ok := rc[roomID]
	if !ok {
		c.version, c.err = s.deps.Rooms.RoomVersion(ctx, roomID)
		if c.err == nil {
			c.inRoom = s.requireInRoom(ctx, roomID, origin)
		}
		rc[roomID] = c
	}
	if c.err != nil {
		return nil, c.err // a room we are not in: nothing to check the event against
	}
	ev, err := parsePDU(c.version, roomID, raw)
	if err != nil {
		return nil, err
	}
	if c.inRoom != nil && !ownMembership(ev, origin) && !c.joining {
		return ev, c.inRoom
	}
	if c.inRoom != nil {
		// A server not (yet) in the room may still send its own user's join,
		// leave or knock: that is how it comes in; the auth rules decide. What
		// it sends after its join in the same transaction is checked the same way.
		if err := s.requireACL(ctx, roomID, origin); err != nil {
			return ev, err
		}
		if m, _ := ev.Membership(); ownMembership(ev, origin) && m == spec.Join {
			c.joining = true
			rc[roomID] = c
		}
	}
	if _, sender, ok := strings.Cut(string(ev.SenderID()), ":"); ok && sender != origin {
		if err := s.requireACL(ctx, roomID, sender); err != nil {
			return ev, err
		}
	}
	return ev, s.verify(ctx, ev)
}

// rescind takes an event refused because the origin is in no room here that
// withdraws an invite of a local user one of origin's users sent (a friend
// request cancelled, an invite rescinded): the room engine stores it, once its
// signatures check, so the invitee's server learns. Any other event keeps refused.
func (s *Service) rescind(ctx context.Context, origin string, ev gomatrixserverlib.PDU, refused error) error {
	ok, err := s.deps.Rooms.RescindsInvite(ctx, origin, ev)
	if err != nil || !ok {
		return refused
	}
	if err := s.verify(ctx, ev); err != nil {
		return err
	}
	return s.deps.Rooms.ReceiveRescind(ctx, ev)
}

// ownMembership reports whether ev is a membership event of one of origin's users
// about themselves.
func ownMembership(ev gomatrixserverlib.PDU, origin string) bool {
	sk := ev.StateKey()
	return ev.Type() == spec.MRoomMember && sk != nil && *sk == string(ev.SenderID()) && strings.HasSuffix(*sk, ":"+origin)
}

// roomChecks remembers, for one transaction, each room's version and whether the
// origin is in it: a transaction's PDUs are mostly of one room.
type roomChecks map[string]struct {
	version gomatrixserverlib.IRoomVersion
	err     error
	inRoom  error
	joining bool // the origin's join came earlier in this transaction
}

// admit hands an event to the room engine, first fetching from origin what the
// engine says is missing: auth events through /event_auth, a gap before it through
// /get_missing_events, and when the gap cannot be closed, the state before it.
func (s *Service) admit(ctx context.Context, origin string, version gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, depth int) error {
	roomID := ev.RoomID().String()
	for attempt := 0; ; attempt++ {
		err := s.deps.Rooms.Receive(ctx, ev)
		var missing *rooms.MissingEventsError
		if !errors.As(err, &missing) || attempt >= 3 {
			return err
		}
		if len(missing.Prev) == 0 {
			// Only auth events are missing: fetch the event's auth chain.
			if err := s.fetchAuthChain(ctx, origin, version, ev, missing.Auth); err != nil {
				return err
			}
			continue
		}
		// A gap: ask for the events between our extremities and this one — for
		// an event of the transaction only, as Synapse does; the events that
		// answer brings are placed by the state route below. An event pushed to
		// us whose predecessors its server will not give is refused: taking the
		// state for it on that server's word could make it our only extremity
		// on state nobody else vouched for.
		if depth == 0 {
			extremities, err := s.deps.Rooms.ForwardExtremities(ctx, roomID)
			if err != nil {
				return err
			}
			gap, err := s.client.LookupMissingEvents(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(origin), roomID,
				fclient.MissingEvents{Limit: 20, EarliestEvents: extremities, LatestEvents: []string{ev.EventID()}}, version.Version())
			if err == nil {
				evs := untrustedPDUs(version, roomID, gap.Events)
				slices.SortFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
				for _, g := range evs {
					if s.verify(ctx, g) == nil {
						s.admit(ctx, origin, version, g, depth+1) // each on its own; the state route covers failures
					}
				}
				if err = s.deps.Rooms.Receive(ctx, ev); !errors.As(err, &missing) {
					return err
				}
			}
			if len(missing.Prev) > 0 {
				return mxerror.New(mxerror.Forbidden, "%s did not give the prev events %v of %s", origin, missing.Prev, ev.EventID())
			}
			continue
		}
		// Still a gap: take the state before the event from origin.
		state, err := s.stateBefore(ctx, origin, version, ev, missing.Prev)
		if err != nil {
			return err
		}
		return s.deps.Rooms.ReceiveWithState(ctx, ev, state)
	}
}

// stateBefore learns from origin the state before ev, some of whose prev events
// (missing) a gap left unknown here: as Synapse does, it asks for the state at
// each missing prev event (stateAfter) and resolves those states with the states
// after the prev events held here. If that fails it asks for the state before ev
// itself.
func (s *Service) stateBefore(ctx context.Context, origin string, version gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, missing []string) ([]gomatrixserverlib.PDU, error) {
	me, them, roomID := spec.ServerName(s.cfg.ServerName), spec.ServerName(origin), ev.RoomID().String()
	after := map[string][]gomatrixserverlib.PDU{}
	var err error
	for _, prev := range missing {
		if after[prev], err = s.stateAfter(ctx, origin, version, roomID, prev); err != nil {
			break
		}
	}
	if err == nil {
		var state []gomatrixserverlib.PDU
		if state, err = s.deps.Rooms.StateBeforeFrom(ctx, roomID, ev.PrevEventIDs(), after); err == nil {
			return state, nil
		}
	}
	s.log.Info("state after missing prev events", "origin", origin, "event_id", ev.EventID(), "err", err)
	res, err := s.client.LookupState(ctx, me, them, roomID, ev.EventID(), version.Version())
	if err != nil {
		return nil, fmt.Errorf("state before %s from %s: %w", ev.EventID(), origin, err)
	}
	return s.verifiedState(ctx, untrustedPDUs(version, roomID, res.AuthEvents), untrustedPDUs(version, roomID, res.StateEvents)), nil
}

// stateAfter is the state after the event prevID, learned from origin: the state
// before it, and it if it is a state event. The event is stored as an outlier.
func (s *Service) stateAfter(ctx context.Context, origin string, version gomatrixserverlib.IRoomVersion, roomID, prevID string) ([]gomatrixserverlib.PDU, error) {
	me, them := spec.ServerName(s.cfg.ServerName), spec.ServerName(origin)
	ids, err := s.client.LookupStateIDs(ctx, me, them, roomID, prevID)
	if err != nil {
		return nil, err
	}
	wanted := append(slices.Clone(ids.StateEventIDs), ids.AuthEventIDs...)
	have, err := s.deps.Rooms.PDUs(ctx, wanted)
	if err != nil {
		return nil, err
	}
	byID := map[string]gomatrixserverlib.PDU{}
	for _, ev := range have {
		byID[ev.EventID()] = ev
	}
	var lacking []string
	for _, id := range wanted {
		if byID[id] == nil && !slices.Contains(lacking, id) {
			lacking = append(lacking, id)
		}
	}
	// A few lacking events are fetched one by one, many with one /state (as
	// Synapse decides); either way falls back on the other.
	var fetched []gomatrixserverlib.PDU
	if len(lacking) > maxEventFetch {
		if res, err := s.client.LookupState(ctx, me, them, roomID, prevID, version.Version()); err == nil {
			fetched = append(untrustedPDUs(version, roomID, res.AuthEvents), untrustedPDUs(version, roomID, res.StateEvents)...)
			lacking = nil
		}
	}
	if len(lacking) > 0 {
		if fetched, err = s.fetchEvents(ctx, origin, version, roomID, lacking); err != nil {
			return nil, err
		}
	}
	for _, ev := range fetched {
		byID[ev.EventID()] = ev
	}
	prevs, err := s.fetchEvents(ctx, origin, version, roomID, []string{prevID})
	if err != nil {
		return nil, err
	}
	prev := prevs[0]
	var chain, state []gomatrixserverlib.PDU
	for _, id := range ids.AuthEventIDs {
		if ev := byID[id]; ev != nil {
			chain = append(chain, ev)
		}
	}
	for _, id := range ids.StateEventIDs {
		if ev := byID[id]; ev != nil {
			state = append(state, ev)
		}
	}
	state = s.verifiedState(ctx, chain, state)
	// The state is kept as the receiving event's would be (signatures checked,
	// as resolved by origin), and the prev event checked at its auth events.
	if err := s.deps.Rooms.StoreOutliers(ctx, state); err != nil {
		return nil, err
	}
	// Its auth events may be none of the state's (a state_ids answer may even
	// leave the auth chain out): fetched like any missing auth events.
	missing, err := s.lacking(ctx, prev.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		if err := s.fetchAuthChain(ctx, origin, version, prev, missing); err != nil {
			return nil, err
		}
	}
	if err := s.storeVerified(ctx, []gomatrixserverlib.PDU{prev}); err != nil {
		return nil, err
	}
	if prev.StateKey() != nil {
		state = slices.DeleteFunc(state, func(e gomatrixserverlib.PDU) bool {
			return e.Type() == prev.Type() && *e.StateKey() == *prev.StateKey()
		})
		state = append(state, prev)
	}
	return state, nil
}

// maxEventFetch is how many events are fetched one by one before one /state
// request is cheaper.
const maxEventFetch = 20

// fetchEvents fetches events of a room from origin with /event, each checked to be
// the one asked for.
func (s *Service) fetchEvents(ctx context.Context, origin string, version gomatrixserverlib.IRoomVersion, roomID string, ids []string) ([]gomatrixserverlib.PDU, error) {
	if len(ids) > maxFetchedEvents {
		return nil, fmt.Errorf("%d events to fetch from %s: too many", len(ids), origin)
	}
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	for _, id := range ids {
		txn, err := s.client.GetEvent(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(origin), id)
		if err != nil {
			return nil, fmt.Errorf("event %s from %s: %w", id, origin, err)
		}
		if len(txn.PDUs) != 1 {
			return nil, fmt.Errorf("event %s from %s: %d PDUs in the answer", id, origin, len(txn.PDUs))
		}
		ev, err := parsePDU(version, roomID, txn.PDUs[0])
		if err != nil || ev.EventID() != id {
			return nil, fmt.Errorf("event %s from %s: not the event asked for (%v)", id, origin, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// maxFetchedEvents bounds the events fetched one by one for one event.
const maxFetchedEvents = 500

// verifiedState stores the auth chain behind a state another server gave and
// returns the state events whose signatures hold. An event that fails its checks
// is left out (logged), as Synapse and gomatrixserverlib's join do: what rests on
// it then fails the auth rules in turn.
func (s *Service) verifiedState(ctx context.Context, authChain, state []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	s.storeVerified(ctx, authChain)
	return slices.DeleteFunc(state, func(st gomatrixserverlib.PDU) bool {
		if err := s.verify(ctx, st); err != nil {
			s.log.Info("state event dropped", "event_id", st.EventID(), "err", err)
			return true
		}
		return false
	})
}

// fetchAuthChain fetches an event's missing auth events from origin — its auth
// chain by /event_auth, or, from a server that does not answer that, the missing
// events one by one — and stores them, each checked by signature and by the auth
// rules at its own auth events.
func (s *Service) fetchAuthChain(ctx context.Context, origin string, version gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, missing []string) error {
	me, them := spec.ServerName(s.cfg.ServerName), spec.ServerName(origin)
	res, err := s.client.GetEventAuth(ctx, me, them, version.Version(), ev.RoomID().String(), ev.EventID())
	if err == nil {
		return s.storeVerified(ctx, untrustedPDUs(version, ev.RoomID().String(), res.AuthEvents))
	}
	var fetched []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for len(missing) > 0 && len(fetched) < maxAuthFetch {
		id := missing[0]
		missing = missing[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		got, ferr := s.fetchEvents(ctx, origin, version, ev.RoomID().String(), []string{id})
		if ferr != nil {
			return fmt.Errorf("auth chain of %s from %s: %w", ev.EventID(), origin, errors.Join(err, ferr))
		}
		fetched = append(fetched, got[0])
		next, err := s.lacking(ctx, got[0].AuthEventIDs())
		if err != nil {
			return err
		}
		missing = append(missing, next...)
	}
	return s.storeVerified(ctx, fetched)
}

// lacking returns the events among ids not stored here.
func (s *Service) lacking(ctx context.Context, ids []string) ([]string, error) {
	held, err := s.deps.Rooms.PDUs(ctx, ids)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool {
		return slices.ContainsFunc(held, func(h gomatrixserverlib.PDU) bool { return h.EventID() == id })
	}), nil
}

// maxAuthFetch bounds the auth events fetched one by one for one event.
const maxAuthFetch = 100

// storeVerified keeps the events of an auth chain, oldest first, each verified.
func (s *Service) storeVerified(ctx context.Context, evs []gomatrixserverlib.PDU) error {
	slices.SortFunc(evs, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	byID := map[string]gomatrixserverlib.PDU{}
	for _, ev := range evs {
		byID[ev.EventID()] = ev
	}
	// An event failing its checks is left out, and with it whatever rests on
	// it; the others are stored, and the failures reported.
	var ok []gomatrixserverlib.PDU
	var failed []error
	for _, ev := range evs {
		if err := s.checkAuthEvent(ctx, ev, byID); err != nil {
			delete(byID, ev.EventID())
			failed = append(failed, fmt.Errorf("auth event %s: %w", ev.EventID(), err))
			continue
		}
		ok = append(ok, ev)
	}
	if err := s.deps.Rooms.StoreOutliers(ctx, ok); err != nil {
		return err
	}
	return errors.Join(failed...)
}

// checkAuthEvent checks an event's signatures and the auth rules at its auth
// events, found among batch or stored.
func (s *Service) checkAuthEvent(ctx context.Context, ev gomatrixserverlib.PDU, batch map[string]gomatrixserverlib.PDU) error {
	if err := s.verify(ctx, ev); err != nil {
		return err
	}
	var auth []gomatrixserverlib.PDU
	for _, id := range ev.AuthEventIDs() {
		if a, found := batch[id]; found {
			auth = append(auth, a)
		}
	}
	if len(auth) < len(ev.AuthEventIDs()) {
		stored, err := s.deps.Rooms.PDUs(ctx, ev.AuthEventIDs())
		if err != nil {
			return err
		}
		auth = append(auth, stored...)
	}
	provider, err := gomatrixserverlib.NewAuthEvents(auth)
	if err != nil {
		return err
	}
	return gomatrixserverlib.Allowed(ev, provider, userIDForSender)
}

// receiveEDU applies an EDU about the origin's own users.
func (s *Service) receiveEDU(ctx context.Context, origin string, edu gomatrixserverlib.EDU) error {
	if handled, err := s.receiveE2EEEDU(ctx, origin, edu); handled {
		return err
	}
	fromOrigin := func(userID string) bool { return strings.HasSuffix(userID, ":"+origin) }
	switch edu.Type {
	case spec.MTyping:
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if err := json.Unmarshal(edu.Content, &c); err != nil {
			return err
		}
		if !fromOrigin(c.UserID) {
			return fmt.Errorf("typing of %s from %s", c.UserID, origin)
		}
		if err := s.requireACL(ctx, c.RoomID, origin); err != nil {
			return err
		}
		if err := s.deps.Rooms.RequireJoined(ctx, c.RoomID, c.UserID); err != nil {
			return err
		}
		return s.deps.Typing.Set(c.RoomID, c.UserID, c.Typing, 30*time.Second)
	case spec.MReceipt:
		var c map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
			Data     struct {
				ThreadID string `json:"thread_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(edu.Content, &c); err != nil {
			return err
		}
		for roomID, byType := range c {
			if s.requireACL(ctx, roomID, origin) != nil {
				continue // a denied server's receipts are dropped
			}
			for typ, byUser := range byType {
				if typ != "m.read" {
					continue // private receipts never leave their server
				}
				for userID, rec := range byUser {
					if !fromOrigin(userID) || len(rec.EventIDs) == 0 {
						continue
					}
					if err := s.deps.Rooms.RequireJoined(ctx, roomID, userID); err != nil {
						continue
					}
					if err := s.deps.Receipts.Put(ctx, roomID, userID, typ, rec.Data.ThreadID, rec.EventIDs[0]); err != nil {
						return err
					}
				}
			}
		}
		return nil
	case spec.MPresence:
		var c struct {
			Push []struct {
				UserID        string  `json:"user_id"`
				Presence      string  `json:"presence"`
				StatusMsg     *string `json:"status_msg"`
				LastActiveAgo int64   `json:"last_active_ago"`
			} `json:"push"`
		}
		if err := json.Unmarshal(edu.Content, &c); err != nil {
			return err
		}
		for _, p := range c.Push {
			if !fromOrigin(p.UserID) || s.deps.Presence == nil || !presence.Valid(p.Presence) {
				continue // only the origin's users, in states we know
			}
			// Only of users sharing a room with this server's: nobody here may
			// see anyone else's, and each would leave a row behind.
			if shares, err := s.mayShareRoom(ctx, p.UserID); err != nil {
				return err
			} else if !shares {
				continue
			}
			if err := s.deps.Presence.SetRemote(ctx, p.UserID, p.Presence, p.StatusMsg, p.LastActiveAgo); err != nil {
				return err
			}
		}
		return nil
	}
	return nil // EDU types not handled yet are ignored, as the spec allows
}

// makeJoin answers GET /make_join: a join event template for the joining server.
func (s *Service) makeJoin(r *fedRequest) (any, error) {
	return s.makeMembership(r, spec.Join)
}

func (s *Service) makeLeave(r *fedRequest) (any, error) {
	return s.makeMembership(r, spec.Leave)
}

func (s *Service) makeMembership(r *fedRequest, membership string) (any, error) {
	roomID, userID := r.Vars["roomId"], r.Vars["userId"]
	if !strings.HasSuffix(userID, ":"+r.Origin) {
		return nil, mxerror.New(mxerror.Forbidden, "%s cannot act for %s", r.Origin, userID)
	}
	version, err := s.roomVersionOf(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if err := s.requireACL(r.Context(), roomID, r.Origin); err != nil {
		return nil, err
	}
	if in, err := s.deps.Rooms.ServerInRoom(r.Context(), roomID, s.cfg.ServerName); err != nil {
		return nil, err
	} else if !in {
		// Everyone here has left: this server cannot vouch for the room's state.
		return nil, mxerror.New(mxerror.NotFound, "no user of this server is in %s", roomID)
	}
	if membership == spec.Join {
		if err := s.requireFullState(r.Context(), roomID); err != nil {
			return nil, err
		}
	}
	if membership == spec.Join || membership == spec.Knock {
		supported := r.URL.Query()["ver"]
		if len(supported) == 0 {
			supported = []string{"1"}
		}
		if !slices.Contains(supported, string(version.Version())) {
			return nil, &mxerror.Error{Code: mxerror.IncompatibleRoomVersion, Message: "the room's version is not among the joining server's",
				Extra: map[string]any{"room_version": string(version.Version())}}
		}
	}
	var proto gomatrixserverlib.ProtoEvent
	switch membership {
	case spec.Join:
		proto, _, err = s.deps.Rooms.JoinTemplate(r.Context(), roomID, userID)
	case spec.Knock:
		proto, _, err = s.deps.Rooms.KnockTemplate(r.Context(), roomID, userID)
	default:
		proto, _, err = s.deps.Rooms.LeaveTemplate(r.Context(), roomID, userID)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": proto, "room_version": string(version.Version())}, nil
}

// sendJoin handles PUT /v2/send_join: the joining server's signed join goes into
// the room, and the answer is the state before it with its auth chain.
func (s *Service) sendJoin(r *fedRequest) (any, error) {
	ev, _, err := s.receiveMembership(r, spec.Join)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	roomID := ev.RoomID().String()
	state, err := s.deps.Rooms.StateBefore(ctx, roomID, ev.EventID())
	if err != nil {
		return nil, err
	}
	// omit_members (MSC3706, partial-state joins): the room's state without its
	// member events, so that joining a large room costs the joiner the state that
	// matters, not every member; the auth chain then covers only what is sent.
	omit := r.URL.Query().Get("omit_members") == "true"
	if omit {
		// Kept: the member events the join itself rests on (the joiner's invite,
		// the authorising user of a restricted join), so the joiner can check it.
		keep := map[string]bool{}
		for _, id := range ev.AuthEventIDs() {
			keep[id] = true
		}
		state = slices.DeleteFunc(state, func(e gomatrixserverlib.PDU) bool {
			return e.Type() == spec.MRoomMember && !keep[e.EventID()]
		})
	}
	chain, err := s.deps.Rooms.AuthChain(ctx, append(eventIDs(state), ev.EventID()))
	if err != nil {
		return nil, err
	}
	servers, err := s.deps.Rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"origin": s.cfg.ServerName, "state": pduJSONs(state), "auth_chain": pduJSONs(chain),
		"event": json.RawMessage(ev.JSON()), "members_omitted": omit, "servers_in_room": servers,
	}, nil
}

func (s *Service) sendLeave(r *fedRequest) (any, error) {
	if _, _, err := s.receiveMembership(r, spec.Leave); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// receiveMembership checks and admits a join or leave the origin made from our
// template, and queues it for the room's other servers, which learn of it from us.
func (s *Service) receiveMembership(r *fedRequest, membership string) (gomatrixserverlib.PDU, gomatrixserverlib.IRoomVersion, error) {
	ctx := r.Context()
	roomID, eventID := r.Vars["roomId"], r.Vars["eventId"]
	version, err := s.roomVersionOf(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	if err := s.requireACL(ctx, roomID, r.Origin); err != nil {
		return nil, nil, err
	}
	ev, err := parsePDU(version, roomID, r.Body)
	if err != nil {
		return nil, nil, mxerror.New(mxerror.BadJSON, "invalid event: %v", err)
	}
	m, _ := ev.Membership()
	switch {
	case ev.EventID() != eventID:
		return nil, nil, mxerror.New(mxerror.BadJSON, "the event's ID or room does not match the path")
	case ev.Type() != spec.MRoomMember || m != membership || ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()):
		return nil, nil, mxerror.New(mxerror.BadJSON, "not a %s of its sender", membership)
	case !strings.HasSuffix(string(ev.SenderID()), ":"+r.Origin):
		return nil, nil, mxerror.New(mxerror.Forbidden, "%s cannot act for %s", r.Origin, ev.SenderID())
	}
	if err := s.verify(ctx, ev); err != nil {
		return nil, nil, mxerror.New(mxerror.Forbidden, "%v", err)
	}
	if via := gjson.GetBytes(ev.Content(), "join_authorised_via_users_server").String(); via != "" && strings.HasSuffix(via, ":"+s.cfg.ServerName) {
		// A restricted join we authorised: it carries our signature too.
		ev = ev.Sign(s.cfg.ServerName, gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
	}
	if err := s.admit(ctx, r.Origin, version, ev, 0); err != nil {
		if errors.Is(err, rooms.ErrRejected) {
			return nil, nil, mxerror.New(mxerror.Forbidden, "%v", err)
		}
		return nil, nil, err
	}
	servers, err := s.deps.Rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	var others []string
	for _, srv := range servers {
		if srv != r.Origin && srv != s.cfg.ServerName {
			others = append(others, srv)
		}
	}
	if err := s.sender.queuePDU(ctx, others, ev); err != nil {
		return nil, nil, err
	}
	return ev, version, nil
}

// getEvent serves one event to a server in its room, if the room's history
// visibility lets the server see it (else 404, as for an unknown event).
func (s *Service) getEvent(r *fedRequest) (any, error) {
	ctx := r.Context()
	eventID := r.Vars["eventId"]
	roomID, err := s.deps.Rooms.RoomOfEvent(ctx, eventID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "unknown event")
	}
	if err != nil {
		return nil, err
	}
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, err
	}
	ev, err := s.deps.Rooms.EventFor(ctx, roomID, rooms.Server(r.Origin), eventID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "unknown event")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(),
		"pdus": []json.RawMessage{json.RawMessage(ev.JSON())}}, nil
}

// stateAt is the state before event_id and its auth chain, for a server in the room.
func (s *Service) stateAt(r *fedRequest) ([]gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	roomID, eventID := r.Vars["roomId"], r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, mxerror.New(mxerror.MissingParam, "event_id is required")
	}
	if _, err := s.roomVersionOf(ctx, roomID); err != nil {
		return nil, nil, err
	}
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, nil, err
	}
	if err := s.requireFullState(ctx, roomID); err != nil {
		return nil, nil, err
	}
	state, err := s.deps.Rooms.StateBefore(ctx, roomID, eventID)
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, nil, mxerror.New(mxerror.NotFound, "unknown event %s", eventID)
	}
	if err != nil {
		return nil, nil, err
	}
	chain, err := s.deps.Rooms.AuthChain(ctx, eventIDs(state))
	return state, chain, err
}

func (s *Service) stateIDs(r *fedRequest) (any, error) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)}, nil
}

func (s *Service) state(r *fedRequest) (any, error) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": pduJSONs(state), "auth_chain": pduJSONs(chain)}, nil
}

func (s *Service) eventAuth(r *fedRequest) (any, error) {
	ctx := r.Context()
	roomID := r.Vars["roomId"]
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, err
	}
	// The event must be one of the room the origin is in: naming a room it is in
	// does not open another room's events.
	chain, err := s.deps.Rooms.EventAuthChain(ctx, roomID, r.Vars["eventId"])
	if errors.Is(err, rooms.ErrNotFound) {
		return nil, mxerror.New(mxerror.NotFound, "room %s holds no event %s", roomID, r.Vars["eventId"])
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": pduJSONs(chain)}, nil
}

func (s *Service) backfill(r *fedRequest) (any, error) {
	ctx := r.Context()
	roomID := r.Vars["roomId"]
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, err
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	evs, err := s.deps.Rooms.Backfill(ctx, roomID, rooms.Server(r.Origin), r.URL.Query()["v"], limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pduJSONs(evs)}, nil
}

func (s *Service) missingEvents(r *fedRequest) (any, error) {
	ctx := r.Context()
	roomID := r.Vars["roomId"]
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, err
	}
	var body fclient.MissingEvents
	if err := httpapi.DecodeJSON(r.Body, &body); err != nil {
		return nil, err
	}
	if body.Limit <= 0 || body.Limit > 100 {
		body.Limit = 10
	}
	evs, err := s.deps.Rooms.MissingEvents(ctx, roomID, rooms.Server(r.Origin), body.EarliestEvents, body.LatestEvents, body.Limit)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": pduJSONs(evs)}, nil
}

func (s *Service) queryProfile(r *fedRequest) (any, error) {
	userID := r.URL.Query().Get("user_id")
	localpart, server, ok := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	if !ok || server != s.cfg.ServerName {
		return nil, mxerror.New(mxerror.InvalidParam, "%q is not a user of this server", userID)
	}
	p, err := s.deps.Users.Profile(r.Context(), localpart)
	if err != nil {
		return nil, mxerror.New(mxerror.NotFound, "unknown user")
	}
	out := map[string]string{}
	field := r.URL.Query().Get("field")
	if p.DisplayName != nil && (field == "" || field == "displayname") {
		out["displayname"] = *p.DisplayName
	}
	if p.AvatarURL != nil && (field == "" || field == "avatar_url") {
		out["avatar_url"] = *p.AvatarURL
	}
	return out, nil
}

func (s *Service) queryDirectory(r *fedRequest) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	roomID, err := s.deps.Rooms.ResolveAlias(r.Context(), alias)
	if err != nil {
		return nil, mxerror.New(mxerror.NotFound, "unknown alias %s", alias)
	}
	servers, err := s.deps.Rooms.ServersInRoom(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

func (s *Service) userKeysQuery(r *fedRequest) (any, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httpapi.DecodeJSON(r.Body, &body); err != nil {
		return nil, err
	}
	for u := range body.DeviceKeys {
		if !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			delete(body.DeviceKeys, u)
		}
	}
	keys, _, err := s.deps.E2EE.QueryKeys(r.Context(), s.cfg.ServerName, body.DeviceKeys)
	if err != nil {
		return nil, err
	}
	var users []string
	for u := range body.DeviceKeys {
		users = append(users, u)
	}
	// No local requester: user-signing keys only ever go to their owner.
	master, selfSigning, _, err := s.deps.E2EE.CrossSigningKeys(r.Context(), "", users)
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_keys": keys, "master_keys": master, "self_signing_keys": selfSigning}, nil
}

func (s *Service) userKeysClaim(r *fedRequest) (any, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httpapi.DecodeJSON(r.Body, &body); err != nil {
		return nil, err
	}
	for u := range body.OneTimeKeys {
		if !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			delete(body.OneTimeKeys, u)
		}
	}
	keys, err := s.deps.E2EE.ClaimKeys(r.Context(), body.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": keys}, nil
}

// publicRooms serves this server's room directory to other servers.
func (s *Service) publicRooms(r *fedRequest) (any, error) {
	var body struct {
		Limit  int    `json:"limit"`
		Since  string `json:"since"`
		Filter struct {
			GenericSearchTerm string `json:"generic_search_term"`
		} `json:"filter"`
	}
	if r.Method == http.MethodPost {
		if err := httpapi.DecodeJSON(r.Body, &body); err != nil {
			return nil, err
		}
	} else {
		q := r.URL.Query()
		body.Limit, _ = strconv.Atoi(q.Get("limit"))
		body.Since = q.Get("since")
	}
	return s.deps.Rooms.PublicRoomList(r.Context(), body.Filter.GenericSearchTerm, body.Limit, body.Since)
}

// timestampToEvent answers GET /timestamp_to_event for a server in the room.
func (s *Service) timestampToEvent(r *fedRequest) (any, error) {
	ctx := r.Context()
	roomID := r.Vars["roomId"]
	if err := s.requireInRoom(ctx, roomID, r.Origin); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return nil, mxerror.New(mxerror.InvalidParam, "ts must be a timestamp in milliseconds")
	}
	if d := q.Get("dir"); d != "f" && d != "b" {
		return nil, mxerror.New(mxerror.InvalidParam, "dir must be b or f")
	}
	id, at, err := s.deps.Rooms.EventAtTimeForServer(ctx, roomID, r.Origin, ts, q.Get("dir") == "f")
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": id, "origin_server_ts": at}, nil
}

// hierarchy answers GET /hierarchy/{roomId} for a space held here.
func (s *Service) hierarchy(r *fedRequest) (any, error) {
	roomID := r.Vars["roomId"]
	if err := s.requireACL(r.Context(), roomID, r.Origin); err != nil {
		return nil, err
	}
	suggested := r.URL.Query().Get("suggested_only") == "true"
	room, children, inaccessible, err := s.deps.Rooms.ServerHierarchy(r.Context(), roomID, suggested)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room": room, "children": children, "inaccessible_children": inaccessible}, nil
}

// requireFullState refuses, while this server's state of the room is partial, the
// requests that would pass that partial state on as the room's (a joiner or a
// server completing its own state would take it as whole): the asker turns to
// another server, as it does with Synapse.
func (s *Service) requireFullState(ctx context.Context, roomID string) error {
	// A completion under way (they take a second or two for small rooms) is
	// waited for briefly rather than sending the asker elsewhere at once.
	partial, err := s.deps.Rooms.AwaitFullState(ctx, roomID, 3*time.Second)
	if err != nil {
		return err
	}
	if partial {
		return mxerror.New(mxerror.NotFound, "the state of %s is not complete on this server yet", roomID)
	}
	return nil
}
