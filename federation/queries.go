package federation

// What the core asks of other servers besides joins and invites: aliases, room
// directories, history and profiles (the Remote interfaces of rooms and users).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/users"
)

// QueryAlias resolves another server's alias (/query/directory).
func (s *Service) QueryAlias(ctx context.Context, server, alias string) (string, []string, error) {
	res, err := s.client.LookupRoomAlias(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), alias)
	if err != nil {
		var httpErr gomatrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.Code == http.StatusNotFound {
			return "", nil, rooms.ErrNotFound
		}
		return "", nil, fmt.Errorf("alias %s from %s: %w", alias, server, err)
	}
	servers := make([]string, len(res.Servers))
	for i, srv := range res.Servers {
		servers[i] = string(srv)
	}
	return res.RoomID, servers, nil
}

// PublicRooms reads another server's room directory (/publicRooms).
func (s *Service) PublicRooms(ctx context.Context, server string, limit int, since, search string) (json.RawMessage, error) {
	origin := spec.ServerName(s.cfg.ServerName)
	var res fclient.RespPublicRooms
	var err error
	if search != "" {
		filter, _ := json.Marshal(map[string]string{"generic_search_term": search})
		res, err = s.client.GetPublicRoomsFiltered(ctx, origin, spec.ServerName(server), limit, since, string(filter), false, "")
	} else {
		res, err = s.client.GetPublicRooms(ctx, origin, spec.ServerName(server), limit, since, false, "")
	}
	if err != nil {
		return nil, mxerror.New(mxerror.NotFound, "cannot read %s's room directory: %v", server, err)
	}
	return json.Marshal(res)
}

// Backfill fetches events from before the given ones from a server in the room
// (/backfill), keeping those whose signatures check out.
func (s *Service) Backfill(ctx context.Context, roomID string, servers []string, before []string, limit int) ([]gomatrixserverlib.PDU, error) {
	version, err := s.deps.Rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, server := range servers {
		txn, err := s.client.Backfill(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), roomID, limit, before)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		var out []gomatrixserverlib.PDU
		for _, raw := range txn.PDUs {
			ev, err := parsePDU(version, roomID, raw)
			if err != nil {
				continue
			}
			if s.verify(ctx, ev) == nil {
				out = append(out, ev)
			}
		}
		return out, nil
	}
	return nil, errors.Join(errs...)
}

// QueryProfile asks a user's server for their profile (/query/profile).
func (s *Service) QueryProfile(ctx context.Context, userID string) (users.Profile, error) {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return users.Profile{}, users.ErrNotFound
	}
	res, err := s.client.LookupProfile(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), userID, "")
	if err != nil {
		var httpErr gomatrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.Code == http.StatusNotFound {
			return users.Profile{}, users.ErrNotFound
		}
		return users.Profile{}, fmt.Errorf("profile of %s from %s: %w", userID, server, err)
	}
	var p users.Profile
	if res.DisplayName != "" {
		p.DisplayName = &res.DisplayName
	}
	if res.AvatarURL != "" {
		p.AvatarURL = &res.AvatarURL
	}
	return p, nil
}

// Hierarchy asks the servers a space child names for its summary (/hierarchy).
func (s *Service) Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (rooms.HierarchyRoom, []rooms.HierarchyRoom, error) {
	var errs []error
	for _, server := range via {
		if server == s.cfg.ServerName {
			continue
		}
		res, err := s.client.RoomHierarchy(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), roomID, suggestedOnly)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		// The wire format and ours are the same JSON.
		var room rooms.HierarchyRoom
		var children []rooms.HierarchyRoom
		raw, _ := json.Marshal(res.Room)
		if err := json.Unmarshal(raw, &room); err != nil || room.RoomID != roomID {
			errs = append(errs, fmt.Errorf("%s: bad hierarchy answer", server))
			continue
		}
		raw, _ = json.Marshal(res.Children)
		json.Unmarshal(raw, &children)
		return room, children, nil
	}
	return rooms.HierarchyRoom{}, nil, errors.Join(errs...)
}
