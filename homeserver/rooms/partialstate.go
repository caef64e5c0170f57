package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// This file completes a partial-state join (MSC3706, "faster joins"). While a
// room's state here is partial its member events are missing, so the events that
// arrive meanwhile are checked against their own auth events only: a banned user
// could name their old join as an auth event and be let in. When the whole state
// arrives, the completion therefore does what a server that had the state all along
// would have done: the state before the join becomes the fetched state combined
// with what send_join gave (resolved where they disagree), and every event accepted
// since is replayed in the order it arrived — checked at the state before it, then
// at the room's state when it arrived — and rejected or soft-failed if it fails.
// State resolution (the room version's, v2 for all current ones) joins the forks
// on the way, and the room's current state is the state after its new forward
// extremities, not the partial one with the fetched entries added where free.
//
// What clients see: an event rejected or soft-failed by the replay leaves the
// timeline (it becomes an outlier under a fresh negative position and seq, as if
// it had been refused on arrival), so /messages, sync and native history no longer
// return it (asked for by ID it is found as any refused event is); a client that
// already received it keeps its copy (Matrix has no retraction), and a native
// client sees a gap at its seq. The current state
// (/state, /members, auth of new events) is right at once, and a sync across the
// completion that does not lazy-load members gets the room's whole state again.
// A redaction applied during the partial period and rejected by the replay stays
// applied: the redacted content is not kept.

