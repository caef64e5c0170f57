package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/hongyan/hongyan/homeserver/mxerror"
	"github.com/hongyan/hongyan/homeserver/push"
	"github.com/hongyan/hongyan/httpapi"
)

func (h *handlers) registerPushRules(v3 *mux.Router, api *httpapi.API) {
	a := []httpapi.Option{httpapi.Authed, httpapi.GuestsAllowed}
	api.Handle(v3, http.MethodGet, "/pushrules/", h.allPushRules, a...)
	api.Handle(v3, http.MethodGet, "/pushrules/global/", h.globalPushRules, a...)
	rule := "/pushrules/{scope}/{kind}/{ruleId}"
	api.Handle(v3, http.MethodGet, rule, h.pushRule, a...)
	api.Handle(v3, http.MethodPut, rule, h.putPushRule, a...)
	api.Handle(v3, http.MethodDelete, rule, h.deletePushRule, a...)
	api.Handle(v3, http.MethodGet, rule+"/enabled", h.pushRuleEnabled, a...)
	api.Handle(v3, http.MethodPut, rule+"/enabled", h.setPushRuleEnabled, a...)
	api.Handle(v3, http.MethodGet, rule+"/actions", h.pushRuleActions, a...)
	api.Handle(v3, http.MethodPut, rule+"/actions", h.setPushRuleActions, a...)
	api.Handle(v3, http.MethodGet, "/pushrules/{scope}/{kind}/", h.pushRulesOfKind, a...)
	// Paths that stop short of a rule, or name an unknown attribute, are bad
	// requests (400, as Synapse answers), not unknown endpoints.
	for _, p := range []string{"/pushrules/", "/pushrules/{scope}", "/pushrules/{scope}/", "/pushrules/{scope}/{kind}",
		"/pushrules/{scope}/{kind}/", rule + "/{attr}"} {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			if m == http.MethodGet && (p == "/pushrules/" || p == "/pushrules/{scope}/{kind}/") {
				continue // served above
			}
			api.Handle(v3, m, p, h.badPushRulePath, a...)
		}
	}
}

func (h *handlers) badPushRulePath(r *httpapi.Request) (any, error) {
	if attr := r.Vars["attr"]; attr != "" {
		return nil, mxerror.New(mxerror.InvalidParam, "unknown push rule attribute %q", attr)
	}
	if r.Vars["scope"] != "" && r.Vars["scope"] != "global" {
		return nil, mxerror.New(mxerror.InvalidParam, "scope must be global")
	}
	return nil, mxerror.New(mxerror.InvalidParam, "the path must name a scope, a kind and a rule ID")
}

func (h *handlers) pushRulesOfKind(r *httpapi.Request) (any, error) {
	return h.push.RulesOfKind(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"])
}

func (h *handlers) allPushRules(r *httpapi.Request) (any, error) {
	rs, err := h.push.Rules(r.Context(), r.Caller.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rs}, nil
}

func (h *handlers) globalPushRules(r *httpapi.Request) (any, error) {
	return h.push.Rules(r.Context(), r.Caller.UserID)
}

func (h *handlers) pushRule(r *httpapi.Request) (any, error) {
	return h.push.Rule(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"])
}

func (h *handlers) putPushRule(r *httpapi.Request) (any, error) {
	var body struct {
		Actions    []json.RawMessage `json:"actions"`
		Conditions []json.RawMessage `json:"conditions"`
		Pattern    string            `json:"pattern"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	return struct{}{}, h.push.PutRule(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"],
		q.Get("before"), q.Get("after"), push.Rule{Actions: body.Actions, Conditions: body.Conditions, Pattern: body.Pattern})
}

func (h *handlers) deletePushRule(r *httpapi.Request) (any, error) {
	return struct{}{}, h.push.DeleteRule(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"])
}

func (h *handlers) pushRuleEnabled(r *httpapi.Request) (any, error) {
	rule, err := h.push.Rule(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"])
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

func (h *handlers) setPushRuleEnabled(r *httpapi.Request) (any, error) {
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, mxerror.New(mxerror.MissingParam, "enabled is required")
	}
	return struct{}{}, h.push.SetEnabled(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"], *body.Enabled)
}

func (h *handlers) pushRuleActions(r *httpapi.Request) (any, error) {
	rule, err := h.push.Rule(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"])
	if err != nil {
		return nil, err
	}
	return map[string]any{"actions": rule.Actions}, nil
}

func (h *handlers) setPushRuleActions(r *httpapi.Request) (any, error) {
	var body struct {
		Actions []json.RawMessage `json:"actions"`
	}
	if err := r.Decode(&body); err != nil {
		return nil, err
	}
	return struct{}{}, h.push.SetActions(r.Context(), r.Caller.UserID, r.Vars["scope"], r.Vars["kind"], r.Vars["ruleId"], body.Actions)
}
