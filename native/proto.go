package native

// ProtocolVersion is the version a hello names.
const ProtocolVersion = 1

// Envelope is every frame body's head: requests carry an id that their reply
// repeats; op names the request, "reply", "error", or a push. The payload is in
// data, decoded once the op is known.
type Envelope struct {
	ID string `json:"id,omitempty"`
	Op string `json:"op"`
}

// Message is a whole frame body with a typed payload.
type Message[T any] struct {
	ID   string `json:"id,omitempty"`
	Op   string `json:"op"`
	Data T      `json:"data"`
}

// Error is the payload of an "error" reply: a Matrix error code
// (M_FORBIDDEN, M_BAD_JSON, M_LIMIT_EXCEEDED, …) and a message.
type Error struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Close reason codes, sent in a "close" push before the server closes.
const (
	CloseNormal       = "normal"          // the client asked to close
	CloseBadFrame     = "bad_frame"       // unreadable framing: unknown codec byte, truncated frame
	CloseTooLarge     = "frame_too_large" // a frame over the session's limit
	CloseProtocol     = "protocol_error"  // hello missing or repeated, codec switched mid-session
	CloseIdle         = "idle_timeout"    // nothing received within the idle timeout
	CloseSlowConsumer = "slow_consumer"   // the outgoing queue or unacknowledged pushes hit their bound
	CloseShutdown     = "server_shutdown"
	CloseLoggedOut    = "logged_out" // the access token stopped being valid
	// CloseLocked: an admin locked the account; the token stays valid, so the
	// client keeps it and reconnects to learn when the lock is lifted.
	CloseLocked = "account_locked"
)

// ClosePush is the payload of a "close" push.
type ClosePush struct {
	Code   string `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// Hello opens a session; it must be the first frame, and its codec byte chooses the
// session's codec.
type Hello struct {
	Version int    `json:"version"`
	Client  string `json:"client,omitempty"`
}

// HelloReply describes the server and the session's limits.
type HelloReply struct {
	Server        string `json:"server"`
	ServerName    string `json:"server_name"`
	Version       int    `json:"version"`
	SessionID     string `json:"session_id"`
	HeartbeatMs   int64  `json:"heartbeat_ms"`
	IdleTimeoutMs int64  `json:"idle_timeout_ms"`
	MaxFrame      int    `json:"max_frame"`
}

// Auth authenticates with an access token, or with user and password (which
// creates a device and returns its access token).
type Auth struct {
	Token      string `json:"token,omitempty"`
	User       string `json:"user,omitempty"`
	Password   string `json:"password,omitempty"`
	DeviceID   string `json:"device_id,omitempty"`
	DeviceName string `json:"device_name,omitempty"`
}

// AuthReply names the authenticated user and device.
type AuthReply struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id"`
	AccessToken string `json:"access_token,omitempty"`
}

// Resume starts pushes. For each room listed the server first sends every event
// after the given seq, in order; other joined rooms push from now on.
type Resume struct {
	Rooms map[string]int64 `json:"rooms,omitempty"`
}

// Ack acknowledges pushes: for each room, every event up to and including seq.
type Ack struct {
	Rooms map[string]int64 `json:"rooms"`
}

// Send sends a message. Kind picks the msgtype: text (default), notice, emote,
// image, file, audio, video (with url and info), location (with geo_uri); custom
// sends Content as an event of Type. ReplyTo and ThreadRoot make it a reply and/or a
// thread message. TxnID makes a retried send idempotent per device.
type Send struct {
	RoomID        string         `json:"room_id"`
	TxnID         string         `json:"txn_id,omitempty"`
	Kind          string         `json:"kind,omitempty"`
	Body          string         `json:"body,omitempty"`
	FormattedBody string         `json:"formatted_body,omitempty"`
	URL           string         `json:"url,omitempty"`
	Info          map[string]any `json:"info,omitempty"`
	GeoURI        string         `json:"geo_uri,omitempty"`
	Type          string         `json:"type,omitempty"`
	Content       map[string]any `json:"content,omitempty"`
	ReplyTo       string         `json:"reply_to,omitempty"`
	ThreadRoot    string         `json:"thread_root,omitempty"`
}

// Sent answers a send, edit, react or redact.
type Sent struct {
	EventID string `json:"event_id"`
	Seq     int64  `json:"seq"`
}

// Edit replaces a message's text (m.replace).
type Edit struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
	Body    string `json:"body"`
	TxnID   string `json:"txn_id,omitempty"`
}

// React annotates an event with a key, usually an emoji (m.annotation).
type React struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
	Key     string `json:"key"`
	TxnID   string `json:"txn_id,omitempty"`
}

// Redact removes an event's content.
type Redact struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
	Reason  string `json:"reason,omitempty"`
	TxnID   string `json:"txn_id,omitempty"`
}

// Event is a room event as pushes and history carry it.
type Event struct {
	Seq            int64          `json:"seq"`
	EventID        string         `json:"event_id"`
	RoomID         string         `json:"room_id"`
	Type           string         `json:"type"`
	Sender         string         `json:"sender"`
	StateKey       *string        `json:"state_key,omitempty"`
	OriginServerTS int64          `json:"origin_server_ts"`
	Content        map[string]any `json:"content"`
	Redacts        string         `json:"redacts,omitempty"`
	Unsigned       map[string]any `json:"unsigned,omitempty"`
}

