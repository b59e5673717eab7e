package gate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// quotaEntries counts the quota entries of an Envoy's shared data.
func quotaEntries(d *sharedData) (streams, rate, alive, other int) {
	for k := range d.entries {
		switch {
		case strings.HasPrefix(k, streamsTable):
			streams++
		case strings.HasPrefix(k, rateTable):
			rate++
		case strings.HasPrefix(k, aliveTable):
			alive++
		default:
			other++
		}
	}
	return
}

// TestQuotaTableBounded: many more identities than the table has slots
// open a stream, make a handshake, and close the stream again; the
// Envoy's shared data never holds more than the two tables' slots (plus
// the gauge budget and the sweep's cursor), and the gauges stop at
// their budget.
func TestQuotaTableBounded(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 1, "handshakes": map[string]any{"per_second": 1000, "burst": 1}})
	g := NewHTTP()
	if h := newFakeHost(cfg); !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	shared := &sharedData{entries: map[string]sharedEntry{}}
	identities := 3 * contract.QuotaSlots
	at := now
	for i := range identities {
		id := uint32(100 + i)
		// Each identity's bucket is full again 1 ms later (1000/s, burst
		// 1), so its slot may be taken by the next.
		at = at.Add(time.Millisecond)
		if r := open(t, g, shared, id, fmt.Sprintf("caller-%d", i), at); r != nil {
			t.Fatalf("identity %d refused: %+v", i, r)
		}
		g.Delete(newFakeHostShared(shared), id)
	}
	streams, rate, alive, other := quotaEntries(shared)
	t.Logf("%d identities: %d stream entries, %d rate entries, %d alive entries, %d other", identities, streams, rate, alive, other)
	if streams > contract.QuotaSlots || rate > contract.QuotaSlots || alive != 1 || other > 2 { // others: the gauge budget, the sweep's cursor
		t.Fatalf("%d stream, %d rate and %d alive entries (and %d others) after %d identities; the bound is %d each, one alive entry for the one VM", streams, rate, alive, other, identities, contract.QuotaSlots)
	}
	gauges := 0
	for name, v := range shared.gauges {
		if v != 0 {
			t.Errorf("gauge %s is %d with no stream open", name, v)
		}
		if strings.HasPrefix(name, contract.MetricQuotaLivePrefix) {
			gauges++
		}
	}
	if gauges != contract.MaxIdentityGauges {
		t.Fatalf("%d identity gauges, want the budget, %d", gauges, contract.MaxIdentityGauges)
	}
	if g.quota.Held() != 0 || len(g.quota.gauged) > contract.MaxIdentityGauges {
		t.Fatalf("worker holds %d streams and knows %d gauges", g.quota.Held(), len(g.quota.gauged))
	}
}

func newFakeHostShared(d *sharedData) *fakeHost {
	h := newFakeHost("")
	h.sharedData = d
	return h
}

// collidingIdentities returns n identities other than first whose
// probes start at the same slot as first's under policy "voice".
func collidingIdentities(first string, n int) []string {
	want := slotOf("voice/" + first)
	var out []string
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("c%d", i)
		if slotOf("voice/"+id) == want {
			out = append(out, id)
		}
	}
	return out
}

// TestQuotaTableCollision: an identity whose every slot holds another
// identity's live streams is refused (stream_quota, never let through
// uncounted); once one of those streams ends, it takes that slot.
func TestQuotaTableCollision(t *testing.T) {
	g := NewHTTP()
	if h := newFakeHost(quotaConfig(t, map[string]any{"max_streams": 2})); !g.Configure(h, rootID) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	shared := &sharedData{entries: map[string]sharedEntry{}}
	others := collidingIdentities("alice", contract.QuotaProbe)
	for i, o := range others {
		if r := open(t, g, shared, uint32(10+i), o, now); r != nil {
			t.Fatalf("%s refused: %+v", o, r)
		}
	}
	r := open(t, g, shared, 100, "alice", now)
	if r == nil || r.status != 429 || r.details != contract.LocalReplyDetailPrefix+contract.ReasonStreamQuota {
		t.Fatalf("alice with every slot taken: %+v, want 429 stream_quota", r)
	}
	// A slot whose identity still has a stream stays its own: the others
	// get their second stream in their slot.
	if r := open(t, g, shared, 200, others[3], now); r != nil {
		t.Fatalf("%s's second stream refused: %+v", others[3], r)
	}
	g.Delete(newFakeHostShared(shared), 10+5)
	if r := open(t, g, shared, 101, "alice", now); r != nil {
		t.Fatalf("alice after a slot was freed: %+v", r)
	}
	if r := open(t, g, shared, 102, "alice", now); r != nil {
		t.Fatalf("alice's second stream: %+v", r)
	}
	if r := open(t, g, shared, 103, "alice", now); r == nil {
		t.Fatal("alice past her quota of 2 let through")
	}
	if r := open(t, g, shared, 104, others[5], now); r == nil || r.status != 429 {
		t.Fatalf("%s, whose slot alice took, with every slot taken: %+v", others[5], r)
	}
}

