package gate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// quotaConfig is the test policy with quotas, in the control plane's form.
func quotaConfig(t testing.TB, q map[string]any) string {
	p := policyDoc()
	p["quotas"] = q
	return mustJSON(t, map[string]any{"policies": map[string]any{"voice": p}})
}

// configuredHTTP is an HTTP plugin, one worker's, configured with cfg.
func configuredHTTP(t *testing.T, cfg string) *HTTP {
	t.Helper()
	g := NewHTTP()
	if h := newFakeHost(cfg); !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	return g
}

// open runs one handshake of subject sub as stream id on a fresh fake host
// that shares shared, and returns the local reply (nil: let through).
func open(t *testing.T, g *HTTP, shared *sharedData, id uint32, sub string, at time.Time) *localReply {
	t.Helper()
	return openOn(t, g, shared, "", id, sub, at)
}

// openOn is open on the Envoy whose node id is node.
func openOn(t *testing.T, g *HTTP, shared *sharedData, node string, id uint32, sub string, at time.Time) *localReply {
	t.Helper()
	h := newFakeHost("")
	h.node = node
	h.sharedData = shared
	h.route, h.routeFound = "voice", true
	tagged("voice")(h)
	c := goodClaims()
	c["sub"] = sub
	h.headers["authorization"] = "Bearer " + token(t, c)
	g.ContextCreate(id, rootID)
	g.RequestHeaders(h, id, at)
	return h.local
}

// TestHTTPStreamQuota: an identity is refused at its quota, 429 with
// Retry-After; a tier lifts it for one identity; another identity is not
// affected; a stream's end frees its place, and two workers (two gates
// over one shared data) count together.
func TestHTTPStreamQuota(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 2, "identities": map[string]uint32{"gold": 3, "free": 0}})
	shared := &sharedData{entries: map[string]sharedEntry{}}
	w1, w2 := NewHTTP(), NewHTTP()
	for _, g := range []*HTTP{w1, w2} {
		if h := newFakeHost(cfg); !g.Configure(h, rootID) {
			t.Fatalf("configuration refused: %q", h.logs)
		}
	}
	if r := open(t, w1, shared, 10, "alice", now); r != nil {
		t.Fatalf("first stream refused: %+v", r)
	}
	if r := open(t, w2, shared, 10, "alice", now); r != nil {
		t.Fatalf("second stream (other worker) refused: %+v", r)
	}
	r := open(t, w1, shared, 11, "alice", now)
	if r == nil || r.status != 429 || r.headers["retry-after"] != strconv.Itoa(contract.RetryAfterSeconds) || r.details != contract.LocalReplyDetailPrefix+contract.ReasonStreamQuota {
		t.Fatalf("third stream: %+v, want 429 stream_quota with Retry-After", r)
	}
	for i, sub := range []string{"bob", "bob", "gold", "gold", "gold"} {
		if r := open(t, w2, shared, uint32(20+i), sub, now); r != nil {
			t.Fatalf("%s's stream %d refused: %+v", sub, i, r)
		}
	}
	if r := open(t, w2, shared, 30, "gold", now); r == nil || r.status != 429 {
		t.Fatalf("gold's fourth stream: %+v, want 429", r)
	}
	for i := range 50 {
		if r := open(t, w1, shared, uint32(100+i), "free", now); r != nil {
			t.Fatalf("an identity without a limit refused: %+v", r)
		}
	}
	if w1.quota.Held() != 1 {
		t.Fatalf("worker 1 holds %d streams, want 1 (alice's; free has no limit)", w1.quota.Held())
	}
	// The stream ends on worker 2: alice may open one more, anywhere.
	h := newFakeHost("")
	h.sharedData = shared
	w2.Delete(h, 10)
	w2.Delete(h, 10) // a second delete gives nothing back again
	if r := open(t, w1, shared, 12, "alice", now); r != nil {
		t.Fatalf("stream after one ended refused: %+v", r)
	}
	if r := open(t, w1, shared, 13, "alice", now); r == nil || r.status != 429 {
		t.Fatalf("over quota again: %+v", r)
	}
}

// TestHTTPHandshakeRate: burst handshakes pass at once, the next is 429
// handshake_rate, and the bucket refills at per_second.
func TestHTTPHandshakeRate(t *testing.T) {
	g := NewHTTP()
	if h := newFakeHost(quotaConfig(t, map[string]any{"handshakes": map[string]any{"per_second": 2, "burst": 3}})); !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	shared := &sharedData{entries: map[string]sharedEntry{}}
	id := uint32(10)
	next := func(sub string, at time.Time) *localReply { id++; return open(t, g, shared, id, sub, at) }
	for i := range 3 {
		if r := next("alice", now); r != nil {
			t.Fatalf("handshake %d of the burst refused: %+v", i, r)
		}
	}
	r := next("alice", now)
	if r == nil || r.status != 429 || r.details != contract.LocalReplyDetailPrefix+contract.ReasonHandshakeRate || r.headers["retry-after"] == "" {
		t.Fatalf("over the burst: %+v, want 429 handshake_rate", r)
	}
	if r := next("bob", now); r != nil {
		t.Fatalf("another identity refused: %+v", r)
	}
	if r := next("alice", now.Add(400*time.Millisecond)); r == nil {
		t.Fatal("after 400 ms at 2/s (0.8 token) let through")
	}
	if r := next("alice", now.Add(500*time.Millisecond)); r != nil {
		t.Fatalf("after 500 ms at 2/s (one token) refused: %+v", r)
	}
}

