package users

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hongyan/hongyan/homeserver/mxerror"
)

// maxReportReason bounds a report's reason: admins read it, nobody needs a novel.
const maxReportReason = 4096

// ReportUser records reporter's report of userID for the server's admins. A local
// user who does not exist is M_NOT_FOUND, as the spec allows; a user of another
// server is recorded without asking it, so a report never reaches the reported
// user's server.
func (s *Service) ReportUser(ctx context.Context, reporter, userID, reason string) error {
	if _, err := spec.NewUserID(userID, false); err != nil {
		return mxerror.New(mxerror.InvalidParam, "%q is not a user ID", userID)
	}
	if len(reason) > maxReportReason {
		return mxerror.New(mxerror.InvalidParam, "reason is longer than %d bytes", maxReportReason)
	}
	if local, ok := s.LocalpartOf(userID); ok {
		if _, err := s.Account(ctx, local); errors.Is(err, ErrNotFound) {
			return mxerror.New(mxerror.NotFound, "the user was not found")
		} else if err != nil {
			return err
		}
	}
	var id int64
	if err := s.db.NextStreamPos(ctx, "user_reports", &id); err != nil {
		return fmt.Errorf("report id: %w", err)
	}
	_, err := s.db.Exec(ctx, `INSERT INTO user_reports (id, user_id, reporter, reason, received_ts) VALUES ($1, $2, $3, $4, $5)`,
		id, userID, reporter, reason, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("store report of %s: %w", userID, err)
	}
	return nil
}
