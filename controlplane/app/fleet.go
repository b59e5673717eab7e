package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/modules"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xds"
)

// moduleName is the handshake module's name in the module store: one
// module serves the HTTP filter and the tcp mode network filters.
// nativeModuleName is the dynamic module's, the HTTP filter of the nodes
// that run it.
const (
	moduleName       = "handshake"
	nativeModuleName = "native"
)

// fleet is what serving remote Envoys adds: mutual TLS on xDS and the
// module server, and the modules themselves.
type fleet struct {
	tls     *tls.Config // nil: plaintext, loopback only
	binding *mtls.Binding
	guard   *xds.Guard
	store   *modules.Store
	modLis  net.Listener
	modSrv  *http.Server
	// seen is each module file's size and time when last read, by store
	// name, so that the periodic check reads it only when it changed.
	seen map[string]string
	// serving is the sha256 of the module the handshake filters name. It
	// trails the store's current module during a rollout, until every
	// connected Envoy has loaded the new one (see rollOut).
	serving string
	// servingNative is the same for the dynamic module, which the native
	// nodes' HTTP handshake filters name.
	servingNative string
}

// servingOf is where the sha256 of the module of name that the filters
// name is kept.
func (f *fleet) servingOf(name string) *string {
	if name == nativeModuleName {
		return &f.servingNative
	}
	return &f.serving
}

// setupFleet checks the listen addresses against the TLS settings and
// loads the server certificate and the modules. A non-loopback address
// without TLS is an error: xDS carries the filter's keys.
func (a *App) setupFleet() error {
	cfg := a.cfg
	if cfg.XDSTLS.Empty() {
		for _, addr := range []string{cfg.XDSAddr, cfg.ModulesAddr} {
			if addr != "" && !IsLoopback(addr) {
				return fmt.Errorf("refusing to serve xDS or modules on %s without TLS: the filter's keys travel by xDS; "+
					"give -xds-tls-cert, -xds-tls-key and -xds-client-ca, or a loopback address", addr)
			}
		}
	} else {
		c, err := mtls.ServerConfig(cfg.XDSTLS, a.log)
		if err != nil {
			return err
		}
		pattern := cfg.NodeIdentity
		if pattern == "" {
			pattern = certs.DefaultNodeIdentity
		}
		b, err := mtls.NewBinding(pattern)
		if err != nil {
			return err
		}
		a.fleet.tls, a.fleet.binding = c, &b
	}
	limits := xds.DefaultLimits
	if cfg.XDSLimits != nil {
		limits = *cfg.XDSLimits
	}
	a.fleet.guard = xds.NewGuard(limits, a.fleet.binding, a.reg, a.log)
	if cfg.ModulesAddr != "" {
		a.fleet.store = modules.NewStore(modules.DefaultLimits)
		a.xds.Status().ExplainNACKs(a.explainNACK)
		if _, err := a.reloadModules(); err != nil {
			return err
		}
		for _, name := range []string{moduleName, nativeModuleName} {
			if m, ok := a.fleet.store.Current(name); ok {
				*a.fleet.servingOf(name) = m.SHA256
			}
		}
	}
	return nil
}

// reloadModules reads the module files again if they changed; it reports
// whether a module changed, which makes a new snapshot (and Envoys fetch
// the new module).
func (a *App) reloadModules() (bool, error) {
	if a.fleet.store == nil {
		return false, nil
	}
	changed, err := a.reloadModule(moduleName, a.cfg.WasmPath)
	if err != nil {
		return false, err
	}
	nativeChanged, err := a.reloadModule(nativeModuleName, a.cfg.NativePath)
	return changed || nativeChanged, err
}

func (a *App) reloadModule(name, file string) (bool, error) {
	if file == "" {
		return false, nil
	}
	st, err := os.Stat(file)
	if err != nil {
		return false, fmt.Errorf("module: %w", err)
	}
	stamp := fmt.Sprint(st.Size(), st.ModTime().UnixNano())
	if a.fleet.seen[name] == stamp {
		return false, nil
	}
	m, changed, err := a.fleet.store.Load(name, file)
	if err != nil {
		return false, err
	}
	if a.fleet.seen == nil {
		a.fleet.seen = map[string]string{}
	}
	a.fleet.seen[name] = stamp
	if changed {
		a.log.Info("module loaded", "module", name, "sha256", m.SHA256, "bytes", m.Size())
	}
	return changed, nil
}

// modules are where Envoy gets the module of name (moduleName, or
// nativeModuleName for the dynamic module): from the module server when
// there is one, else from file, which Envoy then must see at the same
// path. During a rollout, next is the module Envoys load before the
// filters name it.
func (a *App) modules(name, file string) (serving, next translate.ModuleSource) {
	if a.fleet.store == nil {
		return translate.ModuleSource{File: file}, translate.ModuleSource{}
	}
	m, ok := a.fleet.store.Current(name)
	if !ok {
		return translate.ModuleSource{}, translate.ModuleSource{}
	}
	current := a.moduleURL(name, m.SHA256)
	served := *a.fleet.servingOf(name)
	if served == "" || served == m.SHA256 || !a.fleet.store.Has(served) {
		return current, translate.ModuleSource{}
	}
	return a.moduleURL(name, served), current
}

