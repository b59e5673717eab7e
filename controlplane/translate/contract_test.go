package translate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// TestContractRoundTrip proves, feature by feature, that a policy the
// control plane builds reaches the filter whole: the JSON holds every
// field under the filter's names, and the filter's parser reads back the
// very values translate built.
func TestContractRoundTrip(t *testing.T) {
	bearer := []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Bearer{Bearer: true}}}
	padded := base64.URLEncoding.EncodeToString(bytes.Repeat([]byte("k"), 32))
	hmac := &policyv1.JWK{Kty: "oct", Kid: "h", Alg: "HS256", K: padded}
	ec := &policyv1.JWK{Kty: "EC", Kid: "e", Alg: "ES256", Crv: "P-256",
		X: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", Y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
	apiKeys := []*policyv1.APIKey{{Sha256: strings.Repeat("ab", 32), Identity: "svc"}}
	for _, tt := range []struct {
		name     string
		in       *policyv1.AuthPolicy
		resolved []*policyv1.JWK
	}{
		{"bearer and hmac", &policyv1.AuthPolicy{Name: "p", Sources: bearer, Jwt: &policyv1.JWT{Keys: []*policyv1.JWK{hmac}}}, nil},
		{"every source", &policyv1.AuthPolicy{Name: "p", ApiKeys: apiKeys, Sources: []*policyv1.TokenSource{
			{Source: &policyv1.TokenSource_Bearer{Bearer: true}},
			{Source: &policyv1.TokenSource_Query{Query: "access_token"}},
			{Source: &policyv1.TokenSource_Header{Header: "x-api-key"}},
			{Source: &policyv1.TokenSource_SubprotocolPrefix{SubprotocolPrefix: "token."}},
		}}, nil},
		{"jwt claims", &policyv1.AuthPolicy{Name: "p", Sources: bearer, Jwt: &policyv1.JWT{
			Keys: []*policyv1.JWK{hmac}, Leeway: durationpb.New(5 * time.Second),
			Issuer: "https://issuer.example", Audiences: []string{"voice"}, RequiredScopes: []string{"voice:write"},
			MaxTokenLifetime: durationpb.New(time.Hour),
		}}, nil},
		{"resolved keys", &policyv1.AuthPolicy{Name: "p", Sources: bearer, Jwt: &policyv1.JWT{JwksUrl: "https://idp.example/jwks"}}, []*policyv1.JWK{ec}},
		{"api keys and headers", &policyv1.AuthPolicy{Name: "p", Sources: bearer, ApiKeys: apiKeys,
			IdentityHeader: "x-user", ClaimHeaders: map[string]string{"tenant": "x-tenant"}}, nil},
		{"origins", &policyv1.AuthPolicy{Name: "p", Sources: bearer, ApiKeys: apiKeys,
			Origins: &policyv1.Origins{Allow: []string{"https://app.example", "https://*.example.org"}, AllowMissing: true}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			built := authPolicy(tt.in, tt.resolved, Options{Envoys: 1})
			doc, err := json.Marshal(built)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(doc))
			dec.DisallowUnknownFields()
			var back contract.Policy
			if err := dec.Decode(&back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&back, built) {
				t.Errorf("JSON lost a field:\n got %+v\nwant %+v", back, *built)
			}
			cfg, err := auth.ParseConfig(doc)
			if err != nil {
				t.Fatalf("the filter refuses %s: %v", doc, err)
			}
			if p := cfg.Single(); p == nil || !reflect.DeepEqual(&p.Policy, built) {
				t.Errorf("the filter read another policy than translate built: %+v", p)
			}
		})
	}
}
