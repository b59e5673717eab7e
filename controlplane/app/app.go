// Package app wires policy loading, translation and xDS serving into one
// running control plane. Main packages stay thin; tests start an App in
// process on free loopback ports. This file is the lifecycle: listeners,
// servers and the background loops; apply.go changes what is served.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/jwks"
	"github.com/directpipe/directpipe/controlplane/modules"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/nodestats"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// Config says where the control plane reads policy and what it listens on.
type Config struct {
	// PolicyFile is watched; every valid change is applied. With a shared
	// Store it only seeds a store that holds no policy yet.
	PolicyFile string
	// Store, when set, is the shared policy store (etcd) of replicas;
	// nil keeps the policy in PolicyFile.
	Store store.Shared
	// Replica names this control plane among replicas.
	Replica string
	// XDSAddr is the ADS gRPC address, e.g. 127.0.0.1:18000 (":0" picks).
	XDSAddr string
	// MetricsAddr serves /metrics; empty disables it.
	MetricsAddr string
	// WasmPath is the handshake module's file. With ModulesAddr, the
	// control plane reads it and serves it to Envoys; without, it is the
	// path as Envoy sees it.
	WasmPath string
	// NativePath is the handshake filter as an Envoy dynamic module (a
	// shared library), read and served as WasmPath is, for the nodes that
	// ask for it in their metadata; empty: every node runs the Wasm module.
	NativePath string
	// ModulesAddr is where the module server listens (HTTPS with XDSTLS);
	// empty: Envoys read the module file themselves.
	ModulesAddr string
	// XDSTLS are the server certificate and client CA of xDS and the
	// module server; empty serves both in plaintext, on loopback only.
	XDSTLS mtls.Files
	// NodeIdentity is the SAN pattern that binds a node id to a client
	// certificate (certs.DefaultNodeIdentity when empty).
	NodeIdentity string
	// XDSLimits bound xDS clients (xds.DefaultLimits when nil).
	XDSLimits *xds.Limits
	// AdminAddr is the admin gRPC address; empty disables the admin API.
	AdminAddr string
	// AdminToken is the bearer token every admin call must carry.
	AdminToken string
	// AdminTLS, when set, serves the admin API over TLS (with client
	// certificates if it asks for them).
	AdminTLS *tls.Config
	// AdminAuthMaxDelay is the longest a failed admin authentication is
	// held (admin.DefaultMaxDelay when zero).
	AdminAuthMaxDelay time.Duration
	// EnvoyAdmin are Envoy admin addresses (ip:port) no back end may
	// point at, besides those the connected Envoys report in their node
	// metadata (envoy-bootstrap writes it).
	EnvoyAdmin []string
	// LoadReportInterval is how often Envoys are asked to report their
	// live streams (streams.DefaultInterval when zero).
	LoadReportInterval time.Duration
	// JWKSDir is the directory jwks_file must be in: the policy file's
	// when empty (with a PolicyFile), else jwks_file is refused.
	JWKSDir string
	Log     *slog.Logger
}

// App is a configured, listening control plane.
type App struct {
	cfg     Config
	log     *slog.Logger
	xds     *xds.Server
	metrics *xds.Metrics
	reg     *prometheus.Registry
	grpc    *grpc.Server
	// nodeStats holds the listener connection counts and Wasm VM
	// failures Envoys report.
	nodeStats *nodestats.Store
	// streams holds the live streams per endpoint Envoys' load reports
	// count; drains are the endpoint drains this control plane serves.
	streams *streams.Store
	drains  drains
	// weighing is what least_streams weights are computed from (balance.go).
	weighing weighing
	// fleetStreams holds the other replicas' counts (shared store).
	fleetStreams fleetStreams
	admin        *grpc.Server
	xdsLis       net.Listener
	metLis       net.Listener
	adminLis     net.Listener

	mu     sync.Mutex // serialises applies
	served translate.Served
	// servedNative is what the nodes that run the dynamic module are
	// served for the same policy; nil without Config.NativePath.
	servedNative xdstype.Resources
	revision     string
	checked      *checkedApply
	jwks         *jwks.Resolver

	fleet fleet

	// store holds the policy: the file, or the replicas' shared store.
	store store.Store
	// shared is set when store is shared by replicas.
	shared bool
	// ready is set once a policy is served: before, the health service
	// and /readyz say not serving, so no Envoy is pointed at an empty
	// snapshot.
	ready  atomic.Bool
	health *health.Server
	// keys is set with a shared store: JWKS documents fetched by the
	// elected replica.
	keys *sharedKeys
	// envoys is how many Envoys share each per-identity quota, quotaUse
	// where their identities' streams are (quotas.go).
	envoys   atomic.Int64
	quotaUse atomic.Pointer[translate.QuotaUse]

	rejectedMu sync.Mutex
	// rejected is the latest policy refused from the file or store.
	rejected *adminv1.PolicyRejection
}

