package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// Check validates and translates a policy without applying it.
func (a *App) Check(p *policyv1.Policy) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := a.translate(ctx, p)
	return err
}

// translate validates a policy, resolves its JWKS files and URLs, and
// translates it.
func (a *App) translate(ctx context.Context, p *policyv1.Policy) (xdstype.Resources, map[string][]*policyv1.JWK, error) {
	if err := errors.Join(policy.Validate(p), policy.CheckReserved(p, a.reserved())); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", admin.ErrInvalidPolicy, err)
	}
	keys, err := a.jwks.Resolve(ctx, p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", admin.ErrInvalidPolicy, err)
	}
	start := time.Now()
	res, err := translate.Translate(p, a.options(keys))
	a.metrics.Translate.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", admin.ErrInvalidPolicy, err)
	}
	return res, keys, nil
}

// Apply is the admin API's change: it refuses a stale expected revision,
// stores the policy (the file atomically, so a restart serves the same
// policy; or etcd, in a transaction that compares the expected revision,
// so concurrent applies through different replicas cannot both win) and
// then serves it. Applies are serialised.
func (a *App) Apply(ctx context.Context, p *policyv1.Policy, source []byte, expectedRevision string, dryRun bool) (string, []translate.Change, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !dryRun {
		defer a.releaseMemory(p)()
	}
	// A shared store compares in its transaction: this replica may not
	// have seen the latest apply through another one yet.
	if !a.shared && expectedRevision != a.revision {
		return "", nil, fmt.Errorf("%w: current revision is %s, not %s", admin.ErrStaleRevision, a.revision, expectedRevision)
	}
	var (
		res     xdstype.Resources
		keys    map[string][]*policyv1.JWK
		changes []translate.Change
		err     error
	)
	if c := a.checked; !dryRun && c != nil && c.policy == p && c.base == a.revision {
		res, keys, changes = c.res, c.keys, c.changes
	} else {
		if res, keys, err = a.translate(ctx, p); err != nil {
			a.metrics.Applies.WithLabelValues("invalid").Inc()
			return "", nil, err
		}
		if changes, err = translate.Diff(a.served.Resources, res); err != nil {
			return "", nil, err
		}
	}
	a.checked = nil
	rev := policy.Revision(p)
	if dryRun {
		a.checked = &checkedApply{policy: p, base: a.revision, res: res, keys: keys, changes: changes}
		return rev, changes, nil
	}
	if rev == a.revision {
		return rev, changes, nil
	}
	if err := a.put(ctx, p, source, expectedRevision); err != nil {
		return "", nil, storeError(err)
	}
	if err := a.serve(ctx, p, rev, res, keys, "api"); err != nil {
		// Put the old policy back so that a restart, and every other
		// replica, serves what is being served.
		if _, rerr := a.store.Put(ctx, a.served.Policy, rev); rerr != nil {
			a.log.Error("restoring the stored policy failed", "error", rerr)
		}
		return "", nil, err
	}
	a.setRejected(nil)
	return rev, changes, nil
}

// put stores p, as source when there is one and the store keeps text.
func (a *App) put(ctx context.Context, p *policyv1.Policy, source []byte, expected string) error {
	if ss, ok := a.store.(store.SourceStore); ok && source != nil {
		_, err := ss.PutSource(ctx, p, source, expected)
		return err
	}
	_, err := a.store.Put(ctx, p, expected)
	return err
}

// PolicySource returns the stored text of revision rev, when the store
// keeps text.
func (a *App) PolicySource(ctx context.Context, rev string) ([]byte, bool) {
	if ss, ok := a.store.(store.SourceStore); ok {
		return ss.Source(ctx, rev)
	}
	return nil, false
}

// PolicyRejected returns the latest policy refused from the file or store,
// nil once one from there (or an apply) is served again.
func (a *App) PolicyRejected() *adminv1.PolicyRejection {
	a.rejectedMu.Lock()
	defer a.rejectedMu.Unlock()
	return a.rejected
}

