package auth

import (
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

func TestSubprotocolToken(t *testing.T) {
	cfg := keyConfig(t, []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": b64u(secret)}}, nil)
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	tests := []struct {
		name, header string
		set          string // the rewritten header, "" when removed
		removed      bool
	}{
		{"token last", "voice.v1, dp.bearer." + tok, "voice.v1", false},
		{"token first, two kept", "dp.bearer." + tok + ",voice.v1 ,  chat", "voice.v1, chat", false},
		{"token alone", "dp.bearer." + tok, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", tt.header)}, now)
			if !d.Allow {
				t.Fatalf("denied: %+v", d)
			}
			var set string
			for _, kv := range d.Set {
				if kv[0] == "sec-websocket-protocol" {
					set = kv[1]
				}
			}
			if set != tt.set || contains(d.Remove, "sec-websocket-protocol") != tt.removed {
				t.Errorf("set %q removed %v; want %q %v", set, contains(d.Remove, "sec-websocket-protocol"), tt.set, tt.removed)
			}
		})
	}
	if d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", "voice.v1")}, now); d.Reason != contract.ReasonMissingToken {
		t.Errorf("no token entry: %+v", d)
	}
}
