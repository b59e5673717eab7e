package dpctl

import (
	"reflect"
	"strings"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

func TestPolicyDiff(t *testing.T) {
	tests := []struct {
		name     string
		old, new *policyv1.Policy
		want     []fieldChange
	}{
		{"same", &policyv1.Policy{Routes: []*policyv1.Route{{Name: "a", Backend: "x"}}}, &policyv1.Policy{Routes: []*policyv1.Route{{Name: "a", Backend: "x"}}}, nil},
		{
			"a field changed, matched by name across a reorder",
			&policyv1.Policy{Routes: []*policyv1.Route{{Name: "a", Backend: "x"}, {Name: "b", Backend: "y"}}},
			&policyv1.Policy{Routes: []*policyv1.Route{{Name: "b", Backend: "y"}, {Name: "a", Backend: "z"}}},
			[]fieldChange{{Path: "routes[a].backend", Action: "~", Old: `"x"`, New: `"z"`}},
		},
		{
			"an item added and one removed",
			&policyv1.Policy{Backends: []*policyv1.Backend{{Name: "old", Endpoints: []string{"127.0.0.1:1"}}}},
			&policyv1.Policy{Backends: []*policyv1.Backend{{Name: "new", Endpoints: []string{"127.0.0.1:2"}}}},
			[]fieldChange{
				{Path: "backends[old]", Action: "-", Old: `{"endpoints":["127.0.0.1:1"],"name":"old"}`},
				{Path: "backends[new]", Action: "+", New: `{"endpoints":["127.0.0.1:2"],"name":"new"}`},
			},
		},
		{
			"unnamed list items by index",
			&policyv1.Policy{Backends: []*policyv1.Backend{{Name: "b", Endpoints: []string{"127.0.0.1:1", "127.0.0.1:2"}}}},
			&policyv1.Policy{Backends: []*policyv1.Backend{{Name: "b", Endpoints: []string{"127.0.0.1:1"}}}},
			[]fieldChange{{Path: "backends[b].endpoints[1]", Action: "-", Old: `"127.0.0.1:2"`}},
		},
		{
			"an HMAC key is never printed",
			&policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", Jwt: &policyv1.JWT{Keys: []*policyv1.JWK{{Kid: "k1", K: "c2VjcmV0LW9uZQ"}}}}}},
			&policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", Jwt: &policyv1.JWT{Keys: []*policyv1.JWK{{Kid: "k1", K: "c2VjcmV0LXR3bw"}, {Kid: "k2", K: "c2VjcmV0LXRocmVl"}}}}}},
			[]fieldChange{
				{Path: "auth_policies[a].jwt.keys[0].k", Action: "~", Old: secret, New: secret},
				{Path: "auth_policies[a].jwt.keys[1]", Action: "+", New: `{"k":"(secret)","kid":"k2"}`},
			},
		},
		{
			"an API key's hash shows as its prefix",
			&policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", ApiKeys: []*policyv1.APIKey{{Sha256: strings.Repeat("ab", 32), Identity: "x"}}}}},
			&policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", ApiKeys: []*policyv1.APIKey{{Sha256: strings.Repeat("cd", 32), Identity: "x"}, {Sha256: strings.Repeat("ef", 32), Identity: "y"}}}}},
			[]fieldChange{
				{Path: "auth_policies[a].api_keys[0].sha256", Action: "~", Old: `"abababababab…"`, New: `"cdcdcdcdcdcd…"`},
				{Path: "auth_policies[a].api_keys[1]", Action: "+", New: `{"identity":"y","sha256":"efefefefefef…"}`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policyDiff(tt.old, tt.new)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("policyDiff:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
