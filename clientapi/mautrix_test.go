package clientapi_test

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/testserver"
)

// TestRealClientLibrary drives the account API with mautrix-go, the client library
// that bridges and bots use, so the wire format is checked by someone else's code.
func TestRealClientLibrary(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		cli, err := mautrix.NewClient(srv.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		versions, err := cli.Versions(ctx)
		if err != nil || !versions.ContainsGreaterOrEqual(mautrix.SpecV11) {
			t.Fatalf("Versions() = %v, %v; want v1.1 or later", versions, err)
		}
		flows, err := cli.GetLoginFlows(ctx)
		if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
			t.Fatalf("GetLoginFlows() = %v, %v; want m.login.password", flows, err)
		}

		reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "carol", Password: "pw-carol", InitialDeviceDisplayName: "bot"})
		if err != nil {
			t.Fatalf("RegisterDummy: %v", err)
		}
		if reg.UserID != "@carol:localhost" {
			t.Fatalf("registered %s; want @carol:localhost", reg.UserID)
		}

		login, err := cli.Login(ctx, &mautrix.ReqLogin{
			Type:             mautrix.AuthTypePassword,
			Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"},
			Password:         "pw-carol",
			DeviceID:         "MAUTRIX",
			StoreCredentials: true,
		})
		if err != nil || login.DeviceID != "MAUTRIX" {
			t.Fatalf("Login = %v, %v; want device MAUTRIX", login, err)
		}
		who, err := cli.Whoami(ctx)
		if err != nil || who.UserID != reg.UserID || who.DeviceID != "MAUTRIX" {
			t.Fatalf("Whoami = %+v, %v", who, err)
		}

		devices, err := cli.GetDevicesInfo(ctx)
		if err != nil || len(devices.Devices) != 2 {
			t.Fatalf("GetDevicesInfo = %+v, %v; want 2 devices", devices, err)
		}
		dev, err := cli.GetDeviceInfo(ctx, reg.DeviceID)
		if err != nil || dev.DisplayName != "bot" {
			t.Errorf("GetDeviceInfo(%s) = %+v, %v; want display name bot", reg.DeviceID, dev, err)
		}

		if err := cli.SetDisplayName(ctx, "Carol the Bot"); err != nil {
			t.Fatal(err)
		}
		if err := cli.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: "avatar"}); err != nil {
			t.Fatal(err)
		}
		prof, err := cli.GetProfile(ctx, reg.UserID)
		if err != nil || prof.DisplayName != "Carol the Bot" || prof.AvatarURL.FileID != "avatar" {
			t.Errorf("GetProfile = %+v, %v", prof, err)
		}

		type settings struct {
			Theme string `json:"theme"`
		}
		if err := cli.SetAccountData(ctx, "im.hongyan.test", settings{Theme: "dark"}); err != nil {
			t.Fatal(err)
		}
		var got settings
		if err := cli.GetAccountData(ctx, "im.hongyan.test", &got); err != nil || got.Theme != "dark" {
			t.Errorf("GetAccountData = %+v, %v", got, err)
		}
		room := id.RoomID("!room:localhost")
		if err := cli.SetRoomAccountData(ctx, room, "im.hongyan.test", settings{Theme: "light"}); err != nil {
			t.Fatal(err)
		}
		if err := cli.GetRoomAccountData(ctx, room, "im.hongyan.test", &got); err != nil || got.Theme != "light" {
			t.Errorf("GetRoomAccountData = %+v, %v", got, err)
		}
		err = cli.GetAccountData(ctx, "im.hongyan.missing", &got)
		if !errors.Is(err, mautrix.MNotFound) {
			t.Errorf("GetAccountData(missing) = %v; want M_NOT_FOUND", err)
		}

		filter, err := cli.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}})
		if err != nil || filter.FilterID == "" {
			t.Errorf("CreateFilter = %v, %v", filter, err)
		}

		rules, err := cli.GetPushRules(ctx)
		if err != nil || len(rules.Override) == 0 || len(rules.Underride) == 0 {
			t.Errorf("GetPushRules = %+v, %v; want the default rules", rules, err)
		}

		if _, err := cli.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
			t.Errorf("Whoami after Logout = %v; want M_UNKNOWN_TOKEN", err)
		}
	})
}
