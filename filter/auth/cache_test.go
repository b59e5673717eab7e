package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

// cacheConfig is a one-policy config with the test secret, a 30 s leeway
// and the given token_cache setting (nil: the defaults).
func cacheConfig(t testing.TB, tc map[string]any) *Config {
	t.Helper()
	pol := map[string]any{
		"sources":        []map[string]any{{"subprotocol_prefix": "dp.bearer."}, {"bearer": true}},
		"jwks":           map[string]any{"keys": []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)}}},
		"leeway_seconds": 30,
		"claim_headers":  map[string]string{"tenant": "x-tenant"},
	}
	if tc != nil {
		pol["token_cache"] = tc
	}
	data, _ := json.Marshal(pol)
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTokenCache runs each case's handshakes in order against one
// configuration, on a fake clock: each step is a token, the time since
// now, and the decision and cache result it must get.
func TestTokenCache(t *testing.T) {
	// exp in 10 minutes: longer than the default maximum age of 5.
	long := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(10*time.Minute).Unix()))
	// exp in 1 minute: the cache must not outlive it (plus leeway).
	short := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(time.Minute).Unix()))
	other := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("sub", "bob"))
	third := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("sub", "carol"))
	bad := tamper(long)
	type step struct {
		token  string
		at     time.Duration
		reason string // "" allows
		cache  CacheResult
	}
	tests := []struct {
		name  string
		tc    map[string]any
		steps []step
	}{
		{"a repeat caller hits", nil, []step{
			{long, 0, "", CacheMiss}, {long, time.Second, "", CacheHit}, {long, 4 * time.Minute, "", CacheHit},
		}},
		{"the maximum age ends an entry, then the token is verified again", nil, []step{
			{long, 0, "", CacheMiss}, {long, 5 * time.Minute, "", CacheMiss}, {long, 6 * time.Minute, "", CacheHit},
		}},
		{"exp ends an entry before the maximum age", nil, []step{
			{short, 0, "", CacheMiss}, {short, 80 * time.Second, "", CacheHit},
			{short, 90 * time.Second, contract.ReasonExpiredToken, CacheMiss}, {short, 91 * time.Second, contract.ReasonExpiredToken, CacheMiss},
		}},
		{"a denial is never cached", nil, []step{
			{bad, 0, contract.ReasonBadSignature, CacheMiss}, {bad, time.Second, contract.ReasonBadSignature, CacheMiss},
		}},
		{"a configured maximum age", map[string]any{"max_age_seconds": 10}, []step{
			{long, 0, "", CacheMiss}, {long, 9 * time.Second, "", CacheHit}, {long, 10 * time.Second, "", CacheMiss},
		}},
		{"a full cache evicts the oldest insertion", map[string]any{"max_entries": 2}, []step{
			{long, 0, "", CacheMiss}, {other, 0, "", CacheMiss}, {third, 0, "", CacheMiss},
			{other, time.Second, "", CacheHit}, {third, time.Second, "", CacheHit}, {long, time.Second, "", CacheMiss},
		}},
		{"off", map[string]any{"max_entries": -1}, []step{
			{long, 0, "", CacheNone}, {long, time.Second, "", CacheNone},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cacheConfig(t, tt.tc)
			for i, s := range tt.steps {
				d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+s.token)}, now.Add(s.at))
				if d.Allow != (s.reason == "") || d.Reason != s.reason || d.Cache != s.cache {
					t.Errorf("step %d at +%v: allow %v reason %q cache %d, want reason %q cache %d", i, s.at, d.Allow, d.Reason, d.Cache, s.reason, s.cache)
				}
			}
			if c := cfg.Single().cache; c != nil && c.len() > c.max {
				t.Errorf("%d entries, bound %d", c.len(), c.max)
			}
		})
	}
}

