package rooms

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// MaxEventBytes is the spec's limit on a whole event's JSON.
const MaxEventBytes = 65536

// snapshotChainLimit bounds how many deltas resolving a snapshot reads; every
// snapshotChainLimit-th state event stores a full copy instead of a delta.
const snapshotChainLimit = 32

// Proto is an event a local user asks to send.
type Proto struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// Txn, when set, makes the send idempotent: the same device sending the same
	// transaction ID again gets the first event back.
	Txn *Txn
	// TS, if not zero, is the event's origin_server_ts instead of now: an
	// application service bridging a message from the past says when it was sent
	// (the ts query parameter).
	TS time.Time
}

// Txn identifies a client transaction.
type Txn struct {
	Localpart, DeviceID, ID string
}

// Sent is a committed event.
type Sent struct {
	EventID   string
	StreamPos int64
	Seq       int64
}

// head is a room's state at the moment a writer holds its lock.
type head struct {
	roomID   string
	version  gomatrixserverlib.IRoomVersion
	snapshot int64
	depth    int64
	seq      int64 // the room's latest room_seq
	prev     []string
}

// write builds, authorises and persists protos in order, each on top of the one
// before, in one transaction: all are committed or none. create, when not nil, is the
// new room's row, inserted first, and protos[0] its create event; roomID is then ""
// for room versions whose room ID is derived from the create event (v12), and the
// caller finds the ID in the first Sent.
func (s *Service) write(ctx context.Context, roomID string, create *roomRow, protos []Proto) ([]Sent, error) {
	if roomID != "" {
		// A derived room ID is new to everyone: nothing else can write to it yet.
		unlock := s.lockRoom(roomID)
		defer unlock()
	}
	var sent []Sent
	var notices []Notice
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		sent, notices = sent[:0], notices[:0]
		var createEvent gomatrixserverlib.PDU
		if create != nil {
			if roomID == "" {
				ev, err := s.buildCreate(ctx, tx, create.version, protos[0])
				if err != nil {
					return err
				}
				createEvent, roomID = ev, ev.RoomID().String()
			}
			if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)`,
				roomID, create.version, create.creator, now().UnixMilli()); err != nil {
				return fmt.Errorf("insert room: %w", err)
			}
		}
		h, err := loadHead(ctx, tx, roomID)
		if err != nil {
			return err
		}
		for i, p := range protos {
			if p.Txn != nil {
				var eventID string
				err := tx.QueryRow(ctx, `SELECT t.event_id FROM transaction_ids t WHERE t.localpart = $1 AND t.device_id = $2 AND t.txn_id = $3`,
					p.Txn.Localpart, p.Txn.DeviceID, p.Txn.ID).Scan(&eventID)
				if err == nil {
					var pos, seq int64
					if err := tx.QueryRow(ctx, `SELECT stream_pos, room_seq FROM events WHERE event_id = $1`, eventID).Scan(&pos, &seq); err != nil {
						return fmt.Errorf("read earlier transaction's event: %w", err)
					}
					sent = append(sent, Sent{EventID: eventID, StreamPos: pos, Seq: seq})
					continue
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("read transaction: %w", err)
				}
			}
			if create == nil {
				same, ok, err := sameAsCurrent(ctx, tx, roomID, p)
				if err != nil {
					return err
				}
				if ok {
					sent = append(sent, same)
					continue
				}
			}
			ev := createEvent
			if i > 0 || ev == nil {
				if ev, err = s.build(ctx, tx, h, p); err != nil {
					return err
				}
			}
			pos, err := s.persist(ctx, tx, h, ev, p.Txn)
			if err != nil {
				return err
			}
			sent = append(sent, Sent{EventID: ev.EventID(), StreamPos: pos, Seq: h.seq})
			notices = append(notices, Notice{RoomID: roomID, EventID: ev.EventID(), Type: ev.Type(), StateKey: ev.StateKey(), StreamPos: pos, Seq: h.seq})
		}
		_, err = tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1, depth = $2, seq = $3 WHERE room_id = $4`, h.snapshot, h.depth, h.seq, roomID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
	}
	for _, n := range notices {
		s.publish(n)
	}
	return sent, nil
}

