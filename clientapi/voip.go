package clientapi

import (
	"time"

	"github.com/hongyan/hongyan/httpapi"
)

// turnServer issues TURN credentials (coturn's use-auth-secret scheme; see
// homeserver/calls). Guests may call it, as the spec allows. Without TURN
// configured the answer is {}, which clients read as "no TURN server".
func (h *handlers) turnServer(r *httpapi.Request) (any, error) {
	if h.calls == nil || !h.calls.Enabled() {
		return map[string]any{}, nil
	}
	return h.calls.Credentials(r.Caller.UserID, time.Now()), nil
}
