package translate

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// TestNextNativeWarmupCluster: a dynamic module being rolled out gets a
// warm-up cluster of its own only on a native node, only when Envoy
// fetches it and only when it is not the module the filter runs.
func TestNextNativeWarmupCluster(t *testing.T) {
	remote := func(c string) ModuleSource {
		sha := strings.Repeat(c, 64)
		return ModuleSource{URL: "https://cp/modules/" + sha + ".so", SHA256: sha}
	}
	wasm := ModuleSource{URL: "https://cp/modules/" + strings.Repeat("a", 64) + ".wasm", SHA256: strings.Repeat("a", 64)}
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"native rollout", Options{Filter: FilterNative, Module: wasm, NativeModule: remote("b"), NextNativeModule: remote("c")},
			[]string{NativeWarmupCluster, NextNativeWarmupCluster}},
		{"no rollout", Options{Filter: FilterNative, Module: wasm, NativeModule: remote("b")}, []string{NativeWarmupCluster}},
		{"next is the current module", Options{Filter: FilterNative, Module: wasm, NativeModule: remote("b"), NextNativeModule: remote("b")},
			[]string{NativeWarmupCluster}},
		{"module files", Options{Filter: FilterNative, Module: ModuleSource{File: "/m.wasm"}, NativeModule: ModuleSource{File: "/m.so"},
			NextNativeModule: ModuleSource{File: "/next.so"}}, nil},
		{"wasm node", Options{Module: wasm, NativeModule: remote("b"), NextNativeModule: remote("c")}, []string{WarmupCluster}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Translate(&policyv1.Policy{}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res[resource.ClusterType] {
				if name := r.(*clusterv3.Cluster).GetName(); strings.Contains(name, "warmup") {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("warm-up clusters %v, want %v", got, tc.want)
			}
		})
	}
}
