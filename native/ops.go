package native

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/presence"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/users"
)

// op is one request type. Its function decodes the request's data and calls the
// core; the reply is its result under "data".
type op struct {
	authed bool
	fn     func(ctx context.Context, s *session, body []byte) (any, error)
}

var ops map[string]op

func init() {
	ops = map[string]op{
		"hello":        {false, opHello},
		"auth":         {false, opAuth},
		"ping":         {false, opPing},
		"close":        {false, opClose},
		"resume":       {true, opResume},
		"ack":          {true, opAck},
		"send":         {true, opSend},
		"edit":         {true, opEdit},
		"react":        {true, opReact},
		"redact":       {true, opRedact},
		"history":      {true, opHistory},
		"rooms":        {true, opRooms},
		"state":        {true, opState},
		"typing":       {true, opTyping},
		"receipt":      {true, opReceipt},
		"presence":     {true, opPresence},
		"get_presence": {true, opGetPresence},
		"profile":      {true, opProfile},
		"set_profile":  {true, opSetProfile},
		"join":         {true, opJoin},
		"leave":        {true, opLeave},
		"invite":       {true, opInvite},
		"create_room":  {true, opCreateRoom},
		"upload":       {true, opUpload},
		"download":     {true, opDownload},
		"pushers.get":  {true, opPushersGet},
		"pushers.set":  {true, opPushersSet},
	}
	// Friends and groups (social.go).
	for name, o := range socialOps {
		ops[name] = o
	}
	// 1:1 call signalling (calls.go).
	for name, o := range callOps {
		ops[name] = o
	}
}

// decodeError is a request whose data does not decode into the op's fields.
type decodeError struct{ err error }

func (e decodeError) Error() string { return "bad request data: " + e.err.Error() }

func decode[T any](s *session, body []byte) (T, error) {
	var m Message[T]
	if err := Unmarshal(s.codec, body, &m); err != nil {
		return m.Data, decodeError{err}
	}
	return m.Data, nil
}

func opHello(_ context.Context, s *session, body []byte) (any, error) {
	if s.hello {
		return nil, mxerror.New(mxerror.BadState, "hello was already sent")
	}
	req, err := decode[Hello](s, body)
	if err != nil {
		return nil, &refusal{err: err, code: CloseProtocol, reason: err.Error()}
	}
	if req.Version != ProtocolVersion {
		s.hello = true // so the close frame uses the client's codec
		const why = "unsupported protocol version; this server speaks 1"
		return nil, &refusal{err: mxerror.New(mxerror.Unrecognized, why), code: CloseProtocol, reason: why}
	}
	s.hello = true
	return HelloReply{Server: "hongyan", ServerName: s.srv.cfg.ServerName, Version: ProtocolVersion, SessionID: s.id,
		HeartbeatMs: (s.srv.cfg.IdleTimeout / 3).Milliseconds(), IdleTimeoutMs: s.srv.cfg.IdleTimeout.Milliseconds(), MaxFrame: s.srv.cfg.MaxFrame}, nil
}

