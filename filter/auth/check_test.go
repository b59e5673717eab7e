package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
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
	// Algorithm confusion the classic way: the header claims RS256 and the
	// signature is an HMAC with the shared secret, hoping the verifier uses
	// the secret as an RSA "public key".
	rs256Confusion := mintHeader(t, `{"alg":"RS256","typ":"JWT","kid":"dev"}`, valid())

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
		{name: "unnamed route fails closed", route: UnnamedRoute, path: "/", status: 403, reason: contract.ReasonRouteNotAllowed},
		{name: "unknown route fails closed", route: "new-route", path: "/", status: 403, reason: contract.ReasonRouteNotAllowed},
		{name: "no token", route: "voice", path: "/v1/voice", status: 401, reason: contract.ReasonMissingToken},
		{name: "basic auth is no token", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Basic YTpi"}, status: 401, reason: contract.ReasonMissingToken},
		{name: "bad signature", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + otherKey}, status: 401, reason: contract.ReasonBadSignature},
		{name: "tampered payload", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + tamper(good)}, status: 401, reason: contract.ReasonBadSignature},
		{name: "expired", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(-time.Minute).Unix()))}, status: 401, reason: contract.ReasonExpiredToken},
		{name: "expired within leeway", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(-10*time.Second).Unix()))}, allow: true, identity: "alice"},
		{name: "not yet valid", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("nbf", now.Add(time.Hour).Unix()))}, status: 401, reason: contract.ReasonNotYetValid},
		{name: "no exp", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", nil))}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "sub a number", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("sub", 7))}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "iss an object", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("iss", map[string]any{"a": "b"}))}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "jti a number", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("jti", 1))}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "aud of numbers", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("aud", []int{1}))}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "aud empty", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "dev", valid("aud", []string{}))}, allow: true, identity: "alice"},
		{name: "alg none", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + none}, status: 401, reason: contract.ReasonBadSignature},
		{name: "alg confusion", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + hs512}, status: 401, reason: contract.ReasonBadSignature},
		{name: "unknown kid", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "other", valid())}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "no kid, one key", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mint(t, jwt.SigningMethodHS256, secret, "", valid())}, allow: true, identity: "alice"},
		{name: "garbage", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer !!!.???.###"}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "four parts", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + good + ".x"}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "duplicate header member", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mintHeader(t, `{"alg":"HS256","kid":"dev","kid":"dev"}`, valid())}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "duplicate claim", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mintRaw(`{"alg":"HS256","kid":"dev"}`, fmt.Sprintf(`{"sub":"alice","sub":"admin","exp":%d}`, now.Add(time.Hour).Unix()))}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "crit header", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mintHeader(t, `{"alg":"HS256","kid":"dev","crit":["exp"]}`, valid())}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "hand-made token", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mintRaw(`{"alg":"HS256","kid":"dev"}`, fmt.Sprintf(`{"sub":"alice","exp":%d}`, now.Add(time.Hour).Unix()))}, allow: true, identity: "alice"},
		{name: "garbage api key", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer garbage"}, status: 401, reason: contract.ReasonUnknownAPIKey},
		{name: "oversized", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + strings.Repeat("a", 4096)}, status: 401, reason: contract.ReasonTokenTooLarge},
		{name: "four parts", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + good + ".x"}, status: 401, reason: contract.ReasonMalformedToken},
		{name: "rs256 header, hmac signature", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + rs256Confusion}, status: 401, reason: contract.ReasonBadSignature},
		{name: "kid not a string", route: "voice", path: "/v1/voice", hdrs: []string{"authorization", "Bearer " + mintHeader(t, `{"alg":"HS256","kid":7}`, valid())}, status: 401, reason: contract.ReasonInvalidToken},
		{name: "empty bearer, query wins", route: "voice", path: "/v1/voice?access_token=" + good, hdrs: []string{"authorization", "Bearer "}, allow: true, identity: "alice", newPath: "/v1/voice"},
		{name: "bearer wins over query", route: "voice", path: "/v1/voice?access_token=garbage", hdrs: []string{"authorization", "Bearer " + good}, allow: true, identity: "alice", newPath: "/v1/voice"},
		{name: "bad query token", route: "voice", path: "/v1/voice?access_token=" + otherKey, status: 401, reason: contract.ReasonBadSignature},
		{name: "api key header with spaces", route: "voice", path: "/v1/voice", hdrs: []string{"x-api-key", "  " + demoAPIKey + " "}, allow: true, identity: "demo-client"},
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

