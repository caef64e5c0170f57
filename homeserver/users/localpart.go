package users

import (
	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// maxUserIDLength is the spec's limit on a whole user ID.
const maxUserIDLength = 255

// ValidateLocalpart checks a localpart chosen at registration against the spec's
// grammar for new user IDs: a-z, 0-9 and . _ = - / + only.
func (s *Service) ValidateLocalpart(localpart string) error {
	if localpart == "" {
		return mxerror.New(mxerror.InvalidUsername, "username must not be empty")
	}
	for i := 0; i < len(localpart); i++ {
		c := localpart[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '=' || c == '-' || c == '/' || c == '+') {
			return mxerror.New(mxerror.InvalidUsername, "username may only contain a-z, 0-9 and . _ = - / +")
		}
	}
	if len(s.UserID(localpart)) > maxUserIDLength {
		return mxerror.New(mxerror.InvalidUsername, "user ID may not be longer than %d characters", maxUserIDLength)
	}
	return nil
}
