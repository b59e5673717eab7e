//go:build !wasip1

package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// These tests load the module into a real Envoy with a static bootstrap
// and the single-policy configuration, so the filter is proved on its own,
// without the control plane.

var (
	testSecret = []byte("directpipe-filter-test-secret-32")
	testAPIKey = "dp_filter_test_api_key"
)

// policyJSON is the filter's configuration contract in its single-policy
// form.
func policyJSON() string {
	sum := sha256.Sum256([]byte(testAPIKey))
	doc := map[string]any{
		"name":            "demo",
		"realm":           "directpipe",
		"sources":         []map[string]any{{"bearer": true}, {"query": "access_token"}, {"header": "x-api-key"}},
		"jwks":            map[string]any{"keys": []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(testSecret)}}},
		"leeway_seconds":  30,
		"max_token_bytes": 8192,
		"api_keys":        []map[string]string{{"sha256": hex.EncodeToString(sum[:]), "identity": "demo-client"}},
		"identity_header": "x-directpipe-identity",
		"claim_headers":   map[string]string{"sub": "x-directpipe-sub"},
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

func TestInEnvoy(t *testing.T) {
	up := startUpstream(t)
	e := startEnvoy(t, modulePath(t), policyJSON(), up.port)

	now := time.Now()
	good := mintWith(t, jwt.SigningMethodHS256, testSecret, "dev", jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	expired := mintWith(t, jwt.SigningMethodHS256, testSecret, "dev", jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Hour).Unix()})
	badSig := mintWith(t, jwt.SigningMethodHS256, []byte("some-other-secret-of-32-bytes!!!"), "dev", jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	none := b64url(`{"alg":"none","kid":"dev"}`) + "." + b64url(`{"sub":"mallory","exp":9999999999}`) + "."

	denials := []struct {
		name, path, header, value, reason, challenge string
	}{
		{"no token", "/v1/voice", "", "", "missing_token", `Bearer realm="directpipe"`},
		{"expired", "/v1/voice", "authorization", "Bearer " + expired, "expired_token", `Bearer realm="directpipe", error="invalid_token"`},
		{"bad signature", "/v1/voice?access_token=" + badSig, "", "", "bad_signature", `Bearer realm="directpipe", error="invalid_token"`},
		{"alg none", "/v1/voice", "authorization", "Bearer " + none, "bad_signature", `Bearer realm="directpipe", error="invalid_token"`},
		{"unknown api key", "/v1/voice", "x-api-key", "nope", "unknown_api_key", `Bearer realm="directpipe", error="invalid_token"`},
		{"oversized", "/v1/voice", "authorization", "Bearer " + strings.Repeat("x", 9000), "token_too_large", `Bearer realm="directpipe", error="invalid_token"`},
	}
	for _, tt := range denials {
		t.Run("deny "+tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set(tt.header, tt.value)
			}
			resp, body := e.get(t, tt.path, h)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", resp.StatusCode, body)
			}
			var reason struct{ Error, Message string }
			if err := json.Unmarshal(body, &reason); err != nil || reason.Error != tt.reason || reason.Message == "" {
				t.Errorf("body %s, want reason %s", body, tt.reason)
			}
			if got := resp.Header.Get("www-authenticate"); got != tt.challenge {
				t.Errorf("www-authenticate %q, want %q", got, tt.challenge)
			}
			if got := resp.Header.Get("content-type"); got != "application/json" {
				t.Errorf("content-type %q", got)
			}
			if len(tt.value) > 20 && strings.Contains(string(body), tt.value[7:]) {
				t.Error("the denial echoes the token")
			}
		})
	}
	if n := up.count(); n != 0 {
		t.Errorf("the upstream saw %d denied requests", n)
	}

	allows := []struct {
		name, path, header, value, wantPath, identity string
	}{
		{"bearer", "/v1/voice?lang=en", "authorization", "Bearer " + good, "/v1/voice?lang=en", "alice"},
		{"query", "/v1/voice?lang=en&access_token=" + good + "&rate=16000", "", "", "/v1/voice?lang=en&rate=16000", "alice"},
		{"api key", "/v1/voice", "x-api-key", testAPIKey, "/v1/voice", "demo-client"},
	}
	for _, tt := range allows {
		t.Run("allow "+tt.name, func(t *testing.T) {
			h := http.Header{"X-Directpipe-Identity": {"mallory"}, "X-Directpipe-Sub": {"mallory"}}
			if tt.header != "" {
				h.Set(tt.header, tt.value)
			}
			resp, body := e.get(t, tt.path, h)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", resp.StatusCode, body)
			}
			seen := up.last()
			if seen.path != tt.wantPath {
				t.Errorf("upstream path %q, want %q", seen.path, tt.wantPath)
			}
			for _, h := range []string{"Authorization", "X-Api-Key"} {
				if v := seen.header.Values(h); len(v) > 0 {
					t.Errorf("upstream got %s: %q", h, v)
				}
			}
			if got := seen.header.Values("X-Directpipe-Identity"); len(got) != 1 || got[0] != tt.identity {
				t.Errorf("upstream identity %q, want [%s]", got, tt.identity)
			}
			wantSub := []string(nil)
			if tt.identity == "alice" {
				wantSub = []string{"alice"}
			}
			if got := seen.header.Values("X-Directpipe-Sub"); strings.Join(got, ",") != strings.Join(wantSub, ",") {
				t.Errorf("upstream sub %q, want %q", got, wantSub)
			}
		})
	}

	t.Run("websocket", func(t *testing.T) {
		conn, status := e.upgrade(t, "/v1/voice?access_token="+good+"&codec=pcm")
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", status)
		}
		if seen := up.last(); seen.path != "/v1/voice?codec=pcm" || seen.header.Get("X-Directpipe-Identity") != "alice" {
			t.Errorf("upstream saw %q identity %q", seen.path, seen.header.Get("X-Directpipe-Identity"))
		}
		// After the handshake the bytes are the back end's: they pass
		// both ways untouched.
		msg := []byte("frames after the handshake")
		for range 3 {
			if _, err := conn.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(conn.r, got); err != nil || string(got) != string(msg) {
				t.Fatalf("echo %q, %v", got, err)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		stats := e.stats(t)
		want := map[string]int64{
			"wasmcustom.directpipe_handshake_allowed":                4,
			"wasmcustom.directpipe_handshake_denied_missing_token":   1,
			"wasmcustom.directpipe_handshake_denied_expired_token":   1,
			"wasmcustom.directpipe_handshake_denied_bad_signature":   2,
			"wasmcustom.directpipe_handshake_denied_unknown_api_key": 1,
			"wasmcustom.directpipe_handshake_denied_token_too_large": 1,
			"wasmcustom.directpipe_handshake_denied_invalid_token":   0,
			// One worker, so one token cache: the expired, bad-signature,
			// alg-none and first good JWT were verified; the good one's
			// two repeats came from the cache. API keys never use it.
			"wasmcustom.directpipe_token_cache_misses": 4,
			"wasmcustom.directpipe_token_cache_hits":   2,
		}
		for name, n := range want {
			if got, ok := stats[name]; !ok || got != n {
				t.Errorf("%s = %d (present %v), want %d", name, got, ok, n)
			}
		}
	})
}

