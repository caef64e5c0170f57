package pusher

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/outbound"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/storage/storagetest"
)

func codeOf(err error) mxerror.Code {
	if err == nil {
		return ""
	}
	if e, ok := mxerror.As(err); ok {
		return e.Code
	}
	return "not a Matrix error: " + mxerror.Code(err.Error())
}

// decodeSet decodes a /pushers/set body as the HTTP API does.
func decodeSet(t *testing.T, body string) (Set, error) {
	t.Helper()
	var s Set
	err := json.Unmarshal([]byte(body), &s)
	return s, err
}

func TestSetValidation(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		strict, err := New(context.Background(), Config{}, Deps{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		defer strict.Close()
		open, err := New(context.Background(), Config{Guard: outbound.New(outbound.Policy{Allow: loopback})}, Deps{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		defer open.Close()
		const base = `"app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en"`
		for _, c := range []struct {
			name string
			svc  *Service
			body string
			want mxerror.Code
		}{
			{"ok", strict, `{"kind":"http",` + base + `,"data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`, ""},
			{"http URL", strict, `{"kind":"http",` + base + `,"data":{"url":"http://push.example.org/_matrix/push/v1/notify","format":"event_id_only"}}`, ""},
			{"no kind", strict, `{` + base + `,"data":{"url":"https://push.example.org/_matrix/push/v1/notify"}}`, mxerror.MissingParam},
			{"email kind", strict, `{"kind":"email",` + base + `,"data":{}}`, mxerror.InvalidParam},
			{"no app_id", strict, `{"kind":"http","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://p.example/_matrix/push/v1/notify"}}`, mxerror.MissingParam},
			{"no lang", strict, `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","data":{"url":"https://p.example/_matrix/push/v1/notify"}}`, mxerror.MissingParam},
			{"no data", strict, `{"kind":"http",` + base + `}`, mxerror.MissingParam},
			{"no url", strict, `{"kind":"http",` + base + `,"data":{}}`, mxerror.MissingParam},
			{"data not an object", strict, `{"kind":"http",` + base + `,"data":"x"}`, mxerror.InvalidParam},
			{"url not a string", strict, `{"kind":"http",` + base + `,"data":{"url":5}}`, mxerror.InvalidParam},
			{"wrong path", strict, `{"kind":"http",` + base + `,"data":{"url":"https://p.example/notify"}}`, mxerror.InvalidParam},
			{"ftp", strict, `{"kind":"http",` + base + `,"data":{"url":"ftp://p.example/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"credentials in URL", strict, `{"kind":"http",` + base + `,"data":{"url":"https://u:p@p.example/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"loopback refused", strict, `{"kind":"http",` + base + `,"data":{"url":"http://127.0.0.1:9/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"localhost refused", strict, `{"kind":"http",` + base + `,"data":{"url":"http://localhost:9/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"private refused", strict, `{"kind":"http",` + base + `,"data":{"url":"http://10.1.2.3/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"v6 loopback refused", strict, `{"kind":"http",` + base + `,"data":{"url":"http://[::1]:9/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"metadata refused even allowed", open, `{"kind":"http",` + base + `,"data":{"url":"http://169.254.169.254/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"loopback allowed", open, `{"kind":"http",` + base + `,"data":{"url":"http://127.0.0.1:9/_matrix/push/v1/notify"}}`, ""},
			{"localhost allowed", open, `{"kind":"http",` + base + `,"data":{"url":"http://localhost:9/_matrix/push/v1/notify"}}`, ""},
			{"long pushkey", strict, `{"kind":"http","app_id":"a","pushkey":"` + strings.Repeat("k", MaxPushkeyBytes+1) + `","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://p.example/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"long app_id", strict, `{"kind":"http","app_id":"` + strings.Repeat("a", MaxAppIDChars+1) + `","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://p.example/_matrix/push/v1/notify"}}`, mxerror.InvalidParam},
			{"huge data", strict, `{"kind":"http",` + base + `,"data":{"url":"https://p.example/_matrix/push/v1/notify","x":"` + strings.Repeat("x", MaxDataBytes) + `"}}`, mxerror.InvalidParam},
			{"kind a number", strict, `{"kind":5,` + base + `,"data":{}}`, mxerror.BadJSON},
		} {
			req, err := decodeSet(t, c.body)
			if err == nil {
				err = c.svc.Set(context.Background(), "@u:x", "DEV", req)
			}
			if got := codeOf(err); got != c.want {
				t.Errorf("%s: Set(%.120s) = %v; want %q", c.name, c.body, err, c.want)
			}
		}
	})
}

func TestSetSemantics(t *testing.T) {
	storagetest.ForEach(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		svc, err := New(ctx, Config{MaxPushersPerUser: 3}, Deps{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close()
		set := func(user, device, app, key string, appendFlag bool, extra string) {
			t.Helper()
			body := `{"kind":"http","app_id":"` + app + `","pushkey":"` + key + `","app_display_name":"A","device_display_name":"D","lang":"en",` +
				`"data":{"url":"https://p.example/_matrix/push/v1/notify"` + extra + `},"append":` + map[bool]string{true: "true", false: "false"}[appendFlag] + `}`
			req, err := decodeSet(t, body)
			if err == nil {
				err = svc.Set(ctx, user, device, req)
			}
			if err != nil {
				t.Fatalf("Set(%s %s/%s) = %v", user, app, key, err)
			}
		}
		keys := func(user string) []string {
			t.Helper()
			ps, err := svc.List(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range ps {
				out = append(out, p.AppID+"/"+p.PushKey)
			}
			return out
		}
		check := func(what, user string, want ...string) {
			t.Helper()
			if got := keys(user); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s: pushers of %s = %v; want %v", what, user, got, want)
			}
		}

		set("@a:x", "D1", "app", "k1", false, "")
		set("@a:x", "D1", "app", "k1", false, `,"format":"event_id_only"`) // an update, not a second pusher
		check("set twice", "@a:x", "app/k1")
		if ps, _ := svc.List(ctx, "@a:x"); len(ps) != 1 || !strings.Contains(string(ps[0].Data), "event_id_only") {
			t.Errorf("updated pusher = %+v; want data with format event_id_only", ps)
		}

		set("@b:x", "D9", "app", "k1", true, "") // append: both users keep it
		check("append true", "@a:x", "app/k1")
		check("append true", "@b:x", "app/k1")
		set("@b:x", "D9", "app", "k1", false, "") // the phone changed hands
		check("append false removes the other user's", "@a:x")
		check("append false keeps the setter's", "@b:x", "app/k1")

		set("@a:x", "D1", "app", "k2", false, "")
		set("@a:x", "D2", "app", "k3", false, "")
		set("@a:x", "D2", "other", "k3", false, "")
		req, _ := decodeSet(t, `{"kind":"http","app_id":"app","pushkey":"k4","app_display_name":"A","device_display_name":"D","lang":"en","data":{"url":"https://p.example/_matrix/push/v1/notify"}}`)
		if err := svc.Set(ctx, "@a:x", "D1", req); codeOf(err) != mxerror.ResourceLimitExceeded {
			t.Errorf("fourth pusher: Set = %v; want M_RESOURCE_LIMIT_EXCEEDED", err)
		}

		del, _ := decodeSet(t, `{"kind":null,"app_id":"other","pushkey":"k3"}`)
		if !del.Delete {
			t.Fatalf("decode kind null = %+v; want Delete", del)
		}
		if err := svc.Set(ctx, "@a:x", "D1", del); err != nil {
			t.Fatalf("delete: %v", err)
		}
		check("kind null deletes", "@a:x", "app/k2", "app/k3")

		if err := svc.DeleteDevices(ctx, "@a:x", []string{"D2"}); err != nil {
			t.Fatal(err)
		}
		check("device deleted", "@a:x", "app/k2")
		check("another user's pushers stay", "@b:x", "app/k1")
	})
}
