package translate

import (
	"strings"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// DefaultLeewaySeconds is the clock skew allowed on exp and nbf.
const DefaultLeewaySeconds = 30

// DefaultMaxTokenBytes caps the token the filter will even try to parse.
const DefaultMaxTokenBytes = 8192

// filterConfig is the JSON document the handshake filter receives by ECDS.
// The filter owns the schema (filter/auth); translate_test proves that what
// is produced here parses there.
type filterConfig struct {
	// Routes maps every route name on every listener to the auth policy it
	// uses, "" for none. The filter denies a route it does not know, so a
	// route that reaches Envoy before its auth setting fails closed.
	Routes   map[string]string           `json:"routes"`
	Policies map[string]filterAuthPolicy `json:"policies"`
}

type filterAuthPolicy struct {
	Name           string            `json:"name"`
	Realm          string            `json:"realm"`
	Sources        []filterSource    `json:"sources"`
	JWKS           *filterJWKS       `json:"jwks,omitempty"`
	LeewaySeconds  int64             `json:"leeway_seconds"`
	MaxTokenBytes  int               `json:"max_token_bytes"`
	APIKeys        []filterAPIKey    `json:"api_keys,omitempty"`
	IdentityHeader string            `json:"identity_header,omitempty"`
	ClaimHeaders   map[string]string `json:"claim_headers,omitempty"`
}

type filterSource struct {
	Bearer bool   `json:"bearer,omitempty"`
	Query  string `json:"query,omitempty"`
	Header string `json:"header,omitempty"`
}

type filterJWKS struct {
	Keys []filterJWK `json:"keys"`
}

type filterJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
}

type filterAPIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

func authPolicy(a *policyv1.AuthPolicy) filterAuthPolicy {
	out := filterAuthPolicy{
		Name:           a.GetName(),
		Realm:          "directpipe",
		LeewaySeconds:  DefaultLeewaySeconds,
		MaxTokenBytes:  DefaultMaxTokenBytes,
		IdentityHeader: a.GetIdentityHeader(),
		ClaimHeaders:   a.GetClaimHeaders(),
	}
	if l := a.GetJwt().GetLeeway(); l != nil {
		out.LeewaySeconds = int64(l.AsDuration().Seconds())
	}
	for _, s := range a.GetSources() {
		out.Sources = append(out.Sources, filterSource{Bearer: s.GetBearer(), Query: s.GetQuery(), Header: s.GetHeader()})
	}
	if keys := a.GetJwt().GetKeys(); len(keys) > 0 {
		out.JWKS = &filterJWKS{}
		for _, k := range keys {
			out.JWKS.Keys = append(out.JWKS.Keys, filterJWK{
				Kty: k.GetKty(), Kid: k.GetKid(), Alg: k.GetAlg(), K: strings.TrimRight(k.GetK(), "="),
			})
		}
	}
	for _, k := range a.GetApiKeys() {
		out.APIKeys = append(out.APIKeys, filterAPIKey{SHA256: k.GetSha256(), Identity: k.GetIdentity()})
	}
	return out
}
