package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hongyan/hongyan/homeserver/storage"
)

// Reads for other servers. The federation handlers check first that the asking
// server is in the room its request names (and allowed by the room's ACL); these
// calls then keep to that room and apply the history visibility rules for the
// server (visibleTo), as every read for a user does.

// RoomOfEvent returns the room of a stored event, or ErrNotFound.
func (s *Service) RoomOfEvent(ctx context.Context, eventID string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM events WHERE event_id = $1`, eventID).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read event %s: %w", eventID, err)
	}
	return roomID, nil
}

// EventFor returns one event of the room as it goes over federation, if the reader
// may see it; ErrNotFound if it is unknown, of another room, or hidden (the
// answers are the same, so a hidden event's existence does not leak).
func (s *Service) EventFor(ctx context.Context, roomID string, r Reader, eventID string) (gomatrixserverlib.PDU, error) {
	evs, err := s.pdus(ctx, s.db, []string{eventID})
	if err != nil {
		return nil, err
	}
	if evs, err = s.visiblePDUs(ctx, roomID, r, evs, false); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}

// EventAuthChain answers /event_auth: the auth chain of one event of the room, or
// ErrNotFound if the room holds no such event. The chain is the state that
// authorised the event (what /state_ids gives a server in the room anyway), so it
// is not filtered by history visibility, as in Synapse.
func (s *Service) EventAuthChain(ctx context.Context, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	if in, err := s.RoomOfEvent(ctx, eventID); err != nil {
		return nil, err
	} else if in != roomID {
		return nil, ErrNotFound
	}
	return s.AuthChain(ctx, []string{eventID})
}

// visiblePDUs applies the reader's history visibility to events: events of another
// room are left out, and hidden ones are redacted (redact, as /backfill and
// /get_missing_events answer, so the asker keeps a whole DAG) or left out.
func (s *Service) visiblePDUs(ctx context.Context, roomID string, r Reader, evs []gomatrixserverlib.PDU, redact bool) ([]gomatrixserverlib.PDU, error) {
	ids := make([]string, 0, len(evs))
	for _, ev := range evs {
		if ev.RoomID().String() == roomID {
			ids = append(ids, ev.EventID())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var rows []eventRow
	for start := 0; start < len(ids); start += 500 {
		marks, args := storage.InList(ids[start:min(start+500, len(ids))])
		args = append(args, roomID)
		batch, err := s.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+marks+`) AND room_id = $`+
			fmt.Sprint(len(args)), args...)
		if err != nil {
			return nil, err
		}
		rows = append(rows, batch...)
	}
	visible, err := s.filterRows(ctx, roomID, r, rows)
	if err != nil {
		return nil, err
	}
	stored := make(map[string]string, len(rows))
	for _, row := range rows {
		stored[row.eventID] = row.json
	}
	// shown: visible, and whether the filter pruned it (an erased sender's event,
	// an expired self-destructing one), in which case it goes out redacted.
	shown := make(map[string]bool, len(visible))
	for _, row := range visible {
		shown[row.eventID] = row.json != stored[row.eventID]
	}
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, ev := range evs {
		pruned, visible := shown[ev.EventID()]
		_, held := stored[ev.EventID()]
		switch {
		case !held:
			// Not an event of this room.
		case visible && pruned:
			ev.Redact()
			out = append(out, ev)
		case visible:
			out = append(out, ev)
		case redact:
			ev.Redact()
			out = append(out, ev)
		}
	}
	return out, nil
}
