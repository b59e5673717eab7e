package e2e

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// quotaPolicies are the auth policies of the quota tests: quota limits
// each identity's live streams (gold, a tier, to 3), rated each
// identity's handshakes.
const quotaPolicies = `
  - name: quota
    sources: [{ bearer: true }]
    jwt: { keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }] }
    identity_header: x-directpipe-identity
    quotas: { max_streams: %d, identity_max_streams: { gold: %d } }
  - name: rated
    sources: [{ bearer: true }]
    jwt: { keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }] }
    identity_header: x-directpipe-identity
    quotas: { handshakes: { per_second: 1, burst: 3 } }
`

// quotaRoutes puts the quota policy on a direct path route and a tcp mode
// route, and the rated policy on another direct path route.
const quotaRoutes = `
  - { name: quota, match: { path: /v1/quota }, kind: websocket, backend: voice, auth: quota }
  - { name: rated, match: { path: /v1/rated }, kind: websocket, backend: voice, auth: rated }
  - { name: quota-tcp, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice, auth: quota }
`

// tokenOf is a valid token whose subject is sub.
func tokenOf(t testing.TB, sub string) string {
	now := time.Now()
	return mint(t, devSecret, "dev", jwt.MapClaims{"sub": sub, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// held is a WebSocket handshake's answer; a 101 keeps its connection
// open until closed.
type held struct {
	status int
	header http.Header
	body   string
	conn   net.Conn
}

func (h held) close() {
	if h.conn != nil {
		h.conn.Close()
	}
}

// hold opens a stream for sub on addr and path (the same raw request on
// the direct path and in tcp mode) and keeps it open when upgraded, until
// the caller closes it or the test whose cleanup is owner ends.
func hold(t *testing.T, owner testing.TB, addr, path, sub string) held {
	t.Helper()
	c, r, resp := sendRaw(t, addr, upgradeRequest(path, "Authorization: Bearer "+tokenOf(t, sub)))
	out := held{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		c.SetDeadline(time.Time{})
		out.conn = c
		owner.Cleanup(func() { c.Close() })
		return out
	}
	defer c.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil || b.Len() > 4096 {
			break
		}
	}
	out.body = b.String()
	return out
}

// identitiesSeen counts the upgrades the back end received per verified
// identity on path.
func identitiesSeen(s *stack, path string) map[string]int {
	out := map[string]int{}
	for _, h := range s.handshakes() {
		if strings.HasPrefix(h.Path, path) {
			for _, id := range h.Headers["x-directpipe-identity"] {
				out[id]++
			}
		}
	}
	return out
}

// refusedFor checks a 429 for reason with Retry-After.
func refusedFor(t *testing.T, h held, reason string) {
	t.Helper()
	if h.status != http.StatusTooManyRequests || !strings.Contains(h.body, `"`+reason+`"`) || h.header.Get("Retry-After") != strconv.Itoa(contract.RetryAfterSeconds) {
		t.Fatalf("got %d %v %q; want 429 %s with Retry-After", h.status, h.header, h.body, reason)
	}
}

// TestStreamQuotaAndHandshakeRate proves per-identity admission in one real
// Envoy, on the direct path and in tcp mode: an identity is refused 429
// stream_quota with Retry-After at its quota, on both paths together (the
// count is the Envoy's, shared by its workers and both filters); a tier
// lifts the quota for one identity; other identities are unaffected; a
// closed stream frees its place; handshakes over the rate are refused
// 429 handshake_rate. The back end's own record of upgrades per identity
// is what is asserted.
func TestStreamQuotaAndHandshakeRate(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 3)
	})
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	direct := s.params.Listen
	top := t // streams held in a subtest stay open for the next

	var alice []held
	t.Run("direct path: refused at the quota", func(t *testing.T) {
		for i := range 2 {
			h := hold(t, top, direct, "/v1/quota", "alice")
			if h.status != http.StatusSwitchingProtocols {
				t.Fatalf("alice's stream %d: %d %s", i, h.status, h.body)
			}
			alice = append(alice, h)
		}
		refusedFor(t, hold(t, top, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)
	})
	t.Run("tcp mode: the same count, refused raw", func(t *testing.T) {
		refusedFor(t, hold(t, top, tcpAddr, "/v1/quota", "alice"), contract.ReasonStreamQuota)
	})
	t.Run("other identities and tiers are not affected", func(t *testing.T) {
		for _, sub := range []string{"bob", "bob", "gold", "gold", "gold"} {
			if h := hold(t, top, tcpAddr, "/v1/quota", sub); h.status != http.StatusSwitchingProtocols {
				t.Fatalf("%s: %d %s", sub, h.status, h.body)
			}
		}
		refusedFor(t, hold(t, top, direct, "/v1/quota", "bob"), contract.ReasonStreamQuota)
		refusedFor(t, hold(t, top, direct, "/v1/quota", "gold"), contract.ReasonStreamQuota)
	})
	t.Run("the back end received no stream over a quota", func(t *testing.T) {
		seen := identitiesSeen(s, "/v1/quota")
		if seen["alice"] != 2 || seen["bob"] != 2 || seen["gold"] != 3 {
			t.Fatalf("upgrades the back end received per identity: %v; want alice 2, bob 2, gold 3", seen)
		}
	})
	t.Run("a closed stream frees its place", func(t *testing.T) {
		alice[0].close()
		var h held
		eventually(t, func() (bool, string) {
			h = hold(t, top, tcpAddr, "/v1/quota", "alice")
			return h.status == http.StatusSwitchingProtocols, fmt.Sprintf("alice after a close: %d %s", h.status, h.body)
		})
		refusedFor(t, hold(t, top, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)
		if seen := identitiesSeen(s, "/v1/quota"); seen["alice"] != 3 {
			t.Fatalf("alice's upgrades at the back end: %d, want 3", seen["alice"])
		}
	})
	t.Run("handshakes over the rate are refused", func(t *testing.T) {
		// Burst 3 at one a second: however slow this machine, a
		// refusal comes, and before it no more passed than the burst
		// and the refill of the time taken.
		start := time.Now()
		passed := 0
		for {
			h := hold(t, top, direct, "/v1/rated", "carol")
			h.close()
			if h.status == http.StatusSwitchingProtocols {
				passed++
				if passed > 50 {
					t.Fatal("50 handshakes passed a rate of 1/s with a burst of 3")
				}
				continue
			}
			refusedFor(t, h, contract.ReasonHandshakeRate)
			break
		}
		if limit := 3 + int(time.Since(start)/time.Second) + 1; passed > limit || passed < 3 {
			t.Fatalf("%d handshakes passed before a refusal; want 3 to %d", passed, limit)
		}
		if h := hold(t, top, direct, "/v1/rated", "dave"); h.status != http.StatusSwitchingProtocols {
			t.Fatalf("another identity on the rated route: %d %s", h.status, h.body)
		}
	})
	for stat, want := range map[string]string{
		"wasmcustom." + contract.MetricDeniedPrefix + contract.ReasonStreamQuota:                   "http stream quota",
		"wasmcustom." + contract.MetricTCPDeniedPrefix + contract.ReasonStreamQuota:                "tcp stream quota",
		"wasmcustom." + contract.MetricDeniedPrefix + contract.ReasonHandshakeRate:                 "http handshake rate",
		"wasmcustom." + contract.MetricQuotaDeniedPrefix + contract.ReasonStreamQuota + ".alice":   "alice's stream quota",
		"wasmcustom." + contract.MetricQuotaDeniedPrefix + contract.ReasonHandshakeRate + ".carol": "carol's handshake rate",
	} {
		if v, err := s.envoy.Stat(t.Context(), stat); err != nil || v == 0 {
			t.Errorf("%s refusals are not counted: %s = %d (%v)", want, stat, v, err)
		}
	}
}

// shareServed reports whether an Envoy's handshake filter holds a stream
// quota share of n (the first policy's max_streams in its ECDS config).
func shareServed(t *testing.T, e *testkit.Envoy, n int) (bool, string) {
	b, err := e.ConfigDump(t.Context(), "ecds_filters")
	if err != nil {
		return false, err.Error()
	}
	re := regexp.MustCompile(`max_streams\\*":(\d+)`)
	m := re.FindSubmatch(b)
	if m == nil {
		return false, "no quota in the ECDS config"
	}
	return string(m[1]) == strconv.Itoa(n), "max_streams share " + string(m[1])
}

// TestStreamQuotaAcrossTwoEnvoys proves the fleet-wide quota with two
// Envoys against one control plane, both on the same listener addresses
// (SO_REUSEPORT: the kernel spreads connections between them). Each gets
// half of the quota; streams for one identity are opened until both
// Envoys refuse it; the back end must have received at most the quota
// plus the stated bound (Envoys - 1) for it, on both paths, while other
// identities pass, and closing streams frees quota.
func TestStreamQuotaAcrossTwoEnvoys(t *testing.T) {
	const quota, envoys = 4, 2
	bound := quota + envoys - 1
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, quota, 6)
	})
	second := testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr(), NodeID: "e2e-quota-second"})
	if err := second.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, e := range []*testkit.Envoy{s.envoy, second} {
		eventually(t, func() (bool, string) {
			ok, why := shareServed(t, e, quota/envoys)
			return ok, fmt.Sprintf("Envoy %d: %s", i, why)
		})
	}
	refusedStat := func(e *testkit.Envoy) int64 {
		var n int64
		for _, st := range []string{contract.MetricDeniedPrefix, contract.MetricTCPDeniedPrefix} {
			v, _ := e.Stat(t.Context(), "wasmcustom."+st+contract.ReasonStreamQuota)
			n += v
		}
		return n
	}
	top := t
	var admitted []held
	// Until both Envoys have refused alice, alternating the direct path
	// and tcp mode; each connection lands on either Envoy.
	for i := 0; refusedStat(s.envoy) == 0 || refusedStat(second) == 0; i++ {
		if i == 200 {
			t.Fatalf("200 handshakes and the Envoys refused %d and %d", refusedStat(s.envoy), refusedStat(second))
		}
		addr := s.params.Listen
		if i%2 == 1 {
			addr = tcpAddr
		}
		h := hold(t, top, addr, "/v1/quota", "alice")
		switch h.status {
		case http.StatusSwitchingProtocols:
			admitted = append(admitted, h)
		case http.StatusTooManyRequests:
			refusedFor(t, h, contract.ReasonStreamQuota)
		default:
			t.Fatalf("alice: %d %s", h.status, h.body)
		}
	}
	seen := identitiesSeen(s, "/v1/quota")["alice"]
	t.Logf("quota %d over %d Envoys: alice admitted %d, back end saw %d, bound %d", quota, envoys, len(admitted), seen, bound)
	if seen != len(admitted) || seen > bound || seen < quota {
		t.Fatalf("the back end saw %d of alice's streams (%d admitted); want %d to %d", seen, len(admitted), quota, bound)
	}
	if h := hold(t, top, s.params.Listen, "/v1/quota", "bob"); h.status != http.StatusSwitchingProtocols {
		t.Fatalf("bob while alice is at her quota: %d %s", h.status, h.body)
	}
	for _, h := range admitted {
		h.close()
	}
	// Every stream closed: alice gets her whole quota back, on whichever
	// Envoy each connection lands.
	eventually(t, func() (bool, string) {
		h := hold(t, top, s.params.Listen, "/v1/quota", "alice")
		return h.status == http.StatusSwitchingProtocols, fmt.Sprintf("alice after closing: %d %s", h.status, h.body)
	})
}
