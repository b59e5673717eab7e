package e2e

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
)

// TestNativeCorruptLibraryKeepsLastGood serves the native filter by sha256
// from the module server, then a module that arrives intact but does not
// load, and then a key rotation: Envoy must refuse every filter config
// that names that module (a NACK the control plane shows), and the last
// good module and configuration keep deciding, as the back end sees: the
// old key still gets in with its verified identity, the new one does not,
// a request without a token never arrives. A good module again applies
// the rotation.
func TestNativeCorruptLibraryKeepsLastGood(t *testing.T) {
	served := uniqueNativeModule(t)
	good, err := os.ReadFile(served)
	if err != nil {
		t.Fatal(err)
	}
	corrupt, err := os.ReadFile(unloadableNativeModule(t))
	if err != nil {
		t.Fatal(err)
	}
	corruptSHA := fmt.Sprintf("%x", sha256.Sum256(corrupt))
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative, native: served, fleet: true})
	s.waitStatus("SYNCED", "")

	oldToken := validToken(t)
	reached := func(id, token string) (int, *recorded) {
		t.Helper()
		h := http.Header{}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		resp, _ := upgrade(t, s.listenURL("http", tagged("/v1/voice", id)), h)
		for _, r := range backendRequests(t, s) {
			if strings.Contains(r.Path, "row="+id) {
				return resp.StatusCode, &r
			}
		}
		return resp.StatusCode, nil
	}
	if code, seen := reached("before", oldToken); code != http.StatusSwitchingProtocols || seen == nil {
		t.Fatalf("before: status %d, reached the back end: %v", code, seen != nil)
	}

	// The module that does not load: the control plane reads it at its
	// next periodic check and names it in the filter config.
	writeAtomic(t, served, corrupt)
	// Envoy refuses the config while it fetches the module, then because
	// the module does not load.
	nack := waitNativeNack(t, s, corruptSHA, "failed to load", "")
	t.Logf("NACK: %s", nack.Error)
	// A rotation while the module is refused: refused with it.
	rotated := []byte("the-rotated-signing-key-32-bytes!")
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(rotated)}}
	s.writePolicy()
	waitNativeNack(t, s, corruptSHA, "failed to load", nack.Version)
	newToken := mint(t, rotated, "rotated", jwt.MapClaims{"sub": "caller-2", "exp": time.Now().Add(time.Hour).Unix()})

	code, seen := reached("old-key", oldToken)
	if code != http.StatusSwitchingProtocols || seen == nil {
		t.Fatalf("old key after the rejected push: status %d, reached the back end: %v; the last good filter should serve", code, seen != nil)
	}
	if got := seen.Headers["x-directpipe-identity"]; len(got) != 1 || got[0] != "caller-1" {
		t.Errorf("old key after the rejected push: identity %v, want caller-1", got)
	}
	for id, token := range map[string]string{"new-key": newToken, "no-token": ""} {
		if code, seen := reached(id, token); code != http.StatusUnauthorized || seen != nil {
			t.Errorf("%s after the rejected push: status %d, reached the back end: %v; want 401 from the last good filter", id, code, seen != nil)
		}
	}

	// The good module again: the rotation applies once the control plane
	// has read it.
	writeAtomic(t, served, good)
	waitFor(t, time.Minute, func() (bool, string) {
		code, seen := reached("after-"+time.Now().Format("150405.000000"), newToken)
		return code == http.StatusSwitchingProtocols && seen != nil, "new key after recovery: " + http.StatusText(code)
	})
	s.waitStatus("SYNCED", "")
	s.checkFilterBuild(testkit.FilterNative)
}

// waitNativeNack waits until the stack's Envoy has refused a filter config
// naming the module sha with an error that says why, in a version other
// than after, and returns that refusal. The control plane reads a changed
// module file every few seconds, so the wait is long.
func waitNativeNack(t *testing.T, s *stack, sha, why, after string) xds.Nack {
	t.Helper()
	var got xds.Nack
	waitFor(t, time.Minute, func() (bool, string) {
		for _, n := range s.cp.XDS().Status().Nodes() {
			ts := n.Types[resource.ExtensionConfigType]
			if n := ts.LastNack; n != nil && n.Version != after && strings.Contains(n.Error, sha) && strings.Contains(n.Error, why) {
				got = *ts.LastNack
				return true, ""
			}
		}
		return false, fmt.Sprintf("no NACK of a filter config naming module %s: %s", sha, why)
	})
	return got
}

