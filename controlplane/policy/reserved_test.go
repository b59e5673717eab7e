package policy

import (
	"strings"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// TestAllowInternal: a back end that says allow_internal may point at a
// link-local or metadata address.
func TestAllowInternal(t *testing.T) {
	p, err := Parse([]byte(strings.Replace(validPolicy, "endpoints: [127.0.0.1:8081]", "endpoints: [169.254.169.254:80]\n    allow_internal: true", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !p.GetBackends()[0].GetAllowInternal() {
		t.Fatal("allow_internal not read")
	}
}

func TestCheckReserved(t *testing.T) {
	reserved := map[string]string{
		"127.0.0.1:9901": "Envoy's admin address",
		"[::]:18001":     "the control plane's admin API",
		"10.0.0.7:9902":  "the admin address of Envoy \"edge-1\"",
	}
	tests := []struct {
		endpoint string
		allow    bool
		want     string // "" : allowed
	}{
		{"127.0.0.1:9901", false, "is Envoy's admin address (127.0.0.1:9901)"},
		{"127.0.0.1:9901", true, "is Envoy's admin address"},
		{"127.0.0.2:9901", false, "is Envoy's admin address"},
		{"[::1]:9901", false, "is Envoy's admin address"},
		{"[::ffff:127.0.0.1]:9901", false, "is Envoy's admin address"},
		{"0.0.0.0:9901", true, "is Envoy's admin address"},
		{"127.0.0.1:18001", false, "the control plane's admin API"},
		{"10.0.0.7:9902", false, `the admin address of Envoy "edge-1"`},
		{"127.0.0.1:9902", false, `the admin address of Envoy "edge-1"`},
		{"10.0.0.8:9902", false, ""},
		{"10.0.0.7:9901", false, ""},
		{"127.0.0.1:8081", false, ""},
		// By name: localhost is loopback; another name may resolve to
		// anything, and is Envoy's to resolve.
		{"localhost:9901", false, "is Envoy's admin address"},
		{"api.localhost:18001", false, "the control plane's admin API"},
		{"localhost:8081", false, ""},
		{"voice.internal:9901", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			p := &policyv1.Policy{Backends: []*policyv1.Backend{{Name: "b", Endpoints: []string{tt.endpoint}, AllowInternal: tt.allow}}}
			err := CheckReserved(p, reserved)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestCheckReservedListenersAndKeySets: a listener on a reserved address
// could not bind, and a key set URL there reads an admin interface.
func TestCheckReservedListenersAndKeySets(t *testing.T) {
	reserved := map[string]string{"127.0.0.1:9901": "Envoy's admin address"}
	p := &policyv1.Policy{
		Listeners:    []*policyv1.Listener{{Name: "l", Address: "0.0.0.0:9901"}},
		Routes:       []*policyv1.Route{{Name: "t", Tcp: &policyv1.TCPRoute{Address: "127.0.0.1:9901"}}},
		AuthPolicies: []*policyv1.AuthPolicy{{Name: "a", Jwt: &policyv1.JWT{JwksUrl: "http://127.0.0.1:9901/config_dump"}}},
	}
	err := CheckReserved(p, reserved)
	for _, want := range []string{"listeners[0].address", "routes[0].tcp.address", "auth_policies[0].jwt.jwks_url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	p.AuthPolicies[0].Jwt.JwksUrl = "https://idp.example.com/keys"
	p.Listeners[0].Address, p.Routes[0].Tcp.Address = "127.0.0.1:10000", "127.0.0.1:10001"
	if err := CheckReserved(p, reserved); err != nil {
		t.Errorf("nothing reserved: %v", err)
	}
}
