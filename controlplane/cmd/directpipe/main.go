// Command directpipe is the control plane: it serves the policy file to
// Envoy over xDS, applies every change to the file, and answers the admin
// API that dpctl uses.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/app"
	"github.com/directpipe/directpipe/controlplane/kube"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/statedir"
	"github.com/directpipe/directpipe/controlplane/store"
)

type flags struct {
	policyFile, xdsAddr, metricsAddr, wasmPath, tcpWasmPath, logLevel string
	adminAddr, stateDir, tokenFile, envoyAdmin, jwksDir               string
	tlsCert, tlsKey, clientCA                                         string
	modulesAddr, xdsCert, xdsKey, xdsClientCA, nodeIdentity           string
	store, etcdCA, etcdCert, etcdKey, etcdPrefix, replica             string
	kubeconfig, kubeNamespace, kubeListen, gatewayHost                string
	backendNamespaces                                                 string
	history                                                           int
	leaseTTL                                                          time.Duration
	// nativePath is the handshake filter as an Envoy dynamic module.
	nativePath string
}

func main() {
	var f flags
	flag.StringVar(&f.policyFile, "policy", "", "route policy file (YAML, required without -store): watched, and rewritten by admin API applies; with -store, seeds an empty store")
	flag.StringVar(&f.store, "store", "", "shared policy store of replicas, etcd://host:port[,host:port...], or kubernetes (resources in -kube-namespace); empty: the -policy file")
	flag.StringVar(&f.kubeconfig, "kubeconfig", "", "with -store kubernetes: kubeconfig file (default: the pod's service account)")
	flag.StringVar(&f.kubeNamespace, "kube-namespace", kube.PodNamespace(), "with -store kubernetes: namespace of the resources, leases and events")
	flag.StringVar(&f.kubeListen, "kube-listen", "0.0.0.0:10000", "with -store kubernetes: address of the Envoy listener every route is served on")
	flag.StringVar(&f.backendNamespaces, "kube-backend-namespaces", "", "with -store kubernetes: comma-separated other namespaces whose Services HTTPRoutes may use, where a ReferenceGrant there allows it (their Services, EndpointSlices and ReferenceGrants are watched)")
	flag.StringVar(&f.gatewayHost, "gateway-host", "0.0.0.0", "with -store kubernetes: address Envoy binds for Gateway API listeners (a listener on port p listens on this address, port p)")
	flag.StringVar(&f.etcdCA, "etcd-ca", "", "CA of etcd's server certificates (TLS to etcd)")
	flag.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate for etcd")
	flag.StringVar(&f.etcdKey, "etcd-key", "", "private key of -etcd-cert")
	flag.StringVar(&f.etcdPrefix, "etcd-prefix", store.DefaultPrefix, "prefix of every key this fleet keeps in etcd")
	flag.StringVar(&f.replica, "replica", defaultReplica(), "this replica's name in node status, history and elections")
	flag.IntVar(&f.history, "history", store.DefaultHistory, "policy revisions kept in etcd for history and rollback")
	flag.DurationVar(&f.leaseTTL, "lease-ttl", 10*time.Second, "etcd lease of this replica's node records and leadership: how long they outlive it")
	flag.StringVar(&f.xdsAddr, "xds-addr", "127.0.0.1:18000", "ADS gRPC listen address")
	flag.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:18002", "Prometheus /metrics listen address; empty disables")
	flag.StringVar(&f.wasmPath, "wasm", "bin/handshake.wasm", "handshake Wasm module file, served to Envoys (with -modules-addr \"\", the path as Envoy sees it)")
	flag.StringVar(&f.nativePath, "native", "", "the handshake filter as an Envoy dynamic module (bin/libdirectpipe_native.so), served to the Envoys that ask for it (envoy-bootstrap -filter native); empty: every Envoy runs -wasm")
	flag.StringVar(&f.modulesAddr, "modules-addr", "127.0.0.1:18003", "module server listen address (HTTPS with -xds-tls-*); empty: Envoys read -wasm from their own disk")
	flag.StringVar(&f.xdsCert, "xds-tls-cert", "", "serve xDS and modules over mutual TLS with this certificate")
	flag.StringVar(&f.xdsKey, "xds-tls-key", "", "private key of -xds-tls-cert")
	flag.StringVar(&f.xdsClientCA, "xds-client-ca", "", "CA bundle that signs the Envoys' client certificates (read again when it changes)")
	flag.StringVar(&f.nodeIdentity, "node-identity", "spiffe://directpipe/node/{node}", "SAN of a node's certificate, {node} being its node id: a URI SAN when it has a scheme, else a DNS SAN")
	flag.StringVar(&f.tcpWasmPath, "tcp-wasm", "", "deprecated and ignored: one module (-wasm) serves HTTP and tcp mode routes")
	flag.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:18001", "admin gRPC listen address; empty disables")
	flag.StringVar(&f.stateDir, "state-dir", statedir.Default(), "state directory (admin token)")
	flag.StringVar(&f.tokenFile, "admin-token-file", "", "admin bearer token file (default <state-dir>/admin.token, created 0600 on first start)")
	flag.StringVar(&f.tlsCert, "admin-tls-cert", "", "serve the admin API over TLS with this certificate")
	flag.StringVar(&f.tlsKey, "admin-tls-key", "", "private key of -admin-tls-cert")
	flag.StringVar(&f.clientCA, "admin-client-ca", "", "require admin client certificates signed by this CA")
	flag.StringVar(&f.envoyAdmin, "envoy-admin", "127.0.0.1:9901", "Envoy admin addresses (ip:port, comma-separated) no back end may point at; Envoys from envoy-bootstrap also report theirs")
	flag.StringVar(&f.jwksDir, "jwks-dir", "", "directory every jwks_file must be in (default: the -policy file's directory; with -store and no -policy, jwks_file is refused)")
	flag.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()
	if f.policyFile == "" && f.store == "" {
		// No default: a path that only exists in this repository would make
		// an installed binary start on a file the operator never chose.
		fmt.Fprintln(os.Stderr, "directpipe: -policy or -store is required (make run passes examples/policy.yaml)")
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "directpipe: -log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(log, f); err != nil {
		log.Error("control plane stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, f flags) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Envoy resolves the module path itself, from its own working directory.
	wasm, err := filepath.Abs(f.wasmPath)
	if err != nil {
		return err
	}
	native := f.nativePath
	if native != "" {
		if native, err = filepath.Abs(native); err != nil {
			return err
		}
	}
	if f.tcpWasmPath != "" {
		log.Warn("-tcp-wasm is deprecated and ignored: the -wasm module serves tcp mode routes too")
	}
	cfg := app.Config{
		PolicyFile: f.policyFile, XDSAddr: f.xdsAddr, MetricsAddr: f.metricsAddr, WasmPath: wasm,
		NativePath:   native,
		ModulesAddr:  f.modulesAddr,
		XDSTLS:       mtls.Files{Cert: f.xdsCert, Key: f.xdsKey, ClientCA: f.xdsClientCA},
		NodeIdentity: f.nodeIdentity,
		AdminAddr:    f.adminAddr, Log: log,
		JWKSDir: f.jwksDir,
	}
	for _, a := range strings.Split(f.envoyAdmin, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if _, err := netip.ParseAddrPort(a); err != nil {
				return fmt.Errorf("-envoy-admin %q: want ip:port", a)
			}
			cfg.EnvoyAdmin = append(cfg.EnvoyAdmin, a)
		}
	}
	if f.adminAddr != "" {
		if cfg.AdminTLS, err = adminTLS(f, log); err != nil {
			return err
		}
		if cfg.AdminTLS == nil && !app.IsLoopback(f.adminAddr) {
			return fmt.Errorf("refusing to serve the admin API on %s without TLS: use -admin-tls-cert and -admin-tls-key, or a loopback address", f.adminAddr)
		}
		tokenFile := f.tokenFile
		if tokenFile == "" {
			tokenFile = filepath.Join(f.stateDir, statedir.TokenFile)
		}
		if cfg.AdminToken, err = admin.LoadOrCreateToken(tokenFile); err != nil {
			return err
		}
		log.Info("admin API token", "file", tokenFile)
	}
	cfg.Replica = f.replica
	if f.store != "" {
		if cfg.Store, err = openStore(log, f); err != nil {
			return err
		}
		defer cfg.Store.Close()
	}
	a, err := app.New(ctx, cfg)
	if err != nil {
		return err
	}
	// SIGHUP reads the module file and key sets at once, e.g. after a new
	// module was installed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.Refresh(ctx)
			}
		}
	}()
	return a.Run(ctx)
}