func opAuth(ctx context.Context, s *session, body []byte) (any, error) {
	if s.userID != "" {
		return nil, mxerror.New(mxerror.BadState, "already authenticated")
	}
	req, err := decode[Auth](s, body)
	if err != nil {
		return nil, err
	}
	u := s.srv.d.Users
	var reply AuthReply
	switch {
	case req.Token != "":
		c, err := u.Authenticate(ctx, req.Token, remoteIP(s))
		if err != nil {
			return nil, err
		}
		if c.Locked {
			return nil, mxerror.New(mxerror.UserLocked, "this account has been locked")
		}
		s.token = req.Token
		reply = AuthReply{UserID: c.UserID, DeviceID: c.DeviceID}
		s.localpart = c.Localpart
	case req.User != "" && req.Password != "":
		sess, err := u.LoginPassword(ctx, req.User, req.Password, users.LoginOptions{DeviceID: req.DeviceID, DisplayName: req.DeviceName, IP: remoteIP(s)})
		if err != nil {
			return nil, err
		}
		if locked, err := u.Restricted(ctx, sess.UserID, users.Locked); err != nil || locked {
			if err == nil {
				err = &mxerror.Error{Code: mxerror.UserLocked, Message: "this account has been locked", Extra: map[string]any{"access_token": sess.AccessToken, "device_id": sess.DeviceID}}
			}
			return nil, err
		}
		s.token = sess.AccessToken
		reply = AuthReply{UserID: sess.UserID, DeviceID: sess.DeviceID, AccessToken: sess.AccessToken}
		s.localpart, _ = u.LocalpartOf(sess.UserID)
	default:
		return nil, mxerror.New(mxerror.MissingParam, "auth needs a token, or a user and password")
	}
	s.userID, s.deviceID, s.tokenChecked = reply.UserID, reply.DeviceID, time.Now()
	slog.Debug("native session authenticated", "session", s.id, "user", s.userID, "device", s.deviceID)
	s.srv.addAuthed(s)
	// A revocation that committed between the token's check and addAuthed found
	// no session to close: look once more now that later ones will find it.
	if s.checkToken(ctx) {
		return nil, errEnd
	}
	return reply, nil
}

// remoteIP is the peer's address without the port: the key of its rate-limit
// bucket, the same as the HTTP API's for the same peer.
func remoteIP(s *session) string {
	addr := s.conn.RemoteAddr().String()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// opPing answers a heartbeat, and now and then checks the access token again.
func opPing(ctx context.Context, s *session, _ []byte) (any, error) {
	if s.token != "" && time.Since(s.tokenChecked) >= s.srv.cfg.TokenRecheck {
		s.tokenChecked = time.Now()
		if s.checkToken(ctx) {
			return nil, errEnd
		}
	}
	return struct{}{}, nil
}

func opClose(_ context.Context, s *session, _ []byte) (any, error) {
	s.closeWith(CloseNormal, "closed by the client")
	return nil, errEnd
}

func opResume(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Resume](s, body)
	if err != nil {
		return nil, err
	}
	if err := s.start(ctx, req.Rooms); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func opAck(_ context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Ack](s, body)
	if err != nil {
		return nil, err
	}
	s.ack(req.Rooms)
	return nil, nil
}

func (s *session) txn(id string) *rooms.Txn {
	if id == "" {
		return nil
	}
	return &rooms.Txn{Localpart: s.localpart, DeviceID: s.deviceID, ID: "native." + id}
}

// messageTypes maps a send's kind to its msgtype.
var messageTypes = map[string]string{
	"": "m.text", "text": "m.text", "notice": "m.notice", "emote": "m.emote", "image": "m.image",
	"file": "m.file", "audio": "m.audio", "video": "m.video", "location": "m.location",
}

