package push

import "encoding/json"

// This file is the contract between the evaluator (which decides, for every new
// event, whom it notifies and keeps the unread counts) and the consumers of its
// decisions (the pusher delivering to push gateways, native sessions). The
// evaluator stores each decision in SQL with a position of its own stream and
// publishes NoticeSubject on the bus; a consumer keeps its own cursor and reads
// NotificationsSince, exactly as the federation sender walks the events stream, so
// a notification decided just before a crash is still delivered after it.

// NoticeSubject is the bus subject published after notifications are stored. It
// only wakes consumers; they read the truth with NotificationsSince.
const NoticeSubject = "hongyan.push.notified"

// Notification is one event that a user's push rules say notifies them.
type Notification struct {
	// Pos is the notification's position in the notifications stream: strictly
	// increasing in commit order, so a cursor never skips one.
	Pos     int64
	UserID  string
	RoomID  string
	EventID string
	// ThreadID is the event's thread root ("" for the main timeline).
	ThreadID string
	// TS is the event's origin_server_ts in milliseconds.
	TS int64
	// Actions are the matching rule's actions (notify, set_tweak …).
	Actions []json.RawMessage
	// Highlight is true when a set_tweak highlight (value true or absent) matched.
	Highlight bool
	// Unread is the user's unread count in the room after this event.
	Unread Counts
}

// Counts is a user's unread counts in one room (or one thread of it).
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}
