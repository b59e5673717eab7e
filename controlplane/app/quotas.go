package app

import (
	"context"
	"math"
	"reflect"
	"slices"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/nodestats"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// quotaShareInterval is how often the fleet's Envoys and their
// identities' streams are counted again; a node connecting to or leaving
// this replica is counted at once. Other replicas' nodes reach the store
// within nodePublishInterval; an Envoy's streams reach this replica with
// its stats, every stats flush (5 seconds by default).
const quotaShareInterval = 2 * time.Second

// envoysSharing names the Envoys that share each per-identity quota: the
// nodes connected to this replica and, with a shared store, to the
// others. false when the other replicas' nodes cannot be read: the last
// count then stays, rather than every Envoy taking the whole quota.
func (a *App) envoysSharing(ctx context.Context) ([]string, bool) {
	ids := map[string]bool{}
	for _, n := range a.xds.Status().Nodes() {
		if n.Connected {
			ids[n.ID] = true
		}
	}
	if a.shared {
		fleet, err := a.FleetNodes(ctx)
		if err != nil {
			return nil, false
		}
		for _, n := range fleet {
			if n.GetConnected() {
				ids[n.GetId()] = true
			}
		}
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, true
}

// quotaUseOf is where the identities' streams are on the Envoys nodes,
// from the stats they report: an Envoy that reports none, or that counts
// streams of identities it has no gauge for, is partial.
func quotaUseOf(nodes []string, stats map[string]nodestats.QuotaUse) *translate.QuotaUse {
	u := &translate.QuotaUse{Nodes: nodes, Live: map[string]map[string]map[string]uint32{}, Partial: map[string]bool{}}
	for _, n := range nodes {
		s, ok := stats[n]
		if !ok || s.Unlabelled > 0 {
			u.Partial[n] = true
		}
		for policy, ids := range s.Live {
			for id, live := range ids {
				if u.Live[policy] == nil {
					u.Live[policy] = map[string]map[string]uint32{}
				}
				if u.Live[policy][id] == nil {
					u.Live[policy][id] = map[string]uint32{}
				}
				u.Live[policy][id][n] = uint32(min(live, math.MaxUint32))
			}
		}
	}
	return u
}

// runQuotaShares serves every Envoy its share of each quota again when the
// Envoys or their identities' streams change: an ECDS push (the handshake
// filters' plugin configuration), which touches no listener and no live
// stream, and only when the shares it serves changed.
func (a *App) runQuotaShares(ctx context.Context) {
	events, stop := a.xds.Status().Subscribe()
	defer stop()
	tick := time.NewTicker(quotaShareInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Kind != xds.EventConnected && ev.Kind != xds.EventDisconnected {
				continue
			}
		case <-tick.C:
		}
		nodes, ok := a.envoysSharing(ctx)
		if !ok {
			continue
		}
		n := max(len(nodes), 1)
		// With a shared store, the other replicas' Envoys' counts come
		// through it, so every replica splits alike.
		use := quotaUseOf(nodes, a.fleetQuotaUse())
		if int64(n) == a.envoys.Load() && reflect.DeepEqual(use, a.quotaUse.Load()) {
			continue
		}
		a.envoys.Store(int64(n))
		a.quotaUse.Store(use)
		a.mu.Lock()
		if usesQuotas(a.served.Policy) {
			a.log.Debug("Envoys sharing the quotas, or their streams, changed; serving their shares", "envoys", n)
			a.serveAgain(ctx, "quota shares")
		}
		a.mu.Unlock()
	}
}

// usesQuotas reports whether any auth policy has per-identity quotas.
func usesQuotas(p *policyv1.Policy) bool {
	for _, a := range p.GetAuthPolicies() {
		if a.GetQuotas() != nil {
			return true
		}
	}
	return false
}
