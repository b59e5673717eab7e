package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// keyConfig builds a one-policy config from JWKs and extra policy fields.
func keyConfig(t *testing.T, keys []map[string]string, extra map[string]any) *Config {
	t.Helper()
	pol := map[string]any{
		"sources": []map[string]any{{"subprotocol_prefix": "dp.bearer."}, {"bearer": true}},
		"jwks":    map[string]any{"keys": keys},
	}
	for k, v := range extra {
		pol[k] = v
	}
	data, _ := json.Marshal(map[string]any{"routes": map[string]string{"r": "p"}, "policies": map[string]any{"p": pol}})
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAsymmetricKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	pad := func(n *big.Int, size int) []byte { return n.FillBytes(make([]byte, size)) }
	rsaJWK := func(alg string) map[string]string {
		return map[string]string{"kty": "RSA", "kid": "rsa-" + alg, "alg": alg, "n": b64u(rsaKey.N.Bytes()), "e": b64u(big.NewInt(int64(rsaKey.E)).Bytes())}
	}
	keys := []map[string]string{
		rsaJWK("RS256"), rsaJWK("PS256"),
		{"kty": "EC", "kid": "ec", "alg": "ES256", "crv": "P-256", "x": b64u(pad(ecKey.X, 32)), "y": b64u(pad(ecKey.Y, 32))},
		{"kty": "EC", "kid": "ec384", "alg": "ES384", "crv": "P-384", "x": b64u(pad(ec384.X, 48)), "y": b64u(pad(ec384.Y, 48))},
		{"kty": "OKP", "kid": "ed", "alg": "EdDSA", "crv": "Ed25519", "x": b64u(edPub)},
	}
	cfg := keyConfig(t, keys, nil)
	sign := func(m jwt.SigningMethod, kid string, k crypto.PrivateKey) string {
		tok := jwt.NewWithClaims(m, valid())
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name  string
		token string
		allow bool
	}{
		{"RS256", sign(jwt.SigningMethodRS256, "rsa-RS256", rsaKey), true},
		{"PS256", sign(jwt.SigningMethodPS256, "rsa-PS256", rsaKey), true},
		{"ES256", sign(jwt.SigningMethodES256, "ec", ecKey), true},
		{"ES384", sign(jwt.SigningMethodES384, "ec384", ec384), true},
		{"EdDSA", sign(jwt.SigningMethodEdDSA, "ed", edPriv), true},
		{"RS256 under the PS256 key", sign(jwt.SigningMethodRS256, "rsa-PS256", rsaKey), false},
		{"ES256 under the Ed25519 key", sign(jwt.SigningMethodES256, "ed", ecKey), false},
		// The classic confusion: HMAC keyed with the RSA public key's bytes.
		{"HS256 keyed with the RSA modulus", sign(jwt.SigningMethodHS256, "rsa-RS256", rsaKey.N.Bytes()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
			if d.Allow != tt.allow {
				t.Errorf("decision %+v, want allow=%v", d, tt.allow)
			}
		})
	}
}

func TestBadAsymmetricKeysRefused(t *testing.T) {
	for name, k := range map[string]map[string]string{
		"small rsa":    {"kty": "RSA", "alg": "RS256", "n": b64u(big.NewInt(1<<62 - 1).Bytes()), "e": "AQAB"},
		"rsa with HS":  {"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
		"ec off curve": {"kty": "EC", "alg": "ES256", "crv": "P-256", "x": b64u(make([]byte, 32)), "y": b64u(make([]byte, 32))},
		"ec wrong crv": {"kty": "EC", "alg": "ES256", "crv": "P-384", "x": "AA", "y": "AA"},
		"ed short":     {"kty": "OKP", "alg": "EdDSA", "crv": "Ed25519", "x": "AAAA"},
		"unknown kty":  {"kty": "foo", "alg": "RS256"},
	} {
		t.Run(name, func(t *testing.T) {
			data, _ := json.Marshal(map[string]any{"routes": map[string]string{}, "policies": map[string]any{"p": map[string]any{
				"sources": []map[string]any{{"bearer": true}}, "jwks": map[string]any{"keys": []map[string]string{k}},
			}}})
			if _, err := ParseConfig(data); err == nil {
				t.Error("accepted")
			}
		})
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
		{"aud string", good("aud", "other"), 0, ""},
		{"wrong issuer", good("iss", "https://evil.example.com"), 401, ReasonInvalidIssuer},
		{"no issuer", good("iss", nil), 401, ReasonInvalidIssuer},
		{"wrong audience", good("aud", "billing"), 401, ReasonInvalidAudience},
		{"missing scope", good("scope", "profile"), 403, ReasonScope},
		{"iat in the future", good("iat", now.Add(time.Hour).Unix()), 401, ReasonNotYetValid},
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
	if got := (Decision{Reason: ReasonScope}).WWWAuthenticate("dp"); got != `Bearer realm="dp", error="insufficient_scope"` {
		t.Error(got)
	}
}

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
	if d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", "voice.v1")}, now); d.Reason != ReasonMissingToken {
		t.Errorf("no token entry: %+v", d)
	}
}

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
		{"wrong port", strict, "http://127.0.0.1:8082", ReasonOriginDenied},
		{"wildcard", strict, "https://a.example.org", ""},
		{"wildcard, deep", strict, "https://a.b.example.org", ""},
		{"wildcard excludes the apex", strict, "https://example.org", ReasonOriginDenied},
		{"lookalike", strict, "https://evilexample.org", ReasonOriginDenied},
		{"suffix attack", strict, "https://app.example.com.evil.net", ReasonOriginDenied},
		{"scheme", strict, "http://app.example.com", ReasonOriginDenied},
		{"null", strict, "null", ReasonOriginDenied},
		{"missing", strict, "-", ReasonOriginMissing},
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
	if d.Reason != ReasonOriginDenied {
		t.Errorf("no token, foreign origin: %+v", d)
	}
}
