// Package push holds a user's push rules: the server defaults plus the user's own
// rules and changes, stored as the m.push_rules account data so that sync delivers
// them to every device.
package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/receipts"
	"github.com/hongyan/hongyan/homeserver/rooms"
	"github.com/hongyan/hongyan/homeserver/storage"
	"github.com/hongyan/hongyan/homeserver/users"
)

// Kinds are the rule kinds in evaluation order.
var Kinds = []string{"override", "content", "room", "sender", "underride"}

// Rule is one push rule.
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Conditions []json.RawMessage `json:"conditions,omitempty"`
	Pattern    string            `json:"pattern,omitempty"`
	Actions    []json.RawMessage `json:"actions"`
}

// Ruleset is the global ruleset by kind.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

func (rs *Ruleset) list(kind string) (*[]Rule, error) {
	switch kind {
	case "override":
		return &rs.Override, nil
	case "content":
		return &rs.Content, nil
	case "room":
		return &rs.Room, nil
	case "sender":
		return &rs.Sender, nil
	case "underride":
		return &rs.Underride, nil
	}
	return nil, mxerror.New(mxerror.InvalidParam, "unknown rule kind %q", kind)
}

// Deps are what the push service reads and writes through.
type Deps struct {
	DB    *storage.DB
	Users *users.Service
	// Rooms and Receipts feed the evaluator and the unread counts.
	Rooms    *rooms.Service
	Receipts *receipts.Service
	// Bus, if not nil, wakes the evaluator (rooms.NoticeSubject), tells it of
	// changed rules (users.AccountDataSubject), and carries NoticeSubject.
	Bus *nats.Conn
	// ServerName is this server's name: only its users have push rules here.
	ServerName string
	// Log is where the evaluator reports failures; nil means slog.Default().
	Log *slog.Logger
}

// Service reads and changes push rules through account data, evaluates every new
// event against the rules of the room's local members (Start) and keeps the
// notifications and unread counts that follow.
type Service struct {
	deps  Deps
	users *users.Service
	log   *slog.Logger
	ev    *evaluator // nil until Start
}

// New returns the service. The evaluator runs only after Start.
func New(deps Deps) *Service {
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	return &Service{deps: deps, users: deps.Users, log: log}
}

// Rules returns the user's ruleset: stored, or the defaults.
func (s *Service) Rules(ctx context.Context, userID string) (Ruleset, error) {
	local, _ := s.users.LocalpartOf(userID)
	raw, err := s.users.AccountData(ctx, local, "", "m.push_rules")
	if errors.Is(err, users.ErrNotFound) {
		return Defaults(userID), nil
	}
	if err != nil {
		return Ruleset{}, err
	}
	return rulesetFrom(raw, userID)
}

func (s *Service) save(ctx context.Context, userID string, rs Ruleset) error {
	local, _ := s.users.LocalpartOf(userID)
	for _, k := range Kinds {
		l, _ := rs.list(k)
		if *l == nil {
			*l = []Rule{}
		}
	}
	raw, _ := json.Marshal(map[string]any{"global": rs})
	_, err := s.users.SetAccountData(ctx, local, "", "m.push_rules", raw)
	return err
}

// RulesOfKind returns the user's rules of one kind.
func (s *Service) RulesOfKind(ctx context.Context, userID, scope, kind string) ([]Rule, error) {
	if scope != "global" {
		return nil, mxerror.New(mxerror.InvalidParam, "scope must be global")
	}
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return nil, err
	}
	l, err := rs.list(kind)
	if err != nil {
		return nil, err
	}
	if *l == nil {
		return []Rule{}, nil
	}
	return *l, nil
}

// validActions checks a rule's actions: the spec's strings (and the historical
// ones, which evaluation ignores) or set_tweak objects.
func validActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var str string
		if json.Unmarshal(a, &str) == nil {
			switch str {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return mxerror.New(mxerror.InvalidParam, "unknown action %q", str)
		}
		var tweak struct {
			SetTweak *string `json:"set_tweak"`
		}
		if json.Unmarshal(a, &tweak) != nil || tweak.SetTweak == nil || *tweak.SetTweak == "" {
			return mxerror.New(mxerror.InvalidParam, "an action is a string or a set_tweak object")
		}
	}
	return nil
}