// New loads the policy, builds the first snapshot and binds the listeners.
// A policy that does not load is an error here: there is no last good
// config to fall back to at start.
func New(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
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
		jwks:    jwks.NewResolver(nil, cfg.Log, reg),
		streams: streams.New(cfg.LoadReportInterval),
	}
	reg.MustRegister(newStreamsCollector(a))
	reg.MustRegister(newQuotaCollector(a))
	if cfg.JWKSDir == "" && cfg.PolicyFile != "" {
		cfg.JWKSDir = filepath.Dir(cfg.PolicyFile)
	}
	a.jwks.ConfineFiles(cfg.JWKSDir)
	a.watchWasm(reg)
	if cfg.Store != nil {
		a.keys = &sharedKeys{a: a, docs: map[string][]byte{}}
		a.jwks.Share(a.keys)
	}
	if err := a.setupFleet(); err != nil {
		return nil, err
	}
	if err := a.firstLoad(ctx); err != nil {
		return nil, err
	}
	a.warnReadableSecrets()
	opts := a.fleet.guard.ServerOptions()
	if a.fleet.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(a.fleet.tls)))
	}
	a.grpc = grpc.NewServer(opts...)
	a.xds.Register(a.grpc)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	a.setReady(a.ready.Load())
	// Envoys stream their stats over the xDS cluster too (the bootstrap's
	// metrics service sink): the live connections of each listener.
	a.nodeStats.Register(a.grpc)
	// And their load reports: the live streams of every endpoint.
	a.streams.Register(a.grpc)
	var lc net.ListenConfig
	var err error
	if a.xdsLis, err = lc.Listen(ctx, "tcp", cfg.XDSAddr); err != nil {
		return nil, fmt.Errorf("listen xds: %w", err)
	}
	if err := a.listenModules(ctx); err != nil {
		a.closeListeners()
		return nil, err
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
		opts := admin.ServerOptions(cfg.AdminToken, admin.AuthOptions{Log: cfg.Log, Registry: reg, MaxDelay: cfg.AdminAuthMaxDelay})
		if cfg.AdminTLS != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.AdminTLS)))
		}
		a.admin = grpc.NewServer(opts...)
		admin.NewService(a).Register(a.admin, a.health)
		if a.adminLis, err = lc.Listen(ctx, "tcp", cfg.AdminAddr); err != nil {
			a.closeListeners()
			return nil, fmt.Errorf("listen admin: %w", err)
		}
	}
	return a, nil
}

