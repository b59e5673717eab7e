package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	secret     = []byte("directpipe-development-secret-32b")
	now        = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	demoAPIKey = "dp_demo_key_for_local_testing_only"
)

func testConfig(t testing.TB) *Config {
	t.Helper()
	sum := sha256.Sum256([]byte(demoAPIKey))
	doc := map[string]any{
		"routes": map[string]string{"voice": "demo", "public": ""},
		"policies": map[string]any{"demo": map[string]any{
			"name":    "demo",
			"realm":   "directpipe",
			"sources": []map[string]any{{"bearer": true}, {"query": "access_token"}, {"header": "x-api-key"}},
			"jwks": map[string]any{"keys": []map[string]string{
				{"kty": "oct", "kid": "dev", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)},
			}},
			"leeway_seconds":  30,
			"max_token_bytes": 2048,
			"api_keys":        []map[string]string{{"sha256": hex.EncodeToString(sum[:]), "identity": "demo-client"}},
			"identity_header": "x-directpipe-identity",
			"claim_headers":   map[string]string{"tenant": "x-directpipe-tenant"},
		}},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mint(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid(extra ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix(), "tenant": "acme"}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == nil {
			delete(c, extra[i].(string))
		} else {
			c[extra[i].(string)] = extra[i+1]
		}
	}
	return c
}

func headers(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(name string) (string, bool) { v, ok := m[name]; return v, ok }
}

