package sdk

import (
	"context"

	"github.com/hongyan/hongyan/native"
)

// Friends and groups: typed calls of the native ops (docs/native-protocol.md).

// RequestFriend sends a friend request with a message. A second request while one
// is pending returns the first.
func (c *Client) RequestFriend(ctx context.Context, userID, message string) (native.FriendRequest, error) {
	var out native.FriendRequest
	err := c.Call(ctx, "friend_request", native.FriendRequestOp{UserID: userID, Message: message}, &out)
	return out, err
}

// FriendRequests lists the user's pending requests, incoming and outgoing.
func (c *Client) FriendRequests(ctx context.Context) (native.FriendRequests, error) {
	var out native.FriendRequests
	err := c.Call(ctx, "friend_requests", struct{}{}, &out)
	return out, err
}

// AcceptFriend accepts requester's request and returns the friends' room.
func (c *Client) AcceptFriend(ctx context.Context, requester string) (string, error) {
	var out native.RoomRef
	err := c.Call(ctx, "friend_accept", native.UserRef{UserID: requester}, &out)
	return out.RoomID, err
}

// DeclineFriend declines requester's request.
func (c *Client) DeclineFriend(ctx context.Context, requester string) error {
	return c.Call(ctx, "friend_decline", native.UserRef{UserID: requester}, nil)
}

// CancelFriendRequest withdraws the user's request to target.
func (c *Client) CancelFriendRequest(ctx context.Context, target string) error {
	return c.Call(ctx, "friend_cancel", native.UserRef{UserID: target}, nil)
}

// Friends lists the user's friends with profile and presence.
func (c *Client) Friends(ctx context.Context) ([]native.Friend, error) {
	var out native.FriendsReply
	err := c.Call(ctx, "friends", struct{}{}, &out)
	return out.Friends, err
}

// RemoveFriend ends a friendship.
func (c *Client) RemoveFriend(ctx context.Context, userID string) error {
	return c.Call(ctx, "friend_remove", native.UserRef{UserID: userID}, nil)
}

// Block blocks a user (m.ignored_user_list).
func (c *Client) Block(ctx context.Context, userID string) error {
	return c.Call(ctx, "block", native.UserRef{UserID: userID}, nil)
}

// Unblock unblocks a user.
func (c *Client) Unblock(ctx context.Context, userID string) error {
	return c.Call(ctx, "unblock", native.UserRef{UserID: userID}, nil)
}

// Blocked lists the users the user blocked.
func (c *Client) Blocked(ctx context.Context) ([]string, error) {
	var out native.BlockedReply
	err := c.Call(ctx, "blocked", struct{}{}, &out)
	return out.Blocked, err
}

// CreateGroup creates a group with initial members invited and returns its room.
func (c *Client) CreateGroup(ctx context.Context, name string, members ...string) (string, error) {
	var out native.RoomRef
	err := c.Call(ctx, "group_create", native.GroupCreate{Name: name, Members: members}, &out)
	return out.RoomID, err
}

// Groups lists the user's groups.
func (c *Client) Groups(ctx context.Context) ([]native.Group, error) {
	var out native.GroupsReply
	err := c.Call(ctx, "groups", struct{}{}, &out)
	return out.Groups, err
}

// GroupMembers lists a group's members with their roles.
func (c *Client) GroupMembers(ctx context.Context, roomID string) ([]native.GroupMember, error) {
	var out native.GroupMembersReply
	err := c.Call(ctx, "group_members", native.RoomRef{RoomID: roomID}, &out)
	return out.Members, err
}

// InviteToGroup invites a user to a group.
func (c *Client) InviteToGroup(ctx context.Context, roomID, userID string) error {
	return c.Call(ctx, "group_invite", native.GroupUser{RoomID: roomID, UserID: userID}, nil)
}

// JoinGroup joins a group the user was invited to.
func (c *Client) JoinGroup(ctx context.Context, roomID string) error {
	return c.Call(ctx, "group_join", native.RoomRef{RoomID: roomID}, nil)
}

// LeaveGroup leaves a group (the owner transfers or dissolves it instead).
func (c *Client) LeaveGroup(ctx context.Context, roomID string) error {
	return c.Call(ctx, "group_leave", native.RoomRef{RoomID: roomID}, nil)
}

// KickFromGroup removes a member.
func (c *Client) KickFromGroup(ctx context.Context, roomID, userID, reason string) error {
	return c.Call(ctx, "group_kick", native.GroupUser{RoomID: roomID, UserID: userID, Reason: reason}, nil)
}

// TransferGroup hands the group to another member.
func (c *Client) TransferGroup(ctx context.Context, roomID, userID string) error {
	return c.Call(ctx, "group_transfer", native.GroupUser{RoomID: roomID, UserID: userID}, nil)
}

// UpdateGroup renames a group, or sets its avatar or announcement.
func (c *Client) UpdateGroup(ctx context.Context, u native.GroupUpdate) error {
	return c.Call(ctx, "group_update", u, nil)
}

// MuteGroup mutes or unmutes a group for the user.
func (c *Client) MuteGroup(ctx context.Context, roomID string, muted bool) error {
	return c.Call(ctx, "group_mute", native.GroupMute{RoomID: roomID, Muted: muted}, nil)
}

// DissolveGroup dissolves a group (owner only).
func (c *Client) DissolveGroup(ctx context.Context, roomID string) error {
	return c.Call(ctx, "group_dissolve", native.RoomRef{RoomID: roomID}, nil)
}
