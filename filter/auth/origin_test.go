package auth

import (
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

func TestOrigins(t *testing.T) {
	hmac := []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": b64u(secret)}}
	strict := keyConfig(t, hmac, map[string]any{"origins": map[string]any{"allow": []string{"https://app.example.com", "https://*.example.org", "http://127.0.0.1:8081"}}})
	lenient := keyConfig(t, hmac, map[string]any{"origins": map[string]any{"allow": []string{"https://app.example.com"}, "allow_missing": true}})
	tok := "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	tests := []struct {
		name   string
		cfg    *Config
		origin string // "-" for none
		reason string // "" for allowed
	}{
		{"exact", strict, "https://app.example.com", ""},
		{"exact, case", strict, "HTTPS://App.Example.com", ""},
		{"port", strict, "http://127.0.0.1:8081", ""},
		{"wrong port", strict, "http://127.0.0.1:8082", contract.ReasonOriginDenied},
		{"wildcard", strict, "https://a.example.org", ""},
		{"wildcard, deep", strict, "https://a.b.example.org", ""},
		{"wildcard excludes the apex", strict, "https://example.org", contract.ReasonOriginDenied},
		{"lookalike", strict, "https://evilexample.org", contract.ReasonOriginDenied},
		{"suffix attack", strict, "https://app.example.com.evil.net", contract.ReasonOriginDenied},
		{"scheme", strict, "http://app.example.com", contract.ReasonOriginDenied},
		{"null", strict, "null", contract.ReasonOriginDenied},
		{"missing", strict, "-", contract.ReasonOriginMissing},
		{"missing allowed", lenient, "-", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := []string{"authorization", tok}
			if tt.origin != "-" {
				h = append(h, "origin", tt.origin)
			}
			d, _ := tt.cfg.Check("r", Request{Header: headers(h...)}, now)
			if tt.reason == "" && !d.Allow || tt.reason != "" && (d.Reason != tt.reason || d.Status != 403) {
				t.Errorf("decision %+v, want %q", d, tt.reason)
			}
		})
	}
	// The origin is checked before the token: a foreign page learns nothing.
	d, _ := strict.Check("r", Request{Header: headers("origin", "https://evil.net")}, now)
	if d.Reason != contract.ReasonOriginDenied {
		t.Errorf("no token, foreign origin: %+v", d)
	}
}