// TestTokenCacheDecisionsAreCopies: what one handshake adds to its
// decision (the rewritten subprotocol header) must not reach the next
// handshake served from the cache.
func TestTokenCacheDecisionsAreCopies(t *testing.T) {
	cfg := cacheConfig(t, nil)
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	first, _ := cfg.Check("", Request{Header: headers("sec-websocket-protocol", "dp.bearer."+tok+", voice.v1")}, now)
	second, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now)
	if !first.Allow || !second.Allow || second.Cache != CacheHit {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	for _, kv := range second.Set {
		if kv[0] == "sec-websocket-protocol" {
			t.Errorf("the first handshake's header edit leaked into a cached decision: %v", second.Set)
		}
	}
	if len(second.Set) != 1 || second.Set[0] != [2]string{"x-tenant", "acme"} {
		t.Errorf("cached decision sets %v", second.Set)
	}
}

// TestTokenCacheDroppedWithTheConfig: a new configuration (a key rotation
// arrives as one) starts empty, so a token of a removed key is verified
// again, and refused.
func TestTokenCacheDroppedWithTheConfig(t *testing.T) {
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	cfg := cacheConfig(t, nil)
	for _, want := range []CacheResult{CacheMiss, CacheHit} {
		if d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now); !d.Allow || d.Cache != want {
			t.Fatalf("%+v, want cache %d", d, want)
		}
	}
	rotated, err := ParseConfig([]byte(`{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","kid":"dev","alg":"HS256","k":"` +
		base64.RawURLEncoding.EncodeToString([]byte("a-rotated-secret-of-32-bytes-long")) + `"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := rotated.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now); d.Allow || d.Cache != CacheMiss {
		t.Errorf("after the rotation: %+v", d)
	}
}

func TestTokenCacheBounds(t *testing.T) {
	for _, tc := range []string{`{"max_entries":65537}`, `{"max_age_seconds":3601}`} {
		doc := `{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","kid":"dev","alg":"HS256","k":"` +
			base64.RawURLEncoding.EncodeToString(secret) + `"}]},"token_cache":` + tc + `}`
		if _, err := ParseConfig([]byte(doc)); err == nil {
			t.Errorf("token_cache %s accepted", tc)
		}
	}
}

// TestDecisionUntil: an allow says how long a host may reuse it (the
// native build's verdict table) only when it came from the token cache,
// until that entry ends, or is an API key's, for the cache's maximum age;
// never for a token just verified or with the cache off.
func TestDecisionUntil(t *testing.T) {
	long := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(10*time.Minute).Unix()))
	short := mint(t, jwt.SigningMethodHS256, secret, "dev", valid("exp", now.Add(time.Minute).Unix()))
	sum := sha256.Sum256([]byte("an-api-key"))
	keyConfig := func(tc string) *Config {
		cfg, err := ParseConfig([]byte(`{"sources":[{"bearer":true}],"api_keys":[{"sha256":"` + hex.EncodeToString(sum[:]) + `","identity":"k"}]` + tc + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	tests := []struct {
		name  string
		cfg   *Config
		token string
		want  []time.Time // Until of each handshake, one a second
	}{
		{"a token: not when verified, then the cache entry's end", cacheConfig(t, nil), long,
			[]time.Time{{}, now.Add(DefaultTokenCacheMaxAge)}},
		{"a token near its exp (with 30 s leeway)", cacheConfig(t, nil), short,
			[]time.Time{{}, now.Add(90 * time.Second)}},
		{"the token cache off", cacheConfig(t, map[string]any{"max_entries": -1}), long, []time.Time{{}, {}}},
		{"an API key", keyConfig(""), "an-api-key",
			[]time.Time{now.Add(DefaultTokenCacheMaxAge), now.Add(time.Second + DefaultTokenCacheMaxAge)}},
		{"an API key with the token cache off", keyConfig(`,"token_cache":{"max_entries":-1}`), "an-api-key", []time.Time{{}, {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, want := range tt.want {
				d, _ := tt.cfg.Check("", Request{Header: headers("authorization", "Bearer "+tt.token)}, now.Add(time.Duration(i)*time.Second))
				if !d.Allow || !d.Until.Equal(want) {
					t.Errorf("handshake %d: allow %v until %v, want %v", i, d.Allow, d.Until, want)
				}
			}
		})
	}
}
