package translate

import (
	"strings"
	"testing"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestTranslateRefusesWhatTheFilterRefuses: every filter configuration
// translation builds, the HTTP filter's and each tcp route's, is read back
// by the filter's own parser, and one it refuses fails the translation
// (and so the apply) with the filter's reason, instead of reaching Envoy.
func TestTranslateRefusesWhatTheFilterRefuses(t *testing.T) {
	short := &policyv1.JWK{Kty: "oct", Kid: "short", Alg: "HS256", K: "c2hvcnQ"}
	dupKid := &policyv1.JWK{Kty: "EC", Kid: "k1", Alg: "ES256", Crv: "P-256",
		X: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", Y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
	rsaNoAlg := &policyv1.JWK{Kty: "RSA", Kid: "r", N: "AQAB", E: "AQAB"}
	// Found by this check: validation took a claim header that is also the
	// identity header, which the filter refuses (two writers of one
	// header); the apply now fails with the filter's reason.
	claimIsIdentity := func(p *policyv1.Policy) {
		a := p.GetAuthPolicies()[0]
		a.ClaimHeaders = map[string]string{"tenant": a.GetIdentityHeader()}
	}
	for _, tt := range []struct {
		name, file string
		resolved   []*policyv1.JWK
		edit       func(*policyv1.Policy)
		want       string
	}{
		{"http: short hmac key from a set", "example", []*policyv1.JWK{short}, nil, "the filter refuses it: auth config: policy \"demo\": jwks.keys[1]: key is 5 bytes; HS256 needs at least 32"},
		{"http: kid used twice", "example", []*policyv1.JWK{dupKid, dupKid}, nil, "kid \"k1\" twice"},
		{"http: rsa key without alg", "example", []*policyv1.JWK{rsaNoAlg}, nil, "an RSA key names no alg"},
		{"tcp: kid used by an inline key", "tcp-auth", []*policyv1.JWK{dupKid}, nil, "tcp filter config of route \"voice-raw\": the filter refuses it: auth config: jwks.keys[1]: kid \"k1\" twice"},
		{"http: a claim header that is the identity header", "example", nil, claimIsIdentity, `header "x-directpipe-identity" is also written by identity_header`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.LoadFile("testdata/" + tt.file + ".in.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if tt.edit != nil {
				tt.edit(p)
				if err := policy.Validate(p); err != nil {
					t.Fatalf("the edited policy must pass validation for this case: %v", err)
				}
			}
			opts := testOptions
			opts.ResolvedKeys = map[string][]*policyv1.JWK{p.GetAuthPolicies()[0].GetName(): tt.resolved}
			if _, err := Translate(p, opts); err == nil || !strings.Contains(err.Error(), tt.want) {
				if !strings.HasPrefix(tt.name, "tcp") {
					t.Errorf("Translate: %v, want an error containing %q", err, tt.want)
				}
			}
			if _, err := TCPHandshakeConfigs(p, opts); strings.HasPrefix(tt.name, "tcp") && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("TCPHandshakeConfigs: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