// moduleURL is a module on the module server. The host only names the
// server to Envoy's HTTP client; the bootstrap's module cluster says where
// it is.
func (a *App) moduleURL(name, sha string) translate.ModuleSource {
	scheme := "https"
	if a.fleet.tls == nil {
		scheme = "http"
	}
	path := modules.Path(sha)
	if name == nativeModuleName {
		path = modules.NativePath(sha)
	}
	return translate.ModuleSource{URL: scheme + "://" + certs.ServerName + path, SHA256: sha}
}

// rolloutWait bounds how long a rollout waits for Envoys to load a new
// module before the filters name it anyway: an Envoy that has not loaded
// it by then refuses the filter config while it downloads, and keeps the
// previous one serving (nack_on_code_cache_miss).
const rolloutWait = 2 * time.Minute

// rollOut moves the handshake filters to a new module of name once every
// connected Envoy has acknowledged the cluster set that loads it (the
// warm-up cluster: Envoy acknowledges a cluster update once its clusters
// have warmed). Until then the filters keep naming the previous module,
// so no Envoy is sent a filter whose module it has not loaded: nothing is
// refused and no handshake fails while a module downloads and compiles
// (Wasm) or downloads and loads (the dynamic module).
func (a *App) rollOut(ctx context.Context, name, sha, clusters string) {
	deadline := time.Now().Add(rolloutWait)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	acked := a.clustersAcked(clusters)
	for !acked && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		acked = a.clustersAcked(clusters)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	serving := a.fleet.servingOf(name)
	if current, ok := a.fleet.store.Current(name); !ok || current.SHA256 != sha || *serving == sha {
		return // a newer rollout took over
	}
	*serving = sha
	a.log.Info("module rolled out: the handshake filters name it now", "module", name, "sha256", sha, "every_envoy_loaded_it", acked)
	a.serveAgain(ctx, "module")
}

// clustersAcked reports whether every connected Envoy has acknowledged
// the cluster version v or a later one.
func (a *App) clustersAcked(v string) bool {
	latest := a.xds.Versions()[resource.ClusterType]
	for _, n := range a.xds.Status().Nodes() {
		if !n.Connected {
			continue
		}
		if acked := n.Types[resource.ClusterType].Acked; acked != v && acked != latest {
			return false
		}
	}
	return true
}

// explainNACK says, for a refused extension config, what became of the
// modules Envoy needs: Envoy 1.40 refuses a Wasm config with nothing but
// "Unable to create Wasm plugin" both while it downloads the module and
// when the download failed its sha256 check.
func (a *App) explainNACK(node, typeURL, msg string) string {
	if a.fleet.store == nil || typeURL != resource.ExtensionConfigType {
		return ""
	}
	// Only a plugin Envoy could not create is about the module.
	if !strings.Contains(msg, "Unable to create Wasm plugin") {
		return ""
	}
	m, ok := a.fleet.store.Current(moduleName)
	if !ok {
		return ""
	}
	byNode := a.fleet.binding != nil // without certificates, downloads are known by address only
	var done, bytes int64
	for _, f := range a.fleet.store.Fetches() {
		if f.SHA256 == m.SHA256 && (!byNode || f.Node == node) {
			done += int64(f.Complete)
			bytes += f.Bytes
		}
	}
	who := "this node"
	if !byNode {
		who = "any node"
	}
	var what string
	if done == 0 {
		what = fmt.Sprintf("module %.12s: not downloaded by %s yet; Envoy refuses a Wasm config until it holds the module", m.SHA256, who)
	} else {
		what = fmt.Sprintf("module %.12s: downloaded %d× (%d bytes) by %s; still refused, "+
			"the copy Envoy received fails its sha256 check or does not load", m.SHA256, done, bytes, who)
	}
	return what + "; the previous config keeps serving, and the refused one is offered again with a growing back-off"
}

// listenModules binds the module server.
func (a *App) listenModules(ctx context.Context) error {
	if a.cfg.ModulesAddr == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", a.cfg.ModulesAddr)
	if err != nil {
		return fmt.Errorf("listen modules: %w", err)
	}
	if a.fleet.tls != nil {
		lis = tls.NewListener(lis, a.fleet.tls)
	}
	a.fleet.modLis = lis
	a.fleet.modSrv = modules.NewHTTPServer(a.fleet.store.Handler(a.identify))
	return nil
}

// identify names a module client: the node its certificate is for, else
// its address.
func (a *App) identify(r *http.Request) string {
	if a.fleet.binding != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if ids := a.fleet.binding.Identities(r.TLS.VerifiedChains[0][0]); len(ids) > 0 {
			return ids[0]
		}
	}
	return r.RemoteAddr
}

// ModulesAddr is the module server's address, or "" when Envoys read
// module files.
func (a *App) ModulesAddr() string {
	if a.fleet.modLis == nil {
		return ""
	}
	return a.fleet.modLis.Addr().String()
}

// Modules is the module store, nil when Envoys read module files.
func (a *App) Modules() *modules.Store { return a.fleet.store }

// Guard admits xDS streams.
func (a *App) Guard() *xds.Guard { return a.fleet.guard }

// IsLoopback reports whether addr is a loopback host and port.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