// sameAsCurrent finds a state event that would change nothing: the room's current
// state already holds an event for the same type and state key, from the same
// sender, with the same content. Sending it again is a no-op that answers with the
// event already there (Synapse's deduplicate_state_event), so a client that repeats
// a state change or joins twice does not fill the timeline with copies.
func sameAsCurrent(ctx context.Context, tx *storage.Tx, roomID string, p Proto) (Sent, bool, error) {
	if p.StateKey == nil {
		return Sent{}, false, nil
	}
	var sent Sent
	var sender, raw string
	err := tx.QueryRow(ctx, `SELECT e.event_id, e.stream_pos, e.room_seq, e.sender, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = $3`, roomID, p.Type, *p.StateKey).Scan(&sent.EventID, &sent.StreamPos, &sent.Seq, &sender, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return Sent{}, false, nil
	}
	if err != nil {
		return Sent{}, false, fmt.Errorf("read current state %s/%s: %w", p.Type, *p.StateKey, err)
	}
	if sender != p.Sender {
		return Sent{}, false, nil
	}
	content := p.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	old := gjson.Get(raw, "content").Raw
	if old == "" {
		old = "{}"
	}
	a, errA := gomatrixserverlib.CanonicalJSON(content)
	b, errB := gomatrixserverlib.CanonicalJSON([]byte(old))
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		return Sent{}, false, nil
	}
	return sent, true, nil
}