// setRejected records a refused policy (nil: none), and publishes it as
// an event: an operator whose edit was refused sees it in `dpctl status`
// and `dpctl events`, not only in the log.
func (a *App) setRejected(r *adminv1.PolicyRejection) {
	a.rejectedMu.Lock()
	a.rejected = r
	a.rejectedMu.Unlock()
	if r != nil {
		a.xds.Status().Publish(xds.Event{Kind: xds.EventPolicyRejected, Error: r.GetError()})
	}
}

// reject records that the policy from source was refused for err.
func (a *App) reject(source string, err error) {
	a.setRejected(&adminv1.PolicyRejection{Source: source, Error: err.Error(), At: timestamppb.Now()})
}

// releaseMemory is deferred by an apply of p, with a.mu held: what a
// large policy took, applied or refused, and what a large policy it
// replaced held go back to the system before the next apply starts.
func (a *App) releaseMemory(p *policyv1.Policy) func() {
	before := proto.Size(a.served.Policy)
	return func() { policy.ReleaseMemory(max(proto.Size(p), before)) }
}

// checkedApply is a dry run's work, kept for the apply that follows it.
// The admin API computes every apply first (to name the listeners it would
// drain) and then applies the same message: translating and diffing again
// would double the control plane's part of a push (about 100 ms at 10,000
// routes). It is reused only for the very message it was computed from,
// over the same served revision, and any serve drops it.
type checkedApply struct {
	policy  *policyv1.Policy
	base    string
	res     xdstype.Resources
	keys    map[string][]*policyv1.JWK
	changes []translate.Change
}

// storeError gives the admin API's classification to a store's error.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrStale):
		// Both sentinels say the same; say it once.
		return fmt.Errorf("%w%s", admin.ErrStaleRevision, strings.TrimPrefix(err.Error(), store.ErrStale.Error()))
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("%w: the policy keeps serving, but cannot be changed until the store is back: %w", admin.ErrUnavailable, err)
	case errors.Is(err, store.ErrReadOnly):
		return fmt.Errorf("%w: %w", admin.ErrInvalidArgument, err)
	}
	return err
}

// applyFromStore serves a policy read from the store. Reading back what
// this control plane just stored changes nothing.
func (a *App) applyFromStore(ctx context.Context, p *policyv1.Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	defer a.releaseMemory(p)()
	rev := policy.Revision(p)
	if rev == a.revision {
		return nil
	}
	// The file watcher read the file before taking the lock; an apply
	// through the API may have rewritten it since. Serving that older read
	// would undo the apply, and the write's own event brings the newer
	// content. (A shared store's watch delivers in order; its file only
	// seeds it.)
	if !a.shared {
		if err := policy.CheckFileServes(a.cfg.PolicyFile, rev); err != nil {
			a.log.Debug("policy file read is stale, skipped", "revision", rev, "error", err)
			return nil
		}
	}
	res, keys, err := a.translate(ctx, p)
	if err != nil {
		a.metrics.Applies.WithLabelValues("invalid").Inc()
		return err
	}
	source := "file"
	if a.shared {
		source = "store"
	}
	if err := a.serve(ctx, p, rev, res, keys, source); err != nil {
		return err
	}
	a.setRejected(nil)
	return nil
}

