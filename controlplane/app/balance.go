package app

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// weighInterval is how often least_streams weights are computed again from
// the fleet's counts: at most one EDS push a second, and none when no
// weight moved, however often the counts do.
const weighInterval = time.Second

// weighing holds the live counts the served least_streams weights come
// from, and the batches rebalances expect. Only runWeights and Rebalance
// change them: every other push (an apply, a drain, a key) serves the same
// weights again, so the rate limit holds.
type weighing struct {
	mu   sync.Mutex
	live map[string]map[string]uint64
	// served are the batches the served weights place; expected, until
	// when each rebalance's reconnects should have landed.
	served   map[string]int
	expected map[string]expectedBatch
}

type expectedBatch struct {
	streams int
	until   time.Time
}

func (w *weighing) current() (map[string]map[string]uint64, map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live, w.served
}

// expect makes the weights of backend place n reconnecting streams until
// the time given, instead of an average batch.
func (w *weighing) expect(backend string, n int, until time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.expected == nil {
		w.expected = map[string]expectedBatch{}
	}
	w.expected[backend] = expectedBatch{streams: n, until: until}
}

// batches are the batches expected now; those past are forgotten.
func (w *weighing) batches(now time.Time) map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for b, e := range w.expected {
		if now.After(e.until) {
			delete(w.expected, b)
			continue
		}
		out[b] = e.streams
	}
	return out
}

// runWeights serves new EDS weights to least_streams back ends when the
// fleet's counts move them. Only EDS changes: no listener, route or
// cluster, so no connection is drained and no stream is touched.
func (a *App) runWeights(ctx context.Context) {
	tick := time.NewTicker(weighInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.mu.Lock()
		if a.weighStreams() {
			a.serveAgain(ctx, "stream weights")
		}
		a.mu.Unlock()
	}
}

// weighStreams takes the fleet's counts for the served policy's
// least_streams back ends, and reports whether the weights they give
// differ from the served ones (then they are the ones served next); a.mu
// is held.
func (a *App) weighStreams() bool {
	counts, _ := a.fleetCounts()
	drains := a.drains.phases()
	cur, curBatches := a.weighing.current()
	batches := a.weighing.batches(time.Now())
	next := map[string]map[string]uint64{}
	changed := false
	for _, b := range a.served.Policy.GetBackends() {
		if b.GetLb() != policy.LBLeastStreams {
			continue
		}
		live := map[string]uint64{}
		for _, ep := range b.GetEndpoints() {
			if n := streams.Live(counts, b.GetName(), ep); n > 0 {
				live[ep] = n
			}
		}
		next[b.GetName()] = live
		d := drains[b.GetName()]
		if !maps.Equal(translate.StreamWeights(b, live, d, batches[b.GetName()]), translate.StreamWeights(b, cur[b.GetName()], d, curBatches[b.GetName()])) {
			changed = true
		}
	}
	if changed {
		a.weighing.mu.Lock()
		a.weighing.live, a.weighing.served = next, batches
		a.weighing.mu.Unlock()
		a.log.Debug("least_streams weights move", "live", next)
	}
	return changed
}