func TestSinglePolicyGuardsEveryRoute(t *testing.T) {
	cfg, err := ParseConfig([]byte(briefConfig))
	if err != nil {
		t.Fatal(err)
	}
	good := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	for _, route := range []string{"voice", "", "anything"} {
		d, p := cfg.Check(route, Request{Path: "/v1/voice", Header: headers()}, now)
		if d.Allow || d.Reason != contract.ReasonMissingToken || p == nil || p.Name != "demo" {
			t.Errorf("route %q without a token: %+v, policy %v", route, d, p)
		}
	}
	d, _ := cfg.Check("", Request{
		Path:   "/v1/voice?lang=en&access_token=" + good + "&rate=16000",
		Header: headers("x-directpipe-identity", "mallory", "x-directpipe-sub", "mallory"),
	}, now)
	if !d.Allow || d.Identity != "alice" {
		t.Fatalf("query token: %+v", d)
	}
	if d.Path != "/v1/voice?lang=en&rate=16000" {
		t.Errorf("path %q", d.Path)
	}
	want := [][2]string{{"x-directpipe-sub", "alice"}, {"x-directpipe-identity", "alice"}}
	if !slices.Equal(d.Set, want) {
		t.Errorf("set %q, want %q", d.Set, want)
	}
	for _, h := range []string{"x-directpipe-identity", "x-directpipe-sub"} {
		if !contains(d.Remove, h) {
			t.Errorf("client copy of %s is kept: %v", h, d.Remove)
		}
	}
	d, _ = cfg.Check("", Request{Path: "/", Header: headers("x-api-key", demoAPIKey)}, now)
	if !d.Allow || d.Identity != "demo-client" || !contains(d.Remove, "x-api-key") || d.Path != "" {
		t.Errorf("api key: %+v", d)
	}
	d, _ = cfg.Check("", Request{Path: "/", Header: headers("authorization", "Bearer "+strings.Repeat("x", 8193))}, now)
	if d.Reason != contract.ReasonTokenTooLarge {
		t.Errorf("8193-byte token: %+v", d)
	}
}

func TestClaimHeaders(t *testing.T) {
	doc := strings.Replace(briefConfig, `"claim_headers": {"sub": "x-directpipe-sub"}`,
		`"claim_headers": {"tenant": "x-t", "admin": "x-a", "n": "x-n", "obj": "x-o", "iat": "x-iat"}`, 1)
	cfg, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("admin", true, "n", 1712345678, "obj", map[string]any{"a": 1}, "tenant", "acme"))
	d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now)
	want := [][2]string{{"x-a", "true"}, {"x-n", "1712345678"}, {"x-t", "acme"}, {"x-directpipe-identity", "alice"}}
	if !slices.Equal(d.Set, want) {
		t.Errorf("set %q, want %q (sorted by claim, objects dropped)", d.Set, want)
	}
}

