package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
)

// firstLoad reads the policy before anything listens. From the file, a
// policy that does not load is an error: there is no last good policy to
// fall back to. From a shared store, the replica starts anyway, not
// ready, and serves once the store answers: a replica that refused to
// start while etcd is down would turn an etcd outage into a control-plane
// outage when it restarts.
func (a *App) firstLoad(ctx context.Context) error {
	if a.cfg.Store == nil {
		a.store = &store.File{Path: a.cfg.PolicyFile, Log: a.log, Rejected: func(err error) { a.reject(a.cfg.PolicyFile, err) }}
		p, err := policy.LoadFile(a.cfg.PolicyFile)
		if err != nil {
			return err
		}
		return a.applyFromStore(ctx, p)
	}
	a.store, a.shared = a.cfg.Store, true
	p, _, err := a.store.Load(ctx)
	if errors.Is(err, store.ErrNotFound) && a.cfg.PolicyFile != "" {
		if p, err = a.seed(ctx); err != nil && !errors.Is(err, store.ErrUnavailable) {
			return err // a seed file that does not load is the operator's to fix
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.log.Warn("the store holds no policy yet: not ready until one is applied")
		return nil
	case err != nil:
		a.log.Warn("no policy from the store yet: not ready until it answers", "error", err)
		return nil
	}
	if err := a.applyFromStore(ctx, p); err != nil {
		a.log.Error("the stored policy is refused: not ready until a good one is stored", "error", err)
	}
	return nil
}

// policySource names where a policy from the store comes from: the file's
// path, or "store".
func (a *App) policySource() string {
	if a.shared {
		return "store"
	}
	return a.cfg.PolicyFile
}

// seed stores the policy file in an empty shared store. Replicas starting
// together all try; the first wins and the others read its policy.
func (a *App) seed(ctx context.Context) (*policyv1.Policy, error) {
	text, err := policy.ReadFile(a.cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	p, err := policy.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.cfg.PolicyFile, err)
	}
	if err := a.Check(p); err != nil {
		return nil, fmt.Errorf("seed policy %s: %w", a.cfg.PolicyFile, err)
	}
	// The file's text goes with it, comments and all.
	if err := a.put(ctx, p, text, ""); err != nil && !errors.Is(err, store.ErrStale) {
		return nil, err
	}
	a.log.Info("seeded the store from the policy file", "file", a.cfg.PolicyFile)
	p, _, err = a.store.Load(ctx)
	return p, err
}

// setReady records readiness and tells the health service.
func (a *App) setReady(ready bool) {
	a.ready.Store(ready)
	if a.health == nil {
		return
	}
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ready {
		st = healthpb.HealthCheckResponse_SERVING
		a.log.Info("ready: serving a policy", "replica", a.cfg.Replica)
	}
	a.health.SetServingStatus("", st)
	a.health.SetServingStatus(adminv1.AdminService_ServiceDesc.ServiceName, st)
}

// Ready reports whether a policy is being served.
func (a *App) Ready() bool { return a.ready.Load() }

// serveReadyz answers 200 once a policy is served, 503 before.
func (a *App) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if !a.ready.Load() {
		http.Error(w, "not ready: no policy loaded yet", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// History returns the stored revisions, newest first.
func (a *App) History(ctx context.Context) ([]*adminv1.PolicyRevision, error) {
	h, err := a.store.History(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]*adminv1.PolicyRevision, len(h))
	for i, e := range h {
		out[i] = &adminv1.PolicyRevision{Revision: e.Revision, AppliedAt: timestamppb.New(e.AppliedAt), By: e.By, Policy: e.Policy}
	}
	return out, nil
}

// Replica names this control plane among replicas.
func (a *App) Replica() string { return a.cfg.Replica }

// FleetNodes are the nodes the other replicas record in the shared store.
func (a *App) FleetNodes(ctx context.Context) ([]*adminv1.Node, error) {
	if !a.shared {
		return nil, nil
	}
	recs, err := a.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	var out []*adminv1.Node
	for _, r := range recs {
		if r.Replica == a.cfg.Replica {
			continue // this replica's own status is fresher
		}
		n := &adminv1.Node{}
		if err := proto.Unmarshal(r.Value, n); err != nil {
			a.log.Warn("skipping a node record that does not decode", "replica", r.Replica, "node", r.Node, "error", err)
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// nodePublishInterval is how often a replica records the nodes it serves:
// what `dpctl status` through another replica lags by.
const nodePublishInterval = time.Second

// publishNodes records, until ctx ends, the nodes this replica serves.
func (a *App) publishNodes(ctx context.Context) {
	tick := time.NewTicker(nodePublishInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		nodes := map[string][]byte{}
		for _, n := range admin.NodeProtos(a.xds.Status(), a.cfg.Replica, a.NodeWasm()) {
			if !n.GetConnected() {
				continue
			}
			n.LastSeen = nil // changes with every request; the record would too
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
			if err != nil {
				continue
			}
			nodes[n.GetId()] = b
		}
		err := a.cfg.Store.PublishNodes(ctx, nodes)
		if err != nil && !failing && ctx.Err() == nil {
			a.log.Warn("recording served nodes in the store failed; retrying", "error", err)
		}
		failing = err != nil
	}
}
