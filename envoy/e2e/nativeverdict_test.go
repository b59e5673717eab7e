//go:build !wasip1

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// verdictReplays is the native filter's count of handshakes its verdict
// tables answered without entering Go.
var verdictReplays = httpFilterStat(testkit.FilterNative, "directpipe_verdict_replays")

// verdictRoute is a WebSocket route whose policy takes a bearer JWT or an
// API key; verdictPolicy is that policy with its JWT key and, when
// apiKey, the test's API key.
const verdictRoute = "  - { name: cached, match: { path: /v1/cached }, kind: websocket, backend: voice, auth: cached }"

func verdictPolicy(kid string, secret []byte, apiKey bool) string {
	p := fmt.Sprintf(`  - name: cached
    sources: [{ bearer: true }]
    jwt:
      keys: [{ kty: oct, kid: %s, alg: HS256, k: %s }]
    identity_header: x-directpipe-identity
`, kid, b64url(secret))
	if apiKey {
		sum := sha256.Sum256([]byte(testAPIKey))
		p += fmt.Sprintf("    api_keys: [{ sha256: %s, identity: cached-key-client }]\n", hex.EncodeToString(sum[:]))
	}
	return p
}

// TestNativeVerdictReplayRefusedAfterRevocation: the native build answers
// a handshake it has allowed from its token cache without entering Go,
// from the worker's verdict table, and the back end receives the verified
// identity with the token stripped. Then the JWT key is rotated and the
// API key revoked (one policy change, one new filter config): the very
// token the table was replaying, and the API key, are refused, and the
// back end receives none of their handshakes.
func TestNativeVerdictReplayRefusedAfterRevocation(t *testing.T) {
	oldSecret, newSecret := []byte("the-cached-signing-key-32-bytes!"), []byte("the-rotated-signing-key-32-bytes")
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative}, func(p *policyParams) {
		p.RoutesYAML, p.AuthPoliciesYAML = verdictRoute, verdictPolicy("cache-a", oldSecret, true)
	})
	url := s.listenURL("http", "/v1/cached")
	now := time.Now()
	token := mint(t, oldSecret, "cache-a", jwt.MapClaims{"sub": "cached-caller", "exp": now.Add(time.Hour).Unix()})

	// x-test-seq names each request to the back end; the check does not
	// read it, so it does not stop a replay.
	send := func(authorization, seq string) int {
		resp, body := upgrade(t, url, http.Header{"Authorization": {authorization}, "X-Test-Seq": {seq}})
		if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d %s", seq, resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	// Each worker checks a token once in Go (a signature), then allows
	// it from its token cache in Go (which stores the verdict), then
	// replays it; an API key is stored at its first allow. A handful of
	// handshakes reach a replay on either worker.
	replay := func(authorization, prefix, identity string) {
		_, replayed := untilReplayed(t, s, prefix, func(seq string) {
			if code := send(authorization, seq); code != http.StatusSwitchingProtocols {
				t.Fatalf("%s: status %d, want 101", seq, code)
			}
		})
		got := backendSeq(t, s, replayed)
		if got == nil {
			t.Fatalf("the back end did not receive the replayed handshake %s", replayed)
		}
		if id := first(got.Headers, "x-directpipe-identity"); id != identity {
			t.Errorf("replayed handshake %s: identity %q, want %s", replayed, id, identity)
		}
		for _, h := range []string{"authorization", "x-directpipe-route"} {
			if v := first(got.Headers, h); v != "" {
				t.Errorf("replayed handshake %s: the back end received %s: %q", replayed, h, v)
			}
		}
	}
	replay("Bearer "+token, "token", "cached-caller")
	replay("Bearer "+testAPIKey, "key", "cached-key-client")
	// The replayed token with a forged identity differs in a header the
	// check read: Go checks it, and the back end gets the verified one.
	resp, body := upgrade(t, url, http.Header{"Authorization": {"Bearer " + token}, "X-Test-Seq": {"forged"},
		"X-Directpipe-Identity": {"admin"}})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("forged identity: status %d %s", resp.StatusCode, body)
	}
	got := backendSeq(t, s, "forged")
	if got == nil {
		t.Fatal("forged identity: the back end received nothing")
	}
	for k, v := range got.Headers {
		if strings.EqualFold(k, "x-directpipe-identity") && (len(v) != 1 || v[0] != "cached-caller") {
			t.Errorf("forged identity: the back end received %s: %v", k, v)
		}
	}

	s.params.AuthPoliciesYAML = verdictPolicy("cache-b", newSecret, false)
	s.writePolicy()
	waitVersionMoved(t, s)
	newToken := mint(t, newSecret, "cache-b", jwt.MapClaims{"sub": "rotated-caller", "exp": now.Add(time.Hour).Unix()})
	eventually(t, func() (bool, string) {
		code := send("Bearer "+newToken, "new-key")
		return code == http.StatusSwitchingProtocols, fmt.Sprintf("new key: %d", code)
	})
	for i := range 10 {
		if code := send("Bearer "+token, fmt.Sprintf("after-%d", i)); code != http.StatusUnauthorized {
			t.Errorf("the replayed token after its key was rotated: status %d, want 401", code)
		}
		if code := send("Bearer "+testAPIKey, fmt.Sprintf("after-key-%d", i)); code != http.StatusUnauthorized {
			t.Errorf("the API key after its revocation: status %d, want 401", code)
		}
	}
	for _, h := range s.handshakes() {
		if seq := first(h.Headers, "x-test-seq"); strings.HasPrefix(seq, "after") {
			t.Errorf("the back end received %s after the revocation: %v", seq, h.Headers)
		}
	}
	s.checkFilterBuild(testkit.FilterNative)
}

