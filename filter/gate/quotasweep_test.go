package gate

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// TestSweepDropsFailedVMCounts: a worker's VM fails while it counts
// alice's and bob's streams; another worker's VM, which holds one of
// alice's, lives on. Ticks alone, with no new admission, take the failed
// VM's streams off the table and the gauges once it has been silent for
// AliveTimeout, and not before; every tick stays within its bound, the
// workers' ticks share one pass, and an Envoy that never counted a
// stream under a quota pays one read a tick.
func TestSweepDropsFailedVMCounts(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 5})
	module := func() *Module {
		m := NewModule()
		h := newFakeHost(cfg)
		h.rootID = "directpipe.handshake"
		if !m.Configure(h, rootID) {
			t.Fatalf("configuration refused: %q", h.logs)
		}
		return m
	}
	alice, bob := gaugeOf("voice/alice", true), gaugeOf("voice/bob", true)
	pass := (contract.QuotaSlots + sweepPerTick - 1) / sweepPerTick
	for _, tc := range []struct {
		name    string
		streams bool          // the failed and the live VM open streams at now
		at      time.Duration // when the ticks run, after now
		workers int           // modules whose ticks take turns
		ticks   int
		want    map[string]int64
		// wantReads bounds the shared-data reads of one tick.
		wantReads int
	}{
		{name: "no quota counted on this Envoy", at: AliveTimeout + time.Second, workers: 1, ticks: 3,
			want: map[string]int64{}, wantReads: 1},
		{name: "failed VM still fresh", streams: true, at: time.Second, workers: 1, ticks: pass,
			want: map[string]int64{alice: 3, bob: 1}, wantReads: sweepPerTick + 4},
		{name: "failed VM silent, one worker", streams: true, at: AliveTimeout + time.Second, workers: 1, ticks: pass,
			want: map[string]int64{alice: 1, bob: 0}, wantReads: sweepPerTick + 4},
		{name: "failed VM silent, two workers share the pass", streams: true, at: AliveTimeout + time.Second, workers: 2, ticks: pass,
			want: map[string]int64{alice: 1, bob: 0}, wantReads: sweepPerTick + 4},
		{name: "failed VM silent, pass not begun", streams: true, at: AliveTimeout + time.Second, workers: 1, ticks: 0,
			want: map[string]int64{alice: 3, bob: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared := &sharedData{entries: map[string]sharedEntry{}}
			live := module()
			if tc.streams {
				failed := module()
				for i, sub := range []string{"alice", "alice", "bob"} {
					if r := open(t, failed.HTTP, shared, uint32(10+i), sub, now); r != nil {
						t.Fatalf("%s refused: %+v", sub, r)
					}
				}
				if r := open(t, live.HTTP, shared, 20, "alice", now); r != nil {
					t.Fatalf("alice on the live VM refused: %+v", r)
				}
				// failed's VM fails here: Envoy never calls it again.
			}
			workers := []*Module{live}
			for range tc.workers - 1 {
				workers = append(workers, module())
			}
			at := now.Add(tc.at)
			for i := range tc.ticks {
				h := newFakeHostShared(shared)
				workers[i%len(workers)].Tick(h, rootID, at)
				if h.sharedReads > tc.wantReads {
					t.Fatalf("tick %d read shared data %d times, bound %d", i, h.sharedReads, tc.wantReads)
				}
				if tc.wantReads == 1 && len(shared.entries) != 0 {
					t.Fatalf("tick %d wrote shared data: %v", i, shared.entries)
				}
			}
			for name, want := range tc.want {
				if got := shared.gauges[name]; got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			if !tc.streams {
				return
			}
			// What the table counts agrees with the gauges: the live
			// VM's stream ends and alice is back to 0 everywhere.
			live.HTTP.Delete(newFakeHostShared(shared), 20)
			if got, want := shared.gauges[alice], tc.want[alice]-1; got != want {
				t.Errorf("after the live stream ended %s = %d, want %d", alice, got, want)
			}
			if tc.want[bob] == 0 {
				for k, e := range shared.entries {
					if strings.HasPrefix(k, streamsTable) && !strings.HasPrefix(string(e.value), "-"+fieldSep) {
						t.Errorf("%s still counts %q", k, e.value)
					}
				}
			}
		})
	}
}

// TestSweepCursorGarbled: a cursor that does not parse restarts the pass
// instead of stopping it.
func TestSweepCursorGarbled(t *testing.T) {
	h := newFakeHost("")
	h.SetSharedData(sweepCursor, []byte("not a slot"), 0)
	sweepDead(h, now)
	if v, _, _ := h.SharedData(sweepCursor); string(v) != strconv.Itoa(sweepPerTick%contract.QuotaSlots) {
		t.Fatalf("cursor %q after a garbled one, want the next stretch", v)
	}
}

// TestSweepRacesAnAdmission: the sweep and an admission of the same
// identity on another worker both find a failed VM's streams in one
// entry; the admission writes first. Only the write that drops the
// streams takes them off the gauge, so the gauge ends at the one stream
// the admission added, not below it. A sweep that always loses the race
// gives up on that tick and says so.
func TestSweepRacesAnAdmission(t *testing.T) {
	cfg := quotaConfig(t, map[string]any{"max_streams": 5})
	worker := func() *HTTP { return configuredHTTP(t, cfg) }
	shared := &sharedData{entries: map[string]sharedEntry{}}
	failed := worker()
	for i := range 2 {
		if r := open(t, failed, shared, uint32(10+i), "alice", now); r != nil {
			t.Fatalf("alice refused: %+v", r)
		}
	}
	later := now.Add(AliveTimeout + time.Second)
	slot := failed.quota.held[10].slot
	key := slotKey(streamsTable, slot)
	// Start the pass at alice's slot.
	shared.entries[sweepCursor] = sharedEntry{value: []byte(strconv.FormatUint(uint64(slot), 10)), cas: 1}
	h := newFakeHostShared(shared)
	other, raced := worker(), false
	h.beforeSet = func(k string) {
		if k != key || raced {
			return
		}
		raced = true
		if r := open(t, other, shared, 20, "alice", later); r != nil {
			t.Fatalf("alice on another worker refused: %+v", r)
		}
	}
	sweepDead(h, later)
	if !raced {
		t.Fatal("the sweep never wrote alice's slot")
	}
	alice := gaugeOf("voice/alice", true)
	if got := shared.gauges[alice]; got != 1 {
		t.Fatalf("%s = %d after the race, want 1 (the new stream)", alice, got)
	}

	// A sweep that always loses the race gives up rather than loop.
	for i := range 2 {
		if r := open(t, failed, shared, uint32(30+i), "bob", later); r != nil {
			t.Fatalf("bob refused: %+v", r)
		}
	}
	bobKey := slotKey(streamsTable, failed.quota.held[30].slot)
	shared.entries[sweepCursor] = sharedEntry{value: []byte(strconv.FormatUint(uint64(failed.quota.held[30].slot), 10)), cas: 1}
	h = newFakeHostShared(shared)
	h.beforeSet = func(k string) {
		if k != bobKey {
			return
		}
		shared.next++
		e := shared.entries[k]
		e.cas = shared.next
		shared.entries[k] = e
	}
	sweepDead(h, later.Add(AliveTimeout+time.Second))
	if len(h.logs) != 1 || !strings.Contains(h.logs[0], errCASExhausted.Error()) {
		t.Fatalf("logs %q, want one line about the exhausted retries", h.logs)
	}
	if got := shared.gauges[gaugeOf("voice/bob", true)]; got != 2 {
		t.Fatalf("bob's gauge %d after a sweep that never wrote, want 2", got)
	}
}
