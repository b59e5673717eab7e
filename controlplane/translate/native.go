package translate

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dynamicmodulesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	dmnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dynamic_modules/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// FilterKind is a build of the handshake filter.
type FilterKind int

const (
	// FilterWasm is the Proxy-Wasm module, run by Envoy's V8: the default.
	FilterWasm FilterKind = iota
	// FilterNative is the Envoy dynamic module, a shared library Envoy
	// loads into its own process (opt-in per node).
	FilterNative
)

// String is the kind as a node names it in its metadata.
func (k FilterKind) String() string {
	if k == FilterNative {
		return "native"
	}
	return "wasm"
}

// ParseFilterKind reads a kind as String writes it; "" is the default.
func ParseFilterKind(s string) (FilterKind, error) {
	switch s {
	case "", "wasm":
		return FilterWasm, nil
	case "native":
		return FilterNative, nil
	}
	return 0, fmt.Errorf("unknown filter %q: want wasm or native", s)
}

const dynamicModuleTypeURL = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"

// typeURL is the ECDS config type of the HTTP handshake filter.
func (k FilterKind) typeURL() string {
	if k == FilterNative {
		return dynamicModuleTypeURL
	}
	return wasmTypeURL
}

// nativeWarmupRetries bounds the warm-up cluster's fetches of the dynamic
// module after the first: with its back-off, about two minutes.
const nativeWarmupRetries = 10

// NativeWarmupCluster names the cluster that loads the dynamic module
// before Envoy asks for its listeners; NextNativeWarmupCluster the one
// that loads a dynamic module being rolled out.
const (
	NativeWarmupCluster     = "directpipe_native_warmup"
	NextNativeWarmupCluster = "directpipe_native_warmup_next"
)

// checkModules checks that the module the translation names has a
// source: the dynamic module for a native node's HTTP and tcp filters,
// the Wasm module for the others.
func (o Options) checkModules() error {
	if o.Filter == FilterNative {
		if err := o.NativeModule.check(); err != nil {
			return fmt.Errorf("translate: the native handshake module: %w", err)
		}
		return nil
	}
	if err := o.Module.check(); err != nil {
		return fmt.Errorf("translate: the handshake module: %w", err)
	}
	return nil
}

// dynamicModuleConfig names the dynamic module. Envoy keeps a remote
// module in a file named by its sha256 and loads it from there, checking
// the hash again at every load.
//
// With nack_on_cache_miss Envoy refuses (NACKs) a config whose module it
// does not hold yet, or holds but cannot load, and fetches it in the
// background; the previous config, if any, keeps serving, and a listener
// that never had one stays warming: no port, no stream unchecked. Without
// it Envoy would wait in warming mode, and a failed fetch there installs
// no filter at all and lets requests through (fail-open): never for the
// handshake filter, only for the warm-up cluster, which no request reaches.
//
// do_not_close: the Go runtime cannot be unloaded from a process (Go's
// linker marks the library NODELETE anyway); saying so keeps Envoy's
// intent and the library's in agreement.
func dynamicModuleConfig(m ModuleSource, nackOnCacheMiss bool) *dynamicmodulesv3.DynamicModuleConfig {
	return &dynamicmodulesv3.DynamicModuleConfig{
		Module:          m.code(),
		DoNotClose:      true,
		NackOnCacheMiss: nackOnCacheMiss && m.remote(),
	}
}

// nativeHandshakeConfig is the HTTP handshake filter as the dynamic
// module: the same JSON document the Wasm plugin gets, as the filter
// config's bytes; the filter name tells the module which filter it is.
func nativeHandshakeConfig(m ModuleSource, doc []byte) *corev3.TypedExtensionConfig {
	f := &dmfilterv3.DynamicModuleFilter{
		DynamicModuleConfig: dynamicModuleConfig(m, true),
		FilterName:          HandshakeFilterName,
		FilterConfig:        mustAny(wrapperspb.String(string(doc))),
	}
	return &corev3.TypedExtensionConfig{Name: HandshakeFilterName, TypedConfig: mustAny(f)}
}

// nativeTCPHandshakeConfig is a tcp route's handshake network filter as
// the dynamic module: the route's policy document as the config's bytes,
// the filter name as its plugin name. The module is the HTTP filter's,
// named by the same sha256, so Envoy loads it once; nack_on_cache_miss
// makes a module that is missing or does not load a refused config, never
// a filter left out.
func nativeTCPHandshakeConfig(m ModuleSource, name string, doc []byte) *corev3.TypedExtensionConfig {
	f := &dmnetworkv3.DynamicModuleNetworkFilter{
		DynamicModuleConfig: dynamicModuleConfig(m, true),
		FilterName:          name,
		FilterConfig:        mustAny(wrapperspb.String(string(doc))),
	}
	return &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(f)}
}

// warmupClusters are the clusters that load remote modules before Envoy
// asks for listeners (see warmupCluster). A native node loads only the
// dynamic module: its tcp routes run it too.
func warmupClusters(opts Options) []*clusterv3.Cluster {
	var out []*clusterv3.Cluster
	if opts.Filter == FilterNative {
		if opts.NativeModule.remote() {
			out = append(out, nativeWarmupCluster(NativeWarmupCluster, opts.NativeModule))
		}
		if next := opts.NextNativeModule; next.remote() && next != opts.NativeModule {
			out = append(out, nativeWarmupCluster(NextNativeWarmupCluster, next))
		}
		return out
	}
	if opts.Module.remote() {
		out = append(out, warmupCluster(WarmupCluster, opts.Module))
	}
	if next := opts.NextModule; next.remote() && next != opts.Module {
		out = append(out, warmupCluster(NextWarmupCluster, next))
	}
	return out
}

// nativeWarmupCluster fetches the dynamic module as warmupCluster does the
// Wasm one: its upstream filter names the module in warming mode, so the
// cluster initialises only once Envoy has fetched it, checked its sha256
// and stored it, and the handshake filter that arrives with the listeners
// finds it at once. A fetch that fails for good leaves this filter out
// (fail-open), harmless here: no request reaches the cluster.
//
// During a rollout a second such cluster loads the next module on a
// running Envoy, which acknowledges the cluster update only once the
// cluster has warmed (see warmupCluster).
func nativeWarmupCluster(name string, m ModuleSource) *clusterv3.Cluster {
	cfg := dynamicModuleConfig(m, false)
	// While the cluster retries, Envoy asks for no listener: it is not
	// ready and opens no port. Once the retries are spent the cluster
	// initialises without the module, the listeners come, and the
	// handshake filter's config, refused for want of the module, leaves
	// the filter without config: Envoy answers every request on the HTTP
	// listener 500 and forwards none. So the retries span minutes, enough
	// for a module server that restarts, not so long that an Envoy stays
	// silent when the module is gone for good.
	cfg.Module.GetRemote().RetryPolicy = &corev3.RetryPolicy{
		NumRetries:   wrapperspb.UInt32(nativeWarmupRetries),
		RetryBackOff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(15 * time.Second)},
	}
	f := &dmfilterv3.DynamicModuleFilter{
		DynamicModuleConfig: cfg,
		FilterName:          warmupPlugin,
		// A configuration the module accepts, so that the warm-up loads
		// it all the way, as the handshake filter will.
		FilterConfig: mustAny(wrapperspb.String(`{"policies":{}}`)),
	}
	return upstreamFilterCluster(name, &hcmv3.HttpFilter{
		Name: warmupPlugin, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)},
	})
}