// openRoute is a public WebSocket route; guarded, the same route checked
// by verdictPolicy.
const (
	openRoute    = "  - { name: open, match: { path: /v1/open }, kind: websocket, backend: voice }"
	guardedRoute = "  - { name: open, match: { path: /v1/open }, kind: websocket, backend: voice, auth: cached }"
)

// TestNativeVerdictPublicReplayRefusedOnceGuarded: the native build
// answers repeated handshakes on a public route from the worker's verdict
// table, whatever their path and query, and the back end receives what
// it receives from a handshake the Go check let on: the client's forged
// identity removed, nothing else changed. Then the route is given a
// policy (a route change alone: the filter config, which already holds
// the policy, stays as it is, and so do its tables): the very handshake
// the table was replaying is refused, and the back end receives none of
// them.
func TestNativeVerdictPublicReplayRefusedOnceGuarded(t *testing.T) {
	secret := []byte("the-guarding-signing-key-32bytes")
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative}, func(p *policyParams) {
		p.RoutesYAML, p.AuthPoliciesYAML = openRoute, verdictPolicy("guard", secret, false)
	})
	// Each handshake has a query of its own, which the public check does
	// not read; the forged identity it does read, and strips.
	send := func(identity, seq string) int {
		resp, body := upgrade(t, s.listenURL("http", "/v1/open?seq="+seq),
			http.Header{"X-Directpipe-Identity": {identity}, "X-Test-Seq": {seq}, "X-Client-Note": {"kept"}})
		if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: status %d %s", seq, resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	checked, replayed := untilReplayed(t, s, "open", func(seq string) {
		if code := send("admin", seq); code != http.StatusSwitchingProtocols {
			t.Fatalf("%s: status %d, want 101", seq, code)
		}
	})
	byGo, byTable := backendSeq(t, s, checked), backendSeq(t, s, replayed)
	if byGo == nil || byTable == nil {
		t.Fatalf("the back end did not receive %s (checked in Go: %v) or %s (replayed: %v)", checked, byGo != nil, replayed, byTable != nil)
	}
	if byTable.Path != "/v1/open?seq="+replayed {
		t.Errorf("replayed handshake %s: the back end received path %q", replayed, byTable.Path)
	}
	for _, h := range []string{"x-directpipe-identity", "x-directpipe-route"} {
		if v := first(byTable.Headers, h); v != "" {
			t.Errorf("replayed handshake %s: the back end received %s: %q", replayed, h, v)
		}
	}
	// Apart from the headers that name each request, the back end
	// receives the same from the table as from the Go check.
	perRequest := func(name string) bool {
		return strings.EqualFold(name, "x-test-seq") || strings.EqualFold(name, "x-request-id")
	}
	for k, v := range byGo.Headers {
		if !perRequest(k) && !slices.Equal(byTable.Headers[k], v) {
			t.Errorf("%s: checked in Go %v, replayed %v", k, v, byTable.Headers[k])
		}
	}
	for k, v := range byTable.Headers {
		if _, ok := byGo.Headers[k]; !ok && !perRequest(k) {
			t.Errorf("%s: only the replayed handshake carried it: %v", k, v)
		}
	}

	s.params.RoutesYAML = guardedRoute
	s.writePolicy()
	waitVersionMoved(t, s)
	// A forged identity no handshake has sent is in no table: once the
	// route is guarded, the Go check refuses it.
	// Envoy ACKs the route before every worker holds it: probes sent
	// meanwhile may still pass as public, so they wait for several
	// refusals in a row (they spread over the workers).
	fresh := 0
	eventuallyInARow(t, 4, func() (bool, string) {
		fresh++
		code := send(fmt.Sprintf("fresh-%d", fresh), fmt.Sprintf("fresh-%d", fresh))
		return code == http.StatusUnauthorized, fmt.Sprintf("an unauthenticated handshake on the guarded route: %d", code)
	})
	before := s.stat(t, verdictReplays)
	for i := range 10 {
		if code := send("admin", fmt.Sprintf("after-%d", i)); code != http.StatusUnauthorized {
			t.Errorf("the replayed handshake once its route is guarded: status %d, want 401", code)
		}
	}
	if n := s.stat(t, verdictReplays); n != before {
		t.Errorf("%s moved from %d to %d once the route was guarded", verdictReplays, before, n)
	}
	for _, h := range s.handshakes() {
		if seq := first(h.Headers, "x-test-seq"); strings.HasPrefix(seq, "after") {
			t.Errorf("the back end received %s once the route was guarded: %v", seq, h.Headers)
		}
	}
	token := mint(t, secret, "guard", jwt.MapClaims{"sub": "guarded-caller", "exp": time.Now().Add(time.Hour).Unix()})
	resp, body := upgrade(t, s.listenURL("http", "/v1/open"), http.Header{"Authorization": {"Bearer " + token}})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("an authenticated handshake on the guarded route: status %d %s", resp.StatusCode, body)
	}
	s.checkFilterBuild(testkit.FilterNative)
}

