// Package mxerror is the Matrix error: an errcode and the HTTP status that goes with
// it, defined together once in statusOf so that no call site picks a status by hand.
//
// The core returns *Error for rule violations a client must see (M_FORBIDDEN,
// M_USER_IN_USE, ...); anything else that reaches an edge is an internal failure and
// becomes 500 M_UNKNOWN with the cause logged, never shown.
package mxerror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Code is a Matrix errcode.
type Code string

// The errcodes Hongyan returns. Each has its status in statusOf.
const (
	Forbidden               Code = "M_FORBIDDEN"
	UnknownToken            Code = "M_UNKNOWN_TOKEN"
	MissingToken            Code = "M_MISSING_TOKEN"
	UserLocked              Code = "M_USER_LOCKED"
	UserSuspended           Code = "M_USER_SUSPENDED"
	BadJSON                 Code = "M_BAD_JSON"
	NotJSON                 Code = "M_NOT_JSON"
	NotFound                Code = "M_NOT_FOUND"
	LimitExceeded           Code = "M_LIMIT_EXCEEDED"
	Unrecognized            Code = "M_UNRECOGNIZED"
	Unknown                 Code = "M_UNKNOWN"
	Unauthorized            Code = "M_UNAUTHORIZED"
	UserDeactivated         Code = "M_USER_DEACTIVATED"
	UserInUse               Code = "M_USER_IN_USE"
	InvalidUsername         Code = "M_INVALID_USERNAME"
	RoomInUse               Code = "M_ROOM_IN_USE"
	InvalidRoomState        Code = "M_INVALID_ROOM_STATE"
	ThreepidInUse           Code = "M_THREEPID_IN_USE"
	ThreepidNotFound        Code = "M_THREEPID_NOT_FOUND"
	ThreepidAuthFailed      Code = "M_THREEPID_AUTH_FAILED"
	ThreepidDenied          Code = "M_THREEPID_DENIED"
	ServerNotTrusted        Code = "M_SERVER_NOT_TRUSTED"
	UnsupportedRoomVersion  Code = "M_UNSUPPORTED_ROOM_VERSION"
	IncompatibleRoomVersion Code = "M_INCOMPATIBLE_ROOM_VERSION"
	BadState                Code = "M_BAD_STATE"
	GuestAccessForbidden    Code = "M_GUEST_ACCESS_FORBIDDEN"
	CaptchaNeeded           Code = "M_CAPTCHA_NEEDED"
	CaptchaInvalid          Code = "M_CAPTCHA_INVALID"
	MissingParam            Code = "M_MISSING_PARAM"
	InvalidParam            Code = "M_INVALID_PARAM"
	TooLarge                Code = "M_TOO_LARGE"
	Exclusive               Code = "M_EXCLUSIVE"
	ResourceLimitExceeded   Code = "M_RESOURCE_LIMIT_EXCEEDED"
	CannotLeaveServerNotice Code = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
	WeakPassword            Code = "M_WEAK_PASSWORD"
	UnknownPos              Code = "M_UNKNOWN_POS"
	WrongRoomKeysVersion    Code = "M_WRONG_ROOM_KEYS_VERSION"
	NotYetUploaded          Code = "M_NOT_YET_UPLOADED"
	CannotOverwriteMedia    Code = "M_CANNOT_OVERWRITE_MEDIA"
	DuplicateAnnotation     Code = "M_DUPLICATE_ANNOTATION"
	BadAlias                Code = "M_BAD_ALIAS"
)