// TestQuotaGauges: each identity's live streams on the Envoy are a gauge
// (both workers adding to it), escaped for a stat name; past the Envoy's
// budget of gauges streams are counted by the unlabelled one.
func TestQuotaGauges(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 5})
	w1, w2 := NewHTTP(), NewHTTP()
	for _, g := range []*HTTP{w1, w2} {
		if h := newFakeHost(cfg); !g.Configure(h, rootID) {
			t.Fatalf("configuration refused: %q", h.logs)
		}
	}
	shared := &sharedData{entries: map[string]sharedEntry{}}
	open(t, w1, shared, 10, "tenant.a/user 1", now)
	open(t, w2, shared, 10, "tenant.a/user 1", now)
	open(t, w2, shared, 11, "tenant.a/user 1", now)
	name := contract.MetricQuotaLivePrefix + "voice.tenant_2ea_2fuser_201"
	if v := shared.gauges[name]; v != 3 {
		t.Fatalf("gauge %s = %d, want 3 (gauges %v)", name, v, shared.gauges)
	}
	if id, ok := contract.UnescapeStatName("tenant_2ea_2fuser_201"); !ok || id != "tenant.a/user 1" {
		t.Fatalf("unescaped %q, %v", id, ok)
	}
	w2.Delete(newFakeHostShared(shared), 10)
	if v := shared.gauges[name]; v != 2 {
		t.Fatalf("gauge after a stream ended: %d, want 2", v)
	}
	shared.entries[gaugeBudget] = sharedEntry{value: []byte(fmt.Sprint(contract.MaxIdentityGauges)), cas: 1000}
	open(t, w1, shared, 20, "late", now)
	if v := shared.gauges[contract.MetricQuotaLiveUnlabelled]; v != 1 {
		t.Fatalf("unlabelled gauge %d, want 1 (gauges %v)", v, shared.gauges)
	}
	open(t, w1, shared, 21, "tenant.a/user 1", now) // its slot keeps its gauge
	if v := shared.gauges[name]; v != 3 {
		t.Fatalf("gauge %d, want 3", v)
	}
	w1.Delete(newFakeHostShared(shared), 20)
	if v := shared.gauges[contract.MetricQuotaLiveUnlabelled]; v != 0 {
		t.Fatalf("unlabelled gauge %d after its stream ended", v)
	}
}

// TestQuotaSplitByNode: an identity the control plane split admits, on
// each Envoy, the share given to that Envoy's node id, and the rest on
// the Envoys it does not name; other identities keep the even share.
func TestQuotaSplitByNode(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 2, "split": map[string]any{
		"alice": map[string]any{"rest": 1, "nodes": map[string]uint32{"edge-a": 3}},
	}})
	tests := []struct {
		node, sub string
		want      int
	}{
		{"edge-a", "alice", 3},
		{"edge-b", "alice", 1},
		{"edge-a", "bob", 2},
	}
	for _, tt := range tests {
		t.Run(tt.node+"/"+tt.sub, func(t *testing.T) {
			g := NewHTTP()
			if h := newFakeHost(cfg); !g.Configure(h, rootID) {
				t.Fatalf("configuration refused: %q", h.logs)
			}
			shared := &sharedData{entries: map[string]sharedEntry{}}
			admitted := 0
			for i := range 10 {
				if openOn(t, g, shared, tt.node, uint32(10+i), tt.sub, now) == nil {
					admitted++
				}
			}
			if admitted != tt.want {
				t.Fatalf("admitted %d, want %d", admitted, tt.want)
			}
		})
	}
}