// TestUnsafeIdentityRefused: an identity or claim value a back end, a log
// or a person could read as another name is refused, never rewritten
// (regression: "ad\x00min" was forwarded as admin), and so is a token
// that names no caller when the identity header comes from sub.
func TestUnsafeIdentityRefused(t *testing.T) {
	cfg, err := ParseConfig([]byte(briefConfig))
	if err != nil {
		t.Fatal(err)
	}
	noSub := valid()
	delete(noSub, "sub")
	bad := []string{
		"ad\x00min", "admin\r\nx-evil: 1", "admin\n", "\tadmin", "admin ", " admin", "ad\x7fmin",
		"admin\u202e", "\u2066admin\u2069", "ad\u200bmin", "ad\u00admin", "admin\u00a0", "\u3000admin",
		"ad\u2028min", "admin\ufeff", "ad\x1bmin", "",
	}
	for _, v := range bad {
		for _, claim := range []string{"sub", "tenant"} {
			c := valid(claim, v)
			if claim == "tenant" && v == "" {
				continue // an empty claim sets no header
			}
			tok := mint(t, jwt.SigningMethodHS256, secret, "dev", c)
			if claim == "tenant" {
				doc := strings.Replace(briefConfig, `"claim_headers": {"sub": "x-directpipe-sub"}`, `"claim_headers": {"tenant": "x-t"}`, 1)
				tc, err := ParseConfig([]byte(doc))
				if err != nil {
					t.Fatal(err)
				}
				if d, _ := tc.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now); d.Allow || d.Reason != contract.ReasonInvalidToken {
					t.Errorf("claim %q: %+v, want 401 invalid_token", v, d)
				}
				continue
			}
			if d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now); d.Allow || d.Reason != contract.ReasonInvalidToken {
				t.Errorf("sub %q: %+v, want 401 invalid_token", v, d)
			}
		}
	}
	// Raw bytes that are not UTF-8, which an encoder would not write.
	rawSub := mintRaw(`{"alg":"HS256","kid":"dev"}`, fmt.Sprintf("{\"sub\":\"ad\xffmin\",\"exp\":%d}", now.Add(time.Hour).Unix()))
	if d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+rawSub)}, now); d.Allow {
		t.Errorf("sub with a byte that is not UTF-8: %+v, want refused", d)
	}
	if d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+mint(t, jwt.SigningMethodHS256, secret, "dev", noSub))}, now); d.Allow || d.Reason != contract.ReasonInvalidToken {
		t.Errorf("no sub with an identity header: %+v, want 401 invalid_token", d)
	}
	// Without an identity header a token need not name its caller.
	noIdentity := strings.Replace(briefConfig, `"identity_header": "x-directpipe-identity",`, "", 1)
	nc, err := ParseConfig([]byte(strings.Replace(noIdentity, `"claim_headers": {"sub": "x-directpipe-sub"}`, `"claim_headers": {"tenant": "x-t"}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := nc.Check("", Request{Header: headers("authorization", "Bearer "+mint(t, jwt.SigningMethodHS256, secret, "dev", noSub))}, now); !d.Allow {
		t.Errorf("no sub, no identity header: %+v, want allowed", d)
	}
	for _, v := range []string{"alice", "Zoë Ångström", "user@example.com", "a b", "名前", "x=1;y=2"} {
		tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("sub", v))
		if d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now); !d.Allow || d.Identity != v {
			t.Errorf("sub %q: %+v, want allowed as it is", v, d)
		}
	}
	// An API key's identity comes from the policy: one that is not safe
	// is refused with the configuration.
	for _, v := range []string{"ad\x00min", "admin ", "ad\u202emin"} {
		doc := strings.Replace(briefConfig, `"identity": "demo-client"`, `"identity": `+strconv.Quote(v), 1)
		if _, err := ParseConfig([]byte(doc)); err == nil {
			t.Errorf("api key identity %q accepted", v)
		}
	}
}

// TestTokenLifetimeBounded: a token valid for longer than the policy's
// max_token_lifetime_seconds (default a day) is refused, exp: 1e20
// included (regression: it was accepted).
func TestTokenLifetimeBounded(t *testing.T) {
	cfg, err := ParseConfig([]byte(briefConfig))
	if err != nil {
		t.Fatal(err)
	}
	week := strings.Replace(briefConfig, `"leeway_seconds": 30,`, `"leeway_seconds": 30, "max_token_lifetime_seconds": 604800,`, 1)
	weekCfg, err := ParseConfig([]byte(week))
	if err != nil {
		t.Fatal(err)
	}
	hand := func(exp string) string {
		return mintRaw(`{"alg":"HS256","kid":"dev"}`, `{"sub":"alice","exp":`+exp+`}`)
	}
	unix := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	tests := []struct {
		name  string
		cfg   *Config
		token string
		allow bool
	}{
		{"an hour", cfg, hand(unix(time.Hour)), true},
		{"a day", cfg, hand(unix(24 * time.Hour)), true},
		{"a day and the leeway", cfg, hand(unix(24*time.Hour + 30*time.Second)), true},
		{"a day and a minute", cfg, hand(unix(24*time.Hour + time.Minute)), false},
		{"a year", cfg, hand(unix(365 * 24 * time.Hour)), false},
		{"1e20", cfg, hand("1e20"), false},
		{"1e308", cfg, hand("1e308"), false},
		{"2^53", cfg, hand("9007199254740992"), false},
		{"six days, a week's bound", weekCfg, hand(unix(6 * 24 * time.Hour)), true},
		{"eight days, a week's bound", weekCfg, hand(unix(8 * 24 * time.Hour)), false},
	}
	for _, tt := range tests {
		d, _ := tt.cfg.Check("", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
		if d.Allow != tt.allow || (!tt.allow && d.Reason != contract.ReasonInvalidToken) {
			t.Errorf("%s: %+v, want allow %v", tt.name, d, tt.allow)
		}
	}
	for _, v := range []string{"-1", "31708801"} {
		doc := strings.Replace(briefConfig, `"leeway_seconds": 30,`, `"leeway_seconds": 30, "max_token_lifetime_seconds": `+v+`,`, 1)
		if _, err := ParseConfig([]byte(doc)); err == nil {
			t.Errorf("max_token_lifetime_seconds %s accepted", v)
		}
	}
}

func FuzzCheck(f *testing.F) {
	cfg := testConfig(f)
	f.Add("Bearer "+mint(f, jwt.SigningMethodHS256, secret, "dev", valid()), "/v1/voice?access_token=x", "")
	f.Add("Bearer a.b.c", "/", "k")
	f.Add("bearer ..", "/?access_token=%zz&access_token=", "")
	f.Add("", "/v1/voice?a=1&access_token="+demoAPIKey+"&b", "")
	f.Add("Bearer "+mintHeader(f, `{"alg":"RS256"}`, valid()), "/", "")
	f.Fuzz(func(t *testing.T, authz, path, apiKey string) {
		hdrs := []string{"authorization", authz}
		if apiKey != "" {
			hdrs = append(hdrs, "x-api-key", apiKey)
		}
		d, _ := cfg.Check("voice", Request{Path: path, Header: headers(hdrs...)}, now)
		if d.Allow && d.Identity == "" {
			t.Errorf("allowed without an identity: %+v", d)
		}
		if !d.Allow {
			if d.Status != 401 || !slices.Contains(contract.Reasons(), d.Reason) {
				t.Errorf("denied with status %d reason %q", d.Status, d.Reason)
			}
			if len(authz) > 16 && strings.Contains(string(d.Body()), authz) {
				t.Errorf("the denial body carries the token")
			}
			return
		}
		for _, kv := range d.Set {
			if strings.ContainsAny(kv[1], "\r\n\x00") {
				t.Errorf("header %s carries a control character", kv[0])
			}
		}
		if _, _, n := cutQueryParam(d.Path, "access_token"); d.Path != "" && n > 0 {
			t.Errorf("the token parameter is forwarded: %q", d.Path)
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

// mintHeader signs any header JSON with the test secret, for tokens the
// library would refuse to make.
func mintHeader(t testing.TB, header string, claims jwt.MapClaims) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return mintRaw(header, string(payload))
}

// mintRaw signs any header and payload JSON with the test secret (HS256).
func mintRaw(header, payload string) string {
	signing := b64(header) + "." + b64(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// briefConfig is the single-policy document of the filter's contract, as a
// static bootstrap would carry it.
var briefConfig = `{
  "name": "demo",
  "realm": "directpipe",
  "sources": [{"bearer": true}, {"query": "access_token"}, {"header": "x-api-key"}],
  "jwks": {"keys": [{"kty": "oct", "kid": "dev", "alg": "HS256", "k": "` + base64.RawURLEncoding.EncodeToString(secret) + `"}]},
  "leeway_seconds": 30,
  "max_token_bytes": 8192,
  "api_keys": [{"sha256": "` + apiKeyHash(demoAPIKey) + `", "identity": "demo-client"}],
  "identity_header": "x-directpipe-identity",
  "claim_headers": {"sub": "x-directpipe-sub"}
}`

func apiKeyHash(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:])
}

// TestCheckTagged: a route naming its policy in its metadata is checked by
// that policy, whatever the route map says; "" is public, and a policy
// the configuration lacks fails closed. A one-policy document guards every
// route whatever its metadata.
func TestCheckTagged(t *testing.T) {
	cfg := testConfig(t)
	good := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	single, err := ParseConfig([]byte(`{"name":"one","sources":[{"bearer":true}],"api_keys":[{"sha256":"` + strings.Repeat("0", 64) + `","identity":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		cfg    *Config
		policy string
		token  string
		allow  bool
		reason string
	}{
		{"policy with a good token", cfg, "demo", good, true, ""},
		{"policy without a token", cfg, "demo", "", false, contract.ReasonMissingToken},
		{"public", cfg, "", "", true, ""},
		{"a policy not configured", cfg, "later", good, false, contract.ReasonRouteNotAllowed},
		{"one policy guards a public tag", single, "", "", false, contract.ReasonMissingToken},
	} {
		h := headers()
		if tt.token != "" {
			h = headers("authorization", "Bearer "+tt.token)
		}
		d, _ := tt.cfg.CheckTagged(tt.policy, Request{Path: "/v1/voice", Header: h}, now)
		if d.Allow != tt.allow || d.Reason != tt.reason {
			t.Errorf("%s: %+v, want allow %v reason %q", tt.name, d, tt.allow, tt.reason)
		}
		if tt.name == "public" && !slices.Contains(d.Remove, "x-directpipe-identity") {
			t.Errorf("public: removes %v, want the identity header among them", d.Remove)
		}
	}
	// Without a route map, what the control plane sends, a route that
	// names no policy is public; with one, a route it lacks is refused.
	policiesOnly, err := ParseConfig([]byte(`{"policies":{"one":{"name":"one","sources":[{"bearer":true}],"api_keys":[{"sha256":"` + strings.Repeat("0", 64) + `","identity":"x"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := policiesOnly.Check("api", Request{Path: "/"}, now); !d.Allow {
		t.Errorf("untagged route without a route map: %+v, want public", d)
	}
	if d, _ := cfg.Check("api", Request{Path: "/"}, now); d.Reason != contract.ReasonRouteNotAllowed {
		t.Errorf("route missing from the route map: %+v, want %s", d, contract.ReasonRouteNotAllowed)
	}
}
