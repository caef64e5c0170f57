package users

import (
	"context"
	"encoding/json"
	"log/slog"
)

// RevokedSubject is the NATS subject a Revoked notice is published on.
const RevokedSubject = "hongyan.users.revoked"

// Revoked says that access tokens of a user's devices stopped working: a logout,
// a device deletion, a password change that logged other devices out, a
// deactivation, or a new login that reused a device ID. Front-ends that hold
// sessions open past the request that authenticated them (the native protocol) check
// those sessions' tokens at once and close the dead ones, on every node, instead of
// waiting for their next periodic check.
type Revoked struct {
	UserID string `json:"user_id"`
	// DeviceIDs are the devices concerned; All means every device of the user.
	DeviceIDs []string `json:"device_ids,omitempty"`
	All       bool     `json:"all,omitempty"`
}

// Covers reports whether the notice concerns deviceID.
func (r Revoked) Covers(deviceID string) bool {
	if r.All {
		return true
	}
	for _, d := range r.DeviceIDs {
		if d == deviceID {
			return true
		}
	}
	return false
}

// revoked publishes a Revoked notice, after the change it announces committed.
func (s *Service) revoked(localpart string, deviceIDs []string, all bool) {
	if s.cfg.Bus == nil || (!all && len(deviceIDs) == 0) {
		return
	}
	data, _ := json.Marshal(Revoked{UserID: s.UserID(localpart), DeviceIDs: deviceIDs, All: all})
	if err := s.cfg.Bus.Publish(RevokedSubject, data); err != nil {
		// Committed already; sessions then end at their next periodic token check.
		slog.Warn("publish revoked devices notice", "user", s.UserID(localpart), "err", err)
	}
}

// devicesChanged runs the DevicesChanged hook.
func (s *Service) devicesChanged(ctx context.Context, localpart, deviceID string) error {
	if s.cfg.DevicesChanged == nil {
		return nil
	}
	return s.cfg.DevicesChanged(ctx, s.UserID(localpart), deviceID)
}

// devicesDeleted announces the deletion of devices (all: every device of the
// user) and runs the DevicesDeleted hook.
func (s *Service) devicesDeleted(ctx context.Context, localpart string, deviceIDs []string, all bool) error {
	s.revoked(localpart, deviceIDs, all)
	if s.cfg.DevicesDeleted == nil || len(deviceIDs) == 0 {
		return nil
	}
	return s.cfg.DevicesDeleted(ctx, s.UserID(localpart), deviceIDs)
}