// serve sets the snapshot, after a bridging filter config when the change
// needs one (see translate.Bridge); a.mu is held.
func (a *App) serve(ctx context.Context, p *policyv1.Policy, rev string, res xdstype.Resources, keys map[string][]*policyv1.JWK, source string) error {
	// The bridge keeps a new route from arriving before the new auth
	// policy it names. A change that leaves the routes as they are cannot
	// need one, and Bridge finds none unless a policy is new: every filter
	// config a change touches travels in one push, so a key in an auth
	// policy that HTTP and tcp routes share is one ECDS update, not two
	// in a row (each costs Envoy tens of ms).
	native, err := a.nativeVariant(p, keys)
	if err != nil {
		a.metrics.Applies.WithLabelValues("rejected").Inc()
		return err
	}
	var bridge, nativeBridge xdstype.Resources
	if !sameResources(a.served.Resources, res, resource.RouteType) {
		bridge, err = translate.Bridge(a.served, p, a.options(keys))
		if err == nil && bridge != nil && native != nil {
			nativeBridge, err = a.nativeBridge(p, keys)
		}
	}
	if err == nil && bridge != nil {
		_, err = a.xds.SetVariants(ctx, bridge, nativeBridge)
	}
	if err != nil {
		a.log.Warn("bridging filter config not pushed", "error", err)
	}
	if _, err := a.xds.SetVariants(ctx, res, native); err != nil {
		a.metrics.Applies.WithLabelValues("rejected").Inc()
		return err
	}
	a.servedNative = native
	a.metrics.Applies.WithLabelValues("ok").Inc()
	if rev != a.revision {
		for _, w := range policy.Warnings(p) {
			a.log.Warn("policy applied with a warning", "revision", rev, "warning", w)
		}
	}
	a.served, a.revision, a.checked = translate.Served{Policy: p, Keys: keys, Resources: res}, rev, nil
	if !a.ready.Load() {
		a.setReady(true)
	}
	a.log.Info("policy applied", "revision", rev, "source", source)
	a.xds.Status().Publish(xds.Event{Kind: xds.EventPolicy, Revision: rev})
	return nil
}

// sameSnapshot reports whether a and b hold equal filter configs, clusters
// and endpoints: what a change of keys or modules can move.
func sameSnapshot(a, b xdstype.Resources) bool {
	return sameResources(a, b, resource.ExtensionConfigType) && sameResources(a, b, resource.ClusterType) &&
		sameResources(a, b, resource.EndpointType)
}

// sameResources reports whether a and b hold equal resources of typeURL.
func sameResources(a, b xdstype.Resources, typeURL string) bool {
	return slices.EqualFunc(a[typeURL], b[typeURL], func(x, y types.Resource) bool { return proto.Equal(x, y) })
}

// options are the translation options of this control plane.
func (a *App) options(keys map[string][]*policyv1.JWK) translate.Options {
	serving, next := a.modules(moduleName, a.cfg.WasmPath)
	live, batches := a.weighing.current()
	return translate.Options{Module: serving, NextModule: next, ResolvedKeys: keys, Drains: a.drains.phases(), Envoys: int(a.envoys.Load()),
		Streams: live, Reconnecting: batches, QuotaUse: a.quotaUse.Load()}
}

// nativeOptions are the translation options for the nodes that run the
// dynamic module.
func (a *App) nativeOptions(keys map[string][]*policyv1.JWK) translate.Options {
	opts := a.options(keys)
	opts.Filter = translate.FilterNative
	opts.NativeModule, opts.NextNativeModule = a.modules(nativeModuleName, a.cfg.NativePath)
	return opts
}

// nativeVariant translates p for the nodes that run the dynamic module:
// nil when this control plane has none to serve them (they get the Wasm
// module, as every other node).
func (a *App) nativeVariant(p *policyv1.Policy, keys map[string][]*policyv1.JWK) (xdstype.Resources, error) {
	if a.cfg.NativePath == "" {
		return nil, nil
	}
	res, err := translate.Translate(p, a.nativeOptions(keys))
	if err != nil {
		return nil, fmt.Errorf("%w: native variant: %w", admin.ErrInvalidPolicy, err)
	}
	return res, nil
}

// nativeBridge is translate.Bridge for the native variant.
func (a *App) nativeBridge(p *policyv1.Policy, keys map[string][]*policyv1.JWK) (xdstype.Resources, error) {
	if a.servedNative == nil {
		return nil, nil
	}
	prev := translate.Served{Policy: a.served.Policy, Keys: a.served.Keys, Resources: a.servedNative}
	return translate.Bridge(prev, p, a.nativeOptions(keys))
}

