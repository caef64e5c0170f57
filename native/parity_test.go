package native_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// both is one user on both front-ends: a Matrix client and a native session with
// the same access token.
type both struct {
	mx  *testserver.Client
	nat *sdk.Client
}

// mxCall sends a Matrix request and returns its decoded body and errcode ("" on 200).
func mxCall(c *testserver.Client, method, path string, body any) (any, string) {
	if body == nil && method != "GET" {
		body = map[string]any{}
	}
	status, data := c.Raw(method, path, body)
	var out any
	_ = json.Unmarshal(data, &out)
	if status == 200 {
		return out, ""
	}
	if m, ok := out.(map[string]any); ok {
		if code, ok := m["errcode"].(string); ok {
			return nil, code
		}
	}
	return nil, fmt.Sprintf("HTTP %d %s", status, data)
}

// asList is v as a list, for a Matrix reply's array field.
func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// field is out[key], for a Matrix reply decoded as a map.
func field(out any, key string) any {
	m, _ := out.(map[string]any)
	return m[key]
}

// stateKeys lists a state reply's (type, state_key) pairs, sorted.
func stateKeys(evs []native.Event) []string {
	out := []string{}
	for _, e := range evs {
		if e.StateKey != nil {
			out = append(out, e.Type+"|"+*e.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

// asEvents re-decodes a Matrix list of events as native events to compare them.
func asEvents(v any) []native.Event {
	raw, _ := json.Marshal(v)
	var evs []native.Event
	_ = json.Unmarshal(raw, &evs)
	return evs
}

// bodiesOf lists the messages' bodies ("-" for a pruned one), in order.
func bodiesOf(evs []native.Event) []string {
	out := []string{}
	for _, e := range evs {
		if e.Type == "m.room.message" {
			b, ok := e.Content["body"].(string)
			if !ok {
				b = "-"
			}
			out = append(out, b)
		}
	}
	return out
}

func eventIDs(evs []native.Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

// TestParity: every native op that has a Matrix twin gives the same result and the
// same errcode for the same input through both front-ends, because both call one
// core function. Each case runs its Matrix form, then its native form, in table
// order (later cases see what earlier ones did); cases whose two forms must act
// on different objects (two redactions, two joiners) say so.
func TestParity(t *testing.T) {
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		hs := srv.Config.ServerName
		user := func(name string) both {
			c := srv.Register(t, name, "pw")
			return both{mx: c, nat: dial(t, srv, sdk.Options{Token: c.Token})}
		}
		alice, bob, carol := user("alice"), user("bob"), user("carol")
		// dave joins, leaves and is invited through Matrix, erin through native.
		dave, erin := user("dave"), user("erin")

		var created map[string]string
		alice.mx.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "Parity", "room_alias_name": "parity"}, &created)
		room := created["room_id"]
		alice.mx.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"}, &created)
		private := created["room_id"]
		alice.mx.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat",
			"initial_state": []map[string]any{{"type": "m.room.history_visibility", "state_key": "",
				"content": map[string]any{"history_visibility": "world_readable"}}}}, &created)
		readable := created["room_id"]
		alice.mx.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(readable)+"/send/m.room.message/"+sdk.TxnID(),
			map[string]any{"msgtype": "m.text", "body": "for anyone to read"}, nil)
		// A message whose self-destruct time has passed (MSC2228): both
		// front-ends show it pruned.
		alice.mx.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(readable)+"/send/m.room.message/"+sdk.TxnID(),
			map[string]any{"msgtype": "m.text", "body": "gone", "org.matrix.self_destruct_after": 1}, nil)
		bob.mx.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		bob.mx.MustDo("PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.mx.UserID)+"/displayname", map[string]any{"displayname": "Bob"}, nil)
		say := func(c *testserver.Client, body string) string {
			var out map[string]string
			c.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/"+sdk.TxnID(),
				map[string]any{"msgtype": "m.text", "body": body}, &out)
			return out["event_id"]
		}
		msg := say(alice.mx, "alice's message")
		redactMx, redactNat := say(alice.mx, "redact me (Matrix)"), say(alice.mx, "redact me (native)")

		var grp map[string]string
		alice.mx.MustDo("POST", "/_matrix/client/unstable/im.hongyan/groups", map[string]any{"name": "Parity group", "members": []string{bob.mx.UserID}}, &grp)
		group := grp["room_id"]
		bob.mx.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(group), map[string]any{}, nil)
		im := "/_matrix/client/unstable/im.hongyan"

		r := url.PathEscape(room)
		sendPath := func(roomID string) string {
			return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + sdk.TxnID()
		}
		text := map[string]any{"msgtype": "m.text", "body": "hi"}
		editOf := func(eventID string) map[string]any {
			return map[string]any{"msgtype": "m.text", "body": "* edited",
				"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
				"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": eventID}}
		}
		nat := func(v any, err error) (any, string) { return v, errCode(err) }
		httpKind := "http"
		gateway := "https://push.example.org/_matrix/push/v1/notify"
		mxPusher := func(pushkey string, kind any, data map[string]any) map[string]any {
			body := map[string]any{"app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "Example",
				"device_display_name": "Phone", "lang": "en", "data": data}
			if kind != "absent" {
				body["kind"] = kind
			}
			return body
		}
		natPusher := func(pushkey string, kind *string, data map[string]any) native.PushersSet {
			return native.PushersSet{AppID: "org.example.app", PushKey: pushkey, Kind: kind, AppDisplayName: "Example",
				DeviceDisplayName: "Phone", Lang: "en", Data: data}
		}
		pushkeysOf := func(list any) []string {
			out := []string{}
			raw, _ := json.Marshal(list)
			var ps []native.Pusher
			_ = json.Unmarshal(raw, &ps)
			for _, p := range ps {
				out = append(out, p.PushKey+" "+fmt.Sprint(p.Data["url"]))
			}
			slices.Sort(out)
			return out
		}
		ok := func(_ any, code string) (any, string) { return nil, code } // success compared, not the new event

		cases := []struct {
			name   string
			code   string // the errcode both must give; "" for success
			matrix func() (any, string)
			native func() (any, string)
		}{
			{"send", "",
				func() (any, string) { return ok(mxCall(bob.mx, "PUT", sendPath(room), text)) },
				func() (any, string) { return ok(nat(bob.nat.SendText(ctx, room, "hi"))) }},
			{"send to a malformed room ID", "M_INVALID_PARAM",
				func() (any, string) { return ok(mxCall(bob.mx, "PUT", sendPath("nope"), text)) },
				func() (any, string) { return ok(nat(bob.nat.SendText(ctx, "nope", "hi"))) }},
			{"send to an unknown room", "M_NOT_FOUND",
				func() (any, string) { return ok(mxCall(bob.mx, "PUT", sendPath("!nowhere:"+hs), text)) },
				func() (any, string) { return ok(nat(bob.nat.SendText(ctx, "!nowhere:"+hs, "hi"))) }},
			{"send by a stranger", "M_FORBIDDEN",
				func() (any, string) { return ok(mxCall(carol.mx, "PUT", sendPath(room), text)) },
				func() (any, string) { return ok(nat(carol.nat.SendText(ctx, room, "hi"))) }},
			{"edit one's own message", "",
				func() (any, string) { return ok(mxCall(alice.mx, "PUT", sendPath(room), editOf(msg))) },
				func() (any, string) { return ok(nat(alice.nat.Edit(ctx, room, msg, "edited"))) }},
			{"edit another's message", "M_FORBIDDEN",
				func() (any, string) { return ok(mxCall(bob.mx, "PUT", sendPath(room), editOf(msg))) },
				func() (any, string) { return ok(nat(bob.nat.Edit(ctx, room, msg, "edited"))) }},
			{"edit an unknown event", "M_NOT_FOUND",
				func() (any, string) { return ok(mxCall(alice.mx, "PUT", sendPath(room), editOf("$nothing"))) },
				func() (any, string) { return ok(nat(alice.nat.Edit(ctx, room, "$nothing", "edited"))) }},
			{"redact one's own message (one each)", "",
				func() (any, string) {
					return ok(mxCall(alice.mx, "PUT", "/_matrix/client/v3/rooms/"+r+"/redact/"+url.PathEscape(redactMx)+"/"+sdk.TxnID(), nil))
				},
				func() (any, string) { return ok(nat(alice.nat.Redact(ctx, room, redactNat, ""))) }},
			{"redact another's message without power", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(bob.mx, "PUT", "/_matrix/client/v3/rooms/"+r+"/redact/"+url.PathEscape(msg)+"/"+sdk.TxnID(), nil))
				},
				func() (any, string) { return ok(nat(bob.nat.Redact(ctx, room, msg, ""))) }},
			{"redact an unknown event", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(alice.mx, "PUT", "/_matrix/client/v3/rooms/"+r+"/redact/%24nothing/"+sdk.TxnID(), nil))
				},
				func() (any, string) { return ok(nat(alice.nat.Redact(ctx, room, "$nothing", ""))) }},
			{"react", "",
				func() (any, string) {
					return ok(mxCall(bob.mx, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.reaction/"+sdk.TxnID(),
						map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": msg, "key": "👍"}}))
				},
				func() (any, string) { return ok(nat(bob.nat.React(ctx, room, msg, "🎉"))) }},
			{"join by room ID (dave, erin)", "",
				func() (any, string) {
					out, code := mxCall(dave.mx, "POST", "/_matrix/client/v3/join/"+r, nil)
					return field(out, "room_id"), code
				},
				func() (any, string) { return nat(erin.nat.Join(ctx, room)) }},
			{"leave (dave, erin)", "",
				func() (any, string) { return ok(mxCall(dave.mx, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", nil)) },
				func() (any, string) { return ok(nat(nil, erin.nat.Leave(ctx, room))) }},
			{"join by alias (dave, erin)", "",
				func() (any, string) {
					out, code := mxCall(dave.mx, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#parity:"+hs), nil)
					return field(out, "room_id"), code
				},
				func() (any, string) { return nat(erin.nat.Join(ctx, "#parity:"+hs)) }},
			{"join by an unknown alias", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#nope:"+hs), nil))
				},
				func() (any, string) { return ok(nat(carol.nat.Join(ctx, "#nope:"+hs))) }},
			{"join neither ID nor alias", "M_INVALID_PARAM",
				func() (any, string) { return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/join/nope", nil)) },
				func() (any, string) { return ok(nat(carol.nat.Join(ctx, "nope"))) }},
			{"join a private room uninvited", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(private), nil))
				},
				func() (any, string) { return ok(nat(carol.nat.Join(ctx, private))) }},
			{"leave a malformed room ID", "M_INVALID_PARAM",
				func() (any, string) { return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/rooms/nope/leave", nil)) },
				func() (any, string) { return ok(nat(nil, carol.nat.Leave(ctx, "nope"))) }},
			{"invite (dave, erin)", "",
				func() (any, string) {
					return ok(mxCall(alice.mx, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/invite", map[string]any{"user_id": dave.mx.UserID}))
				},
				func() (any, string) { return ok(nat(nil, alice.nat.Invite(ctx, private, erin.mx.UserID))) }},
			{"invite by a stranger", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/invite", map[string]any{"user_id": bob.mx.UserID}))
				},
				func() (any, string) { return ok(nat(nil, carol.nat.Invite(ctx, private, bob.mx.UserID))) }},
			{"history and /messages", "",
				func() (any, string) {
					out, code := mxCall(bob.mx, "GET", "/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=10", nil)
					return eventIDs(asEvents(field(out, "chunk"))), code
				},
				func() (any, string) {
					h, err := bob.nat.History(ctx, room, 0, 10)
					return eventIDs(h.Events), errCode(err)
				}},
			{"history of a stranger", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/messages?dir=b", nil))
				},
				func() (any, string) { return ok(nat(carol.nat.History(ctx, private, 0, 10))) }},
			{"history of a world-readable room, by a stranger", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(readable)+"/messages?dir=b&limit=10", nil)
					return eventIDs(asEvents(field(out, "chunk"))), code
				},
				func() (any, string) {
					h, err := carol.nat.History(ctx, readable, 0, 10)
					return eventIDs(h.Events), errCode(err)
				}},
			{"history of a world-readable room, its bodies", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(readable)+"/messages?dir=b&limit=10", nil)
					return bodiesOf(asEvents(field(out, "chunk"))), code
				},
				func() (any, string) {
					h, err := carol.nat.History(ctx, readable, 0, 10)
					return bodiesOf(h.Events), errCode(err)
				}},
			{"history of a malformed room ID", "M_INVALID_PARAM",
				func() (any, string) {
					return ok(mxCall(bob.mx, "GET", "/_matrix/client/v3/rooms/nope/messages?dir=b", nil))
				},
				func() (any, string) { return ok(nat(bob.nat.History(ctx, "nope", 0, 10))) }},
			{"state and /state", "",
				func() (any, string) {
					out, code := mxCall(bob.mx, "GET", "/_matrix/client/v3/rooms/"+r+"/state", nil)
					return stateKeys(asEvents(out)), code
				},
				func() (any, string) {
					evs, err := bob.nat.State(ctx, room)
					return stateKeys(evs), errCode(err)
				}},
			{"state of a stranger", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/state", nil))
				},
				func() (any, string) { return ok(nat(carol.nat.State(ctx, private))) }},
			{"profile", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob.mx.UserID), nil)
					return field(out, "displayname"), code
				},
				func() (any, string) {
					p, err := carol.nat.Profile(ctx, bob.mx.UserID)
					if p.DisplayName == nil {
						return nil, errCode(err)
					}
					return *p.DisplayName, errCode(err)
				}},
			{"profile of an unknown user", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(carol.mx, "GET", "/_matrix/client/v3/profile/"+url.PathEscape("@nobody:"+hs), nil))
				},
				func() (any, string) { return ok(nat(carol.nat.Profile(ctx, "@nobody:"+hs))) }},
			{"profile of a malformed user ID", "M_INVALID_PARAM",
				func() (any, string) { return ok(mxCall(carol.mx, "GET", "/_matrix/client/v3/profile/nobody", nil)) },
				func() (any, string) { return ok(nat(carol.nat.Profile(ctx, "nobody"))) }},
			{"typing", "",
				func() (any, string) {
					return ok(mxCall(bob.mx, "PUT", "/_matrix/client/v3/rooms/"+r+"/typing/"+url.PathEscape(bob.mx.UserID), map[string]any{"typing": true, "timeout": 1000}))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.Typing(ctx, room, true, 1000))) }},
			{"typing in a room one is not in", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/typing/"+url.PathEscape(carol.mx.UserID), map[string]any{"typing": true, "timeout": 1000}))
				},
				func() (any, string) { return ok(nat(nil, carol.nat.Typing(ctx, private, true, 1000))) }},
			{"receipt", "",
				func() (any, string) {
					return ok(mxCall(bob.mx, "POST", "/_matrix/client/v3/rooms/"+r+"/receipt/m.read/"+url.PathEscape(msg), nil))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.Receipt(ctx, room, msg))) }},
			{"receipt for an unknown event", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(bob.mx, "POST", "/_matrix/client/v3/rooms/"+r+"/receipt/m.read/%24nothing", nil))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.Receipt(ctx, room, "$nothing"))) }},
			{"set presence", "",
				func() (any, string) {
					return ok(mxCall(bob.mx, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.mx.UserID)+"/status", map[string]any{"presence": "online"}))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.SetPresence(ctx, "online", nil))) }},
			{"set an unknown presence", "M_INVALID_PARAM",
				func() (any, string) {
					return ok(mxCall(bob.mx, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.mx.UserID)+"/status", map[string]any{"presence": "busy"}))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.SetPresence(ctx, "busy", nil))) }},
			{"presence of a user sharing no room", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "GET", "/_matrix/client/v3/presence/"+url.PathEscape(bob.mx.UserID)+"/status", nil))
				},
				func() (any, string) { return ok(nat(carol.nat.Presence(ctx, bob.mx.UserID))) }},
			{"friend request to oneself", "M_INVALID_PARAM",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", im+"/friends/requests", map[string]any{"user_id": carol.mx.UserID}))
				},
				func() (any, string) { return ok(nat(carol.nat.RequestFriend(ctx, carol.mx.UserID, ""))) }},
			{"friend request to an unknown user", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", im+"/friends/requests", map[string]any{"user_id": "@nobody:" + hs}))
				},
				func() (any, string) { return ok(nat(carol.nat.RequestFriend(ctx, "@nobody:"+hs, ""))) }},
			{"friend request (dave, erin to carol)", "",
				func() (any, string) {
					out, code := mxCall(dave.mx, "POST", im+"/friends/requests", map[string]any{"user_id": carol.mx.UserID, "message": "hi"})
					return field(out, "user_id"), code
				},
				func() (any, string) {
					r, err := erin.nat.RequestFriend(ctx, carol.mx.UserID, "hi")
					return r.UserID, errCode(err)
				}},
			{"accept a request never made", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(bob.mx, "POST", im+"/friends/requests/"+url.PathEscape(carol.mx.UserID)+"/accept", nil))
				},
				func() (any, string) { return ok(nat(bob.nat.AcceptFriend(ctx, carol.mx.UserID))) }},
			{"accept (carol accepts dave, then erin)", "",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", im+"/friends/requests/"+url.PathEscape(dave.mx.UserID)+"/accept", nil))
				},
				func() (any, string) { return ok(nat(carol.nat.AcceptFriend(ctx, erin.mx.UserID))) }},
			{"friends", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", im+"/friends", nil)
					var ids []string
					for _, f := range asList(field(out, "friends")) {
						ids = append(ids, field(f, "user_id").(string))
					}
					return ids, code
				},
				func() (any, string) {
					fs, err := carol.nat.Friends(ctx)
					var ids []string
					for _, f := range fs {
						ids = append(ids, f.UserID)
					}
					return ids, errCode(err)
				}},
			{"remove a stranger as a friend", "M_NOT_FOUND",
				func() (any, string) {
					return ok(mxCall(bob.mx, "DELETE", im+"/friends/"+url.PathEscape(carol.mx.UserID), nil))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.RemoveFriend(ctx, carol.mx.UserID))) }},
			{"groups", "",
				func() (any, string) {
					out, code := mxCall(bob.mx, "GET", im+"/groups", nil)
					var ids []string
					for _, g := range asList(field(out, "groups")) {
						ids = append(ids, field(g, "room_id").(string))
					}
					return ids, code
				},
				func() (any, string) {
					gs, err := bob.nat.Groups(ctx)
					var ids []string
					for _, g := range gs {
						ids = append(ids, g.RoomID)
					}
					return ids, errCode(err)
				}},
			{"group members of a stranger", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(carol.mx, "GET", im+"/groups/"+url.PathEscape(group)+"/members", nil))
				},
				func() (any, string) { return ok(nat(carol.nat.GroupMembers(ctx, group))) }},
			{"transfer a group by a non-owner", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(bob.mx, "POST", im+"/groups/"+url.PathEscape(group)+"/transfer", map[string]any{"user_id": bob.mx.UserID}))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.TransferGroup(ctx, group, bob.mx.UserID))) }},
			{"dissolve a group by a non-owner", "M_FORBIDDEN",
				func() (any, string) {
					return ok(mxCall(bob.mx, "POST", im+"/groups/"+url.PathEscape(group)+"/dissolve", nil))
				},
				func() (any, string) { return ok(nat(nil, bob.nat.DissolveGroup(ctx, group))) }},
			{"group of a malformed room ID", "M_INVALID_PARAM",
				func() (any, string) { return ok(mxCall(bob.mx, "GET", im+"/groups/nope/members", nil)) },
				func() (any, string) { return ok(nat(bob.nat.GroupMembers(ctx, "nope"))) }},
			{"set a pusher (one each)", "",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/pushers/set", mxPusher("mx", "http", map[string]any{"url": gateway})))
				},
				func() (any, string) {
					return ok(nat(nil, carol.nat.SetPusher(ctx, natPusher("nat", &httpKind, map[string]any{"url": gateway}))))
				}},
			{"set a pusher without data.url", "M_MISSING_PARAM",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/pushers/set", mxPusher("k", "http", map[string]any{})))
				},
				func() (any, string) {
					return ok(nat(nil, carol.nat.SetPusher(ctx, natPusher("k", &httpKind, map[string]any{}))))
				}},
			{"set a pusher whose URL has the wrong path", "M_INVALID_PARAM",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/pushers/set", mxPusher("k", "http", map[string]any{"url": "https://push.example.org/"})))
				},
				func() (any, string) {
					return ok(nat(nil, carol.nat.SetPusher(ctx, natPusher("k", &httpKind, map[string]any{"url": "https://push.example.org/"}))))
				}},
			{"set a pusher at a loopback address", "M_INVALID_PARAM",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/pushers/set", mxPusher("k", "http", map[string]any{"url": "http://127.0.0.1/_matrix/push/v1/notify"})))
				},
				func() (any, string) {
					return ok(nat(nil, carol.nat.SetPusher(ctx, natPusher("k", &httpKind, map[string]any{"url": "http://127.0.0.1/_matrix/push/v1/notify"}))))
				}},
			{"list pushers", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", "/_matrix/client/v3/pushers", nil)
					return pushkeysOf(field(out, "pushers")), code
				},
				func() (any, string) {
					ps, err := carol.nat.Pushers(ctx)
					return pushkeysOf(ps), errCode(err)
				}},
			{"delete a pusher with kind null (one each)", "",
				func() (any, string) {
					return ok(mxCall(carol.mx, "POST", "/_matrix/client/v3/pushers/set", mxPusher("mx", nil, nil)))
				},
				func() (any, string) { return ok(nat(nil, carol.nat.SetPusher(ctx, natPusher("nat", nil, nil)))) }},
			{"list pushers after deleting them", "",
				func() (any, string) {
					out, code := mxCall(carol.mx, "GET", "/_matrix/client/v3/pushers", nil)
					return pushkeysOf(field(out, "pushers")), code
				},
				func() (any, string) {
					ps, err := carol.nat.Pushers(ctx)
					return pushkeysOf(ps), errCode(err)
				}},
		}
		for _, tc := range cases {
			mres, mcode := tc.matrix()
			nres, ncode := tc.native()
			if mcode != tc.code || ncode != tc.code {
				t.Errorf("%s: errcode Matrix %q, native %q; want %q from both", tc.name, mcode, ncode, tc.code)
				continue
			}
			if !reflect.DeepEqual(mres, nres) {
				t.Errorf("%s: result Matrix %v, native %v; want the same", tc.name, mres, nres)
			}
		}
	})
}
