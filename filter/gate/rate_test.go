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

// TestHTTPStreamQuota: an identity holds at most max_streams streams open
// through one Envoy; the end of one (its context deleted) frees a place;
// overrides raise or remove an identity's quota.
func TestHTTPStreamQuota(t *testing.T) {
	doc := policyDoc()
	doc["max_streams"] = 2
	doc["max_streams_by_identity"] = map[string]int{"vip": 3, "suspended": 0}
	cfg := mustJSON(t, map[string]any{"policies": map[string]any{"voice": doc}})
	g := NewHTTP()
	h := newFakeHost(cfg)
	if !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	next := uint32(streamID)
	open := func(sub string) (uint32, *localReply) {
		next++
		g.ContextCreate(next, rootID)
		h.route, h.routeFound = "voice", true
		h.routePolicy, h.routeTagged = "voice", true
		h.local = nil
		claims := goodClaims()
		claims["sub"] = sub
		h.headers = map[string]string{":path": "/v1/a", "authorization": "Bearer " + token(t, claims)}
		g.RequestHeaders(h, next, now)
		return next, h.local
	}
	first, _ := open("alice")
	if _, refused := open("alice"); refused != nil {
		t.Fatalf("alice's 2nd stream refused: %+v", refused)
	}
	if _, refused := open("alice"); refused == nil || refused.status != 429 || !strings.Contains(refused.body, "stream_quota") || refused.headers["retry-after"] != "5" {
		t.Fatalf("alice's 3rd stream: %+v, want 429 stream_quota with Retry-After 5", refused)
	}
	g.Delete(h, first) // one of her calls ends
	if _, refused := open("alice"); refused != nil {
		t.Fatalf("after a stream ended, alice was refused: %+v", refused)
	}
	for i := range 3 {
		if _, refused := open("vip"); refused != nil {
			t.Fatalf("vip's stream %d of 3 refused: %+v", i+1, refused)
		}
	}
	if _, refused := open("suspended"); refused == nil || refused.status != 429 {
		t.Fatalf("an identity with a quota of 0 was let in: %+v", refused)
	}
}
