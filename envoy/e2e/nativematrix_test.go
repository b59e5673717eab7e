package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// TestNativeCorruptLibraryKeepsLastGood serves the native filter by ECDS,
// then a filter config naming a file that is not a shared library, with a
// key rotation in the same push: Envoy must reject that config (a NACK the
// control plane shows), and the last good module and configuration keep
// deciding, as the back end sees: the old key still gets in with its
// verified identity, the new one does not, a request without a token
// never arrives. A later push with a good library applies.
func TestNativeCorruptLibraryKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.so")
	lib, err := os.ReadFile(testkit.NativeModule(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, lib, 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt.so")
	if err := os.WriteFile(corrupt, []byte("\x7fELF\x02\x01\x01 this is not a shared library"), 0o644); err != nil {
		t.Fatal(err)
	}
	var served atomic.Pointer[string]
	served.Store(&good)
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative, nativeLibrary: func() string { return *served.Load() }})
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

	// A corrupt library and a rotated key in one push.
	served.Store(&corrupt)
	rotated := []byte("the-rotated-signing-key-32-bytes!")
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(rotated)}}
	s.writePolicy()
	nack := s.waitStatus("NACKED", "TypedExtensionConfig")
	t.Logf("NACK: %v", nack["last_nack"])
	last, _ := nack["last_nack"].(map[string]any)
	if msg, _ := last["error"].(string); !strings.Contains(msg, "Failed to load dynamic module") {
		t.Errorf("the NACK does not say the module failed to load: %v", nack["last_nack"])
	}
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

	// A good library again, with the rotation: it applies.
	served.Store(&good)
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(rotated)}, devKey()}
	s.writePolicy()
	s.waitStatus("SYNCED", "")
	eventually(t, func() (bool, string) {
		code, seen := reached("after-"+time.Now().Format("150405.000000"), newToken)
		return code == http.StatusSwitchingProtocols && seen != nil, "new key after recovery: " + http.StatusText(code)
	})
	s.checkFilterBuild(testkit.FilterNative)
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
