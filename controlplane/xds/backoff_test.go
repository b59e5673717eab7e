package xds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dynamicmodulesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	dmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	dmnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dynamic_modules/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestMarkRetry(t *testing.T) {
	wasm := &wasmhttpv3.Wasm{Config: &wasmv3.PluginConfig{Name: "p", Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{VmId: "v"}}}}
	inner, _ := anypb.New(wasm)
	tec, _ := anypb.New(&corev3.TypedExtensionConfig{Name: "p", TypedConfig: inner})
	marked, err := markRetry(tec, 7)
	if err != nil {
		t.Fatal(err)
	}
	var got corev3.TypedExtensionConfig
	var w wasmhttpv3.Wasm
	if err := marked.UnmarshalTo(&got); err != nil || got.GetTypedConfig().UnmarshalTo(&w) != nil {
		t.Fatal(err)
	}
	vm := w.GetConfig().GetVmConfig()
	if vm.GetEnvironmentVariables().GetKeyValues()[RetryEnv] != "7" || vm.GetVmId() != "v" {
		t.Errorf("marked VM config: %v", vm)
	}
	if proto.Equal(marked, tec) {
		t.Error("the mark did not change the bytes Envoy hashes")
	}
	// Anything else passes untouched.
	other, _ := anypb.New(&corev3.TypedExtensionConfig{Name: "x", TypedConfig: tec})
	if m, _ := markRetry(other, 1); m != other {
		t.Error("a non-Wasm extension config was changed")
	}
	cluster := &anypb.Any{TypeUrl: resource.ClusterType, Value: []byte{1}}
	if m, _ := markRetry(cluster, 1); m != cluster {
		t.Error("a cluster was changed")
	}
}

// TestMarkRetryDynamicModule: a re-offered dynamic-module filter config,
// HTTP or network, carries its retry number in the module config's name,
// which Envoy ignores when the module has a source; the module and what
// the filter is given stay as they were. A config with no module source
// (a module Envoy finds by name) is not renamed.
func TestMarkRetryDynamicModule(t *testing.T) {
	remote := func() *dynamicmodulesv3.DynamicModuleConfig {
		return &dynamicmodulesv3.DynamicModuleConfig{
			Module:          &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{Sha256: "ab"}}},
			NackOnCacheMiss: true,
		}
	}
	byName := func() *dynamicmodulesv3.DynamicModuleConfig {
		return &dynamicmodulesv3.DynamicModuleConfig{Name: "directpipe_native"}
	}
	tests := []struct {
		name     string
		filter   dynamicModuleFilter
		empty    func() dynamicModuleFilter
		wantName string
	}{
		{"http filter", &dmfilterv3.DynamicModuleFilter{DynamicModuleConfig: remote(), FilterName: "directpipe.handshake"},
			func() dynamicModuleFilter { return &dmfilterv3.DynamicModuleFilter{} }, "directpipe-retry-3"},
		{"network filter", &dmnetv3.DynamicModuleNetworkFilter{DynamicModuleConfig: remote(), FilterName: "directpipe.tcp.voice"},
			func() dynamicModuleFilter { return &dmnetv3.DynamicModuleNetworkFilter{} }, "directpipe-retry-3"},
		{"module by name", &dmfilterv3.DynamicModuleFilter{DynamicModuleConfig: byName(), FilterName: "directpipe.handshake"},
			func() dynamicModuleFilter { return &dmfilterv3.DynamicModuleFilter{} }, "directpipe_native"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner, _ := anypb.New(tt.filter)
			tec, _ := anypb.New(&corev3.TypedExtensionConfig{Name: "f", TypedConfig: inner})
			marked, err := markRetry(tec, 3)
			if err != nil {
				t.Fatal(err)
			}
			var got corev3.TypedExtensionConfig
			f := tt.empty()
			if err := marked.UnmarshalTo(&got); err != nil || got.GetTypedConfig().UnmarshalTo(f) != nil {
				t.Fatal(err)
			}
			if n := f.GetDynamicModuleConfig().GetName(); n != tt.wantName {
				t.Errorf("marked name %q, want %q", n, tt.wantName)
			}
			f.GetDynamicModuleConfig().Name = tt.filter.GetDynamicModuleConfig().GetName()
			if !proto.Equal(f, tt.filter) {
				t.Errorf("the mark changed more than the name: %v", f)
			}
		})
	}
}

func TestNACKPlan(t *testing.T) {
	version := "v1"
	b := newNACKBackoff(nil, func(string) string { return version })
	str := func(s string) *string { return &s }
	if p := b.plan("n", "T", false, str("v0")); p != nil {
		t.Fatal("an ACK without a NACK is planned")
	}
	var last int64
	for i := 1; i <= b.tries+1; i++ {
		p := b.plan("n", "T", true, str("v0"))
		if i <= b.tries && (!p.retry || int64(p.delay) < last) {
			t.Fatalf("NACK %d: %+v", i, p)
		}
		if i > b.tries && p.retry {
			t.Fatalf("NACK %d still retried", i)
		}
		last = int64(p.delay) / 2
	}
	// The refused bytes ACKed unchanged (Envoy skipping them) keep the episode.
	if p := b.plan("n", "T", false, str("v1")); p == nil {
		t.Fatal("an ACK of the refused version without a re-offer ended the episode")
	}
	b.offer("n", "T")
	if p := b.plan("n", "T", false, str("v1")); p != nil {
		t.Fatal("an ACK of the re-offered version did not end the episode")
	}
	// A newer version ACKed ends it too.
	b.plan("n", "T", true, str("v0"))
	version = "v2"
	if p := b.plan("n", "T", false, str("v2")); p != nil {
		t.Fatal("an ACK of a newer version did not end the episode")
	}
	if b.offer("a", "T") == b.offer("a", "T") {
		t.Error("two offers share a number")
	}
}