// TestQuotaProbeStopsAtUnwritten: an identity's entry is never past a
// slot no one wrote, so finding or placing it in a table with room reads
// one slot, not the whole probe window.
func TestQuotaProbeStopsAtUnwritten(t *testing.T) {
	h := newFakeHostShared(&sharedData{entries: map[string]sharedEntry{}})
	noGauge := func() bool { return false }
	lv := &liveness{h: h, now: now, self: "0.self"}
	if _, _, ok, err := addStream(h, "voice/alice", 5, lv, noGauge); !ok || err != nil {
		t.Fatalf("add: %v %v", ok, err)
	}
	if _, _, ok, _ := addStream(h, "voice/alice", 5, lv, noGauge); !ok {
		t.Fatal("second add refused")
	}
	if h.sharedReads != 2 {
		t.Fatalf("%d reads for two streams of one identity, want 2", h.sharedReads)
	}
	// Behind others' entries at its slots, it is found past them.
	others := collidingIdentities("bob", 3)
	for _, o := range others {
		addStream(h, "voice/"+o, 5, lv, noGauge)
	}
	slot, _, ok, _ := addStream(h, "voice/bob", 5, lv, noGauge)
	again, _, ok2, _ := addStream(h, "voice/bob", 5, lv, noGauge)
	if !ok || !ok2 || slot != again || slot != (slotOf("voice/bob")+3)%contract.QuotaSlots {
		t.Fatalf("bob at slots %d and %d, want both %d", slot, again, (slotOf("voice/bob")+3)%contract.QuotaSlots)
	}
}

// TestQuotaTablesOutliveFailedVMs: VMs fail in waves while holding
// streams, many more VMs than the alive table has slots; one of each wave
// holds alice's one stream. Each wave admits her once the last wave has
// been silent for AliveTimeout, and the shared data stays within its
// tables: at most aliveSlots alive entries. Then a failed VM's streams of
// other identities fill every slot bob may use, and he takes one of them
// once that VM is silent. The gauges lose what the dead VMs added to
// them as their counts are dropped.
func TestQuotaTablesOutliveFailedVMs(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 1})
	worker := func() *HTTP { return configuredHTTP(t, cfg) }
	shared := &sharedData{entries: map[string]sharedEntry{}}
	const waves, perWave = 6, aliveSlots / 2
	at := now
	for w := range waves {
		for i := range perWave {
			sub := fmt.Sprintf("caller-%d-%d", w, i)
			if i == 0 {
				sub = "alice"
			}
			if r := open(t, worker(), shared, 10, sub, at); r != nil {
				t.Fatalf("wave %d: %s refused: %+v", w, sub, r)
			}
		}
		if r := open(t, worker(), shared, 11, "alice", at.Add(AliveTimeout)); r == nil || r.status != 429 {
			t.Fatalf("wave %d: alice's second stream while her first one's VM is fresh: %+v, want 429", w, r)
		}
		// The wave's VMs fail here: they never give their streams back.
		at = at.Add(AliveTimeout + time.Second)
	}
	_, _, alive, _ := quotaEntries(shared)
	t.Logf("%d failed VMs: %d alive entries", waves*perWave, alive)
	if alive > aliveSlots {
		t.Fatalf("%d alive entries after %d VMs, want at most %d", alive, waves*perWave, aliveSlots)
	}
	// Each wave's admission of alice dropped the last wave's count of her
	// stream, and its addition to her gauge with it.
	if g := shared.gauges[gaugeOf("voice/alice", true)]; g != 1 {
		t.Fatalf("alice's gauge %d after %d waves of failed VMs, want 1 (the last wave's)", g, waves)
	}

	failed := worker()
	others := collidingIdentities("bob", contract.QuotaProbe)
	for i, o := range others {
		if r := open(t, failed, shared, uint32(10+i), o, at); r != nil {
			t.Fatalf("%s refused: %+v", o, r)
		}
	}
	g := worker()
	if r := open(t, g, shared, 10, "bob", at); r == nil || r.status != 429 {
		t.Fatalf("bob with every slot holding live streams: %+v, want 429", r)
	}
	if r := open(t, g, shared, 10, "bob", at.Add(AliveTimeout+time.Second)); r != nil {
		t.Fatalf("bob once the VM holding his slots went silent: %+v", r)
	}
	// He took the first slot, others[0]'s, whose gauge the dead VM's
	// stream leaves.
	for sub, want := range map[string]int64{"bob": 1, others[0]: 0, others[1]: 1} {
		if g := shared.gauges[gaugeOf("voice/"+sub, true)]; g != want {
			t.Errorf("%s's gauge %d, want %d", sub, g, want)
		}
	}
}
