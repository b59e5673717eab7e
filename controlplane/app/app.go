// Package app wires policy loading, translation and xDS serving into one
// running control plane. Main packages stay thin; tests start an App in
// process on free loopback ports.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/jwks"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// Config says where the control plane reads policy and what it listens on.
type Config struct {
	// PolicyFile is watched; every valid change is applied.
	PolicyFile string
	// XDSAddr is the ADS gRPC address, e.g. 127.0.0.1:18000 (":0" picks).
	XDSAddr string
	// MetricsAddr serves /metrics; empty disables it.
	MetricsAddr string
	// WasmPath is the handshake module's path as Envoy sees it.
	WasmPath string
	// TCPWasmPath is the tcp handshake module's path as Envoy sees it;
	// empty means handshake-tcp.wasm beside WasmPath, as `make build`
	// lays them out.
	TCPWasmPath string
	// AdminAddr is the admin gRPC address; empty disables the admin API.
	AdminAddr string
	// AdminToken is the bearer token every admin call must carry.
	AdminToken string
	// AdminTLS, when set, serves the admin API over TLS (with client
	// certificates if it asks for them).
	AdminTLS *tls.Config
	Log      *slog.Logger
}

// App is a configured, listening control plane.
type App struct {
	cfg      Config
	log      *slog.Logger
	xds      *xds.Server
	metrics  *xds.Metrics
	reg      *prometheus.Registry
	grpc     *grpc.Server
	admin    *grpc.Server
	xdsLis   net.Listener
	metLis   net.Listener
	adminLis net.Listener

	mu        sync.Mutex // serialises applies
	current   *policyv1.Policy
	revision  string
	resources *translate.Resources
	// keys are the resolved JWKS keys of current, by auth policy.
	keys map[string][]*policyv1.JWK
	jwks *jwks.Resolver
}

// New loads the policy, builds the first snapshot and binds the listeners.
// A policy that does not load is an error here: there is no last good
// config to fall back to at start.
func New(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.TCPWasmPath == "" && cfg.WasmPath != "" {
		cfg.TCPWasmPath = filepath.Join(filepath.Dir(cfg.WasmPath), "handshake-tcp.wasm")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := xds.NewMetrics(reg)
	a := &App{
		cfg:     cfg,
		log:     cfg.Log,
		reg:     reg,
		metrics: metrics,
		xds:     xds.NewServer(ctx, cfg.Log, metrics),
		jwks:    jwks.NewResolver(nil),
	}
	p, err := policy.LoadFile(cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	if err := a.applyFromFile(ctx, p); err != nil {
		return nil, err
	}
	// Keepalives as in go-control-plane's example server: Envoy holds one
	// long-lived stream, and dead peers must be noticed.
	a.grpc = grpc.NewServer(
		grpc.MaxConcurrentStreams(1_000_000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	)
	a.xds.Register(a.grpc)
	var lc net.ListenConfig
	if a.xdsLis, err = lc.Listen(ctx, "tcp", cfg.XDSAddr); err != nil {
		return nil, fmt.Errorf("listen xds: %w", err)
	}
	if cfg.MetricsAddr != "" {
		if a.metLis, err = lc.Listen(ctx, "tcp", cfg.MetricsAddr); err != nil {
			a.xdsLis.Close()
			return nil, fmt.Errorf("listen metrics: %w", err)
		}
	}
	if cfg.AdminAddr != "" {
		if cfg.AdminToken == "" {
			a.closeListeners()
			return nil, errors.New("the admin API needs a token")
		}
		opts := admin.ServerOptions(cfg.AdminToken)
		if cfg.AdminTLS != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.AdminTLS)))
		}
		a.admin = grpc.NewServer(opts...)
		admin.NewService(a).Register(a.admin)
		if a.adminLis, err = lc.Listen(ctx, "tcp", cfg.AdminAddr); err != nil {
			a.closeListeners()
			return nil, fmt.Errorf("listen admin: %w", err)
		}
	}
	return a, nil
}

func (a *App) closeListeners() {
	for _, l := range []net.Listener{a.xdsLis, a.metLis, a.adminLis} {
		if l != nil {
			l.Close()
		}
	}
}

// AdminAddr is the address of the admin API, or "" when disabled.
func (a *App) AdminAddr() string {
	if a.adminLis == nil {
		return ""
	}
	return a.adminLis.Addr().String()
}

