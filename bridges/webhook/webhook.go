// Package webhook is a bridge between HTTP webhooks and Matrix rooms, built as an
// application service: it talks to the homeserver only through the
// application-service API, so it runs as a process of its own (cmd/hongyan-webhook)
// beside Hongyan or any other homeserver.
//
// Each hook has an ID, a secret token, a room and a virtual user
// (@webhook_<id>:server). A POST to /hooks/<id> with the token posts its text into the
// room as that user. With an outgoing URL, the room's messages from anyone but the
// bridge's own users are POSTed there as JSON.
package webhook

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hongyan/hongyan/homeserver/outbound"
)

// Config is the bridge's configuration file.
type Config struct {
	// HomeserverURL is the homeserver's client API, http://127.0.0.1:8008.
	HomeserverURL string `yaml:"homeserver_url"`
	// ServerName is the homeserver's server name, the domain of user IDs.
	ServerName string `yaml:"server_name"`
	// Listen is the bridge's HOST:PORT: the homeserver pushes transactions there,
	// and webhooks are posted to /hooks/<id> on it.
	Listen string `yaml:"listen"`
	// Registration is the registration file the homeserver was given too
	// (WriteRegistration makes one).
	Registration string `yaml:"registration"`
	// OutgoingAllow lists CIDR prefixes outgoing URLs may reach although they
	// are loopback or private (comma-separated). Empty: public addresses only.
	OutgoingAllow string `yaml:"outgoing_allow"`
	// Hooks are the webhooks.
	Hooks []Hook `yaml:"hooks"`
}

// Hook is one webhook.
type Hook struct {
	// ID names the hook in its URL and its virtual user: [a-z0-9._=-]+.
	ID string `yaml:"id"`
	// Token is the hook's secret: Authorization: Bearer <token> or ?token=.
	Token string `yaml:"token" secret:"true"`
	// RoomID is where the hook posts. Its virtual user joins it (public rooms)
	// or is invited by the bridge's bot (invite the bot first).
	RoomID string `yaml:"room_id"`
	// DisplayName is the virtual user's name. Default: the hook's ID.
	DisplayName string `yaml:"display_name"`
	// OutgoingURL, if set, receives the room's messages as JSON POSTs.
	OutgoingURL string `yaml:"outgoing_url"`
}

var hookID = regexp.MustCompile(`^[a-z0-9._=-]+$`)

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("webhook config %s: %w", path, err)
	}
	return c, c.check()
}

func (c Config) check() error {
	switch {
	case c.HomeserverURL == "":
		return errors.New("homeserver_url: required")
	case c.ServerName == "":
		return errors.New("server_name: required")
	case c.Listen == "":
		return errors.New("listen: required")
	}
	if _, err := outbound.ParsePrefixes(c.OutgoingAllow); err != nil {
		return fmt.Errorf("outgoing_allow: %w", err)
	}
	seen := map[string]bool{}
	for i, h := range c.Hooks {
		switch {
		case !hookID.MatchString(h.ID):
			return fmt.Errorf("hooks[%d].id %q: want [a-z0-9._=-]+", i, h.ID)
		case seen[h.ID]:
			return fmt.Errorf("hooks[%d].id %q: used twice", i, h.ID)
		case len(h.Token) < 16:
			return fmt.Errorf("hooks[%d].token: at least 16 characters", i)
		case !strings.HasPrefix(h.RoomID, "!"):
			return fmt.Errorf("hooks[%d].room_id %q: a room ID", i, h.RoomID)
		}
		seen[h.ID] = true
	}
	return nil
}

// NewRegistration returns a registration for the bridge, with fresh tokens: its
// bot is @webhook:server and its users @webhook_*:server, reserved for it.
func NewRegistration(c Config) *appservice.Registration {
	r := appservice.CreateRegistration()
	r.ID = "hongyan-webhook"
	r.URL = "http://" + c.Listen
	r.SenderLocalpart = "webhook"
	r.Namespaces.UserIDs.Register(regexp.MustCompile("@webhook_.*:"+regexp.QuoteMeta(c.ServerName)), true)
	f := false
	r.RateLimited = &f
	return r
}

// Bridge runs the hooks. Build it with New.
type Bridge struct {
	cfg   Config
	as    *appservice.AppService
	bot   *appservice.IntentAPI
	hooks map[string]Hook // by ID; fixed after New
	out   *http.Client
	log   *slog.Logger
}