func TestTakeToken(t *testing.T) {
	tests := []struct {
		name  string
		rate  contract.Rate
		steps []time.Duration // offsets from now of each handshake
		want  []bool
	}{
		{"burst defaults to the rate", contract.Rate{PerSecond: 2}, []time.Duration{0, 0, 0}, []bool{true, true, false}},
		{"refills at the rate", contract.Rate{PerSecond: 2, Burst: 1}, []time.Duration{0, 0, 499 * time.Millisecond, 500 * time.Millisecond}, []bool{true, false, false, true}},
		{"partial milliseconds are kept", contract.Rate{PerSecond: 1, Burst: 1}, []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond, 1000 * time.Millisecond}, []bool{true, false, false, true}},
		{"a long pause refills only the burst", contract.Rate{PerSecond: 1, Burst: 2}, []time.Duration{0, 0, time.Hour, time.Hour, time.Hour}, []bool{true, true, true, true, false}},
		{"the clock going back takes nothing", contract.Rate{PerSecond: 1, Burst: 1}, []time.Duration{0, -time.Second}, []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost("")
			for i, d := range tt.steps {
				got, err := takeToken(h, "k", &tt.rate, now.Add(d))
				if err != nil || got != tt.want[i] {
					t.Fatalf("handshake %d at %v: %v, %v; want %v", i, d, got, err, tt.want[i])
				}
			}
		})
	}
}

func TestAddStreamRaces(t *testing.T) {
	h := newFakeHost("")
	h.sharedData = &sharedData{entries: map[string]sharedEntry{}}
	noGauge := func() bool { return false }
	q, other := NewQuota(), NewQuota()
	for _, w := range []*Quota{q, other} {
		if err := w.alive(h, now); err != nil {
			t.Fatal(err)
		}
	}
	lv := &liveness{h: h, now: now, self: q.instance}
	slot, _, ok, err := addStream(h, "p/k", 3, lv, noGauge)
	if !ok || err != nil {
		t.Fatalf("first add: %v, %v", ok, err)
	}
	key := slotKey(streamsTable, slot)
	// Another worker adds one between this worker's read and write, twice:
	// the write fails on the token, and the update is made again on top.
	races := 2
	h.beforeSet = func(k string) {
		if races == 0 || k != key {
			return
		}
		races--
		f := strings.SplitN(string(h.sharedData.entries[key].value), fieldSep, streamsFields)
		c := parseCounts(f[0])
		c[other.instance]++
		h.sharedData.next++
		h.sharedData.entries[key] = sharedEntry{value: streamsEntry(c, false, "p/k"), cas: h.sharedData.next}
	}
	if _, _, ok, err := addStream(h, "p/k", 4, lv, noGauge); !ok || err != nil {
		t.Fatalf("add: %v, %v", ok, err)
	}
	want := fmt.Sprintf("%s=2,%s=2 0 p/k", q.instance, other.instance)
	if q.instance > other.instance {
		want = fmt.Sprintf("%s=2,%s=2 0 p/k", other.instance, q.instance)
	}
	if v := string(h.sharedData.entries[key].value); v != want {
		t.Fatalf("entry %q, want %q: 4 streams, two from the other worker", v, want)
	}
	if _, _, ok, _ := addStream(h, "p/k", 4, lv, noGauge); ok {
		t.Fatal("added past the limit")
	}
	for range 6 {
		releaseStream(h, slot, "p/k", q.instance)
	}
	if v := string(h.sharedData.entries[key].value); v != other.instance+"=2 0 p/k" {
		t.Fatalf("entry %q after giving back more than held, want the other worker's 2 only", v)
	}
	// A worker that always loses the race gives up rather than loop.
	h.beforeSet = func(key string) {
		h.sharedData.next++
		e := h.sharedData.entries[key]
		e.cas = h.sharedData.next
		h.sharedData.entries[key] = e
	}
	if _, _, _, err := addStream(h, "p/k", 3, lv, noGauge); !errors.Is(err, errCASExhausted) {
		t.Fatalf("endless races: %v", err)
	}
	h.beforeSet, h.errShared = nil, errors.New("host refused")
	if _, _, _, err := addStream(h, "p/k", 3, lv, noGauge); err == nil {
		t.Fatal("a host error was not reported")
	}
}

