package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestHandshakeRatePerIdentity: a policy with a handshake rate lets one
// identity open its burst of streams, then answers 429 with Retry-After,
// on the direct path and in tcp mode, while another identity keeps its
// own burst. The back end sees only the handshakes that were let through.
// The rate refills one token in 100 s, so the test's own pace never
// matters.
func TestHandshakeRatePerIdentity(t *testing.T) {
	s, tcpAddr := newQuotaStack(t, "handshakes: { per_second: 0.01, burst: 3 }")
	alice, bob := tokenOf(t, "alice"), tokenOf(t, "bob")

	type attempt struct {
		status     int
		retryAfter string
		body       string
	}
	direct := func(tok string) attempt {
		resp, body := upgrade(t, s.listenURL("http", "/v1/metered"), http.Header{"Authorization": {"Bearer " + tok}})
		return attempt{resp.StatusCode, resp.Header.Get("Retry-After"), body}
	}
	raw := func(tok string) attempt {
		r := rawExchange(t, tcpAddr, upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))
		return attempt{r.status, r.header.Get("Retry-After"), strings.TrimSpace(r.body)}
	}
	for _, path := range []struct {
		name string
		try  func(string) attempt
	}{{"direct", direct}, {"tcp", raw}} {
		t.Run(path.name, func(t *testing.T) {
			before := backendCounts(t, s.backend).Handshakes
			for i := range 3 {
				if a := path.try(alice); a.status != http.StatusSwitchingProtocols {
					t.Fatalf("alice's handshake %d of her burst of 3: %+v", i+1, a)
				}
			}
			a := path.try(alice)
			if a.status != http.StatusTooManyRequests || !strings.Contains(a.body, `"rate_limited"`) {
				t.Fatalf("alice's 4th handshake: %+v, want 429 rate_limited", a)
			}
			if n, err := strconv.Atoi(a.retryAfter); err != nil || n < 1 || n > 100 {
				t.Errorf("Retry-After %q, want 1 to 100 seconds", a.retryAfter)
			}
			if b := path.try(bob); b.status != http.StatusSwitchingProtocols {
				t.Errorf("bob, another identity, was refused: %+v", b)
			}
			if got := backendCounts(t, s.backend).Handshakes - before; got != 4 {
				t.Errorf("the back end saw %d handshakes, want 4 (alice's 3, bob's 1)", got)
			}
		})
	}
	denied, err := s.envoy.Stat(t.Context(), "wasmcustom.directpipe_handshake_denied_rate_limited")
	if err != nil || denied != 1 {
		t.Errorf("Envoy counted %d rate-limited handshakes on the HTTP listener (%v), want 1", denied, err)
	}
}

// newQuotaStack is the usual stack with a direct-path route (/v1/metered)
// and a tcp route, each with its own auth policy carrying quotas (YAML
// inside quotas: { }); it returns the tcp route's address.
func newQuotaStack(t *testing.T, quotas string) (*stack, string) {
	t.Helper()
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = `  - { name: metered, match: { path: /v1/metered }, kind: websocket, backend: voice, auth: metered }
  - { name: metered-raw, kind: websocket, mode: tcp, tcp: { address: "` + tcpAddr + `" }, backend: voice, auth: metered-raw }`
		policy := `
    sources: [{ bearer: true }]
    identity_header: x-directpipe-identity
    jwt: { keys: [{ kty: oct, kid: dev, alg: HS256, k: ` + b64url(devSecret) + ` }] }
    quotas: { ` + quotas + ` }`
		p.AuthPoliciesYAML = "  - name: metered" + policy + "\n  - name: metered-raw" + policy
	})
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	return s, tcpAddr
}

func tokenOf(t testing.TB, sub string) string {
	now := time.Now()
	return mint(t, devSecret, "dev", jwt.MapClaims{"sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// TestStreamQuotaPerIdentity: with max_streams 2, an identity holds two
// live streams and its third handshake is answered 429 stream_quota with
// Retry-After, on the direct path and in tcp mode; when one of its calls
// ends, the next handshake gets through; a tier override lets another
// identity hold more, and an override of 0 admits none. The live streams
// keep echoing throughout, and the back end sees only what was admitted.
func TestStreamQuotaPerIdentity(t *testing.T) {
	s, tcpAddr := newQuotaStack(t, "max_streams: 2, max_streams_by_identity: { vip: 3, suspended: 0 }")
	ctx := t.Context()
	dial := map[string]func(tok string) (*websocket.Conn, *http.Response, error){
		"direct": func(tok string) (*websocket.Conn, *http.Response, error) {
			return websocket.Dial(ctx, s.listenURL("ws", "/v1/metered"), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		},
		"tcp": func(tok string) (*websocket.Conn, *http.Response, error) {
			return websocket.Dial(ctx, "ws://"+tcpAddr+"/v1/voice", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		},
	}
	for _, name := range []string{"direct", "tcp"} {
		t.Run(name, func(t *testing.T) {
			open := func(who string) *websocket.Conn {
				t.Helper()
				c, resp, err := dial[name](tokenOf(t, who))
				if err != nil {
					t.Fatalf("%s's stream refused: %v (%v)", who, err, resp)
				}
				t.Cleanup(func() { c.CloseNow() })
				return c
			}
			refused := func(who string) {
				t.Helper()
				c, resp, err := dial[name](tokenOf(t, who))
				if err == nil {
					c.CloseNow()
					t.Fatalf("%s's stream over quota was let through", who)
				}
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "5" {
					t.Fatalf("%s over quota: %v (%+v), want 429 with Retry-After 5", who, err, resp)
				}
			}
			before := backendCounts(t, s.backend).Handshakes
			a1, a2 := open("alice"), open("alice")
			refused("alice")
			a1.Close(websocket.StatusNormalClosure, "call ended")
			// The end reaches the module when Envoy deletes the stream,
			// just after the close: a handshake then gets through.
			var a3 *websocket.Conn
			eventually(t, func() (bool, string) {
				c, resp, err := dial[name](tokenOf(t, "alice"))
				if err != nil {
					return false, fmt.Sprintf("after one of alice's calls ended, her handshake: %v (%v)", err, resp)
				}
				a3 = c
				return true, ""
			})
			if a3 == nil {
				return
			}
			defer a3.CloseNow()
			for range 3 {
				open("vip")
			}
			refused("vip")
			refused("suspended")
			for _, c := range []*websocket.Conn{a2, a3} {
				echo(t, ctx, c, "still up")
			}
			if got := backendCounts(t, s.backend).Handshakes - before; got != 6 {
				t.Errorf("the back end saw %d handshakes, want 6 (alice 3, vip 3)", got)
			}
		})
	}
}