// History pages backwards through a room: events with seq < BeforeSeq (0: the
// latest), newest first.
type History struct {
	RoomID    string `json:"room_id"`
	BeforeSeq int64  `json:"before_seq,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// HistoryReply is one page; NextBeforeSeq continues it (0: the start was reached).
type HistoryReply struct {
	Events        []Event `json:"events"`
	NextBeforeSeq int64   `json:"next_before_seq"`
}

// RoomInfo describes one of the user's rooms.
type RoomInfo struct {
	RoomID     string `json:"room_id"`
	Membership string `json:"membership"`
	Name       string `json:"name,omitempty"`
	LatestSeq  int64  `json:"latest_seq"`
}

// RoomsReply lists the user's joined and invited rooms.
type RoomsReply struct {
	Rooms []RoomInfo `json:"rooms"`
}

// RoomRef names one room.
type RoomRef struct {
	RoomID string `json:"room_id"`
}

// StateReply is a room's current state.
type StateReply struct {
	Events []Event `json:"events"`
}

// Typing says the user is (or stopped) typing.
type Typing struct {
	RoomID    string `json:"room_id"`
	Typing    bool   `json:"typing"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
}

// Receipt marks an event read (Type m.read by default, or m.read.private).
type Receipt struct {
	RoomID   string `json:"room_id"`
	EventID  string `json:"event_id"`
	Type     string `json:"type,omitempty"`
	ThreadID string `json:"thread_id,omitempty"`
}

// Presence sets the user's presence.
type Presence struct {
	Presence  string  `json:"presence"`
	StatusMsg *string `json:"status_msg,omitempty"`
}

// UserRef names one user.
type UserRef struct {
	UserID string `json:"user_id"`
}

// PresenceReply is a user's presence.
type PresenceReply struct {
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago,omitempty"`
	CurrentlyActive bool    `json:"currently_active"`
}

// Profile is a user's display name and avatar; in set_profile, absent fields stay.
type Profile struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Join joins a room by ID or alias.
type Join struct {
	Room string `json:"room"`
	// Via lists servers to join through when the room is on another server and
	// named by ID (an alias is resolved by its own server, which names them).
	Via []string `json:"via,omitempty"`
}

// CreateRoom creates a room; Preset is private_chat (default), public_chat or
// trusted_private_chat.
type CreateRoom struct {
	Name     string   `json:"name,omitempty"`
	Topic    string   `json:"topic,omitempty"`
	Invite   []string `json:"invite,omitempty"`
	Preset   string   `json:"preset,omitempty"`
	IsDirect bool     `json:"is_direct,omitempty"`
}

// Invite invites a user to a room.
type Invite struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
}

// Upload stores a file in the media repository (up to the frame limit; larger files
// go through the HTTP media API).
type Upload struct {
	ContentType string `json:"content_type,omitempty"`
	Filename    string `json:"filename,omitempty"`
	Data        []byte `json:"data"`
}

// UploadReply is the stored file's content URI.
type UploadReply struct {
	ContentURI string `json:"content_uri"`
}

// Download fetches a file by content URI.
type Download struct {
	ContentURI string `json:"content_uri"`
}

// DownloadReply is a downloaded file.
type DownloadReply struct {
	ContentType string `json:"content_type"`
	Filename    string `json:"filename,omitempty"`
	Data        []byte `json:"data"`
}

// EventPush is the payload of an "event" push.
type EventPush struct {
	RoomID string `json:"room_id"`
	Seq    int64  `json:"seq"`
	Event  Event  `json:"event"`
}

// TypingPush is the payload of a "typing" push: who types in the room now.
type TypingPush struct {
	RoomID  string   `json:"room_id"`
	UserIDs []string `json:"user_ids"`
}

// ReceiptPush is the payload of a "receipt" push.
type ReceiptPush struct {
	RoomID   string `json:"room_id"`
	UserID   string `json:"user_id"`
	Type     string `json:"type"`
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id,omitempty"`
	TS       int64  `json:"ts"`
}

// FriendRequestOp sends a friend request (op friend_request) with a message.
type FriendRequestOp struct {
	UserID  string `json:"user_id"`
	Message string `json:"message,omitempty"`
}

// Pusher is one of the user's pushers (pushers.get), as GET /pushers lists it.
type Pusher struct {
	PushKey           string         `json:"pushkey"`
	Kind              string         `json:"kind"`
	AppID             string         `json:"app_id"`
	AppDisplayName    string         `json:"app_display_name"`
	DeviceDisplayName string         `json:"device_display_name"`
	ProfileTag        string         `json:"profile_tag,omitempty"`
	Lang              string         `json:"lang"`
	Data              map[string]any `json:"data"`
}

// PushersReply lists the user's pushers.
type PushersReply struct {
	Pushers []Pusher `json:"pushers"`
}