// TestEnvoyRefusesInvalidConfig: proxy_on_configure returning false makes
// Envoy refuse the filter, and the log says why without the key material.
func TestEnvoyRefusesInvalidConfig(t *testing.T) {
	e := startEnvoyProcess(t, modulePath(t), `{"sources":[],"api_keys":[{"sha256":"not-a-secret-marker"}]}`, testkit.FreePort(t))
	done := make(chan error, 1)
	go func() { done <- e.cmd.Wait() }()
	select {
	case err := <-done:
		e.exited = true
		if err == nil {
			t.Fatal("envoy accepted an invalid filter configuration")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("envoy is still running with an invalid filter configuration")
	}
	log, _ := os.ReadFile(e.logPath)
	if !strings.Contains(string(log), "auth config: no token sources") {
		t.Errorf("the log does not say why:\n%s", tailFile(e.logPath, 20))
	}
	if strings.Contains(string(log), "not-a-secret-marker") {
		t.Error("the log quotes the configuration")
	}
}

func modulePath(t *testing.T) string { return testkit.WasmModule(t) }

// upstream records what Envoy forwards and accepts WebSocket upgrades,
// echoing the bytes that follow.
type upstream struct {
	port int
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	path   string
	header http.Header
}

func startUpstream(t *testing.T) *upstream {
	u := &upstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{r.URL.RequestURI(), r.Header.Clone()})
		u.mu.Unlock()
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			io.WriteString(w, "ok\n")
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		rw.Flush()
		io.Copy(conn, rw)
	}))
	t.Cleanup(srv.Close)
	u.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) last() seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return seenRequest{header: http.Header{}}
	}
	return u.seen[len(u.seen)-1]
}

type envoyProc struct {
	cmd       *exec.Cmd
	logPath   string
	port      int
	adminPort int
	exited    bool
}

