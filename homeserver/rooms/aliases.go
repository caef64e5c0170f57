package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// ResolveAlias returns the room an alias points to, or ErrNotFound.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, error) {
	var roomID string
	err := s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) && s.cfg.AliasMissing != nil && s.cfg.AliasMissing(ctx, alias) {
		err = s.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	return roomID, nil
}

// LookupAlias resolves an alias anywhere: local aliases here, other servers' by
// asking them over federation. It returns the room and servers to join it through.
func (s *Service) LookupAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, ok := strings.Cut(alias, ":")
	if !ok || !strings.HasPrefix(alias, "#") {
		return "", nil, mxerror.New(mxerror.InvalidParam, "%q is not a room alias", alias)
	}
	if server == s.cfg.ServerName || s.remote == nil {
		roomID, err := s.ResolveAlias(ctx, alias)
		if err != nil {
			return "", nil, err
		}
		servers, err := s.ServersInRoom(ctx, roomID)
		if err != nil {
			return "", nil, err
		}
		if !slices.Contains(servers, s.cfg.ServerName) {
			servers = append([]string{s.cfg.ServerName}, servers...)
		}
		return roomID, servers, nil
	}
	return s.remote.QueryAlias(ctx, server, alias)
}

// SetAlias points a new local alias at a room.
func (s *Service) SetAlias(ctx context.Context, alias, roomID, creator string) error {
	if !strings.HasPrefix(alias, "#") || !strings.HasSuffix(alias, ":"+s.cfg.ServerName) || len(alias) > 255 {
		return mxerror.New(mxerror.InvalidParam, "alias must be #name:%s", s.cfg.ServerName)
	}
	if s.cfg.AliasReserved != nil && s.cfg.AliasReserved(alias, creator) {
		return mxerror.New(mxerror.Exclusive, "room alias %s is reserved by an application service", alias)
	}
	if ok, err := s.roomExists(ctx, roomID); err != nil {
		return err
	} else if !ok {
		return mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	res, err := s.db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING`,
		alias, roomID, creator)
	if err != nil {
		return fmt.Errorf("set alias %s: %w", alias, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerror.New(mxerror.RoomInUse, "room alias %s already exists", alias)
	}
	return nil
}

// DeleteAlias removes an alias; its creator or a room moderator may.
func (s *Service) DeleteAlias(ctx context.Context, alias, userID string) error {
	var roomID, creator string
	err := s.db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return mxerror.New(mxerror.NotFound, "unknown alias %s", alias)
	}
	if err != nil {
		return fmt.Errorf("delete alias %s: %w", alias, err)
	}
	if creator != userID {
		level, need, err := s.PowerFor(ctx, roomID, userID, "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if level < need {
			return mxerror.New(mxerror.Forbidden, "only the alias's creator or a room moderator may delete it")
		}
	}
	if _, err = s.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias); err != nil {
		return fmt.Errorf("delete alias %s: %w", alias, err)
	}
	s.dropCanonicalAlias(ctx, roomID, alias, userID)
	return nil
}

// dropCanonicalAlias takes a deleted alias out of the room's m.room.canonical_alias
// (alias and alt_aliases), sent by the user who deleted it, as Synapse does, so the
// room stops advertising an alias that resolves nowhere. A user who may delete the
// alias but not change the room's state leaves the event as it is: the deletion
// stands either way, so a failure is only logged.
func (s *Service) dropCanonicalAlias(ctx context.Context, roomID, alias, userID string) {
	var raw string
	err := s.db.QueryRow(ctx, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = 'm.room.canonical_alias' AND c.state_key = ''`, roomID).Scan(&raw)
	if err != nil {
		return // no canonical alias (or it cannot be read): nothing names the alias
	}
	var content map[string]any
	if json.Unmarshal([]byte(gjson.Get(raw, "content").Raw), &content) != nil {
		return
	}
	changed := false
	if a, _ := content["alias"].(string); a == alias {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := alts[:0:0]
		for _, a := range alts {
			if a == alias {
				changed = true
				continue
			}
			kept = append(kept, a)
		}
		content["alt_aliases"] = kept
	}
	if !changed {
		return
	}
	empty := ""
	if _, err := s.Send(ctx, roomID, Proto{Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: mustJSON(content)}); err != nil {
		slog.Info("canonical alias keeps a deleted alias", "room_id", roomID, "alias", alias, "user_id", userID, "err", err)
	}
}

// Aliases lists a room's local aliases.
func (s *Service) Aliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("list aliases: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// SetVisibility publishes a room in the directory ("public") or hides it ("private").
func (s *Service) SetVisibility(ctx context.Context, roomID, visibility string) error {
	if visibility != "public" && visibility != "private" {
		return mxerror.New(mxerror.InvalidParam, "visibility must be public or private")
	}
	res, err := s.db.Exec(ctx, `UPDATE rooms SET visibility = $1 WHERE room_id = $2`, visibility, roomID)
	if err != nil {
		return fmt.Errorf("set visibility: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	return nil
}

// Publish sets a room's directory visibility for a user who may: one with the power
// to change the room's canonical alias.
func (s *Service) Publish(ctx context.Context, roomID, userID, visibility string) error {
	level, need, err := s.PowerFor(ctx, roomID, userID, "m.room.canonical_alias")
	if err != nil {
		return err
	}
	if m, err := s.CurrentMembership(ctx, roomID, userID); err != nil {
		return err
	} else if m != "join" || level < need {
		return mxerror.New(mxerror.Forbidden, "you may not change this room's directory listing")
	}
	return s.SetVisibility(ctx, roomID, visibility)
}

// Visibility returns whether a room is published in the directory.
func (s *Service) Visibility(ctx context.Context, roomID string) (string, error) {
	var v string
	err := s.db.QueryRow(ctx, `SELECT visibility FROM rooms WHERE room_id = $1`, roomID).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", mxerror.New(mxerror.NotFound, "unknown room %s", roomID)
	}
	return v, err
}