func opSend(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Send](s, body)
	if err != nil {
		return nil, err
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	typ, content := "m.room.message", map[string]any{}
	if req.Kind == "custom" {
		if req.Type == "" {
			return nil, mxerror.New(mxerror.InvalidParam, "custom sends need a type")
		}
		typ = req.Type
		for k, v := range req.Content {
			content[k] = v
		}
	} else {
		msgtype, ok := messageTypes[req.Kind]
		if !ok {
			return nil, mxerror.New(mxerror.InvalidParam, "unknown kind %q", req.Kind)
		}
		for k, v := range req.Content {
			content[k] = v
		}
		content["msgtype"], content["body"] = msgtype, req.Body
		switch msgtype {
		case "m.image", "m.file", "m.audio", "m.video":
			if !strings.HasPrefix(req.URL, "mxc://") {
				return nil, mxerror.New(mxerror.InvalidParam, "%s needs the mxc:// url of an upload", req.Kind)
			}
			content["url"] = req.URL
		case "m.location":
			if !strings.HasPrefix(req.GeoURI, "geo:") {
				return nil, mxerror.New(mxerror.InvalidParam, "location needs a geo: URI")
			}
			content["geo_uri"] = req.GeoURI
		}
		if req.Info != nil {
			content["info"] = req.Info
		}
		if req.FormattedBody != "" {
			content["format"], content["formatted_body"] = "org.matrix.custom.html", req.FormattedBody
		}
	}
	switch {
	case req.ThreadRoot != "":
		inReplyTo := req.ReplyTo
		if inReplyTo == "" {
			inReplyTo = req.ThreadRoot
		}
		content["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": req.ThreadRoot,
			"is_falling_back": req.ReplyTo == "", "m.in_reply_to": map[string]any{"event_id": inReplyTo}}
	case req.ReplyTo != "":
		content["m.relates_to"] = map[string]any{"m.in_reply_to": map[string]any{"event_id": req.ReplyTo}}
	}
	return s.sendEvent(ctx, req.RoomID, typ, content, req.TxnID)
}

func (s *session) sendEvent(ctx context.Context, roomID, typ string, content map[string]any, txnID string) (any, error) {
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, mxerror.New(mxerror.BadJSON, "content cannot be JSON: %v", err)
	}
	if len(raw) > rooms.MaxEventBytes {
		return nil, mxerror.New(mxerror.TooLarge, "event content is larger than %d bytes", rooms.MaxEventBytes)
	}
	sent, err := s.srv.d.Rooms.Send(ctx, roomID, rooms.Proto{Sender: s.userID, Type: typ, Content: raw, Txn: s.txn(txnID)})
	if err != nil {
		return nil, err
	}
	return Sent{EventID: sent.EventID, Seq: sent.Seq}, nil
}

func opEdit(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Edit](s, body)
	if err != nil {
		return nil, err
	}
	if req.RoomID == "" || req.EventID == "" {
		return nil, mxerror.New(mxerror.MissingParam, "room_id and event_id are required")
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	// Who may edit what is the core's rule (rooms.Send checks every m.replace).
	content := map[string]any{
		"msgtype": "m.text", "body": "* " + req.Body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": req.Body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": req.EventID},
	}
	return s.sendEvent(ctx, req.RoomID, "m.room.message", content, req.TxnID)
}

