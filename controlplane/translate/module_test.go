package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

func TestModuleSource(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	p := &policyv1.Policy{}
	res, err := HandshakeConfig(p, Options{Module: ModuleSource{URL: "https://cp/modules/" + sha + ".wasm", SHA256: sha}})
	if err != nil {
		t.Fatal(err)
	}
	var w wasmfilterv3.Wasm
	if err := res.GetTypedConfig().UnmarshalTo(&w); err != nil {
		t.Fatal(err)
	}
	vm := w.GetConfig().GetVmConfig()
	remote := vm.GetCode().GetRemote()
	if remote.GetSha256() != sha || remote.GetHttpUri().GetCluster() != ModuleCluster || !vm.GetNackOnCodeCacheMiss() {
		t.Errorf("remote module: %v", vm)
	}
	local, _ := HandshakeConfig(p, Options{Module: ModuleSource{File: "/m.wasm"}})
	local.GetTypedConfig().UnmarshalTo(&w)
	if w.GetConfig().GetVmConfig().GetNackOnCodeCacheMiss() || w.GetConfig().GetVmConfig().GetCode().GetLocal().GetFilename() != "/m.wasm" {
		t.Errorf("local module: %v", w.GetConfig().GetVmConfig())
	}
	for _, bad := range []ModuleSource{{}, {File: "/m.wasm", URL: "https://x"}, {URL: "https://x", SHA256: "ABC"}, {URL: "https://x"}} {
		if _, err := Translate(p, Options{Module: bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestWarmupCluster checks that a remote module is loaded by a cluster
// before the listeners need it: the same VM as the handshake filters (so
// Envoy compiles it once), waiting for the download instead of refusing.
func TestWarmupCluster(t *testing.T) {
	sha := strings.Repeat("cd", 32)
	remote := ModuleSource{URL: "https://cp/modules/" + sha + ".wasm", SHA256: sha}
	for _, tc := range []struct {
		name   string
		module ModuleSource
		want   bool
	}{
		{"remote module", remote, true},
		{"module file", ModuleSource{File: "/m.wasm"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Translate(&policyv1.Policy{}, Options{Module: tc.module})
			if err != nil {
				t.Fatal(err)
			}
			var warm *clusterv3.Cluster
			for _, r := range res[resource.ClusterType] {
				if c := r.(*clusterv3.Cluster); c.GetName() == WarmupCluster {
					warm = c
				}
			}
			if (warm != nil) != tc.want {
				t.Fatalf("warm-up cluster present: %v, want %v", warm != nil, tc.want)
			}
			if warm == nil {
				return
			}
			var opts httpv3.HttpProtocolOptions
			if err := warm.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil {
				t.Fatal(err)
			}
			var w wasmfilterv3.Wasm
			if err := opts.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&w); err != nil {
				t.Fatal(err)
			}
			got := w.GetConfig().GetVmConfig()
			if got.GetNackOnCodeCacheMiss() {
				t.Error("the warm-up refuses a module it has not downloaded: the cluster would not wait for it")
			}
			want := vmConfig(tc.module)
			if got.GetVmId() != want.GetVmId() || !proto.Equal(got.GetCode(), want.GetCode()) || !proto.Equal(got.GetConfiguration(), want.GetConfiguration()) {
				t.Errorf("warm-up VM %v differs from the handshake filters' %v: Envoy would compile the module twice", got, want)
			}
			if len(warm.GetLoadAssignment().GetEndpoints()) != 0 {
				t.Error("the warm-up cluster has endpoints")
			}
		})
	}
}
