package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// newTCPStack is the usual stack plus a tcp mode route with auth (policy
// demo) on its own listener, ready to accept connections.
func newTCPStack(t *testing.T, delta bool) (*stack, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, delta, func(p *policyParams) { p.TCP = addr })
	if err := testkit.WaitListening(addr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	return s, addr
}

// rawResponse is what a client reads from a tcp listener after sending raw
// bytes: the response, and whether Envoy then closed the connection.
type rawResponse struct {
	status int
	header http.Header
	body   string
	closed bool
	after  error // what reading after the body returned
}

// rawExchange sends bytes as the first thing on a new connection and reads
// the HTTP response that comes back.
func rawExchange(t *testing.T, addr string, request string) rawResponse {
	t.Helper()
	c, r, resp := sendRaw(t, addr, request)
	defer c.Close()
	out := rawResponse{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the body: %v", err)
		}
		out.body = string(b)
		_, out.after = r.ReadByte()
		out.closed = errors.Is(out.after, io.EOF)
	}
	return out
}

// sendRaw sends request as the first bytes of a new connection to addr
// and reads the HTTP response head that comes back; the connection and
// its reader are the caller's, with a few seconds left on their deadline.
func sendRaw(t *testing.T, addr, request string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		c.Close()
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		c.Close()
		t.Fatalf("no HTTP response: %v", err)
	}
	return c, r, resp
}

// upgradeRequest is a WebSocket opening handshake with extra header lines.
func upgradeRequest(target string, lines ...string) string {
	s := "GET " + target + " HTTP/1.1\r\nHost: voice.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, l := range lines {
		s += l + "\r\n"
	}
	return s + "\r\n"
}

// TestTCPModeHandshake proves the tcp module in a real Envoy: each token
// location upgrades and streams; the forwarded handshake carries no token
// and no spoofed identity; each denial is a raw HTTP/1.1 answer with its
// status, reason and challenge, then a close; a denied caller never
// reaches the back end; a silent connection is closed.
func TestTCPModeHandshake(t *testing.T) {
	s, addr := newTCPStack(t, false)
	tok := validToken(t)

	t.Run("each token location upgrades and the stream carries frames in order", func(t *testing.T) {
		for _, cfg := range []voiceprobe.Config{
			{URL: "ws://" + addr + "/v1/voice", Header: http.Header{"Authorization": {"Bearer " + tok}}},
			{URL: "ws://" + addr + "/v1/voice?access_token=" + tok},
			{URL: "ws://" + addr + "/v1/voice", Subprotocols: []string{"voice.v1", "dp.bearer." + tok}},
		} {
			cfg.Streams, cfg.Frames = 2, 200
			res, err := voiceprobe.Run(context.Background(), cfg)
			if err != nil || res.Received != 400 || res.Reordered != 0 || res.Lost != 0 {
				t.Fatalf("%s: %v %+v", cfg.URL, err, res)
			}
		}
	})

	t.Run("the forwarded handshake has no token and no spoofed identity", func(t *testing.T) {
		got := rawExchange(t, addr, upgradeRequest("/v1/voice?access_token="+tok+"&lang=en",
			"X-Directpipe-Sub: admin", "x-directpipe-identity: admin",
			"Sec-WebSocket-Protocol: voice.v1, dp.bearer."+tok))
		if got.status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d: %s", got.status, got.body)
		}
		hs := s.handshakes()
		last := hs[len(hs)-1]
		if strings.Contains(fmt.Sprint(last), tok) {
			t.Errorf("the back end saw the token: %+v", last)
		}
		if last.Path != "/v1/voice?lang=en" {
			t.Errorf("forwarded path %q", last.Path)
		}
		if v := last.Headers["x-directpipe-sub"]; len(v) != 1 || v[0] != "caller-1" {
			t.Errorf("x-directpipe-sub %q, want the verified claim only", v)
		}
		if v := last.Headers["x-directpipe-identity"]; len(v) != 1 || v[0] != "caller-1" {
			t.Errorf("x-directpipe-identity %q, want the verified identity only", v)
		}
		if _, ok := last.Headers["authorization"]; ok {
			t.Error("authorization forwarded")
		}
		if v := last.Headers["sec-websocket-protocol"]; len(v) != 1 || v[0] != "voice.v1" {
			t.Errorf("subprotocols %q, want voice.v1 alone", v)
		}
	})

	expired := mint(t, devSecret, "dev", jwt.MapClaims{"sub": "x", "exp": time.Now().Add(-time.Hour).Unix()})
	forged := tok[:len(tok)-4] + "AAAA"
	before := len(s.handshakes())
	for _, tt := range []struct {
		name, request string
		status        int
		reason        string
		challenge     string
	}{
		{"no token", upgradeRequest("/v1/voice"), 401, "missing_token", `Bearer realm="directpipe"`},
		{"forged token", upgradeRequest("/v1/voice", "Authorization: Bearer "+forged), 401, "bad_signature", `Bearer realm="directpipe", error="invalid_token"`},
		{"expired token", upgradeRequest("/v1/voice", "Authorization: Bearer "+expired), 401, "expired_token", `Bearer realm="directpipe", error="invalid_token"`},
		{"garbage token", upgradeRequest("/v1/voice", "Authorization: Bearer a.b.c"), 401, "malformed_token", `Bearer realm="directpipe", error="invalid_token"`},
		{"oversized token", upgradeRequest("/v1/voice", "Authorization: Bearer "+strings.Repeat("x", 9000)), 401, "token_too_large", `Bearer realm="directpipe", error="invalid_token"`},
		{"foreign origin", upgradeRequest("/v1/voice", "Authorization: Bearer "+tok, "Origin: https://evil.example"), 403, "origin_not_allowed", ""},
		{"not an upgrade", "GET /v1/voice HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + tok + "\r\n\r\n", 400, "bad_handshake", ""},
		{"garbage bytes", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400, "bad_handshake", ""},
		{"frames before the 101", upgradeRequest("/v1/voice", "Authorization: Bearer "+tok) + "\x81\x85abcd12345", 400, "bad_handshake", ""},
	} {
		t.Run("denies "+tt.name, func(t *testing.T) {
			got := rawExchange(t, addr, tt.request)
			var body struct{ Error, Message string }
			if err := json.Unmarshal([]byte(got.body), &body); err != nil {
				t.Fatalf("status %d, body %q is not JSON: %v", got.status, got.body, err)
			}
			if got.status != tt.status || body.Error != tt.reason {
				t.Errorf("got %d %s, want %d %s", got.status, body.Error, tt.status, tt.reason)
			}
			if v := got.header.Get("WWW-Authenticate"); v != tt.challenge {
				t.Errorf("challenge %q, want %q", v, tt.challenge)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			if !got.closed {
				t.Errorf("the connection stayed open after the denial: %v", got.after)
			}
			if strings.Contains(got.body, tok) || strings.Contains(fmt.Sprint(got.header), tok) {
				t.Error("the answer quotes the token")
			}
		})
	}
	if after := len(s.handshakes()); after != before {
		t.Errorf("denied callers reached the back end: %d handshakes before, %d after", before, after)
	}

	t.Run("metrics count allowed and denied handshakes by reason", func(t *testing.T) {
		ctx := context.Background()
		for name, least := range map[string]int64{
			"wasmcustom.directpipe_tcp_handshake_allowed":                   7,
			"wasmcustom.directpipe_tcp_handshake_denied_missing_token":      1,
			"wasmcustom.directpipe_tcp_handshake_denied_origin_not_allowed": 1,
			"wasmcustom.directpipe_tcp_handshake_denied_bad_handshake":      3,
		} {
			if err := s.envoy.WaitStat(ctx, name, func(v int64) bool { return v >= least }); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})

	t.Run("a connection that never sends its handshake is closed", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Partial head, then silence.
		io.WriteString(c, "GET /v1/voice HTTP/1.1\r\nHost: a\r\n")
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("read %v, want EOF once the module closes the connection", err)
		}
	})
}