func opReact(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[React](s, body)
	if err != nil {
		return nil, err
	}
	if req.RoomID == "" || req.EventID == "" || req.Key == "" {
		return nil, mxerror.New(mxerror.MissingParam, "room_id, event_id and key are required")
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	content := map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": req.EventID, "key": req.Key}}
	return s.sendEvent(ctx, req.RoomID, "m.reaction", content, req.TxnID)
}

func opRedact(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Redact](s, body)
	if err != nil {
		return nil, err
	}
	if req.RoomID == "" || req.EventID == "" {
		return nil, mxerror.New(mxerror.MissingParam, "room_id and event_id are required")
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	sent, err := s.srv.d.Rooms.Redact(ctx, req.RoomID, s.userID, req.EventID, req.Reason, s.txn(req.TxnID))
	if err != nil {
		return nil, err
	}
	return Sent{EventID: sent.EventID, Seq: sent.Seq}, nil
}

func opHistory(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[History](s, body)
	if err != nil {
		return nil, err
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	if req.Limit <= 0 || req.Limit > 100 {
		req.Limit = 50
	}
	// Who may page the room, and what they see, are the core's (as for /messages).
	evs, reached, err := s.srv.d.Rooms.EventsBeforeSeq(ctx, req.RoomID, s.userID, req.BeforeSeq, req.Limit)
	if err != nil {
		return nil, err
	}
	out := HistoryReply{Events: make([]Event, len(evs))}
	for i, e := range evs {
		out.Events[i] = toEvent(e)
	}
	if reached > 1 {
		out.NextBeforeSeq = reached
	}
	return out, nil
}

func opRooms(ctx context.Context, s *session, _ []byte) (any, error) {
	ms, err := s.srv.d.Rooms.UserMemberships(ctx, s.userID)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range ms {
		if m.Membership == "join" || m.Membership == "invite" {
			ids = append(ids, m.RoomID)
		}
	}
	facts, err := s.srv.d.Rooms.RoomFacts(ctx, ids)
	if err != nil {
		return nil, err
	}
	seqs, err := s.srv.d.Rooms.LatestSeqs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := RoomsReply{Rooms: []RoomInfo{}}
	for _, m := range ms {
		if m.Membership == "join" || m.Membership == "invite" {
			info := RoomInfo{RoomID: m.RoomID, Membership: m.Membership, Name: facts[m.RoomID].Name}
			if m.Membership == "join" {
				info.LatestSeq = seqs[m.RoomID]
			}
			out.Rooms = append(out.Rooms, info)
		}
	}
	return out, nil
}

func opState(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[RoomRef](s, body)
	if err != nil {
		return nil, err
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	evs, err := s.srv.d.Rooms.State(ctx, req.RoomID, s.userID)
	if err != nil {
		return nil, err
	}
	out := StateReply{Events: make([]Event, len(evs))}
	for i, e := range evs {
		out.Events[i] = toEvent(e)
	}
	return out, nil
}

// roomArg checks a request's room_id: M_MISSING_PARAM when absent, and the core's
// M_INVALID_PARAM when malformed, as the HTTP API answers for its {roomId}.
func roomArg(roomID string) error {
	if roomID == "" {
		return mxerror.New(mxerror.MissingParam, "room_id is required")
	}
	return rooms.CheckRoomID(roomID)
}

func (s *session) mustBeJoined(ctx context.Context, roomID string) error {
	if err := roomArg(roomID); err != nil {
		return err
	}
	return s.srv.d.Rooms.RequireJoined(ctx, roomID, s.userID)
}

func opTyping(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Typing](s, body)
	if err != nil {
		return nil, err
	}
	if err := s.mustBeJoined(ctx, req.RoomID); err != nil {
		return nil, err
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return struct{}{}, s.srv.d.Typing.Set(req.RoomID, s.userID, req.Typing, timeout)
}

func opReceipt(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Receipt](s, body)
	if err != nil {
		return nil, err
	}
	if req.Type == "" {
		req.Type = "m.read"
	}
	if !receipts.Types[req.Type] {
		return nil, mxerror.New(mxerror.InvalidParam, "unknown receipt type %q", req.Type)
	}
	if err := s.mustBeJoined(ctx, req.RoomID); err != nil {
		return nil, err
	}
	if _, err := s.srv.d.Rooms.Event(ctx, req.RoomID, s.userID, req.EventID); err != nil {
		return nil, err
	}
	return struct{}{}, s.srv.d.Receipts.Put(ctx, req.RoomID, s.userID, req.Type, req.ThreadID, req.EventID)
}

func opPresence(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Presence](s, body)
	if err != nil {
		return nil, err
	}
	if !presence.Valid(req.Presence) {
		return nil, mxerror.New(mxerror.InvalidParam, "presence must be online, unavailable or offline")
	}
	return struct{}{}, s.srv.d.Presence.Set(ctx, s.userID, req.Presence, req.StatusMsg)
}

func opGetPresence(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[UserRef](s, body)
	if err != nil {
		return nil, err
	}
	if req.UserID == "" {
		req.UserID = s.userID
	}
	// The same rule as GET /presence: a stranger's presence is refused.
	st, err := s.srv.d.Presence.GetFor(ctx, s.userID, req.UserID)
	if err != nil {
		return nil, err
	}
	return PresenceReply{Presence: st.Presence, StatusMsg: st.StatusMsg, LastActiveAgo: st.LastActiveAgo, CurrentlyActive: st.CurrentlyActive}, nil
}

func opProfile(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[UserRef](s, body)
	if err != nil {
		return nil, err
	}
	if req.UserID == "" {
		req.UserID = s.userID
	}
	p, err := s.srv.d.Users.ProfileOf(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	return Profile{DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, nil
}

func opSetProfile(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Profile](s, body)
	if err != nil {
		return nil, err
	}
	u := s.srv.d.Users
	if req.DisplayName != nil {
		if err := u.SetDisplayName(ctx, s.localpart, req.DisplayName); err != nil {
			return nil, err
		}
	}
	if req.AvatarURL != nil {
		if err := u.SetAvatarURL(ctx, s.localpart, req.AvatarURL); err != nil {
			return nil, err
		}
	}
	if err := s.srv.d.Rooms.RefreshMemberProfile(ctx, s.userID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func opJoin(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Join](s, body)
	if err != nil {
		return nil, err
	}
	roomID, err := s.srv.d.Rooms.JoinByIDOrAlias(ctx, rooms.SelfJoin{UserID: s.userID, Room: req.Room, Via: req.Via})
	if err != nil {
		return nil, err
	}
	return RoomRef{RoomID: roomID}, nil
}

func opLeave(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[RoomRef](s, body)
	if err != nil {
		return nil, err
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	if _, err := s.srv.d.Rooms.SetMembership(ctx, req.RoomID, rooms.Membership{Sender: s.userID, Target: s.userID, Membership: "leave"}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func opInvite(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Invite](s, body)
	if err != nil {
		return nil, err
	}
	if err := roomArg(req.RoomID); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, mxerror.New(mxerror.MissingParam, "user_id is required")
	}
	if _, err := s.srv.d.Rooms.SetMembership(ctx, req.RoomID, rooms.Membership{Sender: s.userID, Target: req.UserID, Membership: "invite"}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func opCreateRoom(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[CreateRoom](s, body)
	if err != nil {
		return nil, err
	}
	if req.Preset == "" {
		req.Preset = "private_chat"
	}
	cr := rooms.CreateRequest{Invite: req.Invite, Preset: req.Preset, IsDirect: req.IsDirect}
	if req.Name != "" {
		cr.Name = &req.Name
	}
	if req.Topic != "" {
		cr.Topic = &req.Topic
	}
	roomID, err := s.srv.d.Rooms.CreateRoom(ctx, s.userID, cr)
	if err != nil {
		return nil, err
	}
	return RoomRef{RoomID: roomID}, nil
}

func opUpload(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Upload](s, body)
	if err != nil {
		return nil, err
	}
	info, err := s.srv.d.Media.Upload(ctx, s.userID, req.ContentType, req.Filename, bytes.NewReader(req.Data))
	if err != nil {
		return nil, err
	}
	return UploadReply{ContentURI: info.MXC()}, nil
}

func opDownload(ctx context.Context, s *session, body []byte) (any, error) {
	req, err := decode[Download](s, body)
	if err != nil {
		return nil, err
	}
	origin, mediaID, ok := strings.Cut(strings.TrimPrefix(req.ContentURI, "mxc://"), "/")
	if !ok || !strings.HasPrefix(req.ContentURI, "mxc://") {
		return nil, mxerror.New(mxerror.InvalidParam, "content_uri must be an mxc:// URI")
	}
	info, err := s.srv.d.Media.Get(ctx, origin, mediaID)
	if err != nil {
		return nil, err
	}
	if info.Size > int64(s.srv.cfg.MaxFrame)-1024 {
		return nil, mxerror.New(mxerror.TooLarge, "file is larger than a frame; download it over HTTP")
	}
	obj, _, err := s.srv.d.Media.Open(ctx, info)
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, err
	}
	return DownloadReply{ContentType: info.ContentType, Filename: info.UploadName, Data: data}, nil
}
