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
// from. Only runWeights changes them: every other push (an apply, a drain,
// a key) serves the same weights again, so the rate limit holds.
type weighing struct {
	mu   sync.Mutex
	live map[string]map[string]uint64
}

func (w *weighing) current() map[string]map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live
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
	cur := a.weighing.current()
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
		if !maps.Equal(translate.StreamWeights(b, live, d), translate.StreamWeights(b, cur[b.GetName()], d)) {
			changed = true
		}
	}
	if changed {
		a.weighing.mu.Lock()
		a.weighing.live = next
		a.weighing.mu.Unlock()
		a.log.Debug("least_streams weights move", "live", next)
	}
	return changed
}