// TestTCPModeKeyRotation rotates the signing key of a tcp route's policy:
// the new config reaches the tcp module by ECDS, new handshakes need the
// new key, streams opened with the old one keep flowing, and no listener
// is touched.
func TestTCPModeKeyRotation(t *testing.T) {
	s, addr := newTCPStack(t, true)
	ctx := context.Background()
	modifiedBefore, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}
	oldToken := validToken(t)
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: "ws://" + addr + "/v1/voice", Header: http.Header{"Authorization": {"Bearer " + oldToken}},
			Streams: 3, Frames: 5000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.envoy.WaitStat(wctx, "cluster.voice.upstream_cx_active", func(v int64) bool { return v >= 3 }); err != nil {
		t.Fatal(err)
	}

	newSecret := []byte("the-rotated-signing-key-32-bytes!")
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(newSecret)}}
	s.writePolicy()
	waitVersionMoved(t, s)

	newToken := mint(t, newSecret, "rotated", jwt.MapClaims{"sub": "caller-2", "exp": time.Now().Add(time.Hour).Unix()})
	eventually(t, func() (bool, string) {
		got := rawExchange(t, addr, upgradeRequest("/v1/voice", "Authorization: Bearer "+newToken))
		return got.status == http.StatusSwitchingProtocols, fmt.Sprintf("new key: %d %s", got.status, got.body)
	})
	if got := rawExchange(t, addr, upgradeRequest("/v1/voice", "Authorization: Bearer "+oldToken)); got.status != http.StatusUnauthorized {
		t.Errorf("old key after rotation: %d %s, want 401", got.status, got.body)
	}
	time.Sleep(200 * time.Millisecond) // let the open streams carry frames after the rotation
	close(stop)
	res := <-results
	if res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.FailedDials != 0 || res.Received == 0 {
		t.Fatalf("open streams were hurt by the rotation: %+v", res.Streams)
	}
	modifiedAfter, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}
	if modifiedAfter != modifiedBefore {
		t.Errorf("listener_manager.listener_modified moved from %d to %d: the rotation touched a listener", modifiedBefore, modifiedAfter)
	}
}

// TestTCPRouteAddedAtRuntime adds a tcp route with auth to a running
// policy: its listener and its filter config arrive together, the first
// handshake is checked (never let through unchecked, never refused for a
// missing config), and the live streams on the HTTP listener are not cut.
func TestTCPRouteAddedAtRuntime(t *testing.T) {
	s := newStack(t, false)
	ctx := context.Background()
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: s.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: 2, Frames: 5000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	waitStreams(t, s, 2)

	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s.params.TCP = addr
	s.writePolicy()
	if err := testkit.WaitListening(addr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := rawExchange(t, addr, upgradeRequest("/v1/voice")); got.status != http.StatusUnauthorized {
		t.Errorf("first handshake without a token: %d %s, want 401", got.status, got.body)
	}
	if got := rawExchange(t, addr, upgradeRequest("/v1/voice", "Authorization: Bearer "+validToken(t))); got.status != http.StatusSwitchingProtocols {
		t.Errorf("first handshake with a token: %d %s, want 101", got.status, got.body)
	}
	close(stop)
	res := <-results
	if res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.FailedDials != 0 {
		t.Fatalf("the HTTP listener's streams were hurt by adding a tcp route: %+v", res.Streams)
	}
}
