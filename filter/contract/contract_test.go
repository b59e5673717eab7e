package contract

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestEveryReasonHasAnAnswer(t *testing.T) {
	reasons := Reasons()
	if !slices.IsSorted(reasons) {
		t.Errorf("reasons are not sorted: %v", reasons)
	}
	for _, r := range reasons {
		if s := Status(r); !slices.Contains([]int{400, 401, 403, 429, 500, 503}, s) {
			t.Errorf("%s: status %d", r, s)
		}
		var body struct{ Error, Message string }
		if err := json.Unmarshal(Body(r), &body); err != nil || body.Error != r || body.Message == "" {
			t.Errorf("%s: body %q (%v)", r, Body(r), err)
		}
	}
}

func TestChallenges(t *testing.T) {
	for _, tt := range []struct {
		reason string
		want   bool
	}{
		{ReasonMissingToken, true},
		{ReasonExpiredToken, true},
		{ReasonScope, true},
		{ReasonOriginDenied, false},
		{ReasonBadHandshake, false},
		{ReasonNotConfigured, false},
	} {
		if got := Challenges(tt.reason); got != tt.want {
			t.Errorf("Challenges(%s) = %v, want %v", tt.reason, got, tt.want)
		}
	}
}

func TestIsReservedHeader(t *testing.T) {
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"authorization", true},
		{"host", true},
		{"sec-websocket-protocol", true},
		{"te", true},
		{"x-user", false},
		{"x-directpipe-identity", false},
	} {
		if got := IsReservedHeader(tt.name); got != tt.want {
			t.Errorf("IsReservedHeader(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
