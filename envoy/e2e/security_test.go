package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http2"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// spoof is the value of every header a hostile client forges: the back
// end must never see it, under any name.
const spoof = "SPOOFED"

// recorded is one request as the example back end recorded it.
type recorded struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
}

// backendRequests returns every request the back end recorded, on either
// port.
func backendRequests(t *testing.T, s *stack) []recorded {
	t.Helper()
	resp, err := http.Get("http://" + s.backend.VoiceAddr + "/debug/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []recorded
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// tlsBackend is an HTTPS back end whose certificate names good.internal,
// signed by a CA of its own; it counts the requests it receives.
type tlsBackend struct {
	addr, caFile string
	mu           sync.Mutex
	hits         int
}

func startTLSBackend(t *testing.T) *tlsBackend {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "good.internal"},
		DNSNames:  []string{"good.internal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	b := &tlsBackend{caFile: filepath.Join(t.TempDir(), "ca.pem")}
	if err := os.WriteFile(b.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hits++
		b.mu.Unlock()
		io.WriteString(w, "tls ok\n")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

func (b *tlsBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// securityRoutes are added to the example policy: a public REST route
// matched by a header, a public tcp route, a tcp route with auth whose
// back end keeps connections open after answering without an upgrade
// (the REST port: plain Go net/http), and three routes to the TLS
// back end (its name right, wrong, and right through the san list).
const securityRoutes = `
  - { name: voice-open, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice }
  - { name: rest-tcp, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: rest, auth: demo }
  - { name: tenant-api, match: { prefix: /routes/, headers: [{ name: x-tenant, exact: acme }] }, kind: http, backend: rest }
  - { name: tls-good, match: { prefix: /tls-good/ }, kind: http, backend: tls-good }
  - { name: tls-wrong, match: { prefix: /tls-wrong/ }, kind: http, backend: tls-wrong }
  - { name: tls-san, match: { prefix: /tls-san/ }, kind: http, backend: tls-san }
  - { name: lan-only, match: { prefix: /v1/lan }, kind: websocket, backend: voice, auth: demo, clients: { allow: [10.0.0.0/8] } }
  - { name: rest-lan, match: { prefix: /routes/lan }, kind: http, backend: rest, clients: { allow: [10.0.0.0/8] } }
  - { name: rest-local, match: { prefix: /routes/local }, kind: http, backend: rest, clients: { allow: [127.0.0.0/8], deny: [10.0.0.0/8] } }
  - { name: lan-tcp, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice, auth: demo, clients: { allow: [10.0.0.0/8] } }`

const securityBackends = `
  - { name: tls-good, endpoints: ["%[1]s"], tls: { sni: good.internal, ca_file: "%[2]s" } }
  - { name: tls-wrong, endpoints: ["%[1]s"], tls: { sni: other.internal, ca_file: "%[2]s" } }
  - { name: tls-san, endpoints: ["%[1]s"], tls: { sni: other.internal, ca_file: "%[2]s", san: [good.internal] } }`

// hostile is one row of the security suite: a request a hostile client
// sends (tagged with its id so the back end's record can be found), the
// status it must get, whether the back end may see it, and what must
// hold of what the back end saw.
type hostile struct {
	name    string
	send    func(t *testing.T, id string) int
	status  int
	reached bool
	check   func(t *testing.T, seen recorded)
}

// TestHostileRequests runs a table of hostile requests against one real
// Envoy serving the example policy (a WebSocket route with auth, the same
// route in tcp mode, a public REST route) plus a header-matched public
// route and TLS back ends, and asserts on what the back end received
// (issue 11, "Done when"). Every row also checks that no forged value, no
// token and no header with an underscore reached the back end.
// It runs once per build of the handshake filter, Wasm and native, the
// tcp mode rows included (the Wasm or the native network filter).
func TestHostileRequests(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { testHostileRequests(t, build) })
	}
}

func testHostileRequests(t *testing.T, build testkit.FilterBuild) {
	tlsb := startTLSBackend(t)
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	openAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	restTCPAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	lanTCPAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{filter: build}, func(p *policyParams) {
		p.TCP = tcpAddr
		// The slowloris row waits for this.
		p.ListenerLimits = "{ request_headers_timeout: 1s }"
		p.RoutesYAML = fmt.Sprintf(securityRoutes, openAddr, restTCPAddr, lanTCPAddr)
		p.BackendsYAML = fmt.Sprintf(securityBackends, tlsb.addr, tlsb.caFile)
	})
	for _, addr := range []string{tcpAddr, openAddr, restTCPAddr, lanTCPAddr} {
		if err := testkit.WaitListening(addr, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s.waitStatus("SYNCED", "")

	now := time.Now()
	tok := validToken(t)
	claims := func(exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"sub": "caller-1", "iat": now.Unix(), "exp": exp.Unix()}
	}
	expired := mint(t, devSecret, "dev", claims(now.Add(-time.Hour)))
	wrongKey := mint(t, []byte("another-secret-of-at-least-32-bytes!"), "dev", claims(now.Add(time.Hour)))
	forged := tok[:len(tok)-6] + "AAAAAA"
	algNone := b64url(`{"alg":"none","typ":"JWT","kid":"dev"}`) + "." + b64url(fmt.Sprintf(`{"sub":"admin","exp":%d}`, now.Add(time.Hour).Unix())) + "."
	big := claims(now.Add(time.Hour))
	big["pad"] = strings.Repeat("p", 9000)
	oversized := mint(t, devSecret, "dev", big)
	// Signed with the right key, but naming the caller in a form JWT
	// readers disagree on: refused, so no reader's identity gets through.
	subNumber := mint(t, devSecret, "dev", jwt.MapClaims{"sub": 7, "exp": now.Add(time.Hour).Unix()})
	subNull := mint(t, devSecret, "dev", jwt.MapClaims{"sub": nil, "exp": now.Add(time.Hour).Unix()})
	// Signed with the right key, but naming the caller in a form that
	// reads as another name, or naming nobody, or valid for ever.
	subNUL := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "ad\u0000min", "exp": now.Add(time.Hour).Unix()})
	subSpace := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "admin ", "exp": now.Add(time.Hour).Unix()})
	subBidi := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "\u202enimda", "exp": now.Add(time.Hour).Unix()})
	noSub := mint(t, devSecret, "dev", jwt.MapClaims{"exp": now.Add(time.Hour).Unix()})
	forever := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "caller-1", "exp": 1e20})
	twoDays := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "caller-1", "exp": now.Add(48 * time.Hour).Unix()})
	tokens := []string{tok, expired, wrongKey, forged, algNone, oversized, subNumber, subNull, subNUL, subSpace, subBidi, noSub, forever, twoDays, demoAPIKey}

	// Every spelling of the identity and claim headers a client may try.
	spoofed := http.Header{
		"X-Directpipe-Identity": {spoof, spoof},
		"x-directpipe-sub":      {spoof},
		"X-DIRECTPIPE-SUB":      {spoof},
		"x-DirectPipe-Identity": {spoof},
	}
	get := func(path string, h http.Header) func(*testing.T, string) int {
		return func(t *testing.T, id string) int {
			return plainGet(t, s.listenURL("http", tagged(path, id)), h)
		}
	}
	upgradeWith := func(path string, h http.Header) func(*testing.T, string) int {
		return func(t *testing.T, id string) int {
			resp, _ := upgrade(t, s.listenURL("http", tagged(path, id)), h)
			return resp.StatusCode
		}
	}
	raw := func(addr, head string) func(*testing.T, string) int {
		return func(t *testing.T, id string) int {
			got := rawExchange(t, addr, strings.ReplaceAll(head, "ROW", id))
			if got.status != http.StatusSwitchingProtocols && !got.closed {
				t.Errorf("the connection stayed open after a %d", got.status)
			}
			return got.status
		}
	}
	// twice sends a checked request, reads its answer, then sends a
	// second request on the same connection with no token and a spoofed
	// identity: it must never reach the back end (the generic check finds
	// it by its row tag).
	twice := func(addr, head, second string) func(*testing.T, string) int {
		return func(t *testing.T, id string) int {
			return secondRequest(t, addr, strings.ReplaceAll(head, "ROW", id), strings.ReplaceAll(second, "ROW", id+"-second"))
		}
	}
	secondGet := "GET /api/health?row=ROW HTTP/1.1\r\nHost: voice.local\r\nX-Directpipe-Identity: " + spoof + "\r\n\r\n"
	// rawHTTP sends raw bytes to the HTTP listener and returns the status.
	rawHTTP := func(head string) func(*testing.T, string) int {
		return func(t *testing.T, id string) int {
			return rawExchange(t, s.params.Listen, strings.ReplaceAll(head, "ROW", id)).status
		}
	}
	with := func(base http.Header, kv ...string) http.Header {
		h := http.Header{}
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		return h
	}
	verified := func(identity string) func(*testing.T, recorded) {
		return func(t *testing.T, seen recorded) {
			if got := seen.Headers["x-directpipe-identity"]; len(got) != 1 || got[0] != identity {
				t.Errorf("identity %v, want only the verified %q", got, identity)
			}
		}
	}
	noIdentity := func(t *testing.T, seen recorded) {
		for _, h := range []string{"x-directpipe-identity", "x-directpipe-sub"} {
			if v, ok := seen.Headers[h]; ok {
				t.Errorf("%s reached the back end: %v", h, v)
			}
		}
	}
	envoyControl := http.Header{
		"X-Envoy-Retry-On":               {"retriable-status-codes"},
		"X-Envoy-Retriable-Status-Codes": {"404"},
		"X-Envoy-Max-Retries":            {"3"},
		"X-Envoy-Upstream-Rq-Timeout-Ms": {"1"},
		"X-Envoy-Internal":               {"true"},
		"X-Envoy-External-Address":       {spoof},
	}
	noEnvoyHeaders := func(t *testing.T, seen recorded) {
		for h, v := range seen.Headers {
			// Envoy sets two itself: the route's own timeout, and the
			// external client's address; any other x-envoy-* header is the
			// client's or says the request is internal.
			switch {
			case h == "x-envoy-expected-rq-timeout-ms":
			case h == "x-envoy-external-address":
				if len(v) != 1 || v[0] != "127.0.0.1" {
					t.Errorf("x-envoy-external-address %v, want the connection's address alone", v)
				}
			case strings.HasPrefix(h, "x-envoy-"):
				t.Errorf("%s reached the back end: %v", h, v)
			}
		}
		if got := seen.Headers["x-envoy-expected-rq-timeout-ms"]; len(got) > 0 && got[0] == "1" {
			t.Errorf("the client's 1 ms timeout was obeyed")
		}
	}
	bearer := func(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

	rows := []hostile{
		// Spoofed identity and claim headers, in every case and twice.
		{name: "spoofed identity on the public REST route", send: get("/api/health", spoofed), status: 200, reached: true, check: noIdentity},
		{name: "spoofed identity on the header-matched route", send: get("/routes/t", with(spoofed, "X-Tenant", "acme")), status: 200, reached: true, check: noIdentity},
		{name: "header-matched route without its header", send: get("/routes/t", spoofed), status: 404},
		{name: "spoofed identity with a valid token on the voice route", send: upgradeWith("/v1/voice", with(spoofed, "Authorization", "Bearer "+tok)), status: 101, reached: true, check: func(t *testing.T, seen recorded) {
			verified("caller-1")(t, seen)
			if got := seen.Headers["x-directpipe-sub"]; len(got) != 1 || got[0] != "caller-1" {
				t.Errorf("sub %v, want only the verified one", got)
			}
		}},
		{name: "spoofed identity with an API key on the voice route", send: upgradeWith("/v1/voice?access_token="+demoAPIKey, spoofed), status: 101, reached: true, check: verified("demo-client")},
		{name: "spoofed identity without a token on the voice route", send: upgradeWith("/v1/voice", spoofed), status: 401},
		{name: "spoofed identity on an unmatched path", send: get("/nowhere", spoofed), status: 404},

		// Underscore variants normalise to the protected names in many
		// back ends (CGI, WSGI): refused at the edge.
		{name: "underscore identity on the public REST route", send: get("/api/health", http.Header{"X_Directpipe_Identity": {spoof}}), status: 400},
		{name: "underscore claim with a valid token", send: upgradeWith("/v1/voice", with(bearer(tok), "x_directpipe_sub", spoof)), status: 400},

		// Forwarding and Envoy control headers from the client.
		{name: "client X-Forwarded-For and x-envoy control headers", send: get("/api/health", http.Header{
			"X-Forwarded-For":                {"203.0.113.9"},
			"X-Forwarded-Proto":              {"https"},
			"X-Forwarded-Host":               {"evil.example"},
			"X-Real-Ip":                      {"203.0.113.9"},
			"Forwarded":                      {"for=203.0.113.9"},
			"X-Envoy-Upstream-Rq-Timeout-Ms": {"1"},
			"X-Envoy-Retry-On":               {spoof},
			"X-Envoy-Max-Retries":            {"9"},
			"X-Envoy-Internal":               {"true"},
		}), status: 200, reached: true, check: func(t *testing.T, seen recorded) {
			if got := seen.Headers["x-forwarded-for"]; len(got) != 1 || got[0] != "127.0.0.1" {
				t.Errorf("x-forwarded-for %v, want only the connection's address", got)
			}
			if got := seen.Headers["x-forwarded-proto"]; len(got) != 1 || got[0] != "http" {
				t.Errorf("x-forwarded-proto %v, want the connection's scheme", got)
			}
			for _, h := range []string{"x-envoy-upstream-rq-timeout-ms", "x-envoy-max-retries", "x-envoy-internal", "x-forwarded-host", "x-real-ip", "forwarded"} {
				if v, ok := seen.Headers[h]; ok {
					t.Errorf("%s reached the back end: %v", h, v)
				}
			}
		}},
		// Without X-Forwarded-For a loopback client is one hop away:
		// Envoy would call it internal (its default counts loopback and
		// RFC 1918 as internal), tell the back end X-Envoy-Internal and
		// obey its x-envoy-* headers. No address is internal: a 404 from
		// the back end is neither retried nor cut by a 1 ms timeout.
		{name: "x-envoy control headers from a loopback client without X-Forwarded-For", send: get("/api/missing", envoyControl), status: 404, reached: true, check: noEnvoyHeaders},
		{name: "x-envoy control headers on an upgrade without X-Forwarded-For", send: upgradeWith("/v1/voice", with(envoyControl, "Authorization", "Bearer "+tok)), status: 101, reached: true, check: noEnvoyHeaders},
		{name: "client route marker", send: get("/api/health", http.Header{"X-Directpipe-Route": {"voice"}}), status: 500},

		// Tokens: forged, expired, alg none, wrong key, oversized, two
		// places at once.
		{name: "forged signature", send: upgradeWith("/v1/voice", with(spoofed, "Authorization", "Bearer "+forged)), status: 401},
		{name: "expired token", send: upgradeWith("/v1/voice", bearer(expired)), status: 401},
		{name: "alg none", send: upgradeWith("/v1/voice", bearer(algNone)), status: 401},
		{name: "wrong key", send: upgradeWith("/v1/voice", bearer(wrongKey)), status: 401},
		{name: "oversized token", send: upgradeWith("/v1/voice", bearer(oversized)), status: 401},
		{name: "well-signed token with a numeric sub", send: upgradeWith("/v1/voice", bearer(subNumber)), status: 401},
		{name: "well-signed token with a null sub", send: upgradeWith("/v1/voice", bearer(subNull)), status: 401},
		{name: "valid bearer and forged query token: the first source decides, both stripped", send: upgradeWith("/v1/voice?access_token="+forged, bearer(tok)), status: 101, reached: true, check: verified("caller-1")},
		{name: "forged bearer and valid query token: the first source decides", send: upgradeWith("/v1/voice?access_token="+tok, bearer(forged)), status: 401},
		// Two Authorization headers: Envoy joins them with a comma, which
		// no token parses as; refused, whichever comes first.
		{name: "valid then forged Authorization header", send: upgradeWith("/v1/voice", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + forged}}), status: 401},
		{name: "forged then valid Authorization header", send: upgradeWith("/v1/voice", http.Header{"Authorization": {"Bearer " + forged, "Bearer " + tok}}), status: 401},
		{name: "valid bearer and a subprotocol token: both stripped", send: upgradeWith("/v1/voice", with(bearer(tok), "Sec-Websocket-Protocol", "voice.v1, dp.bearer."+wrongKey)), status: 101, reached: true, check: func(t *testing.T, seen recorded) {
			if got := seen.Headers["sec-websocket-protocol"]; len(got) != 1 || got[0] != "voice.v1" {
				t.Errorf("subprotocols %v, want voice.v1 alone", got)
			}
		}},

		// tcp mode: the same checks on raw bytes.
		{name: "tcp: spoofed identity in every case with a valid token", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW",
			"Authorization: Bearer "+tok, "X-DIRECTPIPE-IDENTITY: "+spoof, "x-directpipe-identity: "+spoof, "x-Directpipe-Sub: "+spoof)),
			status: 101, reached: true, check: verified("caller-1")},
		{name: "tcp: underscore identity", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok, "X_Directpipe_Identity: "+spoof)), status: 400},
		{name: "tcp: no Sec-WebSocket-Key", send: raw(tcpAddr, strings.Replace(upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1)), status: 400},
		{name: "tcp: Sec-WebSocket-Version 8", send: raw(tcpAddr, strings.Replace(upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok), "Version: 13", "Version: 8", 1)), status: 400},
		{name: "tcp: garbage bytes", send: raw(tcpAddr, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03ROW\r\n\r\n"), status: 400},
		{name: "tcp: alg none", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+algNone)), status: 401},
		{name: "tcp: well-signed token with a null sub", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+subNull)), status: 401},

		// tcp mode checks the first request of a connection only: after an
		// answer without an upgrade nothing else may follow on it, however
		// the back end behaves (the REST port keeps connections open).
		{name: "tcp: a second request after a 200 on a back end that keeps connections open", send: twice(restTCPAddr,
			upgradeRequest("/api/health?row=ROW", "Authorization: Bearer "+tok), secondGet), status: 200, reached: true, check: verified("caller-1")},
		{name: "tcp: a second request after a 404 on a back end that keeps connections open", send: twice(restTCPAddr,
			upgradeRequest("/nowhere?row=ROW", "Authorization: Bearer "+tok), secondGet), status: 404, reached: true, check: verified("caller-1")},
		{name: "tcp: a second request after the demo page", send: twice(tcpAddr,
			upgradeRequest("/?row=ROW", "Authorization: Bearer "+tok), secondGet), status: 200, reached: true, check: verified("caller-1")},
		{name: "tcp: a second request after a 404", send: twice(tcpAddr,
			upgradeRequest("/nowhere?row=ROW", "Authorization: Bearer "+tok), secondGet), status: 404, reached: true, check: verified("caller-1")},
		// A client's Connection tokens never reach the back end: one naming
		// the identity header would make a proxy behind drop it.
		{name: "tcp: Connection naming the identity header", send: raw(restTCPAddr, strings.Replace(upgradeRequest("/api/health?row=ROW", "Authorization: Bearer "+tok),
			"Connection: Upgrade", "Connection: Upgrade, X-Directpipe-Identity, keep-alive", 1)), status: 200, reached: true, check: func(t *testing.T, seen recorded) {
			verified("caller-1")(t, seen)
			if got := seen.Headers["connection"]; len(got) != 1 || got[0] != "Upgrade, close" {
				t.Errorf("connection %v, want only Upgrade, close", got)
			}
		}},
		// In absolute form a back end takes the host from the target, the
		// module from Host.
		{name: "tcp: absolute-form target", send: raw(tcpAddr, upgradeRequest("http://evil.example/v1/voice?row=ROW", "Authorization: Bearer "+tok)), status: 400},
		{name: "tcp: absolute-form target on a public route", send: raw(openAddr, upgradeRequest("http://evil.example/v1/voice?row=ROW")), status: 400},
		// A protocol offered beside websocket could be the one a back end
		// switches to, and h2c would carry requests never checked.
		{name: "tcp: h2c offered beside websocket", send: raw(tcpAddr, strings.Replace(upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok),
			"Upgrade: websocket", "Upgrade: websocket, h2c", 1)), status: 400},
		{name: "tcp: h2c on a second Upgrade line", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok, "Upgrade: h2c")), status: 400},
		{name: "tcp: authority-form target", send: raw(tcpAddr, upgradeRequest("evil.example:80", "Authorization: Bearer "+tok, "X-Row: ?row=ROW")), status: 400},
		// Over HTTP, Envoy reads the absolute form itself: the back end gets
		// the path, and the host the module saw.
		{name: "absolute-form target over HTTP", send: rawHTTP("GET http://evil.example/api/health?row=ROW HTTP/1.1\r\nHost: voice.local\r\nConnection: close\r\n\r\n"), status: 200, reached: true, check: func(t *testing.T, seen recorded) {
			if !strings.HasPrefix(seen.Path, "/api/health?") {
				t.Errorf("path %q, want the origin form", seen.Path)
			}
		}},

		// Two token entries among the subprotocols, in one header line or
		// two: refused, whichever is valid, over HTTP and tcp mode alike.
		{name: "two subprotocol tokens", send: upgradeWith("/v1/voice", http.Header{"Sec-Websocket-Protocol": {"dp.bearer." + tok + ", dp.bearer." + forged}}), status: 401},
		{name: "two subprotocol tokens, forged first", send: upgradeWith("/v1/voice", http.Header{"Sec-Websocket-Protocol": {"dp.bearer." + forged + ", voice.v1, dp.bearer." + tok}}), status: 401},
		{name: "two subprotocol tokens on two lines", send: upgradeWith("/v1/voice", http.Header{"Sec-Websocket-Protocol": {"dp.bearer." + tok, "dp.bearer." + forged}}), status: 401},
		{name: "tcp: two subprotocol tokens", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Sec-WebSocket-Protocol: dp.bearer."+tok+", dp.bearer."+forged)), status: 401},
		{name: "tcp: two subprotocol tokens on two lines", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Sec-WebSocket-Protocol: dp.bearer."+tok, "Sec-WebSocket-Protocol: dp.bearer."+forged)), status: 401},
		// Two token parameters: refused the same way, though both would be
		// stripped.
		{name: "two query tokens", send: upgradeWith("/v1/voice?access_token="+tok+"&access_token="+forged, nil), status: 401},
		{name: "tcp: two query tokens", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW&access_token="+forged+"&access_token="+tok)), status: 401},
		// A token on the second of two lines is read as a list, the same way
		// in both modes.
		{name: "subprotocol token on the second line", send: upgradeWith("/v1/voice", http.Header{"Sec-Websocket-Protocol": {"voice.v1", "dp.bearer." + tok}}), status: 101, reached: true, check: func(t *testing.T, seen recorded) {
			verified("caller-1")(t, seen)
			if got := seen.Headers["sec-websocket-protocol"]; len(got) != 1 || got[0] != "voice.v1" {
				t.Errorf("subprotocols %v, want voice.v1 alone", got)
			}
		}},
		{name: "tcp: subprotocol token on the second line", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Sec-WebSocket-Protocol: voice.v1", "Sec-WebSocket-Protocol: dp.bearer."+tok)), status: 101, reached: true, check: func(t *testing.T, seen recorded) {
			verified("caller-1")(t, seen)
			if got := seen.Headers["sec-websocket-protocol"]; len(got) != 1 || got[0] != "voice.v1" {
				t.Errorf("subprotocols %v, want voice.v1 alone", got)
			}
		}},

		// An identity that reads as another name, none at all, or a token
		// valid for ever: refused, not rewritten.
		{name: "identity with a NUL", send: upgradeWith("/v1/voice", bearer(subNUL)), status: 401},
		{name: "identity with a trailing space", send: upgradeWith("/v1/voice", bearer(subSpace)), status: 401},
		{name: "identity with a bidi override", send: upgradeWith("/v1/voice", bearer(subBidi)), status: 401},
		{name: "token without sub", send: upgradeWith("/v1/voice", bearer(noSub)), status: 401},
		{name: "exp 1e20", send: upgradeWith("/v1/voice", bearer(forever)), status: 401},
		{name: "exp two days ahead", send: upgradeWith("/v1/voice", bearer(twoDays)), status: 401},
		{name: "tcp: identity with a NUL", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+subNUL)), status: 401},
		{name: "tcp: identity with a trailing space", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+subSpace)), status: 401},
		{name: "tcp: identity with a bidi override", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+subBidi)), status: 401},
		{name: "tcp: token without sub", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+noSub)), status: 401},
		{name: "tcp: exp 1e20", send: raw(tcpAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+forever)), status: 401},

		// A tcp route without auth is checked too: a WebSocket handshake,
		// no identity from the client.
		{name: "public tcp: spoofed identity in every case", send: raw(openAddr, upgradeRequest("/v1/voice?row=ROW",
			"X-DIRECTPIPE-IDENTITY: "+spoof, "x-directpipe-identity: "+spoof, "x-Directpipe-Sub: "+spoof)),
			status: 101, reached: true, check: noIdentity},
		{name: "public tcp: underscore identity", send: raw(openAddr, upgradeRequest("/v1/voice?row=ROW", "X_Directpipe_Identity: "+spoof)), status: 400},
		{name: "public tcp: no Sec-WebSocket-Key", send: raw(openAddr, strings.Replace(upgradeRequest("/v1/voice?row=ROW"), "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1)), status: 400},
		{name: "public tcp: garbage bytes", send: raw(openAddr, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03ROW\r\n\r\n"), status: 400},

		// Upstream TLS checks the back end's name.
		// Client address lists: the listener trusts no proxy hop, so
		// nothing a client writes changes the address checked.
		{name: "client address not on the route's list, valid token", send: upgradeWith("/v1/lan", bearer(tok)), status: 403},
		{name: "client address spoofed in X-Forwarded-For", send: upgradeWith("/v1/lan", with(bearer(tok), "X-Forwarded-For", "10.1.2.3")), status: 403},
		{name: "client address spoofed in every address header", send: upgradeWith("/v1/lan", with(bearer(tok),
			"X-Forwarded-For", "10.1.2.3, 10.1.2.4", "X-Real-Ip", "10.1.2.3", "X-Envoy-External-Address", "10.1.2.3", "Forwarded", "for=10.1.2.3")), status: 403},
		{name: "tcp: client address not on the route's list, valid token", send: raw(lanTCPAddr, upgradeRequest("/v1/voice?row=ROW", "Authorization: Bearer "+tok, "X-Forwarded-For: 10.1.2.3")), status: 403},
		{name: "REST: client address not on the route's list", send: get("/routes/lan", nil), status: 403},
		{name: "REST: client address spoofed in X-Forwarded-For", send: get("/routes/lan", http.Header{"X-Forwarded-For": {"10.1.2.3"}}), status: 403},
		{name: "REST: client address on the route's list", send: get("/routes/local", http.Header{"X-Forwarded-For": {"10.1.2.3"}}), status: 200, reached: true},
		{name: "upstream TLS: the certificate names the sni", send: get("/tls-good/x", nil), status: 200},
		{name: "upstream TLS: the certificate does not name the sni", send: get("/tls-wrong/x", nil), status: 503},
		{name: "upstream TLS: the certificate names one of san", send: get("/tls-san/x", nil), status: 200},
	}
	for i, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			id := fmt.Sprintf("r%d", i)
			before := tlsb.count()
			if got := r.send(t, id); got != r.status {
				t.Fatalf("status %d, want %d", got, r.status)
			}
			if strings.HasPrefix(r.name, "upstream TLS") {
				if reached := tlsb.count() > before; reached != (r.status == 200) {
					t.Errorf("TLS back end reached: %v", reached)
				}
				return
			}
			var seen []recorded
			for _, req := range backendRequests(t, s) {
				if strings.Contains(req.Path, "row="+id) {
					seen = append(seen, req)
				}
				assertClean(t, req, tokens)
			}
			switch {
			case !r.reached && len(seen) > 0:
				t.Fatalf("the back end saw %+v", seen)
			case r.reached && len(seen) != 1:
				t.Fatalf("the back end saw %d requests for this row, want 1", len(seen))
			case r.reached && r.check != nil:
				r.check(t, seen[0])
			}
		})
	}

	t.Run("slowloris head is closed by Envoy and never reaches the back end", func(t *testing.T) {
		c, err := net.Dial("tcp", s.params.Listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /api/health?row=slowloris HTTP/1.1\r\nHost: a\r\n")
		// Far longer than request_headers_timeout (1s): the bound on how
		// long the test waits, not an assertion on Envoy's timing.
		c.SetDeadline(time.Now().Add(30 * time.Second))
		for tick := 0; ; tick++ {
			if _, err := io.WriteString(c, fmt.Sprintf("X-Slow-%d: 1\r\n", tick)); err != nil {
				break // Envoy closed the connection
			}
			if _, err := c.Read(make([]byte, 512)); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("Envoy kept a slow head open for 30s")
				}
				break
			}
		}
		for _, req := range backendRequests(t, s) {
			if strings.Contains(req.Path, "row=slowloris") {
				t.Fatalf("the back end saw the slow request: %+v", req)
			}
		}
	})

	t.Run("HTTP/2 underscore identity is refused and never reaches the back end", func(t *testing.T) {
		h2 := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
		defer h2.CloseIdleConnections()
		for _, path := range []string{"/api/health?row=h2-underscore", "/v1/voice?row=h2-underscore&access_token=" + demoAPIKey} {
			req, err := http.NewRequest(http.MethodGet, s.listenURL("http", path), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header["x_directpipe_identity"] = []string{spoof}
			resp, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Do(req)
			if err == nil {
				// Envoy resets the stream; a 400 would do as well.
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s over HTTP/2: status %d, want a reset or 400", path, resp.StatusCode)
				}
			}
		}
		// The same request without the underscore header passes, so the
		// refusal above is the header's.
		req, _ := http.NewRequest(http.MethodGet, s.listenURL("http", "/api/health?row=h2-control"), nil)
		resp, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("control request: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
		control := false
		for _, req := range backendRequests(t, s) {
			if strings.Contains(req.Path, "row=h2-underscore") {
				t.Fatalf("the back end saw %+v", req)
			}
			control = control || strings.Contains(req.Path, "row=h2-control")
		}
		if !control {
			t.Error("the back end never saw the control request")
		}
	})

	t.Run("HTTP/2 extended CONNECT: spoofed identities beside a valid token never reach the back end", func(t *testing.T) {
		h2 := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
		defer h2.CloseIdleConnections()
		connect := func(row string, header http.Header) int {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			req, err := http.NewRequestWithContext(ctx, http.MethodConnect, s.listenURL("http", "/v1/voice?row="+row), pr)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = header.Clone()
			req.Header.Set(":protocol", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			resp, err := h2.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: %v", row, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		// HTTP/2 names are lower case on the wire, so the spellings a
		// client may try are repetitions and the claim header.
		spoofs := http.Header{"X-Directpipe-Identity": {spoof, "admin"}, "X-Directpipe-Sub": {spoof}}
		if got := connect("h2-spoof", with(spoofs, "Authorization", "Bearer "+tok)); got != http.StatusOK {
			t.Fatalf("valid token with spoofed identities: %d, want 200", got)
		}
		if got := connect("h2-spoof-forged", with(spoofs, "Authorization", "Bearer "+forged)); got != http.StatusUnauthorized {
			t.Errorf("forged token with spoofed identities: %d, want 401", got)
		}
		if got := connect("h2-spoof-two", with(spoofs, "Authorization", "Bearer "+tok, "Authorization", "Bearer "+forged)); got != http.StatusUnauthorized {
			t.Errorf("two Authorization fields: %d, want 401", got)
		}
		var seen []recorded
		for _, req := range backendRequests(t, s) {
			assertClean(t, req, tokens)
			if strings.Contains(req.Path, "row=h2-spoof") {
				seen = append(seen, req)
			}
		}
		if len(seen) != 1 || !strings.Contains(seen[0].Path, "row=h2-spoof") || strings.Contains(seen[0].Path, "row=h2-spoof-") {
			t.Fatalf("the back end saw %+v, want the valid request alone", seen)
		}
		if got := seen[0].Headers["x-directpipe-identity"]; len(got) != 1 || got[0] != "caller-1" {
			t.Errorf("identity %v, want only the verified caller-1", got)
		}
		if got := seen[0].Headers["x-directpipe-sub"]; len(got) != 1 || got[0] != "caller-1" {
			t.Errorf("sub %v, want only the verified caller-1", got)
		}
	})

	t.Run("HTTP/2 settings advertise the stream and window limits", func(t *testing.T) {
		settings := h2Settings(t, s.params.Listen)
		if settings[http2.SettingMaxConcurrentStreams] != 100 || settings[http2.SettingInitialWindowSize] != 65536 {
			t.Errorf("settings %v, want 100 concurrent streams and a 64 KiB stream window", settings)
		}
	})

	t.Run("a global connection limit is configured", func(t *testing.T) {
		b, err := os.ReadFile(s.envoy.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "no configured limit to the number of allowed active downstream connections") {
			t.Error("Envoy warns that nothing limits downstream connections")
		}
	})

	s.checkFilterBuild(build)
	s.checkTCPFilterBuild(build, contract.ReasonBadHandshake)
}

// secondRequest sends first on a new connection to addr, reads the
// answer, then sends second on the same connection and reads what
// follows, until the peer closes or a few seconds pass. It returns the
// first answer's status; whether the second reached the back end is for
// the caller to find out.
func secondRequest(t *testing.T, addr, first, second string) int {
	t.Helper()
	c, r, resp := sendRaw(t, addr, first)
	defer c.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatal("the first request upgraded")
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The write may fail once the peer has closed: that is the point.
	io.WriteString(c, second)
	if resp, err := http.ReadResponse(r, nil); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Errorf("the second request on the connection was answered %d", resp.StatusCode)
	}
	return resp.StatusCode
}

// tagged adds the row id to a path's query.
func tagged(path, id string) string {
	if strings.Contains(path, "?") {
		return path + "&row=" + id
	}
	return path + "?row=" + id
}

// plainGet sends a GET with header names exactly as given (Go would
// canonicalise them with Set) and returns the status.
func plainGet(t *testing.T, url string, h http.Header) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// assertClean fails if a request the back end received carries a forged
// value, any token, the route marker or a header name with an underscore.
func assertClean(t *testing.T, req recorded, tokens []string) {
	t.Helper()
	if v, ok := req.Headers[contract.RouteMarkerHeader]; ok {
		t.Errorf("%s %s: the route marker reached the back end: %v", req.Method, req.Path, v)
	}
	for name, vals := range req.Headers {
		if strings.Contains(name, "_") {
			t.Errorf("%s %s: header %q reached the back end", req.Method, req.Path, name)
		}
		for _, v := range vals {
			if strings.Contains(v, spoof) {
				t.Errorf("%s %s: forged value in %s reached the back end", req.Method, req.Path, name)
			}
			for _, tok := range tokens {
				if strings.Contains(v, tok) {
					t.Errorf("%s %s: a token in %s reached the back end", req.Method, req.Path, name)
				}
			}
		}
	}
	for _, tok := range tokens {
		if strings.Contains(req.Path, tok) {
			t.Errorf("%s: a token in the path reached the back end", req.Path)
		}
	}
}

// h2Settings opens an h2c connection with prior knowledge and returns the
// server's first SETTINGS.
func h2Settings(t *testing.T, addr string) map[http2.SettingID]uint32 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, bufio.NewReader(c))
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		out := map[http2.SettingID]uint32{}
		sf.ForeachSetting(func(s http2.Setting) error {
			out[s.ID] = s.Val
			return nil
		})
		return out
	}
}