// TestFailedVMCountsExpire: a worker's VM fails while its streams are
// counted (Envoy never calls it again, so it gives none back). Its
// replacement is refused while the counts are fresh, and admitted once
// the dead instance has been silent for AliveTimeout; a live instance
// that keeps saying so keeps its streams counted.
func TestFailedVMCountsExpire(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 2})
	shared := &sharedData{entries: map[string]sharedEntry{}}
	worker := func() *HTTP { return configuredHTTP(t, cfg) }
	failed, live := worker(), worker()
	if r := open(t, failed, shared, 10, "alice", now); r != nil {
		t.Fatalf("first stream refused: %+v", r)
	}
	if r := open(t, live, shared, 11, "alice", now); r != nil {
		t.Fatalf("second stream refused: %+v", r)
	}
	// The first worker's VM fails here; its replacement starts.
	reloaded := worker()
	if r := open(t, reloaded, shared, 12, "alice", now.Add(time.Second)); r == nil || r.status != 429 {
		t.Fatalf("while the failed VM's count is fresh: %+v, want 429", r)
	}
	// The live worker keeps saying it is alive; the failed one cannot.
	later := now.Add(AliveTimeout + 2*time.Second)
	lh := newFakeHost("")
	lh.sharedData = shared
	for at := now; !at.After(later); at = at.Add(AliveRefresh) {
		live.Refresh(lh, at)
	}
	if r := open(t, reloaded, shared, 12, "alice", later); r != nil {
		t.Fatalf("after the failed VM went silent: %+v, want admitted", r)
	}
	if r := open(t, reloaded, shared, 13, "alice", later); r == nil || r.status != 429 {
		t.Fatalf("the live worker's stream no longer counts: %+v, want 429", r)
	}
}

// TestTCPStreamQuota: over its quota a tcp connection goes to the deny
// listener's stream_quota answer, and its end frees the place.
func TestTCPStreamQuota(t *testing.T) {
	p := policyDoc()
	p["quotas"] = map[string]any{"max_streams": 1}
	g := NewTCP()
	shared := &sharedData{entries: map[string]sharedEntry{}}
	h := newFakeHost(mustJSON(t, p))
	h.sharedData = shared
	if !g.Configure(h, rootID, tcpPlugin) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	connect := func(id uint32) *fakeHost {
		h := newFakeHost("")
		h.sharedData = shared
		g.ContextCreate(id, rootID, now)
		g.NewConnection(h, id)
		h.data = []byte(upgrade("/v1/a", "Authorization: Bearer "+token(t, goodClaims())))
		g.DownstreamData(h, id, uint32(len(h.data)), false, clock)
		return h
	}
	if h := connect(10); h.counts[contract.MetricTCPAllowed] != 1 {
		t.Fatalf("first connection: counts %v", h.counts)
	}
	h = connect(11)
	if h.counts[contract.MetricTCPDeniedPrefix+contract.ReasonStreamQuota] != 1 || h.filterState[tcpClusterState] != contract.DenyCluster {
		t.Fatalf("second connection: counts %v, state %v", h.counts, h.filterState)
	}
	g.Delete(h, 11) // a refused connection held nothing
	g.Delete(h, 10)
	if h := connect(12); h.counts[contract.MetricTCPAllowed] != 1 {
		t.Fatalf("after the first ended: counts %v", h.counts)
	}
}

// TestQuotaRefusalsByIdentity: refusals are counted per identity for the
// first identities refused, made safe for a stat name, and under "other"
// past the bound.
func TestQuotaRefusalsByIdentity(t *testing.T) {
	g := NewHTTP()
	if h := newFakeHost(quotaConfig(t, map[string]any{"max_streams": 1})); !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	shared := &sharedData{entries: map[string]sharedEntry{}}
	counts := map[string]int{}
	id := uint32(10)
	refuse := func(sub string) {
		for range 2 { // the first is admitted, the second refused
			id++
			h := newFakeHost("")
			h.sharedData = shared
			h.route, h.routeFound = "voice", true
			tagged("voice")(h)
			c := goodClaims()
			c["sub"] = sub
			h.headers["authorization"] = "Bearer " + token(t, c)
			g.ContextCreate(id, rootID)
			g.RequestHeaders(h, id, now)
			for k, v := range h.counts {
				counts[k] += v
			}
		}
	}
	refuse("tenant.a/user 1")
	refuse("tenant.a/user 1")
	if n := counts[contract.MetricQuotaDeniedPrefix+contract.ReasonStreamQuota+".tenant_a_user_1"]; n != 3 {
		t.Fatalf("refusals of one identity: %d, want 3 (counters %v)", n, counts)
	}
	for i := range contract.MaxIdentityMetrics + 5 {
		refuse("caller-" + strconv.Itoa(i))
	}
	other := counts[contract.MetricQuotaDeniedPrefix+contract.ReasonStreamQuota+"."+contract.QuotaOtherIdentity]
	if other != 6 {
		t.Fatalf("refusals counted as other: %d, want 6 (the bound is %d identities)", other, contract.MaxIdentityMetrics)
	}
	if len(g.quota.labelled) != contract.MaxIdentityMetrics {
		t.Fatalf("%d identities labelled, want %d", len(g.quota.labelled), contract.MaxIdentityMetrics)
	}
}