// XDSAddr is the address the ADS server listens on.
func (a *App) XDSAddr() string { return a.xdsLis.Addr().String() }

// MetricsAddr is the address of /metrics, or "" when disabled.
func (a *App) MetricsAddr() string {
	if a.metLis == nil {
		return ""
	}
	return a.metLis.Addr().String()
}

// XDS exposes the xDS server, for node status.
func (a *App) XDS() *xds.Server { return a.xds }

// Policy returns the policy being served and its revision.
func (a *App) Policy() (*policyv1.Policy, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current, a.revision
}

// Resources returns the translated resources being served.
func (a *App) Resources() *translate.Resources {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.resources
}

// Status is the per-node xDS status.
func (a *App) Status() *xds.Status { return a.xds.Status() }

// Check validates and translates a policy without applying it.
func (a *App) Check(p *policyv1.Policy) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := a.translate(ctx, p)
	return err
}

// translate validates a policy, resolves its JWKS files and URLs, and
// translates it.
func (a *App) translate(ctx context.Context, p *policyv1.Policy) (*translate.Resources, map[string][]*policyv1.JWK, error) {
	if err := policy.Validate(p); err != nil {
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
// persists the policy file atomically (so a restart serves the same policy)
// and then serves it. Applies are serialised.
func (a *App) Apply(ctx context.Context, p *policyv1.Policy, expectedRevision string, dryRun bool) (string, []translate.Change, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if expectedRevision != a.revision {
		return "", nil, fmt.Errorf("%w: current revision is %s, not %s", admin.ErrStaleRevision, a.revision, expectedRevision)
	}
	res, keys, err := a.translate(ctx, p)
	if err != nil {
		a.metrics.Applies.WithLabelValues("invalid").Inc()
		return "", nil, err
	}
	rev := policy.Revision(p)
	changes := translate.Diff(a.resources, res)
	if dryRun || rev == a.revision {
		return rev, changes, nil
	}
	if err := policy.WriteFileAtomic(a.cfg.PolicyFile, p); err != nil {
		return "", nil, err
	}
	if err := a.serve(ctx, p, rev, res, keys, "api"); err != nil {
		// Put the file back so that a restart serves what is being served.
		if rerr := policy.WriteFileAtomic(a.cfg.PolicyFile, a.current); rerr != nil {
			a.log.Error("restoring the policy file failed", "error", rerr)
		}
		return "", nil, err
	}
	return rev, changes, nil
}

// applyFromFile serves a policy read from the file. Reading back a file the
// admin API just wrote changes nothing.
func (a *App) applyFromFile(ctx context.Context, p *policyv1.Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	rev := policy.Revision(p)
	if rev == a.revision {
		return nil
	}
	res, keys, err := a.translate(ctx, p)
	if err != nil {
		a.metrics.Applies.WithLabelValues("invalid").Inc()
		return err
	}
	return a.serve(ctx, p, rev, res, keys, "file")
}

// serve sets the snapshot; a.mu is held.
func (a *App) serve(ctx context.Context, p *policyv1.Policy, rev string, res *translate.Resources, keys map[string][]*policyv1.JWK, source string) error {
	if err := a.bridge(ctx, p, keys); err != nil {
		a.log.Warn("bridging filter config not pushed", "error", err)
	}
	if _, err := a.xds.SetResources(ctx, res); err != nil {
		a.metrics.Applies.WithLabelValues("rejected").Inc()
		return err
	}
	a.metrics.Applies.WithLabelValues("ok").Inc()
	a.current, a.revision, a.resources, a.keys = p, rev, res, keys
	a.log.Info("policy applied", "revision", rev, "source", source)
	a.xds.Status().Publish(xds.Event{Kind: xds.EventPolicy, Revision: rev})
	return nil
}

// bridge pushes, ahead of the new snapshot, a filter config that knows the
// auth settings of both the old and the new routes. go-control-plane sends
// routes before extension configs, so without it a new route would reach
// Envoy a moment before its auth setting and be refused (fail closed). With
// it, the filter config is a superset at every step: make before break.
// Removals need no bridge: the final snapshot removes the route first and
// its auth setting after.
func (a *App) bridge(ctx context.Context, p *policyv1.Policy, keys map[string][]*policyv1.JWK) error {
	if a.resources == nil || a.current == nil {
		return nil
	}
	merged := &policyv1.Policy{
		Routes:       unionByName(p.GetRoutes(), a.current.GetRoutes()),
		AuthPolicies: unionByName(p.GetAuthPolicies(), a.current.GetAuthPolicies()),
	}
	allKeys := maps.Clone(a.keys)
	maps.Copy(allKeys, keys)
	ecds, err := translate.HandshakeConfig(merged, a.options(allKeys))
	if err != nil {
		return err
	}
	// Only the HTTP filter's resource is bridged: a tcp route's filter
	// config arrives with its listener, which waits for it.
	staged := *a.resources
	staged.ExtensionConfigs = slices.Clone(staged.ExtensionConfigs)
	i := slices.IndexFunc(staged.ExtensionConfigs, func(r types.Resource) bool {
		n, ok := r.(interface{ GetName() string })
		return ok && n.GetName() == translate.HandshakeFilterName
	})
	if i < 0 {
		return errors.New("bridge: the served snapshot has no handshake filter config")
	}
	if proto.Equal(ecds, staged.ExtensionConfigs[i]) {
		return nil // nothing new to announce
	}
	staged.ExtensionConfigs[i] = ecds
	_, err = a.xds.SetResources(ctx, &staged)
	return err
}

// options are the translation options of this control plane.
func (a *App) options(keys map[string][]*policyv1.JWK) translate.Options {
	return translate.Options{WasmPath: a.cfg.WasmPath, TCPWasmPath: a.cfg.TCPWasmPath, ResolvedKeys: keys}
}

// unionByName is next followed by the items of prev whose names next lacks.
func unionByName[T interface{ GetName() string }](next, prev []T) []T {
	out := append([]T(nil), next...)
	seen := map[string]bool{}
	for _, x := range next {
		seen[x.GetName()] = true
	}
	for _, x := range prev {
		if !seen[x.GetName()] {
			out = append(out, x)
		}
	}
	return out
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
	if a.current == nil || !usesKeySets(a.current) {
		return
	}
	res, keys, err := a.translate(ctx, a.current)
	if err != nil {
		a.log.Warn("key refresh failed; the last keys keep serving", "error", err)
		return
	}
	if slices.EqualFunc(res.ExtensionConfigs, a.resources.ExtensionConfigs, func(x, y types.Resource) bool { return proto.Equal(x, y) }) {
		return
	}
	if err := a.serve(ctx, a.current, a.revision, res, keys, "keys"); err != nil {
		a.log.Error("serving refreshed keys failed", "error", err)
	}
}

// usesKeySets reports whether any auth policy names a JWKS file or URL.
func usesKeySets(p *policyv1.Policy) bool {
	for _, a := range p.GetAuthPolicies() {
		if a.GetJwt().GetJwksFile() != "" || a.GetJwt().GetJwksUrl() != "" {
			return true
		}
	}
	return false
}

// Run serves until ctx ends, then stops gracefully.
func (a *App) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return serveGRPC(ctx, a.grpc, func() error { return a.grpc.Serve(a.xdsLis) })
	})
	if a.admin != nil {
		g.Go(func() error {
			return serveGRPC(ctx, a.admin, func() error { return a.admin.Serve(a.adminLis) })
		})
	}
	if a.metLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(a.metLis); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return srv.Shutdown(shutdown)
		})
	}
	g.Go(func() error {
		tick := time.NewTicker(keyRefreshInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				a.refreshKeys(ctx)
			}
		}
	})
	if a.cfg.PolicyFile != "" {
		g.Go(func() error {
			return policy.WatchFile(ctx, a.cfg.PolicyFile, a.log, func(p *policyv1.Policy) error {
				return a.applyFromFile(ctx, p)
			})
		})
	}
	a.log.Info("control plane serving", "xds", a.XDSAddr(), "admin", a.AdminAddr(), "metrics", a.MetricsAddr(), "policy", a.cfg.PolicyFile)
	return g.Wait()
}

// serveGRPC runs serve until ctx ends, then stops g gracefully, or at once
// after a grace period: an Envoy's ADS stream never ends by itself.
func serveGRPC(ctx context.Context, g *grpc.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			g.Stop()
		}
		return nil
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	}
}
