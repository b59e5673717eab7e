package admin

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestCheckSource: policy_yaml is kept only when it decodes to the very
// policy applied, so the text stored is the policy served.
func TestCheckSource(t *testing.T) {
	const text = "# comment\nlisteners: [{ name: public, address: '127.0.0.1:10000' }]  # kept\n"
	p, err := policy.Decode([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	other, err := policy.Decode([]byte("listeners: [{ name: public, address: '127.0.0.1:10001' }]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  *adminv1.ApplyPolicyRequest
		want string // the source kept; "" with code for a refusal
		code codes.Code
	}{
		{"no text", &adminv1.ApplyPolicyRequest{Policy: p}, "", codes.OK},
		{"the policy's text", &adminv1.ApplyPolicyRequest{Policy: p, PolicyYaml: text}, text, codes.OK},
		{"another policy's text", &adminv1.ApplyPolicyRequest{Policy: other, PolicyYaml: text}, "", codes.InvalidArgument},
		{"text that does not parse", &adminv1.ApplyPolicyRequest{Policy: p, PolicyYaml: "listeners: ["}, "", codes.InvalidArgument},
		{"an unknown field", &adminv1.ApplyPolicyRequest{Policy: p, PolicyYaml: text + "colour: blue\n"}, "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := checkSource(tt.req)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v, want %v (%v)", got, tt.code, err)
			}
			if string(src) != tt.want {
				t.Errorf("source %q, want %q", src, tt.want)
			}
			if tt.code != codes.OK && !strings.Contains(err.Error(), "policy_yaml") {
				t.Errorf("the refusal does not name policy_yaml: %v", err)
			}
		})
	}
}
