package auth

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

func TestWWWAuthenticate(t *testing.T) {
	if got := (Decision{Reason: contract.ReasonMissingToken}).WWWAuthenticate("dp"); got != `Bearer realm="dp"` {
		t.Error(got)
	}
	if got := (Decision{Reason: contract.ReasonExpiredToken}).WWWAuthenticate("dp"); got != `Bearer realm="dp", error="invalid_token"` {
		t.Error(got)
	}
}

func TestDenialBody(t *testing.T) {
	var body struct{ Error, Message string }
	if err := json.Unmarshal(Denial(contract.ReasonExpiredToken).Body(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error != "expired_token" || body.Message == "" {
		t.Errorf("body %+v", body)
	}
	for _, reason := range contract.Reasons() {
		if !validHeaderName(reason) || strings.ToLower(reason) != reason {
			t.Errorf("reason %q cannot name a metric", reason)
		}
	}
	if d := NotConfigured(); d.Allow || d.Status != 503 {
		t.Errorf("not configured: %+v", d)
	}
}