// Rule returns one rule.
func (s *Service) Rule(ctx context.Context, userID, scope, kind, ruleID string) (Rule, error) {
	_, l, i, err := s.find(ctx, userID, scope, kind, ruleID)
	if err != nil {
		return Rule{}, err
	}
	return (*l)[i], nil
}

func (s *Service) find(ctx context.Context, userID, scope, kind, ruleID string) (*Ruleset, *[]Rule, int, error) {
	if scope != "global" {
		return nil, nil, 0, mxerror.New(mxerror.InvalidParam, "scope must be global")
	}
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return nil, nil, 0, err
	}
	l, err := rs.list(kind)
	if err != nil {
		return nil, nil, 0, err
	}
	for i, r := range *l {
		if r.RuleID == ruleID {
			return &rs, l, i, nil
		}
	}
	return &rs, l, -1, mxerror.New(mxerror.NotFound, "no %s rule %q", kind, ruleID)
}

// PutRule creates or replaces a user rule, placed before or after another user rule
// when asked. Server-default rules (".m." IDs) cannot be replaced, only enabled or
// given other actions.
func (s *Service) PutRule(ctx context.Context, userID, scope, kind, ruleID, before, after string, r Rule) error {
	if strings.HasPrefix(ruleID, ".") {
		return mxerror.New(mxerror.InvalidParam, "rule IDs starting with '.' are reserved for server-default rules")
	}
	if strings.ContainsAny(ruleID, "/\\") || ruleID == "" {
		return mxerror.New(mxerror.InvalidParam, "invalid rule ID")
	}
	if r.Actions == nil {
		return mxerror.New(mxerror.MissingParam, "actions is required")
	}
	if err := validActions(r.Actions); err != nil {
		return err
	}
	if kind == "content" && r.Pattern == "" {
		return mxerror.New(mxerror.MissingParam, "content rules need a pattern")
	}
	if (kind == "room" || kind == "sender") && len(r.Conditions) > 0 {
		return mxerror.New(mxerror.InvalidParam, "%s rules take no conditions", kind)
	}
	rs, l, i, err := s.find(ctx, userID, scope, kind, ruleID)
	if err != nil && !mxerror.Is(err, mxerror.NotFound) {
		return err
	}
	r.RuleID, r.Default, r.Enabled = ruleID, false, true
	if i >= 0 {
		r.Enabled = (*l)[i].Enabled
		*l = append((*l)[:i], (*l)[i+1:]...)
	}
	pos := 0 // new user rules go first, ahead of the defaults of their kind
	if anchor := before + after; anchor != "" {
		pos = -1
		for j, x := range *l {
			if x.RuleID == anchor {
				pos = j
				if after != "" {
					pos = j + 1
				}
			}
		}
		if pos < 0 {
			return mxerror.New(mxerror.NotFound, "no rule %q to place this one next to", anchor)
		}
	}
	*l = append((*l)[:pos], append([]Rule{r}, (*l)[pos:]...)...)
	return s.save(ctx, userID, *rs)
}

// DeleteRule removes a user rule.
func (s *Service) DeleteRule(ctx context.Context, userID, scope, kind, ruleID string) error {
	if strings.HasPrefix(ruleID, ".") {
		return mxerror.New(mxerror.InvalidParam, "server-default rules cannot be deleted")
	}
	rs, l, i, err := s.find(ctx, userID, scope, kind, ruleID)
	if err != nil {
		return err
	}
	*l = append((*l)[:i], (*l)[i+1:]...)
	return s.save(ctx, userID, *rs)
}

// SetEnabled enables or disables a rule.
func (s *Service) SetEnabled(ctx context.Context, userID, scope, kind, ruleID string, enabled bool) error {
	rs, l, i, err := s.find(ctx, userID, scope, kind, ruleID)
	if err != nil {
		return err
	}
	(*l)[i].Enabled = enabled
	return s.save(ctx, userID, *rs)
}

// SetActions replaces a rule's actions.
func (s *Service) SetActions(ctx context.Context, userID, scope, kind, ruleID string, actions []json.RawMessage) error {
	if actions == nil {
		return mxerror.New(mxerror.MissingParam, "actions is required")
	}
	if err := validActions(actions); err != nil {
		return err
	}
	rs, l, i, err := s.find(ctx, userID, scope, kind, ruleID)
	if err != nil {
		return err
	}
	(*l)[i].Actions = actions
	return s.save(ctx, userID, *rs)
}