// statusOf ties each errcode to its HTTP status, per the spec's endpoint definitions.
// M_UNRECOGNIZED is 404 for an unknown path; the router answers 405 itself for a
// known path with the wrong method.
var statusOf = map[Code]int{
	Forbidden:               http.StatusForbidden,
	UnknownToken:            http.StatusUnauthorized,
	MissingToken:            http.StatusUnauthorized,
	UserLocked:              http.StatusUnauthorized,
	Unauthorized:            http.StatusUnauthorized,
	UserSuspended:           http.StatusForbidden,
	BadJSON:                 http.StatusBadRequest,
	NotJSON:                 http.StatusBadRequest,
	NotFound:                http.StatusNotFound,
	LimitExceeded:           http.StatusTooManyRequests,
	Unrecognized:            http.StatusNotFound,
	Unknown:                 http.StatusBadRequest,
	UserDeactivated:         http.StatusForbidden,
	UserInUse:               http.StatusBadRequest,
	InvalidUsername:         http.StatusBadRequest,
	RoomInUse:               http.StatusBadRequest,
	InvalidRoomState:        http.StatusBadRequest,
	ThreepidInUse:           http.StatusBadRequest,
	ThreepidNotFound:        http.StatusBadRequest,
	ThreepidAuthFailed:      http.StatusUnauthorized,
	ThreepidDenied:          http.StatusForbidden,
	ServerNotTrusted:        http.StatusBadRequest,
	UnsupportedRoomVersion:  http.StatusBadRequest,
	IncompatibleRoomVersion: http.StatusBadRequest,
	BadState:                http.StatusBadRequest,
	GuestAccessForbidden:    http.StatusForbidden,
	CaptchaNeeded:           http.StatusUnauthorized,
	CaptchaInvalid:          http.StatusBadRequest,
	MissingParam:            http.StatusBadRequest,
	InvalidParam:            http.StatusBadRequest,
	TooLarge:                http.StatusRequestEntityTooLarge,
	Exclusive:               http.StatusBadRequest,
	ResourceLimitExceeded:   http.StatusForbidden,
	CannotLeaveServerNotice: http.StatusForbidden,
	WeakPassword:            http.StatusBadRequest,
	UnknownPos:              http.StatusBadRequest,
	WrongRoomKeysVersion:    http.StatusForbidden,
	NotYetUploaded:          http.StatusGatewayTimeout,
	CannotOverwriteMedia:    http.StatusConflict,
	DuplicateAnnotation:     http.StatusBadRequest,
	BadAlias:                http.StatusBadRequest,
}

// Error is a Matrix error as a client sees it.
type Error struct {
	Code    Code
	Message string
	// Status overrides the errcode's usual status where the spec asks for another
	// (M_UNKNOWN as 500, M_UNRECOGNIZED as 405). Zero means the usual one.
	Status int
	// SoftLogout marks an M_UNKNOWN_TOKEN whose token expired rather than was
	// revoked: the client may refresh instead of logging the user out.
	SoftLogout bool
	// RetryAfterMs goes with M_LIMIT_EXCEEDED.
	RetryAfterMs int64
	// Extra holds further fields of the error body (e.g. room_version).
	Extra map[string]any
}

// New returns an error with the code and a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Internal is the 500 a client gets when the server failed; the cause is logged by
// the edge, never shown.
func Internal() *Error {
	return &Error{Code: Unknown, Message: "internal server error", Status: http.StatusInternalServerError}
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// HTTPStatus is the status code the error is sent with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statusOf[e.Code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// MarshalJSON renders the spec's error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, 4+len(e.Extra))
	for k, v := range e.Extra {
		body[k] = v
	}
	body["errcode"] = e.Code
	body["error"] = e.Message
	switch e.Code {
	case UnknownToken:
		body["soft_logout"] = e.SoftLogout
	case UserLocked:
		// The spec: a locked account's client keeps its session and state.
		body["soft_logout"] = true
	}
	if e.RetryAfterMs > 0 {
		body["retry_after_ms"] = e.RetryAfterMs
	}
	return json.Marshal(body)
}

// As returns the Matrix error inside err, if there is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Is reports whether err carries a Matrix error with the code.
func Is(err error, code Code) bool {
	e, ok := As(err)
	return ok && e.Code == code
}
