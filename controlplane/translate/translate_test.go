package translate

import (
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenSuffix names each type's golden file, <case>.<suffix>.yaml.
var goldenSuffix = map[string]string{
	resource.ListenerType:        "listeners",
	resource.RouteType:           "routes",
	resource.ClusterType:         "clusters",
	resource.EndpointType:        "endpoints",
	resource.ExtensionConfigType: "extension_configs",
}

var testOptions = Options{Module: ModuleSource{File: "/opt/directpipe/handshake.wasm"}}

// nativeOptions translate the golden cases named native-*: a node that
// runs the dynamic module, both modules fetched from the module server.
var nativeOptions = Options{
	Filter:       FilterNative,
	Module:       ModuleSource{URL: "https://directpipe-control-plane/modules/" + strings.Repeat("a", 64) + ".wasm", SHA256: strings.Repeat("a", 64)},
	NativeModule: ModuleSource{URL: "https://directpipe-control-plane/modules/" + strings.Repeat("b", 64) + ".so", SHA256: strings.Repeat("b", 64)},
}

// nativeRolloutOptions translate native-rollout: a native node while a
// new dynamic module rolls out.
var nativeRolloutOptions = func() Options {
	o := nativeOptions
	o.NextNativeModule = ModuleSource{URL: "https://directpipe-control-plane/modules/" + strings.Repeat("c", 64) + ".so", SHA256: strings.Repeat("c", 64)}
	return o
}()

// TestGolden translates each testdata/<case>.in.yaml and compares every
// resource type with its own golden file, so a reviewer sees exactly which
// Envoy resource a change moved.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			p, err := policy.LoadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			opts := testOptions
			switch {
			case name == "native-rollout":
				opts = nativeRolloutOptions
			case strings.HasPrefix(name, "native-"):
				opts = nativeOptions
			}
			res, err := Translate(p, opts)
			if err != nil {
				t.Fatal(err)
			}
			// The contract with the filters: what is sent by ECDS parses
			// there, strictly, and the tcp module gets one policy.
			for _, r := range res[resource.ExtensionConfigType] {
				tec := r.(*corev3.TypedExtensionConfig)
				cfg, err := auth.ParseConfig([]byte(pluginConfigJSON(t, tec)))
				if err != nil {
					t.Errorf("the filter refuses %s: %v", tec.GetName(), err)
					continue
				}
				if strings.HasPrefix(tec.GetName(), TCPHandshakeFilterPrefix) && cfg.Single() == nil {
					t.Errorf("%s is not a single policy", tec.GetName())
				}
			}
			for _, k := range xdstype.Kinds() {
				got := render(t, res[k.URL])
				file := filepath.Join("testdata", name+"."+goldenSuffix[k.URL]+".yaml")
				if *update {
					if err := os.WriteFile(file, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatalf("%v (run go test ./controlplane/translate -update)", err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from the translation; run with -update and review the diff.\ngot:\n%s", file, got)
				}
			}
		})
	}
}

// render prints resources as YAML. protojson's output is deliberately
// unstable in whitespace, so it is normalised through encoding/json.
func render(t *testing.T, list []types.Resource) []byte {
	t.Helper()
	var docs []any
	for _, r := range list {
		js, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, v)
	}
	if docs == nil {
		docs = []any{}
	}
	out, err := yaml.Marshal(docs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	p, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := Translate(p, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range xdstype.Kinds() {
			if string(render(t, again[k.URL])) != string(render(t, first[k.URL])) {
				t.Fatalf("the same policy translated twice gave different %s resources", k.Name())
			}
		}
	}
}