// keyRefreshInterval is how often JWKS files are re-read and stale JWKS
// URLs fetched again (each URL no more often than its own refresh).
const keyRefreshInterval = 10 * time.Second

// refreshKeys re-resolves the current policy's key sets and serves the
// result if a key changed: a rotation at the identity provider reaches
// Envoy by ECDS, without a policy change and without draining anything.
func (a *App) refreshKeys(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	moduleChanged, err := a.reloadModules()
	if err != nil {
		a.log.Warn("reading the module failed; the last module keeps serving", "error", err)
	}
	current := a.served.Policy
	if current == nil || !(moduleChanged || usesKeySets(current)) {
		return
	}
	a.serveAgain(ctx, "keys")
	if moduleChanged {
		clusters := a.xds.Versions()[resource.ClusterType]
		for _, name := range []string{moduleName, nativeModuleName} {
			if m, ok := a.fleet.store.Current(name); ok && m.SHA256 != *a.fleet.servingOf(name) {
				go a.rollOut(ctx, name, m.SHA256, clusters)
			}
		}
	}
}

// serveAgain translates the served policy again, with the keys and modules
// as they are now, and serves what changed. The caller holds a.mu.
func (a *App) serveAgain(ctx context.Context, source string) {
	current := a.served.Policy
	if current == nil {
		return
	}
	res, keys, err := a.translate(ctx, current)
	if err != nil {
		a.log.Warn("translating the served policy again failed; the last resources keep serving", "source", source, "error", err)
		return
	}
	native, err := a.nativeVariant(current, keys)
	if err != nil {
		a.log.Warn("translating the served policy again failed; the last resources keep serving", "source", source, "error", err)
		return
	}
	if sameSnapshot(res, a.served.Resources) && sameSnapshot(native, a.servedNative) {
		return
	}
	if err := a.serve(ctx, current, a.revision, res, keys, source); err != nil {
		a.log.Error("serving the policy translated again failed", "source", source, "error", err)
	}
}

// Refresh reads the module file and key sets now instead of at the next
// tick, and serves what changed (the server calls it on SIGHUP).
func (a *App) Refresh(ctx context.Context) { a.refreshKeys(ctx) }

// usesKeySets reports whether any auth policy names a JWKS file or URL.
func usesKeySets(p *policyv1.Policy) bool {
	for _, a := range p.GetAuthPolicies() {
		if a.GetJwt().GetJwksFile() != "" || a.GetJwt().GetJwksUrl() != "" {
			return true
		}
	}
	return false
}

// reserved are the addresses no back end may point at, each with what it
// is: Envoy's admin interfaces (flag and node metadata) and this control
// plane's own listeners (as bound, once they are).
func (a *App) reserved() map[string]string {
	out := map[string]string{}
	for _, addr := range a.cfg.EnvoyAdmin {
		out[addr] = "Envoy's admin address"
	}
	for _, n := range a.xds.Status().Nodes() {
		if n.Admin != "" && !strings.HasPrefix(n.Admin, "unix:") {
			out[n.Admin] = fmt.Sprintf("the admin address of Envoy %q", n.ID)
		}
	}
	own := []struct {
		what, configured string
		lis              net.Listener
	}{
		{"the control plane's xDS address", a.cfg.XDSAddr, a.xdsLis},
		{"the control plane's admin API", a.cfg.AdminAddr, a.adminLis},
		{"the control plane's metrics address", a.cfg.MetricsAddr, a.metLis},
		{"the control plane's module server", a.cfg.ModulesAddr, a.fleet.modLis},
	}
	for _, o := range own {
		addr := o.configured
		if o.lis != nil {
			addr = o.lis.Addr().String()
		}
		if addr != "" {
			out[addr] = o.what
		}
	}
	return out
}