func (a *App) closeListeners() {
	for _, l := range []net.Listener{a.xdsLis, a.metLis, a.adminLis, a.fleet.modLis} {
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
	return a.served.Policy, a.revision
}

// Resources returns the translated resources being served.
func (a *App) Resources() xdstype.Resources {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served.Resources
}

// watchWasm makes the VM failures nodes report show: a log line for each
// report that shows new ones, and metrics.
func (a *App) watchWasm(reg prometheus.Registerer) {
	reloads := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "directpipe_envoy_wasm_vm_reloads_total",
		Help: "Wasm VMs Envoys started in place of a failed one, as their stats report them (once per plugin of the VM).",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "directpipe_envoy_wasm_vm_reload_failures_total",
		Help: "Reloads of a failed Wasm VM that failed or were held back by the backoff, as Envoys' stats report them.",
	})
	failing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "directpipe_envoy_wasm_vm_failing_nodes",
		Help: "Envoys whose latest stats show a failed Wasm VM that has not been reloaded.",
	}, func() float64 {
		n := 0
		for _, h := range a.nodeStats.Wasm() {
			if h.Failing {
				n++
			}
		}
		return float64(n)
	})
	reg.MustRegister(reloads, failures, failing)
	a.nodeStats = nodestats.New(func(e nodestats.WasmEvent) {
		reloads.Add(float64(e.Reloads))
		failures.Add(float64(e.Failures))
		if e.Health.Failing {
			a.log.Error("a node's Wasm VM failed and has not been reloaded: its handshake filters refuse traffic",
				"node", e.Node, "failed_reloads", e.Failures, "reloads_so_far", e.Health.Reloads)
			return
		}
		a.log.Warn("a node's Wasm VM failed and was reloaded",
			"node", e.Node, "reloads", e.Reloads, "failed_reloads", e.Failures)
	})
}

// NodeWasm returns what the nodes' stats say of their Wasm VMs.
func (a *App) NodeWasm() map[string]*adminv1.WasmHealth {
	out := map[string]*adminv1.WasmHealth{}
	for id, h := range a.nodeStats.Wasm() {
		w := &adminv1.WasmHealth{Reloads: h.Reloads, Failures: h.Failures, Failing: h.Failing}
		if !h.LastFailure.IsZero() {
			w.LastFailure = timestamppb.New(h.LastFailure)
		}
		out[id] = w
	}
	return out
}

// ListenerConnections returns the connections the listener bound to
// address holds now, by node, as the nodes' stats streams report them.
func (a *App) ListenerConnections(address string) map[string]int64 {
	return a.nodeStats.ActiveConnections(address)
}

// KeySources reports the key sets the served policy names: last success,
// last error, keys served and skipped.
func (a *App) KeySources() []jwks.Status {
	p, _ := a.Policy()
	return a.jwks.Sources(p)
}

// Status is the per-node xDS status.
func (a *App) Status() *xds.Status { return a.xds.Status() }

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
	if a.fleet.modSrv != nil {
		srv := a.fleet.modSrv
		g.Go(func() error { return modules.Serve(ctx, srv, func() error { return srv.Serve(a.fleet.modLis) }) })
	}
	if a.metLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/readyz", a.serveReadyz)
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
	g.Go(func() error { a.runDrains(ctx); return nil })
	g.Go(func() error { a.runWeights(ctx); return nil })
	g.Go(func() error { a.runQuotaShares(ctx); return nil })
	if a.shared {
		g.Go(func() error { a.publishNodes(ctx); return nil })
		g.Go(func() error { a.runSharedKeys(ctx); return nil })
		g.Go(func() error { a.runSharedStreams(ctx); return nil })
	}
	if a.shared || a.cfg.PolicyFile != "" {
		g.Go(func() error {
			return a.store.Watch(ctx, func(p *policyv1.Policy) error {
				err := a.applyFromStore(ctx, p)
				if err != nil {
					a.reject(a.policySource(), err)
				}
				return err
			})
		})
	}
	a.log.Info("control plane serving", "xds", a.XDSAddr(), "tls", a.fleet.tls != nil, "modules", a.ModulesAddr(),
		"admin", a.AdminAddr(), "metrics", a.MetricsAddr(), "policy", a.cfg.PolicyFile, "shared_store", a.shared,
		"replica", a.cfg.Replica, "ready", a.ready.Load())
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

// warnReadableSecrets warns when the policy file holds secrets (HMAC keys,
// API key hashes) and others may read it. Applies write it 0600; a file
// the operator made is theirs to fix.
func (a *App) warnReadableSecrets() {
	if a.cfg.PolicyFile == "" || a.shared || !policy.HoldsSecrets(a.served.Policy) {
		return
	}
	if open, err := policy.ReadableByOthers(a.cfg.PolicyFile); err == nil && open {
		a.log.Warn("the policy file holds secrets (HMAC keys or API key hashes) and others may read it: chmod 600 it", "file", a.cfg.PolicyFile)
	}
}
