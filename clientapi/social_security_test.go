package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestSocialRefusesOutsiders: every IM endpoint refuses a caller without a token,
// and every group endpoint a user who is not in the group; a request is answered
// only by its target and withdrawn only by its requester.
func TestSocialRefusesOutsiders(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		eve := srv.Register(t, "eve", "pw")
		var created map[string]string
		alice.MustDo("POST", im+"/groups", map[string]any{"name": "Private", "members": []string{bob.UserID}}, &created)
		g := url.PathEscape(created["room_id"])
		alice.MustDo("POST", im+"/friends/requests", map[string]string{"user_id": bob.UserID}, nil)

		anon := srv.Client(t)
		for _, ep := range []struct{ method, path string }{
			{"POST", "/friends/requests"}, {"GET", "/friends/requests"},
			{"POST", "/friends/requests/@alice:localhost/accept"}, {"POST", "/friends/requests/@alice:localhost/decline"},
			{"POST", "/friends/requests/@alice:localhost/cancel"}, {"GET", "/friends"}, {"DELETE", "/friends/@alice:localhost"},
			{"GET", "/blocked"}, {"POST", "/blocked/@alice:localhost"}, {"DELETE", "/blocked/@alice:localhost"},
			{"POST", "/groups"}, {"GET", "/groups"}, {"GET", "/groups/" + g + "/members"}, {"POST", "/groups/" + g + "/invite"},
			{"POST", "/groups/" + g + "/join"}, {"POST", "/groups/" + g + "/leave"}, {"POST", "/groups/" + g + "/kick"},
			{"POST", "/groups/" + g + "/transfer"}, {"PUT", "/groups/" + g}, {"PUT", "/groups/" + g + "/mute"},
			{"POST", "/groups/" + g + "/dissolve"},
		} {
			wantErr(t, anon, ep.method, im+ep.path, map[string]any{}, 401, "M_MISSING_TOKEN")
		}

		// Eve is in no group and party to no request.
		for _, ep := range []struct {
			method, path string
			body         any
		}{
			{"GET", "/groups/" + g + "/members", nil},
			{"POST", "/groups/" + g + "/invite", map[string]string{"user_id": eve.UserID}},
			{"POST", "/groups/" + g + "/join", nil},
			{"POST", "/groups/" + g + "/leave", nil},
			{"POST", "/groups/" + g + "/kick", map[string]string{"user_id": bob.UserID}},
			{"POST", "/groups/" + g + "/transfer", map[string]string{"user_id": eve.UserID}},
			{"PUT", "/groups/" + g, map[string]string{"name": "pwned"}},
			{"PUT", "/groups/" + g + "/mute", map[string]bool{"muted": true}},
			{"POST", "/groups/" + g + "/dissolve", nil},
		} {
			wantErr(t, eve, ep.method, im+ep.path, ep.body, 403, "M_FORBIDDEN")
		}
		wantErr(t, eve, "POST", im+"/friends/requests/"+alice.UserID+"/accept", nil, 404, "M_NOT_FOUND")
		wantErr(t, eve, "POST", im+"/friends/requests/"+alice.UserID+"/decline", nil, 404, "M_NOT_FOUND")
		wantErr(t, eve, "POST", im+"/friends/requests/"+bob.UserID+"/cancel", nil, 404, "M_NOT_FOUND")
		// The target cannot withdraw, nor the requester accept, their own request.
		wantErr(t, bob, "POST", im+"/friends/requests/"+alice.UserID+"/cancel", nil, 404, "M_NOT_FOUND")
		wantErr(t, alice, "POST", im+"/friends/requests/"+bob.UserID+"/accept", nil, 404, "M_NOT_FOUND")
		wantErr(t, eve, "DELETE", im+"/friends/"+alice.UserID, nil, 404, "M_NOT_FOUND")
		if got := requestsOf(t, eve); len(got.Incoming)+len(got.Outgoing) != 0 {
			t.Errorf("eve sees requests %+v; want none", got)
		}
		if gs := groupsOf(t, eve); len(gs) != 0 {
			t.Errorf("eve sees groups %+v; want none", gs)
		}

		// Malformed IDs are bad input, never a 500.
		wantErr(t, alice, "GET", im+"/groups/not-a-room/members", nil, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", im+"/blocked/not-a-user", nil, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", im+"/groups/"+g+"/kick", map[string]string{}, 400, "M_MISSING_PARAM")
		wantErr(t, alice, "PUT", im+"/groups/"+g+"/mute", map[string]string{}, 400, "M_MISSING_PARAM")
		wantErr(t, alice, "PUT", im+"/groups/"+g, map[string]string{"avatar_url": "http://x"}, 400, "M_INVALID_PARAM")
		wantErr(t, alice, "POST", im+"/groups", "[]", 400, "M_BAD_JSON")
		wantErr(t, alice, "POST", im+"/groups/"+url.PathEscape("!nope:localhost")+"/transfer", map[string]string{"user_id": bob.UserID}, 403, "M_FORBIDDEN")
	})
}
