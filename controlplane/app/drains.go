package app

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
)

const (
	// DefaultDrainDeadline is how long a drain waits for the endpoint's
	// streams to end before it takes the endpoint out of EDS anyway.
	DefaultDrainDeadline = 10 * time.Minute
	// maxDrainDeadline bounds what a caller may ask for.
	maxDrainDeadline = 24 * time.Hour
	// maxDrains bounds the drains held at once.
	maxDrains = 1_000
	// drainCheckInterval is how often drains look at the counts.
	drainCheckInterval = time.Second
)

// drain is one endpoint's drain. An endpoint drained stays out of EDS until
// the drain is cancelled or the policy no longer lists the endpoint: the
// operator asked for it to take no stream.
type drain struct {
	backend, endpoint string
	phase             translate.DrainPhase
	started, deadline time.Time
	ended             time.Time
	endedBy           string
}

// drains holds the drains this control plane serves.
type drains struct {
	mu sync.Mutex
	m  map[[2]string]*drain
}

// phases are the drains as translation takes them.
func (d *drains) phases() map[string]map[string]translate.DrainPhase {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.m) == 0 {
		return nil
	}
	out := map[string]map[string]translate.DrainPhase{}
	for k, dr := range d.m {
		if out[k[0]] == nil {
			out[k[0]] = map[string]translate.DrainPhase{}
		}
		out[k[0]][k[1]] = dr.phase
	}
	return out
}

// DrainEndpoint starts or cancels an endpoint's drain and serves the
// endpoints it changes (EDS only).
func (a *App) DrainEndpoint(ctx context.Context, backend, endpoint string, deadline time.Duration, cancel bool) (*adminv1.Drain, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.listsEndpoint(backend, endpoint) {
		return nil, fmt.Errorf("%w: back end %q has no endpoint %q", admin.ErrNotFound, backend, endpoint)
	}
	if deadline == 0 {
		deadline = DefaultDrainDeadline
	}
	if deadline < 0 || deadline > maxDrainDeadline {
		return nil, fmt.Errorf("%w: deadline %s: want up to %s", admin.ErrInvalidArgument, deadline, maxDrainDeadline)
	}
	k := [2]string{backend, endpoint}
	d := &a.drains
	d.mu.Lock()
	old, ok := d.m[k]
	held := len(d.m)
	d.mu.Unlock()
	var next *drain
	switch {
	case cancel && !ok:
		return nil, fmt.Errorf("%w: %s %s is not being drained", admin.ErrNotFound, backend, endpoint)
	case cancel:
	case ok:
		// Asking again changes nothing but the deadline.
		c := *old
		c.deadline = c.started.Add(deadline)
		next = &c
	case a.lastInService(backend, endpoint):
		// With every endpoint of a pool draining Envoy would balance over
		// them all again (its panic mode), draining ones included.
		return nil, fmt.Errorf("%w: %s is the last endpoint of back end %q that is not draining: its new streams would have nowhere to go",
			admin.ErrInvalidArgument, endpoint, backend)
	case held >= maxDrains:
		return nil, fmt.Errorf("%w: %d drains are held already", admin.ErrInvalidArgument, maxDrains)
	default:
		now := time.Now()
		next = &drain{backend: backend, endpoint: endpoint, phase: translate.Draining, started: now, deadline: now.Add(deadline)}
	}
	// Every replica must serve the drain, or none: stored first.
	if err := a.storeDrain(ctx, backend, endpoint, next); err != nil {
		return nil, storeError(err)
	}
	d.mu.Lock()
	if next == nil {
		delete(d.m, k)
		next = old
	} else {
		if d.m == nil {
			d.m = map[[2]string]*drain{}
		}
		d.m[k] = next
	}
	d.mu.Unlock()
	counts, _ := a.fleetCounts()
	out := next.proto(streams.Live(counts, backend, endpoint))
	action := "started"
	if cancel {
		action = "cancelled"
	}
	a.log.Info("drain "+action, "backend", backend, "endpoint", endpoint, "deadline", out.GetDeadline().AsTime())
	a.serveAgain(ctx, "drain")
	return out, nil
}

// lastInService reports whether endpoint is the only one of backend that
// is not being drained; a.mu is held.
func (a *App) lastInService(backend, endpoint string) bool {
	a.drains.mu.Lock()
	defer a.drains.mu.Unlock()
	for _, b := range a.served.Policy.GetBackends() {
		if b.GetName() != backend {
			continue
		}
		for _, ep := range b.GetEndpoints() {
			if _, draining := a.drains.m[[2]string{backend, ep}]; ep != endpoint && !draining {
				return false
			}
		}
	}
	return true
}

