// Package app wires policy loading, translation and xDS serving into one
// running control plane. Main packages stay thin; tests start an App in
// process on free loopback ports.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
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
	Log      *slog.Logger
}

// App is a configured, listening control plane.
type App struct {
	cfg     Config
	log     *slog.Logger
	xds     *xds.Server
	metrics *xds.Metrics
	reg     *prometheus.Registry
	grpc    *grpc.Server
	xdsLis  net.Listener
	metLis  net.Listener

	mu      sync.Mutex // serialises applies
	current *policyv1.Policy
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
	}
	p, err := policy.LoadFile(cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	if err := a.Apply(ctx, p); err != nil {
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
	return a, nil
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

// Policy returns the policy being served.
func (a *App) Policy() *policyv1.Policy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current
}

// Apply validates, translates and serves a policy. On any error the
// previous snapshot keeps serving and the error is returned.
func (a *App) Apply(ctx context.Context, p *policyv1.Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := policy.Validate(p); err != nil {
		a.metrics.Applies.WithLabelValues("invalid").Inc()
		return fmt.Errorf("policy is invalid: %w", err)
	}
	start := time.Now()
	res, err := translate.Translate(p, translate.Options{WasmPath: a.cfg.WasmPath})
	a.metrics.Translate.Observe(time.Since(start).Seconds())
	if err != nil {
		a.metrics.Applies.WithLabelValues("rejected").Inc()
		return err
	}
	if _, err := a.xds.SetResources(ctx, res); err != nil {
		a.metrics.Applies.WithLabelValues("rejected").Inc()
		return err
	}
	a.metrics.Applies.WithLabelValues("ok").Inc()
	a.current = p
	return nil
}

// Run serves until ctx ends, then stops gracefully.
func (a *App) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return xds.Serve(ctx, a.grpc, func() error { return a.grpc.Serve(a.xdsLis) })
	})
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
	if a.cfg.PolicyFile != "" {
		g.Go(func() error {
			return policy.WatchFile(ctx, a.cfg.PolicyFile, a.log, func(p *policyv1.Policy) error {
				if err := a.Apply(ctx, p); err != nil {
					return err
				}
				a.log.Info("policy file applied", "file", a.cfg.PolicyFile)
				return nil
			})
		})
	}
	a.log.Info("control plane serving", "xds", a.XDSAddr(), "metrics", a.MetricsAddr(), "policy", a.cfg.PolicyFile)
	return g.Wait()
}
