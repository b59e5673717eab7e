package testkit

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	dynfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
)

const rewritePolicy = `
listeners:
  - { name: public, address: "127.0.0.1:10000" }
routes:
  - { name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: demo }
  - { name: api, match: { prefix: /api/ }, kind: http, backend: rest }
  - { name: raw, kind: websocket, mode: tcp, tcp: { address: "127.0.0.1:10001" }, backend: voice, auth: demo }
backends:
  - { name: voice, endpoints: ["127.0.0.1:9000"] }
  - { name: rest, endpoints: ["127.0.0.1:9001"] }
auth_policies:
  - name: demo
    sources: [{ bearer: true }]
    jwt: { keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGV2LXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcyEh }] }
`

// TestNativeFilterRewrite translates a policy and serves its HTTP
// handshake filter as the dynamic module: the ECDS resource keeps its
// name and carries the Wasm plugin's configuration string byte for byte,
// every HTTP connection manager's reference to it takes the module's
// type, the tcp mode filters stay Wasm, and the translated resources are
// not changed.
func TestNativeFilterRewrite(t *testing.T) {
	p, err := policy.Parse([]byte(rewritePolicy))
	if err != nil {
		t.Fatal(err)
	}
	in, err := translate.Translate(p, translate.Options{Module: translate.ModuleSource{File: "/m.wasm"}})
	if err != nil {
		t.Fatal(err)
	}
	before := in.Clone()
	for typ, rs := range in {
		for i := range rs {
			before[typ][i] = proto.Clone(rs[i])
		}
	}
	out, err := NativeFilter(func() string { return "/lib.so" })(in)
	if err != nil {
		t.Fatal(err)
	}
	for typ, rs := range in {
		for i := range rs {
			if !proto.Equal(rs[i], before[typ][i]) {
				t.Fatalf("the rewrite changed a translated %s", typ)
			}
		}
	}

	var wasmDoc, nativeDoc string
	for i, r := range out[resource.ExtensionConfigType] {
		tec := r.(*corev3.TypedExtensionConfig)
		if tec.GetName() != translate.HandshakeFilterName {
			if !proto.Equal(tec, in[resource.ExtensionConfigType][i]) {
				t.Errorf("%s changed", tec.GetName())
			}
			continue
		}
		var dm dynfilterv3.DynamicModuleFilter
		if err := tec.GetTypedConfig().UnmarshalTo(&dm); err != nil {
			t.Fatalf("%s is not a dynamic module filter: %v", tec.GetName(), err)
		}
		if got := dm.GetDynamicModuleConfig().GetModule().GetLocal().GetFilename(); got != "/lib.so" {
			t.Errorf("library %q, want /lib.so", got)
		}
		var doc wrapperspb.StringValue
		if err := dm.GetFilterConfig().UnmarshalTo(&doc); err != nil {
			t.Fatal(err)
		}
		nativeDoc = doc.GetValue()
		var wasm wasmfilterv3.Wasm
		if err := in[resource.ExtensionConfigType][i].(*corev3.TypedExtensionConfig).GetTypedConfig().UnmarshalTo(&wasm); err != nil {
			t.Fatal(err)
		}
		if err := wasm.GetConfig().GetConfiguration().UnmarshalTo(&doc); err != nil {
			t.Fatal(err)
		}
		wasmDoc = doc.GetValue()
	}
	if nativeDoc == "" || nativeDoc != wasmDoc {
		t.Fatalf("the module's configuration is not the plugin's:\n%s\n%s", nativeDoc, wasmDoc)
	}

	refs := 0
	for _, r := range out[resource.ListenerType] {
		for _, fc := range r.(*listenerv3.Listener).GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				filters := hcm.GetHttpFilters()
				for _, u := range hcm.GetUpgradeConfigs() {
					filters = append(filters, u.GetFilters()...)
				}
				for _, hf := range filters {
					if hf.GetName() == translate.HandshakeFilterName {
						refs++
						if got := hf.GetConfigDiscovery().GetTypeUrls(); len(got) != 1 || got[0] != dynamicModuleTypeURL {
							t.Errorf("handshake filter reference accepts %v", got)
						}
					}
				}
			}
		}
	}
	if refs == 0 {
		t.Fatal("no listener refers to the handshake filter")
	}
}