func openStore(log *slog.Logger, f flags) (store.Shared, error) {
	if f.store == storeKubernetes {
		return openKube(log, f)
	}
	eps, err := store.ParseURL(f.store)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := store.ClientTLS(f.etcdCA, f.etcdCert, f.etcdKey)
	if err != nil {
		return nil, err
	}
	if f.history < 1 || f.history > 1000 {
		return nil, fmt.Errorf("-history %d: want 1 to 1000", f.history)
	}
	if f.leaseTTL < time.Second || f.leaseTTL > 5*time.Minute {
		return nil, fmt.Errorf("-lease-ttl %s: want 1s to 5m", f.leaseTTL)
	}
	return store.NewEtcd(store.EtcdConfig{
		Endpoints: eps, TLS: tlsCfg, Prefix: f.etcdPrefix, Replica: f.replica,
		History: f.history, LeaseTTL: f.leaseTTL, Log: log,
	})
}

// storeKubernetes is the -store value of the kubernetes store.
const storeKubernetes = "kubernetes"

func openKube(log *slog.Logger, f flags) (store.Shared, error) {
	if f.policyFile != "" {
		return nil, errors.New("-policy with -store kubernetes: the policy is the namespace's resources (kubectl apply them)")
	}
	rc, err := kube.RESTConfig(f.kubeconfig)
	if err != nil {
		return nil, err
	}
	return kube.New(kube.Config{
		REST: rc, Namespace: f.kubeNamespace, Identity: f.replica, History: f.history, Log: log, GatewayHost: f.gatewayHost,
		BackendNamespaces: splitList(f.backendNamespaces),
		Listeners:         []*policyv1.Listener{{Name: "public", Address: f.kubeListen, Http2: true}},
	})
}

// defaultReplica is the host name (a pod's name on Kubernetes).
func defaultReplica() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "directpipe"
	}
	return h
}

func adminTLS(f flags, log *slog.Logger) (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" {
		if f.clientCA != "" {
			return nil, errors.New("-admin-client-ca needs -admin-tls-cert and -admin-tls-key")
		}
		return nil, nil
	}
	// Read again when the files change, as the xDS server's are.
	cfg, err := mtls.ServingConfig(mtls.Files{Cert: f.tlsCert, Key: f.tlsKey, ClientCA: f.clientCA}, log.With("server", "admin"))
	if err != nil {
		return nil, fmt.Errorf("admin TLS: %w", err)
	}
	return cfg, nil
}

// splitList reads a comma-separated flag value.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
