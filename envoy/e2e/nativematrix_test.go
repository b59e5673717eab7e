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
	nack := waitNativeNack(t, s, corruptSHA, "")
	t.Logf("NACK: %s", nack.Error)
	if !strings.Contains(nack.Error, "Failed to load dynamic module") {
		t.Errorf("the NACK does not say the module failed to load: %s", nack.Error)
	}
	// A rotation while the module is refused: refused with it.
	rotated := []byte("the-rotated-signing-key-32-bytes!")
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(rotated)}}
	s.writePolicy()
	waitNativeNack(t, s, corruptSHA, nack.Version)
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

	// The good module again: the rotation applies.
	writeAtomic(t, served, good)
	eventually(t, func() (bool, string) {
		code, seen := reached("after-"+time.Now().Format("150405.000000"), newToken)
		return code == http.StatusSwitchingProtocols && seen != nil, "new key after recovery: " + http.StatusText(code)
	})
	s.waitStatus("SYNCED", "")
	s.checkFilterBuild(testkit.FilterNative)
}

// waitNativeNack waits until the stack's Envoy has refused a filter config
// naming the module sha, in a version other than after, and returns that
// refusal. The control plane reads a changed module file every few
// seconds, so the wait is long.
func waitNativeNack(t *testing.T, s *stack, sha, after string) xds.Nack {
	t.Helper()
	var got xds.Nack
	waitFor(t, time.Minute, func() (bool, string) {
		for _, n := range s.cp.XDS().Status().Nodes() {
			ts := n.Types[resource.ExtensionConfigType]
			if ts.LastNack != nil && ts.LastNack.Version != after && strings.Contains(ts.LastNack.Error, sha) {
				got = *ts.LastNack
				return true, ""
			}
		}
		return false, "no NACK of a filter config naming module " + sha
	})
	return got
}

// TestNativeStreamQuota runs the per-identity quota on the direct path
// with the native filter, whose counts are the module's own, shared by
// Envoy's workers: an identity is refused 429 stream_quota at its quota
// and the back end never receives the stream over it, a closed stream
// frees its place, and handshakes over the rate are refused. (The tcp mode
// rows of TestStreamQuotaAndHandshakeRate are not run here: tcp mode keeps
// the Wasm filter, whose counts are separate from the native module's.)
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
	if seen := identitiesSeen(s, "/v1/quota"); seen["alice"] != 2 || seen["bob"] != 1 {
		t.Fatalf("upgrades the back end received per identity: %v; want alice 2, bob 1", seen)
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
	stat := httpFilterStat(testkit.FilterNative, contract.MetricDeniedPrefix+contract.ReasonStreamQuota)
	if v, err := s.envoy.Stat(t.Context(), stat); err != nil || v == 0 {
		t.Errorf("stream quota refusals are not counted: %s = %d (%v)", stat, v, err)
	}
}
