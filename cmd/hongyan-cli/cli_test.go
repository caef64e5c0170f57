package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestTwoUsersChatUnderTmux runs two hongyan-cli processes in tmux sessions, as two
// people at terminals would, and has them chat: what one types appears on the
// other's screen.
func TestTwoUsersChatUnderTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed: scripts/test.sh installs it (apt-get install tmux)")
	}
	bin := filepath.Join(t.TempDir(), "hongyan-cli")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	srv := testserver.Start(t, storagetest.Engines()[0])
	alice := srv.Register(t, "alice", "pw-a")
	bob := srv.Register(t, "bob", "pw-b")
	var room struct {
		RoomID string `json:"room_id"`
	}
	alice.MustDo("POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "lobby", "invite": []string{bob.UserID}}, &room)
	bob.MustDo("POST", "/_matrix/client/v3/join/"+room.RoomID, map[string]any{}, nil)

	socket := filepath.Join(t.TempDir(), "tmux.sock") // a private tmux server
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-S", socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-S", socket, "kill-server").Run() })
	for _, u := range []struct{ name, pw string }{{"alice", "pw-a"}, {"bob", "pw-b"}} {
		tmux("new-session", "-d", "-s", u.name, "-x", "160", "-y", "40",
			bin+" -addr "+srv.NativeAddr+" -user "+u.name+" -password "+u.pw+" -room "+room.RoomID)
	}
	screen := func(session, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if strings.Contains(tmux("capture-pane", "-p", "-t", session), want) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s's screen never showed %q:\n%s", session, want, tmux("capture-pane", "-p", "-t", session))
	}
	screen("alice", "room lobby is open")
	screen("bob", "room lobby is open")

	tmux("send-keys", "-t", "alice", "hi bob, native here", "Enter")
	screen("bob", "[lobby] @alice:localhost: hi bob, native here")
	tmux("send-keys", "-t", "bob", "hello alice", "Enter")
	screen("alice", "[lobby] @bob:localhost: hello alice")
	tmux("send-keys", "-t", "bob", "/me waves", "Enter")
	screen("alice", "* @bob:localhost waves")
	tmux("send-keys", "-t", "alice", "/rooms", "Enter")
	screen("alice", room.RoomID+"  lobby  (join)")
}

// TestFriendsAndGroupUnderTmux: two people who share no room befriend each other
// with /friend and /accept, see each other in /friends, then chat in a group one
// of them makes with /group.
func TestFriendsAndGroupUnderTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed: scripts/test.sh installs it (apt-get install tmux)")
	}
	bin := filepath.Join(t.TempDir(), "hongyan-cli")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	srv := testserver.Start(t, storagetest.Engines()[0])
	alice := srv.Register(t, "alice", "pw-a")
	srv.Register(t, "bob", "pw-b")

	socket := filepath.Join(t.TempDir(), "tmux.sock")
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-S", socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-S", socket, "kill-server").Run() })
	for _, u := range []struct{ name, pw string }{{"alice", "pw-a"}, {"bob", "pw-b"}} {
		tmux("new-session", "-d", "-s", u.name, "-x", "200", "-y", "50",
			bin+" -addr "+srv.NativeAddr+" -user "+u.name+" -password "+u.pw)
	}
	screen := func(session, want string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if strings.Contains(tmux("capture-pane", "-p", "-J", "-t", session), want) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s's screen never showed %q:\n%s", session, want, tmux("capture-pane", "-p", "-J", "-t", session))
	}
	screen("alice", "logged in as @alice:localhost")
	screen("bob", "logged in as @bob:localhost")

	tmux("send-keys", "-t", "alice", "/friend @bob:localhost hi bob, it's alice", "Enter")
	screen("alice", "friend request sent to @bob:localhost")
	screen("bob", "@alice:localhost wants to be your friend: hi bob, it's alice")
	tmux("send-keys", "-t", "bob", "/accept @alice:localhost", "Enter")
	screen("bob", "@alice:localhost is your friend")
	screen("alice", "@bob:localhost accepted your friend request")
	tmux("send-keys", "-t", "alice", "/friends", "Enter")
	screen("alice", "(@bob:localhost)  ")

	tmux("send-keys", "-t", "alice", "/group hikers @bob:localhost", "Enter")
	screen("alice", "created group hikers")
	var groups struct {
		Groups []struct {
			RoomID string `json:"room_id"`
		} `json:"groups"`
	}
	alice.MustDo("GET", "/_matrix/client/unstable/im.hongyan/groups", nil, &groups)
	if len(groups.Groups) != 1 {
		t.Fatalf("alice's groups = %+v; want hikers", groups.Groups)
	}
	g := groups.Groups[0].RoomID
	screen("bob", "invited you to a group — /join "+g)
	tmux("send-keys", "-t", "bob", "/join "+g, "Enter")
	screen("bob", "room hikers is open")
	tmux("send-keys", "-t", "alice", "/members", "Enter")
	screen("alice", "@bob:localhost  member")
	tmux("send-keys", "-t", "alice", "hello hikers", "Enter")
	screen("bob", "[hikers] @alice:localhost: hello hikers")
	tmux("send-keys", "-t", "bob", "ready for saturday", "Enter")
	screen("alice", "[hikers] @bob:localhost: ready for saturday")
}
