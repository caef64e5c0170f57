package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/hongyan/hongyan/native"
)

// TxnID returns a fresh transaction ID; sends carry one so a retry after a lost
// connection does not send twice.
func TxnID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Send sends a message (see native.Send for the kinds); a missing TxnID is filled.
func (c *Client) Send(ctx context.Context, req native.Send) (native.Sent, error) {
	if req.TxnID == "" {
		req.TxnID = TxnID()
	}
	var out native.Sent
	err := c.Call(ctx, "send", req, &out)
	return out, err
}

// SendText sends a plain text message.
func (c *Client) SendText(ctx context.Context, roomID, text string) (native.Sent, error) {
	return c.Send(ctx, native.Send{RoomID: roomID, Body: text})
}

// Edit replaces the text of one of the user's messages.
func (c *Client) Edit(ctx context.Context, roomID, eventID, text string) (native.Sent, error) {
	var out native.Sent
	err := c.Call(ctx, "edit", native.Edit{RoomID: roomID, EventID: eventID, Body: text, TxnID: TxnID()}, &out)
	return out, err
}

// React annotates an event with key.
func (c *Client) React(ctx context.Context, roomID, eventID, key string) (native.Sent, error) {
	var out native.Sent
	err := c.Call(ctx, "react", native.React{RoomID: roomID, EventID: eventID, Key: key, TxnID: TxnID()}, &out)
	return out, err
}

// Redact removes an event's content.
func (c *Client) Redact(ctx context.Context, roomID, eventID, reason string) (native.Sent, error) {
	var out native.Sent
	err := c.Call(ctx, "redact", native.Redact{RoomID: roomID, EventID: eventID, Reason: reason, TxnID: TxnID()}, &out)
	return out, err
}

// History returns up to limit events before beforeSeq (0: the latest), newest first.
func (c *Client) History(ctx context.Context, roomID string, beforeSeq int64, limit int) (native.HistoryReply, error) {
	var out native.HistoryReply
	err := c.Call(ctx, "history", native.History{RoomID: roomID, BeforeSeq: beforeSeq, Limit: limit}, &out)
	return out, err
}

// Rooms lists the user's joined and invited rooms.
func (c *Client) Rooms(ctx context.Context) ([]native.RoomInfo, error) {
	var out native.RoomsReply
	err := c.Call(ctx, "rooms", struct{}{}, &out)
	return out.Rooms, err
}

// State returns a room's current state.
func (c *Client) State(ctx context.Context, roomID string) ([]native.Event, error) {
	var out native.StateReply
	err := c.Call(ctx, "state", native.RoomRef{RoomID: roomID}, &out)
	return out.Events, err
}

// Typing says the user is typing (or stopped) in a room.
func (c *Client) Typing(ctx context.Context, roomID string, typing bool, timeoutMs int64) error {
	return c.Call(ctx, "typing", native.Typing{RoomID: roomID, Typing: typing, TimeoutMs: timeoutMs}, nil)
}

// Receipt marks an event read (m.read).
func (c *Client) Receipt(ctx context.Context, roomID, eventID string) error {
	return c.Call(ctx, "receipt", native.Receipt{RoomID: roomID, EventID: eventID}, nil)
}

// SetPresence sets the user's presence (online, unavailable, offline).
func (c *Client) SetPresence(ctx context.Context, presence string, statusMsg *string) error {
	return c.Call(ctx, "presence", native.Presence{Presence: presence, StatusMsg: statusMsg}, nil)
}

// Presence returns a user's presence.
func (c *Client) Presence(ctx context.Context, userID string) (native.PresenceReply, error) {
	var out native.PresenceReply
	err := c.Call(ctx, "get_presence", native.UserRef{UserID: userID}, &out)
	return out, err
}

// Profile returns a user's profile ("" for the user's own).
func (c *Client) Profile(ctx context.Context, userID string) (native.Profile, error) {
	var out native.Profile
	err := c.Call(ctx, "profile", native.UserRef{UserID: userID}, &out)
	return out, err
}

// SetProfile changes the user's display name and/or avatar.
func (c *Client) SetProfile(ctx context.Context, p native.Profile) error {
	return c.Call(ctx, "set_profile", p, nil)
}

// Join joins a room by ID or alias and returns its ID. via names servers to join
// through when room is an ID of a room on another server; an alias needs none.
func (c *Client) Join(ctx context.Context, room string, via ...string) (string, error) {
	var out native.RoomRef
	err := c.Call(ctx, "join", native.Join{Room: room, Via: via}, &out)
	return out.RoomID, err
}

// Leave leaves a room.
func (c *Client) Leave(ctx context.Context, roomID string) error {
	return c.Call(ctx, "leave", native.RoomRef{RoomID: roomID}, nil)
}

// Invite invites a user.
func (c *Client) Invite(ctx context.Context, roomID, userID string) error {
	return c.Call(ctx, "invite", native.Invite{RoomID: roomID, UserID: userID}, nil)
}

// CreateRoom creates a room and returns its ID.
func (c *Client) CreateRoom(ctx context.Context, req native.CreateRoom) (string, error) {
	var out native.RoomRef
	err := c.Call(ctx, "create_room", req, &out)
	return out.RoomID, err
}

// Upload stores a file and returns its mxc:// URI.
func (c *Client) Upload(ctx context.Context, contentType, filename string, data []byte) (string, error) {
	var out native.UploadReply
	err := c.Call(ctx, "upload", native.Upload{ContentType: contentType, Filename: filename, Data: data}, &out)
	return out.ContentURI, err
}

// Download fetches a file by mxc:// URI.
func (c *Client) Download(ctx context.Context, contentURI string) (native.DownloadReply, error) {
	var out native.DownloadReply
	err := c.Call(ctx, "download", native.Download{ContentURI: contentURI}, &out)
	return out, err
}

// Pushers lists the user's pushers (GET /pushers).
func (c *Client) Pushers(ctx context.Context) ([]native.Pusher, error) {
	var out native.PushersReply
	err := c.Call(ctx, "pushers.get", struct{}{}, &out)
	return out.Pushers, err
}

// SetPusher creates or updates a pusher (POST /pushers/set); a nil Kind deletes
// the one with the request's app_id and pushkey.
func (c *Client) SetPusher(ctx context.Context, req native.PushersSet) error {
	return c.Call(ctx, "pushers.set", req, nil)
}
