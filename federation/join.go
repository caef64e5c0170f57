package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

// JoinRemote joins a local user to a room through another server (make_join, sign,
// send_join), checks what send_join returned — signatures, and the auth rules for
// every state and auth chain event — and imports the room.
func (s *Service) JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error {
	user, err := spec.NewUserID(userID, true)
	if err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a valid user ID", userID)
	}
	room, err := spec.NewRoomID(roomID)
	if err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a valid room ID", roomID)
	}
	var errs []error
	for _, server := range servers {
		s.joins.add(server, time.Now())
		jc := &joinClient{c: s.slow, partial: s.cfg.PartialStateJoins}
		res, ferr := gomatrixserverlib.PerformJoin(ctx, jc, gomatrixserverlib.PerformJoinInput{
			UserID: user, RoomID: room, ServerName: spec.ServerName(server), Content: content,
			PrivateKey: s.cfg.Key.PrivateKey, KeyID: gomatrixserverlib.KeyID(s.cfg.Key.ID), KeyRing: s.keyRing,
			EventProvider: s.remoteEvents(ctx, server), UserIDQuerier: userIDForSender,
			GetOrCreateSenderID: func(context.Context, spec.UserID, spec.RoomID, string) (spec.SenderID, ed25519.PrivateKey, error) {
				return "", nil, errors.New("pseudonymous room versions are not supported")
			},
			StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
		})
		if ferr != nil {
			errs = append(errs, fmt.Errorf("via %s: %w", server, ferr.Err))
			continue
		}
		version := res.JoinEvent.Version()
		state := res.StateSnapshot.GetStateEvents().TrustedEvents(version, false)
		chain := res.StateSnapshot.GetAuthEvents().TrustedEvents(version, false)
		var partial []string
		if jc.omitted {
			// The resident server left the members out: join now, fetch the
			// rest in the background (Synapse's "faster joins"), first from
			// the server joined through.
			partial = []string{server}
			for _, srv := range jc.servers {
				if !slices.Contains(partial, srv) {
					partial = append(partial, srv)
				}
			}
		}
		if err := s.deps.Rooms.ImportJoin(ctx, res.JoinEvent, state, chain, partial); err != nil {
			return err
		}
		if partial != nil {
			s.completeLater(rooms.PartialRoom{RoomID: roomID, JoinEventID: res.JoinEvent.EventID(), Servers: partial})
		}
		return nil
	}
	s.log.Info("remote join failed", "room_id", roomID, "user_id", userID, "err", errors.Join(errs...))
	// A resident server's refusal (forbidden, incompatible room version) reaches
	// the client as it was given.
	for _, err := range errs {
		if mx := remoteMatrixError(err); mx != nil {
			return mx
		}
	}
	return mxerror.New(mxerror.NotFound, "could not join %s through %v: %v", roomID, servers, errors.Join(errs...))
}

// remoteEvents fetches events that a send_join answer lacks from the server joined through.
func (s *Service) remoteEvents(ctx context.Context, server string) gomatrixserverlib.EventProvider {
	return func(version gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		impl, err := gomatrixserverlib.GetRoomVersion(version)
		if err != nil {
			return nil, err
		}
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			txn, err := s.client.GetEvent(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), id)
			if err != nil {
				return nil, err
			}
			for _, raw := range txn.PDUs {
				ev, err := impl.NewEventFromUntrustedJSON(raw)
				if err != nil {
					return nil, err
				}
				out = append(out, ev)
			}
		}
		return out, nil
	}
}

// joinClient adapts the federation client to what PerformJoin calls. With partial
// set it asks for partial state (omit_members) and remembers whether the answer left
// members out and which servers it named.
type joinClient struct {
	c       fclient.FederationClient
	partial bool // ask for partial state
	omitted bool
	servers []string
}

func (j *joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	return &res, err
}

func (j *joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, ev gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	if !j.partial {
		res, err := j.c.SendJoin(ctx, origin, s, ev)
		return &res, err
	}
	res, err := j.c.SendJoinPartialState(ctx, origin, s, ev)
	j.omitted, j.servers = res.MembersOmitted, res.ServersInRoom
	return &res, err
}

// completeLater fetches the whole state of a room joined with partial state, in the
// background, retrying with backoff until it has it or the server stops.
func (s *Service) completeLater(p rooms.PartialRoom) {
	s.sender.wg.Add(1)
	go func() {
		defer s.sender.wg.Done()
		ctx := s.sender.ctx
		for wait := time.Second; ; wait = min(2*wait, 5*time.Minute) {
			err := s.completePartial(ctx, p)
			if err == nil {
				s.log.Info("partial state completed", "room_id", p.RoomID)
				return
			}
			s.log.Info("completing partial state", "room_id", p.RoomID, "servers", p.Servers, "retry_in", wait, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
}

func (s *Service) completePartial(ctx context.Context, p rooms.PartialRoom) error {
	version, err := s.deps.Rooms.RoomVersion(ctx, p.RoomID)
	if err != nil {
		return err
	}
	var errs []error
	for _, server := range p.Servers {
		if server == s.cfg.ServerName {
			continue
		}
		res, err := s.slow.LookupState(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), p.RoomID, p.JoinEventID, version.Version())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		chain := res.AuthEvents.UntrustedEvents(version.Version())
		state := res.StateEvents.UntrustedEvents(version.Version())
		if err := s.storeVerified(ctx, chain); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		// Each state event must be of this room, signed, and allowed by its own
		// auth events (in the chain just stored, or held already): the room
		// engine combines what is left with what the partial period brought and
		// re-checks that period against it, so nothing here is taken on the
		// answering server's word alone.
		inChain := make(map[string]gomatrixserverlib.PDU, len(chain))
		for _, ev := range chain {
			inChain[ev.EventID()] = ev
		}
		var ok []gomatrixserverlib.PDU
		for _, ev := range state {
			if ev.RoomID().String() != p.RoomID || ev.StateKey() == nil {
				continue
			}
			if err := s.checkAuthEvent(ctx, ev, inChain); err != nil {
				s.log.Info("state event refused", "room_id", p.RoomID, "server", server, "event_id", ev.EventID(), "err", err)
				continue
			}
			ok = append(ok, ev)
		}
		return s.deps.Rooms.CompletePartialState(ctx, p.RoomID, p.JoinEventID, ok, chain)
	}
	return errors.Join(errs...)
}

// remoteMatrixError is the Matrix error another server answered with, if err is one.
func remoteMatrixError(err error) *mxerror.Error {
	var httpErr gomatrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Code < 400 || httpErr.Code >= 500 {
		return nil
	}
	var body map[string]any
	if json.Unmarshal(httpErr.Contents, &body) != nil {
		return nil
	}
	code, _ := body["errcode"].(string)
	msg, _ := body["error"].(string)
	if code == "" {
		return nil
	}
	delete(body, "errcode")
	delete(body, "error")
	if len(body) == 0 {
		body = nil
	}
	// Further fields (room_version of M_INCOMPATIBLE_ROOM_VERSION) go along.
	return &mxerror.Error{Code: mxerror.Code(code), Message: msg, Status: httpErr.Code, Extra: body}
}
