package auth

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

// TestRFC7515 verifies the HS256 example of RFC 7515 appendix A.1 at a time
// before its exp.
func TestRFC7515(t *testing.T) {
	const token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	const k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
	cfg, err := ParseConfig([]byte(`{"routes":{"r":"p"},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"HS256","k":"` + k + `"}]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Header: headers("authorization", "Bearer "+token)}
	if d, _ := cfg.Check("r", req, time.Unix(1300819300, 0)); !d.Allow {
		t.Errorf("RFC 7515 A.1 does not verify: %+v", d)
	}
	if d, _ := cfg.Check("r", req, time.Unix(1300819380+3600, 0)); d.Reason != contract.ReasonExpiredToken {
		t.Errorf("after exp: %+v", d)
	}
}

// TestAlgorithmPinnedPerKey: with keys of two algorithms configured, a token
// must use the algorithm of the key its kid names.
func TestAlgorithmPinnedPerKey(t *testing.T) {
	k384 := []byte("a-second-secret-for-hs384-tokens-of-48-bytes-long!")
	doc := `{"sources":[{"bearer":true}],"jwks":{"keys":[` +
		`{"kty":"oct","kid":"a","alg":"HS256","k":"` + base64.RawURLEncoding.EncodeToString(secret) + `"},` +
		`{"kty":"oct","kid":"b","alg":"HS384","k":"` + base64.RawURLEncoding.EncodeToString(k384) + `"}]}}`
	cfg, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"a with HS256", mint(t, jwt.SigningMethodHS256, secret, "a", valid()), ""},
		{"b with HS384", mint(t, jwt.SigningMethodHS384, k384, "b", valid()), ""},
		{"a with HS384", mint(t, jwt.SigningMethodHS384, secret, "a", valid()), contract.ReasonBadSignature},
		{"no kid, two keys", mint(t, jwt.SigningMethodHS256, secret, "", valid()), contract.ReasonInvalidToken},
	}
	for _, tt := range tests {
		d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
		if d.Reason != tt.reason || d.Allow != (tt.reason == "") {
			t.Errorf("%s: %+v", tt.name, d)
		}
	}
}

func TestClaimsAndScopes(t *testing.T) {
	hmac := []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": b64u(secret)}}
	cfg := keyConfig(t, hmac, map[string]any{
		"issuer": "https://idp.example.com", "audiences": []string{"voice", "other"}, "required_scopes": []string{"voice:stream"},
	})
	good := func(extra ...any) string {
		base := []any{"iss", "https://idp.example.com", "aud", []string{"voice"}, "scope", "profile voice:stream"}
		return mint(t, jwt.SigningMethodHS256, secret, "dev", valid(append(base, extra...)...))
	}
	tests := []struct {
		name   string
		token  string
		status int
		reason string
	}{
		{"all good", good(), 0, ""},
		{"scp array", good("scope", nil, "scp", []string{"voice:stream"}), 0, ""},
		{"scp string", good("scope", nil, "scp", "profile voice:stream"), 0, ""},
		{"scope array", good("scope", []string{"profile", "voice:stream"}), 0, ""},
		{"scope in neither form", good("scope", []string{"profile"}, "scp", "voice:read"), 403, contract.ReasonScope},
		{"scope array of a joined string", good("scope", []string{"profile voice:stream"}), 403, contract.ReasonScope},
		{"aud string", good("aud", "other"), 0, ""},
		{"wrong issuer", good("iss", "https://evil.example.com"), 401, contract.ReasonInvalidIssuer},
		{"no issuer", good("iss", nil), 401, contract.ReasonInvalidIssuer},
		{"wrong audience", good("aud", "billing"), 401, contract.ReasonInvalidAudience},
		{"missing scope", good("scope", "profile"), 403, contract.ReasonScope},
		{"iat in the future", good("iat", now.Add(time.Hour).Unix()), 401, contract.ReasonNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
			if tt.status == 0 {
				if !d.Allow {
					t.Errorf("denied: %+v", d)
				}
				return
			}
			if d.Allow || d.Status != tt.status || d.Reason != tt.reason {
				t.Errorf("decision %+v, want %d %s", d, tt.status, tt.reason)
			}
		})
	}
	if got := (Decision{Reason: contract.ReasonScope}).WWWAuthenticate("dp"); got != `Bearer realm="dp", error="insufficient_scope"` {
		t.Error(got)
	}
}
