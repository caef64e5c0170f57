// Package filter is the Matrix event filter: what /sync, /messages and /context let a
// client leave out. It parses and validates filters; sync applies them.
package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// Filter is the spec's top-level Filter object.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender. Nil lists mean "no restriction".
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter adds room and content conditions to EventFilter.
type RoomEventFilter struct {
	EventFilter
	Rooms                     *[]string `json:"rooms,omitempty"`
	NotRooms                  []string  `json:"not_rooms,omitempty"`
	ContainsURL               *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers           bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool      `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool      `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter selects rooms and the parts of each that are sent.
type RoomFilter struct {
	Rooms        *[]string        `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse decodes and validates a filter. Malformed JSON or wrong types give
// M_BAD_JSON (M_NOT_JSON when it is not JSON at all); values out of range give
// M_INVALID_PARAM.
func Parse(data []byte) (Filter, error) {
	var f Filter
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		if json.Valid(data) {
			return f, mxerror.New(mxerror.BadJSON, "filter must be a JSON object")
		}
		return f, mxerror.New(mxerror.NotJSON, "filter is not valid JSON")
	}
	if err := json.Unmarshal(data, &f); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return f, mxerror.New(mxerror.NotJSON, "filter is not valid JSON")
		}
		return f, mxerror.New(mxerror.BadJSON, "invalid filter: %v", err)
	}
	return f, f.Validate()
}

// Validate checks the values that JSON types alone do not.
func (f *Filter) Validate() error {
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return mxerror.New(mxerror.InvalidParam, "event_format must be client or federation")
	}
	for _, ef := range []*EventFilter{f.Presence, f.AccountData} {
		if err := ef.validate(); err != nil {
			return err
		}
	}
	if r := f.Room; r != nil {
		if err := checkIDs(r.Rooms, r.NotRooms, '!', "room"); err != nil {
			return err
		}
		for _, ref := range []*RoomEventFilter{r.Ephemeral, r.State, r.Timeline, r.AccountData} {
			if ref == nil {
				continue
			}
			if err := ref.EventFilter.validate(); err != nil {
				return err
			}
			if err := checkIDs(ref.Rooms, ref.NotRooms, '!', "room"); err != nil {
				return err
			}
		}
	}
	return nil
}

func (ef *EventFilter) validate() error {
	if ef == nil {
		return nil
	}
	if ef.Limit != nil && *ef.Limit < 0 {
		return mxerror.New(mxerror.InvalidParam, "limit must not be negative")
	}
	return checkIDs(ef.Senders, ef.NotSenders, '@', "user")
}

func checkIDs(in *[]string, notIn []string, sigil byte, what string) error {
	var all []string
	if in != nil {
		all = append(all, *in...)
	}
	all = append(all, notIn...)
	for _, id := range all {
		if len(id) < 3 || id[0] != sigil || !strings.Contains(id, ":") {
			return mxerror.New(mxerror.InvalidParam, "%q is not a valid %s ID", id, what)
		}
	}
	return nil
}

// ParseRoomEventFilter decodes and validates the filter parameter of /messages and
// /context; an empty string is no filter.
func ParseRoomEventFilter(data string) (*RoomEventFilter, error) {
	if data == "" {
		return nil, nil
	}
	f, err := Parse([]byte(`{"room":{"timeline":` + data + `}}`))
	if err != nil {
		return nil, err
	}
	return f.Room.Timeline, nil
}
