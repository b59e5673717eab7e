package testkit

import (
	"fmt"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	dynmodv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dynfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// FilterBuild is which build of the handshake filter an Envoy runs on its
// HTTP listener: the suites run against each.
type FilterBuild string

const (
	// FilterWasm is the Proxy-Wasm module, as the control plane emits it.
	FilterWasm FilterBuild = "wasm"
	// FilterNative is the Envoy dynamic module (bin/libdirectpipe_native.so)
	// for the HTTP filter; tcp mode routes keep the Wasm network filter.
	FilterNative FilterBuild = "native"
)

// FilterBuilds are the builds a matrix test runs.
var FilterBuilds = []FilterBuild{FilterWasm, FilterNative}

// NativeModule is the handshake filter as a dynamic module:
// $DIRECTPIPE_NATIVE, else bin/.
func NativeModule(t T) string {
	t.Helper()
	if p := os.Getenv("DIRECTPIPE_NATIVE"); p != "" {
		return p
	}
	return Binary(t, "libdirectpipe_native.so")
}

// nativeModuleName names the library to Envoy's loader; Envoy loads one
// library per name and path once per process.
const nativeModuleName = "directpipe_native"

// NativeFilter returns a resource rewrite (app.Config.Rewrite) that serves
// the HTTP handshake filter as the dynamic module at library() instead of
// the Wasm plugin: the same ECDS resource name, its configuration the
// plugin's JSON byte for byte, and the listeners' filter references
// accepting the dynamic module's type. Everything else is left as
// translated.
func NativeFilter(library func() string) func(xdstype.Resources) (xdstype.Resources, error) {
	return func(in xdstype.Resources) (xdstype.Resources, error) {
		out := in.Clone()
		configs := out[resource.ExtensionConfigType]
		for i, r := range configs {
			tec, ok := r.(*corev3.TypedExtensionConfig)
			if !ok || tec.GetName() != translate.HandshakeFilterName {
				continue
			}
			native, err := nativeConfig(tec, library())
			if err != nil {
				return nil, err
			}
			configs[i] = native
		}
		listeners := out[resource.ListenerType]
		for i, r := range listeners {
			l, ok := r.(*listenerv3.Listener)
			if !ok {
				continue
			}
			l, err := retypeHandshake(l)
			if err != nil {
				return nil, err
			}
			listeners[i] = l
		}
		return out, nil
	}
}

// nativeConfig turns the Wasm plugin's ECDS resource into the dynamic
// module's, with the same configuration string.
func nativeConfig(tec *corev3.TypedExtensionConfig, library string) (*corev3.TypedExtensionConfig, error) {
	var wasm wasmfilterv3.Wasm
	if err := tec.GetTypedConfig().UnmarshalTo(&wasm); err != nil {
		return nil, fmt.Errorf("testkit: native filter: %s is not a Wasm filter: %w", tec.GetName(), err)
	}
	var doc wrapperspb.StringValue
	if err := wasm.GetConfig().GetConfiguration().UnmarshalTo(&doc); err != nil {
		return nil, fmt.Errorf("testkit: native filter: plugin configuration: %w", err)
	}
	cfg, err := deterministicAny(&doc)
	if err != nil {
		return nil, err
	}
	filter, err := deterministicAny(&dynfilterv3.DynamicModuleFilter{
		DynamicModuleConfig: &dynmodv3.DynamicModuleConfig{
			Name: nativeModuleName,
			// The Go runtime cannot be unloaded; Go's linker marks the
			// library NODELETE anyway.
			DoNotClose: true,
			Module: &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{
				Local: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: library}},
			}},
		},
		FilterName:   "handshake",
		FilterConfig: cfg,
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TypedExtensionConfig{Name: tec.GetName(), TypedConfig: filter}, nil
}

// dynamicModuleTypeURL is the HTTP dynamic module filter's type.
const dynamicModuleTypeURL = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"

// retypeHandshake returns l with every HTTP connection manager's
// reference to the handshake filter accepting the dynamic module's type
// (a copy when it changes anything).
func retypeHandshake(l *listenerv3.Listener) (*listenerv3.Listener, error) {
	l = proto.Clone(l).(*listenerv3.Listener)
	chains := l.GetFilterChains()
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || !tc.MessageIs(&hcmv3.HttpConnectionManager{}) {
				continue
			}
			var hcm hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&hcm); err != nil {
				return nil, err
			}
			filters := hcm.GetHttpFilters()
			for _, u := range hcm.GetUpgradeConfigs() {
				filters = append(filters, u.GetFilters()...)
			}
			for _, hf := range filters {
				if hf.GetName() == translate.HandshakeFilterName && hf.GetConfigDiscovery() != nil {
					hf.GetConfigDiscovery().TypeUrls = []string{dynamicModuleTypeURL}
				}
			}
			a, err := deterministicAny(&hcm)
			if err != nil {
				return nil, err
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return l, nil
}

// deterministicAny packs m as Envoy compares it: the same bytes for the
// same message, so a resource's content hash, its version, is stable.
func deterministicAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}
