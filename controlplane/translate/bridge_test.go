package translate

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
	"github.com/directpipe/directpipe/filter/contract"
)

func TestBridge(t *testing.T) {
	served := func(t *testing.T, p *policyv1.Policy) Served {
		t.Helper()
		res, err := Translate(p, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		return Served{Policy: p, Resources: res}
	}
	partners := &policyv1.AuthPolicy{
		Name:    "partners",
		Sources: []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Header{Header: "x-api-key"}}},
		ApiKeys: []*policyv1.APIKey{{Sha256: strings.Repeat("ab", 32), Identity: "partner-a"}},
	}
	tests := []struct {
		name string
		prev func(t *testing.T, p *policyv1.Policy) Served
		next func(p *policyv1.Policy)
		// wantPolicies are the bridged filter config's policies, nil
		// when no bridge is needed; wantInPolicies is a string they must
		// contain, wantNotInPolicies one they must not.
		wantPolicies                      []string
		wantInPolicies, wantNotInPolicies string
	}{
		{
			name: "nothing served yet",
			prev: func(*testing.T, *policyv1.Policy) Served { return Served{} },
			next: func(*policyv1.Policy) {},
		},
		{
			name: "no change",
			prev: served,
			next: func(*policyv1.Policy) {},
		},
		{
			name: "route removed: the final push removes it before its auth setting",
			prev: served,
			next: func(p *policyv1.Policy) {
				p.Routes = slices.DeleteFunc(p.Routes, func(r *policyv1.Route) bool { return r.GetName() == "voice" })
			},
		},
		{
			name: "route renamed: it carries its policy itself",
			prev: served,
			next: func(p *policyv1.Policy) { p.Routes[0].Name = "voice-v2" },
		},
		{
			name: "route added with a policy already served",
			prev: served,
			next: func(p *policyv1.Policy) {
				p.Routes = append(p.Routes, &policyv1.Route{
					Name: "voice-2", Kind: policy.KindWebSocket, Backend: "voice", Auth: "demo",
					Match: &policyv1.RouteMatch{Path: "/v1/voice2"},
				})
			},
		},
		{
			name: "route added with a new auth policy: the policy first",
			prev: served,
			next: func(p *policyv1.Policy) {
				p.AuthPolicies = append(p.AuthPolicies, partners)
				p.Routes = append(p.Routes, &policyv1.Route{
					Name: "partner-voice", Kind: policy.KindWebSocket, Backend: "voice", Auth: "partners",
					Match: &policyv1.RouteMatch{Path: "/v1/partner"},
				})
			},
			wantPolicies:   []string{"demo", "partners"},
			wantInPolicies: "partner-a",
		},
		{
			name: "a new policy and a changed one: the served version of the changed one",
			prev: served,
			next: func(p *policyv1.Policy) {
				p.AuthPolicies[0].Jwt.Keys[0].Kid = "rotated"
				p.AuthPolicies = append(p.AuthPolicies, partners)
			},
			wantPolicies:      []string{"demo", "partners"},
			wantInPolicies:    "partner-a",
			wantNotInPolicies: `"rotated"`,
		},
		{
			name: "auth policy changed: no bridge, it comes with next",
			prev: served,
			next: func(p *policyv1.Policy) { p.AuthPolicies[0].Jwt.Keys[0].Kid = "rotated" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev := tt.prev(t, examplePolicy(t))
			next := examplePolicy(t)
			tt.next(next)
			if err := policy.Validate(next); err != nil {
				t.Fatal(err)
			}
			got, err := Bridge(prev, next, testOptions)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantPolicies == nil {
				if got != nil {
					t.Fatalf("Bridge = %s, want no bridge", filterConfigJSON(t, got))
				}
				return
			}
			if got == nil {
				t.Fatal("Bridge = nil, want a bridge")
			}
			var cfg contract.Config
			if err := json.Unmarshal([]byte(filterConfigJSON(t, got)), &cfg); err != nil {
				t.Fatal(err)
			}
			if names := slices.Sorted(maps.Keys(cfg.Policies)); !slices.Equal(names, tt.wantPolicies) || cfg.Routes != nil {
				t.Errorf("bridged policies %v and routes %v, want %v and no route map", names, cfg.Routes, tt.wantPolicies)
			}
			policies, _ := json.Marshal(cfg.Policies)
			if !strings.Contains(string(policies), tt.wantInPolicies) {
				t.Errorf("bridged policies %s lack %s", policies, tt.wantInPolicies)
			}
			if tt.wantNotInPolicies != "" && strings.Contains(string(policies), tt.wantNotInPolicies) {
				t.Errorf("bridged policies %s have %s", policies, tt.wantNotInPolicies)
			}
			// Everything but the HTTP filter's config is what prev serves.
			others := func(list []types.Resource) []types.Resource {
				return slices.DeleteFunc(slices.Clone(list), func(r types.Resource) bool { return name(r) == HandshakeFilterName })
			}
			for _, k := range xdstype.Kinds() {
				if !slices.EqualFunc(others(got[k.URL]), others(prev.Resources[k.URL]), func(a, b types.Resource) bool { return proto.Equal(a, b) }) {
					t.Errorf("Bridge changed the %s resources", k.Name())
				}
			}
		})
	}
}

func TestBridgeNeedsTheHandshakeConfig(t *testing.T) {
	p := examplePolicy(t)
	res, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	delete(res, resource.ExtensionConfigType)
	next := examplePolicy(t)
	next.AuthPolicies = append(next.AuthPolicies, &policyv1.AuthPolicy{
		Name:    "partners",
		Sources: []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Header{Header: "x-api-key"}}},
		ApiKeys: []*policyv1.APIKey{{Sha256: strings.Repeat("ab", 32), Identity: "partner-a"}},
	})
	if _, err := Bridge(Served{Policy: p, Resources: res}, next, testOptions); err == nil {
		t.Error("Bridge over resources without the handshake filter config succeeded")
	}
}

func examplePolicy(t *testing.T) *policyv1.Policy {
	t.Helper()
	p, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
