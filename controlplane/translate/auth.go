package translate

import (
	"slices"
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
	Issuer         string            `json:"issuer,omitempty"`
	Audiences      []string          `json:"audiences,omitempty"`
	RequiredScopes []string          `json:"required_scopes,omitempty"`
	Origins        *filterOrigins    `json:"origins,omitempty"`
}

type filterOrigins struct {
	Allow        []string `json:"allow"`
	AllowMissing bool     `json:"allow_missing"`
}

type filterSource struct {
	Bearer            bool   `json:"bearer,omitempty"`
	Query             string `json:"query,omitempty"`
	Header            string `json:"header,omitempty"`
	SubprotocolPrefix string `json:"subprotocol_prefix,omitempty"`
}

type filterJWKS struct {
	Keys []filterJWK `json:"keys"`
}

type filterJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

type filterAPIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

// authPolicy is one policy as the filter reads it. resolved holds the keys
// the control plane read from the policy's jwks_file or jwks_url.
func authPolicy(a *policyv1.AuthPolicy, resolved []*policyv1.JWK) filterAuthPolicy {
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
		out.Sources = append(out.Sources, filterSource{
			Bearer: s.GetBearer(), Query: s.GetQuery(), Header: s.GetHeader(), SubprotocolPrefix: s.GetSubprotocolPrefix(),
		})
	}
	keys := append(slices.Clone(a.GetJwt().GetKeys()), resolved...)
	if len(keys) > 0 {
		out.JWKS = &filterJWKS{}
		trim := func(s string) string { return strings.TrimRight(s, "=") }
		for _, k := range keys {
			out.JWKS.Keys = append(out.JWKS.Keys, filterJWK{
				Kty: k.GetKty(), Kid: k.GetKid(), Alg: k.GetAlg(), K: trim(k.GetK()),
				N: trim(k.GetN()), E: trim(k.GetE()), Crv: k.GetCrv(), X: trim(k.GetX()), Y: trim(k.GetY()),
			})
		}
	}
	j := a.GetJwt()
	out.Issuer, out.Audiences, out.RequiredScopes = j.GetIssuer(), j.GetAudiences(), j.GetRequiredScopes()
	if o := a.GetOrigins(); o != nil {
		out.Origins = &filterOrigins{Allow: o.GetAllow(), AllowMissing: o.GetAllowMissing()}
	}
	for _, k := range a.GetApiKeys() {
		out.APIKeys = append(out.APIKeys, filterAPIKey{SHA256: k.GetSha256(), Identity: k.GetIdentity()})
	}
	return out
}
