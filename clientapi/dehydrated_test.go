package clientapi_test

import (
	"testing"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestDehydratedDevice covers MSC3814 as Element uses it: a dehydrated device is
// stored with its keys, receives to-device messages while no device is online, and
// the next device reads them, acknowledges them, and replaces or deletes it.
func TestDehydratedDevice(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice", "pw")
		bob := srv.Register(t, "bob", "pw")
		const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		var e errBody
		if st := alice.Do("GET", base, nil, &e); st != 404 || e.ErrCode != "M_NOT_FOUND" {
			t.Errorf("GET before any = %d %s; want 404 M_NOT_FOUND", st, e.ErrCode)
		}
		data := map[string]any{"algorithm": "m.dehydration.v1.olm", "device_pickle": "encrypted-pickle"}
		var put map[string]string
		alice.MustDo("PUT", base, map[string]any{"device_id": "DEHYDRATED1", "device_data": data,
			"initial_device_display_name": "Dehydrated device", "device_keys": signedDeviceKeys(t, alice.UserID, "DEHYDRATED1")}, &put)
		if put["device_id"] != "DEHYDRATED1" {
			t.Fatalf("PUT = %v", put)
		}
		var got struct {
			DeviceID   string         `json:"device_id"`
			DeviceData map[string]any `json:"device_data"`
		}
		alice.MustDo("GET", base, nil, &got)
		if got.DeviceID != "DEHYDRATED1" || got.DeviceData["device_pickle"] != "encrypted-pickle" {
			t.Errorf("GET = %+v", got)
		}
		hasDevice := func(id string) bool {
			var q struct {
				DeviceKeys map[string]map[string]any `json:"device_keys"`
			}
			bob.MustDo("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{alice.UserID: {}}}, &q)
			return q.DeviceKeys[alice.UserID][id] != nil
		}
		if !hasDevice("DEHYDRATED1") {
			t.Error("bob's key query does not list the dehydrated device")
		}

		bob.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1",
			map[string]any{"messages": map[string]any{alice.UserID: map[string]any{"DEHYDRATED1": map[string]string{"ciphertext": "for later"}}}}, nil)
		var page struct {
			Events []struct {
				Sender  string         `json:"sender"`
				Type    string         `json:"type"`
				Content map[string]any `json:"content"`
			} `json:"events"`
			NextBatch string `json:"next_batch"`
		}
		alice.MustDo("POST", base+"/DEHYDRATED1/events", map[string]any{}, &page)
		if len(page.Events) != 1 || page.Events[0].Sender != bob.UserID || page.Events[0].Content["ciphertext"] != "for later" {
			t.Fatalf("dehydrated device's events = %+v", page)
		}
		alice.MustDo("POST", base+"/DEHYDRATED1/events", map[string]any{"next_batch": page.NextBatch}, &page)
		if len(page.Events) != 0 {
			t.Errorf("events after acknowledging = %+v; want none", page.Events)
		}

		for _, tc := range []struct {
			name, method, path string
			body               any
			status             int
		}{
			{"events of a device that is not the dehydrated one", "POST", base + "/" + alice.Device + "/events", map[string]any{}, 403},
			{"taking over a real device's ID", "PUT", base, map[string]any{"device_id": alice.Device, "device_data": data}, 400},
			{"no device_id", "PUT", base, map[string]any{"device_data": data}, 400},
			{"device_data not an object", "PUT", base, map[string]any{"device_id": "X", "device_data": "pickle"}, 400},
		} {
			if st := alice.Do(tc.method, tc.path, tc.body, &e); st != tc.status {
				t.Errorf("%s = %d %s; want %d", tc.name, st, e.ErrCode, tc.status)
			}
		}

		// A new dehydrated device replaces the old one, which stops existing.
		alice.MustDo("PUT", base, map[string]any{"device_id": "DEHYDRATED2", "device_data": data,
			"device_keys": signedDeviceKeys(t, alice.UserID, "DEHYDRATED2")}, nil)
		if hasDevice("DEHYDRATED1") || !hasDevice("DEHYDRATED2") {
			t.Error("after replacing: the old dehydrated device is still listed or the new one is not")
		}
		var del map[string]string
		alice.MustDo("DELETE", base, nil, &del)
		if del["device_id"] != "DEHYDRATED2" || hasDevice("DEHYDRATED2") {
			t.Errorf("DELETE = %v; the device must be gone", del)
		}
		if st := alice.Do("GET", base, nil, &e); st != 404 {
			t.Errorf("GET after DELETE = %d; want 404", st)
		}
	})
}
