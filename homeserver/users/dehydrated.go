package users

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/storage"
)

// SetDehydratedDevice makes deviceID the user's dehydrated device (MSC3814), with
// the client's encrypted device data, replacing (and deleting) an earlier one.
func (s *Service) SetDehydratedDevice(ctx context.Context, localpart, deviceID, displayName string, data json.RawMessage) error {
	var replaced []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		replaced = replaced[:0]
		var old string
		err := tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE localpart = $1`, localpart).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read dehydrated device: %w", err)
		}
		if old != deviceID {
			var one int
			if err := tx.QueryRow(ctx, `SELECT 1 FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, deviceID).Scan(&one); err == nil {
				return mxerror.New(mxerror.InvalidParam, "device ID %s is in use by another device", deviceID)
			}
		}
		if err == nil && old != deviceID {
			if _, err := tx.Exec(ctx, `DELETE FROM devices WHERE localpart = $1 AND device_id = $2`, localpart, old); err != nil {
				return fmt.Errorf("delete old dehydrated device: %w", err)
			}
			replaced = append(replaced, old)
		}
		var name any
		if displayName != "" {
			name = displayName
		}
		if _, err := tx.Exec(ctx, `INSERT INTO devices (localpart, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (localpart, device_id) DO NOTHING`, localpart, deviceID, name, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("create dehydrated device: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO dehydrated_devices (localpart, device_id, device_data) VALUES ($1, $2, $3)
			ON CONFLICT (localpart) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
			localpart, deviceID, string(data))
		return err
	})
	if err != nil {
		return err
	}
	return s.devicesDeleted(ctx, localpart, replaced, false)
}

// DehydratedDevice returns the user's dehydrated device and its data, or ErrNotFound.
func (s *Service) DehydratedDevice(ctx context.Context, localpart string) (string, json.RawMessage, error) {
	var deviceID, data string
	// Joined with devices: a dehydrated device deleted like any device is gone.
	err := s.db.QueryRow(ctx, `SELECT d.device_id, d.device_data FROM dehydrated_devices d
		JOIN devices v ON v.localpart = d.localpart AND v.device_id = d.device_id WHERE d.localpart = $1`, localpart).Scan(&deviceID, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, ErrNotFound
	}
	if err != nil {
		return "", nil, fmt.Errorf("read dehydrated device: %w", err)
	}
	return deviceID, json.RawMessage(data), nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device and returns its ID,
// or ErrNotFound.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, localpart string) (string, error) {
	deviceID, _, err := s.DehydratedDevice(ctx, localpart)
	if err != nil {
		return "", err
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM dehydrated_devices WHERE localpart = $1`, localpart); err != nil {
		return "", fmt.Errorf("delete dehydrated device: %w", err)
	}
	return deviceID, s.DeleteDevices(ctx, localpart, []string{deviceID})
}