// CompletePartialState fills in the state a partial-state join left out: the state
// before the join as a server in the room reported it (signatures and auth rules
// checked by the caller), and its auth chain. See the top of this file.
func (s *Service) CompletePartialState(ctx context.Context, roomID, joinEventID string, state, authChain []gomatrixserverlib.PDU) error {
	impl, err := s.RoomVersion(ctx, roomID)
	if err != nil {
		return err
	}
	// Stored first, in their own transaction: state resolution reads auth chains
	// outside the completion's transaction.
	if err := s.StoreOutliers(ctx, append(slices.Clone(authChain), state...)); err != nil {
		return fmt.Errorf("complete %s: %w", roomID, err)
	}
	unlock := s.lockRoom(roomID)
	defer unlock()
	var res replayResult
	completed := false
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		completed = false
		partial, _, err := s.partialState(ctx, tx, roomID)
		if err != nil || !partial {
			return err // completed already (another fetch got there first)
		}
		var joinBefore, joinPos int64
		if err := tx.QueryRow(ctx, `SELECT snapshot_before, stream_pos FROM events WHERE event_id = $1 AND room_id = $2`,
			joinEventID, roomID).Scan(&joinBefore, &joinPos); err != nil {
			return fmt.Errorf("read join %s: %w", joinEventID, err)
		}
		given, err := s.snapshotState(ctx, joinBefore, nil)
		if err != nil {
			return err
		}
		before, err := s.mergeJoinState(ctx, tx, impl, given, stateMap(state))
		if err != nil {
			return err
		}
		// The join's snapshot is rewritten in place: every snapshot taken since
		// is a delta chain ending in it, and the replay below fixes those that
		// are not.
		if _, err := tx.Exec(ctx, `DELETE FROM state_snapshot_entries WHERE snapshot_id = $1`, joinBefore); err != nil {
			return fmt.Errorf("complete snapshot: %w", err)
		}
		if err := insertSnapshotEntries(ctx, tx, joinBefore, before); err != nil {
			return err
		}
		if res, err = s.replayPartial(ctx, tx, impl, roomID, joinEventID, joinPos, before); err != nil {
			return err
		}
		// The completion takes a position of the events stream (with no event at
		// it) so that syncs across it send the room's whole state.
		var pos int64
		if err := tx.NextStreamPos(ctx, "events", &pos); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE rooms SET partial_state = FALSE, partial_servers = '[]', state_completed_pos = $2 WHERE room_id = $1`, roomID, pos); err != nil {
			return err
		}
		completed = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("complete %s: %w", roomID, err)
	}
	if !completed {
		return nil
	}
	if len(res.rejected)+len(res.softFailed) > 0 {
		slog.Warn("partial-state completion refused events accepted on partial state",
			"room_id", roomID, "rejected", res.rejected, "soft_failed", res.softFailed)
	}
	s.publishTo(StateCompletedSubject, roomID)
	return nil
}

// mergeJoinState combines the state before the join as send_join gave it (partial)
// with the same state fetched whole: the fetched entries fill in what partial
// lacks, and where the two name different events for one key — one of the servers
// asked is wrong, or lying — state resolution decides between them.
func (s *Service) mergeJoinState(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, partial, fetched map[[2]string]string) (map[[2]string]string, error) {
	merged := maps.Clone(fetched)
	conflict := false
	for k, id := range partial {
		if f, ok := fetched[k]; !ok {
			merged[k] = id
		} else if f != id {
			conflict = true
		}
	}
	if !conflict {
		return merged, nil
	}
	return s.resolve(ctx, tx, impl, []map[[2]string]string{partial, merged})
}

// replayResult says what the replay of a partial-state period refused.
type replayResult struct {
	rejected, softFailed []string
}

// replayPartial re-checks, in arrival order, the timeline events after the join
// against the state before them computed from before (the whole state before the
// join), rewrites their state snapshots, moves the events that fail out of the
// timeline, and sets the room's current state and forward extremities to what the
// replay ends with.
func (s *Service) replayPartial(ctx context.Context, tx *storage.Tx, impl gomatrixserverlib.IRoomVersion, roomID, joinID string, joinPos int64, before map[[2]string]string) (replayResult, error) {
	var res replayResult
	type row struct {
		id            string
		pos, snapshot int64
		ev            gomatrixserverlib.PDU
	}
	rows, err := tx.Query(ctx, `SELECT event_id, stream_pos, snapshot_before, json, redacted_by IS NOT NULL FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND NOT outlier ORDER BY stream_pos`, roomID, joinPos)
	if err != nil {
		return res, fmt.Errorf("read events since the join: %w", err)
	}
	var evs []row
	for rows.Next() {
		var r row
		var raw string
		var redacted bool
		if err := rows.Scan(&r.id, &r.pos, &r.snapshot, &raw, &redacted); err != nil {
			rows.Close()
			return res, err
		}
		if r.ev, err = impl.NewEventFromTrustedJSONWithEventID(r.id, []byte(raw), redacted); err != nil {
			rows.Close()
			return res, fmt.Errorf("parse stored event %s: %w", r.id, err)
		}
		evs = append(evs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}

	// Events refused on arrival during the partial period stay refused (their
	// own auth events did not allow them) but are placed after snapshots the
	// replay may change: read them now, fix them at the end.
	outliers := map[string]int64{}
	orows, err := tx.Query(ctx, `SELECT event_id, snapshot_before FROM events WHERE room_id = $1 AND outlier
		AND (rejected OR soft_failed) AND snapshot_before <> 0`, roomID)
	if err != nil {
		return res, fmt.Errorf("read refused events: %w", err)
	}
	for orows.Next() {
		var id string
		var snap int64
		if err := orows.Scan(&id, &snap); err != nil {
			orows.Close()
			return res, err
		}
		outliers[id] = snap
	}
	orows.Close()
	if err := orows.Err(); err != nil {
		return res, err
	}

	joins, err := s.pdus(ctx, tx, []string{joinID})
	if err != nil {
		return res, err
	}
	if len(joins) != 1 || joins[0].StateKey() == nil {
		return res, fmt.Errorf("join %s: %w", joinID, ErrNotFound)
	}
	// The state after each replayed event, and the snapshot that records it
	// (0: none yet). The join's own snapshot (its stream position) is a delta on
	// the one just rewritten, so it is right already.
	joinState := (&stateView{base: before}).with([2]string{spec.MRoomMember, *joins[0].StateKey()}, joinID)
	after := map[string]*stateView{joinID: joinState}
	afterSnap := map[string]int64{joinID: joinPos}
	// snapView is what each snapshot the replay wrote or checked means now;
	// remap says which snapshot replaces one whose meaning changed, for the
	// outliers placed after it.
	snapView := map[int64]*stateView{joinPos: joinState}
	remap := map[int64]int64{}
	extremities := []string{joinID}
	current, currentSnap := joinState, joinPos

	// stateAfter is the state after event id, from the replay or as stored,
	// and the snapshot recording it (0: none); nil when it is not known here.
	stateAfter := func(id string) (*stateView, int64, error) {
		if v := after[id]; v != nil {
			return v, afterSnap[id], nil
		}
		var snap, pos int64
		var typ string
		var sk sql.NullString
		var rejected, softFailed bool
		err := tx.QueryRow(ctx, `SELECT snapshot_before, stream_pos, type, state_key, rejected, soft_failed FROM events WHERE event_id = $1`, id).
			Scan(&snap, &pos, &typ, &sk, &rejected, &softFailed)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && pos < 0 && !((rejected || softFailed) && snap != 0)) {
			return nil, 0, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read prev event %s: %w", id, err)
		}
		if r, ok := remap[snap]; ok {
			snap = r
		}
		v := snapView[snap]
		if v == nil {
			m, err := s.snapshotState(ctx, snap, nil)
			if err != nil {
				return nil, 0, err
			}
			v = &stateView{base: m}
		}
		if sk.Valid && !rejected {
			return v.with([2]string{typ, sk.String}, id), 0, nil
		}
		return v, snap, nil
	}

	for _, r := range evs {
		ev := r.ev
		prevs := ev.PrevEventIDs()
		var st *stateView
		var snap int64
		var views []*stateView
		for _, p := range prevs {
			v, id, err := stateAfter(p)
			if err != nil {
				return res, err
			}
			if v == nil {
				views = nil
				break
			}
			st, snap = v, id
			views = append(views, v)
		}
		switch {
		case len(views) == 0:
			// Built on events this server never placed: the state it was given
			// on arrival (whole, from another server) stands.
			snap = r.snapshot
			if r, ok := remap[snap]; ok {
				snap = r
			}
			if st = snapView[snap]; st == nil {
				m, err := s.snapshotState(ctx, snap, nil)
				if err != nil {
					return res, err
				}
				st = &stateView{base: m}
			}
		case len(views) > 1:
			sets := make([]map[[2]string]string, len(views))
			for i, v := range views {
				sets[i] = v.flat()
			}
			resolved, err := s.resolve(ctx, tx, impl, sets)
			if err != nil {
				return res, err
			}
			st, snap = &stateView{base: resolved}, 0
		}
		if snap == 0 {
			var err error
			if snap, err = s.fullSnapshot(ctx, tx, roomID, st.flat()); err != nil {
				return res, err
			}
		}
		snapView[snap] = st

		rejected, softFailed := false, false
		if why, err := s.allowedIn(ctx, tx, ev, st); err != nil {
			return res, err
		} else if why != nil {
			rejected = true
		} else if !sameSet(prevs, extremities) {
			// Soft failure, as on arrival: allowed where it was built, but not
			// by the room's state when it came.
			if why, err := s.allowedIn(ctx, tx, ev, current); err != nil {
				return res, err
			} else if why != nil {
				softFailed = true
			}
		}

		stAfter, snapAfter := st, snap
		if sk := ev.StateKey(); sk != nil {
			if rejected {
				// The state after a rejected event is the state before it.
				remap[r.pos] = snap
				snapView[r.pos] = st
			} else {
				stAfter = st.with([2]string{ev.Type(), *sk}, r.id)
				if err := s.rewriteSnapshot(ctx, tx, roomID, r.pos, snap, stAfter, ev.Type(), *sk, r.id); err != nil {
					return res, err
				}
				snapAfter = r.pos
				snapView[r.pos] = stAfter
			}
		}
		after[r.id], afterSnap[r.id] = stAfter, snapAfter
		if snap != r.snapshot {
			if _, ok := remap[r.snapshot]; !ok {
				remap[r.snapshot] = snap
			}
		}

		if rejected || softFailed {
			// Out of the timeline, as if refused on arrival: a fresh outlier
			// position and seq, kept in the DAG with the state before it.
			var n int64
			if err := tx.NextStreamPos(ctx, "outliers", &n); err != nil {
				return res, err
			}
			if _, err := tx.Exec(ctx, `UPDATE events SET stream_pos = $1, room_seq = $1, outlier = TRUE, rejected = $2, soft_failed = $3,
				snapshot_before = $4 WHERE event_id = $5`, -n, rejected, softFailed, snap, r.id); err != nil {
				return res, fmt.Errorf("refuse %s: %w", r.id, err)
			}
			if rejected {
				res.rejected = append(res.rejected, r.id)
			} else {
				res.softFailed = append(res.softFailed, r.id)
			}
			continue
		}
		if snap != r.snapshot {
			if _, err := tx.Exec(ctx, `UPDATE events SET snapshot_before = $1 WHERE event_id = $2`, snap, r.id); err != nil {
				return res, fmt.Errorf("update state before %s: %w", r.id, err)
			}
		}

		// The room's head moves past it, as in receive: the other extremities
		// stay (minus those it succeeds through refused events) and their
		// states are resolved with the state after it.
		behind, err := s.behindFailed(ctx, tx, prevs)
		if err != nil {
			return res, err
		}
		others := slices.DeleteFunc(slices.Clone(extremities), func(id string) bool { return slices.Contains(prevs, id) || behind[id] })
		extremities = append(others, r.id)
		if len(others) == 0 {
			current, currentSnap = stAfter, snapAfter
			continue
		}
		sets := []map[[2]string]string{stAfter.flat()}
		for _, o := range others {
			sets = append(sets, after[o].flat())
		}
		resolved, err := s.resolve(ctx, tx, impl, sets)
		if err != nil {
			return res, err
		}
		current, currentSnap = &stateView{base: resolved}, 0
	}

	state := current.flat()
	if currentSnap == 0 {
		if currentSnap, err = s.fullSnapshot(ctx, tx, roomID, state); err != nil {
			return res, err
		}
	}
	if err := s.replaceCurrentState(ctx, tx, roomID, state); err != nil {
		return res, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM forward_extremities WHERE room_id = $1`, roomID); err != nil {
		return res, fmt.Errorf("replace forward extremities: %w", err)
	}
	for _, id := range extremities {
		if _, err := tx.Exec(ctx, `INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)`, roomID, id); err != nil {
			return res, fmt.Errorf("replace forward extremities: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE rooms SET current_snapshot = $1 WHERE room_id = $2`, currentSnap, roomID); err != nil {
		return res, err
	}
	for id, old := range outliers {
		if snap, ok := remap[old]; ok && snap != old {
			if _, err := tx.Exec(ctx, `UPDATE events SET snapshot_before = $1 WHERE event_id = $2`, snap, id); err != nil {
				return res, fmt.Errorf("update state before %s: %w", id, err)
			}
		}
	}
	return res, nil
}

// rewriteSnapshot makes snapshot id the state after a state event (typ, stateKey,
// eventID) on top of parent: a delta on parent, or a full copy of state when the
// chain would grow past snapshotChainLimit.
func (s *Service) rewriteSnapshot(ctx context.Context, tx *storage.Tx, roomID string, id, parent int64, state *stateView, typ, stateKey, eventID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM state_snapshot_entries WHERE snapshot_id = $1`, id); err != nil {
		return fmt.Errorf("rewrite snapshot %d: %w", id, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM state_snapshots WHERE snapshot_id = $1`, id); err != nil {
		return fmt.Errorf("rewrite snapshot %d: %w", id, err)
	}
	var chain int64
	err := tx.QueryRow(ctx, `SELECT chain_len FROM state_snapshots WHERE snapshot_id = $1`, parent).Scan(&chain)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read snapshot %d: %w", parent, err)
	}
	if errors.Is(err, sql.ErrNoRows) || chain+1 >= snapshotChainLimit {
		if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent, chain_len) VALUES ($1, $2, NULL, 0)`, id, roomID); err != nil {
			return fmt.Errorf("rewrite snapshot %d: %w", id, err)
		}
		return insertSnapshotEntries(ctx, tx, id, state.flat())
	}
	if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent, chain_len) VALUES ($1, $2, $3, $4)`,
		id, roomID, parent, chain+1); err != nil {
		return fmt.Errorf("rewrite snapshot %d: %w", id, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
		id, typ, stateKey, eventID); err != nil {
		return fmt.Errorf("rewrite snapshot %d: %w", id, err)
	}
	return nil
}