// PushersSet is the pushers.set op's data: the fields of POST /pushers/set, with
// the same meaning ("kind": null deletes the pusher with app_id and pushkey; no
// kind at all is M_MISSING_PARAM). Kind is a pointer so a client can send null.
type PushersSet struct {
	PushKey           string         `json:"pushkey"`
	Kind              *string        `json:"kind"`
	AppID             string         `json:"app_id"`
	AppDisplayName    string         `json:"app_display_name,omitempty"`
	DeviceDisplayName string         `json:"device_display_name,omitempty"`
	ProfileTag        string         `json:"profile_tag,omitempty"`
	Lang              string         `json:"lang,omitempty"`
	Data              map[string]any `json:"data,omitempty"`
	Append            bool           `json:"append,omitempty"`
}

// NotificationPush is the payload of a "notification" push: the user's push
// rules say an event notifies them. The event itself arrives as an "event" push
// of its room; this says it should ring, and the room's unread counts after it.
type NotificationPush struct {
	RoomID    string `json:"room_id"`
	EventID   string `json:"event_id"`
	ThreadID  string `json:"thread_id,omitempty"`
	TS        int64  `json:"ts"`
	Highlight bool   `json:"highlight"`
	// Sound is the sound tweak's value ("default"), "" for a silent notification.
	Sound             string `json:"sound,omitempty"`
	NotificationCount int    `json:"notification_count"`
	HighlightCount    int    `json:"highlight_count"`
}

// FriendRequest is a friend request as one side sees it: UserID is the other
// side. RoomID is the request's direct-message room.
type FriendRequest struct {
	RoomID    string `json:"room_id"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester"`
	Target    string `json:"target"`
	Message   string `json:"message"`
	TS        int64  `json:"ts"`
}

// FriendRequests answers friend_requests: the user's pending requests.
type FriendRequests struct {
	Incoming []FriendRequest `json:"incoming"`
	Outgoing []FriendRequest `json:"outgoing"`
}

// Friend is one entry of the friends reply.
type Friend struct {
	UserID        string  `json:"user_id"`
	RoomID        string  `json:"room_id"`
	Since         int64   `json:"since"`
	DisplayName   *string `json:"displayname,omitempty"`
	AvatarURL     *string `json:"avatar_url,omitempty"`
	Presence      string  `json:"presence,omitempty"`
	StatusMsg     *string `json:"status_msg,omitempty"`
	LastActiveAgo int64   `json:"last_active_ago,omitempty"`
}

// FriendsReply answers friends.
type FriendsReply struct {
	Friends []Friend `json:"friends"`
}

// BlockedReply answers blocked.
type BlockedReply struct {
	Blocked []string `json:"blocked"`
}

// GroupCreate creates a group (op group_create).
type GroupCreate struct {
	Name    string   `json:"name"`
	Members []string `json:"members,omitempty"`
}

// Group is one of the user's groups.
type Group struct {
	RoomID       string `json:"room_id"`
	Name         string `json:"name"`
	AvatarURL    string `json:"avatar_url,omitempty"`
	Announcement string `json:"announcement,omitempty"`
	Owner        string `json:"owner"`
	Members      int    `json:"joined_members"`
	Muted        bool   `json:"muted"`
}

// GroupsReply answers groups.
type GroupsReply struct {
	Groups []Group `json:"groups"`
}

// GroupMember is a member and their role: owner, admin or member.
type GroupMember struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
	Role        string  `json:"role"`
	PowerLevel  int64   `json:"power_level"`
}

// GroupMembersReply answers group_members.
type GroupMembersReply struct {
	Members []GroupMember `json:"members"`
}

// GroupUser names a group and a user (group_invite, group_kick, group_transfer).
type GroupUser struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Reason string `json:"reason,omitempty"`
}

// GroupUpdate changes a group's name, avatar (mxc://) or announcement; absent
// fields stay.
type GroupUpdate struct {
	RoomID       string  `json:"room_id"`
	Name         *string `json:"name,omitempty"`
	AvatarURL    *string `json:"avatar_url,omitempty"`
	Announcement *string `json:"announcement,omitempty"`
}

// GroupMute mutes or unmutes a group for the user.
type GroupMute struct {
	RoomID string `json:"room_id"`
	Muted  bool   `json:"muted"`
}

// SocialPush is the payload of the typed social pushes, sent to every started
// session of the user it concerns:
//
//   - friend_request: From asks to be friends (RoomID, Message);
//   - friend_answer: From answered the user's request, or withdrew theirs: Answer
//     is accepted, declined or cancelled;
//   - friend_removed: From ended the friendship;
//   - group_change: Change is invite (From invited the user to RoomID), removed
//     (From removed the user), updated (name, avatar, announcement or roles) or
//     dissolved.
//
// They ride on room events the session also receives (the invite, the join); a
// session that was offline lists requests and groups when it connects.
type SocialPush struct {
	RoomID  string `json:"room_id"`
	From    string `json:"from,omitempty"`
	Message string `json:"message,omitempty"`
	Answer  string `json:"answer,omitempty"`
	Change  string `json:"change,omitempty"`
}
