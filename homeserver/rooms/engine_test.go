package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/serverkey"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// testServer is the server name of the engines these package-level tests build.
const testServer = "rooms.test"

// newTestService builds the room engine as homeserver.New does, minus the bus and
// profiles, which no rule tested here needs.
func newTestService(t *testing.T, db *storage.DB) *Service {
	t.Helper()
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return New(db, Config{ServerName: testServer, Key: key})
}

// uid is the user ID of a local test user.
func uid(local string) string { return "@" + local + ":" + testServer }

// codeOf is the Matrix errcode of err: "" for nil, "not a Matrix error" otherwise.
func codeOf(err error) mxerror.Code {
	if err == nil {
		return ""
	}
	if e, ok := mxerror.As(err); ok {
		return e.Code
	}
	return "not a Matrix error: " + mxerror.Code(err.Error())
}

func rawJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// join makes each user join roomID, failing the test on error.
func join(t *testing.T, s *Service, roomID string, users ...string) {
	t.Helper()
	for _, u := range users {
		if _, err := s.SetMembership(context.Background(), roomID, Membership{Sender: u, Target: u, Membership: "join"}); err != nil {
			t.Fatalf("join %s to %s: %v", u, roomID, err)
		}
	}
}

func strptr(s string) *string { return &s }
