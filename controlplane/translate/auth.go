package translate

import (
	"slices"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/filter/contract"
)

// DefaultLeewaySeconds is the clock skew allowed on exp and nbf.
const DefaultLeewaySeconds = 30

// authPolicy is one policy as the filter reads it. resolved holds the keys
// the control plane read from the policy's jwks_file or jwks_url.
// opts say how many Envoys share its quotas, and where their streams are.
func authPolicy(a *policyv1.AuthPolicy, resolved []*policyv1.JWK, opts Options) *contract.Policy {
	out := &contract.Policy{
		Name:           a.GetName(),
		Realm:          contract.DefaultRealm,
		LeewaySeconds:  DefaultLeewaySeconds,
		MaxTokenBytes:  contract.DefaultMaxTokenBytes,
		IdentityHeader: a.GetIdentityHeader(),
		ClaimHeaders:   a.GetClaimHeaders(),
	}
	if l := a.GetJwt().GetLeeway(); l != nil {
		out.LeewaySeconds = int64(l.AsDuration().Seconds())
	}
	// Unset, the filter applies contract.DefaultMaxTokenLifetimeSeconds.
	if l := a.GetJwt().GetMaxTokenLifetime(); l != nil {
		out.MaxTokenLifetimeSeconds = int64(l.AsDuration().Seconds())
	}
	for _, s := range a.GetSources() {
		out.Sources = append(out.Sources, contract.Source{
			Bearer: s.GetBearer(), Query: s.GetQuery(), Header: s.GetHeader(), SubprotocolPrefix: s.GetSubprotocolPrefix(),
		})
	}
	keys := append(slices.Clone(a.GetJwt().GetKeys()), resolved...)
	if len(keys) > 0 {
		out.JWKS = &contract.JWKS{}
		for _, k := range keys {
			out.JWKS.Keys = append(out.JWKS.Keys, policy.FilterJWK(k, a.GetJwt().GetDefaultRsaAlg()))
		}
	}
	j := a.GetJwt()
	out.Issuer, out.Audiences, out.RequiredScopes = j.GetIssuer(), j.GetAudiences(), j.GetRequiredScopes()
	if c := j.GetTokenCache(); c != nil {
		// The filter reads 0 as its default and a negative age as off.
		out.TokenCache = &contract.TokenCache{MaxAgeSeconds: int64(c.AsDuration().Seconds())}
		if out.TokenCache.MaxAgeSeconds == 0 {
			out.TokenCache.MaxAgeSeconds = -1
		}
	}
	if o := a.GetOrigins(); o != nil {
		out.Origins = &contract.Origins{Allow: o.GetAllow(), AllowMissing: o.GetAllowMissing()}
	}
	out.Quotas = envoyQuotas(a.GetQuotas(), opts.Envoys, opts.QuotaUse.policy(a.GetName()))
	for _, k := range a.GetApiKeys() {
		out.APIKeys = append(out.APIKeys, contract.APIKey{SHA256: k.GetSha256(), Identity: k.GetIdentity()})
	}
	return out
}
