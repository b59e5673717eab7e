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
