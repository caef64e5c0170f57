package users

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Room tags live in the m.tag room account data, {"tags": {tag: {order?}}}, so that
// sync delivers them like any account data.

// RoomTags returns the user's tags of a room.
func (s *Service) RoomTags(ctx context.Context, localpart, roomID string) (map[string]json.RawMessage, error) {
	raw, err := s.AccountData(ctx, localpart, roomID, "m.tag")
	tags := map[string]json.RawMessage{}
	if errors.Is(err, ErrNotFound) {
		return tags, nil
	}
	if err != nil {
		return nil, err
	}
	var content struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(raw, &content) == nil && content.Tags != nil {
		tags = content.Tags
	}
	return tags, nil
}

// SetRoomTag adds or replaces a tag; order, if present, must be in [0, 1].
func (s *Service) SetRoomTag(ctx context.Context, localpart, roomID, tag string, content map[string]json.RawMessage) error {
	if order, ok := content["order"]; ok {
		var n float64
		if json.Unmarshal(order, &n) != nil || n < 0 || n > 1 {
			return mxerror.New(mxerror.InvalidParam, "order must be a number between 0 and 1")
		}
	}
	if len(tag) > 255 {
		return mxerror.New(mxerror.InvalidParam, "tag may not be longer than 255 bytes")
	}
	tags, err := s.RoomTags(ctx, localpart, roomID)
	if err != nil {
		return err
	}
	tags[tag], _ = json.Marshal(content)
	return s.saveTags(ctx, localpart, roomID, tags)
}

// DeleteRoomTag removes a tag.
func (s *Service) DeleteRoomTag(ctx context.Context, localpart, roomID, tag string) error {
	tags, err := s.RoomTags(ctx, localpart, roomID)
	if err != nil {
		return err
	}
	delete(tags, tag)
	return s.saveTags(ctx, localpart, roomID, tags)
}

func (s *Service) saveTags(ctx context.Context, localpart, roomID string, tags map[string]json.RawMessage) error {
	raw, _ := json.Marshal(map[string]any{"tags": tags})
	_, err := s.SetAccountData(ctx, localpart, roomID, "m.tag", raw)
	return err
}
