package gate

import (
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// TestHTTPHandshakeRate opens handshakes in a row on one Envoy (one shared
// data) under a policy allowing 1 a second, 2 at once: each identity has
// its own bucket, a lost compare-and-swap is retried, and the refusal is a
// 429 with Retry-After.
func TestHTTPHandshakeRate(t *testing.T) {
	doc := policyDoc()
	doc["handshake_rate"] = map[string]any{"per_second": 1, "burst": 2}
	cfg := mustJSON(t, map[string]any{"policies": map[string]any{"voice": doc}})
	steps := []struct {
		sub        string
		at         time.Duration
		casFails   int
		wantStatus int // 0: allowed
		wantRetry  string
	}{
		{sub: "alice", at: 0},
		{sub: "alice", at: 0, casFails: 3}, // raced by other workers, then wins
		{sub: "alice", at: 0, wantStatus: 429, wantRetry: "1"},
		{sub: "bob", at: 0}, // another identity, another bucket
		{sub: "alice", at: 500 * time.Millisecond, wantStatus: 429, wantRetry: "1"},
		{sub: "alice", at: 1500 * time.Millisecond},
		{sub: "alice", at: 1500 * time.Millisecond, casFails: rateTries, wantStatus: 429, wantRetry: "1"},
	}
	g := NewHTTP()
	h := newFakeHost(cfg)
	if !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	for i, s := range steps {
		id := streamID + uint32(i)
		g.ContextCreate(id, rootID)
		h.route, h.routeFound = "voice", true
		h.routePolicy, h.routeTagged = "voice", true
		h.local = nil
		h.casFails = s.casFails
		claims := goodClaims()
		claims["sub"] = s.sub
		h.headers = map[string]string{":path": "/v1/a", "authorization": "Bearer " + token(t, claims)}
		a := g.RequestHeaders(h, id, now.Add(s.at))
		switch {
		case s.wantStatus == 0 && (a != Continue || h.local != nil):
			t.Errorf("step %d (%s at %v): refused %+v, want allowed", i, s.sub, s.at, h.local)
		case s.wantStatus != 0 && (h.local == nil || h.local.status != s.wantStatus || h.local.headers["retry-after"] != s.wantRetry):
			t.Errorf("step %d (%s at %v): answer %+v, want %d with Retry-After %s", i, s.sub, s.at, h.local, s.wantStatus, s.wantRetry)
		}
	}
	if got := h.counts["directpipe_handshake_denied_rate_limited"]; got != 3 {
		t.Errorf("rate_limited counted %d times, want 3", got)
	}
}

// TestTCPHandshakeRate: in tcp mode the second handshake of an identity
// over a burst of 1 goes to the deny listener as rate_limited, with its
// Retry-After for the answer.
func TestTCPHandshakeRate(t *testing.T) {
	doc := policyDoc()
	doc["handshake_rate"] = map[string]any{"per_second": 0.5, "burst": 1}
	g := NewTCP()
	shared := map[string]sharedValue{}
	head := upgrade("/v1/a", "Authorization: Bearer "+token(t, goodClaims()))
	clock := func() time.Time { return now }
	for i, want := range []string{"allow", "deny:rate_limited"} {
		h := newFakeHost(mustJSON(t, doc))
		h.shared = shared // one Envoy: every connection sees the same data
		if !g.Configure(h, rootID) {
			t.Fatalf("configuration refused: %q", h.logs)
		}
		id := streamID + uint32(i)
		g.ContextCreate(id, rootID, now)
		g.NewConnection(h, id)
		h.data = []byte(head)
		g.DownstreamData(h, id, uint32(len(head)), false, clock)
		checkVerdict(t, h, want, "")
		if want != "allow" && !strings.Contains(string(h.data), contract.RetryAfterHeader+": 2\r\n") {
			t.Errorf("deny request without its Retry-After:\n%s", h.data)
		}
		shared = h.shared
	}
}