// allowedIn checks ev against the auth rules at state. It returns why the rules
// refuse it (nil: allowed), and separately an error reading the events.
func (s *Service) allowedIn(ctx context.Context, tx *storage.Tx, ev gomatrixserverlib.PDU, state *stateView) (why, err error) {
	var ids []string
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
		if id, ok := state.get([2]string{t.EventType, t.StateKey}); ok {
			ids = append(ids, id)
		}
	}
	evs, err := s.pdus(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	return allowedBy(ev, evs), nil
}

// stateView is a room state as a shared base and the keys set on top of it: the
// replay derives one per state event without copying a large room's members each
// time. Neither map is written after the view is made.
type stateView struct {
	base, delta map[[2]string]string
}

// flattenAt is the delta size at which with folds the delta into a new base.
const flattenAt = 256

func (v *stateView) get(k [2]string) (string, bool) {
	if id, ok := v.delta[k]; ok {
		return id, true
	}
	id, ok := v.base[k]
	return id, ok
}

// with is the view with k set to id.
func (v *stateView) with(k [2]string, id string) *stateView {
	if len(v.delta) >= flattenAt {
		base := v.flat()
		base[k] = id
		return &stateView{base: base}
	}
	delta := make(map[[2]string]string, len(v.delta)+1)
	maps.Copy(delta, v.delta)
	delta[k] = id
	return &stateView{base: v.base, delta: delta}
}

// flat is the whole state as a new map.
func (v *stateView) flat() map[[2]string]string {
	out := make(map[[2]string]string, len(v.base)+len(v.delta))
	maps.Copy(out, v.base)
	maps.Copy(out, v.delta)
	return out
}
