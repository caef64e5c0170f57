package federation

import "context"

// KeepNotaryDoc exposes the notary's keeping rule with a chosen bound, so a test
// need not fill ten thousand servers to see the bound hold.
func KeepNotaryDoc(ctx context.Context, s *Service, server string, limit int) bool {
	return s.keepNotaryDoc(ctx, server, limit)
}
