package translate

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// pluginConfigs returns every Wasm plugin in the extension configs, HTTP
// and network, by resource name.
func pluginConfigs(t *testing.T, res xdstype.Resources) map[string]*wasmv3.PluginConfig {
	t.Helper()
	out := map[string]*wasmv3.PluginConfig{}
	for _, r := range res[resource.ExtensionConfigType] {
		tec := r.(*corev3.TypedExtensionConfig)
		msg, err := tec.GetTypedConfig().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch w := msg.(type) {
		case *wasmfilterv3.Wasm:
			out[tec.GetName()] = w.GetConfig()
		case *wasmnetworkv3.Wasm:
			out[tec.GetName()] = w.GetConfig()
		}
	}
	return out
}

func vmConfigBytes(t *testing.T, pc *wasmv3.PluginConfig) string {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pc.GetVmConfig())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOneVMForEveryFilter: the HTTP filter and every tcp network filter
// carry byte-identical VM configurations, which is what makes Envoy share
// one compiled module and one instance per worker between them, and a key
// rotation or a route change leaves those bytes alone, so the module never
// compiles again. Their root ids differ: that is how the module tells the
// plugins apart.
func TestOneVMForEveryFilter(t *testing.T) {
	base, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changed.AuthPolicies[0].Jwt.Keys[0].Kid = "rotated"
	changed.Routes = changed.Routes[1:]
	var want string
	for i, p := range []*policyv1.Policy{base, changed} {
		res, err := Translate(p, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		plugins := pluginConfigs(t, res)
		var http, tcp int
		for name, pc := range plugins {
			if got := vmConfigBytes(t, pc); want == "" {
				want = got
			} else if got != want {
				t.Errorf("policy %d: %s has another VM configuration:\n%v", i, name, pc.GetVmConfig())
			}
			if pc.GetRootId() != name {
				t.Errorf("%s: root id %q", name, pc.GetRootId())
			}
			if strings.HasPrefix(pc.GetRootId(), TCPHandshakeFilterPrefix) {
				tcp++
			} else {
				http++
			}
		}
		if http != 1 || tcp == 0 {
			t.Fatalf("policy %d: %d HTTP and %d tcp plugins, want 1 and some", i, http, tcp)
		}
	}
}
