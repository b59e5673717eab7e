package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

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
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = `  - { name: metered, match: { path: /v1/metered }, kind: websocket, backend: voice, auth: metered }
  - { name: metered-raw, kind: websocket, mode: tcp, tcp: { address: "` + tcpAddr + `" }, backend: voice, auth: metered-raw }`
		quota := `
    sources: [{ bearer: true }]
    identity_header: x-directpipe-identity
    jwt: { keys: [{ kty: oct, kid: dev, alg: HS256, k: ` + b64url(devSecret) + ` }] }
    quotas: { handshakes: { per_second: 0.01, burst: 3 } }`
		p.AuthPoliciesYAML = "  - name: metered" + quota + "\n  - name: metered-raw" + quota
	})
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	tokenOf := func(sub string) string {
		now := time.Now()
		return mint(t, devSecret, "dev", jwt.MapClaims{"sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	}
	alice, bob := tokenOf("alice"), tokenOf("bob")

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