// TestListenerIndependentOfRoutes proves the rule that keeps live calls up:
// changing routes, back ends or keys must not change any listener.
func TestListenerIndependentOfRoutes(t *testing.T) {
	base, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changed, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changed.Routes = slices.DeleteFunc(changed.Routes, func(r *policyv1.Route) bool { return r.GetName() == "api" })
	changed.Backends[0].Endpoints = append(changed.Backends[0].Endpoints, "127.0.0.1:9999")
	changed.AuthPolicies[0].Jwt.Keys[0].Kid = "rotated"
	changed.Routes[0].Match.Hosts = []string{"voice.example.com"}
	changed.Routes[0].Match.Headers = []*policyv1.HeaderMatch{{Name: "x-tenant", Present: true}}
	changed.Routes[0].MaxConnections = 10
	changed.Backends[0].Lb, changed.Backends[0].HashHeader = policy.LBRingHash, "x-session"
	changed.Backends[1].CircuitBreakers = &policyv1.CircuitBreakers{MaxConnections: 5}
	changed.Routes = append(changed.Routes, &policyv1.Route{
		Name: "limited-api", Kind: policy.KindHTTP, Backend: "rest", Match: &policyv1.RouteMatch{Prefix: "/api/"},
		Cors:      &policyv1.CORS{AllowOrigins: []string{"https://app.example.com"}},
		RateLimit: &policyv1.RateLimit{RequestsPerUnit: 10, Unit: "second"},
	})
	if err := policy.Validate(changed); err != nil {
		t.Fatal(err)
	}
	a, err := Translate(base, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Translate(changed, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if string(render(t, a[resource.ListenerType])) != string(render(t, b[resource.ListenerType])) {
		t.Error("a route, back end or key change changed a listener: that would drain live calls")
	}
	if string(render(t, a[resource.ExtensionConfigType])) == string(render(t, b[resource.ExtensionConfigType])) {
		t.Error("a key rotation did not change the filter config")
	}
}

// TestRoutesCarryTheirPolicy: every HTTP route with auth names its
// policy in its metadata, where the filter reads it; public routes, the
// 426 companions and the route-changed answer carry nothing (public to
// the filter). The filter config holds the policies without a route map,
// so a change of routes alone never changes it.
func TestRoutesCarryTheirPolicy(t *testing.T) {
	p, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"voice": "demo"}
	got := map[string]string{}
	for _, r := range res[resource.RouteType] {
		for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
			for _, route := range vh.GetRoutes() {
				if pol, ok := routePolicy(route); ok {
					got[route.GetName()] = pol
				}
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("route policies %v, want %v", got, want)
	}
	cfg := decodeFilterConfig(t, res)
	if _, ok := cfg.Policies["demo"]; !ok || cfg.Routes != nil {
		t.Errorf("filter config: policies %v, routes %v; want demo and no route map", cfg.Policies, cfg.Routes)
	}
	renamed := proto.Clone(p).(*policyv1.Policy)
	renamed.Routes[0].Name = "voice-v2"
	res2, err := Translate(renamed, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if filterConfigJSON(t, res) != filterConfigJSON(t, res2) {
		t.Error("renaming a route changed the filter config")
	}
}

// routePolicy reads the auth policy a route's metadata names.
func routePolicy(r *routev3.Route) (string, bool) {
	v, ok := r.GetMetadata().GetFilterMetadata()[contract.RouteMetadataNamespace].GetFields()[contract.RouteMetadataPolicy]
	if !ok {
		return "", false
	}
	return v.GetStringValue(), true
}

func decodeFilterConfig(t *testing.T, res xdstype.Resources) contract.Config {
	t.Helper()
	var cfg contract.Config
	if err := json.Unmarshal([]byte(filterConfigJSON(t, res)), &cfg); err != nil {
		t.Fatalf("filter config is not JSON: %v", err)
	}
	return cfg
}

// filterConfigJSON digs the HTTP filter's JSON configuration out of its
// ECDS resource.
func filterConfigJSON(t *testing.T, res xdstype.Resources) string {
	t.Helper()
	return pluginConfigJSON(t, res[resource.ExtensionConfigType][0].(*corev3.TypedExtensionConfig))
}

// pluginConfigJSON digs a Wasm plugin's JSON configuration out of its ECDS
// resource, HTTP or network.
func pluginConfigJSON(t *testing.T, tec *corev3.TypedExtensionConfig) string {
	t.Helper()
	js, err := protojson.Marshal(tec)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		TypedConfig struct {
			Config struct {
				Configuration struct {
					Value string `json:"value"`
				} `json:"configuration"`
			} `json:"config"`
			// The dynamic module's filter takes the same document.
			FilterConfig struct {
				Value string `json:"value"`
			} `json:"filterConfig"`
		} `json:"typedConfig"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if v := doc.TypedConfig.FilterConfig.Value; v != "" {
		return v
	}
	return doc.TypedConfig.Config.Configuration.Value
}