// startEnvoy starts Envoy and waits until it serves.
func startEnvoy(t *testing.T, wasm, config string, upstreamPort int) *envoyProc {
	e := startEnvoyProcess(t, wasm, config, upstreamPort)
	e.waitReady(t)
	return e
}

func (e *envoyProc) waitReady(t *testing.T) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", e.adminPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("envoy is not ready after 60s:\n%s", tailFile(e.logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startEnvoyProcess(t *testing.T, wasm, config string, upstreamPort int) *envoyProc {
	return startEnvoyBootstrap(t, func(port, adminPort int) []byte {
		return bootstrapJSON(port, adminPort, upstreamPort, wasm, config)
	})
}

// startEnvoyBootstrap starts Envoy with the bootstrap render returns for
// its listener and admin ports.
func startEnvoyBootstrap(t *testing.T, render func(port, adminPort int) []byte) *envoyProc {
	t.Helper()
	e := &envoyProc{port: testkit.FreePort(t), adminPort: testkit.FreePort(t)}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "envoy.json")
	if err := os.WriteFile(cfgPath, render(e.port, e.adminPort), 0o644); err != nil {
		t.Fatal(err)
	}
	e.logPath = filepath.Join(dir, "envoy.log")
	logFile, err := os.Create(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(mustEnvoy(t), "-c", cfgPath, "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning")
	e.cmd.Stdout, e.cmd.Stderr = logFile, logFile
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start envoy: %v", err)
	}
	t.Cleanup(func() {
		if !e.exited {
			e.cmd.Process.Kill()
			e.cmd.Wait()
		}
		logFile.Close()
		if t.Failed() {
			t.Logf("envoy log %s:\n%s", e.logPath, tailFile(e.logPath, 30))
		}
	})
	return e
}

// bootstrapJSON is a static Envoy configuration: one listener whose HTTP
// connection manager runs the handshake filter then the router, every path
// to the upstream, WebSocket upgrades allowed.
func bootstrapJSON(port, adminPort, upstreamPort int, wasm, config string) []byte {
	return bootstrapWithRoutes(port, adminPort, upstreamPort, wasm, config,
		[]any{map[string]any{"name": "voice", "match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "upstream"}}})
}

// bootstrapWithRoutes is bootstrapJSON with the caller's routes.
func bootstrapWithRoutes(port, adminPort, upstreamPort int, wasm, config string, routes []any) []byte {
	return bootstrapWithHandshake(port, adminPort, upstreamPort, map[string]any{
		"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
		"config": map[string]any{
			"name": "directpipe.handshake", "root_id": "directpipe.handshake",
			"vm_config": map[string]any{
				"vm_id": "directpipe", "runtime": "envoy.wasm.runtime.v8",
				"code": map[string]any{"local": map[string]any{"filename": wasm}},
			},
			"configuration":  map[string]any{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
			"failure_policy": "FAIL_CLOSED",
		},
	}, routes)
}

// bootstrapWithHandshake is bootstrapWithRoutes with the handshake
// filter's typed config given, of either build.
func bootstrapWithHandshake(port, adminPort, upstreamPort int, handshake map[string]any, routes []any) []byte {
	addr := func(p int) map[string]any {
		return map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": p}}
	}
	hcm := map[string]any{
		"@type":           "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix":     "ingress",
		"upgrade_configs": []any{map[string]any{"upgrade_type": "websocket"}},
		"route_config": map[string]any{
			"name": "local",
			"virtual_hosts": []any{map[string]any{
				"name": "all", "domains": []string{"*"},
				"routes": routes,
			}},
		},
		"http_filters": []any{
			map[string]any{"name": "directpipe.handshake", "typed_config": handshake},
			map[string]any{"name": "envoy.filters.http.router", "typed_config": map[string]any{
				"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
			}},
		},
	}
	doc := map[string]any{
		"admin": map[string]any{"address": addr(adminPort)},
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{
				"name": "http", "address": addr(port),
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm,
				}}}},
			}},
			"clusters": []any{map[string]any{
				"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
				"load_assignment": map[string]any{"cluster_name": "upstream", "endpoints": []any{map[string]any{
					"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": addr(upstreamPort)}}},
				}}},
			}},
		},
	}
	b, _ := json.Marshal(doc)
	return b
}