// listsEndpoint reports whether the served policy lists the endpoint; a.mu
// is held.
func (a *App) listsEndpoint(backend, endpoint string) bool {
	for _, b := range a.served.Policy.GetBackends() {
		if b.GetName() == backend {
			return slices.Contains(b.GetEndpoints(), endpoint)
		}
	}
	return false
}

// Drains returns every drain with its fleet-wide live count.
func (a *App) Drains() []*adminv1.Drain {
	counts, _ := a.fleetCounts()
	d := &a.drains
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*adminv1.Drain, 0, len(d.m))
	for _, dr := range d.m {
		out = append(out, dr.proto(streams.Live(counts, dr.backend, dr.endpoint)))
	}
	slices.SortFunc(out, func(x, y *adminv1.Drain) int {
		return cmp.Or(cmp.Compare(x.GetBackend(), y.GetBackend()), cmp.Compare(x.GetEndpoint(), y.GetEndpoint()))
	})
	return out
}

func (dr *drain) proto(live uint64) *adminv1.Drain {
	out := &adminv1.Drain{
		Backend: dr.backend, Endpoint: dr.endpoint, State: adminv1.DrainState_DRAINING,
		Started: timestamppb.New(dr.started), Deadline: timestamppb.New(dr.deadline), Live: live,
	}
	if dr.phase == translate.Drained {
		out.State, out.Ended, out.EndedBy = adminv1.DrainState_DRAINED, timestamppb.New(dr.ended), dr.endedBy
	}
	return out
}

// runDrains moves drains on: an endpoint leaves EDS once every reporting
// Envoy has reported it holds no stream, counted after the DRAINING push
// had time to land, or at its deadline.
func (a *App) runDrains(ctx context.Context) {
	tick := time.NewTicker(drainCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !a.movesDrains() {
			continue
		}
		changed := a.stepDrains(time.Now())
		if len(changed) == 0 {
			continue
		}
		for _, c := range changed {
			if err := a.storeDrain(ctx, c.backend, c.endpoint, c.drain); err != nil {
				a.log.Warn("sharing a drain's end through the store failed; other replicas still serve it DRAINING", "backend", c.backend, "endpoint", c.endpoint, "error", err)
			}
		}
		a.mu.Lock()
		a.serveAgain(ctx, "drain")
		a.mu.Unlock()
	}
}

// drainChange is a drain stepDrains moved on (drain nil: forgotten).
type drainChange struct {
	backend, endpoint string
	drain             *drain
}

// stepDrains ends the drains that are done, forgets those whose endpoint
// the policy no longer lists, and returns what changed.
func (a *App) stepDrains(now time.Time) []drainChange {
	counts, _ := a.fleetCounts()
	listed := map[[2]string]bool{}
	p, _ := a.Policy()
	for _, b := range p.GetBackends() {
		for _, ep := range b.GetEndpoints() {
			listed[[2]string{b.GetName(), ep}] = true
		}
	}
	d := &a.drains
	d.mu.Lock()
	defer d.mu.Unlock()
	var changed []drainChange
	for k, dr := range d.m {
		if !listed[k] {
			delete(d.m, k)
			changed = append(changed, drainChange{backend: k[0], endpoint: k[1]})
			continue
		}
		if dr.phase != translate.Draining {
			continue
		}
		// Reports count streams at the time Envoy sends them: only those
		// sent once the DRAINING push has landed say the count can no
		// longer grow.
		settled := a.fleetReportedSince(dr.started.Add(a.streams.Interval()))
		switch {
		case now.After(dr.deadline):
			dr.phase, dr.ended, dr.endedBy = translate.Drained, now, "deadline"
		case settled && streams.Live(counts, dr.backend, dr.endpoint) == 0:
			dr.phase, dr.ended, dr.endedBy = translate.Drained, now, "no_streams"
		default:
			continue
		}
		c := *dr
		changed = append(changed, drainChange{backend: k[0], endpoint: k[1], drain: &c})
		a.log.Info("drained endpoint leaves EDS", "backend", dr.backend, "endpoint", dr.endpoint, "by", dr.endedBy,
			"live", streams.Live(counts, dr.backend, dr.endpoint), "after", now.Sub(dr.started).Round(time.Millisecond))
	}
	return changed
}