// buildCreate builds the create event of a room whose ID is derived from it (room
// version 12, MSC4291): the event has no room_id, and the room's ID is "!" and the
// event ID's hash. Two creations with the same sender, content and millisecond would
// hash alike, so a taken ID is built again a millisecond later.
func (s *Service) buildCreate(ctx context.Context, tx *storage.Tx, version string, p Proto) (gomatrixserverlib.PDU, error) {
	impl, err := versionImpl(version)
	if err != nil {
		return nil, err
	}
	for {
		ev, err := s.build(ctx, tx, &head{version: impl}, p)
		if err != nil {
			return nil, err
		}
		var one int
		err = tx.QueryRow(ctx, `SELECT 1 FROM rooms WHERE room_id = $1`, ev.RoomID().String()).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ev, nil
		}
		if err != nil {
			return nil, fmt.Errorf("check room ID: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
}

type roomRow struct {
	version string
	creator string
}

// loadHead locks the room's row for the rest of the transaction and reads its head.
func loadHead(ctx context.Context, tx *storage.Tx, roomID string) (*head, error) {
	h := &head{roomID: roomID}
	var version string
	// The no-op update takes the row lock on PostgreSQL; SQLite's single writer
	// already excludes other writers.
	err := tx.QueryRow(ctx, `UPDATE rooms SET depth = depth WHERE room_id = $1 RETURNING room_version, current_snapshot, depth, seq`, roomID).
		Scan(&version, &h.snapshot, &h.depth, &h.seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock room: %w", err)
	}
	if h.version, err = versionImpl(version); err != nil {
		return nil, fmt.Errorf("room version %q: %w", version, err)
	}
	rows, err := tx.Query(ctx, `SELECT event_id FROM forward_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("read forward extremities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		h.prev = append(h.prev, id)
	}
	return h, rows.Err()
}

// build makes the signed event for p on top of h and checks it against the auth rules.
func (s *Service) build(ctx context.Context, tx *storage.Tx, h *head, p Proto) (gomatrixserverlib.PDU, error) {
	content := p.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	prev := h.prev
	if prev == nil {
		prev = []string{} // a nil slice would be sent as null
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID:   p.Sender,
		RoomID:     h.roomID,
		Type:       p.Type,
		StateKey:   p.StateKey,
		Content:    spec.RawJSON(content),
		Redacts:    p.Redacts,
		PrevEvents: prev,
		Depth:      h.depth + 1,
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "invalid event: %v", err)
	}
	authState, err := currentStateEvents(ctx, tx, h, needed.Tuples())
	if err != nil {
		return nil, err
	}
	provider, err := gomatrixserverlib.NewAuthEvents(authState)
	if err != nil {
		return nil, fmt.Errorf("auth events: %w", err)
	}
	refs, err := needed.AuthEventReferences(provider)
	if err != nil {
		return nil, fmt.Errorf("auth event references: %w", err)
	}
	if h.version.DomainlessRoomIDs() && h.roomID != "" {
		// The room ID names the create event; auth_events leave it out (MSC4291).
		createID := "$" + h.roomID[1:]
		refs = slices.DeleteFunc(refs, func(id string) bool { return id == createID })
	}
	if refs == nil {
		refs = []string{} // the builder refuses nil
	}
	proto.AuthEvents = refs
	ts := now()
	if !p.TS.IsZero() {
		ts = p.TS
	}
	ev, err := h.version.NewEventBuilderFromProtoEvent(&proto).Build(ts, spec.ServerName(s.cfg.ServerName),
		gomatrixserverlib.KeyID(s.cfg.Key.ID), s.cfg.Key.PrivateKey)
	if err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "cannot build event: %v", err)
	}
	if len(ev.JSON()) > MaxEventBytes {
		return nil, mxerror.New(mxerror.TooLarge, "event is larger than %d bytes", MaxEventBytes)
	}
	if err := gomatrixserverlib.Allowed(ev, provider, userIDForSender); err != nil {
		return nil, mxerror.New(mxerror.Forbidden, "%v", err)
	}
	return ev, nil
}

// currentStateEvents loads the room's current state events for the tuples.
func currentStateEvents(ctx context.Context, tx *storage.Tx, h *head, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	for _, t := range tuples {
		var raw string
		err := tx.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = $3`, h.roomID, t.EventType, t.StateKey).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read state %s/%s: %w", t.EventType, t.StateKey, err)
		}
		ev, err := h.version.NewEventFromTrustedJSON([]byte(raw), false)
		if err != nil {
			return nil, fmt.Errorf("parse stored event: %w", err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// persist stores ev with the state it produces and moves the room's head past it.
func (s *Service) persist(ctx context.Context, tx *storage.Tx, h *head, ev gomatrixserverlib.PDU, txn *Txn) (int64, error) {
	var pos int64
	if err := tx.NextStreamPos(ctx, "events", &pos); err != nil {
		return 0, err
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
	h.seq++
	if _, err := tx.Exec(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_ts,
		snapshot_before, membership, relates_to, rel_type, json, room_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		pos, ev.EventID(), h.roomID, ev.Type(), ev.StateKey(), string(ev.SenderID()), ev.Depth(), int64(ev.OriginServerTS()),
		h.snapshot, membership, relatesTo, relType, string(ev.JSON()), h.seq); err != nil {
		return 0, fmt.Errorf("insert event %s: %w", ev.EventID(), err)
	}
	if sk := ev.StateKey(); sk != nil {
		if err := s.addSnapshot(ctx, tx, h, pos, ev.Type(), *sk, ev.EventID()); err != nil {
			return 0, err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, stream_pos, membership)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, type, state_key) DO UPDATE SET
			event_id = excluded.event_id, stream_pos = excluded.stream_pos, membership = excluded.membership`,
			h.roomID, ev.Type(), *sk, ev.EventID(), pos, membership); err != nil {
			return 0, fmt.Errorf("update current state: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, h.roomID); err != nil {
		return 0, fmt.Errorf("replace forward extremities: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, h.roomID, ev.EventID()); err != nil {
		return 0, fmt.Errorf("replace forward extremities: %w", err)
	}
	if txn != nil {
		if _, err := tx.Exec(ctx, `INSERT INTO transaction_ids (localpart, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			txn.Localpart, txn.DeviceID, txn.ID, ev.EventID(), now().UnixMilli()); err != nil {
			return 0, fmt.Errorf("record transaction: %w", err)
		}
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := s.applyRedaction(ctx, tx, h, ev); err != nil {
			return 0, err
		}
	}
	h.prev = []string{ev.EventID()}
	h.depth = ev.Depth()
	return pos, nil
}

// addSnapshot records the state after a state event: a delta on the current
// snapshot, or a full copy when the chain is long.
func (s *Service) addSnapshot(ctx context.Context, tx *storage.Tx, h *head, pos int64, typ, stateKey, eventID string) error {
	var chain int64
	if h.snapshot != 0 {
		if err := tx.QueryRow(ctx, `SELECT chain_len FROM state_snapshots WHERE snapshot_id = $1`, h.snapshot).Scan(&chain); err != nil {
			return fmt.Errorf("read snapshot %d: %w", h.snapshot, err)
		}
	}
	full := h.snapshot == 0 || chain+1 >= snapshotChainLimit
	if full {
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent, chain_len) VALUES ($1, $2, NULL, 0)`, pos, h.roomID); err != nil {
			return fmt.Errorf("insert snapshot: %w", err)
		}
		// The current state before this event, then this event on top.
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id)
			SELECT $1, type, state_key, event_id FROM current_state WHERE room_id = $2 AND NOT (type = $3 AND state_key = $4)`,
			pos, h.roomID, typ, stateKey); err != nil {
			return fmt.Errorf("copy snapshot: %w", err)
		}
	} else {
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent, chain_len) VALUES ($1, $2, $3, $4)`,
			pos, h.roomID, h.snapshot, chain+1); err != nil {
			return fmt.Errorf("insert snapshot: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
		pos, typ, stateKey, eventID); err != nil {
		return fmt.Errorf("insert snapshot entry: %w", err)
	}
	h.snapshot = pos
	return nil
}

// applyRedaction strips the redacted event if the redaction's sender may redact it:
// its own sender, or anyone with the room's redact power level.
func (s *Service) applyRedaction(ctx context.Context, tx *storage.Tx, h *head, red gomatrixserverlib.PDU) error {
	target := red.Redacts()
	if target == "" {
		target = gjson.GetBytes(red.Content(), "redacts").String()
	}
	var raw, sender, roomID string
	var redactedBy sql.NullString
	err := tx.QueryRow(ctx, `SELECT json, sender, room_id, redacted_by FROM events WHERE event_id = $1`, target).Scan(&raw, &sender, &roomID, &redactedBy)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (roomID != h.roomID || redactedBy.Valid)) {
		return nil // unknown, elsewhere or already redacted: the redaction stands alone
	}
	if err != nil {
		return fmt.Errorf("read redaction target: %w", err)
	}
	if sender != string(red.SenderID()) {
		pl, err := currentStateEvents(ctx, tx, h, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomPowerLevels, StateKey: ""}})
		if err != nil {
			return err
		}
		if len(pl) == 0 {
			return nil
		}
		levels, err := pl[0].PowerLevels()
		if err != nil || levels.UserLevel(red.SenderID()) < levels.Redact {
			if !s.isLocal(string(red.SenderID())) {
				// Another server's redaction stays in the room, unapplied: the
				// auth rules let it in, only its effect needs the power.
				return nil
			}
			return mxerror.New(mxerror.Forbidden, "you may not redact other users' events")
		}
	}
	redacted, err := h.version.RedactEventJSON([]byte(raw))
	if err != nil {
		return fmt.Errorf("redact %s: %w", target, err)
	}
	_, err = tx.Exec(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`, string(redacted), red.EventID(), target)
	return err
}