// New builds the bridge from its configuration and registration.
func New(cfg Config, reg *appservice.Registration) (*Bridge, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: cfg.ServerName, HomeserverURL: cfg.HomeserverURL})
	if err != nil {
		return nil, err
	}
	as.Log = zerolog.Nop()
	allow, _ := outbound.ParsePrefixes(cfg.OutgoingAllow) // checked
	b := &Bridge{cfg: cfg, as: as, hooks: map[string]Hook{}, log: slog.Default(),
		out: outbound.New(outbound.Policy{Purpose: "webhook out", Allow: allow}).Client(30 * time.Second)}
	for _, h := range cfg.Hooks {
		b.hooks[h.ID] = h
	}
	// mautrix builds its bot client lazily, unguarded: build it now, before
	// the handlers and the event loop run concurrently.
	b.bot = as.BotIntent()
	as.Router.HandleFunc("POST /hooks/{id}", b.incoming)
	return b, nil
}

// Handler serves the application-service API and the hooks.
func (b *Bridge) Handler() http.Handler { return b.as.Router }

// Serve serves on ln and handles the homeserver's events until ctx ends.
func (b *Bridge) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	go b.events(ctx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// maxHookBody bounds a webhook's body.
const maxHookBody = 64 << 10

func (b *Bridge) incoming(w http.ResponseWriter, r *http.Request) {
	h, ok := b.hooks[r.PathValue("id")]
	token := r.URL.Query().Get("token")
	if a, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found {
		token = a
	}
	// An unknown hook and a wrong token look alike: hooks cannot be enumerated.
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(h.Token)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unknown hook or wrong token"})
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large"})
		return
	}
	text, html := string(data), ""
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var msg struct {
			Text string `json:"text"`
			HTML string `json:"html"`
		}
		if json.Unmarshal(data, &msg) != nil || msg.Text == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"text": "...", "html": "..."}`})
			return
		}
		text, html = msg.Text, msg.HTML
	}
	if strings.TrimSpace(text) == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "empty message"})
		return
	}
	eventID, err := b.post(r.Context(), h, text, html)
	if err != nil {
		b.log.Warn("webhook post", "hook", h.ID, "err", err)
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "the homeserver did not take the message"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"event_id": eventID.String()})
}

// post sends the text into the hook's room as its virtual user, registering
// and joining it first when needed.
func (b *Bridge) post(ctx context.Context, h Hook, text, html string) (id.EventID, error) {
	intent := b.as.Intent(b.userOf(h))
	if err := intent.EnsureRegistered(ctx); err != nil {
		return "", err
	}
	name := h.DisplayName
	if name == "" {
		name = h.ID
	}
	if err := intent.EnsureJoined(ctx, id.RoomID(h.RoomID)); err != nil {
		return "", err
	}
	_ = intent.SetDisplayName(ctx, name) // cosmetic
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: text}
	if html != "" {
		content.Format, content.FormattedBody = event.FormatHTML, html
	}
	resp, err := intent.SendMessageEvent(ctx, id.RoomID(h.RoomID), event.EventMessage, content)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

func (b *Bridge) userOf(h Hook) id.UserID {
	return id.NewUserID("webhook_"+h.ID, b.cfg.ServerName)
}

// events handles the homeserver's pushes: the bot joins rooms it is invited
// to, and messages in a hook's room go to its outgoing URL.
func (b *Bridge) events(ctx context.Context) {
	bot := b.bot
	for {
		var evt *event.Event
		select {
		case <-ctx.Done():
			return
		case evt = <-b.as.Events:
		}
		switch {
		case evt.Type == event.StateMember && evt.GetStateKey() == bot.UserID.String() &&
			evt.Content.AsMember().Membership == event.MembershipInvite:
			if _, err := bot.JoinRoomByID(ctx, evt.RoomID); err != nil {
				b.log.Warn("webhook bot join", "room", evt.RoomID, "err", err)
			}
		case evt.Type == event.EventMessage:
			if strings.HasPrefix(evt.Sender.Localpart(), "webhook") && evt.Sender.Homeserver() == b.cfg.ServerName {
				continue // the bridge's own users: not echoed back out
			}
			for _, h := range b.hooks {
				if h.RoomID == evt.RoomID.String() && h.OutgoingURL != "" {
					b.forward(ctx, h, evt)
				}
			}
		}
	}
}

// forward POSTs a room message to the hook's outgoing URL, once: a receiver
// that is down misses it (the room keeps it).
func (b *Bridge) forward(ctx context.Context, h Hook, evt *event.Event) {
	msg := evt.Content.AsMessage()
	body, _ := json.Marshal(map[string]string{"hook": h.ID, "room_id": evt.RoomID.String(), "event_id": evt.ID.String(),
		"sender": evt.Sender.String(), "text": msg.Body})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.OutgoingURL, bytes.NewReader(body))
	if err != nil {
		b.log.Warn("webhook outgoing", "hook", h.ID, "err", err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.out.Do(req)
	if err != nil {
		b.log.Warn("webhook outgoing", "hook", h.ID, "err", err)
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