// TestNativeStreamQuota runs the per-identity quota on the direct path
// with the native filter, whose counts are the module's own, shared by
// Envoy's workers: an identity is refused 429 stream_quota at its quota
// and the back end never receives the stream over it, a closed stream
// frees its place, and handshakes over the rate are refused. The tcp mode
// route, the native network filter, counts against the same quota: an
// identity at its quota on the direct path is refused there too, with the
// module's own raw 429.
func TestNativeStreamQuota(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative}, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 3)
	})
	s.waitStatus("SYNCED", "")
	direct := s.params.Listen
	var alice []held
	for i := range 2 {
		h := hold(t, t, direct, "/v1/quota", "alice")
		if h.status != http.StatusSwitchingProtocols {
			t.Fatalf("alice's stream %d: %d %s", i, h.status, h.body)
		}
		alice = append(alice, h)
	}
	refusedFor(t, hold(t, t, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)
	if h := hold(t, t, direct, "/v1/quota", "bob"); h.status != http.StatusSwitchingProtocols {
		t.Fatalf("bob: %d %s", h.status, h.body)
	}
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	refusedFor(t, hold(t, t, tcpAddr, "/v1/quota", "alice"), contract.ReasonStreamQuota)
	if h := hold(t, t, tcpAddr, "/v1/quota", "bob"); h.status != http.StatusSwitchingProtocols {
		t.Fatalf("bob in tcp mode: %d %s", h.status, h.body)
	}
	if seen := identitiesSeen(s, "/v1/quota"); seen["alice"] != 2 || seen["bob"] != 2 {
		t.Fatalf("upgrades the back end received per identity: %v; want alice 2, bob 2 (one in tcp mode)", seen)
	}
	alice[0].close()
	eventually(t, func() (bool, string) {
		h := hold(t, t, direct, "/v1/quota", "alice")
		return h.status == http.StatusSwitchingProtocols, fmt.Sprintf("alice after a close: %d %s", h.status, h.body)
	})
	refusedFor(t, hold(t, t, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)

	passed := 0
	for {
		h := hold(t, t, direct, "/v1/rated", "carol")
		h.close()
		if h.status != http.StatusSwitchingProtocols {
			refusedFor(t, h, contract.ReasonHandshakeRate)
			break
		}
		if passed++; passed > 50 {
			t.Fatal("50 handshakes passed a rate of 1/s with a burst of 3")
		}
	}
	if passed < 3 {
		t.Fatalf("%d handshakes passed before a refusal; want at least the burst, 3", passed)
	}
	for _, name := range []string{contract.MetricDeniedPrefix + contract.ReasonStreamQuota, contract.MetricTCPDeniedPrefix + contract.ReasonStreamQuota} {
		stat := httpFilterStat(testkit.FilterNative, name)
		if v, err := s.envoy.Stat(t.Context(), stat); err != nil || v == 0 {
			t.Errorf("stream quota refusals are not counted: %s = %d (%v)", stat, v, err)
		}
	}
}

// TestNativeQuotaOutlivesConfigChange holds an identity at its stream
// quota through a policy change, which gives the native filter a new
// config and with it new gates: the streams the old config admitted must
// still count after the gate's liveness timeout, when an admission drops
// the counts of a quota that stopped saying it is alive (a failed Wasm
// VM's). Every handshake over the quota for longer than that timeout is
// refused, and the back end never receives one.
func TestNativeQuotaOutlivesConfigChange(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative}, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 3)
	})
	s.waitStatus("SYNCED", "")
	direct := s.params.Listen
	for i := range 2 {
		if h := hold(t, t, direct, "/v1/quota", "alice"); h.status != http.StatusSwitchingProtocols {
			t.Fatalf("alice's stream %d: %d %s", i, h.status, h.body)
		}
	}
	refusedFor(t, hold(t, t, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)

	// A new tier for gold: a new filter config; alice's quota stays 2.
	status := s.cp.XDS().Status()
	before := status.Latest()[resource.ExtensionConfigType]
	s.params.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 4)
	s.writePolicy()
	waitFor(t, time.Minute, func() (bool, string) {
		latest := status.Latest()[resource.ExtensionConfigType]
		for _, n := range status.Nodes() {
			if latest != before && n.Types[resource.ExtensionConfigType].Acked == latest {
				return true, ""
			}
		}
		return false, "the new filter config is not acknowledged"
	})

	// Past the liveness timeout, with margin for a loaded machine's
	// ticks: the check must hold for that long, not merely once.
	tried := 0
	for end := time.Now().Add(gate.AliveTimeout + 3*time.Second); time.Now().Before(end); tried++ {
		h := hold(t, t, direct, "/v1/quota", "alice")
		if h.status == http.StatusSwitchingProtocols {
			t.Fatalf("alice admitted over her quota of 2 after the config change (attempt %d)", tried)
		}
		refusedFor(t, h, contract.ReasonStreamQuota)
		time.Sleep(500 * time.Millisecond) // pacing, not a wait for a condition
	}
	if seen := identitiesSeen(s, "/v1/quota"); seen["alice"] != 2 {
		t.Fatalf("the back end received %d of alice's upgrades; want 2", seen["alice"])
	}
	t.Logf("%d handshakes over the quota refused across %v", tried, gate.AliveTimeout+3*time.Second)
}
