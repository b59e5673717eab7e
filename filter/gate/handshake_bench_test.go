package gate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

// benchHost is the least a host can do for a handshake: it hands out a
// browser's upgrade request, copied into one buffer as the native binding
// copies it out of Envoy's memory, and drops every edit. What a
// benchmark over it measures is the gate and the auth core, the Go work
// of one native handshake, without Envoy.
type benchHost struct {
	headers [][2]string
}

func (h *benchHost) Log(Level, string)                    {}
func (h *benchHost) PluginConfiguration() ([]byte, error) { return nil, nil }
func (h *benchHost) DefineCounter(string)                 {}
func (h *benchHost) Count(string)                         {}
func (h *benchHost) AddGauge(string, int64)               {}
func (h *benchHost) NodeID() (string, error)              { return "", errNoHostCrypto }
func (h *benchHost) VerifySignature(string, []byte, []byte, []byte) (bool, error) {
	return false, errNoHostCrypto
}
func (h *benchHost) ClientAddress() (string, error) { return "127.0.0.1:40000", nil }
func (h *benchHost) SharedData(string) ([]byte, uint32, error) {
	return nil, 0, nil
}
func (h *benchHost) SetSharedData(string, []byte, uint32) (bool, error) { return true, nil }
func (h *benchHost) RequestHeaders() ([][2]string, error) {
	size := 0
	for _, kv := range h.headers {
		size += len(kv[0]) + len(kv[1])
	}
	buf := make([]byte, 0, size)
	for _, kv := range h.headers {
		buf = append(append(buf, kv[0]...), kv[1]...)
	}
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	out := make([][2]string, len(h.headers))
	at := 0
	for i, kv := range h.headers {
		k, v := len(kv[0]), len(kv[1])
		out[i] = [2]string{all[at : at+k], all[at+k : at+k+v]}
		at += k + v
	}
	return out, nil
}
func (h *benchHost) RouteName() (string, bool)                 { return "voice", true }
func (h *benchHost) RoutePolicy() (string, bool)               { return "voice", true }
func (h *benchHost) RemoveRequestHeader(string) error          { return nil }
func (h *benchHost) ReplaceRequestHeader(string, string) error { return nil }
func (h *benchHost) SendLocalResponse(int, string, []byte, [][2]string) error {
	return nil
}

// browserUpgrade is the request a browser sends for a WebSocket, as
// Envoy hands it to a filter (pseudo-headers first, the headers Envoy
// adds last), with the token in Authorization.
func browserUpgrade(token string) [][2]string {
	return [][2]string{
		{":authority", "voice.example.com"},
		{":path", "/v1/voice?session=7f3a"},
		{":method", "GET"},
		{":scheme", "http"},
		{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"},
		{"accept-encoding", "gzip, deflate, br, zstd"},
		{"accept-language", "en-GB,en;q=0.9"},
		{"cache-control", "no-cache"},
		{"pragma", "no-cache"},
		{"origin", "https://app.example.com"},
		{"sec-websocket-version", "13"},
		{"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"sec-websocket-extensions", "permessage-deflate; client_max_window_bits"},
		{"upgrade", "websocket"},
		{"connection", "Upgrade"},
		{"authorization", "Bearer " + token},
		{"x-forwarded-proto", "http"},
		{"x-request-id", "4f1c8a52-6f0e-4b7e-9d57-0f3c1f2b9a11"},
	}
}

// BenchmarkHTTPHandshake is one handshake through the HTTP gate, headers
// in and decision out, per algorithm, with the token cache off (cold:
// every handshake decodes and verifies its token) and on (cached: a
// caller reconnecting with the same token). Run with -cpuprofile and
// -benchmem to see where a native handshake's Go time goes (see
// docs/filter.md, "Where the cost goes").
func BenchmarkHTTPHandshake(b *testing.B) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ecJWK := map[string]string{
		"kty": "EC", "crv": "P-256", "kid": "e1", "alg": "ES256",
		"x": base64.RawURLEncoding.EncodeToString(ecKey.X.FillBytes(make([]byte, 32))),
		"y": base64.RawURLEncoding.EncodeToString(ecKey.Y.FillBytes(make([]byte, 32))),
	}
	hsJWK := map[string]string{"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)}
	algs := []struct {
		name   string
		jwk    map[string]string
		method jwt.SigningMethod
		kid    string
		key    any
	}{
		{"HS256", hsJWK, jwt.SigningMethodHS256, "k1", secret},
		{"ES256", ecJWK, jwt.SigningMethodES256, "e1", ecKey},
	}
	for _, alg := range algs {
		tok := jwt.NewWithClaims(alg.method, goodClaims())
		tok.Header["kid"] = alg.kid
		signed, err := tok.SignedString(alg.key)
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []struct {
			name  string
			cache map[string]any
		}{{"cold", map[string]any{"max_entries": -1}}, {"cached", nil}} {
			pol := policyDoc()
			pol["jwks"] = map[string]any{"keys": []map[string]string{alg.jwk}}
			pol["sources"] = []map[string]any{{"bearer": true}, {"subprotocol_prefix": "bearer."}}
			pol["origins"] = map[string]any{"allow": []string{"https://app.example.com"}}
			if mode.cache != nil {
				pol["token_cache"] = mode.cache
			}
			b.Run(alg.name+"/"+mode.name, func(b *testing.B) {
				g := NewHTTP()
				cfg := newFakeHost(mustJSON(b, map[string]any{"policies": map[string]any{"voice": pol}}))
				if !g.Configure(cfg, rootID) {
					b.Fatalf("configuration refused: %q", cfg.logs)
				}
				h := &benchHost{headers: browserUpgrade(signed)}
				b.ReportAllocs()
				id := uint32(streamID)
				for b.Loop() {
					g.ContextCreate(id, rootID)
					if g.RequestHeaders(h, id, now) != Continue {
						b.Fatal("handshake refused")
					}
					g.Delete(h, id)
					id++
				}
			})
		}
	}
}

// BenchmarkES256Verify is Go's own P-256 check alone, the floor of a cold
// ES256 handshake in the native module: set it against
// BenchmarkHTTPHandshake/ES256/cold.
func BenchmarkES256Verify(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header.claims"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("signature refused")
		}
	}
}