// TestPolicyCannotRouteToInternalTargets: a public route to Envoy's admin
// interface would serve /config_dump, secrets included, to anyone; one to
// the control plane's own ports or a cloud metadata address is as bad.
// The control plane knows Envoy's admin address from the node metadata
// the bootstrap sets, and refuses each such apply, changing nothing:
// the route never appears and the admin interface is not reachable
// through Envoy.
func TestPolicyCannotRouteToInternalTargets(t *testing.T) {
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")
	envoyAdmin := fmt.Sprintf("127.0.0.1:%d", s.envoy.AdminPort)
	_, before, _ := s.dpctl("policy", "get")
	for _, tc := range []struct{ endpoint, allow, want string }{
		{envoyAdmin, "", "is the admin address of Envoy"},
		{envoyAdmin, ", allow_internal: true", "is the admin address of Envoy"},
		{strings.Replace(envoyAdmin, "127.0.0.1", "[::1]", 1), "", "is the admin address of Envoy"},
		{s.cp.AdminAddr(), "", "is the control plane's admin API"},
		{s.cp.XDSAddr(), "", "is the control plane's xDS address"},
		{"169.254.169.254:80", "", "link-local"},
		{"[fd00:ec2::254]:80", "", "cloud metadata"},
	} {
		t.Run(tc.endpoint+tc.allow, func(t *testing.T) {
			s.params.RoutesYAML = "\n  - { name: leak, match: { prefix: /leak/ }, kind: http, backend: leak }"
			s.params.BackendsYAML = fmt.Sprintf("\n  - { name: leak, endpoints: [%q]%s }", tc.endpoint, tc.allow)
			var buf bytes.Buffer
			renderPolicy(t, s.params, &buf)
			file := filepath.Join(t.TempDir(), "leak.yaml")
			if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errs := s.dpctl("policy", "apply", "-f", file)
			if code != 1 || !strings.Contains(errs, tc.want) {
				t.Fatalf("apply: exit %d, %s; want a refusal naming %q", code, errs, tc.want)
			}
			if _, now, _ := s.dpctl("policy", "get"); now != before {
				t.Fatal("a refused apply changed the policy")
			}
			if got := plainGet(t, s.listenURL("http", "/leak/config_dump"), nil); got != http.StatusNotFound {
				t.Fatalf("GET /leak/config_dump through Envoy: %d, want 404", got)
			}
		})
	}
}
