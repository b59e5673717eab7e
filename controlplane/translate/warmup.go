package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamcodecv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/upstream_codec/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// WarmupCluster names the cluster that loads the handshake filters'
// remote module before Envoy asks for its listeners; NextWarmupCluster the
// one that loads a module being rolled out.
const (
	WarmupCluster     = "directpipe_module_warmup"
	NextWarmupCluster = "directpipe_module_warmup_next"
)

// warmupPlugin is the root id of the warm-up cluster's plugin: an HTTP
// plugin with no policies, which never sees a request.
const warmupPlugin = "directpipe.module_warmup"

// warmupCluster makes a remote module part of what Envoy loads before it
// serves anything. Envoy asks for its listeners only once every cluster
// has initialised, and a cluster initialises only once its upstream
// filters have: a Wasm filter with a remote module that is not cached
// holds its cluster until the module is downloaded and compiled. So when
// the listeners arrive, their handshake filter configs name a module
// already in Envoy's cache and compiled under the same VM key: they load
// at once, nothing is refused while the module downloads, and no listener
// goes live without its filter.
//
// The cluster has no endpoints and no route names it: its filter never
// sees a request. Its plugin fails open because nothing can reach it; the
// handshake filters keep failing closed.
//
// During a rollout a second such cluster loads the next module, on a
// running Envoy as on one that starts then: Envoy warms a new or changed
// cluster before it uses it, and only then acknowledges it, so the
// filters can be moved to the next module once every Envoy has
// acknowledged its warm-up cluster.
func warmupCluster(name string, module ModuleSource) *clusterv3.Cluster {
	vm := vmConfig(module)
	// Without this flag Envoy waits for the download (the cluster's
	// initialisation holds for it) instead of refusing the config and
	// downloading in the background.
	vm.NackOnCodeCacheMiss = false
	plugin := &wasmv3.PluginConfig{
		Name:          warmupPlugin,
		RootId:        warmupPlugin,
		Vm:            &wasmv3.PluginConfig_VmConfig{VmConfig: vm},
		Configuration: mustAny(wrapperspb.String(`{"policies":{}}`)),
		FailurePolicy: wasmv3.FailurePolicy_FAIL_OPEN,
	}
	return upstreamFilterCluster(name, &hcmv3.HttpFilter{
		Name: warmupPlugin, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&wasmfilterv3.Wasm{Config: plugin})},
	})
}

// upstreamFilterCluster is a cluster with no endpoints whose one upstream
// HTTP filter is filter: Envoy initialises the filter with the cluster.
func upstreamFilterCluster(name string, filter *hcmv3.HttpFilter) *clusterv3.Cluster {
	opts := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			filter,
			{Name: "envoy.filters.http.upstream_codec", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&upstreamcodecv3.UpstreamCodec{})}},
		},
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(DefaultConnectTimeout),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: name},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(opts),
		},
	}
}
