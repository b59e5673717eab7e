package app

import (
	"context"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// quotaShareInterval is how often the fleet's Envoys are counted again; a
// node connecting to or leaving this replica is counted at once. Other
// replicas' nodes reach the store within nodePublishInterval.
const quotaShareInterval = 2 * time.Second

// envoysSharing counts the Envoys that share each per-identity quota: the
// nodes connected to this replica and, with a shared store, to the others.
// false when the other replicas' nodes cannot be read: the last count
// then stays, rather than every Envoy taking the whole quota.
func (a *App) envoysSharing(ctx context.Context) (int, bool) {
	ids := map[string]bool{}
	for _, n := range a.xds.Status().Nodes() {
		if n.Connected {
			ids[n.ID] = true
		}
	}
	if a.shared {
		fleet, err := a.FleetNodes(ctx)
		if err != nil {
			return 0, false
		}
		for _, n := range fleet {
			if n.GetConnected() {
				ids[n.GetId()] = true
			}
		}
	}
	return max(len(ids), 1), true
}

// runQuotaShares serves every Envoy its share of each quota again when the
// number of Envoys changes: an ECDS push (the handshake filters' plugin
// configuration), which touches no listener and no live stream.
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
		n, ok := a.envoysSharing(ctx)
		if !ok || int64(n) == a.envoys.Load() {
			continue
		}
		a.envoys.Store(int64(n))
		a.mu.Lock()
		if usesQuotas(a.served.Policy) {
			a.log.Info("Envoys sharing the quotas changed; serving their shares", "envoys", n)
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
