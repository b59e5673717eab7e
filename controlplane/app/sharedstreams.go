package app

import (
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/directpipe/directpipe/controlplane/nodestats"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// With a shared store, replicas share what they receive so that any of
// them answers for the whole fleet and all serve the same EDS:
//   - streams/<replica> holds the counts of the Envoys that report load to
//     that replica (and, from their stats, their identities' streams
//     under quotas), with the time they were written: a replica that
//     stopped writing (dead, or cut off from the store) counts for nothing
//     after streamsStale;
//   - drains/<backend>/<endpoint> holds one drain; an empty value is a
//     cancelled one. Any replica starts or cancels a drain; the replica
//     elected for drains moves them on (out of EDS at no stream or at the
//     deadline), looking at the whole fleet's counts.
const (
	streamsValuePrefix = "streams/"
	drainsValuePrefix  = "drains/"
	drainsElection     = "drains"
	// streamsPublishInterval is how often a replica writes its counts,
	// changed or not (the time in the value says they are fresh).
	streamsPublishInterval = 2 * time.Second
	streamsStale           = 5 * streamsPublishInterval
	// maxSharedCounts bounds what one replica's value may hold.
	maxSharedCounts = 10_000
)

// sharedCounts is one replica's stored counts.
type sharedCounts struct {
	At     time.Time       `json:"at"`
	Counts []streams.Count `json:"counts"`
	Nodes  []string        `json:"nodes"`
	// Quota is where identities' streams under quotas are, by node, as
	// the nodes' stats show them.
	Quota map[string]nodestats.QuotaUse `json:"quota,omitempty"`
}

// fleetStreams holds the other replicas' counts.
type fleetStreams struct {
	mu       sync.Mutex
	replicas map[string]sharedCounts
	// leading is set while this replica moves drains on.
	leading bool
}

// storedDrain is a drain as replicas share it.
type storedDrain struct {
	Backend  string    `json:"backend"`
	Endpoint string    `json:"endpoint"`
	Drained  bool      `json:"drained,omitempty"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	Ended    time.Time `json:"ended,omitzero"`
	EndedBy  string    `json:"ended_by,omitempty"`
}

func drainKey(backend, endpoint string) string {
	return drainsValuePrefix + url.PathEscape(backend) + "/" + url.PathEscape(endpoint)
}

// fleetCounts are this replica's counts and, with a shared store, the
// other replicas' fresh ones (a node counted here wins over the same node
// elsewhere), and the nodes that report.
func (a *App) fleetCounts() ([]streams.Count, []string) {
	counts, nodes := a.streams.Counts(), a.streams.Nodes()
	if !a.shared {
		return counts, nodes
	}
	local := map[string]bool{}
	for _, n := range nodes {
		local[n] = true
	}
	a.fleetStreams.mu.Lock()
	defer a.fleetStreams.mu.Unlock()
	for r, sc := range a.fleetStreams.replicas {
		if r == a.cfg.Replica || time.Since(sc.At) > streamsStale {
			continue
		}
		for _, c := range sc.Counts {
			if !local[c.Node] {
				counts = append(counts, c)
			}
		}
		for _, n := range sc.Nodes {
			if !local[n] {
				local[n] = true
				nodes = append(nodes, n)
			}
		}
	}
	streams.Sort(counts)
	return counts, nodes
}

// fleetQuotaUse is this replica's nodes' streams under quotas and, with a
// shared store, the other replicas' fresh ones (a node here wins over the
// same node elsewhere), so that every replica splits quotas alike.
func (a *App) fleetQuotaUse() map[string]nodestats.QuotaUse {
	use := a.nodeStats.QuotaUse()
	if !a.shared {
		return use
	}
	a.fleetStreams.mu.Lock()
	defer a.fleetStreams.mu.Unlock()
	for r, sc := range a.fleetStreams.replicas {
		if r == a.cfg.Replica || time.Since(sc.At) > streamsStale {
			continue
		}
		for n, u := range sc.Quota {
			if _, ok := use[n]; !ok {
				use[n] = u
			}
		}
	}
	return use
}

// boundQuotaUse keeps at most maxSharedCounts identity counts, whole
// nodes at a time in node order, for one replica's stored value.
func boundQuotaUse(use map[string]nodestats.QuotaUse) map[string]nodestats.QuotaUse {
	out := map[string]nodestats.QuotaUse{}
	n := 0
	for _, node := range slices.Sorted(maps.Keys(use)) {
		u := use[node]
		size := 0
		for _, ids := range u.Live {
			size += len(ids)
		}
		if n+size > maxSharedCounts {
			break
		}
		n += size
		out[node] = u
	}
	return out
}

// fleetReportedSince is streams.ReportedSince over the fleet: the other
// replicas' values are written at least every streamsPublishInterval, so a
// value written after t plus one interval holds reports sent after t.
func (a *App) fleetReportedSince(t time.Time) bool {
	if !a.streams.ReportedSince(t) {
		return false
	}
	if !a.shared {
		return true
	}
	a.fleetStreams.mu.Lock()
	defer a.fleetStreams.mu.Unlock()
	for r, sc := range a.fleetStreams.replicas {
		if r == a.cfg.Replica || time.Since(sc.At) > streamsStale || len(sc.Nodes) == 0 {
			continue
		}
		if sc.At.Before(t.Add(a.streams.Interval())) {
			return false
		}
	}
	return true
}

// runSharedStreams writes this replica's counts, follows the others' and
// the stored drains, and campaigns to move drains on, until ctx ends.
func (a *App) runSharedStreams(ctx context.Context) {
	go func() {
		_ = a.cfg.Store.Lead(ctx, drainsElection, func(lctx context.Context) {
			a.setDrainLeader(true)
			<-lctx.Done()
			a.setDrainLeader(false)
		})
	}()
	go func() {
		tick := time.NewTicker(streamsPublishInterval)
		defer tick.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			counts := a.streams.Counts()
			if len(counts) > maxSharedCounts {
				counts = counts[:maxSharedCounts]
			}
			b, err := json.Marshal(sharedCounts{At: time.Now(), Counts: counts, Nodes: a.streams.Nodes(), Quota: boundQuotaUse(a.nodeStats.QuotaUse())})
			if err == nil {
				err = a.cfg.Store.PutValue(ctx, streamsValuePrefix+url.PathEscape(a.cfg.Replica), b)
			}
			if err != nil && !failing && ctx.Err() == nil {
				a.log.Warn("sharing stream counts through the store failed; retrying", "error", err)
			}
			failing = err != nil
		}
	}()
	_ = a.cfg.Store.WatchValues(ctx, func(name string, value []byte) {
		switch {
		case strings.HasPrefix(name, streamsValuePrefix):
			replica, err := url.PathUnescape(strings.TrimPrefix(name, streamsValuePrefix))
			var sc sharedCounts
			if err != nil || json.Unmarshal(value, &sc) != nil || len(sc.Counts) > maxSharedCounts || len(boundQuotaUse(sc.Quota)) != len(sc.Quota) {
				return
			}
			a.fleetStreams.mu.Lock()
			if a.fleetStreams.replicas == nil {
				a.fleetStreams.replicas = map[string]sharedCounts{}
			}
			a.fleetStreams.replicas[replica] = sc
			a.fleetStreams.mu.Unlock()
		case strings.HasPrefix(name, drainsValuePrefix):
			if a.applyStoredDrain(name, value) {
				a.mu.Lock()
				a.serveAgain(ctx, "drain")
				a.mu.Unlock()
			}
		}
	})
}

func (a *App) setDrainLeader(v bool) {
	a.fleetStreams.mu.Lock()
	defer a.fleetStreams.mu.Unlock()
	a.fleetStreams.leading = v
}

// movesDrains reports whether this replica moves drains on: alone always,
// with replicas only the elected one.
func (a *App) movesDrains() bool {
	if !a.shared {
		return true
	}
	a.fleetStreams.mu.Lock()
	defer a.fleetStreams.mu.Unlock()
	return a.fleetStreams.leading
}

// storeDrain writes one drain for every replica (nil: cancelled).
func (a *App) storeDrain(ctx context.Context, backend, endpoint string, dr *drain) error {
	if !a.shared {
		return nil
	}
	var b []byte
	if dr != nil {
		var err error
		if b, err = json.Marshal(storedDrain{
			Backend: dr.backend, Endpoint: dr.endpoint, Drained: dr.phase == translate.Drained,
			Started: dr.started, Deadline: dr.deadline, Ended: dr.ended, EndedBy: dr.endedBy,
		}); err != nil {
			return err
		}
	}
	return a.cfg.Store.PutValue(ctx, drainKey(backend, endpoint), b)
}

// applyStoredDrain takes a drain another replica stored; it reports
// whether this replica's drains changed.
func (a *App) applyStoredDrain(name string, value []byte) bool {
	d := &a.drains
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(value) == 0 {
		for k := range d.m {
			if drainKey(k[0], k[1]) == name {
				delete(d.m, k)
				return true
			}
		}
		return false
	}
	var sd storedDrain
	if err := json.Unmarshal(value, &sd); err != nil || drainKey(sd.Backend, sd.Endpoint) != name {
		return false
	}
	phase := translate.Draining
	if sd.Drained {
		phase = translate.Drained
	}
	k := [2]string{sd.Backend, sd.Endpoint}
	if old, ok := d.m[k]; ok && old.phase == phase && old.deadline.Equal(sd.Deadline) {
		return false
	}
	if _, ok := d.m[k]; !ok && len(d.m) >= maxDrains {
		return false
	}
	if d.m == nil {
		d.m = map[[2]string]*drain{}
	}
	d.m[k] = &drain{backend: sd.Backend, endpoint: sd.Endpoint, phase: phase, started: sd.Started, deadline: sd.Deadline, ended: sd.Ended, endedBy: sd.EndedBy}
	return true
}