func (e *envoyProc) get(t *testing.T, path string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", e.port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

type upgradedConn struct {
	net.Conn
	r *bufio.Reader
}

// upgrade sends a WebSocket handshake and returns the connection and the
// status Envoy answered.
func (e *envoyProc) upgrade(t *testing.T, path string) (*upgradedConn, int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: voice\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &upgradedConn{conn, r}, resp.StatusCode
}

func (e *envoyProc) stats(t *testing.T) map[string]int64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=wasmcustom", e.adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if n, err := strconv.ParseInt(value, 10, 64); ok && err == nil {
			out[name] = n
		}
	}
	return out
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mustEnvoy finds Envoy where the Makefile installs it (or $ENVOY_BIN); a
// missing Envoy fails the test: proving the module in Envoy is the point.
func mustEnvoy(t *testing.T) string {
	t.Helper()
	bin, err := testkit.EnvoyBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestAsymmetricTokensInEnvoy: RS256, ES256 and ES384 signatures are checked by
// Envoy's own crypto through the verify_signature foreign function (the
// module encodes the key and signature in DER), and the verdicts are the
// module's: good tokens pass, a changed signature or a JWS signature
// sent in the wrong form fails, and the module never falls back.
func TestAsymmetricTokensInEnvoy(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b64 := base64.RawURLEncoding.EncodeToString
	// A point off P-256 (y+1). The control plane refuses such a key, so
	// only a hand-written configuration brings it here: the module keeps
	// no NIST curves of its own, and Envoy's check must refuse it.
	offY := new(big.Int).Add(ecKey.Y, big.NewInt(1))
	doc, _ := json.Marshal(map[string]any{
		"name":    "asym",
		"sources": []map[string]any{{"bearer": true}},
		"jwks": map[string]any{"keys": []map[string]string{
			{"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
			{"kty": "EC", "kid": "ec", "alg": "ES256", "crv": "P-256", "x": b64(ecKey.X.FillBytes(make([]byte, 32))), "y": b64(ecKey.Y.FillBytes(make([]byte, 32)))},
			{"kty": "EC", "kid": "ec384", "alg": "ES384", "crv": "P-384", "x": b64(ec384.X.FillBytes(make([]byte, 48))), "y": b64(ec384.Y.FillBytes(make([]byte, 48)))},
			{"kty": "EC", "kid": "off", "alg": "ES256", "crv": "P-256", "x": b64(ecKey.X.FillBytes(make([]byte, 32))), "y": b64(offY.FillBytes(make([]byte, 32)))},
		}},
	})
	up := startUpstream(t)
	e := startEnvoy(t, modulePath(t), string(doc), up.port)

	exp := time.Now().Add(time.Hour).Unix()
	rs := mintWith(t, jwt.SigningMethodRS256, rsaKey, "rsa", jwt.MapClaims{"sub": "rs", "exp": exp})
	es := mintWith(t, jwt.SigningMethodES256, ecKey, "ec", jwt.MapClaims{"sub": "es", "exp": exp})
	es384 := mintWith(t, jwt.SigningMethodES384, ec384, "ec384", jwt.MapClaims{"sub": "es384", "exp": exp})
	offCurve := mintWith(t, jwt.SigningMethodES256, ecKey, "off", jwt.MapClaims{"sub": "off", "exp": exp})
	// The same ES256 signature, sent as DER rather than R || S.
	parts := strings.Split(es, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[2])
	der, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
	esDER := parts[0] + "." + parts[1] + "." + b64(der)
	flip := func(tok string) string { // changes a signature byte
		b := []byte(tok)
		if b[len(b)-3] == 'A' {
			b[len(b)-3] = 'B'
		} else {
			b[len(b)-3] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name, token string
		status      int
	}{
		{"RS256", rs, http.StatusOK},
		{"ES256", es, http.StatusOK},
		{"RS256 changed", flip(rs), http.StatusUnauthorized},
		{"ES256 changed", flip(es), http.StatusUnauthorized},
		{"ES256 in DER", esDER, http.StatusUnauthorized},
		{"ES384", es384, http.StatusOK},
		{"ES256, key off the curve", offCurve, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		resp, body := e.get(t, "/v1/voice", http.Header{"Authorization": {"Bearer " + tt.token}})
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d; %s", tt.name, resp.StatusCode, tt.status, body)
		}
	}
	stats := e.stats(t)
	// Six signatures reach a check (a DER signature has the wrong
	// length and is refused before); each was Envoy's, the point off the
	// curve included.
	for name, want := range map[string]int64{
		"wasmcustom.directpipe_signature_host_checks":      6,
		"wasmcustom.directpipe_signature_host_unavailable": 0,
		"wasmcustom.directpipe_handshake_allowed":          3,
	} {
		if got := stats[name]; got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