// untilReplayed calls send with x-test-seq values prefix-0, prefix-1, ...
// until a handshake is answered from the native filter's verdict table,
// and returns the seq of one the Go check answered before it and of the
// replayed one. Each worker checks in Go before its table can answer, so
// a few handshakes are enough whichever worker takes them.
func untilReplayed(t *testing.T, s *stack, prefix string, send func(seq string)) (checked, replayed string) {
	t.Helper()
	for i := range 40 {
		before := s.stat(t, verdictReplays)
		seq := fmt.Sprintf("%s-%d", prefix, i)
		send(seq)
		if s.stat(t, verdictReplays) == before {
			checked = seq
			continue
		}
		if checked == "" {
			t.Fatalf("%s: the first handshake of its kind was replayed, none was checked", seq)
		}
		return checked, seq
	}
	t.Fatalf("%s: no handshake was replayed from the verdict table (%s = %d)", prefix, verdictReplays, s.stat(t, verdictReplays))
	return "", ""
}

// backendSeq is the handshake the back end received with x-test-seq seq.
func backendSeq(t *testing.T, s *stack, seq string) *backendHandshake {
	for _, h := range s.handshakes() {
		if first(h.Headers, "x-test-seq") == seq {
			return &h
		}
	}
	return nil
}

// first is a header's first value in a recorded handshake, by any case
// of its name.
func first(headers map[string][]string, name string) string {
	for k, v := range headers {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}
