// Package rtc is what a homeserver does for MatrixRTC (Element Call): it says which
// LiveKit focus its users should use (MSC4143 transports, rtc_foci) and hands a
// joined member of a room a LiveKit access token for that room (MSC4195), so the
// operator needs no separate lk-jwt-service.
//
// Tokens are HS256 JWTs with the claims LiveKit's server verifies (iss = API key,
// sub = participant identity, nbf, exp, and the video grant), signed with the API
// secret the SFU shares. LiveKit room names and identities are pseudonymous, as
// MSC4195 asks: Base64(SHA256(canonical JSON [a, b])), so the SFU learns neither
// room IDs nor user IDs.
package rtc

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hongyan/hongyan/homeserver/config"
	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/rooms"
)

// Service mints LiveKit tokens for room members.
type Service struct {
	cfg   config.RTC
	rooms *rooms.Service
	now   func() time.Time
}

// New returns the service. With no LiveKit URL, key or secret configured, it
// advertises nothing and mints nothing.
func New(cfg config.RTC, rs *rooms.Service) *Service {
	if cfg.LiveKitTokenTTL <= 0 {
		cfg.LiveKitTokenTTL = time.Hour
	}
	return &Service{cfg: cfg, rooms: rs, now: time.Now}
}

// Minting reports whether the token service is configured.
func (s *Service) Minting() bool {
	return s.cfg.LiveKitURL != "" && s.cfg.LiveKitAPIKey != "" && s.cfg.LiveKitAPISecret != ""
}

// Foci is the legacy focus list (rtc_foci in /.well-known/matrix/client, and the
// unstable /rtc/transports): the LiveKit JWT service Element Call asks for tokens.
func (s *Service) Foci() []map[string]string {
	if s.cfg.LiveKitServiceURL == "" {
		return nil
	}
	return []map[string]string{{"type": "livekit", "livekit_service_url": s.cfg.LiveKitServiceURL}}
}

// Transports is MSC4195's transport list for /_matrix/client/v1/rtc/transports:
// the SFU itself, whose tokens this server mints.
func (s *Service) Transports() []map[string]string {
	if !s.Minting() {
		return []map[string]string{}
	}
	return []map[string]string{{"type": "m.livekit", "url": s.cfg.LiveKitURL}}
}

// URL is the SFU's WebSocket URL.
func (s *Service) URL() string { return s.cfg.LiveKitURL }

// Pseudonym is Base64(SHA256(canonical JSON [a, b])): MSC4195's LiveKit room name
// ([room_id, slot_id]) and participant identity ([sender, member_id]).
func Pseudonym(a, b string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // canonical JSON does not escape <, >, &
	_ = enc.Encode([]string{a, b})
	sum := sha256.Sum256(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// Grant is LiveKit's video grant, as its server reads it.
type Grant struct {
	Room           string `json:"room"`
	RoomJoin       bool   `json:"roomJoin"`
	RoomCreate     bool   `json:"roomCreate"`
	CanPublish     bool   `json:"canPublish"`
	CanSubscribe   bool   `json:"canSubscribe"`
	CanPublishData bool   `json:"canPublishData"`
}

// Token checks that userID is joined to roomID and returns a LiveKit token for the
// LiveKit room named for (roomID, slotID), as identity. Not joined, or a room the
// server does not know: M_FORBIDDEN, as MSC4195 says.
func (s *Service) Token(ctx context.Context, userID, roomID, slotID, identity string) (string, error) {
	if !s.Minting() {
		return "", mxerror.New(mxerror.NotFound, "no LiveKit service is configured on this server")
	}
	if err := rooms.CheckRoomID(roomID); err != nil {
		return "", err
	}
	members, err := s.rooms.JoinedMembers(ctx, roomID, userID)
	if err != nil {
		if mxerror.Is(err, mxerror.NotFound) || mxerror.Is(err, mxerror.Forbidden) {
			return "", mxerror.New(mxerror.Forbidden, "you are not joined to %s", roomID)
		}
		return "", err
	}
	if _, ok := members[userID]; !ok {
		return "", mxerror.New(mxerror.Forbidden, "you are not joined to %s", roomID)
	}
	now := s.now()
	claims := map[string]any{
		"iss": s.cfg.LiveKitAPIKey,
		"sub": identity,
		"nbf": now.Unix(),
		"exp": now.Add(s.cfg.LiveKitTokenTTL).Unix(),
		// Room creation stays with the SFU's auto_create: the grant also lets its
		// holder delete any room (MSC4195), so it is never handed out.
		"video": Grant{Room: Pseudonym(roomID, slotID), RoomJoin: true, CanPublish: true, CanSubscribe: true, CanPublishData: true},
	}
	return sign(claims, s.cfg.LiveKitAPISecret)
}

// sign encodes an HS256 JWT.
func sign(claims map[string]any, secret string) (string, error) {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("livekit token: %w", err)
	}
	msg := header + "." + base64.RawURLEncoding.EncodeToString(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return msg + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}
