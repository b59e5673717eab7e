package auth

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// The handshake's cost in the filter alone, per token: natively with `go
// test -bench`, and in a Wasm VM by running the same test binary built
// for wasip1 (see docs/benchmarks.md, "Handshakes"). Envoy's share is
// measured by `make bench`.

func BenchmarkCheckHS256(b *testing.B) {
	tok := mint(b, jwt.SigningMethodHS256, secret, "dev", valid("tenant", "acme", "iss", "https://issuer.example", "scope", "voice:stream"))
	req := Request{Path: "/v1/voice", Header: headers("authorization", "Bearer "+tok)}
	for _, tc := range []struct {
		name  string
		cache map[string]any // token_cache; nil: the defaults
	}{{"cold", map[string]any{"max_entries": -1}}, {"cached", nil}} {
		cfg := cacheConfig(b, tc.cache)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d, _ := cfg.Check("", req, now); !d.Allow {
					b.Fatal(d.Reason)
				}
			}
		})
	}
}

// BenchmarkParseConfig is what each worker (and Envoy's canary instance)
// does with a pushed filter config, at the route counts of `make bench`'s
// push rows: half the routes with auth, half public.
func BenchmarkParseConfig(b *testing.B) {
	for _, n := range []int{100, 10000} {
		routes := map[string]string{}
		for i := range n {
			pol := ""
			if i%2 == 0 {
				pol = "demo"
			}
			routes["route-"+strconv.Itoa(i)] = pol
		}
		doc, _ := json.Marshal(map[string]any{
			"routes": routes,
			"policies": map[string]any{"demo": map[string]any{
				"name":    "demo",
				"sources": []map[string]any{{"bearer": true}, {"subprotocol_prefix": "dp.bearer."}},
				"jwks":    map[string]any{"keys": []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)}}},
			}},
		})
		b.Run(strconv.Itoa(n)+"-routes", func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if _, err := ParseConfig(doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