func TestCheck(t *testing.T) {
	cfg := testConfig(t)
	good := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	// alg:none, built by hand since the library refuses to sign it by
	// default: the header says none, the signature is empty.
	none := b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"mallory","exp":9999999999}`) + "."
	// Algorithm confusion: an HS512 token signed with the HS256 key.
	hs512 := mint(t, jwt.SigningMethodHS512, secret, "dev", valid())
	otherKey := mint(t, jwt.SigningMethodHS256, []byte("another-secret-that-is-32-bytes!!"), "dev", valid())

	tests := []struct {
		name     string
		route    string
		path     string
		hdrs     []string
		allow    bool
		status   int
		reason   string
		identity string
		newPath  string
	}{
		{name: "bearer", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + good}, allow: true, identity: "alice"},
		{name: "bearer scheme case", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "bearer " + good}, allow: true, identity: "alice"},
		{name: "query parameter", route: "voice", path: "/v1/voice?a=1&access_token=" + good + "&b=2", allow: true, identity: "alice", newPath: "/v1/voice?a=1&b=2"},
		{name: "query only parameter", route: "voice", path: "/v1/voice?access_token=" + good, allow: true, identity: "alice", newPath: "/v1/voice"},
		{name: "api key header", route: "voice", path: "/v1/voice", hdrs: []string{"x-api-key", demoAPIKey}, allow: true, identity: "demo-client"},
		{name: "api key in query", route: "voice", path: "/v1/voice?access_token=" + demoAPIKey, allow: true, identity: "demo-client", newPath: "/v1/voice"},
		{name: "public route", route: "public", path: "/", allow: true},
		{name: "no route matched", route: "", path: "/nowhere", allow: true},
		{name: "unknown route fails closed", route: "new-route", path: "/", status: 403, reason: ReasonRouteNotAllowed},
		{name: "no token", route: "voice", path: "/v1/voice", status: 401, reason: ReasonMissingToken},
		{name: "basic auth is no token", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Basic YTpi"}, status: 401, reason: ReasonMissingToken},
		{name: "bad signature", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + otherKey}, status: 401, reason: ReasonBadSignature},
		{name: "tampered payload", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + tamper(good)}, status: 401, reason: ReasonBadSignature},
		{name: "expired", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(-time.Minute).Unix()))}, status: 401, reason: ReasonExpiredToken},
		{name: "expired within leeway", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(-10*time.Second).Unix()))}, allow: true, identity: "alice"},
		{name: "not yet valid", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("nbf", now.Add(time.Hour).Unix()))}, status: 401, reason: ReasonNotYetValid},
		{name: "no exp", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", nil))}, status: 401, reason: ReasonInvalidToken},
		{name: "alg none", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + none}, status: 401, reason: ReasonBadSignature},
		{name: "alg confusion", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + hs512}, status: 401, reason: ReasonBadSignature},
		{name: "unknown kid", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "other", valid())}, status: 401, reason: ReasonInvalidToken},
		{name: "no kid, one key", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "", valid())}, allow: true, identity: "alice"},
		{name: "garbage", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer !!!.???.###"}, status: 401, reason: ReasonMalformedToken},
		{name: "garbage api key", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer garbage"}, status: 401, reason: ReasonUnknownAPIKey},
		{name: "oversized", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + strings.Repeat("a", 4096)}, status: 401, reason: ReasonTokenTooLarge},
		{name: "four parts", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + good + ".x"}, status: 401, reason: ReasonUnknownAPIKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check(tt.route, Request{Path: tt.path, Header: headers(tt.hdrs...)}, now)
			if d.Allow != tt.allow || (!tt.allow && (d.Status != tt.status || d.Reason != tt.reason)) {
				t.Fatalf("decision = %+v; want allow=%v status=%d reason=%s", d, tt.allow, tt.status, tt.reason)
			}
			if d.Identity != tt.identity || d.Path != tt.newPath {
				t.Errorf("identity %q path %q; want %q %q", d.Identity, d.Path, tt.identity, tt.newPath)
			}
		})
	}
}

func TestCheckStripsTokensAndSpoofedHeaders(t *testing.T) {
	cfg := testConfig(t)
	good := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	d, _ := cfg.Check("voice", Request{
		Path:   "/v1/voice?access_token=other",
		Header: headers("authorization", "Bearer "+good, "x-api-key", "k", "x-directpipe-identity", "spoof"),
	}, now)
	if !d.Allow {
		t.Fatalf("denied: %+v", d)
	}
	for _, h := range []string{"authorization", "x-api-key", "x-directpipe-identity", "x-directpipe-tenant"} {
		if !contains(d.Remove, h) {
			t.Errorf("%s is not removed: %v", h, d.Remove)
		}
	}
	if d.Path != "/v1/voice" {
		t.Errorf("the query token is forwarded: path %q", d.Path)
	}
	want := map[string]string{"x-directpipe-identity": "alice", "x-directpipe-tenant": "acme"}
	for _, kv := range d.Set {
		if want[kv[0]] != kv[1] {
			t.Errorf("set %s=%s", kv[0], kv[1])
		}
		delete(want, kv[0])
	}
	if len(want) != 0 {
		t.Errorf("not set: %v", want)
	}
}

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
	if d, _ := cfg.Check("r", req, time.Unix(1300819380+3600, 0)); d.Reason != ReasonExpiredToken {
		t.Errorf("after exp: %+v", d)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := map[string]string{
		"unknown field":   `{"routes":{},"policies":{},"extra":1}`,
		"dangling policy": `{"routes":{"r":"nope"},"policies":{}}`,
		"no sources":      `{"routes":{},"policies":{"p":{"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}]}}}`,
		"two in a source": `{"routes":{},"policies":{"p":{"sources":[{"bearer":true,"query":"t"}],"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}]}}}`,
		"no keys":         `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}]}}}`,
		"bad key type":    `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"RSA","alg":"RS256"}]}}}}`,
		"bad hash":        `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}],"api_keys":[{"sha256":"abc"}]}}}`,
		"null policy":     `{"routes":{},"policies":{"p":null}}`,
		"not json":        `{`,
		"trailing":        `{"routes":{},"policies":{}} {}`,
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(doc)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func TestWWWAuthenticate(t *testing.T) {
	if got := (Decision{Reason: ReasonMissingToken}).WWWAuthenticate("dp"); got != `Bearer realm="dp"` {
		t.Error(got)
	}
	if got := (Decision{Reason: ReasonExpiredToken}).WWWAuthenticate("dp"); got != `Bearer realm="dp", error="invalid_token"` {
		t.Error(got)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"routes":{"r":"p"},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0"}]}}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		cfg.Check("r", Request{Path: "/?access_token=x", Header: headers("authorization", "Bearer a.b.c")}, now)
	})
}

func FuzzCheck(f *testing.F) {
	cfg := testConfig(f)
	f.Add("Bearer "+mint(f, jwt.SigningMethodHS256, secret, "dev", valid()), "/v1/voice?access_token=x")
	f.Add("Bearer a.b.c", "/")
	f.Add("bearer ..", "/?access_token=%zz&access_token=")
	f.Fuzz(func(t *testing.T, authz, path string) {
		d, _ := cfg.Check("voice", Request{Path: path, Header: headers("authorization", authz)}, now)
		if d.Allow && d.Identity == "" {
			t.Errorf("allowed without an identity: %+v", d)
		}
		if !d.Allow && d.Status != 401 {
			t.Errorf("denied with status %d", d.Status)
		}
		for _, kv := range d.Set {
			if strings.ContainsAny(kv[1], "\r\n") {
				t.Errorf("header %s carries a line break", kv[0])
			}
		}
	})
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = b64(`{"sub":"mallory","exp":9999999999}`)
	return strings.Join(parts, ".")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
