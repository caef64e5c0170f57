package main

import (
	"context"
	"strings"

	"github.com/hongyan/hongyan/native"
	"github.com/hongyan/hongyan/native/sdk"
)

// friendCommand runs the friends commands.
func (t *cli) friendCommand(ctx context.Context, cmd, arg string) error {
	user, rest, _ := strings.Cut(arg, " ")
	switch cmd {
	case "/friend":
		r, err := t.c.RequestFriend(ctx, user, strings.TrimSpace(rest))
		if err == nil {
			t.printf("* friend request sent to %s\n", r.UserID)
		}
		return err
	case "/requests":
		rs, err := t.c.FriendRequests(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs.Incoming {
			t.printf("  from %s: %s — /accept %s\n", r.UserID, r.Message, r.UserID)
		}
		for _, r := range rs.Outgoing {
			t.printf("  to %s (waiting)\n", r.UserID)
		}
		if len(rs.Incoming)+len(rs.Outgoing) == 0 {
			t.printf("* no pending friend requests\n")
		}
		return nil
	case "/accept":
		roomID, err := t.c.AcceptFriend(ctx, user)
		if err == nil {
			t.mu.Lock()
			t.room, t.name[roomID] = roomID, user
			t.mu.Unlock()
			t.printf("* %s is your friend; chat with them here\n", user)
		}
		return err
	case "/decline":
		return t.c.DeclineFriend(ctx, user)
	case "/cancel":
		return t.c.CancelFriendRequest(ctx, user)
	case "/friends":
		fs, err := t.c.Friends(ctx)
		if err != nil {
			return err
		}
		for _, f := range fs {
			name := f.UserID
			if f.DisplayName != nil {
				name = *f.DisplayName + " (" + f.UserID + ")"
			}
			t.printf("  %s  %s  room %s\n", name, f.Presence, f.RoomID)
		}
		if len(fs) == 0 {
			t.printf("* no friends yet: /friend @user:server\n")
		}
		return nil
	case "/unfriend":
		return t.c.RemoveFriend(ctx, user)
	case "/block":
		return t.c.Block(ctx, user)
	default: // "/unblock"
		return t.c.Unblock(ctx, user)
	}
}

// groupCommand runs the group commands; most act on the open room.
func (t *cli) groupCommand(ctx context.Context, cmd, arg, room string) error {
	switch cmd {
	case "/group":
		fields := strings.Fields(arg)
		if len(fields) == 0 {
			t.printf("! usage: /group NAME [@user …]\n")
			return nil
		}
		id, err := t.c.CreateGroup(ctx, fields[0], fields[1:]...)
		if err == nil {
			t.mu.Lock()
			t.room, t.name[id] = id, fields[0]
			t.mu.Unlock()
			t.printf("* created group %s (%s), now open\n", fields[0], id)
		}
		return err
	case "/groups":
		gs, err := t.c.Groups(ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			muted := ""
			if g.Muted {
				muted = ", muted"
			}
			t.printf("  %s  %s  (%d members, owner %s%s)\n", g.RoomID, g.Name, g.Members, g.Owner, muted)
		}
		return nil
	case "/members":
		ms, err := t.c.GroupMembers(ctx, room)
		if err != nil {
			return err
		}
		for _, m := range ms {
			t.printf("  %s  %s\n", m.UserID, m.Role)
		}
		return nil
	case "/kick":
		return t.c.KickFromGroup(ctx, room, arg, "")
	case "/transfer":
		return t.c.TransferGroup(ctx, room, arg)
	case "/rename":
		return t.c.UpdateGroup(ctx, native.GroupUpdate{RoomID: room, Name: &arg})
	case "/mute", "/unmute":
		return t.c.MuteGroup(ctx, room, cmd == "/mute")
	default: // "/dissolve"
		return t.c.DissolveGroup(ctx, room)
	}
}

// showSocial prints a friends or groups push.
func (t *cli) showSocial(p *sdk.SocialPush) {
	switch p.Kind {
	case "friend_request":
		t.printf("* %s wants to be your friend: %s — /accept %s\n", p.From, p.Message, p.From)
	case "friend_answer":
		switch p.Answer {
		case "accepted":
			t.mu.Lock()
			t.name[p.RoomID] = p.From
			t.mu.Unlock()
			t.printf("* %s accepted your friend request — /open %s\n", p.From, p.RoomID)
		case "declined":
			t.printf("* %s declined your friend request\n", p.From)
		default:
			t.printf("* %s withdrew their friend request\n", p.From)
		}
	case "friend_removed":
		t.printf("* %s is no longer your friend\n", p.From)
	case "group_change":
		switch p.Change {
		case "invite":
			t.printf("* %s invited you to a group — /join %s\n", p.From, p.RoomID)
		case "removed":
			t.printf("* %s removed you from %s\n", p.From, t.label(p.RoomID))
		case "dissolved":
			t.printf("* the group %s was dissolved\n", t.label(p.RoomID))
		}
	}
}
